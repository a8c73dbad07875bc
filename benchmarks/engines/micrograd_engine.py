"""micrograd (Karpathy's scalar engine): W6 only, a "tensor" being a list of Values.

micrograd has add, mul, pow and relu but no tanh; ``_tanh`` adds one in micrograd's
own style (a new Value with a ``_backward`` closure), as its lecture does. Its
``backward`` sorts the graph recursively, so the recursion limit is raised for the
2,000-op chain.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from ..workloads import chain_op
from .base import Engine, EngineUnavailable, Step, Unsupported


class MicrogradEngine(Engine):
    key = "micrograd"
    name = "micrograd"

    def __init__(self, Value, version):
        self.Value, self.version = Value, version

    def _tanh(self, v):
        t = math.tanh(v.data)
        out = self.Value(t, (v,), "tanh")

        def _backward():
            v.grad += (1 - t * t) * out.grad
        out._backward = _backward
        return out

    def build(self, case, data):
        if case.workload != "W6":
            raise Unsupported("micrograd is a scalar engine: W6 only")
        n = case.params["length"]
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * n + 1000))
        Value = self.Value
        xs = [Value(float(v)) for v in data["x"]]
        ws = [Value(float(v)) for v in data["w"]]

        def run():
            for v in xs + ws:
                v.grad = 0
            hs = xs
            for i in range(n):
                op = chain_op(i)
                if op == "add":
                    hs = [h + w for h, w in zip(hs, ws)]
                elif op == "mul":
                    hs = [h * w for h, w in zip(hs, ws)]
                else:
                    hs = [self._tanh(h) for h in hs]
            out = hs[0]
            for h in hs[1:]:
                out = out + h
            out.backward()
            return out

        def check():
            out = run()
            return {"out": np.asarray(out.data), "grad.x": np.array([v.grad for v in xs]),
                    "grad.w": np.array([v.grad for v in ws])}
        return Step(run=run, check=check)


def load():
    try:
        from micrograd.engine import Value
    except ImportError as e:
        raise EngineUnavailable(f"not installed ({e}); pip install micrograd") from None
    try:
        from importlib.metadata import version
        v = version("micrograd")
    except Exception:
        v = ""
    return [MicrogradEngine(Value, v)]
