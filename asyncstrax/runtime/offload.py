"""Compute offload: plugin code runs on worker threads, never on the event loop.

Each plugin gets a ``ComputeLane`` on the pipeline's shared thread pool. A lane bounds how many
of the plugin's steps are in flight (one for ``parallel=False``, ``max_workers`` for
``parallel=True``) and hands results back in submission order, whatever order they finish in.

A thread hop costs tens of microseconds, more than a trivial compute on a small chunk, so the
runtime submits *batches*: every step that can be made from input already buffered goes to the
worker in one hop. Big chunks still go one per hop (batches are capped in bytes), so
``parallel=True`` keeps several workers busy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ContextClosed

__all__ = ["ComputeLane", "PluginStats", "ThreadPool", "Window", "new_executor", "thread_count"]


@dataclass
class PluginStats:
    """What one plugin (or loader, or saver) did in a run: for the summary table."""

    name: str
    kind: str = "plugin"
    chunks: int = 0
    items: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    compute_seconds: float = 0.0
    calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        """Input megabytes per second of compute time (output if there is no input)."""
        nbytes = self.bytes_in or self.bytes_out
        return nbytes / 1e6 / self.compute_seconds if self.compute_seconds else 0.0


def thread_count(max_workers: int) -> int:
    """Threads a request's pool has: room for ``max_workers`` parallel steps, and at least two
    (and up to four, as the CPUs allow) so loads, saves and serial plugins overlap."""
    return max(2, max_workers, min(4, os.cpu_count() or 2))


def new_executor(n_threads: int) -> cf.ThreadPoolExecutor:
    """A thread pool for plugin steps, loads and saves (one per Context and size: threads
    kept between requests keep their warm malloc arenas, and a 20 MB chunk put in fresh pages
    costs several milliseconds of page faults)."""
    return cf.ThreadPoolExecutor(n_threads, thread_name_prefix="asyncstrax")


class ThreadPool:
    """One request's view of worker threads; tracks what it submitted so cleanup can wait.

    The threads are the Context's (``executor``, shared by its requests and kept between
    them) or, without one, this pool's own, stopped by ``shutdown``.
    """

    def __init__(self, n_threads: int, executor: cf.ThreadPoolExecutor | None = None) -> None:
        self.n_threads = n_threads
        self._own = executor is None
        self._executor = new_executor(n_threads) if executor is None else executor
        self._running: set[cf.Future] = set()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Run ``fn(*args)`` on a pool thread; an asyncio future of its result."""
        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:  # the executor was shut down: the Context's, by close()
            if self._own:
                raise
            raise ContextClosed("the Context was closed while this request ran (close() "
                                "or the end of 'async with' stops its worker threads)") from None
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return asyncio.wrap_future(future)

    async def drain(self) -> None:
        """Wait until no job of ours runs (a thread cannot be interrupted mid-compute)."""
        while self._running:
            pending = [asyncio.wrap_future(f) for f in list(self._running)]
            try:
                await asyncio.gather(*pending, return_exceptions=True)
            except asyncio.CancelledError:
                continue

    def shutdown(self, wait: bool = True) -> None:
        """Stop using the threads; called after ``drain`` so the join is immediate (``wait=False``:
        our queued jobs are dropped and running ones end on their own). Shared threads stay."""
        if self._own:
            self._executor.shutdown(wait=wait, cancel_futures=True)
        else:
            for future in list(self._running):
                future.cancel()


class Window:
    """A bounded, ordered window of jobs in flight (a thread lane's or a process lane's)."""

    def __init__(self, max_in_flight: int, stats: PluginStats) -> None:
        self.max_in_flight = max(1, int(max_in_flight))
        self.stats = stats
        self._in_flight: deque[asyncio.Future] = deque()

    @property
    def full(self) -> bool:
        """No room for another job."""
        return len(self._in_flight) >= self.max_in_flight

    @property
    def empty(self) -> bool:
        """No job in flight."""
        return not self._in_flight

    @property
    def oldest(self) -> asyncio.Future:
        """The job whose result comes next (to wait for it beside other things)."""
        return self._in_flight[0]

    def abandon(self) -> None:
        """The plugin stops (an error, a cancellation): jobs still in flight end unread, and
        the error they may end with was reported by whoever failed first, so it is read here
        rather than logged later as "Future exception was never retrieved"."""
        for future in self._in_flight:
            future.add_done_callback(retrieve_exception)


class ComputeLane(Window):
    """One plugin's ordered window of in-flight jobs on the shared pool."""

    def __init__(self, pool: ThreadPool, max_in_flight: int, stats: PluginStats) -> None:
        super().__init__(max_in_flight, stats)
        self.pool = pool

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Start ``fn(*args)`` on the pool as the newest job of this lane."""
        self._in_flight.append(self.pool.submit(_timed, fn, args))

    async def next_result(self) -> Any:
        """The oldest job's result (results come back in submission order)."""
        future = self._in_flight[0]
        try:
            seconds, result = await future
        finally:
            if future.done():
                self._in_flight.popleft()
        self.stats.compute_seconds += seconds
        self.stats.calls += 1
        return result


def retrieve_exception(future: asyncio.Future) -> None:
    """Mark a finished future's exception as read."""
    if not future.cancelled():
        future.exception()


def _timed(fn: Callable[..., Any], args: tuple) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result
