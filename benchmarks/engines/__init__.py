"""The engines the benchmarks compare, one module each.

``discover()`` imports every engine module and returns the engines that can run here
and, for those that cannot, the reason, e.g. ``("tinygrad", "not installed ...")``.
"""
from __future__ import annotations

import importlib

from .base import Engine, EngineUnavailable, Step, Unsupported  # noqa: F401

# Column order in the table: the reference first, then our engine, then the others.
MODULES = ("torch_engine", "numpy_engine", "tinygrad_uu_engine", "tinygrad_engine",
           "micrograd_engine")

# What the names on the command line may refer to, for engines that never loaded.
KEYS = {"torch_engine": ["torch"], "numpy_engine": ["numpy"],
        "tinygrad_uu_engine": ["tinygrad_uu-numba", "tinygrad_uu-numpy"],
        "tinygrad_engine": ["tinygrad"], "micrograd_engine": ["micrograd"]}


def matches(key: str, wanted) -> bool:
    """``--engines tinygrad_uu`` selects both tinygrad_uu backends; ``torch`` only torch."""
    if not wanted:
        return True
    return any(key == w or key.startswith(w + "-") for w in wanted)


def discover(wanted=None):
    """(engines, skipped): the loaded Engine objects and a list of (key, reason)."""
    engines, skipped = [], []
    for module_name in MODULES:
        keys = KEYS[module_name]
        if not any(matches(k, wanted) for k in keys):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
            loaded = module.load()
        except EngineUnavailable as e:
            skipped += [(k, str(e)) for k in keys if matches(k, wanted)]
            continue
        except Exception as e:  # a broken install must not stop the other engines
            skipped += [(k, f"failed to load: {type(e).__name__}: {e}") for k in keys
                        if matches(k, wanted)]
            continue
        for item in loaded:
            if isinstance(item, Engine):
                if matches(item.key, wanted):
                    engines.append(item)
            else:  # (key, reason): one variant of the module is unavailable
                if matches(item[0], wanted):
                    skipped.append(item)
    return engines, skipped
