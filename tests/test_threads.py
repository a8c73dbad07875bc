"""The engine's one thread setting: set/get, the default and its environment variable,
the BLAS it governs (read back through threadpoolctl), the kernels' thread split, the
single-threaded-BLAS blocks of the engine's own threads, and --threads on the examples."""
import importlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tinygrad_uu as tg
from tinygrad_uu import threads

threadpoolctl = pytest.importorskip("threadpoolctl")
ROOT = Path(__file__).resolve().parents[1]


def blas_threads():
    """The thread counts of every BLAS library loaded in this process."""
    return {info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"}


@pytest.fixture
def restore_threads():
    before = tg.get_num_threads()
    yield
    tg.set_num_threads(before)


def run_python(code, **env):
    full = {k: v for k, v in os.environ.items() if k != threads.ENV_VARIABLE}
    full.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)


def test_set_num_threads_governs_the_blas_and_reads_back(restore_threads):
    for n in (1, 3, 2):
        tg.set_num_threads(n)
        assert tg.get_num_threads() == n
        assert blas_threads() == {n}


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True, None])
def test_set_num_threads_rejects_what_is_not_a_whole_number_of_threads(bad, restore_threads):
    with pytest.raises(ValueError, match="set_num_threads: the number of threads"):
        tg.set_num_threads(bad)


def test_the_default_is_the_cores_this_process_may_use():
    """Under a CPU mask of one core, a fresh import uses one thread, BLAS included."""
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "import tinygrad_uu as tg, threadpoolctl; "
            "print(tg.get_num_threads(), sorted({i['num_threads'] for i in threadpoolctl.threadpool_info() "
            "if i['user_api'] == 'blas'}))")
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU masks on this platform")
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(None, 1) == ["1", "[1]\n"]


