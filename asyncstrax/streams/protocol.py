"""The stream wire format: length-prefixed frames over a socket, shared by TCP and shared memory.

Every frame is a fixed 20-byte prefix, a JSON header and a raw payload::

    prefix   = struct "!4sBBHIQ": magic b"AXST", protocol version, frame kind, flags (0),
               header length (uint32), payload length (uint64)
    header   = UTF-8 JSON object (at most MAX_HEADER_BYTES)
    payload  = the chunk's bytes (raw, or lz4-frame compressed), or nothing

Frame kinds and their header fields:

- ``HELLO`` (subscriber -> publisher, first frame): ``token``, ``data_type``, ``dtype`` (descr,
  optional), ``policy`` ("block" or "drop"), ``buffer_bytes`` (optional), ``mode`` ("data" or
  "info"), ``sharedmem`` (whether the subscriber can map shared memory).
- ``WELCOME`` (publisher -> subscriber): ``run_id``, ``data_type``, ``data_kind``, ``dtype``,
  ``transport`` ("tcp" or "sharedmem", chosen for this subscriber), ``compressor``,
  ``buffer_bytes``, ``policy``, ``shm_prefix`` (name prefix of the publisher's segments).
- ``REFUSED``: ``reason``; the publisher closes the connection.
- ``CHUNK``: ``seq``, ``run_id``, ``start``, ``end``, ``n`` (items), ``dtype`` (descr),
  ``nbytes`` (uncompressed), ``compressor`` (null or "lz4"), optionally ``shm``
  (``{"name", "size"}``: the bytes are in that shared-memory segment, the payload is empty) and
  ``gap`` (``{"chunks", "items", "bytes"}``: an empty chunk covering what a ``drop`` subscriber
  missed, so its chunks stay contiguous).
- ``END``: the run ended cleanly; ``chunks`` (frames sent to this subscriber), ``end``.
- ``ERROR``: the publisher's source failed; ``message``.
- ``ACK`` / ``RELEASE`` (subscriber -> publisher, shared memory only): ``seq`` of a chunk whose
  segment the subscriber has mapped (flow control) / no longer uses (the segment may be reused).

A dtype travels as the ``repr`` of ``dtype.descr`` (as in strax's metadata), read back with
``ast.literal_eval``: literals only, never code.

Everything read from the wire is checked before it is trusted: the magic, the version, the
header size, the frame size against ``max_frame_bytes`` (before any payload is allocated), the
JSON, the fields, the payload size against ``n * itemsize``. Every violation is a
``StreamError`` saying what was wrong.
"""

from __future__ import annotations

import ast
import asyncio
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import StreamError

__all__ = [
    "MAGIC",
    "PROTOCOL_VERSION",
    "PREFIX",
    "MAX_HEADER_BYTES",
    "DEFAULT_MAX_FRAME_BYTES",
    "HELLO",
    "WELCOME",
    "REFUSED",
    "CHUNK",
    "END",
    "ERROR",
    "ACK",
    "RELEASE",
    "KIND_NAMES",
    "FrameReader",
    "encode_frame",
    "send_frame",
    "dtype_to_wire",
    "dtype_from_wire",
    "parse_address",
    "format_address",
    "valid_port",
    "configure_socket",
]

MAGIC = b"AXST"
PROTOCOL_VERSION = 1
PREFIX = struct.Struct("!4sBBHIQ")
#: a JSON header larger than this is refused whatever the frame limit
MAX_HEADER_BYTES = 1 << 20
#: default limit on one frame (header + payload), on both ends
DEFAULT_MAX_FRAME_BYTES = 1 << 30

HELLO, WELCOME, REFUSED, CHUNK, END, ERROR, ACK, RELEASE = range(1, 9)
KIND_NAMES = {
    HELLO: "HELLO",
    WELCOME: "WELCOME",
    REFUSED: "REFUSED",
    CHUNK: "CHUNK",
    END: "END",
    ERROR: "ERROR",
    ACK: "ACK",
    RELEASE: "RELEASE",
}

#: reads shorter than this refill the staging buffer; longer ones go straight to their target
_STAGING_BYTES = 256 * 1024
#: a payload read straight from the kernel gives the event loop a turn this often
_YIELD_BYTES = 16 * 1024**2
#: a large payload's reader sleeps until this much is queued (SO_RCVLOWAT), not every segment
_RCVLOWAT = 256 * 1024
#: payloads up to this size are joined to their prefix and header in one send
_INLINE_PAYLOAD = 64 * 1024


