"""tinygrad_uu: a small autodiff engine on numpy and numba, for learning deep learning.

Start with ``tensor.py`` (the Tensor) and ``autograd.py`` (how backward works).
"""
from .autograd import (AnomalyError, Function, detect_anomaly, is_anomaly_enabled, is_grad_enabled,
                       no_grad, set_detect_anomaly)
from .gradcheck import GradcheckError, check_gradients, gradcheck
from .tensor import (Tensor, arange, cat, concatenate, eye, from_numpy, full, full_like,
                     get_rng, manual_seed, maximum, minimum, ones, ones_like, rand, rand_like,
                     randn, randn_like, stack, tensor, where, zeros, zeros_like)
from . import data, debug, nn, optim  # noqa: E402  (after the core they build on)
from . import onnx  # noqa: E402  (tinygrad_uu.onnx.export; the onnx package loads on first use)
from .allocator import keep_freed_memory
from .threads import get_num_threads, set_num_threads

keep_freed_memory()  # fewer page faults per training step; see allocator.py
get_num_threads()  # puts the default thread count into effect for the BLAS too; see threads.py

__version__ = "0.1.0"
