"""One thread setting for the whole engine, spelled as in PyTorch.

``set_num_threads(n)`` sets how many threads the engine's work may use:

* the engine's own kernels (``kernels/``), which split their tasks among ``n`` threads;
* the BLAS behind ``np.matmul`` (OpenBLAS, MKL, ...), through ``threadpoolctl``, which
  changes the library's setting at run time, after numpy is imported;
* numba's own thread pool (``numba.set_num_threads``), for code that uses ``prange``.

The default is the number of cores this process may run on (``os.sched_getaffinity``);
the environment variable ``TINYGRAD_UU_NUM_THREADS`` overrides it. ``import tinygrad_uu``
puts the default into effect, so a BLAS thread count set through ``OPENBLAS_NUM_THREADS``
is replaced by the engine's. Examples set nothing themselves: they take ``--threads``
and call ``set_num_threads``.

The BLAS policy, and why (measured on a shared 2-core machine):

* OpenBLAS splits one product among its threads in fixed shares and its threads then
  spin-wait for the next call. When the cores are busy (other jobs, or the engine's
  own threads beside it) one share waits for a core and the whole product waits for
  it: one conv backward's big im2col product went from 0.4 s to 2.7-8.9 s.
* So where the engine splits work itself, it gives BLAS one thread: the convolutions'
  products are cut by images (``kernels/conv_batched.py``), each piece a small product
  that fits in cache, run on one BLAS thread inside one of the engine's threads
  (``single_threaded_blas``). The engine's threads take the pieces in turn as they
  finish, so a thread slowed down by a neighbour holds nobody up.
* A plain product the engine does not split (``Tensor @``, a Linear layer) gets all
  ``n`` BLAS threads, as in PyTorch, when it is big: the products of an MLP step at batch
  128 (784-256) ran 1.4-1.9x faster on two BLAS threads than on one, on a quiet machine.
  A small one (under 16 MFLOP) runs on one: after a threaded product OpenBLAS's threads
  spin, holding the cores the engine's threads need next (``kernels/blas.py``).
* Waking a sleeping thread costs 25-55 us when it was busy a moment ago and 125-180 us
  after a pause (measured on this 2-core virtual machine). So the engine's threads, like
  OpenMP's, spin for about a millisecond after each piece of work before they sleep
  (``kernels/spinning.py``): an empty hand-off and wait took 49-67 us against 165-182 us,
  and the training steps of W4, W7 and W8 ran 1.12-1.20x faster on two threads
  (``python benchmarks/bench_threads.py``, README "Threads that spin"). Before a
  product on BLAS's own threads they are sent to sleep (``kernels/parallel.rest_threads``),
  so as not to take the cores BLAS needs. ``TINYGRAD_UU_SPIN=0`` turns the spinning off.
  Work is still handed out in pieces of at least about 0.2 ms (``kernels/conv_batched.py``).
* On a busy machine threads lose: with one other process spinning on the 2 cores, the
  same products took 13 ms (median; 76-91 ms at the 90th percentile) on two BLAS threads
  against 2-3 ms (6-11 ms) on one. On a machine shared with other jobs, ``--threads 1``
  (or ``TINYGRAD_UU_NUM_THREADS=1``) is the safe choice.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

ENV_VARIABLE = "TINYGRAD_UU_NUM_THREADS"

_num_threads: int | None = None
_blas_limits = None      # the threadpoolctl object that holds the BLAS setting
_controller = None       # a threadpoolctl ThreadpoolController, made once (inspecting the libraries is slow)
_blas_setters = None     # each BLAS library's set-threads function, from _controller
_single_lock = threading.Lock()
_single_depth = 0        # how many single_threaded_blas blocks are open now (nested or in threads)


def available_cores() -> int:
    """The cores this process may run on (fewer than the machine's under a CPU mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _checked(n, where: str) -> int:
    """``n`` as an int >= 1 (a whole number, or its text from the environment)."""
    if isinstance(n, str) and n.strip().isdigit():
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{where}: the number of threads must be a whole number >= 1, got {n!r}")
    return n


def default_num_threads() -> int:
    """``TINYGRAD_UU_NUM_THREADS`` when set, else every core this process may use."""
    text = os.environ.get(ENV_VARIABLE, "").strip()
    if text:
        return _checked(text, ENV_VARIABLE)
    return available_cores()


def _numba_threads(n: int) -> None:
    """numba starts its pool once, at NUMBA_NUM_THREADS (default: all cores); more than that
    cannot be asked of it. Only when numba is loaded: importing it costs half a second."""
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for the engine's kernels and the BLAS from now on."""
    global _num_threads, _blas_limits, _controller, _blas_setters
    from threadpoolctl import threadpool_limits

    n = _checked(n, "set_num_threads")
    _num_threads = n
    _blas_limits = threadpool_limits(limits=n, user_api="blas")
    _controller = _blas_setters = None  # single_threaded_blas looks again: a BLAS loaded since (scipy's) is seen
    _numba_threads(n)


def get_num_threads() -> int:
    """The number of threads the engine uses now (the default until set)."""
    if _num_threads is None:
        set_num_threads(default_num_threads())
    return _num_threads


def _blas_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


def _set_blas_threads(n: int) -> None:
    global _blas_setters
    if _blas_setters is None:
        # threadpoolctl's OpenBLAS controller checks, on every change, which Python thread
        # controls the library; its raw setter skips that (a change: 6.5 -> 0.5 us, which
        # a 64x64 product of 6 us notices). Only the main thread makes these changes.
        pools = _blas_controller().select(user_api="blas").lib_controllers
        _blas_setters = [getattr(pool, "_real_set_num_threads", pool.set_num_threads) for pool in pools]
    for setter in _blas_setters:
        setter(n)


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS on one thread inside the block: for code that calls BLAS from the engine's
    own threads, each on its own piece of the work (see the module docstring).

    Open it in the thread that hands the work out (normally the main thread), around the
    hand-out: the setting is process-wide and the engine's threads see it. (OpenBLAS
    0.3.31 ignored a change made from a non-main thread that had run a BLAS call of its
    own: then the products would run on all threads, correct but crowded.) Blocks nest:
    the first to open sets one thread, the last to close puts ``get_num_threads()`` back.
    About 2 us.
    """
    global _single_depth
    n = get_num_threads()
    if n == 1:  # BLAS has one thread already
        yield
        return
    with _single_lock:
        _single_depth += 1
        if _single_depth == 1:
            _set_blas_threads(1)
    try:
        yield
    finally:
        with _single_lock:
            _single_depth -= 1
            if _single_depth == 0:
                _set_blas_threads(get_num_threads())
