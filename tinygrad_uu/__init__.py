"""tinygrad_uu: a small autodiff engine on numpy and numba, for learning deep learning.

Start with ``tensor.py`` (the Tensor) and ``autograd.py`` (how backward works).
"""
from .autograd import Function, is_grad_enabled, no_grad
from .gradcheck import GradcheckError, gradcheck
from .tensor import (Tensor, arange, cat, concatenate, eye, from_numpy, full, full_like,
                     get_rng, manual_seed, maximum, minimum, ones, ones_like, rand, rand_like,
                     randn, randn_like, stack, tensor, where, zeros, zeros_like)
from . import data, nn, optim  # noqa: E402  (after the core they build on)
from .allocator import keep_freed_memory
from .threads import get_num_threads, set_num_threads

keep_freed_memory()  # fewer page faults per training step; see allocator.py
get_num_threads()  # puts the default thread count into effect for the BLAS too; see threads.py

__version__ = "0.1.0"
