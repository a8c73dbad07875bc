"""Atomic writes: all or nothing, with normal permissions."""
import json
import os

import pytest

from tinygrad_uu.files import atomic_path, atomic_write, save_json


def test_save_json_writes_readable_file(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    save_json(target, {"test_accuracy": 0.98})
    assert json.loads(target.read_text()) == {"test_accuracy": 0.98}
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.npz"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("crash half-way")
    assert target.read_bytes() == b"good"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash half-way")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
