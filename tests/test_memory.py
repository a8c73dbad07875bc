"""Graphs are freed: memory does not grow from epoch to epoch."""
import gc
import tracemalloc

import numpy as np

import tinygrad_uu as tg
import tinygrad_uu.nn.functional as F
from tinygrad_uu import nn, optim
from tinygrad_uu.autograd import Function


def test_memory_is_flat_across_epochs():
    rng = np.random.default_rng(0)
    x = rng.random((512, 64), dtype=np.float32)
    y = rng.integers(0, 10, 512)
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = optim.Adam(model.parameters(), lr=1e-3)

    def epoch():
        for i in range(0, 512, 32):
            loss = F.cross_entropy(model(tg.tensor(x[i:i + 32])), y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()

    epoch()  # warm-up: optimizer state and caches are allocated once
    gc.collect()
    tracemalloc.start()
    try:
        epoch()
        gc.collect()
        after_two = tracemalloc.get_traced_memory()[0]
        for _ in range(4):
            epoch()
        gc.collect()
        after_six = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # one step's graph (activations of 32x128 floats) is ~20 kB; a leak of one graph per
    # step would add ~1.3 MB over four epochs of 16 steps
    assert after_six - after_two < 100_000
    assert sum(issubclass(type(o), Function) for o in gc.get_objects()) < 20  # type(): no proxies
