"""Which real data sets the tests can reach through TINYGRAD_UU_DATA (CI points it at
../shared/data). Tests on real data are skipped, with this reason, where it is absent."""
import os
from pathlib import Path

import pytest

ROOT = Path(os.environ["TINYGRAD_UU_DATA"]) if os.environ.get("TINYGRAD_UU_DATA") else None
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _has(*relative_paths) -> bool:
    return ROOT is not None and all((ROOT / p).exists() for p in relative_paths)


HAS_MNIST = _has(*(f"mnist/{name}" for name in MNIST_FILES))
HAS_AUTO_MPG = _has("auto-mpg/auto-mpg.data")
HAS_WARWICK = _has("warwick/Train", "warwick/Test")

needs_mnist = pytest.mark.skipif(not HAS_MNIST, reason="needs TINYGRAD_UU_DATA with mnist/")
needs_auto_mpg = pytest.mark.skipif(not HAS_AUTO_MPG, reason="needs TINYGRAD_UU_DATA with auto-mpg/")
needs_warwick = pytest.mark.skipif(not HAS_WARWICK, reason="needs TINYGRAD_UU_DATA with warwick/")
