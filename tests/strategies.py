"""Hypothesis strategies shared by the tests: random sorted interval data and chunkings."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

INTERVAL_DTYPE = np.dtype([("time", np.int64), ("endtime", np.int64), ("value", np.int32)])


@st.composite
def interval_arrays(draw, max_items: int = 40, t_max: int = 1000) -> np.ndarray:
    """Sorted intervals, possibly overlapping, possibly zero-length, inside [0, t_max]."""
    n = draw(st.integers(0, max_items))
    starts = sorted(draw(st.lists(st.integers(0, t_max - 1), min_size=n, max_size=n)))
    lengths = draw(st.lists(st.integers(0, 60), min_size=n, max_size=n))
    data = np.zeros(n, INTERVAL_DTYPE)
    data["time"] = starts
    data["endtime"] = np.minimum(np.array(starts, dtype=np.int64) + lengths, t_max)
    data["value"] = np.arange(n)
    return data


def chunk_boundaries(t_max: int = 100_000, max_cuts: int = 12):
    """Requested chunk ends (cleaned up by the toy source); duplicates make empty chunks."""
    return st.lists(st.integers(1, t_max - 1), max_size=max_cuts)


def capacities():
    """Channel capacities in bytes, from 'one chunk at a time' to roomy."""
    return st.sampled_from([0, 1, 500, 5_000, 10**6])
