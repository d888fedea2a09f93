"""Channels: one writer, many readers, each reader with its own cursor.

A channel carries the chunks of one data type (strax's mailbox, made async). The writer waits
while the buffer holds more than ``capacity_bytes`` that some reader has not yet taken, so memory
stays bounded by the slowest reader. A chunk leaves the buffer as soon as its last reader has
taken it.

Bounded buffers can deadlock a graph whose branches rechunk unevenly (a diamond where one branch
needs three inputs per output and the other emits three outputs per input). The ``StallMonitor``
shared by every channel of a pipeline knows how many of the pipeline's tasks exist and how many
are blocked on a channel; when every task is blocked and some writer waits for room, the graph
can only move if a buffer grows, so the monitor lets the waiting writers through. Memory grows
only by what breaking the stall needs, and only then.

Choosing ``capacity_bytes``: a few chunks of the producer's size keeps both sides busy; smaller
values pass backpressure on sooner (lower latency and memory) at the price of more task switches.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from ..chunk import Chunk
from ..errors import AsyncstraxError, ChunkContinuityError

__all__ = ["Channel", "ChannelReader", "ChannelStatistics", "StallMonitor", "DeadlockError"]

#: one big chunk is always let in whatever the bound; 16 MiB keeps small chunks flowing (the
#: TPC chain ran as fast with it as with 64 MiB, in 40-90 MiB less memory with 20 MB chunks)
DEFAULT_CAPACITY_BYTES = 16 * 1024**2


class DeadlockError(AsyncstraxError):
    """Every task waits for input and none can produce it (an engine bug, never silent)."""


class StallMonitor:
    """Counts a pipeline's live tasks and those blocked on channels; breaks stalls."""

    def __init__(self) -> None:
        self.n_tasks = 0
        self.n_blocked = 0
        self.blocked_writers: list[Channel] = []
        self.stalls_broken = 0
        self.on_deadlock: list = []

    def task_started(self) -> None:
        """Count one more live task of the pipeline."""
        self.n_tasks += 1

    def task_finished(self) -> None:
        """Count one task less; the others may all be blocked now."""
        self.n_tasks -= 1
        self.check()

    def blocked(self) -> None:
        """A task starts waiting on a channel; it may be the last one that could move."""
        self.n_blocked += 1
        self.check()

    def unblocked(self) -> None:
        """A task stopped waiting on a channel."""
        self.n_blocked -= 1

    def check(self) -> None:
        """If every task is blocked, let the waiting writers through; if none is a writer,
        report a ``DeadlockError`` to the ``on_deadlock`` callbacks."""
        if self.n_tasks <= 0 or self.n_blocked < self.n_tasks:
            return
        writers = [ch for ch in self.blocked_writers if ch._writer_waiter is not None]
        if writers:
            self.stalls_broken += 1
            for channel in writers:
                channel._grant_overdraft()
            return
        error = DeadlockError(
            "every task of the pipeline is waiting for input that nobody can produce"
        )
        for callback in self.on_deadlock:
            callback(error)


@dataclass(frozen=True)
class ChannelStatistics:
    """A snapshot of a channel's state, for diagnostics and tests."""

    data_type: str
    chunks_written: int
    chunks_buffered: int
    bytes_buffered: int
    capacity_bytes: int
    readers: int
    reader_cursors: tuple[int, ...]
    writer_waiting: bool
    readers_waiting: int
    closed: bool
    overdrafts: int


class _Waiter:
    """A future whose waiting time counts as 'blocked' for the stall monitor."""

    __slots__ = ("future", "monitor")

    def __init__(self, monitor: StallMonitor | None) -> None:
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.monitor = monitor  # None: a wait that does not block its task (see get)

    async def wait(self) -> None:
        if self.monitor is not None:
            self.monitor.blocked()
        try:
            await self.future
        finally:
            if not self.future.done():  # cancelled while waiting
                self.future.cancel()
                if self.monitor is not None:
                    self.monitor.unblocked()

    def wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)
            if self.monitor is not None:
                self.monitor.unblocked()


