"""Batch norm: per-channel statistics, the forward and the backward, each with an
optional leaky ReLU on the output (negative_slope 0: ReLU; 1: none) in the same pass."""
from __future__ import annotations

import numpy as np
from numba import njit

from ..threads import get_num_threads
from .elementwise import _relu
from .parallel import CHUNKS_PER_THREAD, FAST, FLAG_STRIDE, U, _chunk, _parallel, _pool, on_one_thread
from .spinning import _fetch_add, _load_acquire, _pause

# =========================================================================== batch norm
# x as (N, C, L). A task is one channel: its N * L values, read in N contiguous rows,
# through flat views at unsigned offsets (a row view per (n, c) cost more than the row
# itself at 4x4).
# Sums run in float64. The forward writes only its output: the backward computes
# xhat = (x - mean) * inv_std again from x, which costs less than writing xhat out and
# reading it back.
# The activation y -> y if y > 0 else negative_slope * y rides along: fused, a
# conv -> BN -> ReLU block reads and writes its maps three times fewer (no ReLU output
# written and read back, no ReLU gradient), measured 1.3-1.65x faster than BN and ReLU
# apart on one and two threads, forward and backward, on W7's and W8's shapes. The
# backward finds the activation's slope from y, computed again from x, the same way as
# in the forward.

# Each kernel's work on one row (one image's plane of one channel, at xf[row:row + length])
# is one of four inline functions; the kernels differ only in the order of the rows.

@njit(fastmath=FAST, nogil=True, inline="always")
def _row_sums(xf, row, length, shift):
    """The sums of d and d * d over the row, d = x - shift, in x's dtype (in vector lanes)."""
    total = squares = xf.dtype.type(0)
    for t in range(length):
        d = xf[row + t] - shift
        total += d
        squares += d * d
    return total, squares


@njit(fastmath=FAST, nogil=True, inline="always")
def _normalize_row(xf, of, row, length, mu, s, w, b0, negative_slope):
    """of = y if y > 0 else negative_slope * y, y = (x - mu) * s * w + b0, along the row;
    a ReLU (slope 0) writes 0 for y <= 0, as relu_forward does (not y * 0, which is -0)."""
    zero = xf.dtype.type(0)
    if negative_slope == 0:
        for t in range(length):
            y = (xf[row + t] - mu) * s * w + b0
            of[row + t] = _relu(y, zero, True)
    else:
        for t in range(length):
            y = (xf[row + t] - mu) * s * w + b0
            of[row + t] = y if y > 0 else y * negative_slope


@njit(fastmath=FAST, nogil=True, inline="always")
def _row_gradient_sums(gf, xf, row, length, mu, s, w, b0, negative_slope):
    """The sums of gy and gy * xhat over the row: xhat = (x - mu) * s, gy = g where the
    output y = xhat * w + b0 is positive, negative_slope * g elsewhere."""
    total = along_xhat = gf.dtype.type(0)
    for t in range(length):
        xhat = (xf[row + t] - mu) * s
        gy = gf[row + t] if xhat * w + b0 > 0 else gf[row + t] * negative_slope
        total += gy
        along_xhat += gy * xhat
    return total, along_xhat


@njit(fastmath=FAST, nogil=True, inline="always")
def _row_input_gradient(gf, xf, df, row, length, mu, s, w, b0, negative_slope, shift, along_xhat):
    """df = s * w * (gy - shift - xhat * along_xhat) along the row (xhat and gy as above)."""
    k = s * w
    for t in range(length):
        xhat = (xf[row + t] - mu) * s
        gy = gf[row + t] if xhat * w + b0 > 0 else gf[row + t] * negative_slope
        df[row + t] = k * (gy - shift - xhat * along_xhat)


@njit(fastmath=FAST, nogil=True, inline="always")
def _set_statistics(c, total, squares, m, shift, mean, var):
    """mean[c] and var[c] from the channel's sums of d and d * d (d = x - shift)."""
    mean_d = total / m
    mean[c], var[c] = shift + mean_d, max(squares / m - mean_d * mean_d, 0.0)


