"""Speed of the kernels, side by side with BLAS and PyTorch, on the course's workloads.

    python benchmarks/bench_kernels.py [--json PATH] [--repeats N] [--threads T] [--no-cold]

Every number is a median over N timed runs after warm-up; ratios compare numbers from
this same run (a shared or busy machine shifts them all). Threads: numba, BLAS and torch
all get the same count (default 2). With ``--threads=1`` the clock is the process's CPU
time (``time.process_time``), which time spent waiting for a busy machine's cores does
not inflate; otherwise wall-clock time. Prints a markdown table and writes JSON.

Cold start: a fresh Python with an empty numba cache (a temporary NUMBA_CACHE_DIR) is
timed from the first import to the end of a first conv2d forward + backward on both
conv shapes; then the same again with the now warm cache.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREADS = "2"
for _arg in sys.argv:  # thread counts must be set before numpy/numba/torch load
    if _arg.startswith("--threads="):
        THREADS = _arg.split("=", 1)[1]
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "TINYGRAD_UU_NUM_THREADS"):
    os.environ.setdefault(_var, THREADS)

import numpy as np  # noqa: E402

CLOCK = time.process_time if THREADS == "1" else time.perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tinygrad_uu as tg  # noqa: E402
from tinygrad_uu import kernels as K  # noqa: E402
from tinygrad_uu.kernels import conv, conv_batched, conv_direct, conv_im2col, conv3x3, cpu, reference  # noqa: E402

try:
    import torch
    torch.set_num_threads(int(THREADS))
except ImportError:  # torch is an optional peer
    torch = None

CONV_SHAPES = {"conv A (64, 1->32, 28x28, k3 p1)": (64, 1, 32, 28),
               "conv B (64, 32->64, 14x14, k3 p1)": (64, 32, 64, 14)}


def median_time(fn, repeats: int, budget_s: float = 3.0) -> float:
    """Median seconds of ``fn()`` over up to ``repeats`` runs, after two warm-up runs
    (the first compiles); slow functions get fewer runs to stay within ``budget_s``."""
    fn()
    t = CLOCK()
    fn()
    once = CLOCK() - t
    runs = max(3, min(repeats, int(budget_s / max(once, 1e-9))))
    times = []
    for _ in range(runs):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return statistics.median(times)


def bench_matmul(repeats):
    rows = []
    for n in (64, 256, 1024):
        rng = np.random.default_rng(n)
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        flop = 2 * n ** 3
        row = {"n": n,
               "numba": flop / median_time(lambda: cpu.matmul(a, b), repeats) / 1e9,
               "numpy reference (einsum)": flop / median_time(lambda: reference.matmul(a, b), repeats) / 1e9,
               "BLAS (np.matmul)": flop / median_time(lambda: a @ b, repeats) / 1e9}
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            row["torch"] = flop / median_time(lambda: ta @ tb, repeats) / 1e9
        row["numba / BLAS"] = row["numba"] / row["BLAS (np.matmul)"]
        rows.append(row)
    return rows


def _conv_impls():
    """name -> (forward, forward + backward) on the kernel level, for every conv strategy."""
    def numba_strategy(strategy, module):
        fwd = getattr(module, f"conv2d_forward_{strategy}")
        gin, gw = getattr(module, f"conv2d_grad_input_{strategy}"), getattr(module, f"conv2d_grad_weight_{strategy}")
        opts = ((1, 1), (1, 1), (1, 1), 1)

        def fb(x, w, b, need_dx=True):
            out = fwd(x, w, b, *opts)
            g = np.ones_like(out)
            dx = gin(g, w, x.shape, *opts) if need_dx else None
            return dx, gw(x, g, w.shape, *opts), g.sum(axis=(0, 2, 3))
        return (lambda x, w, b: fwd(x, w, b, *opts)), fb

    def interface(backend):
        def fwd(x, w, b):
            with K.use_backend(backend):
                return K.conv2d_forward(x, w, b, padding=1)

        def fb(x, w, b, need_dx=True):
            with K.use_backend(backend):  # the forward lends the backward its work, as spatial.Conv2d does
                saved = {}
                out = K.conv2d_forward(x, w, b, padding=1, saved=saved)
                return K.conv2d_backward(x, w, np.ones_like(out), padding=1, need_grad_x=need_dx, saved=saved)
        return fwd, fb

    def batched():
        opts = ((1, 1), (1, 1), (1, 1), 1)

        def fb(x, w, b, need_dx=True):
            out = conv_batched.conv2d_forward_batched(x, w, b, *opts)
            return conv_batched.conv2d_backward_batched(x, w, np.ones_like(out), *opts, need_dx, True)
        return (lambda x, w, b: conv_batched.conv2d_forward_batched(x, w, b, *opts)), fb

    impls = {"numba (auto)": interface("numba"), "numba im2col+BLAS": numba_strategy("im2col", conv_im2col),
             "numba im2col+BLAS, batch cut": batched(),
             "numba direct": numba_strategy("direct", conv_direct), "numba 3x3 blocks": numba_strategy("3x3", conv3x3),
             "numpy reference": interface("numpy")}
    if torch is not None:
        def t_fwd(x, w, b):
            with torch.no_grad():
                return torch.nn.functional.conv2d(x, w, b, padding=1)

        def t_fb(x, w, b, need_dx=True):
            x = x.detach().requires_grad_(need_dx)
            out = torch.nn.functional.conv2d(x, w, b, padding=1)
            out.backward(torch.ones_like(out))
            w.grad = b.grad = None
        impls["torch"] = (t_fwd, t_fb)
    return impls


def bench_conv(repeats):
    rows = []
    for label, (n, ci, co, hw) in CONV_SHAPES.items():
        rng = np.random.default_rng(ci)
        x = rng.standard_normal((n, ci, hw, hw), dtype=np.float32)
        w = rng.standard_normal((co, ci, 3, 3), dtype=np.float32)
        b = rng.standard_normal(co, dtype=np.float32)
        for name, (fwd, fb) in _conv_impls().items():
            args = (x, w, b)
            if name == "torch":
                args = (torch.from_numpy(x), torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_())
            rows.append({"shape": label, "impl": name,
                         "fwd ms": 1e3 * median_time(lambda: fwd(*args), repeats),
                         "fwd+bwd ms": 1e3 * median_time(lambda: fb(*args), repeats),
                         "fwd+bwd (no dx) ms": 1e3 * median_time(lambda: fb(*args, need_dx=False), repeats)})
    return rows


# The conv layers of the course's nets: (batch, C_in, C_out, H = W, kernel, stride), padding
# kernel // 2. The detector (W7) and the patch classifier (W8) are stand-ins until those
# models exist: a tiny-YOLO backbone (128 px down to an 8x8 grid by stride-2 3x3 convs,
# batch 16, 16-32-64-128-256 channels) and a ResNet-like classifier (32 px patches,
# batch 64, 32-64-128 channels, stride-2 3x3 convs with 1x1 stride-2 projections).
LAYERS = {"mnist_cnn conv2 (64, 16->32, 14x14)": (64, 16, 32, 14, 3, 1),
          "W2 conv B (64, 32->64, 14x14)": (64, 32, 64, 14, 3, 1),
          "U-Net enc1 (8, 16->16, 128x128)": (8, 16, 16, 128, 3, 1),
          "U-Net enc2a (8, 16->32, 64x64)": (8, 16, 32, 64, 3, 1),
          "U-Net enc2b (8, 32->32, 64x64)": (8, 32, 32, 64, 3, 1),
          "U-Net dec1 (8, 48->16, 128x128)": (8, 48, 16, 128, 3, 1),
          "detector conv1 s2 (16, 16->32, 128x128)": (16, 16, 32, 128, 3, 2),
          "detector conv2 s2 (16, 32->64, 64x64)": (16, 32, 64, 64, 3, 2),
          "detector conv3 s2 (16, 64->128, 32x32)": (16, 64, 128, 32, 3, 2),
          "detector conv4 s2 (16, 128->256, 16x16)": (16, 128, 256, 16, 3, 2),
          "detector 3x3 (16, 256->256, 8x8)": (16, 256, 256, 8, 3, 1),
          "detector head 1x1 (16, 256->35, 8x8)": (16, 256, 35, 8, 1, 1),
          "resnet block1 (64, 32->32, 32x32)": (64, 32, 32, 32, 3, 1),
          "resnet down2 s2 (64, 32->64, 32x32)": (64, 32, 64, 32, 3, 2),
          "resnet proj2 1x1 s2 (64, 32->64, 32x32)": (64, 32, 64, 32, 1, 2),
          "resnet block2 (64, 64->64, 16x16)": (64, 64, 64, 16, 3, 1),
          "resnet down3 s2 (64, 64->128, 16x16)": (64, 64, 128, 16, 3, 2),
          "resnet proj3 1x1 s2 (64, 64->128, 16x16)": (64, 64, 128, 16, 1, 2),
          "resnet block3 (64, 128->128, 8x8)": (64, 128, 128, 8, 3, 1),
          # the real W7 (examples/detection.py) and W8 (examples/competition.py) layers
          "W7 b4 (16, 32->32, 16x16)": (16, 32, 32, 16, 3, 1),
          "W7 b6 (16, 64->64, 8x8)": (16, 64, 64, 8, 3, 1),
          "W7 fuse (16, 48->32, 16x16)": (16, 48, 32, 16, 3, 1),
          "W8 stage0 conv2 (64, 32->32, 16x16)": (64, 32, 32, 16, 3, 1),
          "W8 stage1 conv2 (64, 64->64, 8x8)": (64, 64, 64, 8, 3, 1),
          "W8 stage2 conv1 s2 (64, 64->128, 8x8)": (64, 64, 128, 8, 3, 2),
          "W8 stage2 conv2 (64, 128->128, 4x4)": (64, 128, 128, 4, 3, 1)}


def bench_layers(repeats, only=None):
    """conv2d forward + backward (dx, dw, db) on the course's layers: numba (auto) and torch."""
    rows = []
    for label, (n, ci, co, hw, k, stride) in LAYERS.items():
        if only and not any(word in label for word in only):
            continue
        rng = np.random.default_rng(ci)
        x = rng.standard_normal((n, ci, hw, hw), dtype=np.float32)
        w = rng.standard_normal((co, ci, k, k), dtype=np.float32)
        b = rng.standard_normal(co, dtype=np.float32)
        opts = dict(stride=stride, padding=k // 2)

        def ours():
            saved = {}  # the forward lends the backward its work, as spatial.Conv2d does
            out = K.conv2d_forward(x, w, b, saved=saved, **opts)
            return K.conv2d_backward(x, w, np.ones_like(out), saved=saved, **opts)
        row = {"layer": label, "numba ms": 1e3 * median_time(ours, repeats)}
        if conv._winograd(w.shape, (stride, stride), (k // 2, k // 2), (1, 1), 1):
            geometry = ((stride, stride), (k // 2, k // 2), (1, 1), 1)

            def im2col():  # the path these layers took before Winograd's (conv_batched.py)
                out = conv_batched.conv2d_forward_batched(x, w, b, *geometry)
                return conv_batched.conv2d_backward_batched(x, w, np.ones_like(out), *geometry, True, True)
            row["im2col ms"] = 1e3 * median_time(im2col, repeats)
            row["im2col / numba"] = row["im2col ms"] / row["numba ms"]
        if torch is not None:
            tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))

            def theirs():
                out = torch.nn.functional.conv2d(tx, tw, tb, **opts)
                out.backward(torch.ones_like(out))
                tx.grad = tw.grad = tb.grad = None
            row["torch ms"] = 1e3 * median_time(theirs, repeats)
            row["torch / numba"] = row["torch ms"] / row["numba ms"]
        rows.append(row)
    return rows


def bench_spatial(repeats):
    """Pooling and upsampling: forward, and forward + backward, in ms."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32, 28, 28), dtype=np.float32)
    u = rng.standard_normal((64, 32, 14, 14), dtype=np.float32)
    ops = {
        "max_pool2d k2 (64, 32, 28x28)": (
            lambda: K.max_pool2d_forward(x, 2),
            lambda: K.max_pool2d_backward(*(lambda o: (np.ones_like(o[0]), o[1]))(K.max_pool2d_forward(x, 2)), x.shape),
            lambda t: torch.nn.functional.max_pool2d(t, 2), x),
        "upsample nearest x2 (64, 32, 14x14)": (
            lambda: K.upsample2d_forward(u, scale_factor=2),
            lambda: K.upsample2d_backward(np.ones_like(K.upsample2d_forward(u, scale_factor=2)), u.shape),
            lambda t: torch.nn.functional.interpolate(t, scale_factor=2), u),
        "upsample bilinear x2 (64, 32, 14x14)": (
            lambda: K.upsample2d_forward(u, scale_factor=2, mode="bilinear"),
            lambda: K.upsample2d_backward(np.ones_like(K.upsample2d_forward(u, scale_factor=2, mode="bilinear")),
                                          u.shape, mode="bilinear"),
            lambda t: torch.nn.functional.interpolate(t, scale_factor=2, mode="bilinear"), u),
    }
    rows = []
    for label, (fwd, fb, t_op, data) in ops.items():
        for backend in ("numba", "numpy"):
            with K.use_backend(backend):
                rows.append({"op": label, "impl": backend, "fwd ms": 1e3 * median_time(fwd, repeats),
                             "fwd+bwd ms": 1e3 * median_time(fb, repeats)})
        if torch is not None:
            tx = torch.from_numpy(data).requires_grad_()

            def t_fwd():
                with torch.no_grad():
                    t_op(tx)

            def t_fb():
                out = t_op(tx)
                out.backward(torch.ones_like(out))
                tx.grad = None
            rows.append({"op": label, "impl": "torch", "fwd ms": 1e3 * median_time(t_fwd, repeats),
                         "fwd+bwd ms": 1e3 * median_time(t_fb, repeats)})
    return rows


COLD_SCRIPT = r"""
import time
t0 = time.perf_counter()
import numpy as np
import tinygrad_uu
from tinygrad_uu import kernels as K
t1 = time.perf_counter()
rng = np.random.default_rng(0)
for n, ci, co, hw in SHAPES:
    x = rng.standard_normal((n, ci, hw, hw), dtype=np.float32)
    w = rng.standard_normal((co, ci, 3, 3), dtype=np.float32)
    out = K.conv2d_forward(x, w, np.zeros(co, np.float32), padding=1)
    K.conv2d_backward(x, w, np.ones_like(out), padding=1)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def bench_cold_start():
    """Seconds for import and for the first conv fwd+bwd, with an empty and a warm cache."""
    root = str(Path(__file__).resolve().parents[1])
    code = COLD_SCRIPT.replace("SHAPES", repr(list(CONV_SHAPES.values())))
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for label in ("empty cache", "warm cache"):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            total = time.perf_counter() - t
            imp, first = map(float, out.stdout.split())
            rows.append({"cache": label, "import s": imp, "first conv fwd+bwd s": first,
                         "process total s": total})
    return rows


def markdown(rows, columns, fmt="{:.2f}"):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [fmt.format(r[c]) if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per number (median)")
    parser.add_argument("--threads", default=THREADS, help="threads for numba, BLAS and torch (default 2)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start measurement")
    parser.add_argument("--layers-only", action="store_true",
                        help="only the per-layer table (the course's, the detector's and the ResNet's convs)")
    parser.add_argument("--only", default=None, metavar="WORD,WORD",
                        help="with --layers-only: the layers whose label has one of these words "
                             "(e.g. detector,resnet)")
    args = parser.parse_args(argv)

    import numba
    tg.set_num_threads(int(THREADS))
    info = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "torch": None if torch is None else torch.__version__, "threads": int(THREADS),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "clock": CLOCK.__name__,
            "load average at start": os.getloadavg()}
    print(f"# Kernel benchmarks (median of up to {args.repeats} runs, {THREADS} threads)\n")
    print(", ".join(f"{k}: {v}" for k, v in info.items()), "\n")
    results = {"info": info}
    if args.layers_only:
        only = [w.strip() for w in args.only.split(",")] if args.only else None
        results["layers"] = bench_layers(args.repeats, only)
        print("## conv2d fwd+bwd (dx, dw, db) per layer, float32, ms\n")
        print("numba: the engine's choice of kernel (Winograd where im2col ms is given: its time with\n"
              "im2col + BLAS beside it)\n")
        print(markdown(results["layers"], ["layer", "numba ms", "im2col ms", "im2col / numba"]
                       + (["torch ms", "torch / numba"] if torch else [])), "\n")
        results["info"]["load average at end"] = os.getloadavg()
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))
        return results

    results["matmul"] = bench_matmul(args.repeats)
    print("## matmul, float32, GFLOP/s (higher is better)\n")
    cols = ["n", "numba", "numpy reference (einsum)", "BLAS (np.matmul)"] + (["torch"] if torch else []) + ["numba / BLAS"]
    print(markdown(results["matmul"], cols), "\n")

    results["conv2d"] = bench_conv(args.repeats)
    print("## conv2d, float32, ms (lower is better); fwd+bwd computes dx, dw, db\n")
    for r in results["conv2d"]:
        t = next((q for q in results["conv2d"] if q["shape"] == r["shape"] and q["impl"] == "torch"), None)
        if t:
            r["torch / this (fwd+bwd)"] = t["fwd+bwd ms"] / r["fwd+bwd ms"]
    print(markdown(results["conv2d"], ["shape", "impl", "fwd ms", "fwd+bwd ms", "fwd+bwd (no dx) ms"]
                   + (["torch / this (fwd+bwd)"] if torch else [])), "\n")

    results["layers"] = bench_layers(args.repeats)
    print("## conv2d fwd+bwd (dx, dw, db) per layer, float32, ms\n")
    print(markdown(results["layers"], ["layer", "numba ms"] + (["torch ms", "torch / numba"] if torch else [])), "\n")

    results["spatial"] = bench_spatial(args.repeats)
    print("## pooling and upsampling, float32, ms\n")
    print(markdown(results["spatial"], ["op", "impl", "fwd ms", "fwd+bwd ms"]), "\n")

    if not args.no_cold:
        results["cold start"] = bench_cold_start()
        print("## cold start: import tinygrad_uu, then a first conv2d fwd+bwd on both conv shapes, seconds\n")
        print(markdown(results["cold start"], ["cache", "import s", "first conv fwd+bwd s", "process total s"]), "\n")

    results["info"]["load average at end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
