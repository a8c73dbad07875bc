"""Assignment 5, the class competition: is there gland (tumour, in the real contest) in the
centre of this histology patch? A simple CNN against a fully convolutional ResNet, scored
by ROC AUC on a hidden leaderboard set, with submission files in Kaggle's format.

The protocol of Kaggle's *Histopathologic Cancer Detection* (PatchCamelyon: a 96x96 patch
is positive when its central 32x32 region holds tumour; the metric is ROC AUC; a
submission is a CSV ``id,label`` with one probability per patch), run on WARWICK: 32x32
patches on a stride-8 grid, positive when more than half of the central 8x8 pixels are
gland, split by image (70 training, 15 validation images; the 60 test images are the
leaderboard). With ``--data pcam-kaggle --data-dir DIR`` it reads the real competition's
folder instead (train/<id>.tif, train_labels.csv, test/<id>.tif).

One training step, as in every example:
    logits = model(images)                                  # (N, 1): one logit per patch
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    optimizer.zero_grad(); loss.backward(); optimizer.step()

    python examples/competition.py                     # both models, TTA, figures, CSVs
    python examples/competition.py --model resnet --epochs 6 --no-tta
    python examples/competition.py --prime 10           # prime on 10 images' patches first
    python examples/competition.py --data pcam-kaggle --data-dir ~/pcam --limit 20000
"""
from __future__ import annotations

import argparse
import math
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
from tinygrad_uu import kernels, metrics, metrics_plots, nn, viz  # noqa: E402
from tinygrad_uu.data import (DataLoader, PatchAugment, TensorDataset, class_balance,  # noqa: E402
                              dihedral, pcam_kaggle, to_float, warwick_patches)
from tinygrad_uu.files import atomic_path, save_json  # noqa: E402

MODELS = ("simple", "resnet")
TARGET_AUC = 0.90    # the leaderboard target; --prime reports the seconds to this val AUC
EVAL_BATCH = 512
MISTAKES = 8         # most confident false positives and false negatives shown per model


# ----------------------------------------------------------------------------- the models

