"""The engine's threads: how every numba kernel's work is split among them.

Every kernel works on a range of independent *tasks* (an image-channel plane, a panel
of matrix rows, a chunk of images) that write disjoint memory:
``for task in range(start, stop)``. ``_parallel`` splits the tasks among threads; the
kernels release the GIL (``nogil=True``), so the threads run at the same time.
(Numba's own ``parallel=True``/``prange`` does the same split, but compiles 5-7x slower:
about a minute for the backend, on every fresh install. Threads over plain kernels keep
the first run short.)

How many threads: ``tinygrad_uu.set_num_threads`` (``threads.py``, which also states the
BLAS policy). Between pieces of work the threads spin for about a millisecond before
they sleep (``spinning.py``): waking a sleeping thread costs more than most kernels.

``fastmath=FAST`` lets LLVM reorder sums (``reassoc``) and fuse multiply-adds
(``contract``), which it needs to vectorise a reduction with AVX; we leave out the flags
that assume no NaN/inf, so NaN and inf still propagate.
"""
from __future__ import annotations

import itertools
import os
import sys
import threading
import time

import numpy as np
from numba.extending import register_jitable

from ..threads import get_num_threads
from .spinning import (SPIN_ROUNDS, publish, publish_then_wait, publish_then_wait_total, wait_until_total,
                       wait_while_equal)

FAST = {"reassoc", "contract", "nsz", "arcp"}  # no "nnan"/"ninf": NaN must propagate
# Offsets into flat views as unsigned integers: numba then skips the check (and wrap) of
# a negative index, which kept copy loops from vectorising (conv_im2col.py, measured).
U = np.uint64
SMALL_WORK = 1 << 15  # elements; below this, one thread beats handing work to others
# Kernels that stream through memory doing little per element (relu, batch norm): below
# this many elements one thread beats two (W7's step 1.03x against SMALL_WORK, W8's 1.01x;
# steps alternated in one process). Raised from 256 K to 512 K on an Intel Xeon (2 MB of
# L2 a core), two threads, steps alternated (40 rounds, load 1.0-1.4): W7 1.008x, W8
# 1.004x, W4 1.005x, W5 1.001x (in a first run of 30 rounds, W7 1.010x and W8 1.005x);
# 1 M and 2 M had cost W8 1-6% there.
STREAMING_WORK = 1 << 19
CHUNKS_PER_THREAD = 4
FLAG_STRIDE = 16  # int64s between two threads' flags: 128 bytes, so each has its own cache line
SWITCH_INTERVAL = 1e-4  # seconds a thread waits for the GIL before it asks for it, during a job (run)
# A worker that sees a new job does not take the GIL at once: the thread that posted the
# job holds it until its own first chunk is inside its kernel, and a worker that asks for
# it then sleeps on it and wakes 15-50 us later. The posting thread publishes, in
# ``flags[ENTRY_FLAG]``, the job's number just before it calls its first chunk; the worker
# spins until it sees that (at most ENTRY_ROUNDS), then HANDOFF_ROUNDS more (about 10 us
# on an Intel Xeon) while the kernel call is dispatched, and only then asks for the GIL.
# Measured with the cycle counter in a W8 step on two threads, Intel Xeon: the worker's
# first chunk started a median 44-51 us after the job was posted when it waited 200
# rounds after seeing the job (no entry flag), 28-31 us now. Steps alternated in one
# process (40-60 rounds, load 0.4-1.3), three runs: W4 1.038x, 1.013x and 1.026x, W8
# 1.017x, 1.003x and 1.024x, W7 1.021x and 1.010x, W5 1.000x. 400 and 1100 rounds after
# the entry in place of 700: W4 0.988x and 0.992x, W8 1.008x and 0.998x.
ENTRY_ROUNDS = 3_000
HANDOFF_ROUNDS = 700
ENTRY_FLAG = FLAG_STRIDE  # flags' own cache line for it
_pools: dict = {}


