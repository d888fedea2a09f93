"""Synchronizing a plugin's inputs of two data kinds, chunked independently.

Each input is a source of items with ``time``/``endtime`` whose chunk boundaries are chosen by
the test (or by hypothesis). The consumer records every step it is given. Rules: the steps are
contiguous and cover the run; each input's items reach exactly one step, whole, inside it; and
inputs that do not start or end together are refused with an error naming the consumer.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncstrax as ax

DTYPE = np.dtype([("time", np.int64), ("endtime", np.int64), ("v", np.int64)])


def source(name: str, layout: list[tuple[int, int, list[tuple[int, int]]]]) -> type:
    """A source of data kind ``name`` yielding ``layout``: (start, end, [(time, endtime)])."""

    class Source(ax.Plugin):
        provides = name
        depends_on = ()
        dtype = DTYPE
        save_when = ax.SaveWhen.NEVER

        def is_ready(self, chunk_i: int) -> bool:
            return chunk_i < len(layout)

        def source_finished(self) -> bool:
            return True

        def compute(self, chunk_i: int) -> ax.Chunk:
            start, end, items = layout[chunk_i]
            data = np.zeros(len(items), DTYPE)
            data["time"] = [t for t, _ in items]
            data["endtime"] = [e for _, e in items]
            data["v"] = np.arange(len(items)) + 1000 * chunk_i
            return self.chunk(start=start, end=end, data=data)

    Source.__name__ = f"Source_{name}"
    return Source


class Both(ax.Plugin):
    """Records each step: (start, end, a's items, b's items); gives a's items on."""

    provides = "both"
    depends_on = ("a", "b")
    dtype = DTYPE
    save_when = ax.SaveWhen.NEVER
    steps: list = []

    def compute(self, a: np.ndarray, b: np.ndarray, start: int, end: int) -> np.ndarray:
        type(self).steps.append((start, end, a.copy(), b.copy()))
        return a


def run(layout_a: list, layout_b: list) -> list:
    Both.steps = []
    ctx = ax.Context(register=[source("a", layout_a), source("b", layout_b), Both])
    ctx.get_array("r", "both")
    return Both.steps


def test_inputs_starting_at_different_times_are_refused_before_any_step():
    a = [(50, 100, [(60, 70)]), (100, 400, [(300, 310)])]
    b = [(0, 200, [(10, 20), (150, 160)]), (200, 400, [])]
    for first, second in ((a, b), (b, a)):
        with pytest.raises(ax.ChunkContinuityError, match="inputs start at different times"
                           ) as info:
            run(first, second)
        assert info.value.plugin == "Both" and info.value.run_id == "r"
        assert Both.steps == []  # no step was given items from before its start


def test_inputs_ending_at_different_times_name_the_plugin_reading_them():
    a = [(0, 100, []), (100, 400, [(300, 310)])]
    b = [(0, 300, [(10, 20)])]
    with pytest.raises(ax.ChunkContinuityError, match="inputs end at different times") as info:
        run(a, b)
    error = info.value
    assert (error.plugin, error.run_id, error.data_type) == ("Both", "r", None)


RUN_END = 1000


@st.composite
def chunked_items(draw: st.DrawFn) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Sorted items in [0, RUN_END), zero-length ones too, cut into chunks between items."""
    n = draw(st.integers(0, 12))
    starts = sorted(draw(st.lists(st.integers(0, RUN_END - 1), min_size=n, max_size=n)))
    items = [(t, min(RUN_END, t + draw(st.integers(0, 60)))) for t in starts]
    clean = set(range(1, RUN_END))  # boundaries no item crosses
    for t, e in items:
        clean -= set(range(t + 1, e))
    cuts = sorted(set(draw(st.lists(st.sampled_from(sorted(clean)), max_size=5))))
    edges = [0, *cuts, RUN_END]
    return [(lo, hi, [(t, e) for t, e in items if lo <= t < hi])
            for lo, hi in zip(edges[:-1], edges[1:])]


def _all_items(layout: list) -> list[tuple[int, int]]:
    return [x for _, _, items in layout for x in items]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunked_items(), chunked_items())
def test_steps_cover_the_run_and_give_every_item_once_inside_its_step(layout_a, layout_b):
    steps = run(layout_a, layout_b)
    data_steps = [s for s in steps if s[1] > s[0] or len(s[2]) or len(s[3])]
    assert data_steps, "a run with time in it gives at least one step"
    assert data_steps[0][0] == 0 and data_steps[-1][1] == RUN_END
    for (_, end, *_), (start, *_) in zip(data_steps[:-1], data_steps[1:]):
        assert start == end, "steps are contiguous"
    for index, layout in ((2, layout_a), (3, layout_b)):
        given_items = []
        for start, end, *arrays in steps:
            data = arrays[index - 2]
            assert np.all(data["time"] >= start) and np.all(data["endtime"] <= end)
            given_items += list(zip(data["time"].tolist(), data["endtime"].tolist()))
        assert sorted(given_items) == sorted(_all_items(layout))
