"""The detection example's tiny YOLO in tinygrad_uu and in PyTorch, side by side.

The same architecture, the same initial weights (copied over), the same batches in the
same order (the same generator and augmentation, the same numpy targets), the same loss,
Adam and learning-rate schedule, the same epochs. Both are scored by the same numpy code
(decoding, NMS, mAP with pycocotools' rules) on the same test images.

Reports both AP50 and AP50:95, the training throughput of each (images/s of the training
steps, targets included, measured in this run) and their ratio; then benchmark W7 (the
detector's training step, batch 16 of 3x128x128, ``benchmarks/workloads.py``) for both
engines, cross-checked and timed by the harness.

    python benchmarks/compare_detector_torch.py --epochs 1 --train-count 2000
    python benchmarks/compare_detector_torch.py --w7-only
    python benchmarks/compare_detector_torch.py --data glands --epochs 30

Every option of examples/detection.py is accepted and means the same; --prime and
--baseline-from are not (this compares engines, not schedules).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))
import common  # noqa: E402
import detection  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
from tinygrad_uu import optim  # noqa: E402
from tinygrad_uu.data import DetectionAugment, load_detection_data  # noqa: E402
from tinygrad_uu.detection import mean_average_precision  # noqa: E402
from tinygrad_uu.detection.loss import DEFAULT_WEIGHTS  # noqa: E402
from tinygrad_uu.detection.targets import build_targets, postprocess  # noqa: E402


# ----------------------------------------------------------------------------- PyTorch

def torch_detector(torch, model: detection.TinyYOLO, in_channels: int, width: int):
    """The same TinyYOLO in PyTorch, with the same module names, loaded with ``model``'s
    weights and batch-norm buffers before any update."""
    nn = torch.nn

    def block(cin, cout, stride=1, kernel=3):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                                       bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))

    class TinyYOLO(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            outputs = [len(a) * (5 + model.num_classes) for a in model.anchors]
            self.two = model.strides == (8, 16)
            self.stride8 = nn.Sequential(block(in_channels, w, 2), block(w, 2 * w, 2),
                                         block(2 * w, 4 * w, 2), block(4 * w, 4 * w))
            self.stride16 = nn.Sequential(block(4 * w, 8 * w, 2), block(8 * w, 8 * w))
            self.head16 = nn.Conv2d(8 * w, outputs[-1], 1)
            if self.two:
                self.reduce = block(8 * w, 2 * w, kernel=1)
                self.up = nn.Upsample(scale_factor=2, mode="nearest")
                self.fuse = block(6 * w, 4 * w)
                self.head8 = nn.Conv2d(4 * w, outputs[0], 1)

        def forward(self, x):
            p8 = self.stride8(x)
            p16 = self.stride16(p8)
            if not self.two:
                return (self.head16(p16),)
            fused = self.fuse(torch.cat([self.up(self.reduce(p16)), p8], dim=1))
            return self.head8(fused), self.head16(p16)

    net = TinyYOLO()
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    net.load_state_dict(state, strict=True)
    return net


def torch_yolo_loss(torch, raws, targets, num_classes, weights):
    """``detection.loss.yolo_loss`` written in PyTorch (same terms, same order)."""
    F = torch.nn.functional
    n = raws[0].shape[0]
    terms = {k: raws[0].new_zeros(()) for k in ("box", "obj", "noobj", "cls")}
    for raw, t in zip(raws, targets):
        a = t.objectness.shape[1]
        _, _, gh, gw = raw.shape
        rows = raw.reshape(n, a, 5 + num_classes, gh, gw).permute(0, 1, 3, 4, 2).reshape(-1, 5 + num_classes)
        obj = torch.from_numpy(t.objectness.reshape(-1))
        weight = torch.from_numpy(t.weight.reshape(-1))
        bce = F.binary_cross_entropy_with_logits(rows[:, 4], obj, reduction="none")
        terms["obj"] = terms["obj"] + (bce * obj * weight).sum()
        terms["noobj"] = terms["noobj"] + (bce * (1 - obj) * weight).sum()
        if len(t.index):
            picked = rows[torch.from_numpy(t.index)]
            xy_err = torch.sigmoid(picked[:, 0:2]) - torch.from_numpy(t.xy)
            wh_err = picked[:, 2:4] - torch.from_numpy(t.wh)
            terms["box"] = terms["box"] + (xy_err ** 2).sum() + (wh_err ** 2).sum()
            terms["cls"] = terms["cls"] + F.cross_entropy(picked[:, 5:], torch.from_numpy(t.classes),
                                                          reduction="sum")
    return sum(weights[k] * terms[k] / n for k in terms)


def train_torch(torch, net, model, train, args, total_steps):
    """The example's loop (``detection.fit``) in PyTorch: the same batches and schedule."""
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    weights = {k: getattr(args, f"{k}_weight") for k in DEFAULT_WEIGHTS}
    augment = DetectionAugment(flips=args.data != "digits", rot90=args.data != "digits",
                               shift=args.shift, scale=(1 - args.zoom, 1 + args.zoom),
                               seed=args.seed) if args.augment else None
    rng = np.random.default_rng(args.seed)
    seconds, step = 0.0, 0
    net.train()
    for epoch in range(1, args.epochs + 1):
        total = seen = 0.0
        for images, boxes, labels in detection.batches(train, args.batch_size, rng, augment):
            start = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = detection.learning_rate(args, step, total_steps)
            targets = build_targets(boxes, labels, model.anchors, model.strides,
                                    images.shape[2:], ignore_iou=args.ignore_iou,
                                    extra_match_iou=args.match_iou)
            loss = torch_yolo_loss(torch, net(torch.from_numpy(images)), targets,
                                   model.num_classes, weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds += time.perf_counter() - start
            step += 1
            total += loss.item() * len(images)
            seen += len(images)
        print(f"  torch epoch {epoch}/{args.epochs}: loss {total / seen:.4f}", flush=True)
    return seconds


def torch_scores(torch, net, model, test, args):
    net.eval()
    found = []
    with torch.no_grad():
        for images, _, _ in detection.batches(test, detection.EVAL_BATCH):
            raws = [r.numpy() for r in net(torch.from_numpy(images))]
            found += postprocess(raws, model.anchors, model.strides, model.num_classes,
                                 images.shape[2:], conf=detection.MAP_CONF, iou=args.iou)
    truth = [{"boxes": b, "labels": lab} for b, lab in zip(test.boxes, test.labels)]
    return mean_average_precision(found, truth, test.num_classes)


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads (default: the engine's thread count)")
    p.add_argument("--json", default=None, help="write every figure here")
    p.add_argument("--skip-w7", action="store_true", help="leave benchmark W7 out")
    p.add_argument("--w7-only", action="store_true", help="run benchmark W7 only")
    p.add_argument("--w7-repeats", type=int, default=3, help="timed repeats of W7 per engine")
    p.add_argument("-h", "--help", action="store_true")
    own, rest = p.parse_known_args(argv)
    if own.help:
        p.print_help()
        print("\nand the options of examples/detection.py:\n")
        detection.parse_args(["--help"])
    args = detection.parse_args(rest)
    if args.prime or args.baseline_from:
        raise SystemExit("compare_detector_torch: --prime and --baseline-from are not supported "
                         "here (it compares the engines on one schedule); run "
                         "examples/detection.py")
    return own, args


def main(argv=None) -> dict:
    own, args = parse_args(argv)
    common.apply_engine_options(args)
    threads = own.torch_threads or tg.get_num_threads()
    from benchmarks.run import start_parity_run
    torch, results = start_parity_run(vars(args), threads)

    if not own.w7_only:
        root = args.data_dir if args.data != "yolo" else None
        train, test = load_detection_data(args.data, root=root, data_dir=args.data_dir,
                                          train_count=args.train_count,
                                          test_count=args.test_count, seed=args.seed)
        if args.limit is not None:
            train = train.subset(range(min(args.limit, len(train))))
        anchors = detection.split_anchors(train.box_sizes(), args.strides, seed=args.seed)
        tg.manual_seed(args.seed)
        model = detection.build_model(train.num_classes, train.images.shape[1], anchors,
                                      args.strides, args.width)
        net = None
        if torch is not None:
            torch.manual_seed(args.seed)
            torch.set_num_threads(threads)
            net = torch_detector(torch, model, train.images.shape[1], args.width)  # before any update
        total_steps = math.ceil(len(train) / args.batch_size) * args.epochs

        print(f"tinygrad_uu: {args.epochs} epochs on {len(train)} images", flush=True)
        watch = common.Stopwatch()
        detection.fit(model, optim.Adam(model.parameters(), lr=args.lr),
                      [("train", train, args.epochs)], test, args, watch)
        scores = detection.evaluate(model, test, args.iou)[0]
        images = args.epochs * len(train)
        results["tinygrad_uu"] = {"test_ap50": scores["ap50"], "test_ap50_95": scores["ap50_95"],
                                  "train_seconds": watch.seconds,
                                  "samples_per_second": images / watch.seconds}
        if torch is not None:
            print(f"PyTorch {torch.__version__} ({threads} threads): the same", flush=True)
            seconds = train_torch(torch, net, model, train, args, total_steps)
            scores = torch_scores(torch, net, model, test, args)
            results["torch"] = {"test_ap50": scores["ap50"], "test_ap50_95": scores["ap50_95"],
                                "train_seconds": seconds, "samples_per_second": images / seconds,
                                "version": torch.__version__}
            results["throughput_ratio_vs_torch"] = (results["tinygrad_uu"]["samples_per_second"]
                                                    / results["torch"]["samples_per_second"])
        print("\n| engine | test AP50 | AP50:95 | training s | images/s |\n|---|---|---|---|---|")
        for name in ("tinygrad_uu", "torch"):
            if name in results:
                r = results[name]
                print(f"| {name} | {r['test_ap50']:.4f} | {r['test_ap50_95']:.4f} | "
                      f"{r['train_seconds']:.1f} | {r['samples_per_second']:.2f} |")
        if torch is not None:
            print(f"throughput ratio tinygrad_uu / torch: {results['throughput_ratio_vs_torch']:.3f}")

    from benchmarks.run import finish_parity_run
    return finish_parity_run(results, None if own.skip_w7 else "W7",
                             "detector training step, batch 16 of 3x128x128",
                             threads, own.w7_repeats, own.json)


if __name__ == "__main__":
    main()
