"""Save then load gives back exactly what was saved: data, chunk ranges, and strax's metadata."""

from __future__ import annotations

import asyncio
import json
import os
from ast import literal_eval

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_testing import (
    ENDTIME_DTYPE,
    LENGTH_DTYPE,
    StubPlugin,
    assert_same_chunks,
    concat,
    load_chunks,
    make_chunks,
    make_items,
    save_chunks,
)

from asyncstrax.chunk import Chunk
from asyncstrax.storage import FileStore

EXTRA_FIELD_TYPES = ["<i1", "<i2", "<u4", "<i8", "<f4", "<f8", "?", ">i4"]


@st.composite
def dtypes(draw):
    if draw(st.booleans()):
        fields = [("time", "<i8"), ("endtime", "<i8")]
    else:
        fields = [("time", "<i8"), ("length", "<i4"), ("dt", "<i2")]
    n_extra = draw(st.integers(0, 4))
    for i in range(n_extra):
        kind = draw(st.sampled_from(EXTRA_FIELD_TYPES))
        shape = draw(st.sampled_from([(), (3,), (2, 2)]))
        fields.append((f"x{i}", kind, shape) if shape else (f"x{i}", kind))
    order = draw(st.permutations(range(len(fields))))
    # aligned: padding between fields, which the metadata writes as unnamed void fields
    return np.dtype([fields[i] for i in order], align=draw(st.booleans()))


@st.composite
def chunkings(draw):
    n_chunks = draw(st.integers(1, 8))
    t0 = draw(st.integers(0, 10**12))
    widths = draw(st.lists(st.integers(0, 500), min_size=n_chunks, max_size=n_chunks))
    boundaries = [t0]
    for w in widths:
        boundaries.append(boundaries[-1] + w)
    counts = draw(st.lists(st.sampled_from([0, 0, 1, 3, 50]), min_size=n_chunks,
                           max_size=n_chunks))
    return boundaries, counts


def run(coro):
    return asyncio.run(coro)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=dtypes(), chunking=chunkings(), seed=st.integers(0, 2**32 - 1))
def test_roundtrip_keeps_chunks_and_data(tmp_path_factory, dtype, chunking, seed):
    boundaries, counts = chunking
    rng = np.random.default_rng(seed)
    chunks = make_chunks(dtype, boundaries, counts, rng)
    store = FileStore(tmp_path_factory.mktemp("store"))
    plugin = StubPlugin("things", dtype, rechunk_on_save=False)
    key = plugin.key()
    run(save_chunks(store, key, plugin, chunks))
    assert store.find(key)
    loaded = run(load_chunks(store, key, plugin))
    assert_same_chunks(chunks, loaded)
    for c in loaded:
        assert c.data.flags.writeable


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=dtypes(), chunking=chunkings(), seed=st.integers(0, 2**32 - 1),
       target_bytes=st.integers(1, 5000))
def test_roundtrip_with_rechunking_keeps_data(tmp_path_factory, dtype, chunking, seed,
                                              target_bytes):
    boundaries, counts = chunking
    rng = np.random.default_rng(seed)
    chunks = make_chunks(dtype, boundaries, counts, rng)
    store = FileStore(tmp_path_factory.mktemp("store"))
    plugin = StubPlugin("things", dtype, rechunk_on_save=True,
                        chunk_target_size_mb=target_bytes / 1e6)
    key = plugin.key()
    run(save_chunks(store, key, plugin, chunks))
    loaded = run(load_chunks(store, key, plugin))
    assert loaded[0].start == chunks[0].start
    assert loaded[-1].end == chunks[-1].end
    for a, b in zip(loaded[:-1], loaded[1:]):
        assert a.end == b.start
    np.testing.assert_array_equal(concat(loaded, dtype), concat(chunks, dtype))


@pytest.mark.asyncio
async def test_rechunk_merges_small_chunks(tmp_path):
    rng = np.random.default_rng(1)
    dtype = LENGTH_DTYPE
    boundaries = list(range(0, 100_001, 1000))
    chunks = make_chunks(dtype, boundaries, [20] * 100, rng)
    per_chunk = chunks[0].nbytes
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", dtype, rechunk_on_save=True,
                        chunk_target_size_mb=10 * per_chunk / 1e6)
    await save_chunks(store, plugin.key(), plugin, chunks)
    loaded = await load_chunks(store, plugin.key(), plugin)
    assert 8 <= len(loaded) <= 12
    np.testing.assert_array_equal(concat(loaded, dtype), concat(chunks, dtype))


