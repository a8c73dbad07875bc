"""Benchmarks: tinygrad_uu side by side with numpy by hand, PyTorch, tinygrad and micrograd.

Run ``python -m benchmarks --help``. The pieces, one job each:

* ``workloads.py``: the eight workloads W1-W8, their sizes and their (seeded) data;
* ``engines/``: one module per engine, each building a step for each workload;
* ``harness.py``: cross-check the engines' outputs, then time them interleaved;
* ``report.py``: the machine line, the markdown table, JSON and the bar chart;
* ``run.py``: the command line.

``bench_kernels.py`` (kernel micro-benchmarks) is separate and runs on its own.
"""

# One line per workload (the sizes and the data are in ``workloads.py``). Kept here, in a
# module that imports nothing, so that ``run.py`` can show them before numpy is imported.
WORKLOADS = {
    "W1": "matmul, float32, C = A @ B (N x N), GFLOP/s",
    "W2": "conv2d 3x3 pad 1, batch 64: forward, and forward + backward, GFLOP/s",
    "W3": "MLP 784-256-10 training step, batch 128 (softmax CE, SGD), samples/s",
    "W4": "CNN training step (conv-relu-pool x2, linear), batch 64 of 1x28x28, samples/s",
    "W5": "U-Net training step, batch 8 of 3x128x128 (BCE with logits), samples/s",
    "W6": "autograd overhead: 2,000 elementwise ops on 16-element tensors, fwd + bwd, ops/s",
    "W7": "detector (tiny YOLO, 2 heads) training step, batch 16 of 3x128x128, samples/s",
    "W8": "ResNet training step (examples/competition.py's), batch 64 of 3x32x32 (BCE), samples/s",
}