class _Job:
    """``do_chunk(i)`` for i in range(chunks), taken in turn by the threads that run ``work``:
    the thread that handed the job out takes them from the first on, the workers from the
    last back, until they meet. On two threads each then keeps to its own end of the
    images from one kernel to the next, where the previous kernel left them in its cache
    (what one core has just written is slow for the other to read: bench_cores.py). Steps
    on two threads alternated in one process against both ends taking them in one order
    (40-60 rounds, load 0.8-0.9): W4 1.009x twice, W8 1.016x, W5 1.010x, W7 1.005x.

    ``finished[FLAG_STRIDE * slot]`` is the number of chunks thread ``slot`` ran (0 the
    thread that handed the job out, i + 1 worker i), each on its own cache line, published
    when the thread finds no chunk left. The job is done when they add up to ``chunks``: a
    worker whose core was busy with someone else's work, and that had taken no chunk by
    then, is not waited for (it finds none left).
    Waiting for it made a W4 step on two threads, with a busy loop on the second core,
    2.9x as slow as on one thread; now 1.5x (measured: 22.9 and 12.1 ms against 7.9)."""

    def __init__(self, do_chunk, chunks: int, slots: np.ndarray):
        self.do_chunk, self.chunks, self.slots = do_chunk, chunks, slots  # slots: the pool's, made once
        self.taken = itertools.count()  # next() on it is atomic under the GIL
        self.from_front = itertools.count()  # the posting thread's chunks, from the first one
        self.from_back = itertools.count()  # the workers' chunks, counted from the last one
        self.finished = np.zeros(FLAG_STRIDE * len(slots), np.int64)
        self.errors: list = []

    def work(self, entry=None) -> int:
        """Take chunks and run them until none is left; return how many this thread ran.
        ``entry``: (flags, index, value) to publish just before the first chunk (the
        posting thread's, see HANDOFF_ROUNDS).
        The count is published once, after the last chunk, in the same numba call as the
        wait that follows (``finish``, or the worker's wait for the next job): a thread
        that published it in a call of its own needed the GIL again just after, at the
        moment the thread waiting for the count wanted it back, and one of the two slept.
        Under strace, 115 futex calls per W4 step on two threads before, 73 after; steps
        alternated in one process: W2 1.03x, W7 1.03x, W8 1.01x, W4 1.00-1.015x, W5 1.00x."""
        count = 0
        front = entry is not None  # the thread that handed the job out
        end = self.from_front if front else self.from_back
        for ticket in iter(self.taken.__next__, None):  # at most ``chunks`` tickets: the ends never cross
            if ticket >= self.chunks:
                break
            i = next(end) if front else self.chunks - 1 - next(end)
            if entry is not None:
                publish(*entry)
                entry = None
            try:
                self.do_chunk(i)
            except BaseException as error:  # handed to the thread that waits for the job
                self.errors.append(error)
            count += 1
        return count

    def finish(self, count: int) -> None:
        """The handing-out thread's end of the job: publish its count (slot 0), then wait
        until the counts add up to every chunk."""
        if publish_then_wait_total(self.finished, 0, count, self.slots, self.chunks, SPIN_ROUNDS):
            return
        while not wait_until_total(self.finished, self.slots, self.chunks, SPIN_ROUNDS):
            time.sleep(50e-6)  # a chunk is slow (its thread lost its core): stop spinning


class SpinningPool:
    """``workers`` threads that run one job at a time together with the thread that hands it out.

    ``flags[0]`` is the number of the latest job (``flags[ENTRY_FLAG]``: see HANDOFF_ROUNDS).
    A worker that has finished a job spins on it (without the GIL) for SPIN_ROUNDS, then
    sleeps on a condition until the next job; the thread that hands the job out spins
    until every chunk is finished (``_Job.finish``).

    A worker publishes its count of chunks and starts spinning in one numba call
    (publish_then_wait). Between two calls it would take the GIL for a moment, and the
    thread that had waited for the count would find the GIL taken and sleep: waking it
    costs microseconds on this virtual machine. Measured on a parallel kernel of 0.3 ms
    of work (8 pieces, two threads): 175-212 us against 200-330 us; training steps
    alternated in one process, W7 1.00-1.05x, W8 1.01-1.02x.
    """

    def __init__(self, workers: int):
        self.flags = np.zeros(2 * FLAG_STRIDE, np.int64)
        self.threads = workers + 1
        self._slots = FLAG_STRIDE * np.arange(self.threads)  # each thread's count in a job's ``finished``
        self._current = (0, None)  # (job number, job); job None: stop spinning, sleep
        self._wake = threading.Condition()
        self._sleepers = 0
        self._in_use = threading.Lock()
        for i in range(workers):
            threading.Thread(target=self._work, args=(i,), daemon=True,
                             name=f"tinygrad_uu-{i}").start()

    def _work(self, i: int) -> None:
        flags, seen, slot = self.flags, 0, FLAG_STRIDE * (i + 1)
        latest = wait_while_equal(flags, 0, seen, SPIN_ROUNDS)  # the job number last seen
        while True:
            if latest == seen:  # no new job came while spinning: sleep until one does
                with self._wake:
                    self._sleepers += 1
                    while flags[0] == seen:
                        self._wake.wait()
                    self._sleepers -= 1
            seen, job = self._current  # set before flags[0]; it may be newer than the flag seen
            if job is None:  # sent to rest: sleep
                latest = seen
                continue
            count = job.work()
            # publish the count, then spin for the next job, without taking the GIL in between
            latest = publish_then_wait(job.finished, slot, count, flags, 0, seen, SPIN_ROUNDS, ENTRY_FLAG,
                                       ENTRY_ROUNDS, HANDOFF_ROUNDS)

    def _post(self, job) -> int:
        number = self._current[0] + 1
        self._current = (number, job)
        self.flags[0] = number
        if job is not None and self._sleepers:
            with self._wake:
                self._wake.notify_all()
        return number

    def run(self, do_chunk, chunks: int) -> None:
        """do_chunk(i) for every i in range(chunks), on the workers and this thread at once;
        returns when every chunk is done. While another thread has the pool, all of them
        run on this thread.

        Between two kernels each thread runs a little Python, which needs the GIL: a
        thread back from a kernel waits for it while another holds it, and asks for it
        after the switch interval. Python's default, 5 ms, is far longer than the Python
        between two kernels, so for the job the interval is SWITCH_INTERVAL: a noop
        kernel in 8 pieces on two threads took 16-17 us against 23-28 (measured)."""
        if not self._in_use.acquire(blocking=False):
            for i in range(chunks):
                do_chunk(i)
            return
        interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            job = _Job(do_chunk, chunks, self._slots)
            number = self._post(job)
            count = 0
            try:
                count = job.work((self.flags, ENTRY_FLAG, number))
            finally:
                job.finish(count)
            if job.errors:
                raise job.errors[0]
        finally:
            sys.setswitchinterval(interval)
            self._in_use.release()

    def awake(self) -> bool:
        """Whether every worker is spinning (none asleep): a job handed out now starts at
        once, without waking anyone."""
        return self._sleepers == 0

    def rest(self) -> None:
        """Send the spinning workers to sleep now (before BLAS runs on threads of its own)."""
        if self._sleepers < self.threads - 1 and self._in_use.acquire(blocking=False):
            try:
                self._post(None)
            finally:
                self._in_use.release()


