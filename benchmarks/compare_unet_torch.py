"""The segmentation example's U-Net in tinygrad_uu and in PyTorch, side by side.

The same architecture, the same initial weights (copied over), the same batches in the
same order (the same loader, augmentation included), the same loss, optimizer and epochs.

Reports both test Dice scores on the 60 WARWICK test images, the training throughput of
each (images/s of the training steps only, measured in this run) and their ratio; then
benchmark W5 (a smaller U-Net training step, batch 8 of 3x128x128, BCE with logits,
``benchmarks/workloads.py``) for both engines, cross-checked and timed by the harness.

    python benchmarks/compare_unet_torch.py                        # the example's defaults
    python benchmarks/compare_unet_torch.py --epochs 3 --limit 16 --json runs/unet_torch.json
    python benchmarks/compare_unet_torch.py --w5-only

Every option of examples/segmentation.py (--epochs, --width, --loss, --crop, ...) is
accepted and means the same; --prime is not (this compares engines, not schedules).
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
import segmentation  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
from tinygrad_uu import metrics, optim  # noqa: E402


# ----------------------------------------------------------------------------- PyTorch

def torch_unet(torch, model: segmentation.UNet, args):
    """The same U-Net in PyTorch, with the same module names, loaded with ``model``'s
    weights (and batch-norm buffers) before any update."""
    nn = torch.nn

    def conv_block(cin, cout):
        layers = []
        for c in (cin, cout):
            layers.append(nn.Conv2d(c, cout, 3, padding=1, bias=not args.batch_norm))
            if args.batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    class UNet(nn.Module):
        def __init__(self, in_channels, width, depth):
            super().__init__()
            chans = [width * 2 ** level for level in range(depth)]
            self.down = nn.ModuleList([conv_block(cin, cout) for cin, cout in
                                       zip([in_channels] + chans[:-1], chans)])
            self.pool = nn.MaxPool2d(2)
            self.ups = nn.ModuleList([nn.ConvTranspose2d(c, c, 2, stride=2)
                                      if args.up == "transpose"
                                      else nn.Upsample(scale_factor=2, mode=args.up)
                                      for c in reversed(chans[1:])])
            self.up_blocks = nn.ModuleList([conv_block(chans[i + 1] + chans[i], chans[i])
                                            for i in reversed(range(depth - 1))])
            self.head = nn.Conv2d(width, 1, 1)

        def forward(self, x):
            skips = []
            for level, block in enumerate(self.down):
                x = block(x if level == 0 else self.pool(x))
                skips.append(x)
            x = skips.pop()
            for up, block in zip(self.ups, self.up_blocks):
                x = block(torch.cat([up(x), skips.pop()], dim=1))
            return self.head(x)

    net = UNet(model.down[0][0].in_channels, args.width, args.depth)
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    net.load_state_dict(state, strict=True)
    return net


def torch_loss(torch, name):
    F = torch.nn.functional

    def dice(logits, target):
        p, dims = torch.sigmoid(logits), tuple(range(1, logits.ndim))
        dice = (2 * (p * target).sum(dims) + 1.0) / (p.sum(dims) + target.sum(dims) + 1.0)
        return (1 - dice).mean()
    return {"bce": F.binary_cross_entropy_with_logits, "dice": dice,
            "bce+dice": lambda x, t: F.binary_cross_entropy_with_logits(x, t) + dice(x, t)}[name]


def train_torch(torch, net, args, loader):
    optimizer = common.make_torch_optimizer(torch, args.optimizer, list(net.parameters()), args.lr)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
                 if args.schedule == "cosine" else None)
    loss_fn, seconds = torch_loss(torch, args.loss), 0.0
    net.train()
    for epoch in range(1, args.epochs + 1):
        total = seen = 0
        for images, masks in loader:
            x, y = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(
                np.ascontiguousarray(masks))
            start = time.perf_counter()
            loss = loss_fn(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds += time.perf_counter() - start
            total += loss.item() * len(x)
            seen += len(x)
        if scheduler is not None:
            scheduler.step()
        print(f"  torch epoch {epoch}/{args.epochs}: loss {total / seen:.4f}", flush=True)
    return seconds


def torch_predict(torch, net, images, batch_size=8):
    net.eval()
    with torch.no_grad():
        return np.concatenate([torch.sigmoid(net(torch.from_numpy(images[i:i + batch_size])))
                               .numpy() for i in range(0, len(images), batch_size)])


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    p.add_argument("--threads", type=int, default=2, help="threads for both engines: tinygrad_uu.set_num_threads and "
                   "torch.set_num_threads (default 2)")
    p.add_argument("--json", default=None, help="write every figure here")
    p.add_argument("--skip-w5", action="store_true", help="leave benchmark W5 out")
    p.add_argument("--w5-only", action="store_true", help="run benchmark W5 only")
    p.add_argument("--w5-repeats", type=int, default=3, help="timed repeats of W5 per engine")
    p.add_argument("-h", "--help", action="store_true")
    own, rest = p.parse_known_args(argv)
    if own.help:
        p.print_help()
        print("\nand the options of examples/segmentation.py:\n")
        segmentation.parse_args(["--help"])
    args = segmentation.parse_args(rest)
    if args.prime:
        raise SystemExit("compare_unet_torch: --prime is not supported here (it compares the "
                         "engines on one schedule); run examples/segmentation.py --prime")
    return own, args


def main(argv=None) -> dict:
    own, args = parse_args(argv)
    tg.set_num_threads(own.threads)  # the same threads for both engines
    from benchmarks.run import start_parity_run
    torch, results = start_parity_run(vars(args), own.threads)

    if not own.w5_only:
        (train_x, train_y), (test_x, test_y) = segmentation.load_warwick(args.data_dir, args.limit)
        tg.manual_seed(args.seed)
        model = segmentation.UNet(train_x.shape[1], args.width, args.depth, args.batch_norm,
                                  args.up)
        net = None
        if torch is not None:
            torch.manual_seed(args.seed)
            torch.set_num_threads(own.threads)
            net = torch_unet(torch, model, args)                 # before any update

        print(f"tinygrad_uu: {args.epochs} epochs on {len(train_x)} images", flush=True)
        optimizer = common.make_optimizer(args.optimizer, model.parameters(), args.lr)
        scheduler = (optim.CosineAnnealingLR(optimizer, T_max=args.epochs)
                     if args.schedule == "cosine" else None)
        watch = common.Stopwatch()
        loss_fn = segmentation.LOSSES[args.loss]
        loader = segmentation.make_loader(train_x, train_y, args, args.seed)
        for epoch in range(1, args.epochs + 1):
            loss, _ = segmentation.train_epoch(model, optimizer, loss_fn, loader,
                                               f"epoch {epoch}/{args.epochs}", watch)
            if scheduler is not None:
                scheduler.step()
            print(f"  tinygrad_uu epoch {epoch}/{args.epochs}: loss {loss:.4f}", flush=True)
        images = args.epochs * len(train_x)
        results["tinygrad_uu"] = {
            "test_dice": metrics.dice(segmentation.predict(model, test_x), test_y),
            "train_seconds": watch.seconds, "samples_per_second": images / watch.seconds}
        if torch is not None:
            print(f"PyTorch {torch.__version__} ({own.threads} threads): the same", flush=True)
            # a fresh loader with the same seeds: the same shuffles and the same augmentation
            seconds = train_torch(torch, net, args,
                                  segmentation.make_loader(train_x, train_y, args, args.seed))
            probs = torch_predict(torch, net, test_x)
            results["torch"] = {"test_dice": metrics.dice(probs, test_y),
                                "train_seconds": seconds, "samples_per_second": images / seconds,
                                "version": torch.__version__}
            results["throughput_ratio_vs_torch"] = (results["tinygrad_uu"]["samples_per_second"]
                                                    / results["torch"]["samples_per_second"])
            results["dice_gap"] = (results["tinygrad_uu"]["test_dice"]
                                   - results["torch"]["test_dice"])

        print("\n| engine | test Dice | training s | images/s |\n|---|---|---|---|")
        for name in ("tinygrad_uu", "torch"):
            if name in results:
                r = results[name]
                print(f"| {name} | {r['test_dice']:.4f} | {r['train_seconds']:.1f} | "
                      f"{r['samples_per_second']:.2f} |")
        if torch is not None:
            print(f"throughput ratio tinygrad_uu / torch: "
                  f"{results['throughput_ratio_vs_torch']:.3f}; "
                  f"Dice difference {results['dice_gap']:+.4f}")

    from benchmarks.run import finish_parity_run
    return finish_parity_run(results, None if own.skip_w5 else "W5",
                             "U-Net training step, batch 8 of 3x128x128, BCE with logits",
                             own.threads, own.w5_repeats, own.json)


if __name__ == "__main__":
    main()
