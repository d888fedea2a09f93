"""Faults and bad input: a publisher killed mid-run (SIGKILL), a failing source, garbage,
truncated and oversized frames, a wrong dtype, token refusal, the default bind address, and
shared-memory segments that never outlive their publisher."""

from __future__ import annotations

import asyncio
import json
import os
import socket

import numpy as np
import pytest
from streams_testing import DT, RUN, PublisherProcess, make_chunk

import asyncstrax as ax
from asyncstrax.streams import Publisher, Subscriber, publish, subscriber_plugin
from asyncstrax.streams import protocol as P
from asyncstrax.streams.sharedmem import segment_names


def guard(coro, seconds: float = 4.5):
    return asyncio.wait_for(coro, seconds)


# ---------------------------------------------------------------------- a publisher that dies
@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["tcp", "sharedmem"])
async def test_publisher_killed_mid_run_is_a_clear_stream_error(transport):
    pub = PublisherProcess(n_chunks=10, hang_at=3, transport=transport)
    try:
        address = await guard(pub.start())
        sub = Subscriber(address, "records", dtype=DT)
        got = []
        with pytest.raises(ax.StreamError, match="crashed or was killed") as info:
            async for chunk in sub:
                got.append(chunk)
                if len(got) == 3:
                    await guard(pub.line("HANGING"))
                    pub.kill()
        assert len(got) == 3
        assert "3 chunks received" in str(info.value)
        assert not sub.statistics().ended_cleanly
        prefix = f"axs_{pub.proc.pid}_"
        pub.proc.wait(5)
        for _ in range(100):  # the sweep is immediate; the resource tracker is a second net
            if not segment_names(prefix):
                break
            await asyncio.sleep(0.02)
        assert not segment_names(prefix)
        del got
    finally:
        pub.close()


@pytest.mark.asyncio
async def test_pipeline_on_a_killed_publisher_fails_cleanly():
    pub = PublisherProcess(n_chunks=10, hang_at=2)
    try:
        address = await guard(pub.start())
        ctx = ax.Context(register=[subscriber_plugin("records", address, DT)])
        n = 0
        with pytest.raises(ax.StreamError, match="crashed or was killed") as info:
            async for _chunk in ctx.aiter(RUN, "records"):
                n += 1
                if n == 2:
                    await guard(pub.line("HANGING"))
                    pub.kill()
        assert info.value.plugin == "SubscribeRecords"
        assert n == 2
    finally:
        pub.close()


@pytest.mark.asyncio
async def test_failing_source_sends_its_error_to_subscribers():
    pub = PublisherProcess(n_chunks=10, fail_at=4)
    try:
        address = await guard(pub.start())
        got = []
        with pytest.raises(ax.StreamError, match="failed: RuntimeError: the digitizer caught fire"):
            async for chunk in Subscriber(address, "records"):
                got.append(chunk)
        assert len(got) <= 4  # what was sent before the failure; the rest is not flushed
        await guard(pub.line("ABORTED"))
    finally:
        pub.close()


@pytest.mark.asyncio
async def test_publish_helper_aborts_and_reraises():
    async def chunks():
        yield make_chunk(0)
        raise ValueError("bad source")

    async with Publisher("records") as pub:
        sub = Subscriber(pub.address, "records")
        task = asyncio.create_task(_drain(sub))
        await guard(pub.wait_for_subscribers(1))
        with pytest.raises(ValueError, match="bad source"):
            await guard(publish(chunks(), pub))
    with pytest.raises(ax.StreamError, match="ValueError: bad source"):
        await guard(task)


async def _drain(sub):
    return [c async for c in sub]


@pytest.mark.asyncio
async def test_clean_end_is_distinguishable_from_a_crash():
    async with Publisher("records") as pub:
        sub = Subscriber(pub.address, "records")
        task = asyncio.create_task(_drain(sub))
        await guard(pub.wait_for_subscribers(1))
        await pub.publish(make_chunk(0))
    assert len(await guard(task)) == 1
    assert sub.statistics().ended_cleanly