@pytest.mark.asyncio
async def test_rechunk_splits_big_chunk_cleanly(tmp_path):
    rng = np.random.default_rng(2)
    dtype = ENDTIME_DTYPE
    times = np.sort(rng.integers(0, 9_999_000, size=10_000))
    data = make_items(dtype, times, rng.integers(0, 1000, size=10_000), rng)
    chunks = [Chunk(data_type="things", data_kind="things", dtype=dtype, run_id="run0",
                    start=0, end=10_000_000, data=data)]
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", dtype, rechunk_on_save=True,
                        chunk_target_size_mb=chunks[0].nbytes / 10 / 1e6)
    await save_chunks(store, plugin.key(), plugin, chunks)
    loaded = await load_chunks(store, plugin.key(), plugin)
    assert 7 <= len(loaded) <= 11
    assert all(c.nbytes <= 1.5 * chunks[0].nbytes / 10 for c in loaded)
    np.testing.assert_array_equal(concat(loaded, dtype), concat(chunks, dtype))


@pytest.mark.asyncio
async def test_metadata_follows_strax_format(tmp_path):
    rng = np.random.default_rng(3)
    dtype = LENGTH_DTYPE
    chunks = make_chunks(dtype, [100, 200, 300, 400], [5, 0, 7], rng)
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", dtype)
    key = plugin.key("042")
    chunks = [c._like(c.start, c.end, c.data) for c in chunks]
    for c in chunks:
        c.run_id = "042"
    await save_chunks(store, key, plugin, chunks)
    h = key.lineage_hash
    folder = tmp_path / f"042-things-{h}"
    assert sorted(os.listdir(folder)) == sorted(
        [f"things-{h}-metadata.json", f"things-{h}-000000", f"things-{h}-000002"])
    md = json.loads((folder / f"things-{h}-metadata.json").read_text())
    assert md["run_id"] == "042" and md["data_type"] == "things" and md["data_kind"] == "things"
    assert md["dtype"] == repr(dtype.descr)
    assert np.dtype(literal_eval(md["dtype"])) == dtype
    assert md["lineage_hash"] == h
    assert md["lineage"] == json.loads(json.dumps(key.lineage))
    assert md["compressor"] == "lz4"
    assert md["start"] == 100 and md["end"] == 400
    assert isinstance(md["writing_started"], float) and md["writing_ended"] >= md["writing_started"]
    assert "exception" not in md
    c0, c1, c2 = md["chunks"]
    assert c0["filename"] == f"things-{h}-000000"
    assert c0["filesize"] == os.path.getsize(folder / c0["filename"])
    assert c0["n"] == 5 and c0["nbytes"] == 5 * dtype.itemsize
    assert c0["first_time"] == int(chunks[0].data["time"][0])
    assert c0["last_endtime"] == int(chunks[0].data["time"][-1]
                                     + chunks[0].data["length"][-1] * chunks[0].data["dt"][-1])
    assert c0["run_id"] == "042" and c0["subruns"] is None
    assert c1["n"] == 0 and "filename" not in c1 and "first_time" not in c1
    assert [c["chunk_i"] for c in md["chunks"]] == [0, 1, 2]
    assert store.get_metadata(key)["chunks"][2]["start"] == 300


@pytest.mark.asyncio
async def test_time_range_reads_only_touched_chunks(tmp_path):
    rng = np.random.default_rng(4)
    dtype = ENDTIME_DTYPE
    boundaries = list(range(0, 10_001, 1000))
    chunks = make_chunks(dtype, boundaries, [30] * 10, rng)
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", dtype)
    key = plugin.key()
    await save_chunks(store, key, plugin, chunks)
    folder = store.folder(key)
    # Delete every chunk file outside [3000, 5000): loading that range must not need them.
    wanted = {f"things-{key.lineage_hash}-{i:06d}" for i in (3, 4)}
    for name in os.listdir(folder):
        if name.startswith(f"things-{key.lineage_hash}-0") and name not in wanted:
            os.unlink(os.path.join(folder, name))
    loader = store.loader(key, data_kind="things", dtype=dtype, time_range=(3000, 5000))
    got = [item["things"] async for item in loader.chunks()]
    assert sorted(loader.files_read) == sorted(wanted)
    assert [(c.start, c.end) for c in got] == [(3000, 4000), (4000, 5000)]
    assert_same_chunks(chunks[3:5], got)
    # A range inside one chunk touches one file.
    loader = store.loader(key, data_kind="things", dtype=dtype, time_range=(4100, 4200))
    got = [item["things"] async for item in loader.chunks()]
    assert loader.files_read == [f"things-{key.lineage_hash}-000004"]


@pytest.mark.asyncio
async def test_loader_interface(tmp_path):
    rng = np.random.default_rng(5)
    chunks = make_chunks(ENDTIME_DTYPE, [0, 10, 20], [3, 3], rng)
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", ENDTIME_DTYPE, data_kind="kind_a")
    await save_chunks(store, plugin.key(), plugin, chunks)
    loader = store.loader(plugin.key(), data_kind="kind_a", dtype=ENDTIME_DTYPE)
    assert loader.name == "load things"
    assert loader.provides == ("things",)
    assert loader.data_kind_for("things") == "kind_a"
    got = [item async for item in loader.chunks()]
    assert got[0]["things"].data_kind == "kind_a"
    # Stopping early cleans up (no pending reads left behind)
    agen = loader.chunks()
    await agen.__anext__()
    await agen.aclose()
