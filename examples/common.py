"""Small pieces the MNIST examples share: data preparation, optimizers by name,
evaluation in batches, and the run's output folder. The training loops themselves
stay in each example, where a student reads them."""
from __future__ import annotations

import argparse
import time

import numpy as np

import tinygrad_uu as tg
from tinygrad_uu import optim
from tinygrad_uu.data import mnist

# The optimizers a student can pick, with a learning rate that works for each.
OPTIMIZERS = {
    "sgd": (lambda params, lr, wd: optim.SGD(params, lr=lr, weight_decay=wd), 0.1),
    "momentum": (lambda params, lr, wd: optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd), 0.02),
    "adam": (lambda params, lr, wd: optim.Adam(params, lr=lr, weight_decay=wd), 1e-3),
    "adamw": (lambda params, lr, wd: optim.AdamW(params, lr=lr, weight_decay=wd), 1e-3),
    "rmsprop": (lambda params, lr, wd: optim.RMSprop(params, lr=lr, weight_decay=wd), 1e-3),
}


def make_optimizer(name: str, params, lr: float | None, weight_decay: float = 0.0):
    build, default_lr = OPTIMIZERS[name]
    return build(list(params), default_lr if lr is None else lr, weight_decay)


def load_mnist(data_dir=None, limit: int | None = None):
    """MNIST as float32 images in [0, 1], shape (N, 1, 28, 28), and int64 labels."""
    train_x, train_y = mnist("train", root=data_dir)
    test_x, test_y = mnist("test", root=data_dir)
    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
    as_float = lambda x: (x.astype(np.float32) / 255.0)[:, None]  # noqa: E731
    return (as_float(train_x), train_y), (as_float(test_x), test_y)


@tg.no_grad()
def predict(model, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Class probabilities for every image, in batches, with the model in eval mode."""
    was_training = model.training
    model.eval()
    probs = [model(tg.tensor(images[i:i + batch_size])).softmax(axis=1).data
             for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return np.concatenate(probs)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_common_options(p: argparse.ArgumentParser, out: str, epochs: int, batch_size: int,
                       optimizer: str):
    p.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the training set")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: a good one for the optimizer, "
                        + ", ".join(f"{k} {v[1]:g}" for k, v in OPTIMIZERS.items()) + ")")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=optimizer)
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="train on the first N training images only (a quick run)")
    p.add_argument("--data-dir", default=None,
                   help="data root holding mnist/ (default: $TINYGRAD_UU_DATA or "
                        "~/.cache/tinygrad_uu, downloading if needed)")
    p.add_argument("--out", default=out, help="folder for figures, the model and metrics.json")


class Stopwatch:
    """Accumulates the seconds spent inside ``with watch:`` blocks (training only)."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start
