"""Assignment 4: object detection with a tiny YOLO, on MNIST digits pasted on canvases.

One training step, as in every example:
    raws = model(images)                                # per head: (N, A*(5+C), H/s, W/s)
    targets = build_targets(boxes, labels, ...)         # numpy, from the ground-truth boxes
    loss, terms = yolo_loss(raws, targets, C)           # objectness + boxes + classes
    optimizer.zero_grad(); loss.backward(); optimizer.step()

    python examples/detection.py --threads 1            # digits: 2 heads (stride 8, 16), 7 epochs
    python examples/detection.py --data glands --baseline-from runs/segmentation/model.npz
    python examples/detection.py --data yolo --data-dir my_set/   # images/, labels/, classes.txt
    python examples/detection.py --strides 16 --no-augment --schedule constant --match-iou none \
        --cls-weight 1                                  # the plain one-scale version

The model: Conv-BatchNorm-LeakyReLU(0.1) blocks that halve the image four times (stride
16: an 8x8 grid at 128 px), 3 anchors per cell from k-means on the training boxes. With
``--strides 8 16`` (the default) a second head sees the stride-8 features (16x16 cells)
joined with the stride-16 ones upsampled: a 14-px digit no longer shares its cell.
Evaluation: mAP with pycocotools' rules at confidence 0.001 (``--conf`` only draws).
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
from tinygrad_uu import kernels, nn, optim, viz  # noqa: E402
from tinygrad_uu.data import DetectionAugment, load_detection_data  # noqa: E402
from tinygrad_uu.detection import kmeans_anchors, mean_average_precision  # noqa: E402
from tinygrad_uu.detection.loss import DEFAULT_WEIGHTS, yolo_loss  # noqa: E402
from tinygrad_uu.detection.plots import plot_anchors, plot_pr_curves, plot_predictions  # noqa: E402
from tinygrad_uu.detection.targets import build_targets, postprocess  # noqa: E402
from tinygrad_uu.files import save_json  # noqa: E402

EVAL_BATCH = 100
MAP_CONF = 0.001             # mAP is always taken over (nearly) every detection
TARGET_AP50 = {"digits": 0.90, "glands": 0.50, "yolo": 0.50}
# The loss terms' weights. Measured on the digits (README, "Object detection"): a class
# weight of 3 instead of 1 moved test AP50 after 5 epochs from 0.816 to 0.873 (the
# class-agnostic AP50 was 0.95 already: telling digits apart was what held it back).
LOSS_WEIGHTS = dict(DEFAULT_WEIGHTS, cls=3.0)
SHOWN = 8                    # test images in predictions.png


# ----------------------------------------------------------------------------- the model

def conv_block(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv (no bias: the batch norm shifts) -> BatchNorm -> LeakyReLU(0.1)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))


class TinyYOLO(nn.Module):
    """Backbone of stride-2 conv blocks (width w: w, 2w, 4w at stride 8, 8w at stride 16),
    one 1x1 prediction conv per head. ``strides`` is (16,) or (8, 16); ``anchors`` one
    (A, 2) array per head, in pixels. ``forward`` returns a tuple of raw head outputs,
    (N, A*(5+C), H/s, W/s) each, in the order of ``strides``."""

    def __init__(self, num_classes: int, anchors, strides=(8, 16), in_channels: int = 1,
                 width: int = 8, prior: float = 0.01):
        super().__init__()
        strides = tuple(int(s) for s in strides)
        if strides not in ((16,), (8, 16)):
            raise ValueError(f"TinyYOLO: strides must be (16,) or (8, 16), got {strides}")
        if len(anchors) != len(strides):
            raise ValueError(f"TinyYOLO: {len(strides)} heads need {len(strides)} anchor sets, "
                             f"got {len(anchors)}")
        self.num_classes, self.strides = num_classes, strides
        self.anchors = [np.asarray(a, np.float64).reshape(-1, 2) for a in anchors]
        w = width
        self.stride8 = nn.Sequential(conv_block(in_channels, w, 2), conv_block(w, 2 * w, 2),
                                     conv_block(2 * w, 4 * w, 2), conv_block(4 * w, 4 * w))
        self.stride16 = nn.Sequential(conv_block(4 * w, 8 * w, 2), conv_block(8 * w, 8 * w))
        outputs = [len(a) * (5 + num_classes) for a in self.anchors]
        self.head16 = nn.Conv2d(8 * w, outputs[-1], 1)
        if strides == (8, 16):
            self.reduce = conv_block(8 * w, 2 * w, kernel=1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.fuse = conv_block(6 * w, 4 * w)
            self.head8 = nn.Conv2d(4 * w, outputs[0], 1)
        for head, a in self._heads():
            init_head(head, len(a), num_classes, prior)

    def _heads(self):
        heads = [self.head8] if self.strides == (8, 16) else []
        return list(zip(heads + [self.head16], self.anchors))

    def forward(self, x):
        if x.ndim != 4 or x.shape[2] % 16 or x.shape[3] % 16:
            raise ValueError(f"TinyYOLO: expects (N, C, H, W) images with H and W divisible by "
                             f"16, got shape {x.shape}")
        p8 = self.stride8(x)
        p16 = self.stride16(p8)
        out16 = self.head16(p16)
        if self.strides == (16,):
            return (out16,)
        fused = self.fuse(tg.cat([self.up(self.reduce(p16)), p8], axis=1))
        return self.head8(fused), out16


def init_head(head: nn.Conv2d, num_anchors: int, num_classes: int, prior: float) -> None:
    """Small weights (std 0.01) and biases that make the untrained model predict what it
    knows: objectness ``prior`` everywhere (logit log(p / (1 - p))), uniform classes,
    boxes of anchor size at cell centres. The first losses are then known (see
    ``detection.loss.expected_initial_terms``) instead of a flood of false objects."""
    nn.init.normal_(head.weight, 0.0, 0.01)
    bias = np.zeros((num_anchors, 5 + num_classes), np.float32)
    bias[:, 4] = math.log(prior / (1 - prior))
    head.bias.data[...] = bias.reshape(-1)


def build_model(num_classes: int = 10, in_channels: int = 1, anchors=None, strides=(8, 16),
                width: int = 8, prior: float = 0.01) -> TinyYOLO:
    """The example's detector (importable by tests and exporters). Without ``anchors``,
    3 per head of fixed sizes that suit the digits (k-means gives better ones)."""
    if anchors is None:
        default = np.array([[8, 12], [12, 17], [16, 20], [18, 24], [22, 26], [26, 29.0]])
        anchors = [default[:3], default[3:]] if tuple(strides) == (8, 16) else [default[[0, 2, 5]]]
    return TinyYOLO(num_classes, anchors, strides, in_channels, width, prior)


def split_anchors(box_sizes, strides, per_head: int = 3, seed: int = 0):
    """k-means anchors for every head: the smallest ``per_head`` go to the finest stride."""
    anchors = kmeans_anchors(box_sizes, per_head * len(strides), seed=seed)
    return [anchors[h * per_head:(h + 1) * per_head] for h in range(len(strides))]


# ----------------------------------------------------------------------------- training

def batches(data, batch_size: int, rng=None, augment=None):
    """(float images, boxes, labels) batches of a DetectionSet, shuffled when ``rng``."""
    order = rng.permutation(len(data)) if rng is not None else np.arange(len(data))
    for start in range(0, len(data), batch_size):
        idx = order[start:start + batch_size]
        images = data.float_images(idx)
        boxes, labels = [data.boxes[i] for i in idx], [data.labels[i] for i in idx]
        if augment is not None:
            images, boxes, labels = augment(images, boxes, labels)
        yield images, boxes, labels


@tg.no_grad()
def detect(model, data, conf: float = MAP_CONF, iou: float = 0.5, batch_size: int = EVAL_BATCH):
    """Detections for every image of ``data``, the model in eval mode."""
    was_training = model.training
    model.eval()
    found = []
    for images, _, _ in batches(data, batch_size):
        raws = [r.data for r in model(tg.tensor(images))]
        found += postprocess(raws, model.anchors, model.strides, model.num_classes,
                             images.shape[2:], conf=conf, iou=iou)
    model.train(was_training)
    return found


def evaluate(model, data, iou: float = 0.5):
    """(mAP results, detections) of the model on ``data`` at confidence 0.001."""
    found = detect(model, data, MAP_CONF, iou)
    truth = [{"boxes": b, "labels": lab} for b, lab in zip(data.boxes, data.labels)]
    return mean_average_precision(found, truth, data.num_classes), found


def learning_rate(args, step: int, total: int) -> float:
    """Linear warm-up over the first ``--warmup`` steps, then the ``--schedule``."""
    lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
    if args.schedule == "cosine":
        lr *= 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return lr


def fit(model, optimizer, phases, test, args, watch, stop_at_target=False):
    """Train through ``phases`` [(name, DetectionSet, epochs)], testing after each epoch.
    Returns the history and the training seconds when test AP50 first reached the
    target (None if never)."""
    target = TARGET_AP50[args.data]
    weights = {k: getattr(args, f"{k}_weight") for k in DEFAULT_WEIGHTS}
    augment = DetectionAugment(flips=args.data != "digits", rot90=args.data != "digits",
                               shift=args.shift, scale=(1 - args.zoom, 1 + args.zoom),
                               seed=args.seed) if args.augment else None
    rng = np.random.default_rng(args.seed)
    total = sum(math.ceil(len(d) / args.batch_size) * e for _, d, e in phases)
    history = {k: [] for k in ("train_loss", "box_loss", "obj_loss", "noobj_loss", "cls_loss",
                               "test_ap50", "test_ap50_95", "train_seconds", "lr", "phase")}
    step, epoch, reached = 0, 0, None
    epochs = sum(e for _, _, e in phases)
    for name, data, n_epochs in phases:
        for _ in range(n_epochs):
            epoch += 1
            sums, seen = dict.fromkeys(("loss", "box", "obj", "noobj", "cls"), 0.0), 0
            label = f"epoch {epoch}/{epochs}" + (f" ({name})" if name != "train" else "")
            bar = tqdm(batches(data, args.batch_size, rng, augment), desc=label, leave=False,
                       total=math.ceil(len(data) / args.batch_size), unit="batch")
            for images, boxes, labels in bar:
                with watch:
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate(args, step, total)
                    targets = build_targets(boxes, labels, model.anchors, model.strides,
                                            images.shape[2:], ignore_iou=args.ignore_iou,
                                            extra_match_iou=args.match_iou)
                    loss, terms = yolo_loss(model(tg.tensor(images)), targets,
                                            model.num_classes, weights)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                step += 1
                value = loss.item()
                if not math.isfinite(value):
                    raise FloatingPointError(f"{label}: the loss became {value} at step {step} "
                                             f"(terms {terms}); try a lower --lr")
                n = len(images)
                seen += n
                sums["loss"] += value * n
                for k, v in terms.items():
                    sums[k] += v * n
                bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}")
            results, _ = evaluate(model, test, args.iou)
            for k in ("box", "obj", "noobj", "cls"):
                history[f"{k}_loss"].append(sums[k] / seen)
            history["train_loss"].append(sums["loss"] / seen)
            history["test_ap50"].append(results["ap50"])
            history["test_ap50_95"].append(results["ap50_95"])
            history["train_seconds"].append(watch.seconds)
            history["lr"].append(optimizer.param_groups[0]["lr"])
            history["phase"].append(name)
            if reached is None and results["ap50"] >= target:
                reached = watch.seconds
            print(f"{label}: loss {sums['loss'] / seen:.4f}, test AP50 {results['ap50']:.4f}, "
                  f"AP50:95 {results['ap50_95']:.4f}  [{watch.seconds:.0f} s of training, "
                  f"{seen / max(watch.seconds - (history['train_seconds'][-2] if epoch > 1 else 0), 1e-9):.0f} "
                  f"images/s, load {os.getloadavg()[0]:.1f}]", flush=True)
            if stop_at_target and reached is not None:
                return history, reached
    return history, reached


# ----------------------------------------------------------------------------- baseline

@tg.no_grad()
def segmentation_baseline(model_path, test, min_area: int):
    """Boxes from the segmentation example's U-Net: connected components (4-connectivity,
    >= ``min_area`` px) of its prediction > 0.5, score = mean probability inside each.
    Scored like the detector against the masks' components."""
    from scipy import ndimage
    import segmentation
    state = nn.load(None, model_path)
    names = [k for k in state if k.startswith("down.") and k.endswith(".0.weight")]
    depth = len(names)
    width = state["down.0.0.weight"].shape[0]
    unet = segmentation.UNet(test.images.shape[1], width=width, depth=depth,
                             up="transpose" if any(k.startswith("ups.") and k.endswith("weight")
                                                   for k in state) else "nearest")
    nn.load(unet, model_path)
    probs = segmentation.predict(unet, test.float_images())
    found = []
    for p in probs[:, 0]:
        labelled, n = ndimage.label(p > 0.5)
        areas = np.bincount(labelled.ravel(), minlength=n + 1)[1:]
        means = ndimage.mean(p, labelled, np.arange(1, n + 1)) if n else np.zeros(0)
        boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labelled)]
        keep = areas >= min_area
        found.append({"boxes": np.array(boxes, np.float32).reshape(-1, 4)[keep],
                      "scores": np.asarray(means)[keep], "labels": np.zeros(int(keep.sum()), np.int64)})
    truth = [{"boxes": b, "labels": lab} for b, lab in zip(test.boxes, test.labels)]
    return mean_average_precision(found, truth, 1)