def dtype_to_wire(dtype: np.dtype) -> str:
    """A dtype as text a peer rebuilds exactly: numpy's ``descr`` list (what strax stores),
    or, for a dtype with padding (``align=True``, explicit offsets), which ``descr`` would turn
    into extra fields, its names, formats, offsets, itemsize and titles."""
    dtype = np.dtype(dtype)
    descr = dtype.descr
    if not dtype.names or all(entry[0] for entry in descr):
        return repr(descr)
    fields: Any = dtype.fields
    names = list(dtype.names)
    return repr({
        "names": names,
        "formats": [_format(fields[n][0]) for n in names],
        "offsets": [fields[n][1] for n in names],
        "titles": [fields[n][2] if len(fields[n]) > 2 else None for n in names],
        "itemsize": dtype.itemsize,
    })


def _format(dtype: np.dtype) -> Any:
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return (_format(base), shape)
    return dtype.descr if dtype.names else dtype.str


_dtype_cache: dict[str, np.dtype] = {}


def dtype_from_wire(text: Any) -> np.dtype:
    """The dtype a peer described; a StreamError if the description is not a dtype."""
    if not isinstance(text, str):
        raise StreamError(f"bad frame: dtype must be a descr string, got {type(text).__name__}")
    cached = _dtype_cache.get(text)
    if cached is not None:
        return cached
    try:
        dtype = np.dtype(ast.literal_eval(text))
    except Exception as error:  # noqa: BLE001 - anything unparsable is a protocol violation
        raise StreamError(f"bad frame: unreadable dtype {text[:200]!r} ({error})") from None
    if dtype.hasobject:  # bytes on the wire cannot hold Python objects (pointers)
        raise StreamError(f"bad frame: dtype {text[:200]!r} holds Python objects")
    if len(_dtype_cache) < 256:
        _dtype_cache[text] = dtype
    return dtype


def valid_port(port: Any) -> bool:
    """Whether ``port`` is a TCP port number, 0 to 65535 (an int, or a string of digits)."""
    if isinstance(port, bool):
        return False
    if isinstance(port, str):
        if not port.isascii() or not port.isdigit():
            return False
    else:
        try:
            if int(port) != port:
                return False
        except (TypeError, ValueError, OverflowError):
            return False
    return 0 <= int(port) <= 65535


def parse_address(address: Any) -> tuple[str, int]:
    """``"tcp://host:port"``, ``"host:port"`` or ``(host, port)`` -> ``(host, port)``."""
    if isinstance(address, (tuple, list)) and len(address) == 2:
        if not valid_port(address[1]):
            raise StreamError(f"stream address {address!r}: the port must be a whole number "
                              f"from 0 to 65535")
        return str(address[0]), int(address[1])
    if not isinstance(address, str):
        raise StreamError(f"cannot read stream address {address!r}")
    text = address
    for scheme in ("tcp://", "sharedmem://", "shm://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit():
        raise StreamError(f"stream address {address!r} is not 'tcp://host:port'")
    if not valid_port(port):
        raise StreamError(f"stream address {address!r}: port {port} is not a port number "
                          f"(0 to 65535)")
    return host.strip("[]") or "127.0.0.1", int(port)


def format_address(host: str, port: int) -> str:
    """``tcp://host:port``, the form ``parse_address`` reads."""
    return f"tcp://{host}:{port}"


#: TCP keepalive: a peer silent this long [s] is probed, every KEEPALIVE_INTERVAL, and after
#: KEEPALIVE_PROBES unanswered probes the connection fails (~25 s: a host that vanished, a
#: pulled cable). A live peer's kernel answers probes even while its program is stalled.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 10, 5, 3


def configure_socket(sock: socket.socket) -> None:
    """Make a socket non-blocking (for the loop's ``sock_*`` calls) and, for TCP, send small
    frames at once (no Nagle delay) and notice a peer host that is gone (keepalive: without it
    a subscriber whose publisher's host vanished would wait for data forever)."""
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE),
                            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                            ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
            option = getattr(socket, name, None)
            if option is not None:  # Linux and others; elsewhere the system's defaults
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


def encode_frame(kind: int, header: dict[str, Any], payload_len: int = 0) -> bytes:
    """Prefix + header of a frame (the payload, if any, is sent after it)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(MAGIC, PROTOCOL_VERSION, kind, 0, len(head), payload_len) + head


async def send_frame(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    kind: int,
    header: dict[str, Any],
    payload: Any = None,
) -> None:
    """Send one frame; a contiguous payload (memoryview/bytes) is sent without a copy."""
    if payload is None:
        await loop.sock_sendall(sock, encode_frame(kind, header))
        return
    view = payload if isinstance(payload, memoryview) else memoryview(payload)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    head = encode_frame(kind, header, view.nbytes)
    if view.nbytes <= _INLINE_PAYLOAD:
        await loop.sock_sendall(sock, head + view.tobytes())
        return
    await loop.sock_sendall(sock, head)
    await loop.sock_sendall(sock, view)


@dataclass
class FrameHead:
    """A received frame's kind, JSON header and the length of the payload that follows."""

    kind: int
    header: dict[str, Any]
    payload_len: int

    @property
    def kind_name(self) -> str:
        """The frame kind's name (``CHUNK``, ``END``, ...), or its number if unknown."""
        return KIND_NAMES.get(self.kind, str(self.kind))


