"""The per-op emitters of the ONNX exporter (``tinygrad_uu/onnx.py``).

An emitter turns one recorded op into ONNX: ``emit(g, op) -> name``, where ``g`` is the
graph under construction (``g.node(op_type, inputs, **attributes)`` appends a node and
returns its output's name, ``g.ints``/``g.constant`` make constants) and ``op`` is the op
(``op.inputs``: the ONNX names of its inputs, ``op.parents``/``op.out``: the tensors,
``op.options``: what ``Function.apply`` was given, ``op.ctx``: the Function itself).
It returns the ONNX name of the op's output.

``EMITTERS`` maps each Function class to its emitter; ``register(cls)`` adds one, e.g.
for a student's own Function. ``find_composites`` recognises ops that the engine builds
from several primitives but ONNX has as one node (a mean, an adaptive average pooling).

Shapes are written so that the batch axis stays free: a Reshape keeps axis 0 with the
value 0 ("copy this axis", ONNX's rule), an Expand writes 1 where it keeps an axis.
"""
from __future__ import annotations

import numpy as np

from . import functions as Fn
from . import spatial
from .kernels import shapes
from .nn.functional import LinearFunction
from .nn.normalization import BatchNormFunction
from .tensor import Cast

EMITTERS: dict = {}
INT64_MIN = int(np.iinfo(np.int64).min)


def register(function_class):
    """Decorator: ``@register(MyFunction)`` above ``def emit(g, op): ...``."""
    def add(emit):
        EMITTERS[function_class] = emit
        return emit
    return add


def _error(op, message: str):
    from .onnx import ExportError
    return ExportError(f"onnx export: {op.ctx.op_name} in {op.module or 'the model'}: {message}")


def _axes(axis, ndim: int):
    """A reduction's axis (None, an int or a tuple) as a sorted list of axes >= 0, or None."""
    if axis is None:
        return None
    return sorted(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,)))


# ----------------------------------------------------------------------------- elementwise

def _simple(op_type: str):
    def emit(g, op):
        return g.node(op_type, op.inputs)
    return emit


for _cls, _onnx_op in {Fn.Add: "Add", Fn.Sub: "Sub", Fn.Mul: "Mul", Fn.Div: "Div",
                       Fn.Pow: "Pow", Fn.MatMul: "MatMul", Fn.Maximum: "Max",
                       Fn.Minimum: "Min", Fn.Neg: "Neg", Fn.Exp: "Exp", Fn.Log: "Log",
                       Fn.Sqrt: "Sqrt", Fn.Abs: "Abs", Fn.Tanh: "Tanh",
                       Fn.Sigmoid: "Sigmoid", Fn.ReLU: "Relu", Fn.Softplus: "Softplus"}.items():
    EMITTERS[_cls] = _simple(_onnx_op)


@register(Fn.AddReLU)
def _add_relu(g, op):
    return g.node("Relu", [g.node("Add", op.inputs)])


@register(Fn.LeakyReLU)
def _leaky_relu(g, op):
    return g.node("LeakyRelu", op.inputs, alpha=float(op.options["slope"]))


@register(Fn.PowScalar)
def _pow_scalar(g, op):
    c, (x,) = op.options["exponent"], op.inputs
    if c == 1:
        return x
    if c == 2:
        return g.node("Mul", [x, x])
    if c == 0.5:
        return g.node("Sqrt", [x])
    if c == -1:
        return g.node("Reciprocal", [x])
    return g.node("Pow", [x, g.constant(np.float32(c))])


@register(Fn.Clip)
def _clip(g, op):
    bounds = [op.options.get("low"), op.options.get("high")]
    names = ["" if b is None else g.constant(np.float32(b)) for b in bounds]
    return g.node("Clip", op.inputs + names)


@register(Fn.Where)
def _where(g, op):
    cond = g.constant(np.asarray(op.options["cond"], dtype=bool), hint="mask")
    return g.node("Where", [cond] + op.inputs)


