"""Export a model to ONNX, so that onnxruntime (or anything else that reads ONNX) can run it.

    from tinygrad_uu import onnx
    onnx.export(model, images[:1], "model.onnx")     # as torch.onnx.export(model, args, f)

How it works, in four steps:

1. **Trace.** The model is put in eval mode (dropout off, batch norm on its running
   statistics) and run once on the example input, with gradients enabled so that every
   op records itself on its output (``Tensor._ctx`` and ``ctx.parents``, see autograd.py).
   While it runs, every ``Function.apply`` is also noted down with its options (kernel
   size, axis, slope...) and the module whose ``forward`` called it, for the error
   messages and the node names. Afterwards each module's training flag is restored.
2. **Walk** the recorded graph from the outputs back to the leaves and order it
   topologically (inputs before the ops that use them).
3. **Emit** one ONNX node (rarely a few) per op, from the registry of per-op emitters in
   ``onnx_ops.py``. Ops that the engine composes from primitives but ONNX has as one
   node are recognised first: ``sum * (1 / count)`` is a ReduceMean, and adaptive average
   pooling (a reshape and a mean) is a GlobalAveragePool or an AveragePool.
4. **Leaves**: the example input becomes the graph input, with a dynamic batch axis
   (``dim_param "N"``); parameters and buffers become initializers named by their
   ``state_dict`` keys, in float32; any other leaf (a number in ``x * 0.5``) is a constant.

The model is stamped with opset 17 and IR version 8 (onnx >= 1.15 stamps a newer IR
version that released onnxruntimes refuse), checked with ``onnx.checker`` in full, run
in onnxruntime (where installed) on other inputs with one more sample and compared with
the engine, and only then written, to a temporary file renamed into place.

Not exportable, with an error that says why: ops with no emitter (the error names the op
and the module that ran it), batch norm that normalises with the batch's own statistics
in eval mode (``track_running_stats=False``). Values computed outside the graph (with
``.data``, ``.detach()`` or under ``no_grad``) inside ``forward`` are frozen as constants:
the check in onnxruntime catches them (and a frozen batch size) before anything is written.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from . import autograd
from .autograd import Function
from .files import atomic_write
from .tensor import Tensor

OPSET_VERSION = 17
IR_VERSION = 8
BATCH_DIM = "N"
INSTALL_HINT = "pip install onnx onnxruntime   (or: pip install 'tinygrad_uu[onnx]')"


def require_onnx():
    """The onnx package, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ImportError(f"exporting to ONNX needs the onnx package, which is not installed: "
                          f"{INSTALL_HINT}") from None
    return onnx


class ExportError(ValueError):
    """The model cannot be written as ONNX; the message names the op and the module."""


# ----------------------------------------------------------------------------- 1. trace

class Record:
    """One op as it was applied: the Function (``ctx``), its options, and the module."""

    __slots__ = ("ctx", "options", "module")

    def __init__(self, ctx, options, module):
        self.ctx, self.options, self.module = ctx, options, module


@contextlib.contextmanager
def _recording(model):
    """While active, note down every Function applied: its options and the innermost
    module whose forward was running. Yields the dict id(ctx) -> Record.

    Function.apply is wrapped (and put back afterwards) because the options live only in
    its arguments; each module's forward is wrapped on the instance to know who called.
    """
    records, stack = {}, [f"the model ({type(model).__name__})"]
    original_apply = Function.__dict__["apply"]

    def apply(cls, *inputs, **options):
        out = original_apply.__func__(cls, *inputs, **options)
        if out._ctx is not None:  # keep ctx referenced: its id must not be reused
            records[id(out._ctx)] = Record(out._ctx, options, stack[-1])
        return out

    wrapped = []
    for path, module in model.named_modules():
        if not path:
            continue
        label = f"{path} ({type(module).__name__})"
        own = module.__dict__.get("forward")

        def forward(*args, _forward=module.forward, _label=label, **kwargs):
            stack.append(_label)
            try:
                return _forward(*args, **kwargs)
            finally:
                stack.pop()
        object.__setattr__(module, "forward", forward)
        wrapped.append((module, own))
    Function.apply = classmethod(apply)
    try:
        yield records
    finally:
        Function.apply = original_apply
        for module, own in wrapped:
            if own is None:
                del module.__dict__["forward"]
            else:
                object.__setattr__(module, "forward", own)


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _input_tensor(x) -> Tensor:
    data = np.asarray(x.data if isinstance(x, Tensor) else x)
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    return Tensor(data, requires_grad=True)  # so that even the first op records itself