@njit(fastmath=FAST, nogil=True, inline="always")
def _set_inv_std(c, var, eps, inv_std):
    """inv_std[c] = 1 / sqrt(var[c] + eps), computed in float64 and stored in inv_std's dtype."""
    inv_std[c] = inv_std.dtype.type(1.0 / np.sqrt(var[c] + eps))


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_stats(x, mean, var, start, stop):
    """One pass: the sums of d and d * d with d = x - x[0, c, 0]. Shifted by one of the
    channel's own values, the mean of d is of the order of the spread, so
    var = mean(d * d) - mean(d) ** 2 loses nothing to a large mean. Each row (one image's
    plane) is summed in x's dtype, in vector lanes, and the rows' sums in float64: twice
    as fast as every value in float64 (the vector holds twice as many), and a row of
    float32 values of the order of the spread loses digits only in the seventh place."""
    n, channels, length = x.shape[0], x.shape[1], U(x.shape[2])
    xf = x.ravel()
    for c in range(start, stop):
        shift = x[0, c, 0]
        total = squares = 0.0
        for b in range(n):
            row_total, row_squares = _row_sums(xf, U((b * channels + c) * length), length, shift)
            total += row_total
            squares += row_squares
        _set_statistics(c, total, squares, n * x.shape[2], shift, mean, var)


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_forward(x, mean, inv_std, weight, bias, negative_slope, out, start, stop):
    """out = y if y > 0 else negative_slope * y, y = (x - mean) * inv_std * weight + bias."""
    n, channels, length = x.shape[0], x.shape[1], U(x.shape[2])
    xf, of = x.ravel(), out.ravel()
    for c in range(start, stop):
        mu, s, w, b0 = x.dtype.type(mean[c]), inv_std[c], weight[c], bias[c]
        for b in range(n):
            _normalize_row(xf, of, U((b * channels + c) * length), length, mu, s, w, b0, negative_slope)


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_train_forward(x, weight, bias, eps, negative_slope, out, mean, var, inv_std, start, stop):
    """Training's forward for the channels [start, stop): their statistics, then their
    output, while their values are still in the core's cache. Measured against the
    statistics and the output as two calls over all channels (medians of 100 alternated
    runs, caches flushed between them, W7's and W8's shapes): 1.05-1.29x on one thread,
    1.04-1.46x on two, where one hand-off to the threads is saved too."""
    _bn_stats(x, mean, var, start, stop)
    for c in range(start, stop):
        _set_inv_std(c, var, eps, inv_std)
    _bn_forward(x, mean, inv_std, weight, bias, negative_slope, out, start, stop)


@njit(fastmath=FAST, nogil=True, inline="always")
def _gradient_terms(c, sg, sgx, m, batch_stats, sum_g, sum_gx, dtype):
    """sum_g[c], sum_gx[c] from the channel's sums; dx's shift and along_xhat terms (the
    batch's statistics depend on x; running ones do not)."""
    sum_g[c], sum_gx[c] = sg, sgx
    if batch_stats:
        return dtype.type(sg / m), dtype.type(sgx / m)
    return dtype.type(0), dtype.type(0)


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_backward(g, x, mean, inv_std, weight, bias, negative_slope, batch_stats, dx, sum_gx, sum_g,
                 start, stop):
    """xhat = (x - mean) * inv_std, and the output y = xhat * weight + bias for the
    activation's slope, computed again where they are needed (not kept from the forward)."""
    n, channels, length = g.shape[0], g.shape[1], U(g.shape[2])
    gf, xf, df = g.ravel(), x.ravel(), dx.ravel()
    for c in range(start, stop):
        mu, s, w, b0 = x.dtype.type(mean[c]), inv_std[c], weight[c], bias[c]
        sg = sgx = 0.0  # float64 over the rows; each row in g's dtype, as in _bn_stats
        for b in range(n):
            row_g, row_gx = _row_gradient_sums(gf, xf, U((b * channels + c) * length), length, mu, s, w, b0,
                                               negative_slope)
            sg += row_g
            sgx += row_gx
        shift, along_xhat = _gradient_terms(c, sg, sgx, n * g.shape[2], batch_stats, sum_g, sum_gx, g.dtype)
        for b in range(n):
            _row_input_gradient(gf, xf, df, U((b * channels + c) * length), length, mu, s, w, b0, negative_slope,
                                shift, along_xhat)


