"""Storage throughput: FileStore save and load vs the bare codec on the same bytes.

Synthetic raw_records-like data (time, length, dt, channel, pulse_length, record_i, baseline and
a 110-sample int16 waveform: a baseline near 16000 with noise and occasional pulses), ~200 MB in
10 chunks with ``--benchmark-enable``, 20 MB otherwise so the default run stays quick
(``ASYNCSTRAX_BENCH_MB`` overrides both). Throughput is MB/s of *uncompressed* data.

- bare files, 2 threads (THE baseline): what any store must do at the least, without the
  framework: compress each chunk and write it to its own file / read each file and decompress
  it, on a ThreadPoolExecutor of 2, at most 2 chunks in flight, outputs dropped.
- bare compress / decompress, 2 threads (the codec alone, for reference): the codec's own functions with the
  settings the store writes (blosc, the default: byte shuffle by 2 + LZ4; lz4: a frame with
  content checksum) on a ThreadPoolExecutor of 2, at most 2 chunks in flight, each output
  dropped once it is done. This matches the store: the saver compresses
  ``max_writes_in_flight=2`` chunks at once and the loader reads ``read_ahead=2`` ahead, on
  worker threads, and both let go of each chunk's bytes; blosc and lz4 release the GIL. So
  neither side differs in parallelism or in memory kept. Nothing is written or read: the
  distance to this is the store's overhead plus the file system's copies.
- bare compress / decompress, 1 thread (for reference only): the same, one chunk after
  another on the calling thread, outputs dropped.
- save: the FileStore saver fed through a Channel (as the pipeline does), files written to disk
  (page cache), metadata, rename. The folder of the previous round is removed untimed.
- load: the FileStore loader, files read (checksum checked) and decompressed, arrays handed
  out as Chunks and dropped.

The store runs on threads kept from round to round, as a Context keeps its threads between
requests; the bare variants' ThreadPoolExecutor is kept the same way.

Every round times bare-1-thread, bare-2-threads and the store for compression, then the same
for decompression; ``REPEATS`` rounds, interleaved so each variant sees the same machine
state; each figure is its best round; ratios are of the bests. Both codecs are measured
(``-k blosc`` / ``-k lz4`` to pick one).

Goal: load >= 0.8x the bare file reads (2 threads), save >= 0.8x the bare file writes (2
threads). What the store adds over them: a checksum (XXH3-64) of every file (computed on save, checked
on load), the chunk rules checked on load, metadata, temp folder and rename.
Run with::

    PYTHONPATH=. .venv/bin/python -m pytest benchmarks/test_storage_speed.py -s --benchmark-enable
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from bench_sizes import bench_size

from asyncstrax.chunk import Chunk
from asyncstrax.lineage import DataKey
from asyncstrax.runtime.channel import Channel
from asyncstrax.runtime.offload import ThreadPool, new_executor, thread_count
from asyncstrax.storage import FileStore, codecs

RAW_RECORDS = np.dtype([
    ("time", "<i8"), ("length", "<i4"), ("dt", "<i2"), ("channel", "<i2"),
    ("pulse_length", "<i4"), ("record_i", "<i2"), ("baseline", "<i2"), ("data", "<i2", (110,)),
])
N_CHUNKS = 10
REPEATS = 5
#: chunks in flight at once in the bare 2-thread baseline: FileStore's default
#: max_writes_in_flight (save) and read_ahead (load)
IN_FLIGHT = 2


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
def chunks(request: pytest.FixtureRequest):
    rng = np.random.default_rng(42)
    total_mb = bench_size(request.config, 200.0, 20.0, "ASYNCSTRAX_BENCH_MB")
    per_chunk = int(total_mb * 1e6 / N_CHUNKS / RAW_RECORDS.itemsize)
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


#: the store's threads, kept from round to round as a Context keeps them between requests
#: (the bare baselines' ThreadPoolExecutor is kept too)
STORE_THREADS = new_executor(thread_count(1))


async def save(store, key, plugin, chunks):
    saver = store.saver(key, plugin=plugin)
    channel = Channel("raw_records", capacity_bytes=64 * 1024**2)
    reader = channel.reader()
    pool = ThreadPool(thread_count(1), STORE_THREADS)
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
    pool = ThreadPool(thread_count(1), STORE_THREADS)
    n = 0
    async for item in loader.chunks(pool):
        n += len(item["raw_records"])
    return n


def drop_all(fn: Callable[[Any], Any], items: Iterable[Any]) -> None:
    """fn on each item, one after another on this thread, each output dropped."""
    for item in items:
        fn(item)


def drop_all_threaded(pool: ThreadPoolExecutor, fn: Callable[[Any], Any],
                      items: Iterable[Any], in_flight: int = IN_FLIGHT) -> None:
    """fn on each item on ``pool``, at most ``in_flight`` at once (the store's window), each
    output dropped as soon as it is done, in order (as the loader hands chunks out)."""
    pending: deque = deque()
    for item in items:
        if len(pending) >= in_flight:
            pending.popleft().result()
        pending.append(pool.submit(fn, item))
    while pending:
        pending.popleft().result()


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@pytest.mark.parametrize("compressor", ["blosc", "lz4"])
def test_storage_speed(benchmark, chunks, tmp_path, compressor):
    total = sum(c.nbytes for c in chunks)
    mb = total / 1e6
    arrays = [c.data for c in chunks]
    compressed = [codecs.compress(compressor, a) for a in arrays]
    ratio = total / sum(len(c) for c in compressed)

    def compress(a):
        return codecs.compress(compressor, a)

    def decompress(b):
        return codecs.decompress(compressor, b, None)

    bare_dir = tmp_path / "bare"
    bare_read_dir = tmp_path / "bare_read"
    bare_read_dir.mkdir()
    for i, blob in enumerate(compressed):  # what the bare reads read (untimed)
        (bare_read_dir / f"{i:06d}").write_bytes(blob)

    def compress_to_file(item):
        i, a = item
        with open(bare_dir / f"{i:06d}", "xb") as f:
            f.write(compress(a))

    def decompress_file(i):
        with open(bare_read_dir / f"{i:06d}", "rb") as f:
            return decompress(f.read())

    versions = iter(range(100_000))

    def do_save(folder="save"):
        store = FileStore(tmp_path / folder)
        plugin = RawRecordsPlugin(f"0.{next(versions)}", compressor)
        key = DataKey("bench", "raw_records", plugin.lineage)
        asyncio.run(save(store, key, plugin, chunks))
        return store, key

    n_items = sum(len(c) for c in chunks)
    store, key = do_save("load")  # what every load round reads (apart from the save rounds)
    assert asyncio.run(load(store, key)) == n_items

    times: dict[str, list[float]] = {name: [] for name in (
        "bare_compress_1thread", "bare_compress_2threads", "bare_files_write_2threads", "save",
        "bare_decompress_1thread", "bare_decompress_2threads", "bare_files_read_2threads",
        "load")}

    def measure() -> None:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            for _ in range(REPEATS):
                times["bare_compress_1thread"].append(timed(lambda: drop_all(compress, arrays)))
                times["bare_compress_2threads"].append(
                    timed(lambda: drop_all_threaded(pool, compress, arrays)))
                shutil.rmtree(bare_dir, ignore_errors=True)  # untimed
                bare_dir.mkdir()
                times["bare_files_write_2threads"].append(timed(
                    lambda: drop_all_threaded(pool, compress_to_file, enumerate(arrays))))
                shutil.rmtree(tmp_path / "save", ignore_errors=True)  # untimed
                times["save"].append(timed(do_save))
                times["bare_decompress_1thread"].append(
                    timed(lambda: drop_all(decompress, compressed)))
                times["bare_decompress_2threads"].append(
                    timed(lambda: drop_all_threaded(pool, decompress, compressed)))
                times["bare_files_read_2threads"].append(timed(
                    lambda: drop_all_threaded(pool, decompress_file, range(len(compressed)))))
                times["load"].append(timed(lambda: asyncio.run(load(store, key))))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    best = {name: min(t) for name, t in times.items()}

    figures = {
        "compressor": compressor,
        "uncompressed_mb": round(mb, 1),
        "rounds": REPEATS,
        "compression_ratio": round(ratio, 2),
        **{f"{name}_mb_s": round(mb / t, 1) for name, t in best.items()},
        "save_vs_bare_files_2threads": round(best["bare_files_write_2threads"] / best["save"], 2),
        "load_vs_bare_files_2threads": round(best["bare_files_read_2threads"] / best["load"], 2),
        "save_vs_bare_compress_2threads": round(best["bare_compress_2threads"] / best["save"], 2),
        "load_vs_bare_decompress_2threads": round(
            best["bare_decompress_2threads"] / best["load"], 2),
        "save_vs_bare_compress_1thread": round(best["bare_compress_1thread"] / best["save"], 2),
        "load_vs_bare_decompress_1thread": round(
            best["bare_decompress_1thread"] / best["load"], 2),
    }
    benchmark.extra_info.update(figures)
    meaning = {
        "bare_compress_1thread_mb_s": "codec alone, 1 thread, outputs dropped (reference)",
        "bare_compress_2threads_mb_s": "codec alone, 2 threads, 2 in flight, dropped",
        "bare_files_write_2threads_mb_s": "compress + write a file each, 2 threads (baseline)",
        "bare_files_read_2threads_mb_s": "read a file + decompress each, 2 threads (baseline)",
        "save_mb_s": "FileStore saver, files written (page cache)",
        "bare_decompress_1thread_mb_s": "codec alone, 1 thread, outputs dropped (reference)",
        "bare_decompress_2threads_mb_s": "codec alone, 2 threads, 2 in flight, dropped",
        "load_mb_s": "FileStore loader, files read, checksum checked, chunks dropped",
        "save_vs_bare_files_2threads": "store vs bare file writes (goal >= 0.8)",
        "load_vs_bare_files_2threads": "store vs bare file reads (goal >= 0.8)",
        "save_vs_bare_compress_2threads": "store vs the codec alone (no files)",
        "load_vs_bare_decompress_2threads": "store vs the codec alone (no files)",
        "save_vs_bare_compress_1thread": "save vs the 1-thread codec (reference only)",
        "load_vs_bare_decompress_1thread": "load vs the 1-thread codec (reference only)",
    }
    print(f"\n{compressor}: {mb:.0f} MB uncompressed in {len(chunks)} chunks, best of "
          f"{REPEATS} interleaved rounds, MB/s of uncompressed data; ratios are of the bests")
    for name, value in figures.items():
        note = meaning.get(name, "")
        print(f"{name:>33}: {value!s:<8} {note}")
