"""list_stored reports what a store holds; codecs name what to install when one is missing."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest
from storage_testing import ENDTIME_DTYPE, StubPlugin, make_chunks, save_chunks

from asyncstrax.errors import StorageError
from asyncstrax.storage import FileStore, codecs, list_stored


@pytest.mark.asyncio
async def test_list_stored(tmp_path):
    rng = np.random.default_rng(0)
    store = FileStore(tmp_path)
    a = StubPlugin("things", ENDTIME_DTYPE)
    b = StubPlugin("other", ENDTIME_DTYPE)
    chunks = make_chunks(ENDTIME_DTYPE, [0, 1000, 2000, 3000], [100, 0, 100], rng)
    await save_chunks(store, a.key("r1"), a, [c._like(c.start, c.end, c.data) for c in chunks])
    other = make_chunks(ENDTIME_DTYPE, [0, 1000], [10], rng, data_type="other")
    await save_chunks(store, b.key("r0"), b, other)
    os.mkdir(tmp_path / "not-strax")
    (tmp_path / "r0-metadata.json").write_text("{}")
    os.mkdir(tmp_path / f"r2-things-{a.key().lineage_hash}_temp")  # an interrupted write

    rows = list_stored(tmp_path)
    assert [(r["run_id"], r["data_type"]) for r in rows] == [
        ("r0", "other"), ("r1", "things"), ("r2", "things")]
    r0, r1, r2 = rows
    assert r1["complete"] and not r1["temporary"] and r1["problem"] is None
    assert r1["items"] == 200 and r1["chunks"] == 3
    assert r1["uncompressed_size"] == 200 * ENDTIME_DTYPE.itemsize
    assert r1["size_on_disk"] == sum(
        os.path.getsize(os.path.join(r1["folder"], f)) for f in os.listdir(r1["folder"]))
    assert r1["compression_ratio"] == pytest.approx(r1["uncompressed_size"] / r1["size_on_disk"])
    assert r1["lineage_hash"] == a.key().lineage_hash
    assert r1["compressor"] == "lz4" and (r1["start"], r1["end"]) == (0, 3000)
    assert not r2["complete"] and r2["temporary"] and r2["problem"] == "no metadata file"
    assert list_stored(tmp_path / "nowhere") == []


def test_lz4_round_trip_and_checksum():
    data = np.zeros(1000, dtype=ENDTIME_DTYPE)
    data["time"] = np.arange(1000)
    blob = codecs.compress("lz4", data)
    raw = codecs.decompress("lz4", blob, data.nbytes)
    np.testing.assert_array_equal(np.frombuffer(raw, ENDTIME_DTYPE), data)
    import lz4.frame

    assert lz4.frame.get_frame_info(blob)["content_checksum"]


def test_bz2_round_trip():
    data = np.zeros(100, dtype=ENDTIME_DTYPE)
    data["area"] = np.arange(100)
    raw = codecs.decompress("bz2", codecs.compress("bz2", data), data.nbytes)
    np.testing.assert_array_equal(np.frombuffer(raw, ENDTIME_DTYPE), data)


def test_blosc_round_trip_shuffles_by_the_field_with_most_bytes():
    import blosc

    data = np.zeros(500, dtype=ENDTIME_DTYPE)
    data["area"] = np.arange(500)
    blob = codecs.compress("blosc", data)
    raw = codecs.decompress("blosc", memoryview(blob), data.nbytes)
    np.testing.assert_array_equal(np.frombuffer(raw, ENDTIME_DTYPE), data)
    # blosc's header records the shuffle and the element size it used
    assert blosc.decompress(blob) == data.tobytes()
    assert blob[3] == codecs.shuffle_size(ENDTIME_DTYPE)  # byte 3 of a blosc header: typesize


@pytest.mark.parametrize("stated", [None, 0, -1, 1])
def test_blosc_decompresses_in_place_only_into_the_size_its_header_states(stated):
    data = np.zeros(500, dtype=ENDTIME_DTYPE)
    data["time"] = np.arange(500)
    blob = bytearray(codecs.compress("blosc", data))  # writable, as the loader's read buffer
    nbytes = None if stated is None else data.nbytes + stated
    raw = codecs.decompress("blosc", memoryview(blob), nbytes)
    # the header's size decides how much is written: a wrong expectation is seen by the
    # caller as a length mismatch, never as a write past a buffer of the expected size
    assert bytes(raw) == data.tobytes()


@pytest.mark.parametrize("dtype, size", [
    (np.dtype([("time", "<i8"), ("length", "<i4"), ("data", "<i2", (110,))]), 2),
    (np.dtype([("time", "<i8"), ("data", "<f4", (200,))]), 4),
    (np.dtype("<f8"), 8),
    (np.dtype([("a", "<i8"), ("b", "<i4"), ("c", "<i4")]), 4),  # a tie: the smaller size
    (np.dtype([("flag", "?"), ("n", "<i2")]), 2),
])
def test_shuffle_size_is_that_of_the_field_holding_most_bytes(dtype, size):
    assert codecs.shuffle_size(dtype) == size


def test_default_compressor_is_strax_default():
    from asyncstrax import Plugin
    from asyncstrax.storage import FileStore

    assert codecs.DEFAULT_COMPRESSOR == "blosc" == Plugin.compressor
    assert FileStore("/nonexistent/for/this/test").compressor == "blosc"


@pytest.mark.parametrize("name, package", [("zstd", "zstd")])
def test_missing_codec_package_says_what_to_install(monkeypatch, name, package):
    real_import = builtins.__import__

    def no_such_module(module, *args, **kwargs):
        if module in ("blosc", "zstd", "zstandard"):
            raise ImportError(f"No module named {module!r}")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_such_module)
    monkeypatch.setattr(codecs.importlib, "import_module",
                        lambda m: no_such_module(m))
    with pytest.raises(StorageError, match=f"pip install {package}"):
        codecs.decompress(name, b"whatever", 8)


def test_unknown_compressor():
    with pytest.raises(StorageError, match="unknown compressor"):
        codecs.get_codec("snappy")
    with pytest.raises(StorageError, match="unknown compressor"):
        FileStore("/nonexistent", readonly=True, compressor="snappy")
