"""Channels: per-reader cursors, statistics, memory bounded by the slowest reader, and no
deadlock on a diamond whose branches rechunk 3:1 and 1:3."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import asyncstrax as ax
from asyncstrax.plugins.base import Work
from asyncstrax.runtime.channel import Channel, StallMonitor

DT = np.dtype([("time", np.int64), ("endtime", np.int64), ("v", np.float64)])


def chunk(i, n=10, width=100, data_type="x"):
    d = np.zeros(n, DT)
    d["time"] = i * width + np.arange(n) * (width // n)
    d["endtime"] = d["time"] + 1
    d["v"] = i
    return ax.Chunk(data_type=data_type, data_kind=data_type, dtype=DT, run_id="r",
                    start=i * width, end=(i + 1) * width, data=d)


@pytest.mark.asyncio
async def test_fan_out_each_reader_sees_everything_in_order():
    ch = Channel("x", capacity_bytes=10**6)
    readers = [ch.reader(), ch.reader()]
    for i in range(5):
        await ch.put(chunk(i))
    ch.close()
    for r in readers:
        got = [c.start async for c in r]
        assert got == [0, 100, 200, 300, 400]
    stats = ch.statistics()
    assert stats.chunks_written == 5 and stats.chunks_buffered == 0 and stats.closed


@pytest.mark.asyncio
async def test_writer_waits_for_the_slowest_reader():
    one = chunk(0).nbytes
    ch = Channel("x", capacity_bytes=2 * one, monitor=StallMonitor())
    fast, slow = ch.reader(), ch.reader()
    ch.monitor.task_started()  # the writer task below
    ch.monitor.task_started()  # the reading test itself
    ch.monitor.task_started()  # the slow reader: busy elsewhere, so never 'blocked'

    async def write():
        for i in range(6):
            await ch.put(chunk(i))
        ch.close()

    writer = asyncio.create_task(write())
    for _ in range(2):
        await fast.get()
    for _ in range(5):
        await asyncio.sleep(0)
    stats = ch.statistics()
    assert stats.writer_waiting, "the writer must wait while the slow reader lags"
    assert stats.bytes_buffered <= 2 * one and stats.reader_cursors == (2, 0)
    assert stats.overdrafts == 0
    ch.monitor.task_finished()  # the test now reads both: stalls may be broken from here
    slow_got = [c.start async for c in slow]
    fast_got = [c.start async for c in fast]
    await writer
    assert slow_got == [i * 100 for i in range(6)] and len(fast_got) == 4


@pytest.mark.asyncio
async def test_discontinuous_chunks_are_refused():
    ch = Channel("x")
    await ch.put(chunk(0))
    with pytest.raises(ax.ChunkContinuityError, match="previous chunk ended at 100"):
        await ch.put(chunk(2))


class Source(ax.Plugin):
    provides = "src"
    depends_on = ()
    dtype = DT
    n_chunks = ax.Config(default=30, type=int)

    def is_ready(self, chunk_i):
        return chunk_i < self.n_chunks

    def source_finished(self):
        return True

    def compute(self, chunk_i):
        c = chunk(chunk_i, n=200, width=1000, data_type="src")
        return self.chunk(start=c.start, end=c.end, data=c.data)


class ThreeToOne(ax.Plugin):
    """Emits one chunk per three inputs (holds data back in between)."""

    provides = "coarse"
    depends_on = "src"
    data_kind = "src"
    dtype = DT

    def setup(self):
        self.held = []
        self.held_start = None

    def process_work(self, work: Work):
        data = self.merge_inputs(work)["src"] if work.parts else None
        if self.held_start is None:
            self.held_start = work.start
        if data is not None and len(data):
            self.held.append(data)
        if work.chunk_i % 3 == 2 or work.is_last:
            arr = np.concatenate(self.held) if self.held else np.zeros(0, DT)
            out = self.chunk(start=self.held_start, end=work.end, data=arr)
            self.held, self.held_start = [], None
            return [{"coarse": out}]
        return []


class OneToThree(ax.Plugin):
    """Emits three chunks per input."""

    provides = "fine"
    depends_on = "src"
    data_kind = "src"
    dtype = DT

    def process_work(self, work: Work):
        if work.flush:
            return []
        data = self.merge_inputs(work)["src"]
        cuts = np.linspace(work.start, work.end, 4).astype(np.int64)
        outs = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            sel = data[(data["time"] >= a) & (data["time"] < b)]
            outs.append({"fine": self.chunk(start=int(a), end=int(b), data=sel)})
        return outs


class Join(ax.Plugin):
    provides = "joined"
    depends_on = ("coarse", "fine")
    dtype = DT

    def compute(self, src):
        return src[["time", "endtime", "v"]].copy() if len(src) else np.zeros(0, DT)


@pytest.mark.asyncio
@pytest.mark.parametrize("capacity", [0, 1, 30_000])
async def test_uneven_diamond_never_deadlocks(capacity):
    ctx = ax.Context(register=[Source, ThreeToOne, OneToThree, Join],
                     channel_capacity_bytes=capacity)
    result = await ctx.aget_array("r", "joined")
    assert len(result) == 30 * 200
    assert np.array_equal(result["v"], np.repeat(np.arange(30), 200).astype(float))


class ParallelOneToThree(OneToThree):
    parallel = True


@pytest.mark.asyncio
@pytest.mark.parametrize("capacity", [0, 1, 30_000])
async def test_uneven_diamond_with_a_parallel_branch_never_deadlocks(capacity):
    """The parallel branch waits for input speculatively while its steps compute; the stall
    monitor must still see every real stall and let the graph through."""
    ctx = ax.Context(register=[Source, ThreeToOne, ParallelOneToThree, Join],
                     channel_capacity_bytes=capacity, max_workers=2)
    result = await ctx.aget_array("r", "joined")
    assert len(result) == 30 * 200
    assert np.array_equal(result["v"], np.repeat(np.arange(30), 200).astype(float))
