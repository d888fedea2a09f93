"""Time-range selections agree with strax's rule on computed and on stored data.

strax's rule (``apply_selection``): ``fully_contained`` keeps items with ``t0 <= time`` and
``endtime <= t1``, zero-length items at either edge included; ``touching`` keeps items with
``time < t1`` and ``endtime > t0``. The data has zero-length items on chunk boundaries, so the
chunks a stored loader may skip are put to the test.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncstrax as ax

DTYPE = np.dtype([("time", np.int64), ("endtime", np.int64), ("v", np.int64)])
BOUNDS = [1000, 1100, 1200, 1300, 1300]  # the last chunk lasts no time
ITEMS = [(1000, 1010), (1050, 1100), (1100, 1100), (1120, 1150), (1150, 1150), (1190, 1200),
         (1200, 1250), (1300, 1300)]


class Marks(ax.Plugin):
    """Intervals and zero-length marks, some at chunk boundaries and at the run's end."""

    provides = "marks"
    depends_on = ()
    dtype = DTYPE
    rechunk_on_save = False

    def is_ready(self, chunk_i: int) -> bool:
        return chunk_i < len(BOUNDS) - 1

    def source_finished(self) -> bool:
        return True

    def compute(self, chunk_i: int) -> ax.Chunk:
        start, end = BOUNDS[chunk_i], BOUNDS[chunk_i + 1]
        last = chunk_i == len(BOUNDS) - 2
        mine = [(t, e) for t, e in ITEMS if start <= t < end or last and t == end]
        data = np.zeros(len(mine), DTYPE)
        data["time"] = [t for t, _ in mine]
        data["endtime"] = [e for _, e in mine]
        data["v"] = [ITEMS.index(x) for x in mine]
        return self.chunk(start=start, end=end, data=data)


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    computed = ax.Context(register=[Marks])
    stored = ax.Context(storage=ax.FileStore(tmp_path_factory.mktemp("store")),
                        register=[Marks])
    stored.make("r", "marks", save="marks")
    assert stored.is_stored("r", "marks")
    return computed, stored


def expected(t0: int, t1: int, selection: str) -> list[int]:
    if selection == "fully_contained":
        keep = [t0 <= t and e <= t1 for t, e in ITEMS]
    else:
        keep = [t < t1 and e > t0 for t, e in ITEMS]
    return [i for i, k in enumerate(keep) if k]


@pytest.mark.parametrize("t0, t1", [(1100, 1150), (1050, 1100), (0, 1150), (1250, 1300),
                                    (1300, 1300), (1100, 1100)])
def test_zero_length_items_on_the_range_edges_are_fully_contained(contexts, t0, t1):
    for ctx in contexts:
        got = ctx.get_array("r", "marks", time_range=(t0, t1))
        assert got["v"].tolist() == expected(t0, t1, "fully_contained")


@settings(max_examples=60, deadline=None)
@given(st.integers(950, 1350), st.integers(0, 300),
       st.sampled_from(["fully_contained", "touching"]))
def test_time_ranges_select_what_strax_selects(contexts, t0, length, selection):
    t1 = t0 + length
    want = expected(t0, t1, selection)
    for ctx in contexts:
        got = ctx.get_array("r", "marks", time_range=(t0, t1), time_selection=selection)
        assert got["v"].tolist() == want
        if selection == "fully_contained":
            chunks = list(ctx.get_iter("r", "marks", time_range=(t0, t1)))
            assert all(t0 <= c.start <= c.end <= t1 for c in chunks)
            assert all(a.end == b.start for a, b in zip(chunks, chunks[1:]))
