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

A classifier's last layer, ``x @ W.T`` with few outputs (W of shape (10, K)), is a
product BLAS does badly: 48 us for (64, 1568) @ (1568, 10) on one thread, on this AMD
EPYC. ``_rows_times_few_columns`` takes 23 us (7.3 against 15.5 at (128, 256)), measured;
it runs on the calling thread, so it needs no change of BLAS's threads either.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..threads import get_num_threads, single_threaded_blas
from .parallel import FAST, _pool, rest_threads

BLAS_THREADS_MIN_FLOPS = 16e6
FEW_COLUMNS = 16  # at most this many columns in a @ b for _rows_times_few_columns


@njit(fastmath=FAST, nogil=True, cache=True)
def _rows_times_few_columns(a, bt, out):
    """out[i, j] = sum_k a[i, k] bt[j, k]: a @ bt.T for a bt of few rows. Four rows of a
    and two of bt at a time: each loaded value is used twice or four times, from
    registers (eight running sums, vectorised along k by LLVM)."""
    m, k, n = a.shape[0], a.shape[1], bt.shape[0]
    zero = a.dtype.type(0)
    i = 0
    while i < m:
        rows = min(4, m - i)
        r0, r1, r2, r3 = i, i + min(1, rows - 1), i + min(2, rows - 1), i + min(3, rows - 1)
        j = 0
        while j < n:
            j1 = j + min(1, n - j - 1)  # an odd last column is computed twice
            s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = zero
            for p in range(k):
                u, v = bt[j, p], bt[j1, p]
                x0, x1, x2, x3 = a[r0, p], a[r1, p], a[r2, p], a[r3, p]
                s0 += x0 * u; s1 += x1 * u; s2 += x2 * u; s3 += x3 * u  # noqa: E702
                t0 += x0 * v; t1 += x1 * v; t2 += x2 * v; t3 += x3 * v  # noqa: E702
            out[r0, j], out[r1, j], out[r2, j], out[r3, j] = s0, s1, s2, s3
            out[r0, j1], out[r1, j1], out[r2, j1], out[r3, j1] = t0, t1, t2, t3
            j += 2
        i += 4


def _few_columns(a, b) -> bool:
    """a @ b for _rows_times_few_columns: 2-D floats of one dtype, 2 to FEW_COLUMNS columns
    in b, b.T (a weight W of shape (columns, K), passed as W.T) and a contiguous rows, and
    a big enough for the kernel's call to pay (one column, or a of 9 x 33: BLAS wins)."""
    return (a.ndim == b.ndim == 2 and 2 <= b.shape[1] <= FEW_COLUMNS and a.size >= 4096
            and a.dtype == b.dtype and a.dtype.kind == "f" and a.flags.c_contiguous
            and b.T.flags.c_contiguous)


def _flops(a, b):
    m, k = (a.shape[-2], a.shape[-1]) if a.ndim > 1 else (1, a.shape[0])
    n = b.shape[-1] if b.ndim > 1 else 1
    batch = max(math.prod(a.shape[:-2]), math.prod(b.shape[:-2]), 1)
    return 2.0 * batch * m * k * n


def _few_columns_product(a, b):
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    _rows_times_few_columns(a, b.T, out)
    return out


def _product_here(a, b):
    """``a @ b`` on this thread's BLAS setting, or by _rows_times_few_columns (no BLAS)
    where b has few columns."""
    return _few_columns_product(a, b) if _few_columns(a, b) else a @ b


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (numpy's rules); on one BLAS thread when it is small."""
    if get_num_threads() > 1 and not _few_columns(a, b):
        if _flops(a, b) >= BLAS_THREADS_MIN_FLOPS:
            rest_threads()
            return a @ b
        with single_threaded_blas():
            return a @ b
    return _product_here(a, b)


def matmul_pair(a1, b1, a2, b2):
    """``(a1 @ b1, a2 @ b2)``: side by side on two of the engine's threads, one BLAS thread
    each, when both are small (under BLAS_THREADS_MIN_FLOPS) and the engine's threads are
    awake; else one after the other. A Linear layer's backward, dx = g @ W and dW = g^T @ x,
    with nothing else to run beside it: W4's 1568 -> 10 layer on two threads, 63-79 us side
    by side against 82-95 one after the other (alternated in one process). Not when the
    threads were sent to rest for a product on BLAS's threads: W3's MLP, whose 784 -> 256
    layer's products run there, took 1.61 ms a step on two threads with its 256 -> 10
    layer's pair side by side against 0.87 one after the other (BLAS's threads still spin,
    and ours must be woken). On one thread nothing changes."""
    pool = None
    if get_num_threads() > 1 and max(_flops(a1, b1), _flops(a2, b2)) < BLAS_THREADS_MIN_FLOPS:
        pool = _pool()
    if pool is None or not pool.awake():
        return matmul(a1, b1), matmul(a2, b2)
    pairs, out = ((a1, b1), (a2, b2)), [None, None]

    def product(i):
        out[i] = _product_here(*pairs[i])

    with single_threaded_blas():
        pool.run(product, 2)
    return out[0], out[1]
