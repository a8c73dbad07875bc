"""The differentiable image ops: convolution, transposed convolution, pooling, resizing.

Each op is a ``Function`` whose forward and backward call the kernels in
``tinygrad_uu/kernels`` (numba or numpy, see ``kernels.set_backend``). The kernels do
the arithmetic; this file only says which kernel computes which gradient. Use the
plain functions at the bottom (also ``tinygrad_uu.nn.functional.conv2d`` etc.); their
signatures follow PyTorch's.

Notation: x is the input (N, C, H, W), w the weight, g = dL/d(out), and
``xpad`` the input with ``padding`` zeros around it.
"""
from __future__ import annotations

from . import kernels
from .autograd import Function
from .tensor import Tensor


def _input_grads(ctx, gx, gw, gb):
    """One gradient per tensor input: (x, w) or (x, w, bias)."""
    return (gx, gw, gb) if len(ctx.parents) == 3 else (gx, gw)


class Conv2d(Function):
    """out[n, o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] * xpad[n, c, y*sh + i*dh, x*sw + j*dw]
    (c running over the input channels of o's group).

    Backward, each a sum over what the forward summed:

    * dL/dxpad[n, c, y*sh + i*dh, x*sw + j*dw] += sum_o w[o, c, i, j] * g[n, o, y, x]
      (a transposed convolution of g with w; the padding part is dropped),
    * dL/dw[o, c, i, j] = sum_{n, y, x} g[n, o, y, x] * xpad[n, c, y*sh + i*dh, x*sw + j*dw],
    * dL/db[o] = sum_{n, y, x} g[n, o, y, x].

    ``self.saved`` carries what the forward's kernel can lend the backward's (the numba
    backend keeps x's im2col matrix there, the xpad windows that dL/dw sums over).

    ``relu=True`` (nn.Sequential's Conv2d then ReLU): out = relu(conv), the ReLU taken as
    the kernel writes the output. The backward first applies the ReLU's,
    g' = g * [out > 0], with dL/db = sum_{n, y, x} g' in the same pass, then the conv's
    with g'.
    """

    def forward(self, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, relu=False):
        self.x, self.w, self.saved = x, w, {}
        self.options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        out = kernels.conv2d_forward(x, w, b, **self.options, saved=self.saved, relu=relu)
        self.out = out if relu else None  # the ReLU's mask
        if relu:  # what graph drawings and grad_fn show
            self.op_name = f"{type(self).op_name}+ReLU"
        return out

    def backward(self, g):
        need_b = len(self.parents) == 3 and self.needs_grad(2)
        gb = None
        if self.out is not None and need_b:
            g, gb = kernels.relu_backward_and_channel_sums(g, self.out)
        elif self.out is not None:
            g = kernels.relu_backward(g, self.out)
        gx, gw, conv_gb = kernels.conv2d_backward(self.x, self.w, g, **self.options, saved=self.saved,
                                                  need_grad_x=self.needs_grad(0), need_grad_w=self.needs_grad(1),
                                                  need_grad_b=need_b and gb is None)
        return _input_grads(self, gx, gw, conv_gb if gb is None else gb)


