"""Stream throughput: the TCP stream vs a bare loopback socket, the shared-memory stream vs a
plain memcpy, on the same chunks, measured in one run.

Data: raw_records-like chunks (time, length, dt, channel, ..., 110-sample int16 waveform), 4
warm-up chunks then 16 timed chunks of ~8 MB (``ASYNCSTRAX_BENCH_STREAM_MB`` sets the timed
total). MB/s counts chunk bytes. Steady state is measured: the warm-up chunks go through first
(socket buffers grow, the publisher's segment pool fills: fresh shared memory is ~10x slower to
touch than reused memory), and the clock starts when the receiver has them all.

- bare socket: a TCP connection on 127.0.0.1, a child process ``sendall``-ing each chunk's
  bytes (length-prefixed), this process ``recv_into`` a fresh array per chunk;
- TCP stream: a ``Publisher`` in a child process, a ``Subscriber`` here, end to end (frames,
  Chunk rebuilt and checked, END frame);
- memcpy: ``chunk.data.copy()`` of every chunk, one after another;
- shared-memory stream: as the TCP stream with ``transport="sharedmem"`` (one copy into a
  reused segment, the subscriber maps it).

Each figure is the best of a few repeats (and, beside it, the ratio of the medians), on uvloop
(what the CLI uses). Goals: TCP stream
>= 0.8x the bare socket, shared-memory stream >= 0.5x memcpy. Run with::

    PYTHONPATH=. .venv/bin/python -m pytest benchmarks/test_stream_speed.py -s --benchmark-enable

With ``--benchmark-disable`` (the default in pyproject) it only runs a small smoke round.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import statistics
import struct
import time
from typing import Any

import numpy as np

from asyncstrax.chunk import Chunk
from asyncstrax.streams import Publisher, Subscriber

try:
    import uvloop

    new_loop = uvloop.new_event_loop
except ImportError:  # pragma: no cover
    new_loop = asyncio.new_event_loop

RAW_RECORDS = np.dtype([
    ("time", "<i8"), ("length", "<i4"), ("dt", "<i2"), ("channel", "<i2"),
    ("pulse_length", "<i4"), ("record_i", "<i2"), ("baseline", "<i2"), ("data", "<i2", (110,)),
])
TOTAL_MB = float(os.environ.get("ASYNCSTRAX_BENCH_STREAM_MB", 128))
N_CHUNKS = 16
WARM_CHUNKS = 4
REPEATS = 7


def make_chunks(total_mb: float, n_chunks: int) -> list[Chunk]:
    rng = np.random.default_rng(7)
    per_chunk = max(1, int(total_mb * 1e6 / n_chunks / RAW_RECORDS.itemsize))
    out, t = [], 0
    for _ in range(n_chunks):
        r = np.zeros(per_chunk, RAW_RECORDS)
        r["dt"] = 10
        r["length"] = 110
        r["time"] = t + np.sort(rng.integers(0, per_chunk * 2000, per_chunk))
        r["data"] = rng.integers(15900, 16100, (per_chunk, 110), dtype=np.int16)
        end = int(r["time"][-1] + 1100)
        out.append(Chunk(data_type="raw_records", data_kind="raw_records", dtype=RAW_RECORDS,
                         run_id="bench", start=t, end=end, data=r))
        t = end
    return out


# ---------------------------------------------------------------------- baselines
# The sending side always runs in a forked child process (streams are for moving data between
# processes; two event loops in one process would mostly measure their fight for the GIL), the
# receiving side in this process. Every measurement moves ``warm`` chunks first (socket buffers
# grow, the segment pool fills), waits until the receiver has them all, and then times the
# rest, from that moment until the receiver has the last byte.
_fork = multiprocessing.get_context("fork")


def _bare_sender(port: int, chunks: list[Chunk], warm: int, warmed: Any) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i, c in enumerate(chunks):
        if i == warm:
            warmed.wait()
        v = memoryview(c.data.view(np.uint8))
        sock.sendall(struct.pack("!Q", v.nbytes))
        sock.sendall(v)
    sock.recv(1)  # wait for the receiver to close
    sock.close()


def bare_socket_seconds(chunks: list[Chunk], warm: int) -> float:
    """Move the same bytes through a bare loopback TCP connection (child -> this process)."""
    server = socket.create_server(("127.0.0.1", 0))
    warmed = _fork.Event()
    child = _fork.Process(target=_bare_sender,
                          args=(server.getsockname()[1], chunks, warm, warmed))
    child.start()
    recv_sock, _ = server.accept()
    server.close()
    recv_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = bytearray(8)
    t0 = time.perf_counter()
    try:
        for i in range(len(chunks)):
            if i == warm:
                t0 = time.perf_counter()
                warmed.set()
            recv_sock.recv_into(head, 8, socket.MSG_WAITALL)
            (n,) = struct.unpack("!Q", head)
            out = np.empty(n, np.uint8)
            view = memoryview(out)
            pos = 0
            while pos < n:
                got = recv_sock.recv_into(view[pos:])
                if not got:
                    raise ConnectionError("bare sender went away")
                pos += got
        seconds = time.perf_counter() - t0
    finally:
        recv_sock.close()
        warmed.set()
        child.join()
    return seconds


def memcpy_seconds(chunks: list[Chunk], warm: int) -> float:
    t0 = time.perf_counter()
    for c in chunks[warm:]:
        c.data.copy()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------- streams
def _publisher(chunks: list[Chunk], warm: int, transport: str, conn: Any, warmed: Any) -> None:
    async def run() -> None:
        pub = Publisher("raw_records", transport=transport, dtype=RAW_RECORDS,
                        data_kind="raw_records", run_id="bench", buffer_bytes=32 * 1024**2)
        async with pub:
            conn.send(pub.address)
            await pub.wait_for_subscribers(1)
            for i, c in enumerate(chunks):
                if i == warm:
                    await asyncio.get_running_loop().run_in_executor(None, warmed.wait)
                # zero copy, as a pipeline publishes its chunks (PublishingConsumer, `asyncstrax
                # live`): publish()'s default first copies a raw TCP payload the caller may reuse
                await pub.publish(c, copy=False)
        conn.send(pub.statistics().max_buffered_bytes)

    loop = new_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


def stream_seconds(chunks: list[Chunk], warm: int, transport: str) -> float:
    """Publish ``chunks`` from a child process; subscribe here; seconds end to end."""
    warmed = _fork.Event()
    here, there = _fork.Pipe()
    child = _fork.Process(target=_publisher, args=(chunks, warm, transport, there, warmed))
    child.start()

    async def receive() -> tuple[float, int]:
        async with Subscriber(here.recv(), "raw_records", dtype=RAW_RECORDS) as sub:
            t0 = time.perf_counter()
            n = i = 0
            async for chunk in sub:
                i += 1
                if i == warm:
                    t0 = time.perf_counter()
                    warmed.set()
                elif i > warm:
                    n += chunk.nbytes
                del chunk
            return time.perf_counter() - t0, n

    loop = new_loop()
    try:
        seconds, nbytes = loop.run_until_complete(receive())
    finally:
        loop.close()
        warmed.set()
        child.join()
    assert child.exitcode == 0
    assert nbytes == sum(c.nbytes for c in chunks[warm:])
    return seconds


def figures(chunks: list[Chunk], warm: int, repeats: int) -> dict:
    """Best of ``repeats`` of each, the four measurements interleaved (the machine drifts)."""
    mb = sum(c.nbytes for c in chunks[warm:]) / 1e6
    times: dict[str, list[float]] = {"bare": [], "tcp": [], "copy": [], "shm": []}
    for _ in range(repeats):
        times["bare"].append(bare_socket_seconds(chunks, warm))
        times["tcp"].append(stream_seconds(chunks, warm, "tcp"))
        times["copy"].append(memcpy_seconds(chunks, warm))
        times["shm"].append(stream_seconds(chunks, warm, "sharedmem"))
    t_bare, t_tcp, t_copy, t_shm = (min(times[k]) for k in ("bare", "tcp", "copy", "shm"))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "data_mb": round(mb, 1),
        "bare_socket_mb_s": round(mb / t_bare, 1),
        "tcp_stream_mb_s": round(mb / t_tcp, 1),
        "tcp_vs_bare_socket": round(t_bare / t_tcp, 2),
        "memcpy_mb_s": round(mb / t_copy, 1),
        "sharedmem_stream_mb_s": round(mb / t_shm, 1),
        "sharedmem_vs_memcpy": round(t_copy / t_shm, 2),
        # the bare socket's best repeat is often an outlier; the medians say what is typical
        "tcp_vs_bare_socket_median": round(med["bare"] / med["tcp"], 2),
        "sharedmem_vs_memcpy_median": round(med["copy"] / med["shm"], 2),
    }


def test_stream_speed(benchmark):
    enabled = not benchmark.disabled
    if enabled:
        chunks = make_chunks(TOTAL_MB * (N_CHUNKS + WARM_CHUNKS) / N_CHUNKS,
                             N_CHUNKS + WARM_CHUNKS)
        warm, repeats = WARM_CHUNKS, REPEATS
    else:
        chunks, warm, repeats = make_chunks(4, 6), 2, 1
    result = figures(chunks, warm, repeats)
    benchmark.pedantic(lambda: stream_seconds(chunks, warm, "tcp"), rounds=repeats,
                       iterations=1)
    benchmark.extra_info.update(result)
    print()
    for name, value in result.items():
        print(f"{name:>24}: {value}")
    # The goals are reported, not asserted: on a shared 2-core VM the same figure moves by 2x
    # from one run to the next (see the module docstring).
    result["tcp_goal_met"] = result["tcp_vs_bare_socket"] >= 0.8
    result["sharedmem_goal_met"] = result["sharedmem_vs_memcpy"] >= 0.5
    benchmark.extra_info.update(result)
    print(f"{'goals (tcp >= 0.8, sharedmem >= 0.5)':>24}: "
          f"{result['tcp_goal_met']}, {result['sharedmem_goal_met']}")


if __name__ == "__main__":  # pragma: no cover
    n = N_CHUNKS + WARM_CHUNKS
    print(figures(make_chunks(TOTAL_MB * n / N_CHUNKS, n), WARM_CHUNKS, REPEATS))