def trace(model, args):
    """Run ``model`` once in eval mode with graph recording on.

    Returns ``(inputs, outputs, records)``: the input tensors made from ``args``, the
    output tensors, and the Record of every op. The training flags are restored after.
    """
    modes = [(m, m.training) for m in model.modules()]
    grad_was = autograd._grad_enabled
    inputs = tuple(_input_tensor(x) for x in _as_tuple(args))
    try:
        model.eval()
        autograd._grad_enabled = True  # under no_grad nothing would be recorded
        with _recording(model) as records:
            outputs = model(*inputs)
    finally:
        autograd._grad_enabled = grad_was
        for m, mode in modes:
            m.training = mode
    outputs = _as_tuple(outputs)
    for i, out in enumerate(outputs):
        if not isinstance(out, Tensor):
            raise ExportError(f"onnx export: {type(model).__name__}'s forward returned a "
                              f"{type(out).__name__} as output {i}; only Tensors (or a tuple "
                              "or list of them) can be exported")
    return inputs, outputs, records


# ----------------------------------------------------------------------------- 2. walk


# ----------------------------------------------------------------------------- 3. the graph

class Op:
    """What an emitter is handed: one recorded op, the ONNX names of its inputs, and
    the tensors around it (``parents`` in, ``out`` out: for their shapes)."""

    def __init__(self, ctx, record, inputs, out):
        self.ctx, self.inputs, self.out = ctx, inputs, out
        self.parents = ctx.parents
        self.options = record.options if record is not None else {}
        self.module = record.module if record is not None else "an unknown module"


class GraphBuilder:
    """The ONNX graph under construction: nodes, initializers, and the name of every tensor."""

    def __init__(self, onnx, param_names: dict, array_names: dict, dynamic_batch: bool):
        self.onnx = onnx
        self.nodes, self.initializers = [], {}
        self.names = {}                  # id(tensor) -> its ONNX value name
        self.param_names = param_names   # id(tensor) -> state_dict key
        self.array_names = array_names   # id(ndarray) -> state_dict key (batch norm's buffers)
        self.dynamic_batch = dynamic_batch
        self.module = ""                 # the module of the op being emitted (for node names)
        self._count = 0

    def _unique(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def node(self, op_type: str, inputs, **attributes) -> str:
        """Append one node; returns the name of its (single) output."""
        prefix = f"/{self.module.split(' ')[0]}/" if self.module else "/"
        name = self._unique(prefix + op_type)
        attributes = {k: v for k, v in attributes.items() if v is not None}
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name], name=name,
                                                     **attributes))
        return name

    def initializer(self, array: np.ndarray, name: str) -> str:
        """Add ``array`` as a named initializer (floats as float32) once; returns the name."""
        if name not in self.initializers:
            array = np.asarray(array)
            if array.dtype.kind == "f":
                array = array.astype(np.float32)
            self.initializers[name] = self.onnx.numpy_helper.from_array(
                np.ascontiguousarray(array), name)
        return name

    def constant(self, array, dtype=None, hint: str = "const") -> str:
        """A new initializer holding ``array`` (e.g. a Reshape's shape, int64)."""
        return self.initializer(np.asarray(array, dtype=dtype), self._unique(hint))

    def ints(self, values) -> str:
        return self.constant(np.asarray(values, dtype=np.int64), hint="ints")

    def array(self, array: np.ndarray, hint: str = "const") -> str:
        """The initializer for an array the op kept (a buffer by its key, else a constant)."""
        key = self.array_names.get(id(array))
        return self.initializer(array, key) if key else self.constant(array, hint=hint)

    def leaf(self, tensor: Tensor) -> str:
        """The name of a tensor no recorded op produced: a parameter, buffer or constant."""
        key = id(tensor)
        if key not in self.names:
            name = self.param_names.get(key)
            self.names[key] = (self.initializer(tensor.data, name) if name
                               else self.constant(tensor.data))
        return self.names[key]

    def name_of(self, tensor: Tensor) -> str:
        """The ONNX name of a tensor: an input, an op's output already emitted, or a leaf."""
        return self.names[id(tensor)] if id(tensor) in self.names else self.leaf(tensor)

    def rename(self, old: str, new: str) -> None:
        for node in self.nodes:
            for values in (node.input, node.output):
                for i, v in enumerate(values):
                    if v == old:
                        values[i] = new


