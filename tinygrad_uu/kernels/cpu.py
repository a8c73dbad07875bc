"""The numba backend: the same ops as ``reference.py``, compiled and run on every core.

Arguments arrive checked and normalised by ``kernels/__init__.py`` (C-contiguous
float arrays, (height, width) pairs). Each ``@njit`` kernel compiles on its first call
(once per dtype) and is cached on disk (``cache=True``), so importing this module
compiles nothing and a second run of a program starts fast.

The kernels live in one module per kind; this one gathers the backend's entry points:

* ``parallel.py``: the engine's threads (how a kernel's tasks are split among them), and
  ``spinning.py``, how they wait for work; ``tinygrad_uu/threads.py`` holds the thread
  setting and the BLAS policy;
* ``elementwise.py``: relu, leaky relu, binary cross-entropy on logits, zero padding,
  concatenate;
* ``normalization.py``: batch norm;
* ``gemm.py``: a blocked matrix product;
* ``conv.py``: which conv kernel runs which convolution, over ``conv3x3.py``,
  ``conv_direct.py``, ``conv_winograd.py``, ``conv_im2col.py`` and ``conv_batched.py``;
  ``conv_pool.py``: a conv, its ReLU and a max pool in one hand-off to the threads;
* ``blas.py``: which matrix products of ``@`` and ``Linear`` BLAS may thread;
* ``pooling.py``: max and average pooling, nearest and bilinear upsampling.
"""
from __future__ import annotations

from .conv import (FUSES_RELU, SAVES_WORK, conv2d_backward, conv2d_forward, conv2d_grad_input,  # noqa: F401
                   conv2d_grad_weight)
from .conv_pool import FUSES_POOL, conv2d_max_pool2d_backward, conv2d_max_pool2d_forward  # noqa: F401
from .elementwise import (add, add_relu_forward, bce_with_logits_backward, bce_with_logits_forward,  # noqa: F401
                          concatenate, leaky_relu_backward, leaky_relu_forward, relu_backward,
                          relu_backward_and_channel_sums, relu_forward)
from .gemm import matmul  # noqa: F401
from .normalization import (batch_norm_backward, batch_norm_forward, batch_norm_stats,  # noqa: F401
                            batch_norm_train_forward)
from .pooling import (avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,  # noqa: F401
                      max_pool2d_forward, upsample_bilinear2d_backward, upsample_bilinear2d_forward,
                      upsample_nearest2d_backward, upsample_nearest2d_forward)
