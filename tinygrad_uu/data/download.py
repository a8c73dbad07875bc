"""Getting a data file onto disk, verified: where data lives, and ``fetch``.

Every data set file has a known SHA-256 checksum. ``fetch`` returns a local copy
only when its checksum matches; otherwise it downloads one, trying each mirror in
turn, and writes it atomically (a temporary file renamed into place), so an
interrupted download never leaves a half-written file behind.

Data lives under ``data_root()``: ``$TINYGRAD_UU_DATA`` if set, else
``~/.cache/tinygrad_uu``. Without internet, copy the files there (or point
``TINYGRAD_UU_DATA`` at a folder that has them) and nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from tqdm import tqdm

from ..files import atomic_write

ENV_VAR = "TINYGRAD_UU_DATA"
_CHUNK = 1 << 16


class DataNotFoundError(FileNotFoundError):
    """A data file is neither on disk nor downloadable; the message says where to put it."""


class CorruptFileError(ValueError):
    """A data file on disk is not what it should be (wrong checksum, truncated, bad format)."""


def data_root() -> Path:
    """The folder that holds all data sets: ``$TINYGRAD_UU_DATA`` or ``~/.cache/tinygrad_uu``."""
    env = os.environ.get(ENV_VAR)
    root = Path(env) if env else Path.home() / ".cache" / "tinygrad_uu"
    return root.expanduser().resolve()


def sha256sum(path) -> str:
    """The SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def set_aside(path, reason: str) -> Path:
    """Rename a bad file to ``<name>.corrupt`` so that it is never trusted again.

    If the folder is read-only the file stays where it is and ``CorruptFileError``
    is raised, naming the file and ``reason``.
    """
    path = Path(path)
    corrupt = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, corrupt)
    except OSError as e:
        raise CorruptFileError(
            f"{path}: {reason}. The folder is not writable ({e.strerror}), so the file "
            f"was left in place: replace it with a good copy or delete it.") from None
    return corrupt


def fetch(filename: str, urls, sha256: str, folder, *, timeout: float = 10.0,
          progress: bool = True) -> Path:
    """Return ``folder/filename``, downloading it first unless a good copy is there.

    A copy whose SHA-256 differs from ``sha256`` is never used: it is renamed to
    ``<filename>.corrupt`` and a fresh one is downloaded. Each URL in ``urls`` is
    tried in order; the first download with the right checksum wins. If none
    works, ``DataNotFoundError`` lists every URL with its failure and says where
    to put a copy by hand.
    """
    folder = Path(folder)
    target = folder / filename
    if target.exists():
        actual = sha256sum(target)
        if actual == sha256:
            return target
        moved = set_aside(target, f"checksum mismatch: expected sha256 {sha256}, got {actual}")
        warnings.warn(f"{target}: wrong checksum (expected {sha256}, got {actual}); "
                      f"moved aside to {moved.name}, downloading a fresh copy", stacklevel=2)

    failures = []
    unwritable = _unwritable(folder)
    if unwritable:
        failures.append(("(no download tried)", f"{folder} is not writable: {unwritable}"))
    else:
        for url in urls:
            try:
                _download(url, target, sha256, timeout, progress)
                return target
            except Exception as e:  # noqa: BLE001 -- every failure is reported below
                failures.append((url, _describe(e)))
    raise DataNotFoundError(_not_found_message(filename, sha256, folder, failures))


def _download(url: str, target: Path, sha256: str, timeout: float, progress: bool) -> None:
    """Stream ``url`` into a temporary file beside ``target``; rename it if the checksum matches."""
    request = urllib.request.Request(url, headers={"User-Agent": "tinygrad_uu"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        size = response.headers.get("Content-Length")
        digest = hashlib.sha256()
        bar = tqdm(total=int(size) if size else None, unit="B", unit_scale=True,
                   desc=target.name, disable=not progress, leave=False)
        with bar, atomic_write(target, "wb") as f:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                f.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
            if digest.hexdigest() != sha256:  # raising here deletes the temporary file
                raise CorruptFileError(f"checksum mismatch: expected sha256 {sha256}, "
                                       f"got {digest.hexdigest()}")


def _unwritable(folder: Path) -> str:
    """Why ``folder`` can't take a new file ('' if it can): try to create one."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return ""


def _describe(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"{type(e.reason).__name__}: {e.reason}"
    return f"{type(e).__name__}: {e}"


def _not_found_message(filename, sha256, folder: Path, failures) -> str:
    lines = [f"Could not get {filename} (sha256 {sha256})."]
    lines += [f"  tried {url}: {why}" for url, why in failures]
    if not failures:
        lines.append("  (no URL to try)")
    lines.append(f"To work offline, put a copy at {folder / filename}")
    try:
        relative = folder.relative_to(data_root())
        lines.append(f"or set {ENV_VAR} to a folder that has {relative / filename} "
                     f"(now the data root is {data_root()}).")
    except ValueError:
        lines.append(f"(Data sets live under ${ENV_VAR}, now {data_root()}, unless you pass "
                     f"a root of your own, as here.)")
    return "\n".join(lines)
