"""conv2d by direct loops: stride 1, few channels on one side (a first or last layer)."""
from __future__ import annotations

import numpy as np
from numba import njit

from .elementwise import _out_hw, _pad, _unpad
from .parallel import FAST, _parallel

# =========================================================================== conv2d: direct loops
# For stride 1, with the padded image flattened (row after row, Wp = padded width),
# tap (i, j) of the kernel reads the flat image shifted by  i*dh*Wp + j*dw:
#
#     wide[y*Wp + x] += w[o, c, i, j] * xflat[y*Wp + x + i*dh*Wp + j*dw]
#
# One long contiguous multiply-add per tap, which vectorises well. "wide" rows have Wp
# entries, of which the first OW are the output row (the rest read across the row
# boundary and are cut off). No copies, no matrix: best when C_in * kH * kW is small
# (a first layer on grey images), where a matrix product has almost nothing to do.

@njit(fastmath=FAST, nogil=True, cache=True)
def _direct_forward(xp, w, bias, out, dh, dw, groups, start, stop):
    """A task is one output plane (image b, output channel o)."""
    wp = xp.shape[3]
    co, cg, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    og = co // groups
    span = oh * wp - (kw - 1) * dw  # the wide positions that hold outputs
    wide = np.empty(span, dtype=xp.dtype)
    for task in range(start, stop):
        b, o = task // co, task % co
        first = (o // og) * cg  # the first input channel of o's group
        wide[:] = 0
        for c in range(cg):
            flat = xp[b, first + c].ravel()
            for i in range(kh):
                for j in range(kw):
                    wv, src = w[o, c, i, j], flat[i * dh * wp + j * dw:]
                    for t in range(span):
                        wide[t] += wv * src[t]
        add = bias[o] if bias.shape[0] else xp.dtype.type(0)
        for y in range(oh):
            dst, row = out[b, o, y], wide[y * wp:]
            for x in range(ow):
                dst[x] = row[x] + add


@njit(nogil=True, cache=True)
def _widen(g, wide, wp):
    """Lay an output-gradient plane (OH, OW) out in wide rows of Wp, zeros in between."""
    oh, ow = g.shape
    wide[:] = 0
    for y in range(oh):
        dst, src = wide[y * wp:], g[y]
        for x in range(ow):
            dst[x] = src[x]


@njit(fastmath=FAST, nogil=True, cache=True)
def _direct_grad_input(g, w, gxp, dh, dw, groups, start, stop):
    """xflat[t + i*dh*Wp + j*dw] += w[o, c, i, j] * wide_g[t]: the forward's taps, reversed.
    A task is one input plane (image b, channel ch), so writes never collide."""
    co, oh = g.shape[1], g.shape[2]
    _, cg, kh, kw = w.shape
    wp, og = gxp.shape[3], co // groups
    span = oh * wp - (kw - 1) * dw
    wide = np.empty(span, dtype=g.dtype)
    for task in range(start, stop):
        b, ch = task // (cg * groups), task % (cg * groups)
        c, first = ch % cg, (ch // cg) * og  # channel within the group, first output channel
        flat = gxp[b, ch].ravel()
        for o in range(first, first + og):
            _widen(g[b, o], wide, wp)
            for i in range(kh):
                for j in range(kw):
                    wv, dst = w[o, c, i, j], flat[i * dh * wp + j * dw:]
                    for t in range(span):
                        dst[t] += wv * wide[t]


@njit(fastmath=FAST, nogil=True, cache=True)
def _direct_grad_weight(xp, g, gw, dh, dw, groups, start, stop):
    """dw[o, c, i, j] = sum_n dot(wide_g[n, o], xflat[n, c] shifted by i*dh*Wp + j*dw).
    A task is one (output channel o, input channel c) pair."""
    n, co, oh = g.shape[0], g.shape[1], g.shape[2]
    _, cg, kh, kw = gw.shape
    wp, og = xp.shape[3], co // groups
    span = oh * wp - (kw - 1) * dw
    wide = np.empty(span, dtype=g.dtype)
    for task in range(start, stop):
        o, c = task // cg, task % cg
        ch = (o // og) * cg + c
        for b in range(n):
            _widen(g[b, o], wide, wp)
            flat = xp[b, ch].ravel()
            for i in range(kh):
                for j in range(kw):
                    src = flat[i * dh * wp + j * dw:]
                    s = xp.dtype.type(0)
                    for t in range(span):
                        s += wide[t] * src[t]
                    gw[o, c, i, j] += s


def conv2d_forward_direct(x, w, b, stride, padding, dilation, groups):
    n, co = x.shape[0], w.shape[0]
    oh, ow = _out_hw(x.shape, w.shape[2:], stride, padding, dilation)
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    bias = np.zeros(0, dtype=x.dtype) if b is None else b
    _parallel(_direct_forward, n * co, out.size * w[0].size, _pad(x, padding), w, bias, out, *dilation, groups)
    return out


def conv2d_grad_input_direct(grad_out, w, x_shape, stride, padding, dilation, groups):
    n, c, h, wd = x_shape
    (ph, pw) = padding
    gxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=grad_out.dtype)
    _parallel(_direct_grad_input, n * c, grad_out.size * w[0].size, grad_out, w, gxp, *dilation, groups)
    return _unpad(gxp, padding)


def conv2d_grad_weight_direct(x, grad_out, w_shape, stride, padding, dilation, groups):
    gw = np.zeros(w_shape, dtype=x.dtype)
    _parallel(_direct_grad_weight, w_shape[0] * w_shape[1], grad_out.size * gw[0].size,
              _pad(x, padding), grad_out, gw, *dilation, groups)
    return gw