@register(Cast)
def _cast(g, op):
    dtype = np.dtype(op.options["dtype"])
    if dtype.kind == "f":  # the exported graph computes in float32 throughout
        return op.inputs[0]
    from onnx import helper
    return g.node("Cast", op.inputs, to=helper.np_dtype_to_tensor_dtype(dtype))


# ----------------------------------------------------------------------------- reductions

@register(Fn.Sum)
def _sum(g, op):
    axes = _axes(op.options["axis"], op.parents[0].ndim)
    keepdims = int(bool(op.options["keepdims"]))
    inputs = op.inputs if axes is None else op.inputs + [g.ints(axes)]
    return g.node("ReduceSum", inputs, keepdims=keepdims)


@register(Fn.Max)
def _max(g, op):
    kind = "ReduceMin" if op.options.get("reduce", "max") == "min" else "ReduceMax"
    axes = _axes(op.options["axis"], op.parents[0].ndim)
    return g.node(kind, op.inputs, axes=axes, keepdims=int(bool(op.options["keepdims"])))


@register(Fn.Softmax)
def _softmax(g, op):
    return g.node("Softmax", op.inputs, axis=int(op.options["axis"]))


@register(Fn.LogSoftmax)
def _log_softmax(g, op):
    return g.node("LogSoftmax", op.inputs, axis=int(op.options["axis"]))


# ----------------------------------------------------------------------------- shapes

def batch_free_shape(g, in_shape, out_shape) -> list:
    """A Reshape's target with the batch axis left free: 0 (copy the input's axis 0) when
    axis 0 is kept, else -1 there (the batch folded into it) and the rest as traced."""
    target = list(out_shape)
    if g.dynamic_batch and target and in_shape:
        target[0] = 0 if out_shape[0] == in_shape[0] else -1
    return target


@register(Fn.Reshape)
def _reshape(g, op):
    in_shape, out_shape = op.parents[0].shape, op.out.shape
    if len(in_shape) > 2 and len(out_shape) == 2 and out_shape[0] == in_shape[0]:
        return g.node("Flatten", op.inputs, axis=1)  # (N, C, H, W) -> (N, C*H*W)
    target = batch_free_shape(g, op.parents[0].shape, op.out.shape)
    return g.node("Reshape", op.inputs + [g.ints(target)])


@register(Fn.Permute)
def _permute(g, op):
    ndim = op.parents[0].ndim
    return g.node("Transpose", op.inputs, perm=[a % ndim for a in op.options["axes"]])


@register(Fn.Expand)
def _expand(g, op):
    in_shape, out_shape = op.parents[0].shape, op.out.shape
    offset = len(out_shape) - len(in_shape)
    # 1 where the input already has the size: ONNX's Expand broadcasts both ways, so the
    # input's own size (the batch, say) is kept whatever it is at run time
    target = [1 if i >= offset and in_shape[i - offset] == n else n for i, n in enumerate(out_shape)]
    return g.node("Expand", op.inputs + [g.ints(target)])


@register(Fn.Pad)
def _pad(g, op):
    widths = op.options["widths"]
    pads = [int(lo) for lo, _ in widths] + [int(hi) for _, hi in widths]
    value = g.constant(np.float32(op.options.get("value", 0.0)))
    return g.node("Pad", op.inputs + [g.ints(pads), value], mode="constant")


@register(Fn.Concatenate)
def _concatenate(g, op):
    return g.node("Concat", op.inputs, axis=int(op.options["axis"]))


