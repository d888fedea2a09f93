"""Defects found by the streams audit, one test each: resource exhaustion, hangs, hostile
input and lineage of lossy data."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tracemalloc

import pytest
from streams_testing import DT, ROOT, RUN, connected_pair, make_chunk

import asyncstrax as ax
from asyncstrax.streams import Publisher, Subscriber, stream_info, subscriber_plugin
from asyncstrax.streams import protocol as P
from asyncstrax.streams.sharedmem import SegmentPool, segment_names


def guard(coro, seconds: float = 4.5):
    return asyncio.wait_for(coro, seconds)


async def drain(sub: Subscriber) -> list[ax.Chunk]:
    return [chunk async for chunk in sub]


def parse(add, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------- /dev/shm full
def test_segment_larger_than_dev_shm_is_a_stream_error_and_leaves_nothing():
    st = os.statvfs("/dev/shm")
    too_big = st.f_blocks * st.f_frsize + (1 << 20)  # more than /dev/shm can ever hold
    pool = SegmentPool()
    try:
        with pytest.raises(ax.StreamError, match=rf"chunk of {too_big} bytes.*bytes free"):
            pool.acquire(too_big)
        assert not segment_names(pool.prefix)
        assert pool.live_segments == 0
    finally:
        pool.close()


SHM_FULL_SCRIPT = r"""
import asyncio
import numpy as np
import asyncstrax as ax
from asyncstrax.streams import Publisher, Subscriber

DT = np.dtype([("time", "<i8"), ("endtime", "<i8"), ("pad", "u1", (1000,))])

