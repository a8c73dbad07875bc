"""Assignment 3, part 2: segment the glands in WARWICK histology images with a small U-Net.

One training step, as in every example:
    logits = model(images)                  # (N, 1, H, W): one logit per pixel
    loss = F.bce_dice_loss(logits, masks)   # or F.soft_dice_loss, or BCE (--loss)
    optimizer.zero_grad(); loss.backward()  # gradients of every parameter
    optimizer.step()                        # the update

    python examples/segmentation.py               # U-Net 16-32-64, BCE + Dice, Adam, 40 epochs
    python examples/segmentation.py --prime 16    # first a few epochs on 16 images, then on all
    python examples/segmentation.py --loss dice --no-augment --width 8

The U-Net (Ronneberger et al., 2015), at depth 3: the encoder runs two 3x3 convolutions
(each with batch norm and ReLU) at 128x128, max-pools to 64x64 and does it again with
twice the channels, then once more at 32x32; the decoder upsamples x2, concatenates the
encoder's output of the same size (the skip connection: fine detail the pooling threw
away) and convolves back down, twice; a 1x1 convolution gives one logit per pixel.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
import tinygrad_uu.nn.functional as F  # noqa: E402
from tinygrad_uu import kernels, metrics, nn, optim, viz  # noqa: E402
from tinygrad_uu.data import DataLoader, SegmentationAugment, TensorDataset, warwick  # noqa: E402
from tinygrad_uu.files import save_json  # noqa: E402
from tinygrad_uu.debug import GradientMonitor  # noqa: E402

TARGET_DICE = 0.80  # "seconds to reach test Dice 0.80" in metrics.json, with and without --prime
GRID_ROWS = 12      # rows of the worst-to-best grid, evenly spaced in rank (worst and best shown)
OVERLAYS = 12       # test images drawn with their predicted outline

# Adam's lr for this U-Net with batches of 2 and the cosine schedule (measured with 0.002:
# test Dice 0.849 after 20 or 25 epochs, 0.864 after 40); the other optimizers keep
# common.OPTIMIZERS' defaults.
LEARNING_RATES = {"adam": 2e-3, "adamw": 2e-3}

LOSSES = {
    "bce": F.binary_cross_entropy_with_logits,
    "dice": F.soft_dice_loss,
    "bce+dice": F.bce_dice_loss,
}


# ----------------------------------------------------------------------------- the model

def conv_block(cin: int, cout: int, batch_norm: bool = True) -> nn.Sequential:
    """Two (3x3 convolution, batch norm, ReLU); padding 1 keeps the image size. With batch
    norm the convolution needs no bias: the norm's own shift replaces it."""
    layers = []
    for c in (cin, cout):
        layers.append(nn.Conv2d(c, cout, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net with ``depth`` levels of ``width * 2**level`` channels (16-32-64 by default).

    ``up``: "nearest" or "bilinear" (a fixed nn.Upsample x2) or "transpose" (a learned
    nn.ConvTranspose2d, kernel 2, stride 2). Images must have sides divisible by
    2**(depth - 1). Output: (N, 1, H, W) logits (apply a sigmoid for probabilities).
    """

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 3,
                 batch_norm: bool = True, up: str = "nearest"):
        super().__init__()
        chans = [width * 2 ** level for level in range(depth)]
        self.depth = depth
        self.down = nn.ModuleList([conv_block(cin, cout, batch_norm)
                                   for cin, cout in zip([in_channels] + chans[:-1], chans)])
        self.pool = nn.MaxPool2d(2)
        # decoder, from the bottom up: level i takes chans[i + 1] upsampled + chans[i] skipped
        self.ups = nn.ModuleList([nn.ConvTranspose2d(c, c, 2, stride=2) if up == "transpose"
                                  else nn.Upsample(scale_factor=2, mode=up)
                                  for c in reversed(chans[1:])])
        self.up_blocks = nn.ModuleList([conv_block(chans[i + 1] + chans[i], chans[i], batch_norm)
                                        for i in reversed(range(depth - 1))])
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        step = 2 ** (self.depth - 1)
        if x.ndim != 4 or x.shape[2] % step or x.shape[3] % step:
            raise ValueError(f"UNet: expects (N, C, H, W) images with H and W divisible by "
                             f"{step} (depth {self.depth}), got shape {x.shape}")
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()                                   # the bottom of the U
        for up, block in zip(self.ups, self.up_blocks):
            x = block(tg.cat([up(x), skips.pop()], axis=1))
        return self.head(x)


# ----------------------------------------------------------------------------- data

def load_warwick(data_dir=None, limit: int | None = None):
    """((train images, masks), (test images, masks)): float32 (N, 3, H, W) in [0, 1] and
    (N, 1, H, W) in {0, 1}; ``limit`` keeps the first training images only."""
    data = warwick(data_dir)
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
    return (train_x, train_y), (test_x, test_y)


@tg.no_grad()
def predict(model, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Foreground probabilities (N, 1, H, W), in batches, with the model in eval mode
    (batch norm uses its running statistics)."""
    was_training = model.training
    model.eval()
    probs = [model(tg.tensor(images[i:i + batch_size])).sigmoid().data
             for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return np.concatenate(probs)


# ----------------------------------------------------------------------------- training

def train_epoch(model, optimizer, loss_fn, loader, desc, watch):
    """One pass over ``loader``; returns (mean loss, mean Dice of the training batches)."""
    total_loss = total_dice = seen = 0.0
    bar = tqdm(loader, desc=desc, leave=False, unit="batch")
    for images, masks in bar:
        with watch:
            logits = model(tg.tensor(images))
            loss = loss_fn(logits, masks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        n = len(images)
        total_loss += loss.item() * n
        total_dice += metrics.dice(logits.data, masks, from_logits=True, reduction="none").sum()
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", dice=f"{total_dice / seen:.3f}")
    return total_loss / seen, total_dice / seen


def make_loader(images, masks, args, seed):
    augment = None
    if args.augment or args.crop:                      # joint flips/turns/crops of image and mask
        augment = SegmentationAugment(flips=args.augment, rot90=args.augment,
                                      crop=args.crop or None, seed=seed)
    return DataLoader(TensorDataset(images, masks), batch_size=args.batch_size, shuffle=True,
                      seed=seed, transform=augment)


def fit(model, optimizer, phases, test_x, test_y, args, watch, stop_at_target=False):
    """Train through ``phases`` [(name, loader, epochs)], testing after every epoch.
    The last phase (training on every image) follows ``--schedule``; priming keeps the lr.

    Returns the history (one entry per epoch) and the training seconds at the end of the
    first epoch whose test Dice reached TARGET_DICE (None if none did).
    """
    loss_fn = LOSSES[args.loss]
    history = {"train_loss": [], "train_dice": [], "test_dice": [], "train_seconds": [],
               "phase": [], "lr": []}
    reached = None
    total_epochs = sum(epochs for _, _, epochs in phases)
    epoch = 0
    for number, (name, loader, epochs) in enumerate(phases):
        scheduler = None
        if number == len(phases) - 1 and args.schedule == "cosine":
            scheduler = optim.CosineAnnealingLR(optimizer, T_max=epochs)  # lr -> 0 at the end
        for _ in range(epochs):
            epoch += 1
            label = f"epoch {epoch}/{total_epochs}" + (f" ({name})" if name != "train" else "")
            lr = optimizer.param_groups[0]["lr"]
            loss, train_dice = train_epoch(model, optimizer, loss_fn, loader, label, watch)
            if scheduler is not None:
                scheduler.step()
            test_dice = metrics.dice(predict(model, test_x), test_y)
            for key, value in zip(history, (loss, train_dice, test_dice, watch.seconds, name, lr)):
                history[key].append(value)
            if reached is None and test_dice >= TARGET_DICE:
                reached = watch.seconds
            print(f"{label}: loss {loss:.4f}, train Dice {train_dice:.4f}, test Dice "
                  f"{test_dice:.4f}  [lr {lr:.2g}, {watch.seconds:.0f} s of training]", flush=True)
            if stop_at_target and reached is not None:
                return history, reached
    return history, reached


# ----------------------------------------------------------------------------- options

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_options(p, out="runs/segmentation", epochs=40, batch_size=2,
                              optimizer="adam")
    common.update_options(
        p, data_dir=dict(help="data root holding warwick/ (or warwick.zip) (if not given: "
                              "$TINYGRAD_UU_DATA or ~/.cache/tinygrad_uu)"),
        lr=dict(help="learning rate (if not given: " + ", ".join(
            f"{k} {LEARNING_RATES.get(k, v[1]):g}" for k, v in common.OPTIMIZERS.items()) + ")"))
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random flips and 90-degree turns of image and mask together")
    p.add_argument("--crop", type=common.non_negative_int, default=0,
                   help="train on random CROPxCROP windows (0: whole images); testing always "
                        "uses whole images, which a fully convolutional net takes as they are")
    p.add_argument("--loss", choices=sorted(LOSSES), default="bce+dice")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning rate over the epochs: from --lr down to 0 along half a cosine "
                        "(a steady final model), or constant")
    p.add_argument("--width", type=common.positive_int, default=16,
                   help="channels of the first level; they double at each level down")
    p.add_argument("--depth", type=common.positive_int, default=3, help="levels of the U")
    p.add_argument("--up", choices=("nearest", "bilinear", "transpose"), default="nearest",
                   help="decoder upsampling: fixed (nearest, bilinear) or learned (transpose)")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--prime", type=common.non_negative_int, default=0, metavar="N",
                   help="priming: first train on N training images for --prime-epochs, then "
                        "on all; also trains an unprimed copy from the same initial weights to "
                        f"compare the seconds each needs to reach test Dice {TARGET_DICE}")
    p.add_argument("--prime-epochs", type=common.positive_int, default=5,
                   help="epochs over the N priming images")
    common.add_engine_options(p)
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = LEARNING_RATES.get(args.optimizer, common.OPTIMIZERS[args.optimizer][1])
    if args.crop and args.crop % 2 ** (args.depth - 1):
        p.error(f"--crop must be divisible by {2 ** (args.depth - 1)} for --depth {args.depth}, "
                f"got {args.crop}")
    if args.prime and args.limit and args.prime > args.limit:
        p.error(f"--prime {args.prime} exceeds the {args.limit} training images of --limit")
    return args


# ----------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    args = parse_args(argv)
    common.apply_engine_options(args)
    load_before = os.getloadavg()
    tg.manual_seed(args.seed)
    (train_x, train_y), (test_x, test_y) = load_warwick(args.data_dir, args.limit)
    if args.prime > len(train_x):
        raise SystemExit(f"--prime {args.prime}: there are only {len(train_x)} training images")
    if args.crop and args.crop > min(train_x.shape[2:]):
        raise SystemExit(f"--crop {args.crop} is larger than the {train_x.shape[2]}x"
                         f"{train_x.shape[3]} images")
    model = UNet(train_x.shape[1], args.width, args.depth, args.batch_norm, args.up)
    initial = model.state_dict()            # copies: the unprimed comparison starts here
    optimizer = common.make_optimizer(args.optimizer, model.parameters(), args.lr)
    monitor = GradientMonitor(model, every=5, optimizer=optimizer)  # for grad_flow.png
    print(model)
    print(f"{sum(p.size for p in model.parameters())} parameters; training on {len(train_x)} "
          f"images, testing on {len(test_x)}; kernels: {kernels.get_backend()}; load average "
          f"{load_before[0]:.2f} on {os.cpu_count()} cores")

    phases = [("train", make_loader(train_x, train_y, args, args.seed), args.epochs)]
    priming = baseline_reached = None
    if args.prime:
        chosen = np.random.default_rng(args.seed).permutation(len(train_x))[:args.prime]
        phases.insert(0, (f"prime {args.prime}", make_loader(train_x[chosen], train_y[chosen],
                                                             args, args.seed + 1),
                          args.prime_epochs))
    watch = common.Stopwatch()
    started = time.perf_counter()
    history, reached = fit(model, optimizer, phases, test_x, test_y, args, watch)
    monitor.remove()
    if args.prime:
        print(f"\nthe same U-Net from the same initial weights, without priming (stops at test "
              f"Dice {TARGET_DICE}, at most {args.epochs} epochs):")
        baseline = UNet(train_x.shape[1], args.width, args.depth, args.batch_norm, args.up)
        baseline.load_state_dict(initial)
        baseline_watch = common.Stopwatch()
        baseline_history, baseline_reached = fit(
            baseline, common.make_optimizer(args.optimizer, baseline.parameters(), args.lr),
            [("train", make_loader(train_x, train_y, args, args.seed), args.epochs)],
            test_x, test_y, args, baseline_watch, stop_at_target=True)
        priming = {"images": args.prime, "epochs": args.prime_epochs,
                   "image_indices": sorted(int(i) for i in chosen),
                   "target_dice": TARGET_DICE,   # keys as in mnist_cnn.py: seconds_to_<percent>
                   f"seconds_to_{100 * TARGET_DICE:g}": {"with_priming": reached,
                                                       "without_priming": baseline_reached},
                   "unprimed_test_dice": baseline_history["test_dice"],
                   "unprimed_train_seconds": baseline_history["train_seconds"]}
    wall = time.perf_counter() - started

    out = Path(args.out)
    probs = predict(model, test_x)
    scores = metrics.segmentation_scores(probs, test_y)
    viz.plot_curves({k: history[k] for k in ("train_loss", "train_dice", "test_dice")},
                    out / "curves.png", title=f"U-Net on WARWICK ({args.loss} loss)")
    viz.plot_segmentation_grid(test_x, test_y, probs > 0.5, scores["dice"],
                               out / "worst_to_best.png", max_rows=GRID_ROWS)
    shown = slice(0, OVERLAYS)
    viz.plot_overlays(test_x[shown], probs[shown], out / "overlays.png", masks=test_y[shown])
    viz.plot_filters(model.down[0][0], out / "filters.png")       # the first conv's kernels
    viz.plot_feature_maps(model, model.down[0], test_x[0], out / "feature_maps.png")
    viz.plot_grad_flow(monitor, out / "grad_flow.png")
    saved = common.save_model(model, test_x[:1], out)
    images_trained = sum(len(loader.dataset) * epochs for _, loader, epochs in phases)
    metrics_out = {
        "test_dice": float(scores["dice"].mean()),
        "test_iou": float(scores["iou"].mean()),
        "test_pixel_accuracy": float(scores["pixel_accuracy"].mean()),
        "test_dice_per_image": scores["dice"].tolist(),
        "curves": history,
        "train_seconds": watch.seconds,
        "wall_seconds": wall,
        "samples_per_second": images_trained / watch.seconds,
        "target_dice": TARGET_DICE,
        "seconds_to_target": reached,
        "priming": priming,
        "parameters": sum(p.size for p in model.parameters()),
        "machine": {"cpus": os.cpu_count(), "load_average_start": load_before,
                    "load_average_end": os.getloadavg(), "kernels": kernels.get_backend(),
                    "threads": tg.get_num_threads()},
        "config": vars(args),
    }
    save_json(out / "metrics.json", metrics_out)
    def when(seconds):
        return "never" if seconds is None else f"after {seconds:.0f} s"
    print(f"test Dice {metrics_out['test_dice']:.4f}, IoU {metrics_out['test_iou']:.4f}, pixel "
          f"accuracy {metrics_out['test_pixel_accuracy']:.4f}; "
          f"{metrics_out['samples_per_second']:.2f} images/s over {watch.seconds:.0f} s of "
          f"training; test Dice {TARGET_DICE} reached {when(reached)}"
          + (f" (without priming: {when(baseline_reached)})" if args.prime else "")
          + f"; load average {os.getloadavg()[0]:.2f}; figures, {saved} and metrics.json "
          f"in {out}/")
    return metrics_out


if __name__ == "__main__":
    main()
