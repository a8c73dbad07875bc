"""A blocked matrix product in numba (the engine's own; ``Tensor @`` uses numpy's BLAS)."""
from __future__ import annotations

import numpy as np
from numba import njit

from .parallel import FAST, _parallel

# =========================================================================== matmul
# c = a @ b, computed as c[i, j] = dot(a[i, :], bt[j, :]) with bt = b.T made contiguous,
# so both operands of every dot product are contiguous rows. Three levels of blocking:
#   * a 2 x 4 block of c is computed at once: each loaded value of a is used 4 times and
#     each value of bt twice, from registers (8 running sums, vectorised by LLVM);
#   * KC columns of k at a time, so the 6 rows of a block stay in L1 cache;
#   * NC rows of bt at a time, so the (NC x KC) tile of bt (64 KB) stays in L2 cache
#     while a panel of mc rows of a streams past it.
# The sizes were tuned by a sweep on a Zen 3 core (32 KB L1, 512 KB L2).
KC, NC = 1024, 16


@njit(fastmath=FAST, nogil=True, cache=True)
def _dot(a, b):
    s = a.dtype.type(0)
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(fastmath=FAST, nogil=True, cache=True)
def _dot_2x4(a0, a1, b0, b1, b2, b3, c, i, j):
    """c[i:i+2, j:j+4] += [a0; a1] @ [b0; b1; b2; b3].T with 8 sums held in registers."""
    z = a0.dtype.type(0)
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = z
    for k in range(a0.shape[0]):
        x0, x1 = a0[k], a1[k]
        y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
        c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3  # noqa: E702
        c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3  # noqa: E702
    c[i, j] += c00; c[i, j + 1] += c01; c[i, j + 2] += c02; c[i, j + 3] += c03  # noqa: E702
    c[i + 1, j] += c10; c[i + 1, j + 1] += c11; c[i + 1, j + 2] += c12; c[i + 1, j + 3] += c13  # noqa: E702


@njit(fastmath=FAST, nogil=True, cache=True)
def _matmul_tile(a, bt, c, i0, i1, j0, j1, k0, k1):
    """c[i0:i1, j0:j1] += a[i0:i1, k0:k1] @ bt[j0:j1, k0:k1].T, in 2 x 4 blocks plus edges."""
    i = i0
    while i + 2 <= i1:
        a0, a1 = a[i, k0:k1], a[i + 1, k0:k1]
        j = j0
        while j + 4 <= j1:
            _dot_2x4(a0, a1, bt[j, k0:k1], bt[j + 1, k0:k1], bt[j + 2, k0:k1], bt[j + 3, k0:k1], c, i, j)
            j += 4
        for jj in range(j, j1):
            c[i, jj] += _dot(a0, bt[jj, k0:k1])
            c[i + 1, jj] += _dot(a1, bt[jj, k0:k1])
        i += 2
    if i < i1:  # an odd last row
        for jj in range(j0, j1):
            c[i, jj] += _dot(a[i, k0:k1], bt[jj, k0:k1])


@njit(fastmath=FAST, nogil=True, cache=True)
def _matmul_kernel(a, bt, c, mc, start, stop):
    """c[p] = a[p] @ bt[p].T. a: (B, M, K), bt: (B, N, K), c: (B, M, N) zeros.

    A task is (matrix p, panel of mc rows); it walks the NC x KC tiles of bt, so
    each tile is reused by all the rows of the panel while it is in cache.
    """
    m, k, n = a.shape[1], a.shape[2], bt.shape[1]
    panels = (m + mc - 1) // mc
    for task in range(start, stop):
        p, i0 = task // panels, (task % panels) * mc
        i1 = min(i0 + mc, m)
        for j0 in range(0, n, NC):
            for k0 in range(0, k, KC):
                _matmul_tile(a[p], bt[p], c[p], i0, i1, j0, min(j0 + NC, n), k0, min(k0 + KC, k))


def matmul(a, b):
    """Batched ``a @ b`` with numpy broadcasting of the batch axes (a, b at least 2-D)."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    # Copy only where it pays: b.T of an F-ordered b, or of a transposed view, is already
    # C-contiguous and costs nothing; otherwise O(K N) copying beside O(M K N) arithmetic.
    a3 = np.ascontiguousarray(np.broadcast_to(a, batch + (m, k))).reshape(-1, m, k)
    bt3 = np.ascontiguousarray(np.broadcast_to(np.swapaxes(b, -1, -2), batch + (n, k))).reshape(-1, n, k)
    c = np.zeros((a3.shape[0], m, n), dtype=a.dtype)
    mc = 64  # smaller panels when there are too few to keep every core busy
    while mc > 2 and a3.shape[0] * -(-m // mc) < 8:
        mc //= 2
    _parallel(_matmul_kernel, a3.shape[0] * -(-m // mc), c.size * k, a3, bt3, c, mc)
    return c.reshape(batch + (m, n))
