"""Backpressure across the wire: a slow lossless subscriber slows the publisher and its buffer
stays bounded; a ``drop`` subscriber beside it misses chunks (counted, gaps marked, still
contiguous) without touching the lossless one; a subscriber that leaves does not stop others."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from streams_testing import PublisherProcess, make_chunk, same_chunk

from asyncstrax.streams import Publisher, Subscriber


def guard(coro, seconds: float = 4.5):
    return asyncio.wait_for(coro, seconds)


async def slow_collect(sub, delay, keep=True, into=None):
    got = [] if into is None else into
    async for chunk in sub:
        got.append(chunk if keep else (chunk.start, chunk.end, len(chunk)))
        await asyncio.sleep(delay)
    return got


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["tcp", "sharedmem"])
async def test_slow_subscriber_slows_the_publisher_and_bounds_its_buffer(transport):
    one = make_chunk(0, n=2000).nbytes  # ~84 kB; a socket holds a few MB, so send plenty
    capacity = 3 * one
    n_chunks = 120
    received: list = []
    async with Publisher("records", transport=transport, buffer_bytes=capacity) as pub:
        sub = Subscriber(pub.address, "records")
        task = asyncio.create_task(slow_collect(sub, 0.002, keep=False, into=received))
        await guard(pub.wait_for_subscribers(1))
        lead = []
        for i in range(n_chunks):
            await guard(pub.publish(make_chunk(i, n=2000)))
            assert pub.statistics().subscriptions[0].buffered_bytes <= capacity + one
            lead.append(i + 1 - len(received))
        stats = pub.statistics()
    got = await guard(task)
    assert len(got) == n_chunks
    assert stats.subscriptions[0].dropped_chunks == 0
    # the buffer filled up, so from then on publish() waited for the subscriber
    assert capacity <= stats.max_buffered_bytes <= capacity + one
    if transport == "sharedmem":
        # nothing hides in socket buffers: the publisher is at most a buffer ahead
        assert max(lead) <= capacity // one + 2


@pytest.mark.asyncio
async def test_publisher_in_another_process_stays_bounded_behind_a_slow_subscriber():
    one = make_chunk(0, n=2000).nbytes
    pub = PublisherProcess(n_chunks=80, n_items=2000, buffer_bytes=2 * one)
    try:
        address = await guard(pub.start())
        got = await guard(slow_collect(Subscriber(address, "records"), 0.004, keep=False))
        stats = await guard(pub.stats())
    finally:
        pub.close()
    assert len(got) == 80
    assert stats["max_buffered"] <= 3 * one


@pytest.mark.asyncio
async def test_drop_subscriber_beside_a_lossless_one():
    n_chunks = 60
    sent = [make_chunk(i, n=2000) for i in range(n_chunks)]
    capacity = 2 * sent[0].nbytes
    async with Publisher("records", buffer_bytes=16 * sent[0].nbytes) as pub:
        lossless = Subscriber(pub.address, "records")
        monitor = Subscriber(pub.address, "records", policy="drop", buffer_bytes=capacity)
        fast = asyncio.create_task(slow_collect(lossless, 0))
        slow = asyncio.create_task(slow_collect(monitor, 0.01, keep=False))
        await guard(pub.wait_for_subscribers(2))
        for chunk in sent:
            await guard(pub.publish(chunk))
        await guard(pub.end())
        stats = {s.policy: s for s in pub.statistics().subscriptions}
    got = await guard(fast)
    seen = await guard(slow)
    # the lossless subscriber has everything, exactly
    assert len(got) == n_chunks and all(same_chunk(a, b) for a, b in zip(got, sent))
    assert lossless.statistics().dropped_chunks == 0
    # the monitor missed chunks, knows how many, and its chunks still tile the run
    mstats = monitor.statistics()
    assert mstats.dropped_chunks > 0 and mstats.gaps > 0
    assert len(monitor.gaps) == mstats.gaps
    assert stats["drop"].dropped_chunks == mstats.dropped_chunks
    assert mstats.chunks + mstats.dropped_chunks == n_chunks
    assert mstats.dropped_items == mstats.dropped_chunks * 2000
    starts = [s for s, _, _ in seen]
    ends = [e for _, e, _ in seen]
    assert starts[0] == 0 and ends[-1] == sent[-1].end
    assert starts[1:] == ends[:-1]
    for gap in monitor.gaps:
        assert (gap.start, gap.end, 0) in seen
    assert stats["drop"].max_buffered_bytes <= capacity + sent[0].nbytes


@pytest.mark.asyncio
async def test_a_subscriber_that_leaves_does_not_stop_the_others():
    sent = [make_chunk(i, n=500) for i in range(30)]
    async with Publisher("records", transport="tcp") as pub:
        stayer = Subscriber(pub.address, "records")
        leaver = Subscriber(pub.address, "records")
        stay_task = asyncio.create_task(slow_collect(stayer, 0))

        async def leave_early():
            n = 0
            async for _ in leaver:
                n += 1
                if n == 3:
                    break  # closes the connection
            return n

        leave_task = asyncio.create_task(leave_early())
        await guard(pub.wait_for_subscribers(2))
        for chunk in sent:
            await guard(pub.publish(chunk))
            await asyncio.sleep(0.001)
        assert await guard(leave_task) == 3
        await guard(pub.end())
        stats = pub.statistics()
    got = await guard(stay_task)
    assert len(got) == 30 and all(same_chunk(a, b) for a, b in zip(got, sent))
    assert stats.subscribers_total == 2 and stats.subscribers_connected == 0
    assert np.all([s.buffered_bytes == 0 for s in stats.subscriptions])


@pytest.mark.asyncio
async def test_subscribers_that_come_and_go_leave_only_their_statistics():
    """A long-running server sees monitoring clients connect and leave for days: it keeps
    their figures, not their connections and buffers."""
    import gc
    import weakref

    async with Publisher("records", transport="tcp") as pub:
        gone = []
        for i in range(3):
            sub = Subscriber(pub.address, "records")
            reader = asyncio.create_task(slow_collect(sub, 0))
            await guard(pub.wait_for_subscribers(1))
            gone.append(weakref.ref(pub._subs[0]))
            await guard(pub.publish(make_chunk(i)))
            await asyncio.sleep(0.05)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            for _ in range(100):  # the publisher notices the closed connection
                if pub.statistics().subscribers_connected == 0:
                    break
                await asyncio.sleep(0.01)
        stats = pub.statistics()
        await asyncio.sleep(0.05)  # the last one's tasks finish
        gc.collect()
        assert [ref() for ref in gone] == [None, None, None]
    assert stats.subscribers_total == 3 and stats.subscribers_connected == 0
    assert [s.id for s in stats.subscriptions] == sorted(s.id for s in stats.subscriptions)
    assert [s.sent_chunks for s in stats.subscriptions] == [1, 1, 1]
    assert not any(s.connected for s in stats.subscriptions)


@pytest.mark.asyncio
async def test_a_long_running_monitor_keeps_its_latest_gaps_and_every_total(monkeypatch):
    monkeypatch.setattr("asyncstrax.streams.subscriber.MAX_GAPS_KEPT", 2)
    bursts, per_burst = 5, 12
    # 1 MB chunks: a burst must overrun the socket buffers, not only the monitor's
    sent = [make_chunk(i, n=20_000) for i in range(bursts * per_burst)]
    async with Publisher("records") as pub:
        monitor = Subscriber(pub.address, "records", policy="drop",
                             buffer_bytes=sent[0].nbytes)
        slow = asyncio.create_task(slow_collect(monitor, 0.01, keep=False))
        await guard(pub.wait_for_subscribers(1))
        for b in range(bursts):  # each burst overruns the monitor, each pause lets it catch up
            for chunk in sent[b * per_burst:(b + 1) * per_burst]:
                await guard(pub.publish(chunk))
            await asyncio.sleep(0.3)
        await guard(pub.end())
        published = pub.statistics().subscriptions[0]
    await guard(slow)
    stats = monitor.statistics()
    assert stats.gaps == published.gaps >= 3
    assert stats.dropped_chunks == published.dropped_chunks
    assert stats.chunks + stats.dropped_chunks == len(sent)
    assert len(monitor.gaps) == 2 and monitor.gaps[-1].end <= sent[-1].end