@register(Fn.GetItem)
def _getitem(g, op):
    index, x, shape = op.options["index"], op.inputs[0], op.parents[0].shape
    items = list(index) if isinstance(index, tuple) else [index]
    arrays = [i for i, item in enumerate(items) if isinstance(item, np.ndarray)]
    if arrays:
        return _gather(g, op, items, arrays, shape)
    if not all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items):
        raise _error(op, f"indexing with {index!r} has no ONNX emitter (use ints, slices, None)")
    used = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * (len(shape) - used)
    items += [slice(None)] * (len(shape) - sum(1 for i in items if i is not None))
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    axis = position = 0
    for item in items:
        if item is None:
            unsqueeze.append(position)
            position += 1
            continue
        if isinstance(item, slice):
            position += 1
            if item != slice(None):  # a full slice is left out: the axis stays free
                start, stop, step = item.indices(shape[axis])
                if step < 0 and stop < 0:
                    stop = INT64_MIN  # "through index 0" (ONNX reads -1 as the last element)
                starts.append(start), ends.append(stop), axes.append(axis), steps.append(step)
        else:
            i = int(item) % shape[axis]
            starts.append(i), ends.append(i + 1), axes.append(axis), steps.append(1)
            squeeze.append(axis)
        axis += 1
    if axes:
        x = g.node("Slice", [x, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps)])
    if squeeze:
        x = g.node("Squeeze", [x, g.ints(squeeze)])
    if unsqueeze:
        x = g.node("Unsqueeze", [x, g.ints(unsqueeze)])
    return x


def _gather(g, op, items, arrays, shape):
    """x[..., idx, ...] with one integer array on one axis and full slices elsewhere."""
    at = arrays[0]
    rest_full = all(i is Ellipsis or i == slice(None) for j, i in enumerate(items)
                    if j != at and not isinstance(i, np.ndarray))
    idx = items[at]
    if len(arrays) > 1 or Ellipsis in items[:at] or not rest_full or idx.dtype.kind not in "iu":
        raise _error(op, "only x[..., int_array, ...] on one axis (full slices elsewhere) has "
                         "an ONNX emitter; boolean masks and several index arrays do not")
    axis = at
    return g.node("Gather", [op.inputs[0], g.constant(idx.astype(np.int64), hint="indices")],
                  axis=axis)


# ----------------------------------------------------------------------------- layers

@register(LinearFunction)
def _linear(g, op):
    x, w = op.inputs[:2]
    if op.parents[0].ndim == 2:  # one Gemm: x @ w^T + b, w kept in PyTorch's (out, in) layout
        return g.node("Gemm", op.inputs, transB=1)
    out = g.node("MatMul", [x, g.node("Transpose", [w], perm=[1, 0])])
    return g.node("Add", [out, op.inputs[2]]) if len(op.inputs) == 3 else out


def _window_attributes(kernel, stride, padding, dilation=(1, 1)):
    return dict(kernel_shape=list(kernel), strides=list(stride), dilations=list(dilation),
                pads=[padding[0], padding[1], padding[0], padding[1]])


def _pair(v):
    return shapes.pair(v, "argument", "onnx export")


def _conv_node(g, op):
    """The Conv node of a conv op (Conv2d, or Conv2dMaxPool2d's conv), with its ReLU's node
    after it where the op takes one (``relu``, nn.Sequential's)."""
    o = op.options
    out = g.node("Conv", op.inputs, group=int(o.get("groups", 1)),
                 **_window_attributes(op.parents[1].shape[2:], _pair(o.get("stride", 1)),
                                      _pair(o.get("padding", 0)), _pair(o.get("dilation", 1))))
    return g.node("Relu", [out]) if o.get("relu") else out


@register(spatial.Conv2d)
def _conv(g, op):
    return _conv_node(g, op)


@register(spatial.ConvTranspose2d)
def _conv_transpose(g, op):
    o = op.options
    return g.node("ConvTranspose", op.inputs, group=int(o.get("groups", 1)),
                  output_padding=list(_pair(o.get("output_padding", 0))),
                  **_window_attributes(op.parents[1].shape[2:], _pair(o.get("stride", 1)),
                                       _pair(o.get("padding", 0)), _pair(o.get("dilation", 1))))


