"""The engine's threads: how every numba kernel's work is split among them.

Every kernel works on a range of independent *tasks* (an image-channel plane, a panel
of matrix rows, a chunk of images) that write disjoint memory:
``for task in range(start, stop)``. ``_parallel`` splits the tasks among threads; the
kernels release the GIL (``nogil=True``), so the threads run at the same time.
(Numba's own ``parallel=True``/``prange`` does the same split, but compiles 5-7x slower:
about a minute for the backend, on every fresh install. Threads over plain kernels keep
the first run short.)

How many threads: ``tinygrad_uu.set_num_threads`` (``threads.py``, which also states the
BLAS policy). ``fastmath=FAST`` lets LLVM reorder sums (``reassoc``) and fuse
multiply-adds (``contract``), which it needs to vectorise a reduction with AVX; we leave
out the flags that assume no NaN/inf, so NaN and inf still propagate.
"""
from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor

from ..threads import get_num_threads

FAST = {"reassoc", "contract", "nsz", "arcp"}  # no "nnan"/"ninf": NaN must propagate
SMALL_WORK = 1 << 15  # elements; below this, one thread beats handing work to others
CHUNKS_PER_THREAD = 4
_pools: dict = {}


def _parallel(kernel, tasks: int, work: int, *args) -> None:
    """Run ``kernel(*args, start, stop)`` over tasks [0, tasks), split among threads.

    As many threads as ``tinygrad_uu.get_num_threads()``; just this one when ``work``
    (elements touched) is small.
    The tasks are cut into CHUNKS_PER_THREAD pieces per thread, which the threads take
    in turn as they finish: on a shared machine one thread is often slowed down, and
    the others then take over its share instead of waiting for it.
    """
    threads = min(get_num_threads(), tasks)
    if threads <= 1 or work < SMALL_WORK:
        kernel(*args, 0, tasks)
        return
    key = (os.getpid(), threads)  # a forked child (a DataLoader worker) must not reuse its parent's pool
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(threads - 1, thread_name_prefix="tinygrad_uu")
    chunks = min(tasks, CHUNKS_PER_THREAD * threads)
    bounds = [tasks * i // chunks for i in range(chunks + 1)]
    taken = itertools.count()  # next() on it is atomic under the GIL

    def work_through():
        for i in iter(taken.__next__, None):
            if i >= chunks:
                return
            kernel(*args, bounds[i], bounds[i + 1])

    others = [_pools[key].submit(work_through) for _ in range(threads - 1)]
    work_through()  # this thread works too
    for job in others:
        job.result()
