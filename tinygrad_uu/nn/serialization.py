"""Saving and loading a model's weights as a ``.npz`` file (one array per name).

``.npz`` is numpy's zip of arrays: no pickled Python objects, so loading a file
cannot run code (``np.load(..., allow_pickle=False)``). The file is written to a
temporary name and renamed, so a crash never leaves a half-written model behind.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..files import atomic_path
from .module import Module


def save(model_or_state, path) -> Path:
    """Write ``model.state_dict()`` (or a dict of arrays) to ``path``, atomically."""
    state = model_or_state.state_dict() if isinstance(model_or_state, Module) else model_or_state
    arrays = {name: np.asarray(getattr(value, "data", value)) for name, value in state.items()}
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: numpy adds no suffix
        np.savez(f, **arrays)
    return path


def load_state_dict(path) -> "OrderedDict[str, np.ndarray]":
    """The arrays saved in ``path``, by name."""
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
