"""Parity and speed of the main job against PyTorch: the same MLP, the same initial
weights, the same batches in the same order, the same optimizer and hyper-parameters.

Reports both test accuracies (they should agree within 0.5 points) and the ratio of
training throughput (samples/s of the training steps only, measured in this run).

    python benchmarks/compare_mnist_mlp.py                 # the example's defaults
    python benchmarks/compare_mnist_mlp.py --epochs 2 --json runs/compare_mlp.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import common  # noqa: E402
import mnist_mlp  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
import tinygrad_uu.nn.functional as F  # noqa: E402
from tinygrad_uu.data import DataLoader, TensorDataset  # noqa: E402


def train_tinygrad_uu(model, optimizer, loader, epochs):
    seconds = 0.0
    for _ in range(epochs):
        for images, labels in loader:
            start = time.perf_counter()
            loss = F.cross_entropy(model(tg.tensor(images)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds += time.perf_counter() - start
    return seconds


def torch_copy(torch, model, hidden):
    """The same architecture in PyTorch, starting from our model's weights."""
    layers = [torch.nn.Flatten(), torch.nn.Linear(784, hidden or 10)]
    if hidden:
        layers += [torch.nn.ReLU(), torch.nn.Linear(hidden, 10)]
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for (name, p), mine in zip(net.named_parameters(), model.parameters()):
            p.copy_(torch.from_numpy(mine.data.copy()))
    return net


def train_torch(torch, net, optimizer, loader, epochs):
    seconds = 0.0
    for _ in range(epochs):
        for images, labels in loader:
            x, y = torch.from_numpy(images), torch.from_numpy(labels)
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds += time.perf_counter() - start
    return seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--optimizer", choices=sorted(common.OPTIMIZERS), default="adam")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2,
                   help="threads for both engines: tinygrad_uu.set_num_threads, torch.set_num_threads")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    tg.set_num_threads(args.threads)  # the same threads for both engines

    (train_x, train_y), (test_x, test_y) = common.load_mnist(args.data_dir, args.limit)
    tg.manual_seed(args.seed)
    model = mnist_mlp.build_model(args.hidden)
    try:
        import torch
    except ImportError:
        torch = None
        print("torch is not installed: measuring tinygrad_uu alone (pip install -e '.[peers]')")
    net = torch_copy(torch, model, args.hidden) if torch else None  # before any update

    def loader():
        return DataLoader(TensorDataset(train_x, train_y), batch_size=args.batch_size,
                          shuffle=True, seed=args.seed)

    results = {}
    optimizer = common.make_optimizer(args.optimizer, model.parameters(), args.lr)
    seconds = train_tinygrad_uu(model, optimizer, loader(), args.epochs)
    accuracy = float((common.predict(model, test_x).argmax(1) == test_y).mean())
    results["tinygrad_uu"] = {"test_accuracy": accuracy, "train_seconds": seconds,
                              "samples_per_second": args.epochs * len(train_y) / seconds}
    if torch:
        torch.manual_seed(args.seed)
        torch.set_num_threads(args.threads)
        torch_optimizer = common.make_torch_optimizer(torch, args.optimizer, net.parameters(), args.lr)
        seconds = train_torch(torch, net, torch_optimizer, loader(), args.epochs)
        with torch.no_grad():
            logits = net(torch.from_numpy(test_x)).numpy()
        results["torch"] = {"test_accuracy": float((logits.argmax(1) == test_y).mean()),
                            "train_seconds": seconds,
                            "samples_per_second": args.epochs * len(train_y) / seconds,
                            "version": torch.__version__, "threads": args.threads}

    print("| engine | test accuracy | training s | samples/s |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['test_accuracy']:.4f} | {r['train_seconds']:.1f} | "
              f"{r['samples_per_second']:.0f} |")
    if torch:
        ratio = results["tinygrad_uu"]["samples_per_second"] / results["torch"]["samples_per_second"]
        gap = abs(results["tinygrad_uu"]["test_accuracy"] - results["torch"]["test_accuracy"])
        results["throughput_ratio_vs_torch"] = ratio
        results["accuracy_gap_points"] = 100 * gap
        print(f"throughput ratio tinygrad_uu / torch: {ratio:.2f}x; accuracy gap "
              f"{100 * gap:.2f} points ({'within' if gap <= 0.005 else 'OUTSIDE'} 0.5)")
    results["config"] = vars(args)
    if args.json:
        from tinygrad_uu.files import save_json
        save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