def test_the_environment_variable_sets_the_default_at_import():
    code = ("import tinygrad_uu as tg, threadpoolctl; "
            "print(tg.get_num_threads(), sorted({i['num_threads'] for i in threadpoolctl.threadpool_info() "
            "if i['user_api'] == 'blas'}))")
    out = run_python(code, **{threads.ENV_VARIABLE: "3"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(None, 1) == ["3", "[3]\n"]
    bad = run_python("import tinygrad_uu", **{threads.ENV_VARIABLE: "lots"})
    assert bad.returncode != 0 and threads.ENV_VARIABLE in bad.stderr and "'lots'" in bad.stderr


def test_single_threaded_blas_blocks_count_themselves(restore_threads):
    """One BLAS thread while any block is open (nested too), also as seen from another
    thread (where the engine's threads call BLAS); the engine's setting back when the
    last block closes."""
    tg.set_num_threads(2)
    seen = []
    with threads.single_threaded_blas():
        assert blas_threads() == {1}
        with threads.single_threaded_blas():
            worker = threading.Thread(target=lambda: seen.append(blas_threads()))
            worker.start()
            worker.join()
        assert blas_threads() == {1}
    assert seen == [{1}] and blas_threads() == {2}


def test_the_kernels_split_their_work_over_the_engine_threads(monkeypatch, restore_threads):
    """_parallel asks tinygrad_uu for the thread count: one thread runs all tasks in one
    call on this thread; two threads cut them into chunks and run some elsewhere."""
    from tinygrad_uu.kernels import parallel
    monkeypatch.setattr(parallel, "SMALL_WORK", 0)
    calls = []

    def kernel(start, stop):
        calls.append((threading.get_ident(), start, stop))

    tg.set_num_threads(1)
    parallel._parallel(kernel, 16, 10**9)
    assert calls == [(threading.get_ident(), 0, 16)]
    calls.clear()
    tg.set_num_threads(2)
    parallel._parallel(kernel, 16, 10**9)
    assert sorted((a, b) for _, a, b in calls) == [(2 * i, 2 * i + 2) for i in range(8)]


@pytest.mark.parametrize("example", ["linear_regression", "numpy_mlp", "mnist_mlp", "mnist_cnn", "segmentation"])
def test_every_example_takes_threads_and_puts_it_into_effect(example, restore_threads):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        module = importlib.import_module(example)
        common = importlib.import_module("common")
    finally:
        sys.path.remove(str(ROOT / "examples"))
    args = module.parse_args(["--threads", "1"])
    common.apply_engine_options(args)
    assert tg.get_num_threads() == 1 and blas_threads() == {1}
    assert module.parse_args([]).threads is None  # the default: the engine's
    source = (ROOT / "examples" / f"{example}.py").read_text()
    assert "OPENBLAS_NUM_THREADS" not in source


def test_conv_results_do_not_depend_on_the_thread_count(restore_threads):
    """The same conv forward and backward, bit for bit up to summation order, at 1 and 2 threads."""
    from tinygrad_uu import kernels as K
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 10, 10)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    results = []
    for n in (1, 2):
        tg.set_num_threads(n)
        out = K.conv2d_forward(x, w, stride=2, padding=1)
        results.append((out,) + K.conv2d_backward(x, w, np.ones_like(out), stride=2, padding=1))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("a_shape, b_shape", [((6, 5), (5, 4)), ((5,), (5, 3)), ((2, 6, 5), (5,)),
                                              ((3, 1, 4, 5), (2, 5, 2)), ((300, 300), (300, 300))])
def test_the_engines_products_equal_numpys_and_small_ones_use_one_blas_thread(a_shape, b_shape, monkeypatch,
                                                                                restore_threads):
    """kernels.blas.matmul is a @ b; on two threads a product under BLAS_THREADS_MIN_FLOPS
    runs inside a single-threaded-BLAS block and a bigger one on BLAS's threads."""
    from tinygrad_uu.kernels import blas
    tg.set_num_threads(2)
    rng = np.random.default_rng(len(a_shape))
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    seen = []
    real = threads._set_blas_threads
    monkeypatch.setattr(threads, "_set_blas_threads", lambda n: (seen.append(n), real(n)))
    np.testing.assert_allclose(blas.matmul(a, b), a @ b, rtol=1e-12)
    small = blas._flops(a, b) < blas.BLAS_THREADS_MIN_FLOPS
    assert seen == ([1, 2] if small else [])
    assert small == (a_shape != (300, 300))


@pytest.mark.parametrize("n, rows, positions, out_channels", [
    (16, 72, 1024, 16),   # W7's 8 -> 16 stride-2 layer at 64x64
    (16, 576, 64, 64),    # W7's 64 -> 64 at 8x8
    (64, 288, 256, 64),   # W8's 32 -> 64 stride 2
    (64, 256, 49, 32),    # W4's Winograd 16 -> 32 at 14x14: once cut 20 + 20 + 20 + 4
    (64, 128, 1, 1),      # W8's head: a 1x1 conv to one logit, 16 KFLOP per image
    (3, 9, 4, 1), (1, 576, 64, 64)])
def test_conv_chunks_cover_the_batch_and_give_every_thread_as_many(n, rows, positions, out_channels,
                                                                   restore_threads):
    """16 images cut 7 + 7 + 2 left one of two threads 9 of them: the chunk count is a
    multiple of the thread count wherever the batch allows it; a batch with too little
    work for a second thread is one chunk."""
    from tinygrad_uu.kernels.conv_batched import MIN_CHUNK_FLOPS, _chunking
    from tinygrad_uu.kernels.parallel import _chunk
    tg.set_num_threads(2)
    flops = 2 * out_channels * rows * positions
    chunks = _chunking(n, rows, positions, 4, flops)
    bounds = [_chunk(k, n, chunks) for k in range(chunks)]
    sizes = [b - a for a, b in bounds]
    assert bounds[0][0] == 0 and bounds[-1][1] == n and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1  # even chunks
    assert chunks % 2 == 0 or chunks == 1 or chunks == n  # one image per chunk: no evener split exists
    if n * flops < MIN_CHUNK_FLOPS and n * rows * positions * 4 < (1 << 20):
        assert chunks == 1


def test_the_small_chunk_budget_wherever_its_chunks_hold_enough_images(restore_threads, one_megabyte_l2):
    """One thread: always half the L2 of cols per chunk (512 KB with the 1 MB of L2 set
    here). More: 512 KB where that holds SMALL_CHUNK_MIN_IMAGES images (W4's Winograd
    layer, 110 KB an image), else 1 MB."""
    from tinygrad_uu.kernels import conv_batched as cb
    small, big = cb.CHUNK_COLS_BYTES, cb.CHUNK_COLS_BYTES_THREADED
    enough = small // cb.SMALL_CHUNK_MIN_IMAGES
    tg.set_num_threads(1)
    assert cb._chunk_budget(enough + 1) == cb._chunk_budget(10 * small) == small
    tg.set_num_threads(2)
    assert cb._chunk_budget(enough) == cb._chunk_budget(110 << 10) == small
    assert cb._chunk_budget(enough + 1) == cb._chunk_budget(10 * small) == big
    assert cb._chunking(64, 36 * 48, 16, 4) == 16  # W4's 16 -> 32 at 14x14: 4 images a chunk


@pytest.mark.parametrize("chunks", [2, 8, 10, 24])
def test_conv_chunks_are_handed_to_the_threads_one_by_one(chunks, restore_threads):
    """Every chunk of images is a piece of its own: 10 chunks cut into 8 pieces left two
    pieces of two chunks, and the thread that took the last of them held the other up."""
    from tinygrad_uu.kernels.conv_batched import _run_chunks
    tg.set_num_threads(2)
    calls = []
    _run_chunks(lambda start, stop: calls.append((start, stop)), chunks, 64)
    assert sorted(calls) == [(k, k + 1) for k in range(chunks)]
    tg.set_num_threads(1)
    calls.clear()
    _run_chunks(lambda start, stop: calls.append((start, stop)), chunks, 64)
    assert calls == [(0, chunks)]


def test_streaming_kernels_stay_on_one_thread_below_their_own_threshold(restore_threads):
    """A kernel that streams through memory (relu, batch norm) is split among threads only
    from STREAMING_WORK elements on; another from SMALL_WORK on."""
    from tinygrad_uu.kernels import parallel
    tg.set_num_threads(2)
    work = (parallel.SMALL_WORK + parallel.STREAMING_WORK) // 2
    for streaming, want_calls in ((True, 1), (False, 8)):
        calls = []
        parallel._parallel(lambda start, stop: calls.append((start, stop)), 8, work, streaming=streaming)
        assert len(calls) == want_calls and sorted(calls)[0][0] == 0 and sorted(calls)[-1][1] == 8


def test_per_thread_accumulators_add_up_into_the_first(restore_threads):
    """PerThread.total: the sum of every thread's accumulator, made in the first (no copy)."""
    from tinygrad_uu.kernels import parallel
    tg.set_num_threads(2)
    partials = parallel.PerThread(lambda: np.zeros(3))
    parallel._pool().run(lambda i: partials.mine().__iadd__(np.arange(3.0) * (i + 1)), 8)
    first = partials.values()[0]
    total = partials.total()
    assert total is first
    np.testing.assert_array_equal(total, np.arange(3.0) * 36)
    alone = parallel.PerThread(lambda: np.ones(2))
    mine = alone.mine()
    assert alone.total() is mine


@pytest.mark.parametrize("small, awake", [(True, True), (True, False), (False, True)])
def test_a_pair_of_small_products_runs_side_by_side_on_two_threads(small, awake, monkeypatch, pool_jobs,
                                                                   restore_threads):
    """kernels.blas.matmul_pair gives both products; two small ones (a Linear layer's dx
    and dW) go to the engine's threads as a job of two when they are awake; bigger ones
    go to BLAS's threads, and with the engine's threads asleep (sent to rest for such a
    product) the two run one after the other."""
    from tinygrad_uu.kernels import blas, parallel
    rng = np.random.default_rng(int(small))
    k = 20 if small else 600
    g, w, x = rng.standard_normal((64, 10 if small else 300)), rng.standard_normal((10 if small else 300, k)), \
        rng.standard_normal((64, k))
    jobs = pool_jobs
    monkeypatch.setattr(parallel.SpinningPool, "awake", lambda self: awake)
    for n in (1, 2):
        tg.set_num_threads(n)
        jobs.clear()
        gx, gw = blas.matmul_pair(g, w, g.T, x)
        np.testing.assert_allclose(gx, g @ w, rtol=1e-12)
        np.testing.assert_allclose(gw, g.T @ x, rtol=1e-12)
        assert jobs == ([2] if n == 2 and small and awake else [])


def test_a_pool_is_awake_until_its_workers_are_sent_to_rest(restore_threads):
    """SpinningPool.awake is false once rest_threads has sent the workers to sleep (before
    a product on BLAS's threads), so that matmul_pair does not wake them."""
    from tinygrad_uu.kernels import parallel
    tg.set_num_threads(2)
    pool = parallel._pool()
    pool.run(lambda i: None, 2)
    parallel.rest_threads()
    deadline = time.monotonic() + 5
    while pool.awake() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not pool.awake()


def test_a_small_padding_is_copied_on_one_thread(pool_jobs, restore_threads):
    """Padding is a copy: a streaming kernel. W4's 64 first-layer images are padded on the
    calling thread; a batch over STREAMING_WORK values is split among the threads, one
    piece each."""
    from tinygrad_uu.kernels import elementwise
    tg.set_num_threads(2)
    jobs = pool_jobs
    for shape, want in (((64, 1, 28, 28), []), ((8, 16, 64, 64), [2])):
        jobs.clear()
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(elementwise._pad(x, (1, 1)), np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))))
        assert jobs == want


