"""Batch norm: per-channel statistics, the forward and the backward."""
from __future__ import annotations

import numpy as np
from numba import njit

from .parallel import FAST, _parallel

# =========================================================================== batch norm
# x as (N, C, L). A task is one channel: its N * L values, read in N contiguous rows.
# Sums run in float64.

@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_stats(x, mean, var, start, stop):
    n, length = x.shape[0], x.shape[2]
    m = n * length
    for c in range(start, stop):
        total = 0.0
        for b in range(n):
            row = x[b, c]
            for t in range(length):
                total += row[t]
        mu = total / m
        squares = 0.0
        for b in range(n):
            row = x[b, c]
            for t in range(length):
                d = row[t] - mu
                squares += d * d
        mean[c], var[c] = mu, squares / m


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_forward(x, mean, inv_std, weight, bias, out, xhat, start, stop):
    for c in range(start, stop):
        mu, s = x.dtype.type(mean[c]), inv_std[c]
        w, b0 = weight[c], bias[c]
        for b in range(x.shape[0]):
            src, h, dst = x[b, c], xhat[b, c], out[b, c]
            for t in range(x.shape[2]):
                v = (src[t] - mu) * s
                h[t] = v
                dst[t] = v * w + b0


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_backward(g, xhat, scale, batch_stats, dx, sum_gx, sum_g, start, stop):
    n, length = g.shape[0], g.shape[2]
    m = n * length
    for c in range(start, stop):
        sg = sgx = 0.0
        for b in range(n):
            gr, hr = g[b, c], xhat[b, c]
            for t in range(length):
                sg += gr[t]
                sgx += gr[t] * hr[t]
        sum_g[c], sum_gx[c] = sg, sgx
        k = scale[c]
        shift = g.dtype.type(sg / m) if batch_stats else g.dtype.type(0)
        slope = g.dtype.type(sgx / m) if batch_stats else g.dtype.type(0)
        for b in range(n):
            gr, hr, dr = g[b, c], xhat[b, c], dx[b, c]
            for t in range(length):
                dr[t] = k * (gr[t] - shift - hr[t] * slope)


def batch_norm_stats(x):
    c = x.shape[1]
    mean, var = np.empty(c), np.empty(c)
    _parallel(_bn_stats, c, x.size, x, mean, var)
    return mean, var


def batch_norm_forward(x, mean, inv_std, weight, bias):
    out, xhat = np.empty_like(x), np.empty_like(x)
    _parallel(_bn_forward, x.shape[1], x.size, x, mean, inv_std, weight, bias, out, xhat)
    return out, xhat


def batch_norm_backward(g, xhat, scale, batch_stats):
    c = g.shape[1]
    dx, sum_gx, sum_g = np.empty_like(g), np.empty(c, g.dtype), np.empty(c, g.dtype)
    _parallel(_bn_backward, c, g.size, g, xhat, scale, batch_stats, dx, sum_gx, sum_g)
    return dx, sum_gx, sum_g
