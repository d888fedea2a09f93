"""Second streams audit: who owns the bytes, file descriptors, aborts, hostile values."""

from __future__ import annotations

import asyncio
import json
import os
import resource

import numpy as np
import pytest
from streams_testing import DT, RUN, WIDTH, connected_pair, make_data

import asyncstrax as ax
from asyncstrax.streams import Publisher, Subscriber, publish
from asyncstrax.streams import protocol as P
from asyncstrax.streams.sharedmem import SegmentPool, map_segment, segment_names


def guard(coro, seconds: float = 10.0):
    return asyncio.wait_for(coro, seconds)


def chunk_of(i: int, data: np.ndarray) -> ax.Chunk:
    return ax.Chunk(data_type="records", data_kind="records", dtype=DT, run_id=RUN,
                    start=i * WIDTH, end=(i + 1) * WIDTH, data=data)


async def slow_drain(sub: Subscriber, pause: float = 0.05) -> list[bytes]:
    out = []
    async for chunk in sub:
        out.append(chunk.data.tobytes())
        await asyncio.sleep(pause)
    return out


# ---------------------------------------------------------------------- buffer reuse
BIG = 400_000  # 20 MB: more than the loopback socket buffers hold, so later frames wait


async def publish_to_stalled_subscriber(sizes: list[int], copy: bool) -> tuple[list, list]:
    """Publish chunks of ``sizes`` items from one recycled buffer, clearing it after each
    publish(); the subscriber reads only once all were published. (sent, received) bytes."""
    sent = []
    async with Publisher("records", buffer_bytes=256 << 20, dtype=DT, data_kind="records",
                         run_id=RUN) as pub:
        sub = Subscriber(pub.address, "records")
        await guard(sub.connect())
        await guard(pub.wait_for_subscribers(1))
        buf = np.zeros(max(sizes), DT)
        for i, n in enumerate(sizes):
            data = buf[:n]
            data[:] = make_data(i, n)
            sent.append(data.tobytes())
            await guard(pub.publish(chunk_of(i, data), copy=copy))
            data["value"] = 0  # the DAQ reuses its buffer once publish() returned
        task = asyncio.create_task(guard(slow_drain(sub, 0)))
    return sent, await task


@pytest.mark.asyncio
async def test_caller_may_reuse_its_array_once_publish_returned():
    # a big payload (sent from memory), then small ones (joined to their header when sent)
    sent, got = await publish_to_stalled_subscriber([BIG, 20_000, 500], copy=True)
    assert got == sent


@pytest.mark.asyncio
async def test_zero_copy_is_an_explicit_opt_in():
    sent, got = await publish_to_stalled_subscriber([BIG, 20_000], copy=False)
    assert got[1] != sent[1]  # copy=False: the frame is sent from the caller's array
    cleared = np.frombuffer(sent[1], DT).copy()
    cleared["value"] = 0
    assert got[1] == cleared.tobytes()


# ---------------------------------------------------------------------- file descriptors
def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.asyncio
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_shared_memory_chunks_kept_alive_hold_no_file_descriptors():
    n = 300  # with a descriptor per chunk (and two per segment on the publisher): 900 more
    before = open_fds()
    kept = []
    async with Publisher("records", transport="sharedmem", dtype=DT, data_kind="records",
                         run_id=RUN) as pub:
        sub = Subscriber(pub.address, "records")
        task = asyncio.create_task(guard(slow_drain_chunks(sub, kept)))
        await guard(pub.wait_for_subscribers(1))
        for i in range(n):
            await guard(pub.publish(chunk_of(i, make_data(i, 10))))
        assert pub.statistics().shm_segments_live >= n - 1  # all still held by the subscriber
    await task
    assert len(kept) == n and sub.info.transport == "sharedmem"
    assert all(c.data.tobytes() == make_data(i, 10).tobytes() for i, c in enumerate(kept))
    assert open_fds() - before < 20


async def slow_drain_chunks(sub: Subscriber, kept: list) -> None:
    async for chunk in sub:
        kept.append(chunk)


def test_running_out_of_file_descriptors_is_a_stream_error_naming_the_limit():
    pool = SegmentPool()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        seg = pool.acquire(100)
        lowest_free = os.dup(0)
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no new descriptor
        try:
            with pytest.raises(ax.StreamError) as info:
                map_segment(seg.name, 100, seq=7)
            with pytest.raises(ax.StreamError, match="RLIMIT_NOFILE"):
                pool.acquire(3 << 20)  # a new segment
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        text = str(info.value)
        assert seg.name in text and "seq 7" in text and "RLIMIT_NOFILE" in text
        assert len(map_segment(seg.name, 100, seq=8)) >= 100  # fine again
    finally:
        pool.close()
    assert not segment_names(pool.prefix)


