"""One thread setting for the whole engine, spelled as in PyTorch.

``set_num_threads(n)`` sets how many threads the engine's work may use:

* the numba kernels (``kernels/``), which split their tasks among ``n`` threads;
* the BLAS behind ``np.matmul`` (OpenBLAS, MKL, ...), through ``threadpoolctl``,
  which changes the library's setting at run time, after numpy is imported.

The default is the number of cores this process may run on
(``os.sched_getaffinity``); the environment variable ``TINYGRAD_UU_NUM_THREADS``
overrides it. Examples set nothing themselves: they take ``--threads`` and call this.
"""
from __future__ import annotations

import os

ENV_VARIABLE = "TINYGRAD_UU_NUM_THREADS"

_num_threads: int | None = None
_blas_limits = None  # the threadpoolctl object that holds the BLAS setting


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


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for the numba kernels and the BLAS from now on."""
    global _num_threads, _blas_limits
    import numba
    from threadpoolctl import threadpool_limits

    n = _checked(n, "set_num_threads")
    # numba starts its thread pool once, at NUMBA_NUM_THREADS (default: all cores);
    # more threads than that cannot be asked of it.
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _blas_limits = threadpool_limits(limits=n, user_api="blas")
    _num_threads = n


def get_num_threads() -> int:
    """The number of threads the engine uses now (the default until set)."""
    if _num_threads is None:
        set_num_threads(default_num_threads())
    return _num_threads
