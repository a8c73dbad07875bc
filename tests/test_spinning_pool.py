"""The engine's thread pool (kernels/parallel.py) and its spin waits (kernels/spinning.py):
every task runs exactly once, on more than one thread; errors reach the caller; a second
Python thread that finds the pool in use runs its job alone; workers that were sent to
rest or fell asleep wake for the next job; and the spin waits see a flag written by
another thread."""
import threading
import time

import numpy as np
import pytest

import tinygrad_uu as tg
from tinygrad_uu.kernels import parallel, spinning


@pytest.fixture
def two_threads():
    before = tg.get_num_threads()
    tg.set_num_threads(2)
    yield
    tg.set_num_threads(before)


def test_the_spin_waits_return_at_once_when_the_flag_is_already_there():
    flags = np.zeros(64, np.int64)
    flags[16] = 7
    assert spinning.wait_while_equal(flags, 16, 3, 10) == 7
    assert spinning.wait_while_equal(flags, 16, 7, 10) == 7  # ran out of rounds: the value
    assert spinning.wait_until_total(flags, np.array([16]), 7, 0)
    flags[0] = 2
    assert spinning.wait_until_total(flags, np.array([0, 16]), 9, 0)
    assert not spinning.wait_until_total(flags, np.array([0, 16]), 7, 10)


def test_the_spin_wait_sees_a_flag_written_by_another_thread():
    """The read is an atomic load inside the loop: a plain read could be hoisted out of it,
    and then the wait would never see the change."""
    flags = np.zeros(32, np.int64)
    writer = threading.Timer(0.05, lambda: flags.__setitem__(16, 5))
    writer.start()
    started = time.perf_counter()
    seen = 0
    while seen != 5 and time.perf_counter() - started < 10:
        seen = spinning.wait_while_equal(flags, 16, 0, 1_000_000)
    writer.join()
    assert seen == 5
    assert spinning.wait_until_total(flags, np.array([16]), 5, 1_000_000)


def test_every_task_runs_once_and_more_than_one_thread_works(monkeypatch, two_threads):
    monkeypatch.setattr(parallel, "SMALL_WORK", 0)
    counts = np.zeros(1000, np.int64)
    threads_seen = set()

    def kernel(start, stop):
        threads_seen.add(threading.get_ident())
        counts[start:stop] += 1
        time.sleep(0.002)  # long enough that the other thread takes a chunk

    for _ in range(20):
        parallel._parallel(kernel, 1000, 10**9)
    assert (counts == 20).all()
    assert len(threads_seen) == 2


def test_the_posting_thread_takes_chunks_from_the_front_and_the_worker_from_the_back(two_threads):
    """Each thread keeps to its own end of the chunks: the posting thread's are 0, 1, ...
    in order, the worker's the last ones, counted back; together every chunk once."""
    pool, main = parallel._pool(), threading.get_ident()
    for _ in range(10):
        taken = []

        def do_chunk(i):
            taken.append((threading.get_ident() == main, i))
            time.sleep(0.001)  # long enough that the worker takes some

        pool.run(do_chunk, 12)
        mine = [i for own, i in taken if own]
        theirs = [i for own, i in taken if not own]
        assert sorted(mine + theirs) == list(range(12))
        assert mine == list(range(len(mine)))
        assert theirs == list(range(11, 11 - len(theirs), -1))
        assert theirs, "the worker took no chunk"


def test_per_thread_accumulators_one_per_thread_and_every_task_counted(monkeypatch, two_threads):
    """The tasks' pieces add into their thread's own accumulator: two accumulators, not
    one per piece, and together they hold every task once."""
    monkeypatch.setattr(parallel, "SMALL_WORK", 0)
    made = []
    sums = parallel.PerThread(lambda: made.append(1) or np.zeros(1000, np.int64))

    def kernel(start, stop):
        sums.mine()[start:stop] += 1
        time.sleep(0.002)

    parallel._parallel(kernel, 1000, 10**9)
    assert len(made) == len(sums.values()) == 2
    assert (sum(sums.values()) == 1).all()
    assert sums.mine() is sums.mine()