def _pool() -> SpinningPool:
    """This process's pool for ``get_num_threads()`` threads (a forked child, such as a
    DataLoader worker, makes its own: its parent's threads are not in it)."""
    key = (os.getpid(), get_num_threads())
    if key not in _pools:
        _pools[key] = SpinningPool(key[1] - 1)
    return _pools[key]


def rest_threads() -> None:
    """Call before a BLAS product that runs on BLAS's own threads: the engine's threads
    stop spinning, and leave the cores to BLAS."""
    pid = os.getpid()
    for (owner, _), pool in _pools.items():
        if owner == pid:
            pool.rest()


@register_jitable  # plain Python where Python calls it, compiled inside the kernels
def _chunk(k, n, chunks):
    """(first image, last image + 1) of chunk k of ``chunks``: sizes that differ by one
    image at most."""
    return n * k // chunks, n * (k + 1) // chunks


class PerThread:
    """One accumulator per thread that runs a job's tasks, made by ``make()`` on first use.

    A job split into pieces runs several pieces on each thread. A weight gradient summed
    over the batch needs a partial sum per piece of work; one per piece (8 on two threads)
    costs a zeroed array each and a serial sum of all of them at the end: 0.5 ms for the
    1 MB partials of a 128 -> 128 Winograd conv (measured). One per thread: two of them.
    A thread runs its pieces one after another, so its accumulator needs no lock."""

    def __init__(self, make):
        self._make, self._by_thread = make, {}

    def mine(self):
        ident = threading.get_ident()
        acc = self._by_thread.get(ident)
        if acc is None:  # a dict item set by one thread for its own key: atomic under the GIL
            acc = self._by_thread[ident] = self._make()
        return acc

    def values(self) -> list:
        return list(self._by_thread.values())

    def total(self):
        """The accumulators (arrays) added up, into the first of them: no new array, where
        ``sum(values())`` copies the first (a 2.4 MB dU of a 128 -> 128 Winograd conv: 53 us)."""
        first, *rest = self.values()
        for acc in rest:
            first += acc
        return first


def on_one_thread(tasks: int, work: int, streaming: bool = False) -> bool:
    """Whether ``_parallel`` would run this job on the calling thread alone."""
    return min(get_num_threads(), tasks) <= 1 or work < (STREAMING_WORK if streaming else SMALL_WORK)


def _parallel(kernel, tasks: int, work: int, *args, streaming: bool = False) -> None:
    """Run ``kernel(*args, start, stop)`` over tasks [0, tasks), split among threads.

    As many threads as ``tinygrad_uu.get_num_threads()``; just this one when ``work``
    (elements touched) is under SMALL_WORK, or under STREAMING_WORK for a ``streaming`` kernel.
    The tasks are cut into CHUNKS_PER_THREAD pieces per thread, which the threads take
    in turn as they finish (this one from the first piece on, the others from the last
    back: ``_Job``): on a shared machine one thread is often slowed down, and the others
    then take over its share instead of waiting for it. A streaming kernel
    (relu, batch norm, a pad: short jobs, even tasks) is cut into one piece per thread:
    each piece is a call that needs the GIL to start and to return, and on two threads
    those calls collide. Steps on two threads alternated in one process, on an Intel
    Xeon: W7 1.028x, W8 1.026x, W5 1.005x, W2 1.008x, W4 1.001x; with a busy loop on the
    second core (where a thread that took its piece and lost its core is waited for) W7
    1.018x, W4 0.986x, W8 0.973x (on such a machine, use one thread: threads.py).
    """
    if on_one_thread(tasks, work, streaming):
        kernel(*args, 0, tasks)
        return
    threads = min(get_num_threads(), tasks)
    chunks = min(tasks, (1 if streaming else CHUNKS_PER_THREAD) * threads)
    bounds = [tasks * i // chunks for i in range(chunks + 1)]
    _pool().run(lambda i: kernel(*args, bounds[i], bounds[i + 1]), chunks)  # extra threads find none