async def main():
    async with Publisher("records", transport="sharedmem") as pub:
        sub = Subscriber(pub.address, "records")
        task = asyncio.create_task(sub.connect())
        await pub.wait_for_subscribers(1)
        n = 12_000  # a 12 MB chunk in an 8 MB /dev/shm
        d = np.zeros(n, DT); d["time"] = np.arange(n); d["endtime"] = d["time"] + 1
        try:
            await pub.publish(ax.Chunk(data_type="records", data_kind="records", dtype=DT,
                                       run_id="r", start=0, end=n + 1, data=d))
        except ax.StreamError as e:
            print("STREAMERROR", e, flush=True)
        await task
        await sub.aclose()
    import os
    print("LEFT", os.listdir("/dev/shm"), flush=True)

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private small /dev/shm")
def test_sharedmem_publisher_with_dev_shm_full_raises_instead_of_sigbus():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = 'mount -t tmpfs -o size=8m tmpfs /dev/shm && exec "$0" -c "$1"'
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"unshare -m not permitted here: {probe.stderr.decode().strip()}")
    out = subprocess.run(["unshare", "-m", "sh", "-c", cmd, sys.executable, SHM_FULL_SCRIPT],
                         capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "STREAMERROR" in out.stdout and "bytes free" in out.stdout
    assert "LEFT []" in out.stdout


# ---------------------------------------------------------------------- lossy data's lineage
def test_drop_policy_subscriber_has_a_lineage_of_its_own():
    def key(policy: str) -> ax.DataKey:
        plugin = subscriber_plugin("records", "tcp://127.0.0.1:1", DT, policy=policy)
        return ax.Context(register=[plugin]).key_for(RUN, "records")

    lossless, lossy = key("block"), key("drop")
    assert lossless.lineage_hash != lossy.lineage_hash
    assert "drop" in json.dumps(lossy.lineage) and "drop" not in json.dumps(lossless.lineage)


@pytest.mark.slow
def test_live_with_drop_policy_saves_nothing_unless_asked(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    digitizer = subprocess.Popen(
        [sys.executable, "-m", "asyncstrax.cli", "digitizer", "--port", "0", "--event-rate",
         "20", "--seconds", "0.5", "--chunk-mb", "0.4", "--speed", "10"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "serving" not in line:
            line = digitizer.stdout.readline()
            assert line or digitizer.poll() is None, digitizer.stderr.read()
        address = line.split("serving ")[1].split()[0]
        live = subprocess.run(
            [sys.executable, "-m", "asyncstrax.cli", "live", "--address", address, "--storage",
             str(tmp_path), "--policy", "drop", "--max-workers", "1"],
            env=env, capture_output=True, text=True, timeout=30)
    finally:
        digitizer.kill()
        digitizer.communicate()
    assert live.returncode == 0, live.stderr
    assert "nothing is saved" in live.stderr and "--save-dropping" in live.stderr
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- stalled subscribers
def frozen_subscriber(address: str, policy: str, data_type: str = "records") -> socket.socket:
    """A subscriber that says HELLO and then never reads again (a SIGSTOPped process)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(P.parse_address(address))
    sock.sendall(P.encode_frame(P.HELLO, dict(data_type=data_type, policy=policy,
                                              buffer_bytes=1 << 20, mode="data")))
    return sock


@pytest.mark.asyncio
async def test_end_disconnects_a_stalled_drop_subscriber_after_drop_end_timeout(caplog):
    async with Publisher("records", dtype=DT, data_kind="records", run_id=RUN,
                         drop_end_timeout=0.2) as pub:
        good = Subscriber(pub.address, "records")
        received = asyncio.create_task(drain(good))
        frozen = frozen_subscriber(pub.address, "drop")
        try:
            await guard(pub.wait_for_subscribers(2))
            for i in range(20):  # ~1 MB chunks: the frozen one's sender stalls mid-frame
                await guard(pub.publish(make_chunk(i, n=20_000)))
            await guard(pub.end())
            stats = {s.policy: s for s in pub.statistics().subscriptions}
            assert not stats["drop"].connected and stats["drop"].dropped_chunks > 0
            assert len(await guard(received)) == 20
            assert good.statistics().ended_cleanly
        finally:
            frozen.close()
    assert "Bad file descriptor" not in caplog.text


@pytest.mark.asyncio
async def test_digitizer_stop_ends_the_run_despite_a_stalled_lossless_subscriber(monkeypatch):
    from asyncstrax.streams import live

    monkeypatch.setattr(live, "STOP_GRACE_SECONDS", 0.2)
    args = parse(live.add_digitizer_arguments,
                 ["--port", "0", "--event-rate", "20", "--seconds", "0", "--chunk-mb", "0.4",
                  "--speed", "50", "--buffer-mb", "1", "--run-id", "r1"])
    stop = asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    digitizer = asyncio.create_task(live.serve_digitizer(args, stop, ready=ready.set_result))
    pub = await guard(ready)
    frozen = frozen_subscriber(pub.address, "block", data_type="raw_records")
    try:
        while not pub.statistics().published_chunks:  # the run has started
            await asyncio.sleep(0.01)
        stop.set()  # the first Ctrl-C
        assert await guard(digitizer) == 0
        assert not pub.statistics().subscriptions[0].connected
    finally:
        frozen.close()
        if not digitizer.done():
            digitizer.cancel()


# ---------------------------------------------------------------------- handshakes that hang
@pytest.mark.asyncio
async def test_stream_info_is_answered_before_the_first_chunk():
    async with Publisher("records") as pub:  # dtype and run come with the first chunk

        async def source() -> None:
            await pub.wait_for_subscribers(1)
            for i in range(3):
                await pub.publish(make_chunk(i))
            await pub.end()

        task = asyncio.create_task(source())
        info = await guard(stream_info(pub.address))
        assert (info.dtype, info.run_id, info.data_type) == (None, None, "records")
        # a connected data subscriber can then be handed to the source plugin
        sub = Subscriber(pub.address, "records")
        assert (await guard(sub.connect())).dtype == DT
        plugin = subscriber_plugin("records", pub.address, DT, subscriber=sub)
        ctx = ax.Context(register=[plugin])
        chunks = [c async for c in ctx.aiter(RUN, "records")]
        assert [c.start for c in chunks] == [0, 10_000, 20_000]
        await guard(task)


@pytest.mark.asyncio
async def test_stream_info_reports_the_transport_a_subscriber_would_get():
    async with Publisher("records", dtype=DT, data_kind="records", run_id=RUN,
                         transport="sharedmem") as pub:
        assert (await guard(stream_info(pub.address))).transport == "sharedmem"
        assert (await guard(stream_info(pub.address, sharedmem=False))).transport == "tcp"


async def silent_server() -> tuple[socket.socket, asyncio.Future]:
    """A peer that accepts and reads the HELLO but never answers; the future: its HELLO."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    loop = asyncio.get_running_loop()

    async def accept() -> tuple[socket.socket, bytes]:
        conn, _ = await loop.sock_accept(server)
        return conn, await loop.sock_recv(conn, 4096)

    return server, asyncio.ensure_future(accept())


@pytest.mark.asyncio
async def test_stream_info_from_a_silent_peer_times_out():
    server, hello = await silent_server()
    try:
        with pytest.raises(ax.StreamError, match="no answer within 0.2 s"):
            await guard(stream_info(server.getsockname(), timeout=0.2))
        (await hello)[0].close()
    finally:
        server.close()


@pytest.mark.asyncio
async def test_live_stops_on_the_first_ctrl_c_while_a_peer_is_silent():
    from asyncstrax.streams import live

    server, hello = await silent_server()
    try:
        host, port = server.getsockname()
        args = parse(live.add_live_arguments, ["--address", f"tcp://{host}:{port}",
                                               "--no-storage"])
        stop = asyncio.Event()
        task = asyncio.create_task(live.process_live(args, stop, {}))
        conn, data = await guard(hello)
        assert data.startswith(P.MAGIC)
        stop.set()  # the first Ctrl-C
        assert await guard(task, 2) == 0
        conn.close()
    finally:
        server.close()


# ---------------------------------------------------------------------- memory before bytes
async def received(reader: P.FrameReader, nbytes: int) -> None:
    while reader.bytes_received < nbytes:
        await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_publisher_closes_a_connection_that_never_says_hello():
    async with Publisher("records", dtype=DT, data_kind="records", run_id=RUN,
                         handshake_timeout=0.2) as pub:
        sock = socket.create_connection(P.parse_address(pub.address))
        sock.setblocking(False)
        try:
            assert await guard(asyncio.get_running_loop().sock_recv(sock, 1)) == b""
            assert not pub._handshakes
        finally:
            sock.close()


@pytest.mark.asyncio
async def test_a_declared_header_size_is_not_allocated_before_its_bytes_arrive():
    sender, receiver = connected_pair()
    try:
        reader = P.FrameReader(asyncio.get_running_loop(), receiver, staging_bytes=4096)
        sender.sendall(P.PREFIX.pack(P.MAGIC, P.PROTOCOL_VERSION, P.HELLO, 0,
                                     P.MAX_HEADER_BYTES, 0) + b"{")
        task = asyncio.create_task(reader.read_head())
        await guard(received(reader, P.PREFIX.size + 1))
        assert len(reader._buf) <= 8192  # not the declared MiB
        task.cancel()
    finally:
        sender.close()
        receiver.close()


@pytest.mark.asyncio
async def test_a_declared_payload_is_not_allocated_before_its_bytes_arrive():
    sender, receiver = connected_pair()
    tracemalloc.start()
    try:
        reader = P.FrameReader(asyncio.get_running_loop(), receiver)
        sender.sendall(bytes(100_000))
        base = tracemalloc.get_traced_memory()[0]
        task = asyncio.create_task(reader.read_payload(P.FrameHead(P.CHUNK, {}, 50_000_000)))
        await guard(received(reader, 100_000))
        assert tracemalloc.get_traced_memory()[0] - base < 5_000_000
        rest = bytes(range(256)) * (50_000_000 // 256) + bytes(50_000_000 % 256)
        await guard(asyncio.to_thread(sender.sendall, rest[100_000:]))
        out = await guard(task)
        assert len(out) == 50_000_000 and out[100_000:] == rest[100_000:]
    finally:
        tracemalloc.stop()
        sender.close()
        receiver.close()


async def fake_publisher(frames: bytes) -> tuple[socket.socket, asyncio.Task]:
    """A peer that answers any HELLO with ``frames`` and then keeps the connection open."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    loop = asyncio.get_running_loop()

    async def serve() -> socket.socket:
        conn, _ = await loop.sock_accept(server)
        await loop.sock_recv(conn, 4096)
        await loop.sock_sendall(conn, frames)
        return conn

    return server, asyncio.create_task(serve())


WELCOME = dict(run_id=RUN, data_type="records", data_kind="records", dtype=P.dtype_to_wire(DT),
               transport="tcp", compressor="lz4", buffer_bytes=1 << 20, policy="block")


@pytest.mark.asyncio
@pytest.mark.parametrize("kind, header, match", [
    (P.END, {"chunks": 0, "end": 0}, "END frame carries a payload"),
    (P.ERROR, {"message": "x"}, "ERROR frame carries a payload"),
    (P.CHUNK, {"seq": 0, "run_id": RUN, "start": 0, "end": 10, "n": 1,
               "dtype": P.dtype_to_wire(DT), "nbytes": DT.itemsize, "compressor": "lz4"},
     "compressed payload of 100000000 bytes for 50 bytes"),
])
async def test_frames_declaring_a_payload_they_cannot_have_are_refused(kind, header, match):
    frames = P.encode_frame(P.WELCOME, WELCOME) + P.encode_frame(kind, header, 100_000_000)
    server, serving = await fake_publisher(frames)
    try:
        with pytest.raises(ax.StreamError, match=match):
            await guard(drain(Subscriber(server.getsockname(), "records")))
        (await serving).close()
    finally:
        server.close()


# ---------------------------------------------------------------------- hostile headers
@pytest.mark.asyncio
async def test_a_deeply_nested_json_header_is_a_stream_error():
    sender, receiver = connected_pair()
    try:
        reader = P.FrameReader(asyncio.get_running_loop(), receiver)
        head = b"[" * 200_000 + b"]" * 200_000
        sender.sendall(P.PREFIX.pack(P.MAGIC, P.PROTOCOL_VERSION, P.HELLO, 0, len(head), 0))
        thread = asyncio.create_task(asyncio.to_thread(sender.sendall, head))
        with pytest.raises(ax.StreamError, match="nested too deeply"):
            await guard(reader.read_head())
        await guard(thread)
    finally:
        sender.close()
        receiver.close()


# ---------------------------------------------------------------------- refused subscribers
def test_a_subscriber_the_publisher_refuses_is_never_counted():
    import numpy as np

    other = np.dtype([("time", "<i8"), ("endtime", "<i8"), ("x", "<f4")])

    async def main():
        async with Publisher("records", dtype=DT, data_kind="records", run_id=RUN) as pub:
            for wrong in (Subscriber(pub.address, "records", dtype=other),
                          Subscriber(pub.address, "records", run_id="another_run")):
                with pytest.raises(ax.StreamError, match="refused"):
                    await guard(drain(wrong))
                assert pub.n_subscribers == 0  # wait_for_subscribers would not have returned
            right = asyncio.create_task(drain(Subscriber(pub.address, "records", dtype=DT,
                                                         run_id=RUN)))
            await guard(pub.wait_for_subscribers(1))
            await pub.publish(make_chunk(0, 1000))
            await pub.end()
            assert len(await guard(right)) == 1
            assert pub.statistics().refused == 2

    asyncio.run(main())


def test_hostile_header_values_are_stream_errors():
    with pytest.raises(ax.StreamError, match="holds Python objects"):
        P.dtype_from_wire("[('time', '<i8'), ('endtime', '<i8'), ('o', '|O')]")
    for value in (2**70, -(2**70)):
        with pytest.raises(ax.StreamError, match="outside the int64 range"):
            P.field({"end": value}, "end", int, "peer")
    with pytest.raises(ax.StreamError, match="wrong type"):
        P.field({"chunks": "x"}, "chunks", int, "peer")
    assert P.field({"end": 2**63 - 1}, "end", int, "peer") == 2**63 - 1


def test_padded_dtypes_cross_the_wire_exactly():
    import numpy as np

    aligned = np.dtype([("time", "<i8"), ("endtime", "<i8"), ("channel", "<i2"),
                        ("value", "<f8", (4,))], align=True)
    spaced = np.dtype({"names": ["time", "endtime", "x"], "formats": ["<i8", "<i8", "<f4"],
                       "offsets": [0, 8, 24], "itemsize": 32})
    for dtype in (aligned, spaced):
        assert P.dtype_from_wire(P.dtype_to_wire(dtype)) == dtype

    async def main():
        data = np.zeros(10, aligned)
        data["time"] = np.arange(10) * 10
        data["endtime"] = data["time"] + 5
        data["value"] = np.arange(40).reshape(10, 4)
        chunk = ax.Chunk(data_type="records", data_kind="records", dtype=aligned, run_id=RUN,
                         start=0, end=100, data=data)
        async with Publisher("records", dtype=aligned, data_kind="records", run_id=RUN) as pub:
            got = asyncio.create_task(drain(Subscriber(pub.address, "records", dtype=aligned)))
            await guard(pub.wait_for_subscribers(1))
            await pub.publish(chunk)
            await pub.end()
            (received,) = await guard(got)
        assert received.dtype == aligned
        np.testing.assert_array_equal(received.data, data)

    asyncio.run(main())


@pytest.mark.asyncio
async def test_both_ends_of_a_stream_notice_a_vanished_peer_host():
    # a pulled cable sends nothing: only TCP keepalive makes a waiting subscriber (or a
    # publisher waiting on a subscriber) fail instead of waiting forever
    async with Publisher("records", dtype=DT, data_kind="records", run_id=RUN) as pub:
        sub = Subscriber(pub.address, "records")
        await guard(sub.connect())
        await guard(pub.wait_for_subscribers(1))
        try:
            sockets = [sub._sock, *(s.sock for s in pub._subs)]
            assert len(sockets) == 2
            for sock in sockets:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                if hasattr(socket, "TCP_KEEPIDLE"):
                    idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
                    probes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
                    interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
                    assert idle + probes * interval <= 60  # seconds, not the system's hours
        finally:
            await sub.aclose()