# ----------------------------------------------------------------------------- options

def _optional_float(text: str):
    return None if text.lower() == "none" else float(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", choices=("digits", "glands", "yolo"), default="digits",
                   help="digits on canvases (MNIST), WARWICK glands, or a YOLO folder (--data-dir)")
    p.add_argument("--data-dir", default=None,
                   help="for --data yolo: the YOLO folder (images/, labels/, classes.txt, or "
                        "train/ and test/ such folders); otherwise the data root (if not given: "
                        "$TINYGRAD_UU_DATA or ~/.cache/tinygrad_uu)")
    p.add_argument("--epochs", type=common.positive_int, default=None,
                   help="passes over the training set (if not given: 7 digits, 150 glands/yolo)")
    p.add_argument("--batch-size", type=common.positive_int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's peak learning rate")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="after the warm-up: down to 0 along half a cosine, or constant")
    p.add_argument("--warmup", type=common.non_negative_int, default=100, help="warm-up steps")
    p.add_argument("--strides", type=int, nargs="+", default=[8, 16],
                   help="16 (one head) or 8 16 (a second head at stride 8)")
    p.add_argument("--width", type=common.positive_int, default=8,
                   help="channels of the first block (w, 2w, 4w, 8w after each halving)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random shifts and zooms (plus flips and 90-degree turns except for digits)")
    p.add_argument("--shift", type=float, default=0.1, help="largest shift, a fraction of the side")
    p.add_argument("--zoom", type=float, default=0.15, help="zoom by a factor in [1 - z, 1 + z]")
    for term, weight in LOSS_WEIGHTS.items():
        p.add_argument(f"--{term}-weight", type=float, default=weight,
                       help=f"weight of the {term} term of the loss")
    p.add_argument("--ignore-iou", type=float, default=None,
                   help="do not penalise the objectness of an anchor in a box's cell whose "
                        "size fits the box with at least this IoU")
    p.add_argument("--match-iou", type=_optional_float, default=0.5,
                   help="besides its best anchor, make a box the target of every anchor whose "
                        "size fits it with at least this IoU (more positives per box; 'none': "
                        "the best anchor only)")
    p.add_argument("--train-count", type=common.positive_int, default=None,
                   help="digit canvases to train on (default 10,000)")
    p.add_argument("--test-count", type=common.positive_int, default=None,
                   help="digit canvases to test on (default 1,000)")
    p.add_argument("--limit", type=common.positive_int, default=None,
                   help="train on the first N training images only (a quick run)")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold for drawing boxes")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold of NMS")
    p.add_argument("--prime", type=common.non_negative_int, default=0, metavar="N",
                   help="priming: first train on N training images for --prime-epochs, then on "
                        "all; also trains an unprimed copy from the same weights to compare the "
                        "seconds each needs to reach the target AP50")
    p.add_argument("--prime-epochs", type=common.positive_int, default=3)
    p.add_argument("--baseline-from", default=None, metavar="MODEL_NPZ",
                   help="glands: also score boxes from a segmentation U-Net saved by "
                        "examples/segmentation.py (e.g. runs/segmentation/model.npz)")
    p.add_argument("--min-area", type=common.positive_int, default=20,
                   help="glands: smallest component (pixels) that counts as a gland")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/detection[_DATA])")
    common.add_engine_options(p)
    args = p.parse_args(argv)
    if tuple(args.strides) not in ((16,), (8, 16)):
        p.error(f"--strides must be 16 or 8 16, got {' '.join(map(str, args.strides))}")
    if args.data == "yolo" and args.data_dir is None:
        p.error("--data yolo needs --data-dir, a folder with images/ and labels/")
    if args.baseline_from and args.data != "glands":
        p.error("--baseline-from compares with the segmentation U-Net: use it with --data glands")
    if args.epochs is None:
        args.epochs = 7 if args.data == "digits" else 150
    if args.out is None:
        args.out = "runs/detection" + ("" if args.data == "digits" else f"_{args.data}")
    return args