def _pool_args(op):
    """A pooling op's (kernel, stride, padding), checked and normalised as the op did."""
    o = op.options
    kernel, stride, padding, _ = shapes.pool2d_args(op.ctx.op_name, op.parents[0].shape, o["kernel_size"],
                                                    o.get("stride"), o.get("padding", 0))
    return kernel, stride, padding


def _pool_attributes(kernel, stride, padding):
    attributes = _window_attributes(kernel, stride, padding)
    del attributes["dilations"]  # AveragePool has none in opset 17; 1 is the default
    return attributes


def _pool_node(g, op, op_type, kernel, stride, padding, **extra):
    out = g.node(op_type, op.inputs, **_pool_attributes(kernel, stride, padding), **extra)
    return g.node("Relu", [out]) if op.options.get("relu") else out  # a ReLU in the same pass (nn.Sequential's)


@register(spatial.MaxPool2d)
def _max_pool(g, op):
    return _pool_node(g, op, "MaxPool", *_pool_args(op))


@register(spatial.Conv2dMaxPool2d)
def _conv_max_pool(g, op):
    """nn.Sequential's Conv2d, ReLU, MaxPool2d, run as one op: a Conv, a Relu, a MaxPool."""
    o, (x_shape, w_shape) = op.options, (op.parents[0].shape, op.parents[1].shape)
    out = _conv_node(g, op)
    conv_shape = (x_shape[0], w_shape[0]) + shapes.window_out(
        "onnx export", x_shape, w_shape[2:], _pair(o.get("stride", 1)), _pair(o.get("padding", 0)),
        _pair(o.get("dilation", 1)))
    kernel, pool_stride, pool_padding, _ = shapes.pool2d_args(op.ctx.op_name, conv_shape, o["kernel_size"],
                                                              o.get("pool_stride"), o.get("pool_padding", 0))
    return g.node("MaxPool", [out], **_pool_attributes(kernel, pool_stride, pool_padding))


@register(spatial.AvgPool2d)
def _avg_pool(g, op):
    """One window over the whole map, without padding (``F.adaptive_avg_pool2d(x, 1)``):
    GlobalAveragePool; else AveragePool, zeros counted as ours."""
    kernel, stride, padding = _pool_args(op)
    if shapes.covers_plane(op.parents[0].shape, kernel, padding):
        return g.node("GlobalAveragePool", op.inputs)
    return _pool_node(g, op, "AveragePool", kernel, stride, padding, count_include_pad=1)


