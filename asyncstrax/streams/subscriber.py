"""The subscribing end of a stream, and the source plugin built on it.

>>> async with Subscriber("tcp://127.0.0.1:5555", "records", dtype=records_dtype) as sub:
...     async for chunk in sub:          # the exact Chunks the publisher sent
...         ...

or, as a source plugin of a Context (so ``records`` computed in another process can be the
``depends_on`` of plugins here)::

    ctx.register(subscriber_plugin("records", "tcp://127.0.0.1:5555", records_dtype))

Received chunks have the publisher's ``start``, ``end`` and bytes. Over TCP the payload is
received straight into the chunk's array; over shared memory the chunk's array is the mapped
segment itself (``np.frombuffer``, copy-on-write). Only the next frame is read when the consumer
asks for the next chunk, so a slow consumer slows the publisher (TCP flow control, or ACK frames
for shared memory) instead of piling data up here.

The iteration ends cleanly only on the publisher's END frame. A publisher that fails sends ERROR,
one that dies just closes the connection: both raise ``StreamError``, as do malformed,
truncated or oversized frames, a dtype other than the expected one, a refused handshake (bad
token, wrong data type) and chunks that break the chunk rules.
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..chunk import Chunk
from ..errors import AsyncstraxError, ChunkError, InvalidConfiguration, StreamError
from ..plugins.base import Plugin, SaveWhen
from . import protocol as P
from . import sharedmem as shm

__all__ = ["Gap", "StreamInfo", "Subscriber", "SubscriberStatistics", "stream_info",
           "subscriber_plugin"]

#: decompression of payloads larger than this runs on a worker thread
_OFFLOAD_BYTES = 1 << 20
#: seconds to connect and say HELLO (and, for ``stream_info``, to get the answer)
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: a missing shared-memory segment: seconds to look for the ERROR frame that may explain it
_WHY_GONE_SECONDS = 1.0
#: ``Subscriber.gaps`` keeps this many of the most recent gaps
MAX_GAPS_KEPT = 10_000
#: checking the chunk rules of larger chunks runs on a worker thread. Below this the check
#: (~0.05 ms per MB) costs less than the thread hop and its wake-up, and a receiver moving
#: data at full speed is short of CPU, not of overlap (TCP stream vs bare socket, A/B medians:
#: 0.72-0.77x with every chunk over 1 MB checked on a thread, 0.80-0.86x checked inline).
_CHECK_OFFLOAD_BYTES = 64 << 20


@dataclass(frozen=True)
class StreamInfo:
    """What the publisher announced in its WELCOME frame.

    From ``stream_info``, ``run_id``, ``data_kind`` and ``dtype`` are None while the publisher
    does not know them yet (it learns them from its first chunk); a data subscriber's WELCOME
    waits until they are known."""

    address: str
    run_id: str | None
    data_type: str
    data_kind: str | None
    dtype: np.dtype | None
    transport: str
    compressor: str | None
    policy: str
    buffer_bytes: int


@dataclass(frozen=True)
class Gap:
    """Time range a ``drop`` subscriber missed, and what it held."""

    start: int
    end: int
    chunks: int
    items: int
    bytes: int


@dataclass(frozen=True)
class SubscriberStatistics:
    """What a Subscriber received and missed so far (``Subscriber.statistics()``).

    ``chunks``, ``items``, ``bytes``: received data (gap chunks not counted); ``gaps`` and
    ``dropped_*``: what a ``drop`` subscriber missed, over all gaps; ``ended_cleanly``: the
    publisher's END arrived.
    """

    chunks: int
    items: int
    bytes: int
    gaps: int
    dropped_chunks: int
    dropped_items: int
    dropped_bytes: int
    ended_cleanly: bool
    #: ended by ``stop()`` rather than by the publisher's END
    stopped: bool


class Subscriber:
    """An input stream: connects to a Publisher and yields its chunks.

    ``data_type`` and ``dtype`` (if given) must match the publisher's, else the handshake is
    refused; ``run_id`` (if given) must be the run being streamed. ``policy``: ``"block"``
    (lossless: the publisher waits for this subscriber) or ``"drop"`` (monitoring: chunks that
    do not fit in ``buffer_bytes`` are skipped and reported as gaps). ``max_frame_bytes``:
    larger frames are refused before any memory is allocated for them. ``sharedmem=False``
    asks for the bytes over TCP even from a shared-memory publisher. ``handshake_timeout``:
    seconds to connect and send HELLO (a silent peer is a StreamError, not a hang); the
    WELCOME itself may wait for the publisher's first chunk, so only cancelling bounds it.
    """

    def __init__(
        self,
        address: Any,
        data_type: str | None = None,
        *,
        dtype: Any = None,
        data_kind: str | None = None,
        run_id: str | None = None,
        token: str | None = None,
        policy: str = "block",
        buffer_bytes: int | None = None,
        max_frame_bytes: int = P.DEFAULT_MAX_FRAME_BYTES,
        sharedmem: bool = True,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        if policy not in ("block", "drop"):
            raise InvalidConfiguration(f"policy must be 'block' or 'drop', not {policy!r}")
        self.host, self.port = P.parse_address(address)
        self.address = P.format_address(self.host, self.port)
        self.data_type = data_type
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.data_kind = data_kind
        self.run_id = run_id
        self.token = token
        self.policy = policy
        self.buffer_bytes = buffer_bytes
        self.max_frame_bytes = int(max_frame_bytes)
        self.sharedmem = sharedmem
        self.handshake_timeout = handshake_timeout
        self.info: StreamInfo | None = None
        #: the most recent gaps (a monitoring view may run for days; ``statistics()`` keeps
        #: the totals of all of them)
        self.gaps: deque[Gap] = deque(maxlen=MAX_GAPS_KEPT)
        self._dropped = [0, 0, 0, 0]  # gaps, chunks, items, bytes
        self._sock: socket.socket | None = None
        self._reader: P.FrameReader | None = None
        self._outbox: asyncio.Queue | None = None
        self._writer: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._ended = False
        self._iterating = False
        self._frames = 0
        self._chunks = 0
        self._items = 0
        self._bytes = 0
        self._last_end: int | None = None
        self._shm_prefix: str | None = None
        self._stopping = False
        self._first_start: int | None = None

    def __repr__(self) -> str:
        return f"Subscriber({self.address!r}, {self.data_type!r}, policy={self.policy!r})"

    # ------------------------------------------------------------------ connection
    async def _open(self) -> tuple[socket.socket, P.FrameReader]:
        try:
            return await asyncio.wait_for(self._connect(), self.handshake_timeout)
        except asyncio.TimeoutError:
            raise StreamError(f"cannot connect to stream {self.address}: no connection within "
                              f"{self.handshake_timeout:g} s (handshake_timeout)") from None

    async def _connect(self) -> tuple[socket.socket, P.FrameReader]:
        loop = self._loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise StreamError(f"cannot resolve stream address {self.address}: {error}") from None
        last: OSError | None = None
        for family, type_, proto, _, sockaddr in infos:
            sock = socket.socket(family, type_, proto)
            P.configure_socket(sock)
            try:
                await loop.sock_connect(sock, sockaddr)
            except OSError as error:
                sock.close()
                last = error
                continue
            except BaseException:
                sock.close()
                raise
            return sock, P.FrameReader(loop, sock, self.max_frame_bytes, peer=self.address)
        raise StreamError(f"cannot connect to stream {self.address}: {last}")

    async def _hello(self, sock: socket.socket, reader: P.FrameReader, mode: str) -> StreamInfo:
        loop = asyncio.get_running_loop()
        hello = {
            "token": self.token, "data_type": self.data_type, "policy": self.policy,
            "buffer_bytes": self.buffer_bytes, "mode": mode, "sharedmem": self.sharedmem,
            "dtype": P.dtype_to_wire(self.dtype) if self.dtype is not None else None,
            "run_id": self.run_id,  # a publisher that knows its run refuses another at once
        }
        try:
            await asyncio.wait_for(P.send_frame(loop, sock, P.HELLO, hello),
                                   self.handshake_timeout)
            if mode == "info":
                # the publisher answers at once: silence is a broken or foreign peer
                head = await asyncio.wait_for(
                    reader.read_control((P.WELCOME, P.REFUSED, P.ERROR)), self.handshake_timeout)
            else:
                head = await reader.read_control((P.WELCOME, P.REFUSED, P.ERROR))
        except asyncio.TimeoutError:  # before OSError: TimeoutError is one
            raise StreamError(f"handshake with {self.address} failed: no answer within "
                              f"{self.handshake_timeout:g} s (handshake_timeout)") from None
        except OSError as error:
            raise StreamError(f"handshake with {self.address} failed: {error}") from None
        h = head.header
        if head.kind == P.ERROR:
            raise StreamError(f"the publisher at {self.address} failed: "
                              f"{h.get('message', '(no message)')}")
        if head.kind == P.REFUSED:
            raise StreamError(f"stream {self.address} refused this subscriber: "
                              f"{h.get('reason', '(no reason given)')}")
        peer = self.address

        def learned(name: str) -> Any:
            """A field the publisher learns from its first chunk: null in an early info."""
            if mode == "info" and h.get(name) is None:
                return None
            return P.field(h, name, str, peer)

        wire_dtype = learned("dtype")
        dtype = P.dtype_from_wire(wire_dtype) if wire_dtype is not None else None
        data_type = P.field(h, "data_type", str, peer)
        info = StreamInfo(
            address=self.address,
            run_id=learned("run_id"),
            data_type=data_type,
            data_kind=learned("data_kind"),
            dtype=dtype,
            transport=P.field(h, "transport", str, peer),
            compressor=h.get("compressor"),
            policy=P.field(h, "policy", str, peer),
            buffer_bytes=P.field(h, "buffer_bytes", int, peer),
        )
        if self.data_type is not None and data_type != self.data_type:
            raise StreamError(f"stream {self.address} carries {data_type!r}, "
                              f"not {self.data_type!r}")
        if self.dtype is not None and dtype is not None and dtype != self.dtype:
            raise StreamError(f"dtype mismatch: stream {self.address} sends {data_type!r} as "
                              f"{dtype}, this subscriber expects {self.dtype}")
        if self.run_id is not None and info.run_id not in (None, self.run_id):
            raise StreamError(f"stream {self.address} carries run {info.run_id!r}, "
                              f"this subscriber wants run {self.run_id!r}")
        if info.transport == "sharedmem":
            prefix = h.get("shm_prefix")
            if not shm.valid_prefix(prefix):
                raise StreamError(f"bad WELCOME from {peer}: shared-memory prefix {prefix!r}")
            self._shm_prefix = prefix
        elif info.transport != "tcp":
            raise StreamError(f"bad WELCOME from {peer}: unknown transport {info.transport!r}")
        if info.compressor not in (None, "lz4"):
            raise StreamError(f"bad WELCOME from {peer}: unknown compressor {info.compressor!r}")
        return info

    async def connect(self) -> StreamInfo:
        """Connect and handshake (done by the first iteration if not called)."""
        if self.info is not None:
            return self.info
        if self._closed:
            raise StreamError(f"subscriber of {self.address} is closed")
        sock, reader = await self._open()
        try:
            self.info = await self._hello(sock, reader, "data")
        except BaseException:
            sock.close()
            raise
        self._sock, self._reader = sock, reader
        if self.info.transport == "sharedmem":
            self._outbox = asyncio.Queue()
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name=f"subscriber {self.address} acks")
        return self.info

    async def __aenter__(self) -> Subscriber:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; the publisher sees this subscriber leave. Idempotent; a closed
        Subscriber cannot connect again. The end of the iteration calls it."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - the connection is going away anyway
                pass
        if self._sock is not None:
            self._sock.close()

    def stop(self) -> None:
        """End the iteration cleanly at the next chunk boundary, without waiting for the
        publisher's END (e.g. on Ctrl-C): a chunk in flight is dropped, the publisher sees this
        subscriber leave. Safe to call from a signal handler on the loop."""
        self._stopping = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def last_end(self) -> int | None:
        """End time of the last chunk received."""
        return self._last_end

    @property
    def first_start(self) -> int | None:
        """Start time of the first chunk received."""
        return self._first_start

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await self._outbox.get()  # type: ignore[union-attr]
            try:
                await loop.sock_sendall(self._sock, frame)  # type: ignore[arg-type]
            except OSError:
                return  # the reading side reports the broken connection

    def _send_control(self, kind: int, seq: int) -> None:
        if not self._closed and self._outbox is not None:
            self._outbox.put_nowait(P.encode_frame(kind, {"seq": seq}))

    def _released(self, seq: int) -> None:
        """A mapping was garbage-collected (any thread): tell the publisher, via the loop."""
        loop = self._loop
        if self._closed or loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._send_control, P.RELEASE, seq)
        except RuntimeError:  # the loop is closed
            pass

    # ------------------------------------------------------------------ data
    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self.chunks()

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The stream's chunks until the publisher's END; StreamError on anything else."""
        if self._iterating:
            raise StreamError("a Subscriber can be iterated only once")
        self._iterating = True
        try:
            if self._stopping:
                return
            await self.connect()
            # One frame is read ahead while the consumer has the previous chunk: receiving
            # overlaps with the consumer's work (and with checking, on a thread, for chunks
            # over 64 MiB).
            # At most one chunk more than the consumer took is held here.
            pending: asyncio.Future | None = asyncio.ensure_future(self._next())
            try:
                while True:
                    assert pending is not None
                    try:
                        raw = await pending
                    except StreamError:
                        if self._stopping:
                            return
                        raise
                    pending = None
                    if raw is None or self._stopping:
                        return
                    pending = asyncio.ensure_future(self._next())
                    yield await self._build(raw)
            finally:
                if pending is not None:
                    if not pending.done():
                        pending.cancel()
                    try:
                        await pending
                    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing
                        pass
        except asyncio.CancelledError:
            raise
        except StreamError as error:
            raise error.add_context(data_type=self.data_type or None) from None
        finally:
            await self.aclose()

    async def _next(self) -> tuple | None:
        reader = self._reader
        assert reader is not None and self.info is not None
        try:
            head = await reader.read_head()
        except P.StreamClosed as error:
            if self._stopping:
                return None
            await self._publisher_lost()
            raise StreamError(
                f"the publisher at {self.address} closed the connection before the end of the "
                f"run ({error.rule}; {self._chunks} chunks received"
                + (f", last ending at {self._last_end}" if self._last_end is not None else "")
                + "): it crashed or was killed"
            ) from None
        h = head.header
        if head.kind == P.CHUNK:
            return await self._chunk(head)
        if head.kind in (P.END, P.ERROR) and head.payload_len:
            raise StreamError(f"bad frame from {self.address}: {head.kind_name} frame carries "
                              f"a payload of {head.payload_len} bytes")
        if head.kind == P.END:
            sent = P.field(h, "chunks", int, self.address) if "chunks" in h else None
            if sent is not None and sent != self._frames:
                raise StreamError(f"stream {self.address} ended after {sent} frames, but "
                                  f"{self._frames} arrived")
            self._ended = True
            return None
        if head.kind == P.ERROR:
            raise StreamError(f"the publisher at {self.address} failed: "
                              f"{h.get('message', '(no message)')}")
        raise StreamError(f"protocol error: unexpected {head.kind_name} frame from "
                          f"{self.address}")

    async def _publisher_lost(self) -> None:
        """Connection lost: if the publisher process is gone, unlink its segments.

        A process that is exiting closes its sockets a moment before it is a zombie, so its
        state is looked at a few times over ~0.1 s (a bounded look, not a wait for data)."""
        prefix = self._shm_prefix
        if prefix is None:
            return
        pid = int(prefix.split("_")[1])
        for _ in range(5):
            if shm.process_gone(pid):
                shm.sweep(prefix)
                return
            await asyncio.sleep(0.02)

    async def _why_gone(self, error: StreamError) -> StreamError:
        """A chunk's segment is gone: a publisher that failed frees its segments once its
        subscribers had time to take the ERROR frame. If one follows (after other shared-memory
        chunk frames), that is the error; else the segment's absence is."""
        reader = self._reader
        assert reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _WHY_GONE_SECONDS
        try:
            while True:
                head = await asyncio.wait_for(reader.read_head(),
                                              max(0.0, deadline - loop.time()))
                if head.kind == P.ERROR:
                    return StreamError(
                        f"the publisher at {self.address} failed: "
                        f"{head.header.get('message', '(no message)')} ({self._chunks} chunks "
                        f"received; the chunks after them were not taken in time)")
                if head.kind != P.CHUNK or head.payload_len:
                    return error
        except (StreamError, asyncio.TimeoutError):
            return error

    async def _chunk(self, head: P.FrameHead) -> tuple:
        """Read a CHUNK frame's data; the Chunk is built (and checked) by ``_build``."""
        h = head.header
        info = self.info
        peer = self.address
        assert info is not None and self._reader is not None
        seq = P.field(h, "seq", int, peer)
        start = P.field(h, "start", int, peer)
        end = P.field(h, "end", int, peer)
        n = P.field(h, "n", int, peer)
        nbytes = P.field(h, "nbytes", int, peer)
        dtype = P.dtype_from_wire(P.field(h, "dtype", str, peer))
        if dtype != info.dtype:
            raise StreamError(f"dtype mismatch: a chunk from {peer} has dtype {dtype}, the "
                              f"stream announced {info.dtype}")
        if n < 0 or nbytes != n * dtype.itemsize:
            raise StreamError(f"bad frame from {peer}: {n} items of {dtype.itemsize} bytes "
                              f"do not make {nbytes} bytes")
        if nbytes > self.max_frame_bytes:
            raise StreamError(f"oversized frame from {peer}: {nbytes} bytes exceed the limit "
                              f"of {self.max_frame_bytes} bytes (max_frame_bytes)")
        if self._last_end is not None and start != self._last_end:
            raise StreamError(f"stream {peer} skipped time: a chunk starts at {start}, the "
                              f"previous ended at {self._last_end}")
        compressor = h.get("compressor")
        gap = h.get("gap")
        segment = h.get("shm")
        if gap is not None:
            if n or head.payload_len or not isinstance(gap, dict):
                raise StreamError(f"bad frame from {peer}: a gap frame carries data")
            data = np.zeros(0, dtype)
        elif segment is not None:
            try:
                data = self._map(segment, n, nbytes, dtype, seq, head)
            except shm.SegmentGone as error:
                raise await self._why_gone(error) from None
        elif compressor is None:
            if head.payload_len != nbytes:
                raise StreamError(f"bad frame from {peer}: payload of {head.payload_len} bytes "
                                  f"for {nbytes} bytes of data")
            data = np.empty(n, dtype)
            if nbytes:
                await self._reader.read_into(memoryview(data.view(np.uint8)))  # type: ignore[arg-type]
        elif compressor == "lz4":
            if head.payload_len > _lz4_bound(nbytes):
                raise StreamError(f"bad frame from {peer}: compressed payload of "
                                  f"{head.payload_len} bytes for {nbytes} bytes of data")
            raw = await self._reader.read_payload(head)
            out = await _maybe_thread(nbytes, _decompress, raw, nbytes, peer)
            data = np.frombuffer(out, dtype=dtype, count=n)
        else:
            raise StreamError(f"bad frame from {peer}: unknown compressor {compressor!r}")
        run_id = P.field(h, "run_id", str, peer)
        self._frames += 1
        self._last_end = end
        if self._first_start is None:
            self._first_start = start
        if gap is not None:
            counts: list[Any] = [gap.get(k) for k in ("chunks", "items", "bytes")]
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63
                       for v in counts):
                raise StreamError(f"bad frame from {peer}: unreadable gap {str(gap)[:200]}")
            missed = Gap(start, end, *counts)
            self.gaps.append(missed)
            for k, value in enumerate((1, missed.chunks, missed.items, missed.bytes)):
                self._dropped[k] += value
        else:
            self._chunks += 1
            self._items += n
            self._bytes += nbytes
        return (run_id, start, end, dtype, data)

    async def _build(self, raw: tuple) -> Chunk:
        """The Chunk of a frame, its rules checked (on a thread when it is very big)."""
        run_id, start, end, dtype, data = raw
        info = self.info
        assert info is not None

        def build() -> Chunk:
            return Chunk(data_type=info.data_type,
                         data_kind=self.data_kind or info.data_kind or info.data_type,
                         dtype=dtype, run_id=run_id, start=start, end=end, data=data)

        try:
            if data.nbytes >= _CHECK_OFFLOAD_BYTES:
                return await asyncio.to_thread(build)
            return build()
        except ChunkError as error:
            raise StreamError(f"a chunk from {self.address} breaks a chunk rule: "
                              f"{error}") from error

    def _map(self, segment: Any, n: int, nbytes: int, dtype: np.dtype, seq: int,
             head: P.FrameHead) -> np.ndarray:
        peer = self.address
        if head.payload_len:
            raise StreamError(f"bad frame from {peer}: a shared-memory frame carries a payload")
        if self._shm_prefix is None:
            raise StreamError(f"bad frame from {peer}: shared-memory frame on a TCP stream")
        name = segment.get("name") if isinstance(segment, dict) else None
        if not shm.valid_segment(name, self._shm_prefix):
            raise StreamError(f"bad frame from {peer}: segment name {name!r}")
        if nbytes == 0:
            raise StreamError(f"bad frame from {peer}: an empty chunk in shared memory")
        mapping = shm.map_segment(name, nbytes, seq)
        data = np.frombuffer(mapping, dtype=dtype, count=n)
        weakref.finalize(mapping, self._released, seq)
        del mapping
        self._send_control(P.ACK, seq)
        return data

    # ------------------------------------------------------------------ inspection
    def statistics(self) -> SubscriberStatistics:
        """Totals so far; unlike ``gaps``, which keeps only the recent gaps, they count all."""
        return SubscriberStatistics(
            chunks=self._chunks, items=self._items, bytes=self._bytes, gaps=self._dropped[0],
            dropped_chunks=self._dropped[1], dropped_items=self._dropped[2],
            dropped_bytes=self._dropped[3],
            ended_cleanly=self._ended,
            stopped=self._stopping and not self._ended,
        )