class StreamClosed(StreamError):
    """The peer closed the connection; ``at_frame_boundary`` tells a clean close from a cut."""

    def __init__(self, rule: str, at_frame_boundary: bool = False, **kwargs: Any) -> None:
        super().__init__(rule, **kwargs)
        self.at_frame_boundary = at_frame_boundary


class FrameReader:
    """Reads frames from a non-blocking socket with the event loop's ``sock_recv_into``.

    Small reads (prefixes, headers, small payloads) go through a staging buffer so one system
    call can bring several frames; a large payload is received straight into its destination
    (the chunk's own array), so it is never copied in user space. The staging buffer starts at
    ``staging_bytes`` and grows only as bytes arrive (a declared size costs nothing until the
    peer sends it); a reader that sees only control frames can start small.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        peer: str = "peer",
        staging_bytes: int = _STAGING_BYTES,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.max_frame_bytes = int(max_frame_bytes)
        self.peer = peer
        self._buf = bytearray(staging_bytes)
        self._view = memoryview(self._buf)
        self._lo = 0
        self._hi = 0
        self.bytes_received = 0
        self._lowat_ok = hasattr(socket, "SO_RCVLOWAT")

    # ------------------------------------------------------------------ raw reads
    async def _recv_into(self, view: memoryview) -> int:
        try:
            n = await self.loop.sock_recv_into(self.sock, view)
        except (ConnectionError, OSError) as error:
            raise StreamClosed(f"connection to {self.peer} broke: {error}") from None
        self.bytes_received += n
        return n

    async def _fill(self, need: int, what: str, done: int = 0, total: int | None = None) -> None:
        """Make at least ``need`` bytes available in the staging buffer (the last ``need`` of
        ``total`` bytes of a frame's ``what``, ``done`` of which were read: for messages)."""
        while self._hi - self._lo < need:
            if self._lo and (len(self._buf) - self._lo < need):
                rest = self._hi - self._lo
                self._view[:rest] = bytes(self._view[self._lo:self._hi])
                self._lo, self._hi = 0, rest
            if self._hi == len(self._buf):
                self._grow(need)
            n = await self._recv_into(self._view[self._hi:])
            if n == 0:
                self._eof(what, done + self._hi - self._lo, need if total is None else total)
            self._hi += n

    def _grow(self, need: int) -> None:
        """Room for more bytes: at most double what is held, never more than ``need``."""
        rest = bytes(self._view[self._lo:self._hi])
        self._buf = bytearray(max(len(self._buf), min(need, 2 * len(self._buf))))
        self._view = memoryview(self._buf)
        self._view[: len(rest)] = rest
        self._lo, self._hi = 0, len(rest)

    def _eof(self, what: str, got: int, need: int) -> None:
        if what == "prefix" and got == 0:
            raise StreamClosed(f"{self.peer} closed the connection", at_frame_boundary=True)
        raise StreamClosed(
            f"truncated frame: {self.peer} closed the connection after {got} of the {need} "
            f"bytes of a frame's {what}"
        )

    def _take(self, n: int) -> memoryview:
        view = self._view[self._lo:self._lo + n]
        self._lo += n
        if self._lo == self._hi:
            self._lo = self._hi = 0
        return view

    async def read_into(self, target: memoryview, what: str = "payload", done: int = 0,
                        total: int | None = None) -> None:
        """Fill ``target`` (a writable byte view) from the stream: the bytes after the first
        ``done`` of the ``total`` bytes of a frame's ``what`` (for messages)."""
        need = target.nbytes
        if total is None:
            total = done + need
        pos = min(need, self._hi - self._lo)
        if pos:
            target[:pos] = self._take(pos)
        yielded = pos
        while pos < need:
            left = need - pos
            if left < _STAGING_BYTES // 2:
                await self._fill(left, what, done + pos, total)
                target[pos:] = self._take(left)
                return
            # Take what the kernel already holds without a trip through the event loop: a
            # large payload arrives in many socket-buffer-sized pieces, and waking the loop
            # for each one cost more than the copy itself (TCP stream 0.62x -> 0.74x a bare
            # socket). The loop still gets a turn every _YIELD_BYTES.
            if pos - yielded >= _YIELD_BYTES:
                yielded = pos
                await asyncio.sleep(0)
            try:
                n = self.sock.recv_into(target[pos:])
            except BlockingIOError:
                n = await self._recv_payload_piece(target[pos:], left)
                yielded = pos
            except (ConnectionError, OSError) as error:
                raise StreamClosed(f"connection to {self.peer} broke: {error}") from None
            else:
                self.bytes_received += n
            if n == 0:
                self._eof(what, done + pos, total)
            pos += n

    async def _recv_payload_piece(self, view: memoryview, left: int) -> int:
        """Wait until at least min(left, _RCVLOWAT) bytes are queued, then take them.

        The socket otherwise turns readable for every segment that arrives, and each wake-up
        of the loop costs more than the bytes it brings (A/B in one run: TCP stream vs bare
        socket, median 0.82x -> 0.88x). Never asks for more than the payload still needs.
        """
        low = min(left, _RCVLOWAT)
        if not self._lowat_ok or low <= 1:
            return await self._recv_into(view)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, low)
        except OSError:  # not settable on this platform or socket type
            self._lowat_ok = False
            return await self._recv_into(view)
        try:
            return await self._recv_into(view)
        finally:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            except OSError:
                pass  # the connection is gone; the caller sees why

    # ------------------------------------------------------------------ frames
    async def read_head(self) -> FrameHead:
        """Read and check a frame's prefix and header; the payload is read separately."""
        await self._fill(PREFIX.size, "prefix")
        magic, version, kind, _flags, header_len, payload_len = PREFIX.unpack(
            self._take(PREFIX.size)
        )
        if magic != MAGIC:
            raise StreamError(
                f"bad frame from {self.peer}: expected magic {MAGIC!r}, got {bytes(magic)!r} "
                f"(not an asyncstrax stream, or the stream lost its framing)"
            )
        if version != PROTOCOL_VERSION:
            raise StreamError(
                f"bad frame from {self.peer}: protocol version {version}, this side speaks "
                f"{PROTOCOL_VERSION}"
            )
        if kind not in KIND_NAMES:
            raise StreamError(f"bad frame from {self.peer}: unknown frame kind {kind}")
        if header_len > MAX_HEADER_BYTES:
            raise StreamError(
                f"bad frame from {self.peer}: header of {header_len} bytes exceeds "
                f"{MAX_HEADER_BYTES}"
            )
        if header_len + payload_len > self.max_frame_bytes:
            raise StreamError(
                f"oversized frame from {self.peer}: {header_len + payload_len} bytes exceed "
                f"the limit of {self.max_frame_bytes} bytes (max_frame_bytes)"
            )
        await self._fill(header_len, "header")
        raw = self._take(header_len)
        try:
            header = json.loads(bytes(raw))
        except (UnicodeDecodeError, ValueError) as error:
            raise StreamError(f"bad frame from {self.peer}: header is not JSON ({error})") from None
        except RecursionError:  # e.g. [[[[...]]]]: nesting no real header has
            raise StreamError(f"bad frame from {self.peer}: header JSON is nested too "
                              f"deeply") from None
        if not isinstance(header, dict):
            raise StreamError(f"bad frame from {self.peer}: header is not a JSON object")
        return FrameHead(kind, header, payload_len)

    async def read_payload(self, head: FrameHead) -> bytearray:
        """The payload as a new bytearray (for small or compressed payloads).

        The buffer grows as the bytes arrive (doubling from _STAGING_BYTES): a declared
        length costs no memory until the peer actually sends it."""
        need = head.payload_len
        out = bytearray(min(need, _STAGING_BYTES))
        got = 0
        while True:
            await self.read_into(memoryview(out)[got:], done=got, total=need)
            got = len(out)
            if got == need:
                return out
            grown = bytearray(min(need, 2 * got))
            grown[:got] = out
            out = grown

    async def read_control(self, expected: tuple[int, ...]) -> FrameHead:
        """A frame without payload of one of the ``expected`` kinds."""
        head = await self.read_head()
        if head.kind not in expected:
            names = "/".join(KIND_NAMES[k] for k in expected)
            raise StreamError(
                f"protocol error: expected {names} from {self.peer}, got {head.kind_name}"
            )
        if head.payload_len:
            raise StreamError(
                f"bad frame from {self.peer}: {head.kind_name} frame carries a payload"
            )
        return head


def field(header: dict[str, Any], name: str, kind: type | tuple[type, ...], peer: str) -> Any:
    """A header field of the right type, or a StreamError naming it."""
    if name not in header:
        raise StreamError(f"bad frame from {peer}: header lacks {name!r}")
    value = header[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StreamError(
            f"bad frame from {peer}: header field {name!r} has the wrong type "
            f"({type(value).__name__})"
        )
    if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:  # times, counts
        raise StreamError(f"bad frame from {peer}: header field {name!r} = {value} is "
                          f"outside the int64 range")
    return value


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
