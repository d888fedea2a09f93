"""Publish / subscribe: exact chunks over TCP (raw and lz4) and shared memory, several
subscribers, a subscriber as a source plugin in another process's Context, a Publisher fed by a
running pipeline."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
from streams_testing import DT, RUN, PublisherProcess, make_chunk, same_chunk

import asyncstrax as ax
from asyncstrax.streams import Publisher, Subscriber, publish, stream_info, subscriber_plugin
from asyncstrax.streams.sharedmem import segment_names


def guard(coro, seconds: float = 4):
    return asyncio.wait_for(coro, seconds)


async def roundtrip(transport: str, compress: bool, n_subs: int = 1):
    sent = [make_chunk(i, n=50 + 10 * i) for i in range(8)]
    sent.insert(3, ax.Chunk(data_type="records", data_kind="records", dtype=DT, run_id=RUN,
                            start=sent[2].end, end=sent[2].end, data=None))  # empty, zero-length
    sent[4:] = [ax.Chunk(data_type="records", data_kind="records", dtype=DT, run_id=RUN,
                         start=c.start, end=c.end, data=c.data) for c in sent[4:]]
    async with Publisher("records", transport=transport, compress=compress) as pub:
        subs = [Subscriber(pub.address, "records", dtype=DT) for _ in range(n_subs)]

        async def collect(sub):
            return [c async for c in sub]

        tasks = [asyncio.create_task(collect(s)) for s in subs]
        await pub.wait_for_subscribers(n_subs)
        await publish(_aiter(sent), pub, end=False)
        await pub.end()
        results = await asyncio.gather(*tasks)
    for got, sub in zip(results, subs):
        assert len(got) == len(sent)
        assert all(same_chunk(a, b) for a, b in zip(got, sent))
        assert sub.statistics().ended_cleanly
        assert sub.info.transport == transport
    return results, pub


async def _aiter(items):
    for item in items:
        yield item


@pytest.mark.asyncio
@pytest.mark.parametrize("transport,compress",
                         [("tcp", False), ("tcp", True), ("sharedmem", False)])
async def test_exact_chunks_reach_every_subscriber(transport, compress):
    results, pub = await guard(roundtrip(transport, compress, n_subs=2))
    stats = pub.statistics()
    assert stats.published_chunks == 9 and stats.subscribers_total == 2
    if transport == "sharedmem":
        # zero copy on receipt: the array is the mapped segment, and it is writable (private)
        chunk = results[0][0]
        assert not chunk.data.flags.owndata
        chunk.data["channel"][0] = -5
        assert results[1][0].data["channel"][0] != -5
    del results
    assert not segment_names(f"axs_{os.getpid()}_")


@pytest.mark.asyncio
async def test_subscriber_plugin_feeds_a_context_from_another_process():
    pub = PublisherProcess(n_chunks=6, n_items=80)
    try:
        address = await guard(pub.start())

        class Summed(ax.Plugin):
            depends_on = "records"
            provides = "summed"
            dtype = np.dtype([("time", "<i8"), ("endtime", "<i8"), ("total", "<f8")])

            def compute(self, records):
                out = np.zeros(len(records), self.dtype)
                out["time"], out["endtime"] = records["time"], records["endtime"]
                out["total"] = records["value"].sum(axis=1)
                return out

        ctx = ax.Context(register=[subscriber_plugin("records", address, DT), Summed])
        got = await guard(ctx.aget_array(RUN, "summed"))
        expected = np.concatenate([make_chunk(i, 80).data for i in range(6)])
        np.testing.assert_array_equal(got["time"], expected["time"])
        np.testing.assert_allclose(got["total"], expected["value"].sum(axis=1))
        await guard(pub.stats())
    finally:
        pub.close()


@pytest.mark.asyncio
async def test_subscriber_plugin_checks_the_run_id():
    async with Publisher("records", dtype=DT, data_kind="records", run_id=RUN) as pub:
        ctx = ax.Context(register=[subscriber_plugin("records", pub.address, DT)])
        with pytest.raises(ax.StreamError, match="carries run 'run0'"):
            await guard(ctx.aget_array("other_run", "records"))


@pytest.mark.asyncio
async def test_stream_info_does_not_count_as_a_subscriber():
    async with Publisher("records", dtype=DT, data_kind="records", run_id=RUN) as pub:
        info = await guard(stream_info(pub.address))
        assert (info.run_id, info.data_type, info.dtype) == (RUN, "records", DT)
        assert pub.n_subscribers == 0


@pytest.mark.asyncio
async def test_a_running_pipeline_publishes_while_it_computes():
    """A PublishingConsumer reads a data type of a Pipeline as a saver would."""

    class Source(ax.Plugin):
        provides = "records"
        dtype = DT

        async def iterate(self):
            for i in range(5):
                yield self.chunk(start=i * 10_000, end=(i + 1) * 10_000,
                                 data=make_chunk(i).data)

    ctx = ax.Context(register=[Source])
    async with Publisher("records") as pub:
        sub = Subscriber(pub.address, "records")
        received = asyncio.create_task(_collect(sub))
        await guard(pub.wait_for_subscribers(1))
        pipeline = ctx.pipeline(RUN, "records")
        pipeline.savers.append(pub.consumer())
        await guard(pipeline.run())
        got = await guard(received)
    assert [c.start for c in got] == [i * 10_000 for i in range(5)]
    assert all(same_chunk(a, make_chunk(i)) for i, a in enumerate(got))


async def _collect(sub):
    return [c async for c in sub]


@pytest.mark.asyncio
async def test_late_subscriber_gets_contiguous_chunks_from_where_it_joined():
    async with Publisher("records") as pub:
        await pub.publish(make_chunk(0))
        sub = Subscriber(pub.address, "records")
        task = asyncio.create_task(_collect(sub))
        await guard(pub.wait_for_subscribers(1))
        for i in range(1, 4):
            await pub.publish(make_chunk(i))
    got = await guard(task)
    assert [c.start for c in got] == [10_000, 20_000, 30_000]
