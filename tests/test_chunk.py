"""The data-model rules, checked where a chunk is built, and the chunk operations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import INTERVAL_DTYPE, interval_arrays

import asyncstrax as ax


def make(data, start=0, end=1000, data_type="things", dtype=INTERVAL_DTYPE, **kw):
    return ax.Chunk(data_type=data_type, data_kind="things", dtype=dtype, run_id="r0",
                    start=start, end=end, data=data, **kw)


def intervals(pairs):
    a = np.zeros(len(pairs), INTERVAL_DTYPE)
    for i, (t, e) in enumerate(pairs):
        a[i]["time"], a[i]["endtime"], a[i]["value"] = t, e, i
    return a


def test_valid_chunk_and_properties():
    c = make(intervals([(0, 10), (5, 20)]), 0, 100)
    assert len(c) == 2 and c.duration == 100 and c.nbytes == c.data.nbytes
    assert "things" in repr(c)


def test_none_data_is_empty():
    assert len(make(None)) == 0


def test_dtype_mismatch_is_caught_with_context():
    other = np.zeros(1, [("time", np.int64), ("endtime", np.int64), ("value", np.float64)])
    with pytest.raises(ax.ChunkDtypeError) as info:
        make(other, chunk_i=3)
    message = str(info.value)
    assert "declares" in message and "'things'" in message and "run 'r0'" in message
    assert "chunk 3" in message and "[0, 1000)" in message


def test_missing_time_fields():
    with pytest.raises(ax.ChunkDtypeError, match="no 'time' field"):
        make(np.zeros(1, [("x", np.int64)]), dtype=[("x", np.int64)])
    with pytest.raises(ax.ChunkDtypeError, match="needs an 'endtime' field"):
        make(np.zeros(1, [("time", np.int64)]), dtype=[("time", np.int64)])


def test_unsorted():
    with pytest.raises(ax.ChunkSortError, match="not sorted by time: item 1"):
        make(intervals([(10, 20), (5, 8)]))


def test_item_before_start_and_after_end():
    with pytest.raises(ax.ChunkBoundaryError, match="before the chunk start 50"):
        make(intervals([(10, 60)]), 50, 100)
    with pytest.raises(ax.ChunkBoundaryError, match="item 1 ends at 120, after the chunk end 100"):
        make(intervals([(10, 20), (30, 120)]), 0, 100)


def test_start_after_end():
    with pytest.raises(ax.ChunkBoundaryError, match="is after its end"):
        make(None, 10, 5)


@pytest.mark.parametrize("bad", [1.5, 1.0, np.float64(2.0), "3", None])
def test_non_integer_bounds_are_refused(bad):
    """As strax: ints and numpy integers only, so a float is refused even if integral."""
    with pytest.raises(ValueError, match="must be an integer number of ns") as info:
        make(None, bad, 10, chunk_i=2)
    assert isinstance(info.value, ax.ChunkBoundaryError)
    assert "chunk start" in str(info.value) and "'things'" in str(info.value)
    assert "chunk 2" in str(info.value)
    with pytest.raises(ax.ChunkBoundaryError, match="chunk end must be an integer"):
        make(None, 0, bad)


def test_numpy_integer_bounds_become_python_ints():
    c = make(None, np.int64(5), np.uint32(10))
    assert (c.start, c.end) == (5, 10)
    assert type(c.start) is int and type(c.end) is int


def test_negative_start_is_refused():
    with pytest.raises(ValueError, match="chunk start -10 is negative") as info:
        make(None, -10, 100)
    assert isinstance(info.value, ax.ChunkBoundaryError)
    assert "'things'" in str(info.value) and "[-10, 100)" in str(info.value)


def test_start_after_end_is_a_value_error_as_in_strax():
    with pytest.raises(ValueError, match="is after its end"):
        make(None, 10, 5)


def test_dt_length_endtime():
    dtype = np.dtype([("time", np.int64), ("length", np.int32), ("dt", np.int16)])
    d = np.zeros(1, dtype)
    d["time"], d["length"], d["dt"] = 10, 5, 10
    assert ax.endtime(d)[0] == 60
    with pytest.raises(ax.ChunkBoundaryError):
        make(d, 0, 59, dtype=dtype)


def test_split_simple_and_views():
    c = make(intervals([(0, 10), (10, 20), (30, 40)]), 0, 100)
    a, b = c.split(25)
    assert (a.start, a.end, b.start, b.end) == (0, 25, 25, 100)
    assert len(a) == 2 and len(b) == 1
    assert np.shares_memory(a.data, c.data)


def test_split_refuses_to_cut_an_item():
    c = make(intervals([(0, 5), (5, 30)]), 0, 100)
    with pytest.raises(ax.CannotSplit, match="item 1 spans \\[5, 30\\)"):
        c.split(20)
    a, b = c.split(20, allow_early_split=True)
    assert a.end == b.start == 5 and len(a) == 1


def test_concatenate_and_continuity():
    c1 = make(intervals([(0, 10)]), 0, 50)
    c2 = make(intervals([(60, 70)]), 50, 100)
    joined = ax.Chunk.concatenate([c1, c2])
    assert (joined.start, joined.end, len(joined)) == (0, 100, 2)
    with pytest.raises(ax.ChunkContinuityError, match="not contiguous"):
        ax.Chunk.concatenate([c1, make(None, 60, 100)])


def test_merge_same_kind():
    t = intervals([(0, 10), (20, 30)])
    other_dtype = np.dtype([("time", np.int64), ("endtime", np.int64), ("extra", np.float32)])
    o = np.zeros(2, other_dtype)
    o["time"], o["endtime"], o["extra"] = t["time"], t["endtime"], [1.5, 2.5]
    merged = ax.Chunk.merge([make(t, 0, 100), make(o, 0, 100, data_type="o", dtype=other_dtype)],
                            data_type="m")
    # fields in the order of the data types' names ("o" first), as strax orders them
    assert merged.dtype.names == ("time", "endtime", "extra", "value")
    assert merged.data["extra"].tolist() == [1.5, 2.5]
    with pytest.raises(ax.ChunkMergeError, match="lengths differ"):
        ax.Chunk.merge([make(t, 0, 100), make(o[:1], 0, 100, data_type="o", dtype=other_dtype)])
    with pytest.raises(ax.ChunkMergeError, match="ranges differ"):
        ax.Chunk.merge([make(t, 0, 100), make(o, 0, 90, data_type="o", dtype=other_dtype)])


@given(interval_arrays(), st.integers(0, 1000))
def test_early_split_property(data, t):
    """The early split never cuts an item, loses or duplicates none, and is the latest such."""
    c = make(data, 0, 1000)
    left, right = c.split(t, allow_early_split=True)
    assert left.end == right.start <= max(t, 0)
    assert len(left) + len(right) == len(data)
    assert np.array_equal(np.concatenate([left.data, right.data]), data)
    ts = left.end
    ends = data["endtime"]
    assert not np.any((data["time"] < ts) & (ends > ts)), "an item straddles the split"
    # No later clean split time <= t exists (brute force, not split_index itself).
    for later in range(ts + 1, t + 1):
        if not np.any((data["time"] < later) & (ends > later)):
            pytest.fail(f"split at {ts} but {later} was clean too")


@pytest.mark.parametrize("with_endtime", [True, False])
def test_big_chunks_are_checked_the_same_way(with_endtime):
    """Big chunks take the one-pass (numba) check: same rules, same messages."""
    from asyncstrax.chunk import BIG_CHUNK_ITEMS

    n = BIG_CHUNK_ITEMS + 10
    if with_endtime:
        dtype = INTERVAL_DTYPE
        data = np.zeros(n, dtype)
        data["time"] = np.arange(n) * 10
        data["endtime"] = data["time"] + 5
    else:
        dtype = np.dtype([("time", np.int64), ("length", np.int32), ("dt", np.int16)])
        data = np.zeros(n, dtype)
        data["time"] = np.arange(n) * 10
        data["length"], data["dt"] = 1, 5
    end = n * 10
    assert len(make(data, 0, end, dtype=dtype)) == n
    bad = data.copy()
    bad["time"][100], bad["time"][101] = bad["time"][101], bad["time"][100]
    with pytest.raises(ax.ChunkSortError, match="item 101 .* comes after item 100"):
        make(bad, 0, end, dtype=dtype)
    with pytest.raises(ax.ChunkBoundaryError, match=f"item {n - 1} ends at {end - 5}"):
        make(data, 0, end - 6, dtype=dtype)
    with pytest.raises(ax.ChunkBoundaryError, match="before the chunk start 1"):
        make(data, 1, end, dtype=dtype)


def test_decisions_doc_states_the_big_chunk_threshold():
    """docs/decisions.md says from how many items chunks are numba-checked: keep it true."""
    import pathlib
    import re

    from asyncstrax.chunk import BIG_CHUNK_ITEMS

    doc = pathlib.Path(__file__).parents[1] / "docs" / "decisions.md"
    line = next(x for x in doc.read_text().splitlines() if x.startswith("- Big chunks"))
    stated = re.search(r">= ([\d,_]+) items", line)
    assert stated and int(stated.group(1).replace(",", "").replace("_", "")) == BIG_CHUNK_ITEMS


@st.composite
def maybe_broken_intervals(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    """Intervals and a chunk range that may break the rules: unsorted, outside, or fine."""
    data = draw(interval_arrays(max_items=12))
    if len(data) > 1 and draw(st.booleans()):
        i = draw(st.integers(0, len(data) - 2))
        data[[i, i + 1]] = data[[i + 1, i]]  # maybe unsorted now
    start = draw(st.integers(0, 50))
    end = draw(st.integers(950, 1050))
    return data, start, end


def _verdict(data: np.ndarray, start: int, end: int) -> str:
    try:
        make(data, start, end)
    except ax.ChunkError as error:
        return f"{type(error).__name__}: {error}"
    return "ok"


@given(maybe_broken_intervals())
def test_numba_and_numpy_chunk_checks_agree(case):
    """Big chunks are checked by one numba pass, small ones with numpy: same rules, messages."""
    import asyncstrax.chunk as chunk_module

    data, start, end = case
    small = _verdict(data, start, end)
    original = chunk_module.BIG_CHUNK_ITEMS
    chunk_module.BIG_CHUNK_ITEMS = 1
    try:
        big = _verdict(data, start, end)
    finally:
        chunk_module.BIG_CHUNK_ITEMS = original
    assert small == big
    times, ends = data["time"], data["endtime"]
    broken = (bool(np.any(np.diff(times) < 0)) or bool(np.any(times < start))
              or bool(np.any(ends > end)))
    assert (small != "ok") == broken