# When a batch norm's rows are short (maps of 8x8 and smaller), the same sums and outputs
# are made image by image instead (the _by_images and _shared kernels): each pass reads x
# in memory order, where by channel each 64-byte row of a 4x4 map is a whole image's
# channels away from the next (8 KB for 128 channels), too far for the CPU's prefetcher.
# Measured on an Intel Xeon, one thread, training's forward alone, caches flushed before
# each call (not): 64 x 128 x 4x4 1.65x (1.44x), 64 x 64 x 8x8 1.50x (1.60x), 16 x 64 x
# 8x8 1.24x (1.24x); on longer rows less, 64 x 32 x 16x16 1.14x (1.17x), 64 x 16 x 32x32
# 1.07x (1.05x). Steps alternated in one process (30-40 rounds): W8 1.019x and 1.023x on
# one thread, W7 1.00x; with every row length, W8 0.987x on two threads against this rule
# (its 64 x 32 x 16x16 batch norms are then made on one thread, not split by channels).
#
# On several threads the images are cut into chunks, and each thread that joins the job
# claims chunks (an atomic count, ``_fetch_add``) and sums over their images; when every
# chunk is summed, each thread computes the statistics from all the chunks' sums (in
# chunk order: the same numbers whichever thread summed which chunk) and makes the output
# of the chunks it claimed, while their values are still in its core's cache. One job,
# one hand-off. A thread waits only for chunks that a running thread has claimed: one
# that joins late finds every chunk claimed and returns, so the job never waits for a
# thread that has not started. Per call inside W8's step on two threads, against the
# per-channel split (medians of 20 steps each, alternated, Intel Xeon): 64 x 64 x 8x8
# forward 250-286 -> 175-187 us, backward 334-375 -> 188-220 us; 64 x 128 x 4x4 forward
# 95-120 -> 102-130 us, backward 166-182 -> 156-187 us; on longer rows it lost (64 x 32 x
# 16x16 forward 306 -> 330 us, 64 x 16 x 32x32 454 -> 520 us). Steps alternated in one
# process (40 rounds, load 0.8-0.95): W8 1.028x on two threads and 1.002x on one, W7 1.000x
# and 0.996x (its 8x8 batch norms, of 16 images, are too small to split).
BY_IMAGES_MAX_LENGTH = 64
CHUNK_CLAIMS, CHUNKS_DONE = 0, FLAG_STRIDE  # a shared job's counts, each on its own cache line


@njit(fastmath=FAST, nogil=True, inline="always")
def _image_sums(xf, channels, length, first, last, shift, total, squares):
    """total[c] and squares[c] += the sums of d and d * d (d = x - shift[c]) over images
    [first, last), as in _bn_stats."""
    for b in range(first, last):
        for c in range(channels):
            row_total, row_squares = _row_sums(xf, U((b * channels + c) * length), length, shift[c])
            total[c] += row_total
            squares[c] += row_squares


@njit(fastmath=FAST, nogil=True, inline="always")
def _normalize_images(xf, of, channels, length, first, last, mean, inv_std, weight, bias, negative_slope):
    """The output of images [first, last), as in _bn_forward."""
    for b in range(first, last):
        for c in range(channels):
            _normalize_row(xf, of, U((b * channels + c) * length), length, xf.dtype.type(mean[c]), inv_std[c],
                           weight[c], bias[c], negative_slope)


@njit(fastmath=FAST, nogil=True, inline="always")
def _image_gradient_sums(gf, xf, channels, length, first, last, mean, inv_std, weight, bias, negative_slope,
                         sg, sgx):
    """sg[c] and sgx[c] += the sums of gy and gy * xhat over images [first, last), as in _bn_backward."""
    for b in range(first, last):
        for c in range(channels):
            row_g, row_gx = _row_gradient_sums(gf, xf, U((b * channels + c) * length), length,
                                               xf.dtype.type(mean[c]), inv_std[c], weight[c], bias[c],
                                               negative_slope)
            sg[c] += row_g
            sgx[c] += row_gx


