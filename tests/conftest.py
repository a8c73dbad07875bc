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
