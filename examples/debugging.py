"""A gallery of mistakes: six bugs every course meets, and what each debugging tool says.

Each case runs the mistake, prints the tool's report and, where there is one, saves a
figure; then it runs the same code with the mistake fixed, which the tool passes.

    1. wrong_backward      a custom Function with a wrong backward     -> gradcheck
    2. log_of_zero         log(0) in a hand-made loss                  -> detect_anomaly
    3. exploding_lr        a learning rate that explodes               -> detect_anomaly + grad flow
    4. vanishing           a deep sigmoid net whose gradients vanish   -> grad flow
    5. forgotten_zero_grad gradients that grow step after step         -> GradientMonitor
    6. numpy_backward      a hand-written numpy backward with a bug    -> check_gradients

    python examples/debugging.py                   # every case, about 10 s
    python examples/debugging.py --case vanishing  # one case
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import numpy_mlp  # noqa: E402  (assignment 2's hand-written backprop)

import tinygrad_uu as tg  # noqa: E402
import tinygrad_uu.nn.functional as F  # noqa: E402
from tinygrad_uu import nn, optim, viz  # noqa: E402
from tinygrad_uu.autograd import Function  # noqa: E402
from tinygrad_uu.debug import GradientMonitor  # noqa: E402
from tinygrad_uu.files import save_json  # noqa: E402
from tinygrad_uu.gradcheck import gradient_report  # noqa: E402


@dataclass
class Finding:
    """What a tool said about one run: did it catch something, its words, its figure."""
    caught: bool
    report: str
    figure: Path | None = None


# ----------------------------------------------------------------------------- 1. gradcheck

class Cube(Function):
    """out = x ** 3.   dL/dx = 3 x^2 g   (the buggy version forgets the 3)."""

    buggy = False

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, g):
        return (1 if self.buggy else 3) * self.x ** 2 * g


class BuggyCube(Cube):
    buggy = True


def wrong_backward(healthy: bool, out: Path) -> Finding:
    """A custom op whose backward drops a constant: gradcheck compares it with finite
    differences, element by element, in float64."""
    op = Cube if healthy else BuggyCube
    x = tg.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    try:
        tg.gradcheck(lambda t: op.apply(t).sum(), x)
    except tg.GradcheckError as e:
        return Finding(True, str(e))
    return Finding(False, f"gradcheck passed: {op.__name__}'s backward matches finite differences")


# ----------------------------------------------------------------------------- 2. log(0)

def log_of_zero(healthy: bool, out: Path) -> Finding:
    """Binary cross-entropy written by hand from a sigmoid. A confident logit (20) makes
    sigmoid = 1.0 exactly in float32, and log(1 - p) = log(0) = -inf; anomaly mode names
    the op and this file's line. The fix: the loss on logits, which never forms log(0)."""
    tg.manual_seed(0)
    model = nn.Linear(4, 1)
    x = tg.tensor(np.array([[10.0, 10, 10, 10], [-1, 0, 1, 0]], dtype=np.float32))
    y = tg.tensor(np.array([[0.0], [1.0]], dtype=np.float32))
    model.weight.data[:] = 0.5
    try:
        with tg.detect_anomaly():
            logits = model(x)
            if healthy:
                loss = F.binary_cross_entropy_with_logits(logits, y)
            else:
                p = logits.sigmoid()
                loss = -(y * p.log() + (1 - y) * (1 - p).log()).mean()  # log(0) here
            loss.backward()
    except tg.AnomalyError as e:
        return Finding(True, str(e))
    return Finding(False, f"no anomaly: loss {loss.item():.4f}, gradients finite")


# ----------------------------------------------------------------------------- 3. learning rate

def regression_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 8)).astype(np.float32) * 3
    y = (x @ rng.standard_normal((8, 1)) + 1).astype(np.float32)
    return tg.tensor(x), tg.tensor(y)


def exploding_lr(healthy: bool, out: Path, steps: int = 60) -> Finding:
    """Plain SGD on a small regression MLP. At lr 0.1 each step overshoots further, the
    weights grow geometrically until float32 overflows; anomaly mode stops at the first
    op that makes an Inf, and the grad-flow figure shows the climb before it."""
    lr = 1e-3 if healthy else 0.1
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = optim.SGD(model.parameters(), lr=lr)
    monitor = GradientMonitor(model)
    x, y = regression_data()
    losses, error = [], None
    try:
        with tg.detect_anomaly():
            for _ in range(steps):
                optimizer.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                monitor.step()
                optimizer.step()
                losses.append(loss.item())
    except tg.AnomalyError as e:
        error = e
    figure = viz.plot_grad_flow(monitor, out / f"exploding_lr{'_fixed' if healthy else ''}.png")
    warnings = monitor.warnings()
    summary = (f"lr {lr}: {len(losses)} steps, loss {losses[0]:.3g} -> {losses[-1]:.3g}"
               if losses else f"lr {lr}: failed at the first step")
    if error is None and not warnings:
        return Finding(False, summary + "; no anomaly, no gradient warning", figure)
    return Finding(True, "\n".join([summary, str(error or "")] + warnings), figure)


# ----------------------------------------------------------------------------- 4. vanishing

def deep_net(activation, depth: int = 10, width: int = 32):
    layers = []
    for i in range(depth):
        linear = nn.Linear(16 if i == 0 else width, width)
        if activation is nn.ReLU:   # He initialisation keeps a ReLU stack's scale
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        layers += [linear, activation()]
    return nn.Sequential(*layers, nn.Linear(width, 4))


def classification_data(seed: int = 0, n: int = 128):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    return tg.tensor(x), (x[:, :4].argmax(axis=1)).astype(np.int64)