def test_an_error_in_a_worker_reaches_the_caller_and_the_pool_still_works(monkeypatch, two_threads):
    monkeypatch.setattr(parallel, "SMALL_WORK", 0)
    main = threading.get_ident()

    def failing(start, stop):
        if threading.get_ident() != main:
            raise ValueError(f"tasks {start}-{stop} failed")
        time.sleep(0.01)  # leave chunks for the worker

    with pytest.raises(ValueError, match="failed"):
        for _ in range(50):  # until the worker takes a chunk
            parallel._parallel(failing, 8, 10**9)
    done = []
    parallel._parallel(lambda start, stop: done.append((start, stop)), 8, 10**9)
    assert sorted(done) == [(i, i + 1) for i in range(8)]


def test_a_worker_that_has_not_started_is_not_waited_for(monkeypatch, two_threads):
    """While the worker cannot start (its core busy with other work; here it sleeps before
    it takes a chunk) the calling thread does every chunk and the job returns without
    waiting for it; when the worker does start it finds none left, and the pool works on."""
    pool = parallel.SpinningPool(1)
    real_work = parallel._Job.work

    def late_start(job, entry=None):
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.5)
        return real_work(job, entry)

    monkeypatch.setattr(parallel._Job, "work", late_start)
    done = []
    started = time.perf_counter()
    pool.run(done.append, 8)
    assert sorted(done) == list(range(8)) and time.perf_counter() - started < 0.25
    time.sleep(0.6)  # the worker starts the old job, finds no chunk, and comes back
    monkeypatch.setattr(parallel._Job, "work", real_work)
    done.clear()
    pool.run(lambda i: (done.append(i), time.sleep(0.002)), 8)
    assert sorted(done) == list(range(8))


def test_a_job_runs_with_the_short_switch_interval_and_the_callers_comes_back(monkeypatch, two_threads):
    """Inside a job every thread sees SWITCH_INTERVAL; after it, even when an error ends
    it, the interval is the caller's own again. An error raised on every thread goes up
    once: the workers' are not left over to fail the next job."""
    monkeypatch.setattr(parallel, "SMALL_WORK", 0)
    import sys
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.004)
        seen = []
        parallel._parallel(lambda start, stop: seen.append(sys.getswitchinterval()), 8, 10**9)
        assert seen and all(abs(v - parallel.SWITCH_INTERVAL) < 1e-9 for v in seen)
        assert abs(sys.getswitchinterval() - 0.004) < 1e-9

        def failing(start, stop):
            raise ValueError("failed")

        with pytest.raises(ValueError, match="failed"):
            parallel._parallel(failing, 8, 10**9)
        assert abs(sys.getswitchinterval() - 0.004) < 1e-9
        parallel._parallel(lambda start, stop: None, 8, 10**9)
    finally:
        sys.setswitchinterval(before)


def test_a_second_caller_runs_alone_while_the_pool_is_in_use(monkeypatch, two_threads):
    """Two Python threads calling kernels at once: one gets the pool, the other runs its
    tasks on its own thread; every task of both runs once."""
    monkeypatch.setattr(parallel, "SMALL_WORK", 0)
    counts = {name: np.zeros(64, np.int64) for name in ("a", "b")}

    def caller(name):
        def kernel(start, stop):
            counts[name][start:stop] += 1
            time.sleep(0.001)
        for _ in range(10):
            parallel._parallel(kernel, 64, 10**9)

    others = [threading.Thread(target=caller, args=(name,)) for name in counts]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join()
    assert all((c == 10).all() for c in counts.values())


@pytest.mark.parametrize("spin_rounds", [0, spinning.SPIN_ROUNDS])
def test_workers_sent_to_rest_or_asleep_wake_for_the_next_job(spin_rounds, monkeypatch, two_threads):
    """With no spinning the workers sleep after each job; with it, rest_threads sends them
    to sleep. Either way the next job wakes them."""
    monkeypatch.setattr(parallel, "SMALL_WORK", 0)
    monkeypatch.setattr(parallel, "SPIN_ROUNDS", spin_rounds)
    monkeypatch.setattr(parallel, "_pools", {})  # a fresh pool that spins spin_rounds
    ran = []

    def kernel(start, stop):
        ran.append(threading.get_ident())
        time.sleep(0.002)

    for _ in range(5):
        parallel._parallel(kernel, 8, 10**9)
        parallel.rest_threads()
        time.sleep(0.01)
    assert len(ran) == 40 and len(set(ran)) == 2


