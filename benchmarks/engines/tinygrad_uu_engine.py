"""tinygrad_uu, through its public API only, on each kernel backend (numba and numpy).

Written the way the course writes a model: ``nn`` layers, ``nn.functional`` losses and
``optim.SGD``. The backend is switched with ``tinygrad_uu.kernels.set_backend`` before
every check and measurement, so both columns run in the same process, interleaved.
A piece of the API that does not exist (yet) makes its workloads skip with the name
of what is missing.
"""
from __future__ import annotations

import numpy as np

from ..workloads import DETECTOR_LAYERS, LR, PARAMS, RESNET_PARAMS, UNET_LAYERS, chain_op
from .base import Engine, EngineUnavailable, Step, Unsupported


def _need(module, name: str, label: str):
    """``module.name``, or Unsupported("<label>.<name> not available")."""
    try:
        return getattr(module, name)
    except (AttributeError, ImportError) as e:
        raise Unsupported(f"{label}.{name} not available ({type(e).__name__})") from None


class TinygradUUEngine(Engine):
    def __init__(self, tg, backend: str | None, kernels=None):
        self.tg, self.kernels = tg, kernels
        self.backend = backend
        self._previous = kernels.get_backend() if kernels is not None else None
        self.key = f"tinygrad_uu-{backend or 'numpy'}"
        self.name = f"tinygrad_uu [{backend or 'numpy'}]"
        self.version = getattr(tg, "__version__", "")

    def activate(self):
        if self.backend is not None:
            self.kernels.set_backend(self.backend)

    def deactivate(self):
        if self._previous is not None:
            self.kernels.set_backend(self._previous)

    # ------------------------------------------------------------ helpers
    def _t(self, array, grad=False):
        return self.tg.Tensor(np.array(array), requires_grad=grad)

    def _api(self):
        tg = self.tg
        try:
            from tinygrad_uu import nn, optim
            import tinygrad_uu.nn.functional as F
        except ImportError as e:
            raise Unsupported(f"tinygrad_uu.nn / optim not importable ({e})") from None
        return tg, nn, F, optim

    @staticmethod
    def _load(module, data, mapping):
        """Copy the shared initial weights into the module's parameters, by name."""
        params = dict(module.named_parameters())
        for ours, theirs in mapping.items():
            p = params[ours]
            if p.shape != data[theirs].shape:
                raise Unsupported(f"parameter {ours} has shape {p.shape}, "
                                  f"expected {data[theirs].shape}")
            p.data = np.array(data[theirs], dtype=p.data.dtype)
        return [params[k] for k in mapping]

    # ------------------------------------------------------------ workloads
    def build(self, case, data):
        w = case.workload
        if w == "W1":
            a, b = self._t(data["a"]), self._t(data["b"])
            return Step(run=lambda: a @ b, check=lambda: {"out": (a @ b).numpy()})
        if w == "W2":
            return self._conv(case, data)
        if w in ("W3", "W4", "W5", "W7", "W8"):
            return self._training(case, data)
        if w == "W6":
            return self._chain(case, data)
        raise Unsupported(f"unknown workload {w}")

    def _conv(self, case, data):
        tg, nn, F, optim = self._api()
        conv2d = _need(F, "conv2d", "tinygrad_uu.nn.functional")
        backward = case.params["backward"]
        x, w, b = (self._t(data[k], backward) for k in ("x", "weight", "bias"))
        g = data["grad_out"]

        def run():
            if not backward:
                with tg.no_grad():
                    return conv2d(x, w, b, padding=1)
            x.grad = w.grad = b.grad = None
            out = conv2d(x, w, b, padding=1)
            out.backward(g)
            return out

        def check():
            out = run()
            res = {"out": out.numpy()}
            if backward:
                res.update({"grad.x": x.grad.numpy(), "grad.weight": w.grad.numpy(),
                            "grad.bias": b.grad.numpy()})
            return res
        return Step(run=run, check=check)

    def _training(self, case, data):
        tg, nn, F, optim = self._api()
        SGD = _need(optim, "SGD", "tinygrad_uu.optim")
        w = case.workload
        if w == "W3":
            d_in, d_hidden, d_out = case.params["sizes"]
            model = nn.Sequential(_need(nn, "Linear", "tinygrad_uu.nn")(d_in, d_hidden), nn.ReLU(),
                                  nn.Linear(d_hidden, d_out))
            mapping = {"0.weight": "fc1.weight", "0.bias": "fc1.bias",
                       "2.weight": "fc2.weight", "2.bias": "fc2.bias"}
            loss_fn = _need(F, "cross_entropy", "tinygrad_uu.nn.functional")
        elif w == "W4":
            Conv2d = _need(nn, "Conv2d", "tinygrad_uu.nn")
            MaxPool2d = _need(nn, "MaxPool2d", "tinygrad_uu.nn")
            model = nn.Sequential(Conv2d(1, 16, 3, padding=1), nn.ReLU(), MaxPool2d(2),
                                  Conv2d(16, 32, 3, padding=1), nn.ReLU(), MaxPool2d(2),
                                  nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
            mapping = {"0.weight": "conv1.weight", "0.bias": "conv1.bias",
                       "3.weight": "conv2.weight", "3.bias": "conv2.bias",
                       "7.weight": "fc.weight", "7.bias": "fc.bias"}
            loss_fn = _need(F, "cross_entropy", "tinygrad_uu.nn.functional")
        elif w == "W5":
            model = _unet(tg, nn, F)
            mapping = {k: k for k in PARAMS["W5"]}
            loss_fn = _need(F, "binary_cross_entropy_with_logits", "tinygrad_uu.nn.functional")
        elif w == "W7":
            model = _detector(tg, nn, F)
            mapping = {k: k for k in PARAMS["W7"]}
            bce = _need(F, "binary_cross_entropy_with_logits", "tinygrad_uu.nn.functional")
            loss_fn = lambda outs, ys: bce(outs[0], ys[0]) + bce(outs[1], ys[1])  # noqa: E731
        else:
            model = _resnet(nn)
            mapping = {k: k for k in PARAMS["W8"]}
            loss_fn = _need(F, "binary_cross_entropy_with_logits", "tinygrad_uu.nn.functional")
        params = self._load(model, data, mapping)
        opt = SGD(params, lr=LR)
        x, y = tg.Tensor(data["x"]), (data["y"] if w != "W7" else (data["y8"], data["y16"]))
        names = list(mapping.values())

        def run():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss

        def check():
            loss = run()
            res = {"loss": loss.numpy()}
            for name, p in zip(names, params):
                res[f"grad.{name}"] = p.grad.numpy().copy()
                res[f"param.{name}"] = p.data.copy()
            return res
        return Step(run=run, check=check)

    def _chain(self, case, data):
        x, wt, n = self._t(data["x"], True), self._t(data["w"], True), case.params["length"]

        def run():
            x.grad = wt.grad = None
            h = x
            for i in range(n):
                op = chain_op(i)
                h = h + wt if op == "add" else h * wt if op == "mul" else h.tanh()
            out = h.sum()
            out.backward()
            return out

        def check():
            out = run()
            return {"out": out.numpy(), "grad.x": x.grad.numpy().copy(),
                    "grad.w": wt.grad.numpy().copy()}
        return Step(run=run, check=check)


def _unet(tg, nn, F):
    """W5's network as a Module (see workloads.UNET_LAYERS for the shapes)."""
    Conv2d = _need(nn, "Conv2d", "tinygrad_uu.nn")
    max_pool2d = _need(F, "max_pool2d", "tinygrad_uu.nn.functional")
    interpolate = _need(F, "interpolate", "tinygrad_uu.nn.functional")
    cat = _need(tg, "cat", "tinygrad_uu")

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            for name, cin, cout, k in UNET_LAYERS:
                setattr(self, name, Conv2d(cin, cout, k, padding=k // 2))

        def forward(self, x):  # each conv with its ReLU in one op (as nn.Sequential runs them)
            skip = self.enc2(self.enc1(x, relu=True), relu=True)
            h = max_pool2d(skip, 2)
            h = self.enc4(self.enc3(h, relu=True), relu=True)
            h = cat([interpolate(h, scale_factor=2, mode="nearest"), skip], axis=1)
            return self.out(self.dec1(h, relu=True))

    return UNet()


def _detector(tg, nn, F):
    """W7's network as a Module (see workloads.DETECTOR_LAYERS): returns (out8, out16)."""
    Conv2d = _need(nn, "Conv2d", "tinygrad_uu.nn")
    BatchNorm2d = _need(nn, "BatchNorm2d", "tinygrad_uu.nn")
    interpolate = _need(F, "interpolate", "tinygrad_uu.nn.functional")
    cat = _need(tg, "cat", "tinygrad_uu")

    class Block(nn.Module):
        def __init__(self, cin, cout, k, stride):
            super().__init__()
            self.weight = Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False).weight
            self.stride, self.padding = stride, k // 2
            self.bn = BatchNorm2d(cout)

        def forward(self, x):  # BN and LeakyReLU in one op, as nn.Sequential runs them
            h = F.conv2d(x, self.weight, None, stride=self.stride, padding=self.padding)
            return self.bn(h, negative_slope=0.1)

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            for name, cin, cout, k, stride, kind in DETECTOR_LAYERS:
                setattr(self, name, Block(cin, cout, k, stride) if kind == "cbl"
                        else Conv2d(cin, cout, k, padding=k // 2))

        def forward(self, x):
            p8 = self.b4(self.b3(self.b2(self.b1(x))))
            p16 = self.b6(self.b5(p8))
            up = interpolate(self.reduce(p16), scale_factor=2, mode="nearest")
            return self.head8(self.fuse(cat([up, p8], axis=1))), self.head16(p16)

    return Detector()


def _resnet(nn):
    """W8's network: examples/competition.py's ResNet (width 16, three stages of one
    BasicBlock) without its dropout, built from the public nn parts."""
    BasicBlock = _need(nn, "BasicBlock", "tinygrad_uu.nn")
    AdaptiveAvgPool2d = _need(nn, "AdaptiveAvgPool2d", "tinygrad_uu.nn")
    width = RESNET_PARAMS[0][1][0]
    stages = sum(1 for name, _ in RESNET_PARAMS if name.endswith(".conv1.weight"))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU())
            self.stages = nn.Sequential(*[BasicBlock(width * 2 ** i, width * 2 ** (i + 1), 2)
                                          for i in range(stages)])
            self.pool = AdaptiveAvgPool2d(1)
            self.head = nn.Conv2d(width * 2 ** stages, 1, 1)

        def forward(self, x):
            return self.head(self.pool(self.stages(self.stem(x)))).flatten(1)

    return ResNet()


def load():
    try:
        import tinygrad_uu as tg
    except ImportError as e:
        raise EngineUnavailable(f"not importable: {e}") from None
    try:
        import tinygrad_uu.kernels as kernels
    except ImportError as e:
        kernels = None
        why = f"tinygrad_uu.kernels not importable ({e})"
    if kernels is not None and not hasattr(kernels, "set_backend"):
        kernels, why = None, "tinygrad_uu.kernels.set_backend not available"
    if kernels is None:  # no backend switch: the engine as it is, which is plain numpy
        return [TinygradUUEngine(tg, None), ("tinygrad_uu-numba", why)]
    engines = []
    for backend in ("numba", "numpy"):
        if backend not in getattr(kernels, "BACKENDS", ("numba", "numpy")):
            engines.append((f"tinygrad_uu-{backend}", f"no {backend!r} kernel backend"))
            continue
        if backend == "numba":
            try:
                import numba  # noqa: F401
            except ImportError as e:
                engines.append(("tinygrad_uu-numba", f"numba not importable ({e})"))
                continue
        engines.append(TinygradUUEngine(tg, backend, kernels))
    return engines
