"""Assignment 2 as the course set it: an MLP on MNIST in plain numpy, backprop by hand.

No autograd anywhere in this file: every gradient is derived in a comment and then
written out as numpy. ``examples/mnist_mlp.py`` trains the same network with the
engine; ``tests/test_numpy_mlp.py`` checks that both give the same gradients.

The network, for a batch of B images flattened to x (B, 784):

    a_0 = x
    z_l = a_{l-1} @ W_l + b_l,   a_l = relu(z_l)        hidden layers l = 1 .. L-1
    z_L = a_{L-1} @ W_L + b_L                           the logits (B, 10)
    loss = -(1/B) sum_i log softmax(z_L[i])[y_i]        softmax cross-entropy

    python examples/numpy_mlp.py                 # 784-256-10, SGD, about a minute on 2 cores
    python examples/numpy_mlp.py --hidden 0      # the linear classifier and its class templates
    python examples/numpy_mlp.py --hidden 256 128 --epochs 10
    python examples/numpy_mlp.py --check-gradients   # backward() against finite differences
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tinygrad_uu import viz  # noqa: E402
from tinygrad_uu.data import mnist  # noqa: E402
from tinygrad_uu.files import save_json  # noqa: E402
from tinygrad_uu.gradcheck import gradient_report  # noqa: E402


# ----------------------------------------------------------------------------- the model

def init_params(sizes, rng: np.random.Generator, dtype=np.float32) -> list:
    """[(W_1, b_1), ..., (W_L, b_L)] for layer sizes e.g. [784, 256, 10]; W_l is (in, out).

    He initialisation, W ~ N(0, 2 / fan_in), for layers followed by a ReLU, so the
    activations keep their scale from layer to layer (a ReLU zeroes half of them,
    the factor 2 makes up for it); N(0, 1 / fan_in) for the last layer. b = 0.
    """
    params = []
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        gain = 1.0 if l == len(sizes) - 2 else 2.0
        w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(gain / fan_in)
        params.append((w.astype(dtype), np.zeros(fan_out, dtype=dtype)))
    return params


def forward(params, x: np.ndarray):
    """Logits (B, n_classes) for a batch x (B, n_inputs), and the cache backward needs:
    each layer's input a_{l-1} and pre-activation z_l."""
    cache = []
    a = x
    for l, (w, b) in enumerate(params):
        z = a @ w + b
        cache.append((a, z))
        a = np.maximum(z, 0) if l < len(params) - 1 else z     # no ReLU on the logits
    return a, cache


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax(z) along axis 1, stable: log(e^z_k / sum_j e^z_j) = z_k - m - log sum_j e^(z_j - m)
    with m = max_j z_j, so no exponential overflows."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean over the batch of -log p(y_i | x_i)."""
    return float(-log_softmax(logits)[np.arange(len(y)), y].mean())


def backward(params, cache, y: np.ndarray) -> list:
    """[(dL/dW_l, dL/db_l)] for the mean softmax cross-entropy of the forward that
    filled ``cache``, with integer labels y (B,).

    1. Logits. For one sample, L_i = -z_y + log sum_j e^(z_j), so
           dL_i/dz_k = -[k = y] + e^(z_k) / sum_j e^(z_j) = p_k - onehot(y)_k,
       and the mean over the batch divides by B:   dL/dZ = (P - Y) / B.
    2. A linear layer Z = A @ W + b (A is (B, in), W is (in, out)). Z_ik = sum_j A_ij W_jk + b_k:
           dL/dW_jk = sum_i A_ij dL/dZ_ik     ->  dL/dW = A^T @ dL/dZ
           dL/db_k  = sum_i dL/dZ_ik          ->  dL/db = dL/dZ summed over the batch
           dL/dA_ij = sum_k dL/dZ_ik W_jk     ->  dL/dA = dL/dZ @ W^T
    3. A ReLU A = max(Z, 0) passes the gradient where it was active:
           dL/dZ = dL/dA * [Z > 0]            (elementwise; at Z = 0 we take 0)
    Walking the layers from the last to the first applies 2 and 3 in turn.
    """
    logits = cache[-1][1]
    batch = len(y)
    dz = np.exp(log_softmax(logits))                           # P
    dz[np.arange(batch), y] -= 1.0                             # P - Y
    dz /= batch
    grads = []
    for l in reversed(range(len(params))):
        a_in, _ = cache[l]
        w, _ = params[l]
        grads.append((a_in.T @ dz, dz.sum(axis=0)))
        if l > 0:                                              # dL/dx itself is not needed
            z_below = cache[l - 1][1]
            dz = (dz @ w.T) * (z_below > 0)
    return grads[::-1]


