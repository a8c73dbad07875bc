"""Assignment 2: an MLP (or, with --hidden 0, a linear classifier) on MNIST, in the engine.

One training step, as in every example:
    logits = model(images)                  # forward: the graph is built op by op
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(); loss.backward()  # gradients of every parameter
    optimizer.step()                        # the update

    python examples/mnist_mlp.py            # defaults: 784-256-10, Adam, 8 epochs
    python examples/mnist_mlp.py --hidden 0 # the linear classifier and its 10 class templates
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
import tinygrad_uu.nn.functional as F  # noqa: E402
from tinygrad_uu import nn, viz  # noqa: E402
from tinygrad_uu.data import DataLoader, TensorDataset  # noqa: E402
from tinygrad_uu.files import save_json  # noqa: E402


def build_model(hidden: int) -> nn.Module:
    """784 -> hidden -> 10 with a ReLU, or 784 -> 10 when hidden is 0."""
    if hidden == 0:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def train_epoch(model, optimizer, loader, epoch, epochs, watch):
    """One pass over the training set; returns (mean loss, accuracy)."""
    total_loss = correct = seen = 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, unit="batch")
    for images, labels in bar:
        with watch:
            logits = model(tg.tensor(images))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        total_loss += loss.item() * len(labels)
        correct += int((logits.data.argmax(axis=1) == labels).sum())
        seen += len(labels)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    return total_loss / seen, correct / seen


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_options(p, out="runs/mnist_mlp", epochs=8, batch_size=128, optimizer="adam")
    p.add_argument("--hidden", type=int, default=256,
                   help="hidden units; 0 gives a linear classifier (softmax regression)")
    common.add_engine_options(p)
    args = p.parse_args(argv)
    if args.hidden < 0:
        p.error(f"--hidden must be >= 0, got {args.hidden}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.apply_engine_options(args)
    tg.manual_seed(args.seed)
    (train_x, train_y), (test_x, test_y) = common.load_mnist(args.data_dir, args.limit)
    model = build_model(args.hidden)
    optimizer = common.make_optimizer(args.optimizer, model.parameters(), args.lr)
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=args.batch_size,
                        shuffle=True, seed=args.seed)
    print(model)
    print(f"training on {len(train_y)} images, testing on {len(test_y)}")

    history = {"train_loss": [], "train_accuracy": [], "test_accuracy": []}
    watch = common.Stopwatch()
    for epoch in range(1, args.epochs + 1):
        loss, accuracy = train_epoch(model, optimizer, loader, epoch, args.epochs, watch)
        test_accuracy = float((common.predict(model, test_x).argmax(1) == test_y).mean())
        for key, value in zip(history, (loss, accuracy, test_accuracy)):
            history[key].append(value)
        print(f"epoch {epoch:2d}: train loss {loss:.4f}, train accuracy {accuracy:.4f}, "
              f"test accuracy {test_accuracy:.4f}")

    out = Path(args.out)
    probs = common.predict(model, test_x)
    predictions = probs.argmax(1)
    first_layer = model[1].weight.data  # (hidden or 10, 784)
    viz.plot_curves(history, out / "curves.png", title="MNIST MLP")
    viz.plot_weight_images(first_layer, out / "weights.png",
                           titles=[str(d) for d in range(10)] if args.hidden == 0 else None)
    viz.plot_confusion_matrix(test_y, predictions, out / "confusion_matrix.png")
    saved = common.save_model(model, test_x[:1], out)
    metrics = {
        "test_accuracy": float((predictions == test_y).mean()),
        "train_loss": history["train_loss"], "train_accuracy": history["train_accuracy"],
        "test_accuracy_per_epoch": history["test_accuracy"],
        "train_seconds": watch.seconds,
        "samples_per_second": args.epochs * len(train_y) / watch.seconds,
        "parameters": sum(p.size for p in model.parameters()),
        "config": vars(args),
    }
    save_json(out / "metrics.json", metrics)
    print(f"test accuracy {metrics['test_accuracy']:.4f}; {metrics['samples_per_second']:.0f} "
          f"samples/s over {watch.seconds:.1f} s of training; figures, {saved} and "
          f"metrics.json in {out}/")
    return metrics


if __name__ == "__main__":
    main()
