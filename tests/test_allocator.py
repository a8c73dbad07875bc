"""allocator.keep_freed_memory: on glibc, a loop that makes and drops big arrays stops
page-faulting once tinygrad_uu is imported; TINYGRAD_UU_KEEP_MEMORY=0 turns it off."""
import os
import platform
import subprocess
import sys

import pytest

from tinygrad_uu import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A step like a training step's: big arrays made, some dropped, others made.
FAULTS = """
import resource
import numpy as np
import tinygrad_uu
def step():
    a = [np.ones(8 << 18, np.float32) for _ in range(10)]
    b = [np.ones(1 << 18, np.float32) for _ in range(10)]
    del a
    c = [np.ones(20 << 18, np.float32) for _ in range(3)]
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def faults_per_step(keep: str) -> float:
    env = {**os.environ, "TINYGRAD_UU_KEEP_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="the malloc settings exist only in glibc (Linux)")
def test_freed_memory_is_reused_without_page_faults():
    without, with_ = faults_per_step("0"), faults_per_step("1")
    assert without > 1000, f"the loop should page-fault without the settings, got {without}"
    assert with_ < without / 10, (with_, without)


def test_the_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("TINYGRAD_UU_KEEP_MEMORY", "0")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setenv("TINYGRAD_UU_KEEP_MEMORY", "1")
    assert allocator.keep_freed_memory() is GLIBC