# ---------------------------------------------------------------------- abort and cancel
async def drain_until_error(sub: Subscriber, pause: float) -> tuple[int, str]:
    n = 0
    try:
        async for _chunk in sub:
            n += 1
            await asyncio.sleep(pause)
    except ax.StreamError as error:
        return n, str(error)
    return n, "ended cleanly"


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["tcp", "sharedmem"])
async def test_abort_while_a_slow_subscriber_takes_a_big_frame(transport):
    async def source():
        for i in range(3):
            yield chunk_of(i, make_data(i, 100_000))  # 5 MB: the sender is mid-frame
        raise RuntimeError("digitizer board 3 lost sync")

    pub = Publisher("records", transport=transport)
    await pub.start()
    try:
        task = asyncio.create_task(drain_until_error(Subscriber(pub.address, "records"), 0.1))
        await guard(pub.wait_for_subscribers(1))
        with pytest.raises(RuntimeError):
            await guard(publish(source(), pub))
    finally:
        await pub.aclose()
    n, said = await guard(task)
    assert n == 3  # the chunks publish() had accepted, then the error
    assert "failed: RuntimeError: digitizer board 3 lost sync" in said
    assert not segment_names(f"axs_{os.getpid()}_")


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["tcp", "sharedmem"])
async def test_cancelled_publishing_task_tells_a_stalled_subscriber(transport):
    pub = Publisher("records", transport=transport, buffer_bytes=1 << 20)
    await pub.start()

    async def endless():
        i = 0
        while True:
            yield chunk_of(i, make_data(i, 20_000))
            i += 1

    try:
        task = asyncio.create_task(drain_until_error(Subscriber(pub.address, "records"), 0.1))
        await guard(pub.wait_for_subscribers(1))
        publishing = asyncio.create_task(publish(endless(), pub))
        await asyncio.sleep(0.3)  # blocked on the full subscriber by now
        publishing.cancel()
        await guard(asyncio.gather(publishing, return_exceptions=True))
    finally:
        await pub.aclose()
    n, said = await guard(task)
    assert n >= 1 and "failed: the publishing task was cancelled" in said


@pytest.mark.asyncio
async def test_segments_freed_after_abort_timeout_still_report_the_error():
    pub = Publisher("records", transport="sharedmem", abort_timeout=0.2)
    await pub.start()
    try:
        task = asyncio.create_task(drain_until_error(Subscriber(pub.address, "records"), 0.4))
        await guard(pub.wait_for_subscribers(1))
        for i in range(6):
            await guard(pub.publish(chunk_of(i, make_data(i, 100))))
        await guard(pub.abort(RuntimeError("HV trip")))
    finally:
        await pub.aclose()  # the segments the subscriber has not mapped are gone now
    n, said = await guard(task)
    assert n < 6
    assert "failed: RuntimeError: HV trip" in said and "not taken in time" in said


@pytest.mark.asyncio
async def test_subscriber_of_a_publisher_that_failed_before_any_data_gets_the_error():
    pub = Publisher("records")
    await pub.start()
    try:
        task = asyncio.create_task(drain_until_error(Subscriber(pub.address, "records"), 0))
        await guard(pub.wait_for_subscribers(1))
        await guard(pub.abort("no digitizer board answered"))
        late = await guard(drain_until_error(Subscriber(pub.address, "records"), 0))
    finally:
        await pub.aclose()
    assert "failed: no digitizer board answered" in (await guard(task))[1]
    assert "failed: no digitizer board answered" in late[1]


# ---------------------------------------------------------------------- ports
def test_ports_outside_0_to_65535_are_refused():
    for address in ("tcp://127.0.0.1:99999", "127.0.0.1:65536", ("127.0.0.1", 70000),
                    ("127.0.0.1", -1), ("127.0.0.1", "x")):
        with pytest.raises(ax.StreamError, match="port"):
            P.parse_address(address)
        with pytest.raises(ax.StreamError, match="port"):
            Subscriber(address, "records")
    assert P.parse_address("tcp://127.0.0.1:65535") == ("127.0.0.1", 65535)
    assert P.parse_address(("::1", "0")) == ("::1", 0)
    for port in (70000, -1, 65536, 1.5, True, "http"):
        with pytest.raises(ax.InvalidConfiguration, match="0 to 65535"):
            Publisher("records", port=port)
    assert Publisher("records", port="5555").port == 5555


