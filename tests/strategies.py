"""Hypothesis strategies shared by the tests: shapes, broadcastable pairs, axes, and
arrays whose values stay inside each op's domain (and away from its kinks, where a
finite difference would straddle a corner and disagree with any subgradient)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

MAX_SIDE = 4


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = MAX_SIDE):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_pair(min_dims: int = 0, max_dims: int = 3):
    """Two shapes that broadcast together, e.g. ((3, 1, 4), (2, 1))."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=min_dims, max_dims=max_dims,
                                             max_side=MAX_SIDE).map(lambda b: b.input_shapes)


@st.composite
def axes(draw, ndim: int, allow_none: bool = True, allow_tuple: bool = True):
    """None, an int (possibly negative) or a tuple of distinct axes of an ndim-array."""
    options = []
    if allow_none:
        options.append(st.none())
    if ndim > 0:
        options.append(st.integers(-ndim, ndim - 1))
        if allow_tuple:
            options.append(hnp.valid_tuple_axes(ndim, min_size=1))
    return draw(st.one_of(options))


# --- values: what each op's domain allows -----------------------------------------

def _floats(low, high):
    return st.floats(low, high, allow_nan=False, allow_infinity=False, width=64)


DOMAINS = {
    "any": _floats(-3, 3),
    "positive": _floats(0.5, 3),                     # log, sqrt, pow's base
    "nonzero": st.one_of(_floats(-3, -0.5), _floats(0.5, 3)),   # divisors
    "away_from_zero": st.one_of(_floats(-3, -0.1), _floats(0.1, 3)),  # relu, abs kinks
    # multiples of 0.1: no two values within a finite-difference step (max, min, clip)
    "grid": st.integers(-30, 30).map(lambda k: k / 10),
    # the same grid shifted by 0.05: never ties with "grid" (maximum, minimum)
    "offgrid": st.integers(-30, 30).map(lambda k: k / 10 + 0.05),
}


def arrays(shape, domain: str = "any", unique: bool = False):
    """float64 arrays of ``shape`` with values from ``DOMAINS[domain]``."""
    return hnp.arrays(np.float64, shape, elements=DOMAINS[domain], unique=unique)


@st.composite
def array_and_shape(draw, domain: str = "any", min_dims: int = 0, max_dims: int = 3,
                    unique: bool = False):
    return draw(arrays(draw(shapes(min_dims, max_dims)), domain, unique=unique))


@st.composite
def matmul_shapes(draw):
    """Operand shapes numpy's matmul accepts: 1-D, 2-D and batched with broadcast batch axes."""
    n, k, m = (draw(st.integers(1, MAX_SIDE)) for _ in range(3))
    kind = draw(st.sampled_from(["1d1d", "1d2d", "2d1d", "2d2d", "batched"]))
    if kind == "1d1d":
        return (k,), (k,)
    if kind == "1d2d":
        return (k,), (k, m)
    if kind == "2d1d":
        return (n, k), (k,)
    if kind == "2d2d":
        return (n, k), (k, m)
    batch_a, batch_b = draw(broadcastable_pair(min_dims=1, max_dims=2))
    return batch_a + (n, k), batch_b + (k, m)