@pytest.mark.parametrize("files, expected", [
    ({"index0": ("1", "Data", "48K"), "index1": ("1", "Instruction", "32K"), "index2": ("2", "Unified", "2048K"),
      "index3": ("3", "Unified", "32768K")}, 2 << 20),
    ({"index0": ("1", "Data", "32K"), "index2": ("2", "Unified", "1M")}, 1 << 20),
    ({"index2": ("2", "Unified", "64K")}, 256 << 10),         # kept within 256 KB - 4 MB
    ({"index2": ("2", "Unified", "64M")}, 4 << 20),
    ({"index0": ("1", "Data", "32K")}, 777),                   # no L2 listed: the default
    ({"index2": ("2", "Unified", "lots")}, 777),               # unreadable: the default
])
def test_the_chunk_budget_reads_the_l2_cache_size(tmp_path, files, expected):
    """conv_batched.l2_cache_bytes reads Linux's sysfs cache folders (level, type, size)."""
    from tinygrad_uu.kernels import conv_batched as cb
    for index, (level, kind, size) in files.items():
        (tmp_path / index).mkdir()
        for name, text in (("level", level), ("type", kind), ("size", size)):
            (tmp_path / index / name).write_text(text + "\n")
    assert cb.l2_cache_bytes(default=777, base=str(tmp_path)) == expected
    assert cb.l2_cache_bytes(default=777, base=str(tmp_path / "missing")) == 777
    assert cb.CHUNK_COLS_BYTES == cb.CHUNK_COLS_BYTES_THREADED // 2 == cb.l2_cache_bytes() // 2
