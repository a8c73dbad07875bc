"""Plain numpy, written by hand the way a student would after the course.

No autograd: every layer is a forward function that returns its output and a cache,
and a backward function that turns dL/d(output) into dL/d(input) and the weight
gradients. Convolution is im2col (every 3x3 receptive field copied into a row) times
the weight matrix, so the heavy lifting is one BLAS matrix product; its backward is
two more products and a col2im that adds the rows back into the image.

This is the baseline "what numpy alone gives you" (and the reference for the cross-check
when PyTorch is not installed).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..workloads import LR, PARAMS, chain_op
from .base import Engine, Step, Unsupported


# ------------------------------------------------------------------ layers

def linear_forward(x, w, b):
    return x @ w.T + b, x


def linear_backward(g, cache, w):
    x = cache
    return g @ w, g.T @ x, g.sum(axis=0)  # dx, dW, db


def relu_forward(x):
    return np.maximum(x, 0), x > 0


def relu_backward(g, mask):
    return g * mask


def im2col(x, k, pad):
    """Rows of every k x k receptive field: (N * OH * OW, C * k * k), a copy."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    windows = sliding_window_view(xp, (k, k), axis=(2, 3))   # N, C, OH, OW, k, k (a view)
    oh, ow = windows.shape[2:4]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)
    return cols, (oh, ow)


def col2im(dcols, x_shape, k, pad, oh, ow):
    """The adjoint of im2col: add every row back where its pixels came from."""
    n, c, h, w = x_shape
    dcols = dcols.reshape(n, oh, ow, c, k, k)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + oh, j:j + ow] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, pad:pad + h, pad:pad + w] if pad else dxp


def conv_forward(x, w, b, pad):
    cout, _, k, _ = w.shape
    cols, (oh, ow) = im2col(x, k, pad)
    out = cols @ w.reshape(cout, -1).T + b                    # (N * OH * OW, Cout)
    out = out.reshape(x.shape[0], oh, ow, cout).transpose(0, 3, 1, 2)
    return out, (cols, x.shape, oh, ow, pad)


def conv_backward(g, cache, w, need_dx=True):
    cols, x_shape, oh, ow, pad = cache
    cout, _, k, _ = w.shape
    gm = g.transpose(0, 2, 3, 1).reshape(-1, cout)            # (N * OH * OW, Cout)
    dw = (gm.T @ cols).reshape(w.shape)
    db = gm.sum(axis=0)
    dx = col2im(gm @ w.reshape(cout, -1), x_shape, k, pad, oh, ow) if need_dx else None
    return dx, dw, db