class ConvTranspose2d(Function):
    """The adjoint (transpose) of Conv2d, used to upsample in decoders. w: (C_in, C_out/groups, kH, kW).

    out[n, o, y*sh + i*dh - ph, x*sw + j*dw - pw] += sum_c x[n, c, y, x] * w[c, o, i, j]   (+ b[o])

    Backward: the adjoint of an adjoint is the original op, so

    * dL/dx[n, c, y, x] = sum_{o, i, j} w[c, o, i, j] * g[n, o, y*sh + i*dh - ph, x*sw + j*dw - pw],
      i.e. dL/dx = conv2d(g, w) with the same stride, padding, dilation, groups,
    * dL/dw[c, o, i, j] = sum_{n, y, x} x[n, c, y, x] * g[n, o, y*sh + i*dh - ph, x*sw + j*dw - pw],
    * dL/db[o] = sum_{n, y, x} g[n, o, y, x].
    """

    def forward(self, x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
        self.x, self.w = x, w
        self.options = dict(stride=stride, padding=padding, output_padding=output_padding,
                            dilation=dilation, groups=groups)
        return kernels.conv_transpose2d_forward(x, w, b, **self.options)

    def backward(self, g):
        gx, gw, gb = kernels.conv_transpose2d_backward(self.x, self.w, g, **self.options,
                                                       need_grad_x=self.needs_grad(0),
                                                       need_grad_w=self.needs_grad(1))
        return _input_grads(self, gx, gw, gb)


class MaxPool2d(Function):
    """out[n, c, y, x] = max over the window of x (padding counts as -inf).

    Backward: the max passes the gradient to the element that won and to no other,
    dL/dx[argmax[n, c, y, x]] += g[n, c, y, x]  (windows that overlap may add to one element).

    ``relu=True`` (nn.Sequential's ReLU then MaxPool2d): out = relu(max) in the same pass,
    and the backward passes g * [out > 0] (the ReLU's backward) to the element that won.
    """

    def forward(self, x, *, kernel_size, stride=None, padding=0, relu=False):
        if relu:  # what graph drawings and grad_fn show
            self.op_name = f"{type(self).op_name}+ReLU"
        out, self.argmax = kernels.max_pool2d_forward(x, kernel_size, stride, padding, relu)
        self.x_shape = x.shape
        return out

    def backward(self, g):
        return kernels.max_pool2d_backward(g, self.argmax, self.x_shape)


class Conv2dMaxPool2d(Function):
    """max_pool2d(conv2d(x, w, b)) as one op, with ``relu`` the ReLU between them
    (nn.Sequential's Conv2d, ReLU, MaxPool2d): the same values as the ops one after the
    other. The numba backend pools each chunk of images right after convolving it, on the
    same thread (kernels/conv_pool.py).

    Backward, the two ops' backwards in turn: the pool's, dL/dconv[argmax] += g (times
    [out > 0] with the ReLU, as in MaxPool2d), then the conv's with dL/dconv as its g
    (as in Conv2d). The conv's output is not kept: the argmax is all the pool's backward
    needs.
    """

    def forward(self, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, kernel_size=2, pool_stride=None,
                pool_padding=0, relu=False):
        self.x, self.w, self.saved = x, w, {}
        self.options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        out, self.argmax = kernels.conv2d_max_pool2d_forward(x, w, b, **self.options, kernel_size=kernel_size,
                                                             pool_stride=pool_stride, pool_padding=pool_padding,
                                                             relu=relu, saved=self.saved)
        # what graph drawings and grad_fn show
        self.op_name = "Conv2d+ReLU+MaxPool2d" if relu else "Conv2d+MaxPool2d"
        return out

    def backward(self, g):
        need_b = len(self.parents) == 3 and self.needs_grad(2)
        gx, gw, gb = kernels.conv2d_max_pool2d_backward(self.x, self.w, g, self.argmax, **self.options,
                                                        need_grad_x=self.needs_grad(0),
                                                        need_grad_w=self.needs_grad(1), saved=self.saved,
                                                        need_grad_b=need_b)
        return _input_grads(self, gx, gw, gb)


class AvgPool2d(Function):
    """out[n, c, y, x] = (1 / (kH * kW)) * sum over the window of xpad (zeros in the padding count).

    Backward: each element of a window receives an equal share,
    dL/dx[n, c, y*sh + i - ph, x*sw + j - pw] += g[n, c, y, x] / (kH * kW).
    """

    def forward(self, x, *, kernel_size, stride=None, padding=0):
        self.x_shape, self.options = x.shape, (kernel_size, stride, padding)
        return kernels.avg_pool2d_forward(x, kernel_size, stride, padding)

    def backward(self, g):
        return kernels.avg_pool2d_backward(g, self.x_shape, *self.options)


class Interpolate(Function):
    """Resize to (OH, OW). Every output pixel is a weighted sum of input pixels:

    out[n, c, y, x] = sum_{p, q} Ry[y, p] * x[n, c, p, q] * Rx[x, q]

    where each row of Ry (and Rx) holds one 1 (nearest) or two weights 1 - t and t
    (bilinear, align_corners=False). The op is linear, so its backward is the transpose:
    dL/dx[n, c, p, q] = sum_{y, x} Ry[y, p] * g[n, c, y, x] * Rx[x, q]
    (each output's gradient goes back to the pixels it was made from, times their weight).
    """

    def forward(self, x, *, size=None, scale_factor=None, mode="nearest"):
        self.x_shape, self.mode = x.shape, mode
        return kernels.upsample2d_forward(x, size=size, scale_factor=scale_factor, mode=mode)

    def backward(self, g):
        return kernels.upsample2d_backward(g, self.x_shape, mode=self.mode)


# --------------------------------------------------------------------------- the functions
def _tensors(*values):
    return tuple(v if isinstance(v, Tensor) or v is None else Tensor(v) for v in values)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, relu: bool = False) -> Tensor:
    """2-D convolution (cross-correlation), NCHW, like ``torch.nn.functional.conv2d``.

    x: (N, C_in, H, W); weight: (C_out, C_in / groups, kH, kW); bias: (C_out,) or None.
    stride, padding, dilation: an int or an (h, w) pair. Output: (N, C_out, OH, OW) with
    OH = (H + 2 * padding - dilation * (kH - 1) - 1) // stride + 1 (likewise OW).
    ``relu=True`` returns relu(conv) as one op (nn.Sequential's Conv2d, ReLU): the same
    values; the forward takes the ReLU as it writes the output, and the backward's one
    pass over the gradient masks it and sums the bias's.
    """
    x, weight, bias = _tensors(x, weight, bias)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    options = {"relu": True} if relu else {}
    return Conv2d.apply(*inputs, stride=stride, padding=padding, dilation=dilation, groups=groups, **options)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> Tensor:
    """Transposed convolution, like ``torch.nn.functional.conv_transpose2d`` (same argument order).

    x: (N, C_in, H, W); weight: (C_in, C_out / groups, kH, kW). Output (N, C_out, OH, OW) with
    OH = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1.
    With kernel 2, stride 2 it exactly doubles H and W (a U-Net decoder's up-step).
    """
    x, weight, bias = _tensors(x, weight, bias)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return ConvTranspose2d.apply(*inputs, stride=stride, padding=padding, output_padding=output_padding,
                                 dilation=dilation, groups=groups)