# ---------------------------------------------------------------------- hostile peers
async def fake_publisher(reply: bytes):
    async def handle(reader, writer):
        await reader.read(4096)  # the HELLO
        writer.write(reply)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def welcome(policy: str = "drop") -> bytes:
    return P.encode_frame(P.WELCOME, {
        "run_id": RUN, "data_type": "records", "data_kind": "records",
        "dtype": P.dtype_to_wire(DT), "transport": "tcp", "compressor": None,
        "buffer_bytes": 1 << 20, "policy": policy})


@pytest.mark.asyncio
@pytest.mark.parametrize("counts", ['1e400', '-1', '"7"', 'true', '1.5', '[]'])
async def test_unreadable_gap_counts_are_a_stream_error(counts):
    head = (b'{"seq":0,"run_id":"run0","start":0,"end":10000,"n":0,"dtype":'
            + json.dumps(P.dtype_to_wire(DT)).encode() + b',"nbytes":0,"compressor":null,'
            + b'"gap":{"chunks":' + counts.encode() + b',"items":0,"bytes":0}}')
    gap = P.PREFIX.pack(P.MAGIC, P.PROTOCOL_VERSION, P.CHUNK, 0, len(head), 0) + head
    server = await fake_publisher(welcome() + gap)
    async with server:
        sub = Subscriber(server.sockets[0].getsockname()[:2], "records", policy="drop")
        with pytest.raises(ax.StreamError, match="unreadable gap"):
            await guard(drain_until_error_raising(sub))


async def drain_until_error_raising(sub: Subscriber) -> None:
    async for _chunk in sub:
        pass


@pytest.mark.asyncio
async def test_hello_with_an_unencodable_token_is_refused():
    loop = asyncio.get_running_loop()
    seen: list = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        async with Publisher("records", token="s3cret", dtype=DT, data_kind="records",
                             run_id=RUN) as pub:
            host, port = P.parse_address(pub.address)
            for token in (b'"\\ud800"', b'"\\udfff\\ud800x"'):
                reader, writer = await asyncio.open_connection(host, port)
                head = b'{"token":' + token + b',"data_type":"records","mode":"data"}'
                writer.write(P.PREFIX.pack(P.MAGIC, P.PROTOCOL_VERSION, P.HELLO, 0, len(head),
                                           0) + head)
                reply = await guard(reader.read())
                writer.close()
                assert b"bad or missing token" in reply
            good = asyncio.create_task(slow_drain(Subscriber(pub.address, "records",
                                                             token="s3cret"), 0))
            await guard(pub.wait_for_subscribers(1))
            await guard(pub.publish(chunk_of(0, make_data(0))))
        assert len(await guard(good)) == 1
    finally:
        loop.set_exception_handler(None)
    assert not seen


# ---------------------------------------------------------------------- truncated payloads
@pytest.mark.asyncio
@pytest.mark.parametrize("size", [1_000_000, 100_000])
async def test_truncated_payload_says_how_much_of_it_arrived(size):
    sender, receiver = connected_pair()
    try:
        reader = P.FrameReader(asyncio.get_running_loop(), receiver, peer="p")
        sender.sendall(P.encode_frame(P.CHUNK, {"x": 1}, size))
        head = await guard(reader.read_head())

        def send_most_then_close():
            sender.sendall(b"\0" * (size - 10_000))
            sender.close()

        await asyncio.to_thread(send_most_then_close)
        target = bytearray(size)
        with pytest.raises(ax.StreamError,
                           match=f"after {size - 10_000} of the {size} bytes of a frame's "
                                 f"payload"):
            await guard(reader.read_into(memoryview(target)))
        assert head.payload_len == size
    finally:
        sender.close()
        receiver.close()


@pytest.mark.asyncio
async def test_truncated_compressed_payload_says_how_much_of_it_arrived():
    size = 1_000_000
    sender, receiver = connected_pair()
    try:
        reader = P.FrameReader(asyncio.get_running_loop(), receiver, peer="p")
        sender.sendall(P.encode_frame(P.CHUNK, {"x": 1}, size))
        head = await guard(reader.read_head())
        await asyncio.to_thread(sender.sendall, b"\0" * (size - 10_000))
        sender.close()
        with pytest.raises(ax.StreamError, match=f"after {size - 10_000} of the {size} bytes"):
            await guard(reader.read_payload(head))
    finally:
        sender.close()
        receiver.close()


@pytest.mark.asyncio
async def test_publisher_copy_setting_is_the_default_of_publish():
    async with Publisher("records", copy=False) as pub:
        assert pub.copy is False
    assert Publisher("records").copy is True
