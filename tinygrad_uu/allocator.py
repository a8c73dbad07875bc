"""Keep freed memory in the process, so that a training step's big arrays stop page-faulting.

A training step makes and drops the same big arrays again and again: activations,
gradients, padded copies. By default glibc's malloc gives big freed blocks back to the
kernel (``munmap``, or a trim of the heap), and the next step's arrays fault their
pages in again, 4 KB at a time, each one zero-filled by the kernel. Measured on the
U-Net step of benchmark W5 (batch 8 of 3x128x128, one thread): 7,200 page faults and
50 ms of system time per step, 15% of the step.

Two malloc settings keep freed memory for the next step instead:

* ``M_MMAP_THRESHOLD`` = 256 MB: arrays below it come from the heap, not from mmap;
* ``M_TRIM_THRESHOLD`` = 1 GB: the heap is given back only when this much is free at its top.

After that the W5 step makes no page faults. The price: the process keeps its peak
memory until it exits (a training script reaches that peak every step anyway).

``import tinygrad_uu`` applies them on Linux with glibc. ``TINYGRAD_UU_KEEP_MEMORY=0``
leaves malloc as it is; on other systems nothing changes.
"""
from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Set the two malloc thresholds above; True if glibc took them.

    Does nothing (returns False) off glibc, or when TINYGRAD_UU_KEEP_MEMORY is "0"."""
    if os.environ.get("TINYGRAD_UU_KEEP_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                    and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