def max_pool2d(x, kernel_size, stride=None, padding=0, *, relu: bool = False) -> Tensor:
    """Max over kernel_size windows moved by stride (default: kernel_size), like PyTorch's;
    ``relu=True`` takes the ReLU of each max in the same pass (nn.Sequential's ReLU, MaxPool2d)."""
    options = {"relu": True} if relu else {}
    return MaxPool2d.apply(*_tensors(x), kernel_size=kernel_size, stride=stride, padding=padding, **options)


def conv2d_max_pool2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, kernel_size=2,
                      pool_stride=None, pool_padding=0, relu: bool = False) -> Tensor:
    """``max_pool2d(conv2d(x, weight, bias, stride, padding, dilation, groups), kernel_size,
    pool_stride, pool_padding)`` as one op, with ``relu=True`` the ReLU between them
    (nn.Sequential's Conv2d, ReLU, MaxPool2d): the same values and gradients, in one
    hand-off to the threads forward and one backward instead of two each."""
    x, weight, bias = _tensors(x, weight, bias)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return Conv2dMaxPool2d.apply(*inputs, stride=stride, padding=padding, dilation=dilation, groups=groups,
                                 kernel_size=kernel_size, pool_stride=pool_stride, pool_padding=pool_padding,
                                 relu=bool(relu))


def avg_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    """Mean over kernel_size windows (padding zeros count: PyTorch's count_include_pad=True)."""
    return AvgPool2d.apply(*_tensors(x), kernel_size=kernel_size, stride=stride, padding=padding)


def _integer_scale(scale_factor):
    """2 -> 2, 2.0 -> 2, (2, 3) -> (2, 3); a fractional scale is an error (use size=)."""
    if scale_factor is None:
        return None
    pair = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor, scale_factor)
    if len(pair) != 2 or any(float(s) != int(s) or s <= 0 for s in pair):
        raise ValueError(f"interpolate: scale_factor must be a positive integer or a pair of them, got "
                         f"{scale_factor!r}; for other ratios give size=(OH, OW)")
    return int(pair[0]), int(pair[1])


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None) -> Tensor:
    """Resize images (N, C, H, W), like ``torch.nn.functional.interpolate`` (same argument order).

    Give ``size=(OH, OW)`` or an integer ``scale_factor``; mode ``"nearest"`` or
    ``"bilinear"`` (align_corners=False, PyTorch's default, the only one supported).
    """
    if align_corners:
        raise ValueError("interpolate: align_corners=True is not supported (PyTorch's default is False)")
    return Interpolate.apply(*_tensors(x), size=size, scale_factor=_integer_scale(scale_factor), mode=mode)
