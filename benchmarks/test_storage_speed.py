"""Storage throughput: FileStore save and load vs the bare codec on the same bytes.

Synthetic raw_records-like data (time, length, dt, channel, pulse_length, record_i, baseline and
a 110-sample int16 waveform: a baseline near 16000 with noise and occasional pulses), ~200 MB in
10 chunks (``ASYNCSTRAX_BENCH_MB`` to change). Throughput is MB/s of *uncompressed* data.

- bare compress / decompress: the codec's own functions with the settings the store writes
  (blosc, the default: byte shuffle by 2 + LZ4; lz4: a frame with content checksum), one chunk
  after another on one thread, nothing written or read;
- save: the FileStore saver fed through a Channel (as the pipeline does), files written to disk
  (page cache), metadata, rename;
- load: the FileStore loader, files read (CRC-32 checked) and decompressed, arrays handed out
  as Chunks.

Both codecs are measured (``-k blosc`` / ``-k lz4`` to pick one).

Goal: load >= 0.8x bare decompression, save >= 0.8x bare compression. Run with::

    PYTHONPATH=. .venv/bin/python -m pytest benchmarks/test_storage_speed.py -s --benchmark-enable
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time

import numpy as np
import pytest

from asyncstrax.chunk import Chunk
from asyncstrax.lineage import DataKey
from asyncstrax.runtime.channel import Channel
from asyncstrax.runtime.offload import ThreadPool
from asyncstrax.storage import FileStore, codecs

RAW_RECORDS = np.dtype([
    ("time", "<i8"), ("length", "<i4"), ("dt", "<i2"), ("channel", "<i2"),
    ("pulse_length", "<i4"), ("record_i", "<i2"), ("baseline", "<i2"), ("data", "<i2", (110,)),
])
TOTAL_MB = float(os.environ.get("ASYNCSTRAX_BENCH_MB", 200))
N_CHUNKS = 10
REPEATS = 5


def synthetic_raw_records(n: int, t0: int, rng: np.random.Generator) -> np.ndarray:
    r = np.zeros(n, RAW_RECORDS)
    r["dt"] = 10
    r["length"] = 110
    r["pulse_length"] = 110
    r["channel"] = rng.integers(0, 494, n)
    r["time"] = t0 + np.sort(rng.integers(0, n * 2000, n))
    r["baseline"] = 16000
    wf = 16000 + np.round(rng.normal(0, 2.5, (n, 110))).astype(np.int16)
    # pulses in one record of five: a fast rise and exponential tail downwards
    has_pulse = rng.random(n) < 0.2
    k = int(has_pulse.sum())
    shape = np.exp(-np.arange(110) / 12.0)
    start = rng.integers(5, 60, k)
    amp = rng.exponential(300, k).astype(np.int32)
    idx = np.arange(110)[None, :] - start[:, None]
    pulse = np.where(idx >= 0, amp[:, None] * shape[np.clip(idx, 0, 109)], 0)
    wf[has_pulse] -= pulse.astype(np.int16)
    r["data"] = wf
    return r


@pytest.fixture(scope="module")
def chunks():
    rng = np.random.default_rng(42)
    per_chunk = int(TOTAL_MB * 1e6 / N_CHUNKS / RAW_RECORDS.itemsize)
    out, t = [], 0
    for _ in range(N_CHUNKS):
        data = synthetic_raw_records(per_chunk, t, rng)
        end = int(data["time"][-1] + 1100)
        out.append(Chunk(data_type="raw_records", data_kind="raw_records", dtype=RAW_RECORDS,
                         run_id="bench", start=t, end=end, data=data))
        t = end
    return out


class RawRecordsPlugin:
    """What FileStore.saver reads from a plugin."""

    chunk_target_size_mb = 200
    rechunk_on_save = False

    def __init__(self, version: str, compressor: str) -> None:
        self.compressor = compressor
        self.lineage = {"raw_records": ["Digitizer", version, {}]}

    def dtype_for(self, data_type):
        return RAW_RECORDS

    def data_kind_for(self, data_type):
        return "raw_records"


async def save(store, key, plugin, chunks):
    saver = store.saver(key, plugin=plugin)
    channel = Channel("raw_records", capacity_bytes=64 * 1024**2)
    reader = channel.reader()
    pool = ThreadPool(max(2, min(4, os.cpu_count() or 2)))
    try:
        task = asyncio.create_task(saver.consume(reader, pool))
        for chunk in chunks:
            await channel.put(chunk)
        channel.close()
        await task
    finally:
        await pool.drain()
        pool.shutdown()
    assert saver.outcome == "saved"


async def load(store, key):
    loader = store.loader(key, data_kind="raw_records", dtype=RAW_RECORDS)
    n = 0
    async for item in loader.chunks():
        n += len(item["raw_records"])
    return n


def best_of(fn, repeats=REPEATS):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@pytest.mark.parametrize("compressor", ["blosc", "lz4"])
def test_storage_speed(benchmark, chunks, tmp_path, compressor):
    total = sum(c.nbytes for c in chunks)
    mb = total / 1e6
    compressed = [codecs.compress(compressor, c.data) for c in chunks]
    ratio = total / sum(len(c) for c in compressed)

    t_compress = best_of(lambda: [codecs.compress(compressor, c.data) for c in chunks])
    t_decompress = best_of(lambda: [codecs.decompress(compressor, c, None) for c in compressed])

    versions = iter(range(1000))

    def do_save():
        store = FileStore(tmp_path / "save")
        plugin = RawRecordsPlugin(f"0.{next(versions)}", compressor)
        key = DataKey("bench", "raw_records", plugin.lineage)
        asyncio.run(save(store, key, plugin, chunks))
        return store, key

    def timed_save():
        shutil.rmtree(tmp_path / "save", ignore_errors=True)
        do_save()

    t_save = best_of(timed_save)
    store, key = do_save()
    n_items = sum(len(c) for c in chunks)
    assert asyncio.run(load(store, key)) == n_items
    t_load = best_of(lambda: asyncio.run(load(store, key)))
    benchmark.pedantic(lambda: asyncio.run(load(store, key)), rounds=REPEATS, iterations=1)

    figures = {
        "compressor": compressor,
        "uncompressed_mb": round(mb, 1),
        "compression_ratio": round(ratio, 2),
        "bare_compress_mb_s": round(mb / t_compress, 1),
        "bare_decompress_mb_s": round(mb / t_decompress, 1),
        "save_mb_s": round(mb / t_save, 1),
        "load_mb_s": round(mb / t_load, 1),
        "save_vs_bare_compress": round(t_compress / t_save, 2),
        "load_vs_bare_decompress": round(t_decompress / t_load, 2),
    }
    benchmark.extra_info.update(figures)
    print()
    for name, value in figures.items():
        print(f"{name:>26}: {value}")
