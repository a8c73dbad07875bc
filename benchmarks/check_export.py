"""Check a trained example's exports on its real test images: the engine (model.npz),
onnxruntime (model.onnx) and PyTorch (the twin of benchmarks/torch_models.py, loaded
with ``nn.to_torch_state_dict``) must give the same outputs and the same predictions.

    python examples/mnist_cnn.py --out runs/mnist_cnn          # train: model.npz + model.onnx
    python benchmarks/check_export.py runs/mnist_cnn            # the example: the folder's name
    python benchmarks/check_export.py runs/seg --example segmentation --images 20

Reports the largest absolute difference of the outputs (logits) of onnxruntime and of
PyTorch from the engine's (beside the largest output, for scale), how many predictions
agree (class, or pixel above 0), and the median seconds per batch of each (inference only, this run, this machine), into
``check_export.json`` in the run folder. Missing onnxruntime or torch: that column is skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))
import common  # noqa: E402
import mnist_cnn  # noqa: E402
import mnist_mlp  # noqa: E402
import segmentation  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
from tinygrad_uu import nn  # noqa: E402
from tinygrad_uu.files import save_json  # noqa: E402


def _mnist_test(data_dir):
    return common.load_mnist(data_dir)[1][0]


def _warwick_test(data_dir):
    return segmentation.load_warwick(data_dir)[1][0]


# example -> (model from its metrics.json config, its test images, batch size)
EXAMPLES = {
    "mnist_mlp": (lambda c: mnist_mlp.build_model(c["hidden"]), _mnist_test, 1000),
    "mnist_cnn": (lambda c: mnist_cnn.build_model(c["channels"], c["hidden"], c["batch_norm"],
                                                  c["dropout"]), _mnist_test, 1000),
    "segmentation": (lambda c: segmentation.UNet(3, c["width"], c["depth"], c["batch_norm"],
                                                 c["up"]), _warwick_test, 4),
}


def _median_seconds(fn, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _predictions(out):
    return out.argmax(1) if out.shape[1] > 1 else out > 0


def check(run_dir: Path, example: str, images: int | None, data_dir=None) -> dict:
    build, load_test, batch = EXAMPLES[example]
    config = json.loads((run_dir / "metrics.json").read_text())["config"]
    model = nn.load(build(config), run_dir / "model.npz").eval()
    x = load_test(data_dir)[:images]
    batch = min(batch, len(x))
    batches = [x[i:i + batch] for i in range(0, len(x), batch)]

    def engine(xb):
        with tg.no_grad():
            return model(tg.tensor(xb)).data
    reference = np.concatenate([engine(b) for b in batches])
    result = {"example": example, "images": len(x), "batch": batch,
              "load_average": list(os.getloadavg()), "threads": tg.get_num_threads(),
              "engine": {"seconds_per_batch": _median_seconds(lambda: engine(batches[0]))}}
    runners = {}
    try:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = tg.get_num_threads()
        session = ort.InferenceSession(str(run_dir / "model.onnx"), options,
                                       providers=["CPUExecutionProvider"])
        runners[f"onnxruntime {ort.__version__}"] = lambda xb: session.run(None, {"input": xb})[0]
    except ImportError:
        print("onnxruntime is not installed: pip install onnxruntime")
    try:
        import torch
        from benchmarks.torch_models import torch_twin
        torch.set_num_threads(tg.get_num_threads())
        net = torch_twin(torch, model).eval()

        def run_torch(xb):
            with torch.no_grad():
                return net(torch.from_numpy(xb)).numpy()
        runners[f"torch {torch.__version__}"] = run_torch
    except ImportError:
        print("torch is not installed: pip install torch")
    for name, run in runners.items():
        out = np.concatenate([run(b) for b in batches])
        result[name] = {
            "max_abs_difference": float(np.abs(out - reference).max()),
            "largest_engine_output": float(np.abs(reference).max()),
            "predictions_agreeing": float((_predictions(out) == _predictions(reference)).mean()),
            "seconds_per_batch": _median_seconds(lambda: run(batches[0])),
        }
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path,
                   help="an example's --out folder (metrics.json, model.npz, model.onnx)")
    p.add_argument("--example", choices=sorted(EXAMPLES), default=None,
                   help="which example trained it (default: the folder's name)")
    p.add_argument("--images", type=common.positive_int, default=None,
                   help="test images to check (default: all)")
    p.add_argument("--data-dir", default=None)
    common.add_engine_options(p)
    args = p.parse_args(argv)
    common.apply_engine_options(args)
    example = args.example or args.run.name
    if example not in EXAMPLES:
        p.error(f"cannot tell the example from the folder name {args.run.name!r}: "
                f"give --example ({', '.join(sorted(EXAMPLES))})")
    result = check(args.run, example, args.images, args.data_dir)
    save_json(args.run / "check_export.json", result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
