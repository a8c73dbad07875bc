"""The competition's ResNet in tinygrad_uu and in PyTorch, side by side.

The same architecture, the same initial weights (copied over), the same batches in the
same order (the same loader: shuffles, dihedral transforms and colour jitter included),
the same loss, AdamW and learning-rate schedule (set per step), the same epochs. Only the
dropout masks differ (each engine draws its own). Reports both test ROC AUCs on the 60
WARWICK leaderboard images (with the example's TTA unless --no-tta), the training
throughput of each (patches/s of the training steps only, measured in this run) and their
ratio; then benchmark W8 (this ResNet's training step, batch 64 of 3x32x32, SGD,
``benchmarks/workloads.py``) for both engines, cross-checked and timed by the harness.

    python benchmarks/compare_resnet_torch.py                    # the example's defaults
    python benchmarks/compare_resnet_torch.py --epochs 2 --limit 10 --json runs/resnet_torch.json
    python benchmarks/compare_resnet_torch.py --w8-only

Every option of examples/competition.py (--epochs, --width, --lr, --no-tta, ...) is
accepted and means the same; --model is resnet, --prime and --data pcam-kaggle are not
supported (this compares engines, not schedules or data).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))
import common  # noqa: E402
import competition  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
from tinygrad_uu import metrics  # noqa: E402
from tinygrad_uu.data import dihedral  # noqa: E402


# ----------------------------------------------------------------------------- PyTorch

def torch_basic_block(torch, cin, cout, stride=1, projection=None):
    """tinygrad_uu.nn.BasicBlock in PyTorch, with the same module names (untrained)."""
    nn = torch.nn
    if projection is None:
        projection = stride != 1 or cin != cout

    class BasicBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout)) if projection else nn.Identity())

        def forward(self, x):
            body = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(body + self.shortcut(x))

    return BasicBlock()


def torch_resnet(torch, model: competition.ResNet, args):
    """The same ResNet in PyTorch, with the same module names, loaded with ``model``'s
    weights (and batch-norm buffers) before any update."""
    nn = torch.nn

    class ResNet(nn.Module):
        def __init__(self, width, stages, blocks, dropout):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU())
            layers, c = [], width
            for _ in range(stages):
                layers.append(torch_basic_block(torch, c, 2 * c, 2))
                layers += [torch_basic_block(torch, 2 * c, 2 * c) for _ in range(blocks - 1)]
                c *= 2
            self.stages = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Conv2d(c, 1, 1)

        def forward(self, x):
            return self.head(self.dropout(self.pool(self.stages(self.stem(x))))).flatten(1)

    stages = sum(1 for m in model.stages if m.stride == 2)
    net = ResNet(args.width, stages, args.blocks, args.dropout)
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    net.load_state_dict(state, strict=True)
    return net


def train_torch(torch, net, args, loader, norm):
    """competition.fit's training, in PyTorch: AdamW, the same per-step schedule."""
    F = torch.nn.functional
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    lr_at = competition.lr_schedule(args.lr, len(loader) * args.epochs)
    seconds, step = 0.0, 0
    net.train()
    for epoch in range(1, args.epochs + 1):
        total = seen = 0
        for images, labels in loader:
            x = torch.from_numpy(norm(images))
            y = torch.from_numpy(labels[:, None].astype(np.float32))
            start = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = F.binary_cross_entropy_with_logits(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds += time.perf_counter() - start
            step += 1
            total += loss.item() * len(x)
            seen += len(x)
        print(f"  torch epoch {epoch}/{args.epochs}: loss {total / seen:.4f}", flush=True)
    return seconds


def torch_logits(torch, net, images, norm, tta, batch_size=competition.EVAL_BATCH):
    net.eval()
    transforms = range(8) if tta else (0,)
    total = np.zeros(len(images))
    with torch.no_grad():
        for k in transforms:
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(norm(dihedral(images[i:i + batch_size], k)))
                total[i:i + batch_size] += net(x).numpy().reshape(-1)
    return total / len(transforms)


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    p.add_argument("--json", default=None, help="write every figure here")
    p.add_argument("--skip-w8", action="store_true", help="leave benchmark W8 out")
    p.add_argument("--w8-only", action="store_true", help="run benchmark W8 only")
    p.add_argument("--w8-repeats", type=int, default=3, help="timed repeats of W8 per engine")
    p.add_argument("-h", "--help", action="store_true")
    own, rest = p.parse_known_args(argv)
    if own.help:
        p.print_help()
        print("\nand the options of examples/competition.py (--threads sets both engines):\n")
        competition.parse_args(["--help"])
    args = competition.parse_args(rest)
    if args.prime or args.data != "warwick" or args.model not in ("resnet", "both"):
        raise SystemExit("compare_resnet_torch: compares the resnet on WARWICK, on one schedule; "
                         "--prime, --data pcam-kaggle and --model simple are not supported")
    args.model = "resnet"
    own.threads = args.threads or 2
    return own, args


def main(argv=None) -> dict:
    own, args = parse_args(argv)
    common.apply_engine_options(args)
    from benchmarks.run import start_parity_run
    torch, results = start_parity_run(vars(args), own.threads)

    if not own.w8_only:
        splits = competition.load_splits(args)
        train, val, test = splits["train"], splits["val"], splits["test"]
        norm = competition.Normalizer(train.images)
        tg.manual_seed(args.seed)
        model = competition.build("resnet", args, 3, train.images.shape[-1])
        net = None
        if torch is not None:
            torch.manual_seed(args.seed)
            torch.set_num_threads(own.threads)
            net = torch_resnet(torch, model, args)                 # before any update

        print(f"tinygrad_uu: {args.epochs} epochs on {len(train)} patches", flush=True)
        watch = common.Stopwatch()
        phases = [("train", competition.make_loader(train, args, args.seed), args.epochs)]
        competition.fit("resnet", model, phases, val, norm, args, watch)
        patches = args.epochs * len(train)
        ours = competition.predict_logits(model, test.images, norm, tta=args.tta)
        results["tinygrad_uu"] = {"test_auc": metrics.roc_auc(ours, test.labels),
                                  "train_seconds": watch.seconds,
                                  "samples_per_second": patches / watch.seconds}
        if torch is not None:
            print(f"PyTorch {torch.__version__} ({own.threads} threads): the same", flush=True)
            # a fresh loader with the same seeds: the same shuffles and the same augmentation
            seconds = train_torch(torch, net, args,
                                  competition.make_loader(train, args, args.seed), norm)
            theirs = torch_logits(torch, net, test.images, norm, args.tta)
            results["torch"] = {"test_auc": metrics.roc_auc(theirs, test.labels),
                                "train_seconds": seconds, "samples_per_second": patches / seconds,
                                "version": torch.__version__}
            results["throughput_ratio_vs_torch"] = (results["tinygrad_uu"]["samples_per_second"]
                                                    / results["torch"]["samples_per_second"])
            results["auc_gap"] = results["tinygrad_uu"]["test_auc"] - results["torch"]["test_auc"]

        print(f"\n| engine | test AUC ({'TTA x8' if args.tta else 'no TTA'}) | training s | "
              f"patches/s |\n|---|---|---|---|")
        for name in ("tinygrad_uu", "torch"):
            if name in results:
                r = results[name]
                print(f"| {name} | {r['test_auc']:.4f} | {r['train_seconds']:.1f} | "
                      f"{r['samples_per_second']:.1f} |")
        if torch is not None:
            print(f"throughput ratio tinygrad_uu / torch: "
                  f"{results['throughput_ratio_vs_torch']:.3f}; "
                  f"AUC difference {results['auc_gap']:+.4f}")

    from benchmarks.run import finish_parity_run
    return finish_parity_run(results, None if own.skip_w8 else "W8",
                             "ResNet training step, batch 64 of 3x32x32, BCE with logits",
                             own.threads, own.w8_repeats, own.json)


if __name__ == "__main__":
    main()
