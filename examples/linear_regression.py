"""Assignment 1: linear regression by gradient descent on Auto MPG (predict horsepower).

The same model is trained three ways, and all three should agree:
  1. plain numpy, with the gradient derived by hand;
  2. the engine: build the loss from Tensors and call ``backward()``;
  3. the closed form, least squares (``np.linalg.lstsq``), as the reference.

Model: hp_hat = X w + b, with X the standardised features.
Loss:  L = (1/n) sum_i (hp_hat_i - hp_i)^2
Hand-derived gradient: dL/dw = (2/n) X^T (hp_hat - hp),  dL/db = (2/n) sum_i (hp_hat_i - hp_i).

    python examples/linear_regression.py --help
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import trange

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
from tinygrad_uu import viz  # noqa: E402
from tinygrad_uu.data import auto_mpg  # noqa: E402
from tinygrad_uu.files import save_json  # noqa: E402


def split_and_standardise(features, target, test_fraction, seed):
    """A seeded train/test split; features standardised with the training statistics."""
    order = np.random.default_rng(seed).permutation(len(target))
    n_test = int(round(test_fraction * len(target)))
    test, train = order[:n_test], order[n_test:]
    mean, std = features[train].mean(0), features[train].std(0)
    standardise = lambda x: (x - mean) / std  # noqa: E731
    return (standardise(features[train]), target[train]), (standardise(features[test]), target[test])


def mse(prediction, target) -> float:
    return float(np.mean((prediction - target) ** 2))


def train_numpy(x, y, epochs, lr):
    """Full-batch gradient descent with the hand-derived gradient."""
    w, b = np.zeros(x.shape[1]), 0.0
    losses = []
    for _ in trange(epochs, desc="numpy ", leave=False):
        residual = x @ w + b - y
        losses.append(float(np.mean(residual ** 2)))
        w -= lr * (2 / len(y)) * (x.T @ residual)
        b -= lr * 2 * residual.mean()
    return w, b, losses


def train_engine(x, y, epochs, lr):
    """The same descent, with the gradient from ``backward()``."""
    x, y = tg.tensor(x), tg.tensor(y)
    w = tg.zeros(x.shape[1], dtype=np.float64, requires_grad=True)
    b = tg.zeros(1, dtype=np.float64, requires_grad=True)
    losses = []
    for _ in trange(epochs, desc="engine", leave=False):
        loss = ((x @ w + b - y) ** 2).mean()
        w.zero_grad()
        b.zero_grad()
        loss.backward()
        losses.append(loss.item())
        w.data -= lr * w.grad.data
        b.data -= lr * b.grad.data
    return w.data, float(b.data[0]), losses


def closed_form(x, y):
    """Least squares with an intercept column: the minimum every descent aims for."""
    solution, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)
    return solution[:-1], float(solution[-1])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=2000, help="full-batch gradient steps")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of cars held out")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--data-dir", default=None,
                   help="folder holding auto-mpg/auto-mpg.data (default: $TINYGRAD_UU_DATA "
                        "or ~/.cache/tinygrad_uu, downloading if needed)")
    p.add_argument("--out", default="runs/linear_regression", help="where figures and metrics go")
    common.add_engine_options(p)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.lr <= 0 or not 0 < args.test_fraction < 1:
        p.error("need --epochs >= 1, --lr > 0 and 0 < --test-fraction < 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.apply_engine_options(args)
    data = auto_mpg(args.data_dir)
    print(f"{data}")
    (x_train, y_train), (x_test, y_test) = split_and_standardise(
        data.features, data.target, args.test_fraction, args.seed)

    start = time.perf_counter()
    w_np, b_np, losses_np = train_numpy(x_train, y_train, args.epochs, args.lr)
    w_tg, b_tg, losses_tg = train_engine(x_train, y_train, args.epochs, args.lr)
    w_cf, b_cf = closed_form(x_train, y_train)
    seconds = time.perf_counter() - start

    results = {name: mse(x_test @ w + b, y_test) for name, (w, b) in
               {"numpy": (w_np, b_np), "engine": (w_tg, b_tg), "closed_form": (w_cf, b_cf)}.items()}
    print(f"test MSE (horsepower^2): numpy {results['numpy']:.3f}, engine {results['engine']:.3f}, "
          f"closed form {results['closed_form']:.3f}")
    print(f"{'feature':>14} {'numpy':>9} {'engine':>9} {'closed':>9}")
    for name, a, b, c in zip(data.feature_names + ("(intercept)",), [*w_np, b_np],
                             [*w_tg, b_tg], [*w_cf, b_cf]):
        print(f"{name:>14} {a:9.3f} {b:9.3f} {c:9.3f}")

    out = Path(args.out)
    viz.plot_curves({"train_loss_numpy": losses_np, "train_loss_engine": losses_tg},
                    out / "loss_curve.png", title="Gradient descent on Auto MPG", xlabel="step")
    viz.plot_predicted_vs_actual(y_test, x_test @ w_tg + b_tg, out / "predicted_vs_actual.png")
    metrics = {
        "mse_numpy": results["numpy"], "mse_engine": results["engine"],
        "mse_closed_form": results["closed_form"],
        "weights": {"numpy": [*w_np, b_np], "engine": [*w_tg, b_tg], "closed_form": [*w_cf, b_cf],
                    "names": [*data.feature_names, "(intercept)"]},
        "train_loss_numpy": losses_np[-1], "train_loss_engine": losses_tg[-1],
        "n_train": len(y_train), "n_test": len(y_test), "dropped_rows": data.dropped_rows,
        "train_seconds": seconds, "config": vars(args),
    }
    save_json(out / "metrics.json", metrics)
    print(f"figures and metrics.json written to {out}/")
    return metrics


if __name__ == "__main__":
    main()
