"""Helpers shared by the storage tests (not a test module; imported by name)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

import asyncstrax as ax
from asyncstrax.chunk import Chunk
from asyncstrax.lineage import DataKey
from asyncstrax.runtime.channel import Channel
from asyncstrax.runtime.offload import ThreadPool

ENDTIME_DTYPE = np.dtype([("time", "<i8"), ("endtime", "<i8"), ("area", "<f4"), ("n", "<i2")])
LENGTH_DTYPE = np.dtype(
    [("time", "<i8"), ("length", "<i4"), ("dt", "<i2"), ("channel", "<i2"),
     ("data", "<i2", (8,))]
)


class StubPlugin:
    """What FileStore.saver reads from a configured plugin."""

    def __init__(
        self,
        data_type: str,
        dtype: Any,
        *,
        lineage: dict | None = None,
        compressor: str = "lz4",
        chunk_target_size_mb: float = 200,
        rechunk_on_save: bool = False,
        data_kind: str | None = None,
    ) -> None:
        self.data_type = data_type
        self.dtype = np.dtype(dtype)
        self.lineage = lineage or {data_type: ("Stub", "0.0.1", {"option": 1})}
        self.compressor = compressor
        self.chunk_target_size_mb = chunk_target_size_mb
        self.rechunk_on_save = rechunk_on_save
        self.data_kind = data_kind or data_type

    def dtype_for(self, data_type: str) -> np.dtype:
        return self.dtype

    def data_kind_for(self, data_type: str) -> str:
        return self.data_kind

    def key(self, run_id: str = "run0") -> DataKey:
        return DataKey(run_id, self.data_type, self.lineage)


def make_items(dtype: np.dtype, times: np.ndarray, durations: np.ndarray, rng: Any) -> np.ndarray:
    data = np.zeros(len(times), dtype=dtype)
    data["time"] = times
    if "endtime" in dtype.names:
        data["endtime"] = times + durations
    else:
        data["dt"] = 2
        data["length"] = durations // 2
    for name in dtype.names:
        if name in ("time", "endtime", "dt", "length"):
            continue
        field = data[name]
        if field.dtype.kind in "iu":
            info = np.iinfo(field.dtype)
            native = field.dtype.newbyteorder("=")
            data[name] = rng.integers(info.min, info.max, size=field.shape, dtype=native,
                                      endpoint=True)
        elif field.dtype.kind == "f":
            data[name] = rng.normal(size=field.shape)
        elif field.dtype.kind == "b":
            data[name] = rng.integers(0, 2, size=field.shape).astype(bool)
    return data


def make_chunks(
    dtype: np.dtype,
    boundaries: list[int],
    counts: list[int],
    rng: Any,
    run_id: str = "run0",
    data_type: str = "things",
) -> list[Chunk]:
    """Contiguous chunks over ``boundaries`` with ``counts[i]`` items inside chunk i."""
    chunks = []
    for (start, end), n in zip(zip(boundaries[:-1], boundaries[1:]), counts):
        span = end - start
        if span < 2:
            n = 0
        times = np.sort(rng.integers(start, max(start + 1, end - 1), size=n))
        durations = 2 * rng.integers(0, 1 + (end - times) // 2, size=n)
        durations = np.minimum(durations, (end - times) // 2 * 2)
        data = make_items(dtype, times, durations, rng)
        chunks.append(Chunk(data_type=data_type, data_kind=data_type, dtype=dtype,
                            run_id=run_id, start=start, end=end, data=data))
    return chunks


async def save_chunks(
    store: Any, key: DataKey, plugin: Any, chunks: list[Chunk], delay: float = 0.0
) -> Any:
    """Feed chunks through a Channel into the store's saver, as the pipeline does."""
    saver = store.saver(key, plugin=plugin)
    channel = Channel(key.data_type, capacity_bytes=1 << 20)
    reader = channel.reader()
    pool = ThreadPool(2)
    try:
        task = asyncio.create_task(saver.consume(reader, pool))

        async def feed() -> None:
            for chunk in chunks:
                await channel.put(chunk)
                if delay:
                    await asyncio.sleep(delay)
            channel.close()

        feeder = asyncio.create_task(feed())
        try:
            await task
        except BaseException as error:
            feeder.cancel()
            await asyncio.shield(saver.abort(error))
            raise
        await feeder
    finally:
        await pool.drain()
        pool.shutdown()
    return saver


async def load_chunks(store: Any, key: DataKey, plugin: Any, time_range: Any = None) -> list:
    loader = store.loader(key, data_kind=plugin.data_kind_for(key.data_type),
                          dtype=plugin.dtype_for(key.data_type), time_range=time_range)
    out = []
    async for item in loader.chunks():
        assert set(item) == {key.data_type}
        out.append(item[key.data_type])
    return out


def assert_same_chunks(saved: list[Chunk], loaded: list[Chunk]) -> None:
    assert [(c.start, c.end) for c in loaded] == [(c.start, c.end) for c in saved]
    for a, b in zip(saved, loaded):
        assert b.dtype == a.dtype
        np.testing.assert_array_equal(b.data, a.data)
        assert b.run_id == a.run_id


def concat(chunks: list[Chunk], dtype: np.dtype) -> np.ndarray:
    arrays = [c.data for c in chunks]
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


#: "things" of the context-level storage tests: a source's items, and a plugin made from them
THINGS_DTYPE = [("time", "<i8"), ("endtime", "<i8"), ("x", "<f8")]


class Doubled(ax.Plugin):
    depends_on = "things"
    provides = "doubled"
    data_kind = "things"
    dtype = THINGS_DTYPE
    __version__ = "0.0.1"

    def compute(self, things):
        out = things.copy()
        out["x"] *= 2
        return out
