"""fetch(): checksums, mirrors, atomic downloads, clear errors. Network: 127.0.0.1 only."""
import functools
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path

import pytest

from tinygrad_uu.data.download import CorruptFileError, DataNotFoundError, data_root, fetch

PAYLOAD = b"tinygrad_uu test payload\n" * 5000          # ~125 kB: several chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server for the files in ``tmp_path / 'served'``; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "good.bin").write_bytes(PAYLOAD)
    (served / "bad.bin").write_bytes(PAYLOAD[:-1] + b"!")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_port_url():
    with socket.socket() as s:            # bind a free port, then close it: nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/good.bin"


def test_existing_good_copy_is_used_without_network(tmp_path):
    (tmp_path / "good.bin").write_bytes(PAYLOAD)
    assert fetch("good.bin", [], SHA, tmp_path) == tmp_path / "good.bin"


def test_tries_mirrors_in_turn(tmp_path, server, closed_port_url):
    folder = tmp_path / "cache" / "sub"               # created on demand
    urls = [closed_port_url, f"{server}/missing.bin", f"{server}/good.bin"]
    path = fetch("good.bin", urls, SHA, folder, progress=True)
    assert path == folder / "good.bin" and path.read_bytes() == PAYLOAD
    assert sorted(os.listdir(folder)) == ["good.bin"]  # no temporary files left


def test_checksum_mismatch_leaves_no_file(tmp_path, server):
    folder = tmp_path / "cache"
    with pytest.raises(DataNotFoundError, match="checksum mismatch"):
        fetch("good.bin", [f"{server}/bad.bin"], SHA, folder, progress=False)
    assert os.listdir(folder) == []


def test_offline_error_names_every_url_and_where_to_put_a_copy(tmp_path, server,
                                                              closed_port_url, monkeypatch):
    monkeypatch.setenv("TINYGRAD_UU_DATA", str(tmp_path))
    urls = [closed_port_url, f"{server}/missing.bin"]
    with pytest.raises(DataNotFoundError) as info:
        fetch("good.bin", urls, SHA, tmp_path / "things")
    message = str(info.value)
    assert closed_port_url in message and "Connection" in message
    assert f"{server}/missing.bin" in message and "404" in message
    assert str(tmp_path / "things" / "good.bin") in message
    assert "TINYGRAD_UU_DATA" in message and str(Path("things") / "good.bin") in message
    assert isinstance(info.value, FileNotFoundError)


def test_corrupt_copy_is_moved_aside_and_replaced(tmp_path, server):
    (tmp_path / "good.bin").write_bytes(b"not it")
    with pytest.warns(UserWarning, match="wrong checksum"):
        path = fetch("good.bin", [f"{server}/good.bin"], SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert (tmp_path / "good.bin.corrupt").read_bytes() == b"not it"


def test_corrupt_copy_in_read_only_folder_raises_with_both_checksums(tmp_path, monkeypatch):
    (tmp_path / "good.bin").write_bytes(b"not it")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(os, "replace", refuse)        # as root, chmod would not stop us
    with pytest.raises(CorruptFileError) as info:
        fetch("good.bin", [], SHA, tmp_path)
    message = str(info.value)
    assert "good.bin" in message and SHA in message
    assert hashlib.sha256(b"not it").hexdigest() in message


def test_unwritable_folder_is_reported(tmp_path, server):
    (tmp_path / "a_file").write_text("")
    folder = tmp_path / "a_file" / "sub"              # cannot be created
    with pytest.raises(DataNotFoundError, match="not writable"):
        fetch("good.bin", [f"{server}/good.bin"], SHA, folder)


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGRAD_UU_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    monkeypatch.delenv("TINYGRAD_UU_DATA")
    assert data_root() == Path.home().resolve() / ".cache" / "tinygrad_uu"
