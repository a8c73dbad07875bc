"""The computation graph behind a Tensor, drawn."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..autograd import topological_order
from . import common
from .common import _figure


def draw_graph(tensor, path, max_nodes: int = 400) -> Path:
    """Draw the computation graph that produced ``tensor``, inputs on the left.

    Round boxes are tensors, labelled with their shape: green for leaves that
    require grad (the parameters backward will fill), grey for constants, yellow
    for ``tensor`` itself. Square blue boxes are the ops (``Function.op_name``).

    Draw BEFORE calling ``backward()``: backward frees the graph as it goes
    (``Function.release`` drops each op's ``parents``), unless you call
    ``backward(retain_graph=True)``.

    >>> a, b = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0, 4.0], requires_grad=True)
    >>> draw_graph((a * b + a).tanh().sum(), "graph.png")
    """
    fn = "draw_graph"
    if not hasattr(tensor, "_ctx") or not hasattr(tensor, "shape"):
        raise TypeError(f"{fn}: needs a Tensor, got {type(tensor).__name__}")

    # 1. Every tensor the root depends on, inputs before outputs.
    order = topological_order(tensor, every_parent=True)
    freed = next((t._ctx for t in order if t._ctx is not None and t._ctx.released), None)
    if freed is not None:  # Function.release dropped its parents: the walk stopped there
        raise RuntimeError(f"{fn}: the graph through {freed.op_name} was freed by "
                           "backward(); draw the graph before calling backward() "
                           "(or call backward(retain_graph=True))")
    if 2 * len(order) > max_nodes:  # about one op per tensor
        raise ValueError(f"{fn}: the graph has more than {max_nodes} nodes, too many to "
                         "draw legibly; draw a smaller part of it (or raise max_nodes)")

    # 2. Nodes and edges. An op sits one column right of its latest input and its
    #    output one column right of the op; a leaf sits just left of its first use.
    nodes = {}          # key -> (label, kind); kinds: leaf, const, op, tensor, root
    inputs = {}         # key -> keys of the nodes with an edge into it
    column = {}
    for t in order:
        ctx = t._ctx
        if ctx is None:
            continue
        op, out = ("op", id(ctx)), ("t", id(t))
        parents = [("t", id(p)) for p in ctx.parents]
        for p, key in zip(ctx.parents, parents):
            if p._ctx is None:
                nodes[key] = (_shape_label(p), "leaf" if p.requires_grad else "const")
        column[op] = 1 + max((column.get(k, 0) for k in parents), default=0)
        column[out] = column[op] + 1
        nodes[op], nodes[out] = (ctx.op_name, "op"), (_shape_label(t), "tensor")
        inputs[op], inputs[out] = parents, [op]
    root = ("t", id(tensor))
    nodes[root] = (_shape_label(tensor), "root")
    column.setdefault(root, 0)
    for key in nodes:
        if key not in column:          # a leaf: one column before its earliest consumer
            column[key] = min(column[op] for op, ins in inputs.items() if key in ins) - 1

    # 3. Rows within each column, ordered by the mean row of their inputs (fewer crossings).
    by_column: dict[int, list] = {}
    for key in nodes:                  # dicts keep insertion order: discovery order
        by_column.setdefault(column[key], []).append(key)
    row = {}
    for c in sorted(by_column):
        keys = by_column[c]
        keys.sort(key=lambda k: np.mean([row[i] for i in inputs.get(k, []) if i in row] or [0]))
        for r, k in enumerate(keys):
            row[k] = r - (len(keys) - 1) / 2

    # 4. Draw: boxes first, then arrows between their edges.
    columns, tallest = len(by_column), max(len(v) for v in by_column.values())
    fig = _figure(min(1.0 + 1.3 * columns, 60), min(1.0 + 0.7 * tallest, 60))
    ax = fig.subplots()
    ax.set_axis_off()
    first = min(by_column)
    ax.set_xlim(-0.6, columns - 0.4)
    ax.set_ylim(tallest / 2, -tallest / 2)
    style = {"op": ("square,pad=0.4", "#cfe2f3"), "leaf": ("round,pad=0.4", "#d9ead3"),
             "const": ("round,pad=0.4", "#eeeeee"), "tensor": ("round,pad=0.4", "white"),
             "root": ("round,pad=0.4", "#fff2cc")}
    boxes = {}
    for key, (label, kind) in nodes.items():
        shape, colour = style[kind]
        boxes[key] = ax.text(column[key] - first, row[key], label, ha="center", va="center",
                             fontsize=8, zorder=3,
                             bbox=dict(boxstyle=shape, facecolor=colour, edgecolor="gray"))
    for key, ins in inputs.items():
        for i in ins:
            ax.annotate("", xy=(0, 0.5), xycoords=boxes[key], xytext=(1, 0.5),
                        textcoords=boxes[i], zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color="gray", shrinkA=4, shrinkB=4))
    return common._save(fig, path)


def _shape_label(t) -> str:
    shape = tuple(t.shape)
    return "scalar" if shape == () else str(shape)