def build_simple(in_channels: int = 3, channels=(32, 64, 128), patch_size: int = 32,
                 hidden: int = 64, dropout: float = 0.3) -> nn.Sequential:
    """A plain CNN: blocks of conv 3x3 -> BN -> ReLU -> max pool 2x2 (each halves the
    patch), then Flatten -> Dropout -> Linear -> ReLU -> Linear to one logit. The
    Linear sees the flattened maps, so it only takes ``patch_size`` patches."""
    layers, c_in, side = [], in_channels, patch_size
    for c_out in channels:
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(), nn.MaxPool2d(2)]
        c_in, side = c_out, side // 2
    layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * side * side, hidden),
               nn.ReLU(), nn.Linear(hidden, 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """Fully convolutional: a stem (conv 3x3 -> BN -> ReLU), residual stages that each halve
    the resolution (``nn.BasicBlock`` with a strided conv and a 1x1 projection shortcut,
    then ``blocks_per_stage - 1`` blocks that keep it), global average pooling, Dropout, and
    a 1x1 convolution to one logit. No Linear sees the flattened maps, so any image size
    works: a larger image gives the mean of ``logit_map``, one logit per position."""

    def __init__(self, in_channels: int = 3, width: int = 16, stages: int = 3,
                 blocks_per_stage: int = 1, dropout: float = 0.3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks, c = [], width
        for _ in range(stages):
            blocks.append(nn.BasicBlock(c, 2 * c, stride=2))
            blocks += [nn.BasicBlock(2 * c, 2 * c) for _ in range(blocks_per_stage - 1)]
            c *= 2
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Conv2d(c, 1, 1)

    def features(self, x):
        return self.stages(self.stem(x))

    def forward(self, x):
        return self.head(self.dropout(self.pool(self.features(x)))).flatten(1)   # (N, 1)

    def logit_map(self, x):
        """(N, 1, h, w): the head at every position of the last feature map. The head is
        affine and the pooling a mean, so (in eval mode) forward = the mean of this map."""
        return self.head(self.features(x))


def build_resnet(in_channels: int = 3, width: int = 16, stages: int = 3,
                 blocks_per_stage: int = 1, dropout: float = 0.3) -> ResNet:
    return ResNet(in_channels, width, stages, blocks_per_stage, dropout)


def build(name: str, args, in_channels: int, patch_size: int) -> nn.Module:
    if name == "simple":
        return build_simple(in_channels, patch_size=patch_size, dropout=args.dropout)
    return build_resnet(in_channels, args.width, dropout=args.dropout,
                        blocks_per_stage=args.blocks)


# ----------------------------------------------------------------------------- data

def load_splits(args) -> dict:
    """{"train", "val", "test"} PatchSets, from WARWICK or the Kaggle folder."""
    if args.data == "pcam-kaggle":
        if args.data_dir is None:
            raise SystemExit("--data pcam-kaggle needs --data-dir DIR (the folder with train/, "
                             "train_labels.csv and test/)")
        return pcam_kaggle(args.data_dir, val_fraction=0.1, seed=args.seed, limit=args.limit)
    splits = warwick_patches(args.data_dir, patch_size=args.patch_size, stride=args.stride,
                             val_images=args.val_images, seed=args.seed)
    if args.limit is not None:                       # the first N training images only
        keep = np.isin(splits["train"].groups, np.unique(splits["train"].groups)[:args.limit])
        splits["train"] = splits["train"].subset(np.flatnonzero(keep))
    return splits


class Normalizer:
    """x -> (x - mean) / std per channel, with the training patches' statistics (a
    channel that is constant, like WARWICK's empty blue one, stays 0)."""

    def __init__(self, images: np.ndarray):
        x = to_float(images[:: max(1, len(images) // 2000)])
        self.mean = x.mean(axis=(0, 2, 3), keepdims=True)[0]
        self.std = np.maximum(x.std(axis=(0, 2, 3), keepdims=True)[0], 1e-3)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((to_float(x) - self.mean) / self.std).astype(np.float32)


@tg.no_grad()
def predict_logits(model, images: np.ndarray, norm: Normalizer, tta: bool = True,
                   batch_size: int = EVAL_BATCH, per_transform: bool = False) -> np.ndarray:
    """(N,) logits in eval mode; with ``tta`` the mean logit over the 8 dihedral
    transforms of each patch (test-time augmentation). ``per_transform``: the (T, N)
    logits of each transform instead (row 0: the patches as they are)."""
    was_training = model.training
    model.eval()
    transforms = range(8) if tta else (0,)
    logits = np.zeros((len(transforms), len(images)), np.float64)
    for k in transforms:
        for i in range(0, len(images), batch_size):
            batch = norm(dihedral(images[i:i + batch_size], k))
            logits[k, i:i + batch_size] = model(tg.tensor(batch)).data.reshape(-1)
    model.train(was_training)
    return logits if per_transform else logits.mean(axis=0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


# ----------------------------------------------------------------------------- training

def train_epoch(model, optimizer, loader, norm, lr_at, step0, desc, watch):
    """One pass; the lr follows ``lr_at(step)``. Returns (mean loss, steps taken)."""
    total = seen = 0.0
    bar = tqdm(loader, desc=desc, leave=False, unit="batch")
    for step, (images, labels) in enumerate(bar, step0):
        with watch:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            logits = model(tg.tensor(norm(images)))
            loss = F.binary_cross_entropy_with_logits(logits, labels[:, None].astype(np.float32))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        total += loss.item() * len(labels)
        seen += len(labels)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total / seen, len(loader)


def make_loader(patches, args, seed):
    augment = PatchAugment(dihedral=args.augment, jitter=args.jitter, seed=seed)
    return DataLoader(TensorDataset(patches.images, patches.labels), batch_size=args.batch_size,
                      shuffle=True, seed=seed, transform=augment)


def lr_schedule(peak: float, total_steps: int):
    """lr(step): a linear warm-up over the first min(100, total / 10) steps, then half a
    cosine from ``peak`` down to 0 at the last step."""
    warmup = max(1, min(100, total_steps // 10))

    def lr_at(step):
        if step < warmup:
            return peak * (step + 1) / warmup
        return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
    return lr_at


def fit(name, model, phases, val, norm, args, watch, stop_at_target=False):
    """Train through ``phases`` [(label, loader, epochs)]: AdamW, lr warmed up over the
    first 100 steps, then half a cosine down to 0 over all steps. After each epoch: the
    validation loss and AUC (no TTA). Returns (history, seconds to val AUC TARGET_AUC)."""
    optimizer = tg.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    lr_at = lr_schedule(args.lr, sum(len(loader) * epochs for _, loader, epochs in phases))
    history = {"train_loss": [], "val_loss": [], "val_auc": [], "train_seconds": [], "phase": []}
    reached, step, epoch = None, 0, 0
    n_epochs = sum(e for _, _, e in phases)
    for label, loader, epochs in phases:
        for _ in range(epochs):
            epoch += 1
            desc = f"{name} epoch {epoch}/{n_epochs}" + (f" ({label})" if label != "train" else "")
            loss, steps = train_epoch(model, optimizer, loader, norm, lr_at, step, desc, watch)
            step += steps
            logits = predict_logits(model, val.images, norm, tta=False)
            val_loss = float(np.mean(np.logaddexp(0, logits) - val.labels * logits))
            val_auc = metrics.roc_auc(logits, val.labels) if len(val) else float("nan")
            for key, value in zip(history, (loss, val_loss, val_auc, watch.seconds, label)):
                history[key].append(value)
            if reached is None and val_auc >= TARGET_AUC:
                reached = watch.seconds
            print(f"{desc}: loss {loss:.4f}, val loss {val_loss:.4f}, val AUC {val_auc:.4f}  "
                  f"[{watch.seconds:.0f} s of training]", flush=True)
            if stop_at_target and reached is not None:
                return history, reached
    return history, reached


# ----------------------------------------------------------------------------- outputs

def write_submission(path, ids, probabilities) -> Path:
    """The competition's format: a header ``id,label``, then one probability per patch."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("id,label\n")
            f.writelines(f"{i},{p:.6f}\n" for i, p in zip(ids, probabilities))
    return Path(path)


def plot_mistakes(results: dict, scored, path) -> Path:
    """The most confident false positives (label 0, highest probability) and false
    negatives (label 1, lowest) of each model, with their probability and patch id."""
    images, titles = [], []
    for name, r in results.items():
        p = sigmoid(r["scored_logits"])
        for kind, candidates, order in (("FP", scored.labels == 0, -p),
                                        ("FN", scored.labels == 1, p)):
            chosen = [i for i in np.argsort(order, kind="stable") if candidates[i]][:MISTAKES]
            for i in chosen:
                images.append(scored.images[i])
                titles.append(f"{name} {kind} p={p[i]:.2f}\n{scored.ids[i]}")
    return viz.plot_image_grid(np.stack(images), path, titles=titles, ncols=MISTAKES)


# ----------------------------------------------------------------------------- options

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_options(p, out="runs/competition", epochs=8, batch_size=64,
                              optimizer="adamw")
    common.update_options(
        p, data_dir=dict(help="WARWICK: data root holding warwick/ (default $TINYGRAD_UU_DATA or "
                              "~/.cache/tinygrad_uu); pcam-kaggle: the competition's folder"),
        limit=dict(help="train on the patches of the first N training images (pcam: N patches)"),
        optimizer=dict(choices=["adamw"], help="AdamW with a warmed-up cosine schedule"),
        lr=dict(default=2e-3, help="peak learning rate"))
    common.add_engine_options(p)
    p.add_argument("--model", choices=MODELS + ("both",), default="both")
    p.add_argument("--data", choices=("warwick", "pcam-kaggle"), default="warwick")
    p.add_argument("--patch-size", type=common.positive_int, default=32)
    p.add_argument("--stride", type=common.positive_int, default=8, help="grid step of the patches")
    p.add_argument("--val-images", type=common.positive_int, default=15,
                   help="WARWICK training images held out for validation")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--width", type=common.positive_int, default=16,
                   help="resnet: channels of the stem; they double at every stage")
    p.add_argument("--blocks", type=common.positive_int, default=1,
                   help="resnet: residual blocks per stage")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random flips and 90-degree turns (the 8 dihedral transforms)")
    p.add_argument("--jitter", action=argparse.BooleanOptionalAction, default=True,
                   help="stain/colour jitter: per-channel gain and offset, saturation")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="test-time augmentation: average the logits of the 8 dihedral transforms")
    p.add_argument("--bootstrap", type=common.positive_int, default=1000,
                   help="resamples (by image) for the AUC intervals")
    p.add_argument("--prime", type=common.non_negative_int, default=0, metavar="N",
                   help="priming: first train on the patches of N training images for "
                        "--prime-epochs, then on all; also trains an unprimed copy from the same "
                        f"weights and compares the seconds each needs to val AUC {TARGET_AUC}")
    p.add_argument("--prime-epochs", type=common.positive_int, default=2)
    args = p.parse_args(argv)
    if args.data == "pcam-kaggle" and args.patch_size != 32:
        p.error("--patch-size is WARWICK's; the competition's patches are 96x96")
    return args


# ----------------------------------------------------------------------------- main

def run_model(name, splits, norm, args):
    """Train one model (and, with --prime, its unprimed twin); score it."""
    train, val, test = splits["train"], splits["val"], splits["test"]
    tg.manual_seed(args.seed)
    size = train.images.shape[-1]
    model = build(name, args, train.images.shape[1], size)
    initial = model.state_dict()
    n_params = sum(p.size for p in model.parameters())
    print(f"\n{name}: {n_params:,} parameters")
    phases = [("train", make_loader(train, args, args.seed), args.epochs)]
    priming = None
    if args.prime:
        images = np.random.default_rng(args.seed).permutation(np.unique(train.groups))[:args.prime]
        primed = train.subset(np.flatnonzero(np.isin(train.groups, images)))
        phases.insert(0, (f"prime {args.prime}", make_loader(primed, args, args.seed + 1),
                          args.prime_epochs))
    watch = common.Stopwatch()
    history, reached = fit(name, model, phases, val, norm, args, watch)
    if args.prime:
        print(f"{name} from the same initial weights, without priming (stops at val AUC "
              f"{TARGET_AUC}, at most {args.epochs} epochs):")
        twin = build(name, args, train.images.shape[1], size)
        twin.load_state_dict(initial)
        twin_watch = common.Stopwatch()
        twin_history, twin_reached = fit(name, twin, phases[1:], val, norm, args, twin_watch,
                                         stop_at_target=True)
        priming = {"images": int(args.prime), "epochs": args.prime_epochs,
                   "target_val_auc": TARGET_AUC,
                   "seconds_to_target": {"with_priming": reached, "without_priming": twin_reached},
                   "unprimed_val_auc": twin_history["val_auc"],
                   "unprimed_train_seconds": twin_history["train_seconds"]}
    eval_start = time.perf_counter()
    per_transform = predict_logits(model, test.images, norm, tta=args.tta, per_transform=True)
    test_logits = per_transform.mean(axis=0)
    val_logits = predict_logits(model, val.images, norm, tta=False) if len(val) else None
    result = {"model": model, "parameters": int(n_params), "history": history,
              "train_seconds": watch.seconds, "priming": priming, "test_logits": test_logits,
              "val_auc": None if val_logits is None else metrics.roc_auc(val_logits, val.labels),
              "seconds_to_target": reached, "test_auc_no_tta": None}
    scored = test if test.has_labels else val      # where the truth is known
    result["scored_logits"] = test_logits if test.has_labels else val_logits
    if test.has_labels:
        ci = metrics.bootstrap_auc(test_logits, test.labels, test.groups, n_boot=args.bootstrap,
                                   seed=args.seed)
        result["test_auc_no_tta"] = metrics.roc_auc(per_transform[0], test.labels)
        result.update(test_auc=ci["auc"], interval=ci,
                      test_accuracy=metrics.binary_accuracy(test_logits, test.labels,
                                                            from_logits=True))
    else:
        result.update(test_auc=None, interval=None, test_accuracy=None)
    result["eval_seconds"] = time.perf_counter() - eval_start
    auc = "unknown (no test labels)" if result["test_auc"] is None else \
        f"{result['test_auc']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"
    if args.tta and result["test_auc_no_tta"] is not None:
        auc += f" (TTA x8; without TTA {result['test_auc_no_tta']:.4f})"
    print(f"{name}: test AUC {auc}, val AUC {result['val_auc']:.4f} (no TTA), "
          f"{watch.seconds:.0f} s of training, "
          f"scored in {result['eval_seconds']:.0f} s; on {scored.name}", flush=True)
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.apply_engine_options(args)
    load_before = os.getloadavg()
    names = MODELS if args.model == "both" else (args.model,)
    splits = load_splits(args)
    balance = class_balance(splits)
    for split, b in balance.items():
        print(f"{split}: {b['patches']} patches from {b['images']} images, "
              f"{b['positive_fraction']:.1%} positive")
    print(f"kernels: {kernels.get_backend()}; load average {load_before[0]:.2f} on "
          f"{os.cpu_count()} cores")
    norm = Normalizer(splits["train"].images)
    started = time.perf_counter()
    results = {name: run_model(name, splits, norm, args) for name in names}
    wall = time.perf_counter() - started

    out = Path(args.out)
    test = splits["test"]
    scored = test if test.has_labels else splits["val"]
    saved = []
    for name, r in results.items():
        write_submission(out / f"submission_{name}.csv", test.ids, sigmoid(r["test_logits"]))
        # the models take normalised patches, (x / 255 - mean) / std: see metrics.json
        saved.append(common.save_model(r["model"], norm(test.images[:1]), out, f"model_{name}"))
    rows = [{"name": name, "auc": r["test_auc"] if test.has_labels else r["val_auc"],
             "low": r["interval"]["low"] if r["interval"] else None,
             "high": r["interval"]["high"] if r["interval"] else None,
             "accuracy": r["test_accuracy"], "parameters": r["parameters"],
             "train_seconds": r["train_seconds"]} for name, r in results.items()]
    what = "test" if test.has_labels else "validation (test labels unknown)"
    with atomic_path(out / "leaderboard.md") as tmp:
        Path(tmp).write_text(metrics_plots.leaderboard_markdown(
            rows, f"Leaderboard: {args.data}, {what}, {'TTA x8' if args.tta else 'no TTA'}"))
    metrics_plots.plot_leaderboard(rows, out / "leaderboard.png", title=f"{args.data}: {what}")
    metrics_plots.plot_roc({name: (r["scored_logits"], scored.labels, r["interval"])
                            for name, r in results.items()}, out / "roc.png",
                           title=f"ROC on {scored.name} ({len(scored)} patches)")
    viz.plot_curves({f"{name} {key}": r["history"][key] for name, r in results.items()
                     for key in ("train_loss", "val_loss", "val_auc")},
                    out / "curves.png", title="training loss, validation loss and AUC")
    plot_mistakes(results, scored, out / "mistakes.png")

    metrics_out = {"data": args.data, "class_balance": balance, "tta": args.tta,
                   "target_auc": TARGET_AUC, "wall_seconds": wall}
    for name, r in results.items():
        interval = r["interval"]
        metrics_out.update({
            f"test_auc_{name}": r["test_auc"],
            f"test_auc_{name}_interval": None if interval is None else [interval["low"],
                                                                         interval["high"]],
            f"test_accuracy_{name}": r["test_accuracy"],
            f"test_auc_{name}_no_tta": r["test_auc_no_tta"],
            f"val_auc_{name}": r["val_auc"],
            f"train_seconds_{name}": r["train_seconds"],
            f"parameters_{name}": r["parameters"],
            f"curves_{name}": r["history"],
            f"seconds_to_target_{name}": r["seconds_to_target"],
            f"priming_{name}": r["priming"],
        })
    metrics_out["bootstrap"] = {"resamples": args.bootstrap, "by": "image", "confidence": 0.95}
    metrics_out["machine"] = {"cpus": os.cpu_count(), "threads": tg.get_num_threads(),
                              "load_average_start": load_before,
                              "load_average_end": os.getloadavg(),
                              "kernels": kernels.get_backend()}
    metrics_out["input_normalisation"] = {"mean": norm.mean.ravel().tolist(),
                                          "std": norm.std.ravel().tolist()}
    metrics_out["config"] = vars(args)
    save_json(out / "metrics.json", metrics_out)
    print("\n" + metrics_plots.leaderboard_markdown(rows, "Leaderboard"))
    print(f"load average {os.getloadavg()[0]:.2f}; submissions, leaderboard.md/png, roc.png, "
          f"curves.png, mistakes.png, {', '.join(saved)} and metrics.json in {out}/")
    return metrics_out


if __name__ == "__main__":
    main()