@njit(fastmath=FAST, nogil=True, inline="always")
def _input_gradient_images(gf, xf, df, channels, length, first, last, mean, inv_std, weight, bias,
                           negative_slope, shift, along_xhat):
    """dx of images [first, last), as in _bn_backward."""
    for b in range(first, last):
        for c in range(channels):
            _row_input_gradient(gf, xf, df, U((b * channels + c) * length), length, xf.dtype.type(mean[c]),
                                inv_std[c], weight[c], bias[c], negative_slope, shift[c], along_xhat[c])


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_train_forward_by_images(x, weight, bias, eps, negative_slope, out, mean, var, inv_std):
    """_bn_train_forward over all channels, image by image: the sums (as in _bn_stats) in
    one pass, then the output in another."""
    n, channels, length = x.shape[0], x.shape[1], U(x.shape[2])
    total, squares = np.zeros(channels), np.zeros(channels)
    shift = x[0, :, 0].copy()
    _image_sums(x.ravel(), channels, length, 0, n, shift, total, squares)
    for c in range(channels):
        _set_statistics(c, total[c], squares[c], n * x.shape[2], shift[c], mean, var)
        _set_inv_std(c, var, eps, inv_std)
    _normalize_images(x.ravel(), out.ravel(), channels, length, 0, n, mean, inv_std, weight, bias, negative_slope)


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_backward_by_images(g, x, mean, inv_std, weight, bias, negative_slope, batch_stats, dx, sum_gx, sum_g):
    """_bn_backward over all channels, image by image: the sums in one pass, dx in another."""
    n, channels, length = g.shape[0], g.shape[1], U(g.shape[2])
    gf, xf = g.ravel(), x.ravel()
    sg, sgx = np.zeros(channels), np.zeros(channels)  # float64 over the rows, as in _bn_backward
    _image_gradient_sums(gf, xf, channels, length, 0, n, mean, inv_std, weight, bias, negative_slope, sg, sgx)
    shift, along_xhat = np.empty(channels, g.dtype), np.empty(channels, g.dtype)
    for c in range(channels):
        shift[c], along_xhat[c] = _gradient_terms(c, sg[c], sgx[c], n * g.shape[2], batch_stats, sum_g, sum_gx,
                                                  g.dtype)
    _input_gradient_images(gf, xf, dx.ravel(), channels, length, 0, n, mean, inv_std, weight, bias, negative_slope,
                           shift, along_xhat)


@njit(nogil=True, inline="always")
def _claim(state, chunks, mine, count):
    """The next unclaimed chunk, noted in mine[count] (this thread's claims), and the new
    count; -1 when every chunk is claimed."""
    k = _fetch_add(state, CHUNK_CLAIMS, 1)
    if k >= chunks:
        return -1, count
    mine[count] = k
    return k, count + 1


@njit(nogil=True, inline="always")
def _wait_for_every_chunk(state, chunks):
    while _load_acquire(state, CHUNKS_DONE) < chunks:
        _pause()


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_train_forward_shared(x, weight, bias, eps, negative_slope, out, mean, var, inv_std, totals, squares, state):
    """One thread's part of _bn_train_forward_by_images cut into chunks of images (see
    above): totals[k] and squares[k] hold chunk k's sums; ``state`` the counts of chunks
    claimed and done. The thread that summed chunk 0 writes mean, var and inv_std."""
    n, channels, length, chunks = x.shape[0], x.shape[1], U(x.shape[2]), totals.shape[0]
    xf = x.ravel()
    shift = x[0, :, 0].copy()
    mine, count = np.empty(chunks, np.int64), 0
    k, count = _claim(state, chunks, mine, count)
    while k >= 0:
        totals[k, :], squares[k, :] = 0.0, 0.0
        first, last = _chunk(k, n, chunks)
        _image_sums(xf, channels, length, first, last, shift, totals[k], squares[k])
        _fetch_add(state, CHUNKS_DONE, 1)
        k, count = _claim(state, chunks, mine, count)
    if count == 0:
        return
    _wait_for_every_chunk(state, chunks)
    chunk_mean, chunk_var, chunk_inv_std = np.empty(channels), np.empty(channels), np.empty(channels, x.dtype)
    for c in range(channels):
        _set_statistics(c, totals[:, c].sum(), squares[:, c].sum(), n * x.shape[2], shift[c], chunk_mean, chunk_var)
        _set_inv_std(c, chunk_var, eps, chunk_inv_std)
    if mine[0] == 0:  # the first claim of the thread that claimed chunk 0
        mean[:], var[:], inv_std[:] = chunk_mean, chunk_var, chunk_inv_std
    for j in range(count):
        first, last = _chunk(mine[j], n, chunks)
        _normalize_images(xf, out.ravel(), channels, length, first, last, chunk_mean, chunk_inv_std, weight, bias,
                          negative_slope)


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_backward_shared(g, x, mean, inv_std, weight, bias, negative_slope, batch_stats, dx, sum_gx, sum_g, sgs, sgxs,
                        state):
    """One thread's part of _bn_backward_by_images cut into chunks of images, as
    _bn_train_forward_shared: sgs[k] and sgxs[k] hold chunk k's sums."""
    n, channels, length, chunks = g.shape[0], g.shape[1], U(g.shape[2]), sgs.shape[0]
    gf, xf = g.ravel(), x.ravel()
    mine, count = np.empty(chunks, np.int64), 0
    k, count = _claim(state, chunks, mine, count)
    while k >= 0:
        sgs[k, :], sgxs[k, :] = 0.0, 0.0
        first, last = _chunk(k, n, chunks)
        _image_gradient_sums(gf, xf, channels, length, first, last, mean, inv_std, weight, bias, negative_slope,
                             sgs[k], sgxs[k])
        _fetch_add(state, CHUNKS_DONE, 1)
        k, count = _claim(state, chunks, mine, count)
    if count == 0:
        return
    _wait_for_every_chunk(state, chunks)
    shift, along_xhat = np.empty(channels, g.dtype), np.empty(channels, g.dtype)
    chunk_sum_g, chunk_sum_gx = np.empty(channels, g.dtype), np.empty(channels, g.dtype)
    for c in range(channels):
        shift[c], along_xhat[c] = _gradient_terms(c, sgs[:, c].sum(), sgxs[:, c].sum(), n * g.shape[2], batch_stats,
                                                  chunk_sum_g, chunk_sum_gx, g.dtype)
    if mine[0] == 0:
        sum_g[:], sum_gx[:] = chunk_sum_g, chunk_sum_gx
    for j in range(count):
        first, last = _chunk(mine[j], n, chunks)
        _input_gradient_images(gf, xf, dx.ravel(), channels, length, first, last, mean, inv_std, weight, bias,
                               negative_slope, shift, along_xhat)