# ----------------------------------------------------------------------------- 4. export

def _value_info(onnx, name, shape, dynamic: dict):
    dims = [dynamic.get(axis, n) for axis, n in enumerate(shape)]
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)


def _dynamic_axes(dynamic_axes, names) -> dict:
    """name -> {axis: dim_param}; the default is axis 0 of everything, named N."""
    if dynamic_axes is None:
        return {n: {0: BATCH_DIM} for n in names}
    out = {}
    for name, axes in dynamic_axes.items():
        out[name] = dict(axes) if isinstance(axes, dict) else {a: f"{name}_dim{a}" for a in axes}
    return out


def _parameter_names(model) -> tuple[dict, dict]:
    """id(tensor) -> state_dict key, and id(array) -> key for the buffers' arrays."""
    tensors, arrays = {}, {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        tensors.setdefault(id(t), name)
        arrays.setdefault(id(t.data), name)
    return tensors, arrays


def build(model, args, input_names=None, output_names=None, dynamic_axes=None,
          doc_string: str = ""):
    """The ``onnx.ModelProto`` of ``model`` traced on ``args`` (checked, not written)."""
    onnx = require_onnx()
    from . import onnx_ops
    from . import __version__

    inputs, outputs, records = trace(model, args)
    input_names = list(input_names or (["input"] if len(inputs) == 1 else
                                       [f"input_{i}" for i in range(len(inputs))]))
    output_names = list(output_names or (["output"] if len(outputs) == 1 else
                                         [f"output_{i}" for i in range(len(outputs))]))
    if len(input_names) != len(inputs) or len(output_names) != len(outputs):
        raise ValueError(f"onnx export: {len(input_names)} input names for {len(inputs)} inputs "
                         f"and {len(output_names)} output names for {len(outputs)} outputs")
    dynamic = _dynamic_axes(dynamic_axes, input_names + output_names)
    param_names, array_names = _parameter_names(model)
    g = GraphBuilder(onnx, param_names, array_names,
                     dynamic_batch=any(0 in axes for axes in dynamic.values()))
    for t, name in zip(inputs, input_names):
        g.names[id(t)] = name

    # every parent, trainable or not: a frozen weight or a constant is part of it too
    order = autograd.topological_order(list(outputs), every_parent=True)
    consumers = {}
    for t in order:
        for p in (t._ctx.parents if t._ctx is not None else ()):
            consumers.setdefault(id(p), []).append(t)
    protected = {id(t) for t in outputs}
    fused, absorbed = onnx_ops.find_composites(order, consumers, records, protected)

    for t in order:
        if t._ctx is None or id(t) in absorbed:
            continue
        ctx = t._ctx
        record = records.get(id(ctx))
        g.module = record.module if record is not None else ""
        emitter = fused.get(id(t)) or onnx_ops.EMITTERS.get(type(ctx))
        if emitter is None:
            raise ExportError(
                f"onnx export: no ONNX emitter for the op {ctx.op_name} ({type(ctx).__module__}."
                f"{type(ctx).__name__}), produced in {g.module or 'the model'}. Supported ops: "
                f"{', '.join(sorted(c.__name__ for c in onnx_ops.EMITTERS))}. Add one with "
                "tinygrad_uu.onnx_ops.register")
        names = [] if id(t) in fused else [g.name_of(p) for p in ctx.parents]
        g.names[id(t)] = emitter(g, Op(ctx, record, names, t))

    # the graph outputs get their public names (an Identity where the value has another)
    produced = {o for node in g.nodes for o in node.output}
    for t, name in zip(outputs, output_names):
        current = g.name_of(t)
        if current in produced and current not in input_names and current not in output_names:
            g.rename(current, name)
        else:
            g.module = ""
            g.nodes.append(onnx.helper.make_node("Identity", [current], [name], name=f"/{name}"))
        produced.add(name)
        g.names[id(t)] = name

    graph = onnx.helper.make_graph(
        g.nodes, f"{type(model).__name__}",
        [_value_info(onnx, n, t.shape, dynamic.get(n, {})) for t, n in zip(inputs, input_names)],
        [_value_info(onnx, n, t.shape, dynamic.get(n, {})) for t, n in zip(outputs, output_names)],
        initializer=list(g.initializers.values()))
    proto = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET_VERSION)],
        producer_name="tinygrad_uu", producer_version=__version__,
        doc_string=doc_string or f"{type(model).__name__} from tinygrad_uu")
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _other_inputs(inputs, dynamic: dict, names) -> list:
    """Inputs for the check: other values, and one more sample where the batch is free."""
    rng = np.random.default_rng(0)
    out = []
    for t, name in zip(inputs, names):
        shape = list(t.shape)
        if 0 in dynamic.get(name, {}):
            shape[0] += 1
        x = t.data.astype(np.float64)
        scale, centre = (x.std() or 1.0), x.mean()
        out.append((centre + scale * rng.standard_normal(shape)).astype(np.float32))
    return out


