"""Small pieces the MNIST examples share: data preparation, optimizers by name,
evaluation in batches, and the run's output folder. The training loops themselves
stay in each example, where a student reads them."""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

import tinygrad_uu as tg
from tinygrad_uu import nn, optim
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


def make_torch_optimizer(torch, name: str, params, lr: float | None):
    """The same optimizer in PyTorch, for the parity scripts in benchmarks/ (``torch`` is
    handed in, so that this module never needs it)."""
    params, lr = list(params), OPTIMIZERS[name][1] if lr is None else lr
    return {"sgd": lambda: torch.optim.SGD(params, lr=lr),
            "momentum": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9),
            "adam": lambda: torch.optim.Adam(params, lr=lr),
            "adamw": lambda: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
            "rmsprop": lambda: torch.optim.RMSprop(params, lr=lr)}[name]()


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


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
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


def update_options(p: argparse.ArgumentParser, **changes) -> None:
    """Adapt options of add_common_options (whose help is written for MNIST) to an example:
    ``update_options(p, data_dir=dict(help="..."), lr=dict(default=2e-3, help="..."))``."""
    actions = {action.dest: action for action in p._actions}
    for dest, attributes in changes.items():
        for name, value in attributes.items():
            setattr(actions[dest], name, value)


class Stopwatch:
    """Accumulates the seconds spent inside ``with watch:`` blocks (training only)."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start


# ----------------------------------------------------------------- added for mnist_cnn.py

def split_validation(images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0):
    """Carve ``size`` random examples (a seeded draw) out of a training set:
    returns ``(train_images, train_labels), (val_images, val_labels)``."""
    if not 0 <= size < len(labels):
        raise ValueError(f"split_validation: size must be in [0, {len(labels)}), got {size}")
    order = np.random.default_rng(seed).permutation(len(labels))
    val, train = order[:size], np.sort(order[size:])
    return (images[train], labels[train]), (images[val], labels[val])


def evaluate(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000):
    """(mean cross-entropy, accuracy) of the model in eval mode; (nan, nan) for no images."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    probs = predict(model, images, batch_size)
    picked = probs[np.arange(len(labels)), labels]
    loss = float(-np.log(np.maximum(picked, 1e-12)).mean())
    return loss, float((probs.argmax(1) == labels).mean())


class EarlyStopping:
    """Stop when the validation loss has not improved (by more than ``min_delta``) for
    ``patience`` epochs in a row, and keep a copy of the best weights.

    >>> stopper = EarlyStopping(patience=3)
    >>> for epoch in range(1, epochs + 1):
    ...     train_one_epoch(); val_loss, _ = evaluate(model, val_x, val_y)
    ...     if stopper.step(val_loss, model, epoch):
    ...         break
    >>> stopper.restore(model)   # the weights of epoch stopper.best_epoch
    """

    def __init__(self, patience: int, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"EarlyStopping: patience must be >= 1, got {patience}")
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_epoch, self.best_state, self.bad_epochs = math.inf, 0, None, 0

    def step(self, val_loss: float, model, epoch: int) -> bool:
        """Record one epoch's validation loss; True when training should stop."""
        if val_loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            self.best_state = model.state_dict()  # a copy (parameters and BN buffers)
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self, model) -> None:
        """Put the best weights seen back into ``model`` (no-op before the first step)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


# ----------------------------------------------------------------- options every example has

def add_engine_options(p: argparse.ArgumentParser) -> None:
    """The engine's own switches, the same on every example."""
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads for the engine's kernels and BLAS (default: every core this "
                        "process may use, or $TINYGRAD_UU_NUM_THREADS)")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="stop at the first op that makes a NaN or Inf, forward or backward, "
                        "naming the op and the line that called it (a few times slower)")


def apply_engine_options(args: argparse.Namespace) -> None:
    """Put the switches of ``add_engine_options`` into effect (call once, before training)."""
    if args.threads is not None:
        tg.set_num_threads(args.threads)
    # anomaly mode for the rest of the program; off again for a later run in the same process
    tg.set_detect_anomaly(bool(getattr(args, "detect_anomaly", False)))


# ----------------------------------------------------------------- the trained model, saved

def save_model(model, example_input, out_dir, name: str = "model") -> str:
    """Write ``model.npz`` (the weights, for ``nn.load``) and, when the onnx package is
    installed, ``model.onnx`` (for onnxruntime and any other ONNX reader, traced on
    ``example_input``, e.g. one batch of test images) into ``out_dir``.

    ``name`` names both files (``model_resnet`` gives model_resnet.npz/.onnx).
    Returns the words for the example's last line, e.g. "model.npz, model.onnx".
    Nothing here stops the run: without onnx, or if the export fails, the line says so.
    """
    from tinygrad_uu import onnx as tg_onnx
    out = Path(out_dir)
    nn.save(model, out / f"{name}.npz")
    try:
        tg_onnx.require_onnx()
    except ImportError:
        return f"{name}.npz (no {name}.onnx: pip install onnx)"
    try:
        tg_onnx.export(model, example_input, out / f"{name}.onnx")
    except Exception as e:  # the weights are saved; say why the ONNX file is not
        return f"{name}.npz (no {name}.onnx: {type(e).__name__}: {e})"
    return f"{name}.npz, {name}.onnx"
