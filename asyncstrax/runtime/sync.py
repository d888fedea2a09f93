"""Input synchronization: turning differently chunked inputs into common time ranges.

A plugin with several inputs receives, per step, one array per input kind, all covering the same
``[start, end)``. The step's end is set by the slowest input (the smallest end among the chunks
received); every input is split there, moving the split earlier where an item would be cut in
two (so an item always lands whole in one step). Inputs of one kind end up with the same items,
and are merged into one array on the worker thread.

Nothing is copied here: steps hold views into the received chunks; joining pieces and merging
kinds happens on the worker, off the event loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from ..chunk import Chunk, split_index
from ..errors import ChunkContinuityError, ChunkError
from ..plugins.base import Work
from .channel import ChannelReader

__all__ = ["InputSync"]


class _Need:
    """Returned when a step cannot be made without another chunk of ``data_type``."""

    __slots__ = ("data_types",)

    def __init__(self, data_types: list[str]) -> None:
        self.data_types = data_types


class InputSync:
    """Cuts the chunks of several input channels into synchronized ``Work`` steps."""

    def __init__(self, readers: dict[str, ChannelReader], kinds: dict[str, list[str]],
                 consumer: str | None = None) -> None:
        self.readers = readers
        self.kinds = kinds
        #: the plugin whose inputs these are, named in errors (None: the request's targets)
        self.consumer = consumer
        self.run_id: str | None = None
        self.pending: dict[str, deque[Chunk]] = {dt: deque() for dt in readers}
        self.finished: dict[str, bool] = {dt: False for dt in readers}
        self.last_end: dict[str, int | None] = {dt: None for dt in readers}
        self.cursor: int | None = None
        self.chunk_i = 0
        self.done = False
        self._told_last = False
        self._single = next(iter(readers)) if len(readers) == 1 else None
        self._empty: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ feeding
    def _accept(self, data_type: str, chunk: Chunk | None) -> None:
        if chunk is None:
            self.finished[data_type] = True
            return
        last = self.last_end[data_type]
        self.run_id = self.run_id or chunk.run_id
        if last is not None and chunk.start != last:
            raise ChunkContinuityError(
                f"input chunk starts at {chunk.start} but the previous one ended at {last}",
                plugin=self.consumer,
                data_type=data_type,
                run_id=chunk.run_id,
                time_range=(chunk.start, chunk.end),
            )
        if last is None and self.cursor is not None and chunk.start != self.cursor:
            started = {dt: c[0].start for dt, c in self.pending.items() if c}
            started[data_type] = chunk.start
            raise self._continuity_error(
                f"inputs start at different times: {started}; every input of a plugin must "
                f"cover the same run time")
        self.last_end[data_type] = chunk.end
        if data_type not in self._empty:
            self._empty[data_type] = chunk.data[:0]
        if self.cursor is None:
            self.cursor = chunk.start
        self.pending[data_type].append(chunk)

    async def fetch(self, data_type: str, counted: bool = True) -> None:
        """Wait for the next chunk of ``data_type`` and buffer it (or note that input ended)."""
        self._accept(data_type, await self.readers[data_type].get(counted))

    def fetch_nowait(self, data_type: str) -> bool:
        """Buffer the next chunk of ``data_type`` if there is one, or note that the input ended;
        False if neither can be done without waiting."""
        reader = self.readers[data_type]
        chunk = reader.get_nowait()
        if chunk is None:
            if reader.at_end:
                self._accept(data_type, None)
                return True
            return False
        self._accept(data_type, chunk)
        return True

    # ------------------------------------------------------------------ stepping
    def _single_input_step(self) -> Work | None:
        """Fast path for one input: its next chunk is the next step, no split needed."""
        if self._single is None or self.done:
            return None
        queue = self.pending[self._single]
        if not queue:
            chunk = self.readers[self._single].get_nowait()
            if chunk is None:
                return None
            self._accept(self._single, chunk)
        head = queue[0]
        if head.start != self.cursor or head.end == head.start:
            return None
        return self._take_heads(head.end)

    async def next_work(self, counted: bool = True) -> Work | None:
        """The next synchronized step, waiting for input as needed; None at the end.

        ``counted``: see ``ChannelReader.get``. Safe to cancel: fetched chunks stay buffered.
        """
        work = self._single_input_step()
        if work is not None:
            return work
        while True:
            step = self.try_step()
            if not isinstance(step, _Need):
                return step
            for dt in step.data_types:
                await self.fetch(dt, counted)

    def next_work_nowait(self) -> Work | None | _Need:
        """The next step if it can be made from what is buffered, else a ``_Need``."""
        work = self._single_input_step()
        if work is not None:
            return work
        while True:
            step = self.try_step()
            if not isinstance(step, _Need):
                return step
            for dt in step.data_types:
                if not self.fetch_nowait(dt):
                    return step

    def try_step(self) -> Work | None | _Need:
        """The next step from the buffered chunks only: a ``Work``, None at the end, or a
        ``_Need`` naming the inputs to fetch first.

        When every input has ended, one last empty step (``flush``) goes out first, unless
        the last data step was already known to be the last.
        """
        if self.done:
            return None
        for queue in self.pending.values():
            while queue and queue[0].start == queue[0].end == self.cursor and not len(queue[0]):
                queue.popleft()  # an empty, zero-duration chunk carries nothing
        missing = [dt for dt, q in self.pending.items() if not q and not self.finished[dt]]
        if missing:
            return _Need(missing)
        if all(not q for q in self.pending.values()):
            self.done = True
            if self._told_last or self.cursor is None:
                return None
            # Tell the plugin that nothing follows, for plugins that hold data back.
            self._told_last = True
            parts = {
                kind: [(dt, [self._empty[dt]]) for dt in dts] for kind, dts in self.kinds.items()
            }
            return Work(self.chunk_i, self.cursor, self.cursor, parts, is_last=True, flush=True)
        ended = [dt for dt, q in self.pending.items() if not q]
        if ended:
            alive = {dt: self.pending[dt][-1].end for dt in self.pending if self.pending[dt]}
            raise self._continuity_error(
                f"inputs end at different times: {sorted(ended)} ended at "
                f"{[self.last_end[d] for d in sorted(ended)]} while {alive} go on; every "
                f"input of a plugin must cover the same run time")
        heads = [q[0] for q in self.pending.values()]
        first_end = heads[0].end
        if all(c.end == first_end and c.start == self.cursor for c in heads):
            return self._take_heads(first_end)  # aligned inputs: whole chunks, no split
        ends = {dt: q[-1].end for dt, q in self.pending.items()}
        t = min(ends.values())
        cuts = self._cuts(t)
        if cuts is None:
            slow = [dt for dt, e in ends.items() if e == t and not self.finished[dt]]
            if slow:
                return _Need(slow)
            if len(set(ends.values())) > 1:
                raise self._continuity_error(
                    f"inputs end at different times: {ends}; every input of a plugin must "
                    f"cover the same run time")
            cuts = self._cuts(t, final=True)
            assert cuts is not None
        t_split, plan = cuts
        return self._commit(t_split, plan)

    def _continuity_error(self, rule: str) -> ChunkContinuityError:
        """An error between inputs: it names the plugin reading them, not one input."""
        return ChunkContinuityError(
            rule if self.consumer is not None else rule.replace(
                "every input of a plugin", "every requested data type"),
            plugin=self.consumer, run_id=self.run_id, chunk_i=self.chunk_i)

    def _cuts(self, t: int, final: bool = False) -> tuple[int, dict] | None:
        """Find a common split time <= t with no item cut; None when it would make no progress.

        Returns ``(t_split, {data_type: (n_whole_chunks, split_index_in_next_chunk)})``.
        """
        assert self.cursor is not None
        for _ in range(64):
            plan: dict[str, tuple[int, int]] = {}
            t_new = t
            for dt, queue in self.pending.items():
                n_whole, idx, t_dt = _plan_split(queue, t_new)
                plan[dt] = (n_whole, idx)
                t_new = min(t_new, t_dt)
            if t_new == t:
                break
            t = t_new
        else:  # pragma: no cover - the split time only decreases, so this converges
            raise ChunkError("input synchronization did not converge")
        if t <= self.cursor and not final:
            if any(self._has_zero_length_only(dt, t) for dt in self.pending):
                return t, plan
            return None
        return t, plan

    def _has_zero_length_only(self, dt: str, t: int) -> bool:
        queue = self.pending[dt]
        return bool(queue) and queue[0].end == queue[0].start == t

    def _take_heads(self, end: int) -> Work:
        """The common case: every input's next chunk covers the same range; take them whole."""
        start = self.cursor
        assert start is not None
        parts = {
            kind: [(dt, [self.pending[dt].popleft().data]) for dt in dts]
            for kind, dts in self.kinds.items()
        }
        self.cursor = end
        work = Work(self.chunk_i, start, end, parts)
        self.chunk_i += 1
        work.is_last = self._nothing_follows()
        self._told_last = work.is_last
        return work

    def _nothing_follows(self) -> bool:
        for dt, queue in self.pending.items():
            if queue or not (self.finished[dt] or self.readers[dt].at_end):
                return False
        return True

    def _commit(self, t: int, plan: dict[str, tuple[int, int]]) -> Work:
        start = self.cursor
        assert start is not None
        parts: dict[str, list[tuple[str, list[np.ndarray]]]] = {}
        for kind, dts in self.kinds.items():
            pieces = []
            for dt in dts:
                queue = self.pending[dt]
                n_whole, idx = plan[dt]
                arrays = [queue.popleft().data for _ in range(n_whole)]
                if queue and idx:
                    head = queue[0]
                    arrays.append(head.data[:idx])
                    queue[0] = _rest(head, idx, t)
                elif queue and queue[0].start < t:
                    queue[0] = _rest(queue[0], 0, t)
                while queue and queue[0].end == queue[0].start == t and not len(queue[0]):
                    queue.popleft()  # zero-duration, empty: nothing left to give
                if not arrays:
                    arrays.append(self._empty[dt])  # no items of this type in the step
                pieces.append((dt, arrays))
            parts[kind] = pieces
        self.cursor = t
        work = Work(chunk_i=self.chunk_i, start=start, end=t, parts=parts)
        self.chunk_i += 1
        work.is_last = self._nothing_follows()
        self._told_last = work.is_last
        return work


def _plan_split(queue: Sequence[Chunk], t: int) -> tuple[int, int, int]:
    """How to cut a data type's pending chunks at ``t``: (whole chunks, index in next, t')."""
    n_whole = 0
    for chunk in queue:
        if chunk.end <= t:
            n_whole += 1
            continue
        if chunk.start >= t:
            return n_whole, 0, t
        idx, t_split = split_index(chunk.data, t, allow_early_split=True)
        t_split = max(t_split, chunk.start)
        return n_whole, idx, t_split
    return n_whole, 0, t


def _rest(chunk: Chunk, idx: int, t: int) -> Chunk:
    """What remains of a chunk after its first ``idx`` items went into a step ending at t."""
    return Chunk.__new__(Chunk)._init_view(chunk, t, chunk.data[idx:])
