"""tinygrad (George Hotz's lazy engine) on its CPU device, which compiles C with clang.

tinygrad builds a lazy graph, fuses it into kernels and compiles them; the first call
of a new graph can take a minute. Its own examples wrap a training step in ``TinyJit``
(capture the kernels once, then replay them), so W1-W5 are timed that way: the
steady state a tinygrad user sees. The cross-check runs the same function unjitted.
Gradients are taken with ``Tensor.gradient`` (only the parameters', as PyTorch would),
then handed to ``nn.optim.SGD``.

W6 is not run: its 2,000-op chain becomes one lazy graph, and at 100 ops the first
call already took 162 s (compiling one fused kernel) and each later call 1.9 s.
"""
from __future__ import annotations

import numpy as np

from ..workloads import LR, PARAMS, UNET_LAYERS, chain_op
from .base import Engine, EngineUnavailable, Step, Unsupported

MAX_CHAIN = 30  # longer W6 chains are out of reach (see above)


class TinygradEngine(Engine):
    key = "tinygrad"
    name = "tinygrad"

    def __init__(self, tinygrad):
        from tinygrad import Device, Tensor, TinyJit, nn
        from tinygrad.helpers import Context
        self.Tensor, self.TinyJit, self.nn, self.Context = Tensor, TinyJit, nn, Context
        self.device = Device[Device.DEFAULT]
        self.version = f"{getattr(tinygrad, '__version__', '')} {Device.DEFAULT}".strip()

    def _t(self, array, dtype=None):
        a = np.array(array) if dtype is None else np.asarray(array, dtype=dtype)
        return self.Tensor(a).contiguous().realize()

    def _jitted(self, fn, *args):
        """A step that replays ``fn``'s captured kernels, then waits for the device."""
        jit = self.TinyJit(fn)

        def run():
            out = jit(*args)
            self.device.synchronize()
            return out
        return run

    def build(self, case, data):
        w, Tensor = case.workload, self.Tensor
        if w == "W1":
            a, b = self._t(data["a"]), self._t(data["b"])
            return Step(run=self._jitted(lambda a, b: (a @ b).realize(), a, b),
                        check=lambda: {"out": (a @ b).numpy()})
        if w == "W2":
            x, wt, b, g = (self._t(data[k]) for k in ("x", "weight", "bias", "grad_out"))
            if not case.params["backward"]:
                def fwd(x, wt, b):
                    return x.conv2d(wt, b, padding=1).realize()
                return Step(run=self._jitted(fwd, x, wt, b),
                            check=lambda: {"out": fwd(x, wt, b).numpy()})

            def fwd_bwd(x, wt, b, g):
                out = x.conv2d(wt, b, padding=1)
                grads = out.gradient(x, wt, b, gradient=g)
                Tensor.realize(out, *grads)
                return out, *grads

            def check():
                out, gx, gw, gb = fwd_bwd(x, wt, b, g)
                return {"out": out.numpy(), "grad.x": gx.numpy(), "grad.weight": gw.numpy(),
                        "grad.bias": gb.numpy()}
            return Step(run=self._jitted(fwd_bwd, x, wt, b, g), check=check)
        if w in ("W3", "W4", "W5"):
            return self._training(case, data)
        if w == "W6":
            if case.params["length"] > MAX_CHAIN:
                raise Unsupported("lazy graph of the whole chain: at 100 ops the first call "
                                  "took 162 s (kernel compile), later calls 1.9 s")
            return self._chain(case, data)
        raise Unsupported(f"unknown workload {w}")

    def _training(self, case, data):
        w, Tensor = case.workload, self.Tensor
        names = PARAMS[w]
        p = {k: self._t(data[k]) for k in names}
        params = [p[k] for k in names]
        x = self._t(data["x"])
        if w == "W5":
            y = self._t(data["y"])

            def loss_fn(x, y):
                return _unet(p, x).binary_crossentropy_logits(y)
        else:
            y = self._t(data["y"], np.int32)

            def loss_fn(x, y):
                if w == "W3":
                    h = x.linear(p["fc1.weight"].T, p["fc1.bias"]).relu()
                    logits = h.linear(p["fc2.weight"].T, p["fc2.bias"])
                else:
                    h = x.conv2d(p["conv1.weight"], p["conv1.bias"], padding=1).relu().max_pool2d(2)
                    h = h.conv2d(p["conv2.weight"], p["conv2.bias"], padding=1).relu().max_pool2d(2)
                    logits = h.reshape(h.shape[0], -1).linear(p["fc.weight"].T, p["fc.bias"])
                return logits.sparse_categorical_crossentropy(y)
        opt = self.nn.optim.SGD(params, lr=LR)

        def step(x, y):
            loss = loss_fn(x, y)
            for t, g in zip(params, loss.gradient(*params)):
                t.grad = g
            with self.Context(TRAINING=1):
                return loss.realize(*opt.schedule_step())

        def check():
            loss = loss_fn(x, y)
            grads = loss.gradient(*params)
            Tensor.realize(loss, *grads)
            res = {"loss": loss.numpy()}
            for k, t, g in zip(names, params, grads):
                t.grad = g
                res[f"grad.{k}"] = g.numpy()
            with self.Context(TRAINING=1):
                opt.step()
            res.update({f"param.{k}": t.numpy() for k, t in zip(names, params)})
            return res
        return Step(run=self._jitted(step, x, y), check=check)

    def _chain(self, case, data):
        x, wt, n = self._t(data["x"]), self._t(data["w"]), case.params["length"]

        def run():
            h = x
            for i in range(n):
                op = chain_op(i)
                h = h + wt if op == "add" else h * wt if op == "mul" else h.tanh()
            out = h.sum()
            gx, gw = out.gradient(x, wt)
            self.Tensor.realize(out, gx, gw)
            return out, gx, gw

        def check():
            out, gx, gw = run()
            return {"out": out.numpy(), "grad.x": gx.numpy(), "grad.w": gw.numpy()}
        return Step(run=run, check=check)


def _unet(p, x):
    pads = {name: k // 2 for name, _, _, k in UNET_LAYERS}

    def conv(h, name):
        return h.conv2d(p[f"{name}.weight"], p[f"{name}.bias"], padding=pads[name])

    skip = conv(conv(x, "enc1").relu(), "enc2").relu()
    h = skip.max_pool2d(2)
    h = conv(conv(h, "enc3").relu(), "enc4").relu()
    n, c, hh, ww = h.shape
    up = h.reshape(n, c, hh, 1, ww, 1).expand(n, c, hh, 2, ww, 2).reshape(n, c, 2 * hh, 2 * ww)
    return conv(conv(up.cat(skip, dim=1), "dec1").relu(), "out")


def load():
    try:
        import tinygrad
        from tinygrad import Device
    except ImportError as e:
        raise EngineUnavailable(f"not installed ({e}); pip install tinygrad") from None
    try:
        device = Device.DEFAULT
    except Exception as e:  # no device: on CPU this means no C compiler (clang)
        raise EngineUnavailable(f"no usable device ({e}); its CPU device needs clang "
                                "(apt-get install clang)") from None
    return [TinygradEngine(tinygrad)]
