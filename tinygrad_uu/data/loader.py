"""Datasets and the DataLoader that cuts them into (shuffled) numpy batches.

>>> loader = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True, seed=0)
>>> for x, y in loader:          # x: (64, 28, 28), y: (64,); the last batch may be smaller
...     ...
"""
from __future__ import annotations

import math

import numpy as np


class Dataset:
    """A sequence of examples: subclasses define ``__len__`` and ``__getitem__(i)``.

    ``__getitem__`` returns one example: an array, or a tuple of arrays/numbers
    (e.g. ``(image, label)``). The DataLoader stacks examples into batches.
    """

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


class TensorDataset(Dataset):
    """Arrays that share their first dimension; example ``i`` is ``(a[i], b[i], ...)``."""

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        for a in self.arrays:
            if a.ndim == 0:
                raise ValueError("TensorDataset: arrays need a first (example) dimension, "
                                 "got a 0-d array")
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) > 1:
            shapes = ", ".join(str(a.shape) for a in self.arrays)
            raise ValueError(f"TensorDataset: arrays must have the same first dimension, "
                             f"got lengths {lengths} (shapes {shapes})")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)


class DataLoader:
    """Iterate over ``dataset`` in batches of ``batch_size`` examples, as numpy arrays.

    Each batch is a tuple with one stacked array per field of an example (or one
    array if examples are plain arrays). ``shuffle=True`` draws a new order every
    epoch from a generator seeded by ``seed`` (or the ``generator`` you pass), so
    two loaders with the same seed give the same batches. ``drop_last`` leaves out
    a last, smaller batch. ``transform(*batch)`` (if given) is applied to every
    batch and returns the new batch, e.g. ``DigitAugment(seed=0)``.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed=None, generator=None, transform=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and generator is not None:
            raise ValueError("DataLoader: pass seed or generator, not both")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError(f"DataLoader: generator must be a numpy.random.Generator, "
                            f"got {type(generator).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, got {type(transform).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator if generator is not None else np.random.default_rng(seed)
        self.transform = transform

    def __len__(self) -> int:
        """The number of batches in one epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            batch = self._collate(order[b * self.batch_size:(b + 1) * self.batch_size])
            if self.transform is not None:
                batch = self.transform(*batch) if isinstance(batch, tuple) else self.transform(batch)
            yield batch

    def _collate(self, indices: np.ndarray):
        if isinstance(self.dataset, TensorDataset):       # fast path: one fancy index per array
            return tuple(a[indices] for a in self.dataset.arrays)
        examples = [self.dataset[int(i)] for i in indices]
        if isinstance(examples[0], tuple):
            return tuple(_stack(fields) for fields in zip(*examples))
        return _stack(examples)

    def __repr__(self) -> str:
        return (f"DataLoader({len(self.dataset)} examples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, {len(self)} batches)")


def _stack(values) -> np.ndarray:
    arrays = [np.asarray(v) for v in values]
    try:
        return np.stack(arrays)
    except ValueError:
        shapes = sorted({a.shape for a in arrays})
        raise ValueError(f"DataLoader: cannot stack examples of different shapes {shapes} "
                         f"into one batch") from None