def sgd_step(params, grads, lr: float) -> None:
    """Plain gradient descent, in place: W <- W - lr dL/dW, b <- b - lr dL/db."""
    for (w, b), (dw, db) in zip(params, grads):
        w -= lr * dw
        b -= lr * db


def predict(params, x: np.ndarray, batch_size: int = 2000) -> np.ndarray:
    """Class probabilities (N, n_classes), computed in batches to bound the memory."""
    out = [np.exp(log_softmax(forward(params, x[i:i + batch_size])[0]))
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


# ----------------------------------------------------------------------------- checking backward

def as_dict(params) -> dict:
    """{"W1": W_1, "b1": b_1, ...}: the form ``check_gradients`` takes."""
    return {f"{kind}{l + 1}": array for l, pair in enumerate(params)
            for kind, array in zip("Wb", pair)}


def as_list(named: dict) -> list:
    return [(named[f"W{l}"], named[f"b{l}"]) for l in range(1, len(named) // 2 + 1)]


def check_backward(params, x, y, backward_fn=None, seed: int = 0,
                   max_elements: int = 200) -> tuple[bool, str]:
    """Compare ``backward_fn`` (default: this file's ``backward``) with central finite
    differences of the loss, in float64, on the batch (x, y): (passed, report). The
    report names each parameter (W1, b1, ...) whose gradient is off, and its worst element."""
    params = [(w.astype(np.float64), b.astype(np.float64)) for w, b in params]
    x = x.astype(np.float64)
    _, cache = forward(params, x)
    grads = as_dict((backward_fn or backward)(params, cache, y))

    def loss_fn(named):
        return cross_entropy(forward(as_list(named), x)[0], y)

    return gradient_report(loss_fn, as_dict(params), grads, seed=seed, max_elements=max_elements)


def run_gradient_check(args) -> dict:
    """``--check-gradients``: one batch of real training images, this file's backward."""
    (train_x, train_y), _ = load(args.data_dir, args.limit)
    rng = np.random.default_rng(args.seed)
    sizes = [train_x.shape[1], *[h for h in args.hidden if h > 0], 10]
    params = [(w, rng.standard_normal(b.shape) * 0.1) for w, b in init_params(sizes, rng)]
    batch = rng.choice(len(train_x), size=min(args.batch_size, len(train_x)), replace=False)
    print(f"checking backward() of the {'-'.join(map(str, sizes))} network on {len(batch)} "
          "training images, against central finite differences (float64)")
    # 800 small forward passes: BLAS threads only wait on each other there (tinygrad_uu/threads.py)
    with threadpool_limits(1, user_api="blas"):
        passed, report = check_backward(params, train_x[batch], train_y[batch], seed=args.seed)
    print(report)
    result = {"gradient_check_passed": passed, "gradient_check_report": report,
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    save_json(Path(args.out) / "metrics.json", result)
    if not passed:
        raise SystemExit(1)
    return result


# ----------------------------------------------------------------------------- training

def load(data_dir=None, limit: int | None = None):
    """MNIST as float32 rows of 784 pixels in [0, 1], and int64 labels."""
    train_x, train_y = mnist("train", root=data_dir)
    test_x, test_y = mnist("test", root=data_dir)
    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
    flat = lambda images: images.reshape(len(images), -1).astype(np.float32) / 255.0  # noqa: E731
    return (flat(train_x), train_y), (flat(test_x), test_y)


def train(args) -> tuple:
    """Train as ``args`` say (see ``parse_args``); returns (params, metrics)."""
    (train_x, train_y), (test_x, test_y) = load(args.data_dir, args.limit)
    rng = np.random.default_rng(args.seed)
    sizes = [train_x.shape[1], *[h for h in args.hidden if h > 0], 10]
    params = init_params(sizes, rng)
    n = len(train_x)
    kind = "MLP" if len(sizes) > 2 else "linear classifier"
    print(f"numpy {kind} {'-'.join(map(str, sizes))}: {n} training and {len(test_x)} test images, "
          f"{args.epochs} epochs of batch {args.batch_size}, SGD lr {args.lr}")

    history = {"train_loss": [], "train_accuracy": [], "test_loss": [], "test_accuracy": []}
    train_seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(n)
        loss_sum = correct = 0.0
        start = time.perf_counter()
        bar = tqdm(range(0, n, args.batch_size), desc=f"epoch {epoch}/{args.epochs}",
                   unit="batch", leave=False, file=sys.stderr)
        for step, i in enumerate(bar):
            idx = order[i:i + args.batch_size]
            x, y = train_x[idx], train_y[idx]
            logits, cache = forward(params, x)
            loss = cross_entropy(logits, y)
            if not np.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {loss} at epoch {epoch}, step {step}: the learning "
                    f"rate {args.lr} is too large for this network; try --lr {args.lr / 10:g}")
            sgd_step(params, backward(params, cache, y), args.lr)
            loss_sum += loss * len(y)
            correct += int((logits.argmax(axis=1) == y).sum())
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")
        bar.close()
        train_seconds += time.perf_counter() - start

        probs = predict(params, test_x)
        history["train_loss"].append(float(loss_sum / n))
        history["train_accuracy"].append(float(correct / n))
        history["test_loss"].append(float(-np.log(probs[np.arange(len(test_y)), test_y]
                                                  + 1e-12).mean()))
        history["test_accuracy"].append(float((probs.argmax(axis=1) == test_y).mean()))
        print(f"epoch {epoch}/{args.epochs}: train loss {history['train_loss'][-1]:.4f}, "
              f"train accuracy {history['train_accuracy'][-1]:.2%}, "
              f"test accuracy {history['test_accuracy'][-1]:.2%}")

    metrics = {
        "test_accuracy": history["test_accuracy"][-1],
        "train_loss": history["train_loss"],
        "train_accuracy": history["train_accuracy"],
        "test_loss_per_epoch": history["test_loss"],
        "test_accuracy_per_epoch": history["test_accuracy"],
        "train_seconds": train_seconds,
        "samples_per_second": float(n * args.epochs / train_seconds),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    save_figures(Path(args.out), history, params, test_x, test_y, probs)
    save_json(Path(args.out) / "metrics.json", metrics)
    return params, metrics


def save_figures(out: Path, history, params, test_x, test_y, probs) -> None:
    """Curves, the first layer's weights as images, the confusion matrix, and the 16 test
    digits misclassified with the most confidence."""
    predicted = probs.argmax(axis=1)
    hidden = len(params) > 1
    viz.plot_curves(history, out / "curves.png",
                    title="numpy MLP" if hidden else "numpy linear classifier")
    viz.plot_weight_images(params[0][0], out / "weights.png")  # (784, out): one image per unit
    viz.plot_confusion_matrix(test_y, predicted, out / "confusion_matrix.png")
    wrong = np.flatnonzero(predicted != test_y)
    if len(wrong):
        worst = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:16]
        viz.plot_image_grid(test_x[worst], out / "misclassified.png",
                            titles=[f"true {test_y[i]}, pred {predicted[i]} "
                                    f"({probs[i, predicted[i]]:.2f})" for i in worst])


# ----------------------------------------------------------------------------- command line

def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=20, help="passes over the training set")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per SGD step")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    p.add_argument("--hidden", type=int, nargs="+", default=[256],
                   help="hidden layer sizes, e.g. 256 or 256 128; 0 = no hidden layer "
                        "(a linear classifier)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="train on the first N training images only (a quick run)")
    p.add_argument("--data-dir", default=None,
                   help="data root holding mnist/ (None: $TINYGRAD_UU_DATA or "
                        "~/.cache/tinygrad_uu, downloading if needed)")
    p.add_argument("--out", default="runs/numpy_mlp",
                   help="folder for the figures and metrics.json")
    p.add_argument("--check-gradients", action="store_true",
                   help="do not train: check backward() against central finite differences "
                        "on one batch (a seeded sample of each large array) and report")
    common.add_engine_options(p)
    args = p.parse_args(argv)
    if any(h < 0 for h in args.hidden):
        p.error(f"--hidden: sizes must be >= 0, got {args.hidden}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.apply_engine_options(args)
    if args.check_gradients:
        try:
            return run_gradient_check(args)
        except FileNotFoundError as e:
            raise SystemExit(f"numpy_mlp: {e}") from None
    try:
        _, metrics = train(args)
    except (FileNotFoundError, FloatingPointError) as e:   # no data, or a diverged run
        raise SystemExit(f"numpy_mlp: {e}") from None
    print(f"test accuracy {metrics['test_accuracy']:.2%}; {metrics['train_seconds']:.1f} s "
          f"of training, {metrics['samples_per_second']:.0f} images/s; wrote {args.out}/")
    return metrics


if __name__ == "__main__":
    main()