class Channel:
    """The chunks of one data type, written once and read by any number of readers."""

    def __init__(
        self,
        data_type: str,
        capacity_bytes: int = DEFAULT_CAPACITY_BYTES,
        monitor: StallMonitor | None = None,
    ) -> None:
        self.data_type = data_type
        self.capacity_bytes = int(capacity_bytes)
        self.monitor = monitor if monitor is not None else StallMonitor()
        self._buffer: deque[Chunk] = deque()
        self._base = 0  # index of _buffer[0]
        self._written = 0
        self._bytes = 0
        self._readers: list[ChannelReader] = []
        self._writer_waiter: _Waiter | None = None
        self._overdraft = False
        self._overdrafts = 0
        self._closed = False
        self._last_end: int | None = None

    def reader(self) -> ChannelReader:
        """A new reader; it sees every chunk, so create readers before writing starts."""
        if self._written:
            raise RuntimeError(f"channel {self.data_type}: reader added after writing began")
        reader = ChannelReader(self)
        self._readers.append(reader)
        return reader

    @property
    def closed(self) -> bool:
        """True once the writer called ``close()`` (readers may still have chunks to take)."""
        return self._closed

    def statistics(self) -> ChannelStatistics:
        """A snapshot of the buffer, the readers' cursors and who is waiting."""
        return ChannelStatistics(
            data_type=self.data_type,
            chunks_written=self._written,
            chunks_buffered=len(self._buffer),
            bytes_buffered=self._bytes,
            capacity_bytes=self.capacity_bytes,
            readers=len(self._readers),
            reader_cursors=tuple(r._cursor for r in self._readers),
            writer_waiting=self._writer_waiter is not None,
            readers_waiting=sum(r._waiter is not None for r in self._readers),
            closed=self._closed,
            overdrafts=self._overdrafts,
        )

    # ------------------------------------------------------------------ writing
    async def put(self, chunk: Chunk) -> None:
        """Append a chunk; waits first while the slowest reader is too far behind."""
        if self._closed:
            raise RuntimeError(f"channel {self.data_type} is closed")
        if self._last_end is not None and chunk.start != self._last_end:
            raise ChunkContinuityError(
                f"chunk starts at {chunk.start} but the previous chunk ended at "
                f"{self._last_end}: consecutive chunks must be contiguous",
                data_type=self.data_type,
                run_id=chunk.run_id,
                chunk_i=self._written,
                time_range=(chunk.start, chunk.end),
            )
        while self._buffer and self._bytes >= self.capacity_bytes and not self._overdraft:
            waiter = self._writer_waiter = _Waiter(self.monitor)
            self.monitor.blocked_writers.append(self)
            try:
                await waiter.wait()
            finally:
                self._writer_waiter = None
                self.monitor.blocked_writers.remove(self)
        self._overdraft = False
        self._last_end = chunk.end
        self._written += 1
        if not self._readers:
            return  # nobody reads this data type in this pipeline
        self._buffer.append(chunk)
        self._bytes += chunk.nbytes
        for reader in self._readers:
            if reader._waiter is not None:
                reader._waiter.wake()

    def close(self) -> None:
        """No more chunks: readers get end-of-stream once they have taken the rest."""
        self._closed = True
        for reader in self._readers:
            if reader._waiter is not None:
                reader._waiter.wake()

    def _grant_overdraft(self) -> None:
        self._overdraft = True
        self._overdrafts += 1
        if self._writer_waiter is not None:
            self._writer_waiter.wake()

    def _release(self) -> None:
        """Drop chunks every reader has taken, and wake the writer if there is room now."""
        low = min(r._cursor for r in self._readers)
        while self._base < low:
            self._bytes -= self._buffer.popleft().nbytes
            self._base += 1
        if self._writer_waiter is not None and (
            self._bytes < self.capacity_bytes or not self._buffer
        ):
            self._writer_waiter.wake()

    def _detach(self, reader: ChannelReader) -> None:
        self._readers.remove(reader)
        if self._readers:
            self._release()
        else:
            self._buffer.clear()
            self._bytes = 0
            self._base = self._written
            if self._writer_waiter is not None:
                self._writer_waiter.wake()


class ChannelReader:
    """One reader's view of a channel: its own cursor over the chunks."""

    __slots__ = ("_channel", "_cursor", "_waiter")

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._cursor = 0
        self._waiter: _Waiter | None = None

    @property
    def data_type(self) -> str:
        """The data type of the channel read."""
        return self._channel.data_type

    def get_nowait(self) -> Chunk | None:
        """The next chunk if one is buffered, else None (use ``at_end`` to tell why)."""
        ch = self._channel
        if self._cursor >= ch._written:
            return None
        chunk = ch._buffer[self._cursor - ch._base]
        self._cursor += 1
        if self._cursor - 1 == ch._base:
            ch._release()
        return chunk

    @property
    def at_end(self) -> bool:
        """True once the channel is closed and this reader has taken every chunk."""
        ch = self._channel
        return ch._closed and self._cursor >= ch._written

    async def get(self, counted: bool = True) -> Chunk | None:
        """The next chunk, waiting for it; None once the writer closed and all is read.

        ``counted=False``: the reading task has other work in flight (a parallel plugin
        waiting for input while its earlier steps compute), so this wait does not count as
        blocked for the stall monitor. Cancelling a wait takes no chunk.
        """
        ch = self._channel
        while self._cursor >= ch._written:
            if ch._closed:
                return None
            waiter = self._waiter = _Waiter(ch.monitor if counted else None)
            try:
                await waiter.wait()
            finally:
                self._waiter = None
        return self.get_nowait()

    def detach(self) -> None:
        """Stop reading: the channel no longer waits for this reader."""
        if self in self._channel._readers:
            self._channel._detach(self)

    def __aiter__(self) -> ChannelReader:
        return self

    async def __anext__(self) -> Chunk:
        chunk = await self.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk
