"""Writing files safely: all or nothing.

A crash (or Ctrl-C) half-way through a write must never leave a truncated file
where a good one is expected, so every file is written to a temporary name in
the same folder and then renamed over the target, which is atomic.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp, path) -> None:
    """Give the finished temporary file normal permissions (mkstemp makes it 0600, which
    would hide a student's results from their teacher), then rename it into place."""
    os.chmod(tmp, 0o666 & ~_current_umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success rename it to ``path``.

    >>> with atomic_write("metrics.json", "w") as f:
    ...     f.write("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_path(path):
    """A context manager giving a temporary path beside ``path`` for libraries that
    want a file name (``np.savez``, ``savefig``); renamed to ``path`` on success."""
    return _AtomicPath(Path(path))


class _AtomicPath:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix,
                                   dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            _publish(self.tmp, self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
        return False


def save_json(path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically (used for every ``metrics.json``)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
