"""Shared test set-up: no test may reach the network beyond this machine."""
import socket

import pytest


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail loudly if anything tries to reach an address other than 127.0.0.1."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        assert address[0] in ("127.0.0.1", "localhost"), f"test tried to reach {address}"
        return real(address, *args, **kwargs)
    monkeypatch.setattr(socket, "create_connection", guarded)


class PoolJobs(list):
    """The number of tasks of each job handed to the engine's threads (SpinningPool.run),
    in order; ``running`` is true while one of them runs."""
    running = False


@pytest.fixture
def pool_jobs(monkeypatch):
    """A PoolJobs that records every job handed to the engine's threads from here on."""
    from tinygrad_uu.kernels import parallel
    jobs, real_run = PoolJobs(), parallel.SpinningPool.run

    def run(self, do_chunk, chunks):
        jobs.append(chunks)
        jobs.running = True
        try:
            real_run(self, do_chunk, chunks)
        finally:
            jobs.running = False
    monkeypatch.setattr(parallel.SpinningPool, "run", run)
    return jobs


@pytest.fixture
def one_megabyte_l2(monkeypatch):
    """The conv chunk budgets of a core with 1 MB of L2 (512 KB on one thread, 1 MB on
    more), whatever this machine's L2: for tests that count chunks."""
    from tinygrad_uu.kernels import conv_batched
    monkeypatch.setattr(conv_batched, "CHUNK_COLS_BYTES", 512 << 10)
    monkeypatch.setattr(conv_batched, "CHUNK_COLS_BYTES_THREADED", 1 << 20)
