"""Saving and loading a model's weights as a ``.npz`` file (one array per name), and
handing them to PyTorch and back.

``.npz`` is numpy's zip of arrays: no pickled Python objects, so loading a file
cannot run code (``np.load(..., allow_pickle=False)``). The file is written to a
temporary name and renamed, so a crash never leaves a half-written model behind.

The names and array layouts of ``state_dict`` are PyTorch's for the same module tree,
so ``to_torch_state_dict(model)`` loads into the equivalent torch model with
``load_state_dict(..., strict=True)``, and a torch model's ``state_dict()`` loads
into ours (``model.load_state_dict(torch_model.state_dict())``).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..files import atomic_path
from .module import Module, _as_numpy

ZIP_MAGIC, NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"


def save(model_or_state, path) -> Path:
    """Write ``model.state_dict()`` (or a dict of arrays) to ``path``, atomically."""
    state = model_or_state.state_dict() if isinstance(model_or_state, Module) else model_or_state
    arrays = {name: np.asarray(getattr(value, "data", value)) for name, value in state.items()}
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: numpy adds no suffix
        np.savez(f, **arrays)
    return path


def _check_npz(path: Path) -> None:
    """A clear error for a file that is not an .npz archive of arrays (numpy would
    report "pickled (object) data" or a zip error that names neither file nor cause)."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head == ZIP_MAGIC:
            import zipfile
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
            if any(n.endswith("data.pkl") for n in names):
                raise ValueError(f"load {path}: this is a PyTorch checkpoint (torch.save), not an "
                                 ".npz archive; load it with torch.load and pass the state dict "
                                 "to model.load_state_dict (or nn.from_torch_state_dict)")
            if names and not all(n.endswith(".npy") for n in names):
                raise ValueError(f"load {path}: a zip archive, but not an .npz of arrays (it holds "
                                 f"{names[:3]}...); save weights with nn.save")
            return
        f.seek(0)
        kind = ("a single .npy array (np.save), not an .npz archive of named arrays"
                if f.read(6) == NPY_MAGIC else "not an .npz archive (numpy's savez format)")
    raise ValueError(f"load {path}: {kind}; nn.save writes the .npz that nn.load reads")


def load_state_dict(path) -> "OrderedDict[str, np.ndarray]":
    """The arrays saved in ``path``, by name."""
    path = Path(path)
    _check_npz(path)
    with np.load(path, allow_pickle=False) as archive:
        return OrderedDict((name, archive[name]) for name in archive.files)


def load(model: Module | None, path, strict: bool = True):
    """Load the weights in ``path`` into ``model`` and return it; with ``model=None``,
    return the dict of arrays. Missing or unexpected names and wrong shapes raise a
    ValueError naming them (``strict=False`` tolerates names, never shapes)."""
    state = load_state_dict(path)
    if model is None:
        return state
    try:
        model.load_state_dict(state, strict=strict)
    except ValueError as e:
        raise ValueError(f"load {path}: {e}") from None
    return model


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("to_torch_state_dict needs PyTorch, which is not installed: "
                          "pip install torch") from None
    return torch


def to_torch_state_dict(model_or_state) -> "OrderedDict":
    """``model.state_dict()`` as PyTorch tensors (copies), ready for
    ``torch_model.load_state_dict(to_torch_state_dict(model), strict=True)`` when
    ``torch_model`` has the same module tree (the same attribute names and layers)."""
    torch = _torch()
    state = model_or_state.state_dict() if isinstance(model_or_state, Module) else model_or_state
    return OrderedDict((name, torch.from_numpy(np.array(_as_numpy(value))))
                       for name, value in state.items())


def from_torch_state_dict(state_dict) -> "OrderedDict[str, np.ndarray]":
    """A PyTorch ``state_dict`` (tensors on any device) as numpy arrays, by name: what
    ``model.load_state_dict`` and ``nn.save`` take. (``model.load_state_dict`` also
    accepts the torch tensors directly.)"""
    return OrderedDict((name, np.array(_as_numpy(value))) for name, value in state_dict.items())
