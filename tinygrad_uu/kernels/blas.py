"""Matrix products for the autograd ops (``@``, ``Linear``): which ones BLAS may thread.

OpenBLAS splits a product among its threads, and after each such product its threads
spin-wait for the next one, each holding a core, for a long while. A big product (an
MLP's layers) pays for that: the threads are ready for the next product at once. A
small one does not: W4 (the MNIST CNN's training step, batch 64, two threads), whose
only BLAS products are its 1568 -> 10 Linear layer's (2 MFLOP each), ran 12.3-17.8 ms
per step with them on two BLAS threads, because the spinning threads took the cores
from the convolutions that followed; with these products on one BLAS thread, 9.6-12.2 ms
(four runs each, separate processes, load 0.8-1.1; 12.5 ms on one thread). The MLP of
W3, whose 784 -> 256 layer's products (51 MFLOP) stay on BLAS's threads, went from
0.89-0.95 ms per step to 1.05-1.65 (its 256 -> 10 layer's products now on one thread).

So a product under BLAS_THREADS_MIN_FLOPS runs on one BLAS thread
(``threads.single_threaded_blas``); a bigger one on ``set_num_threads``'s BLAS threads,
after the engine's own threads are told to stop spinning (``parallel.rest_threads``).
"""
from __future__ import annotations

import math

import numpy as np

from ..threads import get_num_threads, single_threaded_blas
from .parallel import rest_threads

BLAS_THREADS_MIN_FLOPS = 16e6


def _flops(a, b):
    m, k = (a.shape[-2], a.shape[-1]) if a.ndim > 1 else (1, a.shape[0])
    n = b.shape[-1] if b.ndim > 1 else 1
    batch = max(math.prod(a.shape[:-2]), math.prod(b.shape[:-2]), 1)
    return 2.0 * batch * m * k * n


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (numpy's rules); on one BLAS thread when it is small."""
    if get_num_threads() == 1:
        return a @ b
    if _flops(a, b) >= BLAS_THREADS_MIN_FLOPS:
        rest_threads()
        return a @ b
    with single_threaded_blas():
        return a @ b