async def stream_info(address: Any, *, token: str | None = None,
                      data_type: str | None = None, sharedmem: bool = True,
                      timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT) -> StreamInfo:
    """Ask a publisher what it streams (run, data type, dtype) without subscribing.

    Answered at once, also before the first chunk (then dtype and run are None); no answer
    within ``timeout`` seconds is a StreamError. ``transport`` is what a subscriber with this
    ``sharedmem`` setting would get."""
    sub = Subscriber(address, data_type, token=token, sharedmem=sharedmem,
                     handshake_timeout=timeout)
    sock, reader = await sub._open()
    try:
        return await sub._hello(sock, reader, "info")
    finally:
        sock.close()


def subscriber_plugin(
    data_type: str,
    address: Any,
    dtype: Any,
    data_kind: str | None = None,
    *,
    token: str | None = None,
    policy: str = "block",
    buffer_bytes: int | None = None,
    max_frame_bytes: int = P.DEFAULT_MAX_FRAME_BYTES,
    sharedmem: bool = True,
    check_run_id: bool = True,
    save_when: Any = SaveWhen.ALWAYS,
    version: str = "0.0.0",
    class_name: str | None = None,
    subscriber: Subscriber | None = None,
) -> type[Plugin]:
    """A source Plugin class that provides ``data_type`` from the stream at ``address``.

    Register it in a Context like any plugin; ``async def iterate`` connects when the pipeline
    starts and yields the received chunks. With ``check_run_id`` the stream must carry the run
    the Context was asked for. ``subscriber``: an already connected Subscriber that the first
    iteration takes over (e.g. one that waited for the run to start). The lineage is the class name (default
    ``Subscribe<DataType>``), ``version`` and no options: the address is where the data comes
    from, not what it is. With ``policy="drop"`` the version is ``<version>+drop``: such data
    may have holes (gaps), so it must never be taken for, or found as, a lossless copy.
    """
    if policy not in ("block", "drop"):
        raise InvalidConfiguration(f"policy must be 'block' or 'drop', not {policy!r}")
    dtype = np.dtype(dtype)
    kind = data_kind or data_type
    settings: dict[str, Any] = dict(token=token, policy=policy, buffer_bytes=buffer_bytes,
                    max_frame_bytes=max_frame_bytes, sharedmem=sharedmem)

    handed = [subscriber] if subscriber is not None else []

    async def iterate(self: Plugin) -> AsyncIterator[Chunk]:
        if handed:
            sub = handed.pop()
            if check_run_id and sub.info is not None and sub.info.run_id != self.run_id:
                raise StreamError(f"stream {sub.address} carries run {sub.info.run_id!r}, "
                                  f"this plugin wants run {self.run_id!r}")
        else:
            sub = Subscriber(address, data_type, dtype=dtype, data_kind=kind,
                             run_id=self.run_id if check_run_id else None, **settings)
        self.subscriber = sub  # type: ignore[attr-defined]
        try:
            async for chunk in sub:
                if chunk.run_id != self.run_id:
                    chunk = Chunk(data_type=data_type, data_kind=kind, dtype=dtype,
                                  run_id=self.run_id, start=chunk.start, end=chunk.end,
                                  data=chunk.data)
                yield chunk
        except AsyncstraxError as error:
            raise error.add_context(plugin=type(self).__name__, run_id=self.run_id)
        finally:
            await sub.aclose()

    name = class_name or "Subscribe" + "".join(p.title() for p in data_type.split("_"))
    attrs = {
        "provides": data_type,
        "depends_on": (),
        "dtype": dtype,
        "data_kind": kind,
        "__version__": version if policy == "block" else f"{version}+{policy}",
        "save_when": save_when,
        "rechunk_on_save": False,
        "iterate": iterate,
        "stream_address": P.format_address(*P.parse_address(address)),
        "__module__": __name__,
        "__doc__": f"Source: {data_type!r} received from the stream at {address}.",
    }
    return type(name, (Plugin,), attrs)


async def _maybe_thread(nbytes: int, fn: Any, *args: Any) -> Any:
    if nbytes >= _OFFLOAD_BYTES:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def _lz4_bound(nbytes: int) -> int:
    """The largest lz4 frame ``nbytes`` can compress to (incompressible data is stored with a
    few bytes per 64 KiB block; frame header and checksums: tens of bytes). Generous."""
    return nbytes + nbytes // 128 + 1024


def _decompress(raw: bytearray, nbytes: int, peer: str) -> bytearray:
    import lz4.frame

    try:
        d = lz4.frame.LZ4FrameDecompressor(return_bytearray=True)
        out = d.decompress(raw, max_length=nbytes)
        if len(out) != nbytes or not d.eof:
            raise StreamError(f"bad frame from {peer}: compressed payload does not hold "
                              f"{nbytes} bytes")
    except StreamError:
        raise
    except Exception as error:  # noqa: BLE001 - lz4 raises RuntimeError on bad data
        raise StreamError(f"bad frame from {peer}: cannot decompress payload ({error})") from None
    return out