# ---------------------------------------------------------------------- bad input
def frame(kind, header, payload=b"", magic=P.MAGIC, version=P.PROTOCOL_VERSION, payload_len=None):
    head = json.dumps(header).encode() if isinstance(header, dict) else header
    n = len(payload) if payload_len is None else payload_len
    return P.PREFIX.pack(magic, version, kind, 0, len(head), n) + head + payload


WELCOME = {"run_id": RUN, "data_type": "records", "data_kind": "records",
           "dtype": P.dtype_to_wire(DT), "transport": "tcp", "compressor": None,
           "buffer_bytes": 1 << 20, "policy": "block"}


def chunk_header(n=3, **kw):
    h = {"seq": 0, "run_id": RUN, "start": 0, "end": 10_000, "n": n,
         "dtype": P.dtype_to_wire(DT), "nbytes": n * DT.itemsize, "compressor": None}
    h.update(kw)
    return h


async def fake_publisher(replies: bytes, close: bool = True):
    """A server that reads the HELLO, answers ``replies`` raw, then closes (or stays open)."""
    async def handle(reader, writer):
        await reader.read(4096)
        writer.write(replies)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(10)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def good_payload(n=3):
    d = make_chunk(0, n=n).data
    return d.tobytes()


BAD_INPUTS = {
    "garbage": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3, "expected magic"),
    "version": (frame(P.WELCOME, WELCOME, version=9), "protocol version 9"),
    "not json": (frame(P.WELCOME, b"{not json"), "header is not JSON"),
    "missing field": (frame(P.WELCOME, {"run_id": RUN}), "lacks 'dtype'"),
    "truncated header": (frame(P.WELCOME, WELCOME)[:30], "truncated frame"),
    "truncated payload": (frame(P.WELCOME, WELCOME)
                          + frame(P.CHUNK, chunk_header(), good_payload())[:-40],
                          "truncated frame"),
    "oversized": (frame(P.WELCOME, WELCOME)
                  + frame(P.CHUNK, chunk_header(), b"", payload_len=1 << 40), "oversized frame"),
    "size mismatch": (frame(P.WELCOME, WELCOME)
                      + frame(P.CHUNK, chunk_header(nbytes=5), b"12345"), "do not make"),
    "wrong dtype": (frame(P.WELCOME, WELCOME)
                    + frame(P.CHUNK, chunk_header(dtype="[('time', '<i8'), ('endtime', '<i8')]"),
                            b""), "dtype mismatch"),
    "code as dtype": (frame(P.WELCOME, {**WELCOME, "dtype": "__import__('os').system('x')"}),
                      "unreadable dtype"),
    "rule broken": (frame(P.WELCOME, WELCOME)
                    + frame(P.CHUNK, chunk_header(end=5), good_payload()), "breaks a chunk rule"),
    "bad lz4": (frame(P.WELCOME, WELCOME)
                + frame(P.CHUNK, chunk_header(compressor="lz4"), b"not lz4 at all"),
                "cannot decompress|does not hold"),
    "unexpected kind": (frame(P.WELCOME, WELCOME) + frame(P.HELLO, {}), "unexpected HELLO"),
    "shm name": (frame(P.WELCOME, {**WELCOME, "transport": "sharedmem",
                                   "shm_prefix": "axs_1_0000abcd"})
                 + frame(P.CHUNK, chunk_header(shm={"name": "../../etc/passwd"})),
                 "segment name"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_malformed_frames_are_rejected(case):
    replies, message = BAD_INPUTS[case]
    server, port = await fake_publisher(replies)
    async with server:
        sub = Subscriber(("127.0.0.1", port), "records", dtype=DT,
                         max_frame_bytes=64 * 1024**2)
        with pytest.raises(ax.StreamError, match=message):
            await guard(_drain(sub))


@pytest.mark.asyncio
async def test_frame_limit_is_configurable():
    async with Publisher("records") as pub:
        small = Subscriber(pub.address, "records", max_frame_bytes=2000)
        task = asyncio.create_task(_drain(small))
        await guard(pub.wait_for_subscribers(1))
        await pub.publish(make_chunk(0, n=10))  # ~500 bytes: fits
        await pub.publish(make_chunk(1, n=200))  # ~10 kB: too big for this subscriber
        with pytest.raises(ax.StreamError, match="exceed the limit of 2000 bytes"):
            await guard(task)
    with pytest.raises(ax.StreamError, match="max_frame_bytes"):
        async with Publisher("records", max_frame_bytes=P.MAX_HEADER_BYTES + 100) as pub:
            await pub.publish(make_chunk(0, n=200))


@pytest.mark.asyncio
async def test_garbage_client_does_not_disturb_the_publisher():
    async with Publisher("records") as pub:
        good = Subscriber(pub.address, "records")
        task = asyncio.create_task(_drain(good))
        host, port = P.parse_address(pub.address)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(os.urandom(5000))
        await writer.drain()
        assert await guard(reader.read()) == b""  # the publisher hung up on it
        writer.close()
        await guard(pub.wait_for_subscribers(1))
        for i in range(3):
            await pub.publish(make_chunk(i))
    assert len(await guard(task)) == 3


@pytest.mark.asyncio
async def test_dtype_mismatch_is_refused_at_the_handshake():
    other = np.dtype([("time", "<i8"), ("endtime", "<i8"), ("x", "<f4")])
    async with Publisher("records", dtype=DT, data_kind="records", run_id=RUN) as pub:
        with pytest.raises(ax.StreamError, match="dtype mismatch"):
            await guard(_drain(Subscriber(pub.address, "records", dtype=other)))
        with pytest.raises(ax.StreamError, match="carries 'records', not 'peaks'"):
            await guard(_drain(Subscriber(pub.address, "peaks")))
        assert pub.statistics().refused == 2


@pytest.mark.asyncio
async def test_token_is_required_when_set():
    async with Publisher("records", token="s3cret") as pub:
        for token in (None, "wrong"):
            with pytest.raises(ax.StreamError, match="refused.*bad or missing token"):
                await guard(_drain(Subscriber(pub.address, "records", token=token)))
        good = Subscriber(pub.address, "records", token="s3cret")
        task = asyncio.create_task(_drain(good))
        await guard(pub.wait_for_subscribers(1))
        await pub.publish(make_chunk(0))
    assert len(await guard(task)) == 1


@pytest.mark.asyncio
async def test_binds_loopback_by_default_and_reports_unreachable_publishers():
    async with Publisher("records") as pub:
        assert pub.address.startswith("tcp://127.0.0.1:")
        host, port = P.parse_address(pub.address)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    with pytest.raises(ax.StreamError, match="cannot connect"):
        await guard(_drain(Subscriber(("127.0.0.1", free_port), "records")))


@pytest.mark.asyncio
async def test_sharedmem_segments_are_gone_after_errors_and_cancellation():
    prefix = f"axs_{os.getpid()}_"
    pub = Publisher("records", transport="sharedmem")
    await pub.start()
    sub = Subscriber(pub.address, "records")
    got = []

    async def take():
        async for chunk in sub:
            got.append(chunk)

    task = asyncio.create_task(take())
    await guard(pub.wait_for_subscribers(1))
    for i in range(5):
        await pub.publish(make_chunk(i, n=3000))
    while len(got) < 5:
        await asyncio.sleep(0.01)
    assert segment_names(prefix)  # alive and mapped by the subscriber
    await pub.abort(RuntimeError("stop"))
    await pub.aclose()
    with pytest.raises(ax.StreamError):
        await guard(task)
    assert not segment_names(prefix)
    # the subscriber's arrays stay valid after the names are gone
    assert got[4].data["time"][0] == make_chunk(4, n=3000).data["time"][0]