def check_in_onnxruntime(proto, model, args, rtol: float = 1e-3, atol: float = 1e-4):
    """Run ``proto`` in onnxruntime on new input values (with one more sample where the
    batch axis is free) and compare with the engine's outputs; raises ExportError where
    they differ: a bug in an emitter, a batch size or an input-dependent value frozen
    into the graph. Returns the largest absolute difference, or None without onnxruntime.
    """
    try:
        import onnxruntime
    except ImportError:
        return None
    from .autograd import no_grad
    names = [i.name for i in proto.graph.input]
    dynamic = {i.name: {a: d.dim_param for a, d in enumerate(i.type.tensor_type.shape.dim)
                        if d.dim_param} for i in proto.graph.input}
    xs = _other_inputs([_input_tensor(x) for x in _as_tuple(args)], dynamic, names)
    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    shapes = [x.shape for x in xs]
    try:
        theirs = session.run(None, dict(zip(names, xs)))
    except Exception as e:  # onnxruntime's own error types; the model is wrong either way
        raise ExportError(f"onnx export: onnxruntime cannot run the graph on inputs of shape "
                          f"{shapes}: {e}. A size of the traced input (the batch?) is frozen "
                          "into the graph; export with dynamic_axes={} for fixed shapes, or "
                          "report the model") from None
    modes = [(m, m.training) for m in model.modules()]
    dtype = next((p.dtype for p in model.parameters()), np.float32)
    try:
        model.eval()
        with no_grad():
            ours = _as_tuple(model(*[Tensor(x.astype(dtype)) for x in xs]))
    finally:
        for m, mode in modes:
            m.training = mode
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        a = a.data
        if a.shape != b.shape or not np.allclose(b, a, rtol=rtol, atol=atol):
            detail = (f"shape {b.shape} instead of {a.shape}" if a.shape != b.shape else
                      f"largest difference {np.abs(a - b).max():.3g}")
            raise ExportError(
                f"onnx export: onnxruntime's output {i} differs from the engine's on inputs of "
                f"shape {shapes} ({detail}). The graph does not compute what "
                f"{type(model).__name__} does: a value computed outside the graph in forward "
                "(.data, .detach(), no_grad) is frozen as a constant, or a batch size is; "
                "export with dynamic_axes={} for fixed shapes, or report the model")
        worst = max(worst, float(np.abs(a - b).max()) if a.size else 0.0)
    return worst


def export(model, args, f, input_names=None, output_names=None, dynamic_axes=None,
           doc_string: str = "", check: bool = True):
    """Write ``model`` as an ONNX file at ``f``, tracing it on ``args``; returns the
    ``onnx.ModelProto`` (the argument order is ``torch.onnx.export``'s).

    ``args``: the example input (a Tensor or array, e.g. one batch of images), or a tuple
    of them for a model with several inputs. Its values do not matter, its shape does
    (except the batch axis). ``input_names``/``output_names``: default "input" and
    "output" (numbered when there are several). ``dynamic_axes``: as torch's,
    ``{name: {axis: "dim name"}}``; by default axis 0 of every input and output is the
    dynamic batch axis "N"; pass ``{}`` for fixed shapes.

    ``check``: where onnxruntime is installed, run the graph on other inputs (one more
    sample) and compare with the engine before writing (``check_in_onnxruntime``).
    The model is traced in eval mode and left in the mode it was in.
    """
    proto = build(model, args, input_names, output_names, dynamic_axes, doc_string)
    if check:
        check_in_onnxruntime(proto, model, args)
    path = Path(f)
    with atomic_write(path, "wb") as out:
        out.write(proto.SerializeToString())
    return proto