def test_publish_then_wait_publishes_the_count_and_then_waits_for_the_next_job():
    """A worker's chunk count in the job's counts, then its spin for the next job number, in one call."""
    counts, flags = np.zeros(48, np.int64), np.zeros(32, np.int64)
    flags[0] = flags[16] = 5  # job 5 is the latest, its first chunk entered
    assert spinning.publish_then_wait(counts, 32, 3, flags, 0, 5, 10, 16, 10, 100) == 5  # no new job: ran out
    assert counts[32] == 3
    writer = threading.Timer(0.05, lambda: (flags.__setitem__(16, 6), flags.__setitem__(0, 6)))
    writer.start()
    seen = spinning.publish_then_wait(counts, 16, 4, flags, 0, 5, 10**9, 16, 10**9, 1000)  # 1000 pauses after it came
    writer.join()
    assert seen == 6 and counts[16] == 4


def test_publish_then_wait_waits_for_the_posting_threads_entry_after_the_job():
    """Once the new job is seen, the spin goes on until the entry flag shows the same job
    (the posting thread is at its first chunk), and no longer than entry_rounds when it never does."""
    counts, flags = np.zeros(32, np.int64), np.zeros(32, np.int64)
    flags[0] = 7  # job 7 posted, its entry not yet published
    entered = []
    writer = threading.Timer(0.05, lambda: (entered.append(time.perf_counter()), spinning.publish(flags, 16, 7)))
    writer.start()
    assert spinning.publish_then_wait(counts, 0, 1, flags, 0, 6, 10**9, 16, 10**9, 0) == 7
    returned = time.perf_counter()
    writer.join()
    assert entered and returned >= entered[0]
    flags[16] = 0  # an entry that never comes: the spin ends after entry_rounds
    assert spinning.publish_then_wait(counts, 0, 1, flags, 0, 6, 10, 16, 1000, 0) == 7
    flags[16] = 8  # the posting thread already at a later job's first chunk: no wait at all
    started = time.perf_counter()
    assert spinning.publish_then_wait(counts, 0, 1, flags, 0, 6, 10, 16, 10**9, 0) == 7
    assert time.perf_counter() - started < 0.5


def test_fetch_add_gives_every_thread_numbers_of_its_own():
    """Two threads, released at once, each take 200000 numbers from one count with
    spinning._fetch_add (as the batch norm's chunks are claimed): no number is given
    twice, none is lost (a plain read and write loses some here)."""
    from numba import njit

    @njit(nogil=True)
    def take(count, go, got):
        while spinning._load_acquire(go, 0) == 0:
            spinning._pause()
        for i in range(got.size):
            got[i] = spinning._fetch_add(count, 0, 1)

    count, go = np.zeros(16, np.int64), np.ones(16, np.int64)
    take(count, go, np.empty(1, np.int64))  # compiled before the threads start
    count[0] = go[0] = 0
    got = [np.empty(200_000, np.int64) for _ in range(2)]
    threads = [threading.Thread(target=take, args=(count, go, g)) for g in got]
    for t in threads:
        t.start()
    time.sleep(0.05)
    spinning.publish(go, 0, 1)
    for t in threads:
        t.join()
    assert count[0] == 400_000
    assert np.array_equal(np.sort(np.concatenate(got)), np.arange(400_000))


def test_a_published_flag_is_what_the_spin_wait_returns():
    flags = np.zeros(32, np.int64)
    spinning.publish(flags, 16, 9)
    assert flags[16] == 9 and spinning.wait_while_equal(flags, 16, 0, 10) == 9


def test_publish_then_wait_total_returns_when_the_counts_add_up():
    """The caller's count, then its wait until every thread's counts add up to the chunks:
    false when the rounds run out first; true once another thread publishes the rest."""
    counts, slots = np.zeros(32, np.int64), np.array([0, 16])
    assert not spinning.publish_then_wait_total(counts, 0, 5, slots, 8, 10)
    assert counts[0] == 5
    writer = threading.Timer(0.05, lambda: spinning.publish(counts, 16, 3))
    writer.start()
    assert spinning.publish_then_wait_total(counts, 0, 5, slots, 8, 10**9)
    writer.join()
