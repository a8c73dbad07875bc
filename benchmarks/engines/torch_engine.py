"""PyTorch on the CPU (two threads, like the course machines): the reference column."""
from __future__ import annotations

import numpy as np

from ..workloads import DETECTOR_LAYERS, LR, PARAMS, RESNET_PARAMS, UNET_LAYERS, chain_op
from .base import Engine, EngineUnavailable, Step, Unsupported

THREADS = 2


class TorchEngine(Engine):
    key = "torch"
    name = "PyTorch"

    def __init__(self, torch):
        self.torch = torch
        self.version = torch.__version__
        torch.set_num_threads(THREADS)

    def activate(self):
        self.torch.set_num_threads(THREADS)

    def _t(self, array, grad=False):
        return self.torch.tensor(np.array(array), requires_grad=grad)

    def build(self, case, data):
        torch, w = self.torch, case.workload
        if w == "W1":
            a, b = self._t(data["a"]), self._t(data["b"])
            return Step(run=lambda: a @ b, check=lambda: {"out": (a @ b).numpy()})
        if w == "W2":
            return self._conv(case, data)
        if w in ("W3", "W4", "W5", "W7", "W8"):
            names = PARAMS[w]
            params = {k: self._t(data[k], grad=True) for k in names}
            bce = torch.nn.functional.binary_cross_entropy_with_logits
            if w == "W7":
                x, y = self._t(data["x"]), (self._t(data["y8"]), self._t(data["y16"]))
                loss_fn = lambda outs, ys: bce(outs[0], ys[0]) + bce(outs[1], ys[1])  # noqa: E731
            else:
                x, y = self._t(data["x"]), self._t(data["y"])
                loss_fn = bce if w in ("W5", "W8") else torch.nn.functional.cross_entropy
            forward = {"W3": self._mlp, "W4": self._cnn, "W5": self._unet, "W7": self._detector,
                       "W8": self._resnet}[w]
            opt = torch.optim.SGD(list(params.values()), lr=LR)

            def run():
                opt.zero_grad()
                loss = loss_fn(forward(params, x), y)
                loss.backward()
                opt.step()
                return loss

            def check():
                loss = run()
                res = {"loss": loss.detach().numpy()}
                for k, p in params.items():
                    res[f"grad.{k}"] = p.grad.numpy().copy()
                    res[f"param.{k}"] = p.detach().numpy().copy()
                return res
            return Step(run=run, check=check)
        if w == "W6":
            x, wt, n = self._t(data["x"], True), self._t(data["w"], True), case.params["length"]

            def run():
                x.grad = wt.grad = None
                h = x
                for i in range(n):
                    op = chain_op(i)
                    h = h + wt if op == "add" else h * wt if op == "mul" else torch.tanh(h)
                out = h.sum()
                out.backward()
                return out

            def check():
                out = run()
                return {"out": out.detach().numpy(), "grad.x": x.grad.numpy().copy(),
                        "grad.w": wt.grad.numpy().copy()}
            return Step(run=run, check=check)
        raise Unsupported(f"unknown workload {w}")

    def _conv(self, case, data):
        torch = self.torch
        backward = case.params["backward"]
        x, w, b = (self._t(data[k], backward) for k in ("x", "weight", "bias"))
        g = self._t(data["grad_out"])

        def run():
            if not backward:
                with torch.no_grad():
                    return torch.nn.functional.conv2d(x, w, b, padding=1)
            x.grad = w.grad = b.grad = None
            out = torch.nn.functional.conv2d(x, w, b, padding=1)
            out.backward(g)
            return out

        def check():
            out = run()
            res = {"out": out.detach().numpy()}
            if backward:
                res.update({"grad.x": x.grad.numpy(), "grad.weight": w.grad.numpy(),
                            "grad.bias": b.grad.numpy()})
            return res
        return Step(run=run, check=check)

    # the three models, written with torch.nn.functional on the shared weights
    def _mlp(self, p, x):
        F = self.torch.nn.functional
        h = F.relu(F.linear(x, p["fc1.weight"], p["fc1.bias"]))
        return F.linear(h, p["fc2.weight"], p["fc2.bias"])

    def _cnn(self, p, x):
        F = self.torch.nn.functional
        h = F.max_pool2d(F.relu(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, p["conv2.weight"], p["conv2.bias"], padding=1)), 2)
        return F.linear(h.reshape(len(x), -1), p["fc.weight"], p["fc.bias"])

    def _unet(self, p, x):
        F, torch = self.torch.nn.functional, self.torch
        pads = {name: k // 2 for name, _, _, k in UNET_LAYERS}

        def conv(h, name):
            return F.conv2d(h, p[f"{name}.weight"], p[f"{name}.bias"], padding=pads[name])
        skip = F.relu(conv(F.relu(conv(x, "enc1")), "enc2"))
        h = F.max_pool2d(skip, 2)
        h = F.relu(conv(F.relu(conv(h, "enc3")), "enc4"))
        h = torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skip], dim=1)
        return conv(F.relu(conv(h, "dec1")), "out")

    def _detector(self, p, x):
        return _detector(self.torch, p, x)

    def _resnet(self, p, x):
        """W8: batch norm in training mode (batch statistics, no running buffers)."""
        F = self.torch.nn.functional

        def bn(h, name):
            return F.batch_norm(h, None, None, p[f"{name}.weight"], p[f"{name}.bias"],
                                training=True, eps=1e-5)
        h = F.relu(bn(F.conv2d(x, p["stem.0.weight"], padding=1), "stem.1"))
        stages = sum(1 for name, _ in RESNET_PARAMS if name.endswith(".conv1.weight"))
        for i in range(stages):
            s = f"stages.{i}"
            body = F.relu(bn(F.conv2d(h, p[f"{s}.conv1.weight"], stride=2, padding=1), f"{s}.bn1"))
            body = bn(F.conv2d(body, p[f"{s}.conv2.weight"], padding=1), f"{s}.bn2")
            short = bn(F.conv2d(h, p[f"{s}.shortcut.0.weight"], stride=2), f"{s}.shortcut.1")
            h = F.relu(body + short)
        h = F.adaptive_avg_pool2d(h, 1)
        return F.conv2d(h, p["head.weight"], p["head.bias"]).flatten(1)


def _detector(torch, p, x):
    """W7's detector (workloads.DETECTOR_LAYERS) on the shared weights: (out8, out16)."""
    F = torch.nn.functional
    layers = {name: (k, stride, kind) for name, _, _, k, stride, kind in DETECTOR_LAYERS}

    def layer(h, name):
        k, stride, kind = layers[name]
        if kind == "head":
            return F.conv2d(h, p[f"{name}.weight"], p[f"{name}.bias"], padding=k // 2)
        h = F.conv2d(h, p[f"{name}.weight"], None, stride=stride, padding=k // 2)
        h = F.batch_norm(h, None, None, p[f"{name}.bn.weight"], p[f"{name}.bn.bias"],
                         training=True, eps=1e-5)
        return F.leaky_relu(h, 0.1)
    p8 = x
    for name in ("b1", "b2", "b3", "b4"):
        p8 = layer(p8, name)
    p16 = layer(layer(p8, "b5"), "b6")
    up = F.interpolate(layer(p16, "reduce"), scale_factor=2, mode="nearest")
    return layer(layer(torch.cat([up, p8], dim=1), "fuse"), "head8"), layer(p16, "head16")


def load():
    try:
        import torch
    except ImportError as e:
        raise EngineUnavailable(f"not installed ({e}); pip install torch") from None
    return [TorchEngine(torch)]