def maxpool2_forward(x):
    n, c, h, w = x.shape
    blocks = (x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
              .reshape(n, c, h // 2, w // 2, 4))
    idx = blocks.argmax(axis=-1)[..., None]
    return np.take_along_axis(blocks, idx, axis=-1)[..., 0], (idx, x.shape)


def maxpool2_backward(g, cache):
    idx, (n, c, h, w) = cache
    g4 = np.zeros(g.shape + (4,), dtype=g.dtype)
    np.put_along_axis(g4, idx, g[..., None], axis=-1)
    return g4.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def upsample2_forward(x):
    return x.repeat(2, axis=2).repeat(2, axis=3)


def upsample2_backward(g):
    n, c, h, w = g.shape
    return g.reshape(n, c, h // 2, 2, w // 2, 2).sum(axis=(3, 5))


def softmax_cross_entropy(logits, y):
    """Mean cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = -(z[rows, y] - np.log(s[:, 0])).mean()
    g = e / s
    g[rows, y] -= 1
    return loss, g / len(y)


def bce_with_logits(z, y):
    """Mean binary cross-entropy on logits, stable for any z, and its gradient."""
    loss = (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).mean()
    return loss, (1 / (1 + np.exp(-z)) - y) / z.size


# ------------------------------------------------------------------ models: loss and grads

def mlp_loss_grads(p, x, y):
    h, c1 = linear_forward(x, p["fc1.weight"], p["fc1.bias"])
    a, m1 = relu_forward(h)
    logits, c2 = linear_forward(a, p["fc2.weight"], p["fc2.bias"])
    loss, g = softmax_cross_entropy(logits, y)
    g, gw2, gb2 = linear_backward(g, c2, p["fc2.weight"])
    g = relu_backward(g, m1)
    _, gw1, gb1 = linear_backward(g, c1, p["fc1.weight"])
    return loss, {"fc1.weight": gw1, "fc1.bias": gb1, "fc2.weight": gw2, "fc2.bias": gb2}


def cnn_loss_grads(p, x, y):
    h, c1 = conv_forward(x, p["conv1.weight"], p["conv1.bias"], 1)
    h, m1 = relu_forward(h)
    h, p1 = maxpool2_forward(h)
    h, c2 = conv_forward(h, p["conv2.weight"], p["conv2.bias"], 1)
    h, m2 = relu_forward(h)
    h, p2 = maxpool2_forward(h)
    flat = h.reshape(len(x), -1)
    logits, c3 = linear_forward(flat, p["fc.weight"], p["fc.bias"])
    loss, g = softmax_cross_entropy(logits, y)
    grads = {}
    g, grads["fc.weight"], grads["fc.bias"] = linear_backward(g, c3, p["fc.weight"])
    g = relu_backward(maxpool2_backward(g.reshape(h.shape), p2), m2)
    g, grads["conv2.weight"], grads["conv2.bias"] = conv_backward(g, c2, p["conv2.weight"])
    g = relu_backward(maxpool2_backward(g, p1), m1)
    _, grads["conv1.weight"], grads["conv1.bias"] = conv_backward(g, c1, p["conv1.weight"],
                                                                  need_dx=False)
    return loss, grads


def unet_loss_grads(p, x, y):
    def conv_relu(h, name):
        h, cache = conv_forward(h, p[f"{name}.weight"], p[f"{name}.bias"], 1)
        h, mask = relu_forward(h)
        caches[name] = cache, mask
        return h

    def back_conv_relu(g, name, need_dx=True):
        cache, mask = caches[name]
        g, grads[f"{name}.weight"], grads[f"{name}.bias"] = conv_backward(
            relu_backward(g, mask), cache, p[f"{name}.weight"], need_dx)
        return g

    caches, grads = {}, {}
    skip = conv_relu(conv_relu(x, "enc1"), "enc2")
    h, pool = maxpool2_forward(skip)
    h = conv_relu(conv_relu(h, "enc3"), "enc4")
    h = np.concatenate([upsample2_forward(h), skip], axis=1)
    h = conv_relu(h, "dec1")
    logits, c_out = conv_forward(h, p["out.weight"], p["out.bias"], 0)
    loss, g = bce_with_logits(logits, y)
    g, grads["out.weight"], grads["out.bias"] = conv_backward(g, c_out, p["out.weight"])
    g = back_conv_relu(g, "dec1")
    g_up, g_skip = g[:, :32], g[:, 32:]
    g = back_conv_relu(back_conv_relu(upsample2_backward(g_up), "enc4"), "enc3")
    g = g_skip + maxpool2_backward(g, pool)
    back_conv_relu(back_conv_relu(g, "enc2"), "enc1", need_dx=False)
    return loss, grads


def chain_forward_backward(x, w, length):
    """W6 by hand: keep every intermediate, then walk the chain backwards."""
    hs, h = [], x
    for i in range(length):
        hs.append(h)
        op = chain_op(i)
        h = h + w if op == "add" else h * w if op == "mul" else np.tanh(h)
        if op == "tanh":
            hs[-1] = h  # tanh's backward needs its output
    out = h.sum()
    g, gw = np.ones_like(x), np.zeros_like(w)
    for i in reversed(range(length)):
        op = chain_op(i)
        if op == "add":
            gw += g
        elif op == "mul":
            gw += g * hs[i]
            g = g * w
        else:
            g = g * (1 - hs[i] * hs[i])
    return out, g, gw


# ------------------------------------------------------------------ the engine

class NumpyEngine(Engine):
    key = "numpy"
    name = "numpy (by hand)"

    def __init__(self):
        self.version = np.__version__

    def build(self, case, data):
        w = case.workload
        if w == "W1":
            a, b = data["a"].copy(), data["b"].copy()
            return Step(run=lambda: a @ b, check=lambda: {"out": a @ b})
        if w == "W2":
            return self._conv(case, data)
        if w in ("W3", "W4", "W5"):
            fn = {"W3": mlp_loss_grads, "W4": cnn_loss_grads, "W5": unet_loss_grads}[w]
            return _training_step(fn, data, PARAMS[w])
        if w == "W6":
            x, wt, n = data["x"].copy(), data["w"].copy(), case.params["length"]

            def check():
                out, gx, gw = chain_forward_backward(x, wt, n)
                return {"out": np.asarray(out), "grad.x": gx, "grad.w": gw}
            return Step(run=lambda: chain_forward_backward(x, wt, n), check=check)
        if w == "W8":
            raise Unsupported("no ResNet by hand (batch norm's backward is not written here)")
        raise Unsupported(f"unknown workload {w}")

    @staticmethod
    def _conv(case, data):
        x, w, b, g = (data[k].copy() for k in ("x", "weight", "bias", "grad_out"))
        backward = case.params["backward"]

        def run():
            out, cache = conv_forward(x, w, b, 1)
            if backward:
                return out, conv_backward(g, cache, w)
            return out

        def check():
            out, cache = conv_forward(x, w, b, 1)
            res = {"out": np.ascontiguousarray(out)}
            if backward:
                res["grad.x"], res["grad.weight"], res["grad.bias"] = conv_backward(g, cache, w)
            return res
        return Step(run=run, check=check)


def _training_step(loss_grads, data, names):
    params = {k: data[k].copy() for k in names}
    x, y = data["x"], data["y"]

    def run():
        loss, grads = loss_grads(params, x, y)
        for k in names:  # SGD, in place
            params[k] -= LR * grads[k]
        return loss

    def check():
        loss, grads = loss_grads(params, x, y)
        res = {"loss": np.asarray(loss)}
        for k in names:
            res[f"grad.{k}"] = grads[k].copy()
            params[k] -= LR * grads[k]
            res[f"param.{k}"] = params[k].copy()
        return res
    return Step(run=run, check=check)


def load():
    return [NumpyEngine()]
