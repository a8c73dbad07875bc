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