def vanishing(healthy: bool, out: Path, steps: int = 20) -> Finding:
    """Ten sigmoid layers: each multiplies the gradient by sigmoid' <= 1/4, so the first
    layer's gradient is ~1e-6 of the last one's and it hardly learns. Ten ReLU layers
    with He initialisation pass it on at a steady size."""
    tg.manual_seed(0)
    model = deep_net(nn.ReLU if healthy else nn.Sigmoid)
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    monitor = GradientMonitor(model, every=2)
    x, y = classification_data()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        monitor.step()
        optimizer.step()
    figure = viz.plot_grad_flow(monitor, out / f"vanishing{'_fixed' if healthy else ''}.png")
    caught = any(w.startswith("vanishing") for w in monitor.warnings())
    return Finding(caught, monitor.report(), figure)


# ----------------------------------------------------------------------------- 5. zero_grad

def forgotten_zero_grad(healthy: bool, out: Path, steps: int = 10) -> Finding:
    """Without optimizer.zero_grad(), backward ADDS to p.grad, so step n updates with the
    sum of n gradients. The monitor adds up what each backward delivers (a hook on every
    parameter) and sees p.grad holding more: it says so, and the figure shows the climb."""
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    monitor = GradientMonitor(model)
    x, y = classification_data()
    for _ in range(steps):
        if healthy:
            optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        monitor.step()
        optimizer.step()
    figure = viz.plot_grad_flow(monitor, out / f"zero_grad{'_fixed' if healthy else ''}.png")
    caught = any(w.startswith("accumulating") for w in monitor.warnings())
    return Finding(caught, monitor.report(), figure)


# ----------------------------------------------------------------------------- 6. numpy

def relu_mask_on_the_wrong_side(params, cache, y):
    """numpy_mlp.backward with one character changed: [z < 0] where [z > 0] belongs."""
    dz = np.exp(numpy_mlp.log_softmax(cache[-1][1]))
    dz[np.arange(len(y)), y] -= 1.0
    dz /= len(y)
    grads = []
    for l in reversed(range(len(params))):
        a_in, _ = cache[l]
        grads.append((a_in.T @ dz, dz.sum(axis=0)))
        if l > 0:
            dz = (dz @ params[l][0].T) * (cache[l - 1][1] < 0)   # the bug
    return grads[::-1]


def numpy_backward(healthy: bool, out: Path) -> Finding:
    """Assignment 2's backprop (examples/numpy_mlp.py) and a copy with ReLU's mask
    inverted, both checked by check_gradients against central differences."""
    rng = np.random.default_rng(0)
    params = numpy_mlp.init_params([20, 16, 5], rng, dtype=np.float64)
    x, y = rng.standard_normal((8, 20)), rng.integers(0, 5, 8)
    backward = numpy_mlp.backward if healthy else relu_mask_on_the_wrong_side
    passed, report = numpy_mlp.check_backward(params, x, y, backward_fn=backward)
    return Finding(not passed, report)


# ----------------------------------------------------------------------------- running them

CASES = {
    "wrong_backward": (wrong_backward, "a custom Function with a wrong backward", "gradcheck"),
    "log_of_zero": (log_of_zero, "log(0) in a hand-made loss", "detect_anomaly"),
    "exploding_lr": (exploding_lr, "a learning rate that explodes",
                     "detect_anomaly + GradientMonitor"),
    "vanishing": (vanishing, "a deep sigmoid net whose gradients vanish", "GradientMonitor"),
    "forgotten_zero_grad": (forgotten_zero_grad, "a forgotten zero_grad()", "GradientMonitor"),
    "numpy_backward": (numpy_backward, "a hand-written numpy backward with a bug",
                       "check_gradients"),
}


def run_case(name: str, out: Path) -> dict:
    """Run one case, mistake then fix; print both reports; return what was found."""
    case, title, tool = CASES[name]
    print(f"\n{'=' * 100}\n{name}: {title}  (tool: {tool})\n{'=' * 100}")
    with np.errstate(all="ignore"):  # the mistakes overflow on purpose: the tools report it
        mistake = case(False, out)
        fixed = case(True, out)
    print(f"--- the mistake: {'CAUGHT' if mistake.caught else 'NOT CAUGHT'}\n{mistake.report}")
    print(f"--- fixed: {'passes' if not fixed.caught else 'STILL FLAGGED'}\n{fixed.report}")
    figures = [str(f) for f in (mistake.figure, fixed.figure) if f is not None]
    if figures:
        print("figures: " + ", ".join(figures))
    return {"caught": mistake.caught, "fixed_passes": not fixed.caught, "tool": tool,
            "figures": figures}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="cases: " + "; ".join(f"{name} ({title}, {tool})" for
                                                            name, (_, title, tool) in CASES.items()))
    p.add_argument("--case", choices=sorted(CASES), action="append",
                   help="run only this case (repeatable; default: all of them)")
    p.add_argument("--out", default="runs/debugging",
                   help="folder for figures and metrics.json (default: runs/debugging)")
    common.add_engine_options(p)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.apply_engine_options(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.case or list(CASES)
    results = {name: run_case(name, out) for name in tqdm(names, desc="cases", unit="case",
                                                           file=sys.stderr, leave=False)}
    save_json(out / "metrics.json", results)
    caught = sum(r["caught"] for r in results.values())
    passing = sum(r["fixed_passes"] for r in results.values())
    print(f"\n{caught} of {len(results)} mistakes caught; {passing} of {len(results)} fixed "
          f"versions pass; figures and metrics.json in {out}/")
    return results


if __name__ == "__main__":
    main()