# ----------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    args = parse_args(argv)
    common.apply_engine_options(args)
    load_before = os.getloadavg()
    tg.manual_seed(args.seed)
    if args.data == "glands" and args.baseline_from and not Path(args.baseline_from).exists():
        raise SystemExit(f"--baseline-from {args.baseline_from}: no such file (train it with "
                         f"python examples/segmentation.py)")
    root = args.data_dir if args.data != "yolo" else None
    train, test = load_detection_data(args.data, root=root, data_dir=args.data_dir,
                                      train_count=args.train_count, test_count=args.test_count,
                                      seed=args.seed)
    if args.limit is not None:
        train = train.subset(range(min(args.limit, len(train))))
    if args.prime > len(train):
        raise SystemExit(f"--prime {args.prime}: there are only {len(train)} training images")
    box_sizes = train.box_sizes()
    anchors = split_anchors(box_sizes, args.strides, seed=args.seed)
    cells = sum(3 * (train.images.shape[2] // s) * (train.images.shape[3] // s) for s in args.strides)
    prior = min(0.5, max(1e-4, len(box_sizes) / len(train) / cells))   # objects per anchor position
    model = build_model(train.num_classes, train.images.shape[1], anchors, args.strides,
                        args.width, prior)
    initial = model.state_dict()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    print(model)
    print(f"{sum(p.size for p in model.parameters())} parameters; {train} for training, {test} "
          f"for testing; anchors {[a.round(1).tolist() for a in anchors]}; kernels: "
          f"{kernels.get_backend()}, {tg.get_num_threads()} threads; load average "
          f"{load_before[0]:.2f} on {os.cpu_count()} cores")

    phases = [("train", train, args.epochs)]
    if args.prime:
        chosen = np.sort(np.random.default_rng(args.seed).permutation(len(train))[:args.prime])
        phases.insert(0, (f"prime {args.prime}", train.subset(chosen), args.prime_epochs))
    watch = common.Stopwatch()
    started = time.perf_counter()
    history, reached = fit(model, optimizer, phases, test, args, watch)
    priming = None
    if args.prime:
        print(f"\nthe same model from the same weights without priming (stops at test AP50 "
              f"{TARGET_AP50[args.data]}):")
        plain = build_model(train.num_classes, train.images.shape[1], anchors, args.strides,
                            args.width, prior)
        plain.load_state_dict(initial)
        plain_watch = common.Stopwatch()
        plain_history, plain_reached = fit(plain, optim.Adam(plain.parameters(), lr=args.lr),
                                           [("train", train, args.epochs)], test, args,
                                           plain_watch, stop_at_target=True)
        priming = {"images": args.prime, "epochs": args.prime_epochs,
                   "target_ap50": TARGET_AP50[args.data],
                   "seconds_to_target": {"with_priming": reached, "without_priming": plain_reached},
                   "unprimed_test_ap50": plain_history["test_ap50"],
                   "unprimed_train_seconds": plain_history["train_seconds"]}
    wall = time.perf_counter() - started

    results, found = evaluate(model, test, args.iou)
    baseline = None
    if args.baseline_from:
        b = segmentation_baseline(args.baseline_from, test, args.min_area)
        baseline = {"model": str(args.baseline_from), "test_ap50": b["ap50"],
                    "test_ap50_95": b["ap50_95"]}
    out = Path(args.out)
    shown = slice(0, SHOWN)
    truth = [{"boxes": b, "labels": lab} for b, lab in zip(test.boxes, test.labels)]
    plot_predictions(test.images[shown], found[shown], truth[shown], test.class_names,
                     out / "predictions.png", conf=args.conf)
    plot_pr_curves(results["pr_curves"], results["per_class_ap50"], test.class_names,
                   out / "pr_curve.png")
    plot_anchors(box_sizes, anchors, out / "anchors.png", args.strides)
    viz.plot_curves({k: history[k] for k in ("train_loss", "box_loss", "obj_loss", "noobj_loss",
                                             "cls_loss", "test_ap50", "test_ap50_95")},
                    out / "curves.png", title=f"tiny YOLO on {args.data}")
    saved = common.save_model(model, test.float_images(np.arange(1)), out)
    images_trained = sum(len(d) * e for _, d, e in phases)
    nan_to_none = lambda v: None if v != v else v   # noqa: E731  (JSON has no NaN)
    metrics_out = {
        "test_ap50": nan_to_none(results["ap50"]),
        "test_ap50_95": nan_to_none(results["ap50_95"]),
        "test_ap75": nan_to_none(results["ap75"]),
        "per_class_ap50": {name: nan_to_none(v) for name, v in
                           zip(test.class_names, results["per_class_ap50"])},
        "per_class_ap50_95": {name: nan_to_none(v) for name, v in
                              zip(test.class_names, results["per_class_ap50_95"])},
        "target_ap50": TARGET_AP50[args.data],
        "seconds_to_target": reached,
        "baseline_segmentation": baseline,
        "curves": history,
        "train_seconds": watch.seconds,
        "wall_seconds": wall,
        "samples_per_second": images_trained / watch.seconds,
        "anchors": [a.tolist() for a in anchors],
        "strides": list(args.strides),
        "objectness_prior": prior,
        "priming": priming,
        "train_images": len(train), "test_images": len(test),
        "parameters": sum(p.size for p in model.parameters()),
        "machine": {"cpus": os.cpu_count(), "threads": tg.get_num_threads(),
                    "load_average_start": load_before, "load_average_end": os.getloadavg(),
                    "kernels": kernels.get_backend()},
        "config": vars(args),
    }
    save_json(out / "metrics.json", metrics_out)
    print(f"test AP50 {results['ap50']:.4f}, AP50:95 {results['ap50_95']:.4f} "
          f"({len(test)} images); {metrics_out['samples_per_second']:.1f} images/s over "
          f"{watch.seconds:.0f} s of training; AP50 {TARGET_AP50[args.data]} reached "
          + ("never" if reached is None else f"after {reached:.0f} s")
          + (f"; the U-Net's boxes: AP50 {baseline['test_ap50']:.4f}, AP50:95 "
             f"{baseline['test_ap50_95']:.4f}" if baseline else "")
          + f"; load average {os.getloadavg()[0]:.2f}; figures, {saved} and metrics.json in {out}/")
    return metrics_out


if __name__ == "__main__":
    main()