def _by_images(one_thread_kernel, shared_kernel, n, c, work, args):
    """Short rows: the one-thread kernel, or the shared one on every thread, given a pair
    of (chunks, c) float64 arrays for the chunks' sums and the array of the job's counts."""
    if on_one_thread(n, work, streaming=True):
        one_thread_kernel(*args)
        return
    threads = min(get_num_threads(), n)
    chunks = min(n, CHUNKS_PER_THREAD * threads)
    sums = (np.empty((chunks, c)), np.empty((chunks, c)), np.zeros(2 * FLAG_STRIDE, np.int64))
    _pool().run(lambda i: shared_kernel(*args, *sums), threads)


def batch_norm_stats(x):
    c = x.shape[1]
    mean, var = np.empty(c), np.empty(c)
    _parallel(_bn_stats, c, x.size, x, mean, var, streaming=True)
    return mean, var


def batch_norm_forward(x, mean, inv_std, weight, bias, negative_slope):
    out = np.empty_like(x)
    _parallel(_bn_forward, x.shape[1], 2 * x.size, x, mean, inv_std, weight, bias,
              x.dtype.type(negative_slope), out, streaming=True)
    return out


def batch_norm_train_forward(x, weight, bias, eps, negative_slope):
    c = x.shape[1]
    out, mean, var, inv_std = np.empty_like(x), np.empty(c), np.empty(c), np.empty(c, x.dtype)
    args = (x, weight, bias, float(eps), x.dtype.type(negative_slope), out, mean, var, inv_std)
    if x.shape[2] <= BY_IMAGES_MAX_LENGTH:
        _by_images(_bn_train_forward_by_images, _bn_train_forward_shared, x.shape[0], c, 3 * x.size, args)
    else:
        _parallel(_bn_train_forward, c, 3 * x.size, *args, streaming=True)
    return out, mean, var, inv_std


def batch_norm_backward(g, x, mean, inv_std, weight, bias, negative_slope, batch_stats):
    c = g.shape[1]
    dx, sum_gx, sum_g = np.empty_like(g), np.empty(c, g.dtype), np.empty(c, g.dtype)
    args = (g, x, mean, inv_std, weight, bias, g.dtype.type(negative_slope), batch_stats, dx, sum_gx, sum_g)
    if g.shape[2] <= BY_IMAGES_MAX_LENGTH:
        _by_images(_bn_backward_by_images, _bn_backward_shared, g.shape[0], c, 5 * g.size, args)
    else:
        _parallel(_bn_backward, c, 5 * g.size, *args, streaming=True)
    return dx, sum_gx, sum_g