@register(spatial.Interpolate)
def _interpolate(g, op):
    """Resize. nearest: pixel floor(dst * in / out) is 'asymmetric' + 'floor'; bilinear
    (align_corners=False) maps pixel centres, 'half_pixel'. Integer ratios become scales;
    other sizes are given as sizes, with the batch and channels read from the input."""
    mode = op.options.get("mode", "nearest")
    (h, w), (oh, ow) = op.parents[0].shape[2:], op.out.shape[2:]
    attributes = (dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                       nearest_mode="floor") if mode == "nearest" else
                  dict(mode="linear", coordinate_transformation_mode="half_pixel"))
    if mode not in ("nearest", "bilinear"):
        raise _error(op, f"mode {mode!r} has no ONNX emitter (nearest and bilinear do)")
    if oh % h == 0 and ow % w == 0:
        scales = g.constant(np.array([1, 1, oh // h, ow // w], dtype=np.float32), hint="scales")
        return g.node("Resize", [op.inputs[0], "", scales], **attributes)
    batch_channels = g.node("Slice", [g.node("Shape", op.inputs[:1]), g.ints([0]), g.ints([2])])
    sizes = g.node("Concat", [batch_channels, g.ints([oh, ow])], axis=0)
    return g.node("Resize", [op.inputs[0], "", "", sizes], **attributes)


@register(BatchNormFunction)
def _batch_norm(g, op):
    o = op.options
    if o.get("mean") is None:  # the batch's own statistics, computed in the forward
        raise _error(op, "batch norm with the batch's own statistics in eval mode (a BatchNorm "
                         "with track_running_stats=False) has no ONNX inference node")
    channels = op.parents[0].shape[1]
    scale_bias = (op.inputs[1:3] if len(op.inputs) == 3 else  # affine=False: weight 1, bias 0
                  [g.constant(np.ones(channels, np.float32)),
                   g.constant(np.zeros(channels, np.float32))])
    mean, var = g.array(o["mean"], "running_mean"), g.array(o["var"], "running_var")
    out = g.node("BatchNormalization", [op.inputs[0], *scale_bias, mean, var], epsilon=float(o["eps"]))
    slope = o.get("negative_slope")  # an activation done in the same pass (nn.Sequential's)
    if slope is None:
        return out
    return g.node("Relu", [out]) if slope == 0 else g.node("LeakyRelu", [out], alpha=float(slope))


# ----------------------------------------------------------------------------- composites

def _single_use(t, consumers, protected) -> bool:
    return len(consumers.get(id(t), ())) == 1 and id(t) not in protected


def _mean_parts(t, consumers, records, protected):
    """For ``t = sum(x) * (1 / count)`` (how Tensor.mean is built): (sum tensor, x), else None."""
    if type(t._ctx) is not Fn.Mul:
        return None
    for s, c in (t._ctx.parents, reversed(t._ctx.parents)):
        if (type(s._ctx) is Fn.Sum and c._ctx is None and c.size == 1 and not c.requires_grad
                and _single_use(s, consumers, protected) and id(s._ctx) in records):
            x = s._ctx.parents[0]
            axes = _axes(records[id(s._ctx)].options["axis"], x.ndim)
            count = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
            if count and np.isclose(float(c.data), 1.0 / count, rtol=1e-6, atol=0):
                return s, x
    return None


def find_composites(order, consumers, records, protected):
    """Ops built from several primitives that ONNX has as one node.

    Returns ``(fused, absorbed)``: id(tensor) -> the emitter for the whole composite
    ending at that tensor, and the ids of the tensors inside composites (not emitted).
    """
    fused, absorbed = {}, set()
    for t in order:
        parts = _mean_parts(t, consumers, records, protected) if t._ctx is not None else None
        if parts is None:
            continue
        s, x = parts
        options = records[id(s._ctx)].options
        pool = _adaptive_pool(s, x, options, consumers, protected)
        if pool is not None:
            fused[id(t)] = pool
            absorbed.update({id(s), id(x)})
            continue
        fused[id(t)] = _reduce_mean(x, _axes(options["axis"], x.ndim), options["keepdims"])
        absorbed.add(id(s))
    return fused, absorbed


def _reduce_mean(x, axes, keepdims):
    def emit(g, op):
        return g.node("ReduceMean", [g.name_of(x)], axes=axes, keepdims=int(bool(keepdims)))
    return emit


def _adaptive_pool(s, r, options, consumers, protected):
    """Average pooling written as x (N, C, H, W) reshaped to (N, C, oh, H/oh, ow, W/ow) and
    averaged over axes 3 and 5 (``F.adaptive_avg_pool2d`` runs an average pool instead).
    One GlobalAveragePool (oh = ow = 1) or AveragePool. Returns the emitter, or None."""
    if type(r._ctx) is not Fn.Reshape or not _single_use(r, consumers, protected):
        return None
    x = r._ctx.parents[0]
    if x.ndim != 4 or r.ndim != 6 or options["keepdims"] or _axes(options["axis"], 6) != [3, 5]:
        return None
    n, c, h, w = x.shape
    oh, kh, ow, kw = r.shape[2:]
    if r.shape[:2] != (n, c) or oh * kh != h or ow * kw != w:
        return None

    def emit(g, op):
        if oh == ow == 1:
            return g.node("GlobalAveragePool", [g.name_of(x)])
        return g.node("AveragePool", [g.name_of(x)], kernel_shape=[kh, kw], strides=[kh, kw])
    return emit
