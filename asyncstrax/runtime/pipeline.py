"""The pipeline: one asyncio task per producer and per consumer, wired by channels.

A ``Pipeline`` is built by the Context for one run and a set of targets. Iterating it
(``async for chunk in pipeline``) yields the targets' chunks in time order while every plugin,
loader and saver runs concurrently; ``await pipeline.run()`` drives it to the end without
keeping the data.

Errors and cancellation: the first exception anywhere cancels every task, waits for the worker
threads to finish the step they are on, and is raised from the iteration (or ``run()``) with the
plugin, data type and chunk index. Cancelling the task that iterates cleans up the same way.
Nothing waits on a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..chunk import Chunk, concat_arrays, merge_arrays
from ..errors import AsyncstraxError, ChunkContinuityError, InvalidConfiguration, PluginError
from ..plugins.base import Plugin, Work
from .channel import DEFAULT_CAPACITY_BYTES, Channel, ChannelReader, StallMonitor
from .offload import ComputeLane, PluginStats, ThreadPool, thread_count
from .process_pool import ProcessLane, ProcessPool, ProcessPoolClosed
from .progress import ProgressBar
from .sync import InputSync

__all__ = ["Consumer", "Pipeline", "PipelineSummary", "Producer"]

#: steps sent to a worker in one hop: at most this many, and at most this many bytes of input
BATCH_MAX_STEPS = 64
BATCH_MAX_BYTES = 4 * 1024**2


class Producer(Protocol):
    """Something other than a plugin that writes chunks of data types (a storage loader)."""

    name: str
    provides: tuple[str, ...]

    def chunks(self, pool: ThreadPool | None = None) -> AsyncIterator[dict[str, Chunk]]:
        """Chunks in time order, one ``{data type: chunk}`` per step (reads on ``pool``)."""
        ...


class Consumer(Protocol):
    """Something that reads one data type to the end (a storage saver)."""

    name: str
    data_type: str

    async def consume(self, reader: ChannelReader, pool: ThreadPool) -> None:
        """Read every chunk of the data type (heavy work on ``pool``) until the end."""
        ...

    async def abort(self, error: BaseException) -> None:
        """The request failed: keep nothing half-done that could pass for complete data."""
        ...


@dataclass
class PipelineSummary:
    """Per-component timing and throughput of one run, as the demo's table shows it."""

    run_id: str
    wall_seconds: float = 0.0
    components: list[PluginStats] = field(default_factory=list)
    stalls_broken: int = 0

    def __str__(self) -> str:
        return self.table()

    def table(self) -> str:
        """One line per plugin, loader and saver: chunks, items, compute seconds and MB/s."""
        lines = [f"{'component':<28}{'kind':<8}{'chunks':>8}{'items':>12}{'seconds':>10}"
                 f"{'MB/s':>10}"]
        for s in self.components:
            # below a millisecond of compute a rate means nothing (a source handing over data)
            rate = f"{s.mb_per_s:>10.1f}" if s.compute_seconds >= 1e-3 else f"{'-':>10}"
            lines.append(
                f"{s.name:<28}{s.kind:<8}{s.chunks:>8}{s.items:>12}"
                f"{s.compute_seconds:>10.3f}{rate}"
            )
        lines.append(f"wall time {self.wall_seconds:.3f} s")
        return "\n".join(lines)

    def to_dataframe(self) -> Any:
        """The table as a pandas DataFrame, one row per component."""
        import pandas as pd

        return pd.DataFrame(
            [
                dict(
                    component=s.name,
                    kind=s.kind,
                    chunks=s.chunks,
                    items=s.items,
                    seconds=s.compute_seconds,
                    mb_per_s=s.mb_per_s,
                )
                for s in self.components
            ]
        )


class Pipeline:
    """Runs plugins, loaders and savers for one run; yields the targets' chunks."""

    def __init__(
        self,
        plugins: Sequence[Plugin],
        targets: Sequence[str],
        *,
        run_id: str = "",
        loaders: Sequence[Producer] = (),
        savers: Sequence[Consumer] = (),
        capacity_bytes: int = DEFAULT_CAPACITY_BYTES,
        max_workers: int = 1,
        n_threads: int | None = None,
        progress_bar: bool = False,
        process_pool: ProcessPool | None = None,
        thread_executor: cf.ThreadPoolExecutor | None = None,
    ) -> None:
        self.plugins = list(plugins)
        self.targets = tuple(targets)
        self.run_id = run_id
        self.loaders = list(loaders)
        self.savers = list(savers)
        self.capacity_bytes = int(capacity_bytes)
        self.max_workers = max(1, int(max_workers))
        self.n_threads = n_threads or thread_count(self.max_workers)
        #: the Context's threads (kept between its requests), or None: the pipeline's own
        self.thread_executor = thread_executor
        self.progress_bar = progress_bar
        #: workers of parallel="process" plugins: the Context's (shared by its requests), or
        #: made here on first use and closed with the pipeline
        self.process_pool = process_pool
        self._own_process_pool = False
        self._in_workers: list[Plugin] = []
        self.summary = PipelineSummary(run_id=run_id)
        self._tasks: list[asyncio.Task] = []
        self._error: BaseException | None = None
        self._started = False
        # set when the pipeline stops: a batch on a thread ends after its current step
        self._stopping = threading.Event()
        self._finished = False
        self._pool: ThreadPool | None = None
        self._channels: dict[str, Channel] = {}
        self._target_readers: dict[str, ChannelReader] = {}
        self._target_sync: InputSync | None = None
        self._t0 = 0.0
        self._bar: Any = None
        self._check_graph()

    # ------------------------------------------------------------------ building
    def _check_graph(self) -> None:
        provided: dict[str, str] = {}
        components: list[Any] = [*self.plugins, *self.loaders]
        for component in components:
            for dt in component.provides:
                if dt in provided:
                    raise InvalidConfiguration(
                        f"data type {dt!r} is produced twice in one pipeline: by "
                        f"{provided[dt]} and by {component.name}"
                    )
                provided[dt] = component.name
        for plugin in self.plugins:
            for dt in plugin.depends_on:
                if dt not in provided:
                    raise InvalidConfiguration(
                        f"plugin {plugin.name} depends on {dt!r}, which nothing in the "
                        f"pipeline produces",
                        plugin=plugin.name,
                    )
        for dt in self.targets:
            if dt not in provided:
                raise InvalidConfiguration(f"target {dt!r} is produced by nothing in the pipeline")
        self._provided_by = provided

    def _kind_of(self, data_type: str) -> str:
        for plugin in self.plugins:
            if data_type in plugin.provides:
                return plugin.data_kind_for(data_type)
        for loader in self.loaders:
            if data_type in loader.provides:
                return loader.data_kind_for(data_type)  # type: ignore[attr-defined]
        raise KeyError(data_type)

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self._t0 = time.perf_counter()
        monitor = self._monitor = StallMonitor()
        monitor.on_deadlock.append(self._fail)
        components: list[Any] = [*self.plugins, *self.loaders]
        for component in components:
            for dt in component.provides:
                self._channels[dt] = Channel(dt, self.capacity_bytes, monitor)
        # Readers first (a reader must exist before its channel is written).
        syncs = {}
        for plugin in self.plugins:
            if plugin.depends_on:
                readers = {dt: self._channels[dt].reader() for dt in plugin.depends_on}
                syncs[plugin.name] = InputSync(readers, plugin.dependencies_by_kind(),
                                                consumer=plugin.name)
        saver_readers = [(s, self._channels[s.data_type].reader()) for s in self.savers]
        self._target_readers = {dt: self._channels[dt].reader() for dt in self.targets}
        kinds: dict[str, list[str]] = {}
        for dt in self.targets:
            kinds.setdefault(self._kind_of(dt), []).append(dt)
        if len(kinds) > 1:
            raise InvalidConfiguration(
                f"targets {list(self.targets)} are of several data kinds {list(kinds)}; "
                f"request one kind at a time"
            )
        if len(self.targets) > 1:
            self._target_sync = InputSync(self._target_readers, kinds)
        # the plugins whose kernels forked workers inherit (ProcessPool.start)
        self._in_workers = [p for p in self.plugins if p.parallel == "process"]
        self._pool = ThreadPool(self.n_threads, self.thread_executor)
        monitor.task_started()  # the consumer of the targets
        for plugin in self.plugins:
            stats = PluginStats(plugin.name)
            self.summary.components.append(stats)
            outs = [self._channels[dt] for dt in plugin.provides]
            if plugin.depends_on:
                coro = self._run_compute(plugin, syncs[plugin.name], outs, stats)
            elif plugin.has_native_iterate():
                coro = self._run_native_source(plugin, outs, stats)
            else:
                coro = self._run_strax_source(plugin, outs, stats)
            self._spawn(coro, plugin.name, outs)
        for loader in self.loaders:
            stats = PluginStats(loader.name, kind="load")
            self.summary.components.append(stats)
            outs = [self._channels[dt] for dt in loader.provides]
            self._spawn(self._run_loader(loader, outs, stats), loader.name, outs)
        for saver, reader in saver_readers:
            self._spawn(self._run_saver(saver, reader), saver.name, [])
        if self.progress_bar:
            self._bar = ProgressBar(f"{self.run_id} {'+'.join(self.targets)}",
                                    self._known_extent())

    def _known_extent(self) -> tuple[int, int] | None:
        """The run's time extent if loaded data tells it beforehand (for the progress bar)."""
        for loader in self.loaders:
            selected = getattr(loader, "selected_chunks", None)
            chunks = selected() if selected is not None else []
            if chunks:
                return chunks[0][1]["start"], chunks[-1][1]["end"]
        return None

    def _spawn(self, coro: Any, name: str, outs: list[Channel]) -> None:
        self._monitor.task_started()  # counted from now: it may not have run yet
        task = asyncio.get_running_loop().create_task(self._guard(coro, outs), name=name)
        # a task cancelled before it ran (the request failed at once) never awaited ``coro``:
        # closing it says so to Python, which would warn "never awaited"
        task.add_done_callback(lambda _: coro.close())
        self._tasks.append(task)

    async def _guard(self, coro: Any, outs: list[Channel]) -> None:
        try:
            await coro
            for channel in outs:
                channel.close()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - any failure stops the pipeline
            self._fail(error)
        finally:
            self._monitor.task_finished()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current and not task.done():
                task.cancel()
        for reader in self._target_readers.values():
            reader._channel.close()

    # ------------------------------------------------------------------ producers
    async def _emit(
        self, outs: list[Channel], outputs: dict[str, Chunk], stats: PluginStats
    ) -> None:
        for channel in outs:
            chunk = outputs[channel.data_type]
            stats.chunks += 1
            stats.items += len(chunk)
            stats.bytes_out += chunk.nbytes
            try:
                await channel.put(chunk)
            except AsyncstraxError as error:  # a gap or overlap between this one's chunks
                raise error.add_context(plugin=stats.name)

    async def _run_compute(
        self, plugin: Plugin, sync: InputSync, outs: list[Channel], stats: PluginStats
    ) -> None:
        parallel = bool(plugin.parallel) and self.max_workers > 1
        await self._open_inline_savers(plugin)
        if parallel and plugin.parallel == "process":
            try:
                await self._run_compute_in_workers(plugin, sync, outs, stats)
            except ProcessPoolClosed as error:  # the context was closed during the request
                raise error.add_context(
                    plugin=plugin.name, run_id=self.run_id,
                    data_type=None if plugin.multi_output else plugin.provides[0])
            return
        lane = ComputeLane(self._pool, self.max_workers if parallel else 1, stats)  # type: ignore[arg-type]
        stopping = self._stopping
        await self._compute_loop(plugin, sync, outs, stats, lane, parallel,
                                 lambda batch: lane.submit(_process_batch, plugin, batch, stopping))

    async def _run_compute_in_workers(
        self, plugin: Plugin, sync: InputSync, outs: list[Channel], stats: PluginStats
    ) -> None:
        if self.process_pool is None:
            self.process_pool = ProcessPool(self.max_workers)
            self._own_process_pool = True
        await self.process_pool.astart(self._in_workers)
        key = self.process_pool.register(plugin)
        lane = ProcessLane(self.process_pool, self.max_workers, stats)
        try:
            await self._compute_loop(plugin, sync, outs, stats, lane, True,
                                     lambda batch: lane.submit_batch(key, batch))
        finally:
            await lane.aclose()
            self.process_pool.unregister(key)

    async def _open_inline_savers(self, plugin: Plugin) -> None:
        """A fused chain that saves data types itself needs their savers' folders first."""
        inline = getattr(plugin, "inline", None)
        if not inline:
            return
        savers = {s.data_type: s for s in self.savers}
        for data_type, spec in inline.items():
            saver = savers.get(data_type)
            spec.folder = (None if saver is None
                           else await saver.ensure_open(self._pool))  # type: ignore[attr-defined]

    async def _compute_loop(
        self, plugin: Plugin, sync: InputSync, outs: list[Channel], stats: PluginStats,
        lane: ComputeLane | ProcessLane, parallel: bool, submit: Any,
    ) -> None:
        # setup() and warm_up() now, while upstream makes the first chunk
        if not (parallel and plugin.parallel == "process"):  # workers do their own
            await self._pool.submit(_ready, plugin)  # type: ignore[union-attr]
        exhausted = False
        # While a parallel plugin's earlier steps compute, it also waits for its next input:
        # waiting only for the oldest result would leave the lane one step deep whenever the
        # input arrives after the result is awaited (always, when a chunk fills the upstream
        # channel). This wait is speculative: it does not count as blocked for the stall
        # monitor, and it is cancelled (no chunk taken) when the plugin has nothing else left.
        waiting: asyncio.Task | None = None
        try:
            while True:
                waiting, exhausted = await self._submit_steps(
                    sync, stats, lane, parallel, submit, waiting, exhausted)
                if lane.empty:
                    return
                if parallel and not exhausted and not lane.full:
                    if waiting is None:
                        waiting = asyncio.ensure_future(sync.next_work(counted=False))
                    await asyncio.wait((waiting, lane.oldest),
                                       return_when=asyncio.FIRST_COMPLETED)
                    if waiting.done():
                        continue
                results = await lane.next_result()
                while results:
                    await self._emit(outs, results.pop(0), stats)
        finally:
            lane.abandon()
            if waiting is not None:
                if not waiting.done():
                    waiting.cancel()
                    await asyncio.wait((waiting,))
                if not waiting.cancelled():
                    waiting.exception()  # reported by whoever failed first, not as unretrieved

    @staticmethod
    async def _submit_steps(
        sync: InputSync, stats: PluginStats, lane: ComputeLane | ProcessLane, parallel: bool,
        submit: Any, waiting: asyncio.Task | None, exhausted: bool,
    ) -> tuple[asyncio.Task | None, bool]:
        """Submit every step the lane has room for and the input allows."""
        while not exhausted and not lane.full:
            if waiting is not None and not waiting.done() and lane.empty:
                # Nothing computes any more: wait as a blocked task (the stall monitor must
                # see it), keeping what the speculative wait got, if anything.
                waiting.cancel()
                await asyncio.wait((waiting,))
            if waiting is not None:
                if not waiting.done():
                    break
                work = None if waiting.cancelled() else waiting.result()
                cancelled = waiting.cancelled()
                waiting = None
                if cancelled:
                    continue
            elif lane.empty:
                work = await sync.next_work()
            else:
                work = sync.next_work_nowait()
            if not isinstance(work, Work):
                exhausted = work is None
                break
            batch = [work]
            nbytes = work.nbytes
            while len(batch) < BATCH_MAX_STEPS and nbytes < BATCH_MAX_BYTES and not (
                parallel and nbytes > 0 and not lane.empty
            ):
                more = sync.next_work_nowait()
                if not isinstance(more, Work):
                    break
                batch.append(more)
                nbytes += more.nbytes
            stats.bytes_in += nbytes
            submit(batch)
            # The lane holds the batch now; names left pointing at it would keep its
            # input arrays alive until the next step arrives (memory, not correctness).
            work = more = batch = None  # type: ignore[assignment]
        return waiting, exhausted

    async def _run_native_source(
        self, plugin: Plugin, outs: list[Channel], stats: PluginStats
    ) -> None:
        lane = ComputeLane(self._pool, 1, stats)  # type: ignore[arg-type]
        lane.submit(_ready, plugin)
        await lane.next_result()
        chunk_i = 0
        iterator = plugin.iterate()
        try:
            async for item in iterator:
                try:
                    outputs = plugin.fix_output(item, None, None, chunk_i)  # type: ignore[arg-type]
                except AsyncstraxError as error:
                    raise error.add_context(plugin=plugin.name, chunk_i=chunk_i)
                await self._emit(outs, outputs, stats)
                del item, outputs  # not kept while the next one is made
                chunk_i += 1
        except (AsyncstraxError, asyncio.CancelledError):
            raise
        except Exception as error:
            raise _plugin_error(plugin, error, chunk_i, None) from error
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _run_strax_source(
        self, plugin: Plugin, outs: list[Channel], stats: PluginStats
    ) -> None:
        lane = ComputeLane(self._pool, 1, stats)  # type: ignore[arg-type]
        chunk_i = 0
        while True:
            lane.submit(_source_batch, plugin, chunk_i, self._stopping)
            outputs_list, finished = await lane.next_result()
            made = len(outputs_list)
            while outputs_list:  # emitted chunks are not kept here while the next is made
                await self._emit(outs, outputs_list.pop(0), stats)
            chunk_i += made
            if finished:
                return
            if not made:
                await asyncio.sleep(plugin.source_poll_interval)

    async def _run_loader(self, loader: Producer, outs: list[Channel], stats: PluginStats) -> None:
        async for outputs in loader.chunks(self._pool):
            await self._emit(outs, outputs, stats)
            del outputs  # not kept while the next chunk is read

    async def _run_saver(self, saver: Consumer, reader: ChannelReader) -> None:
        try:
            await saver.consume(reader, self._pool)  # type: ignore[arg-type]
        except BaseException as error:
            # Record the pipeline's first error (the real cause), not our own cancellation.
            await asyncio.shield(saver.abort(self._error or error))
            raise

    # ------------------------------------------------------------------ consuming
    def __aiter__(self) -> Pipeline:
        return self

    async def __anext__(self) -> Chunk:
        if self._finished:
            raise StopAsyncIteration
        self._start()
        chunk = await self._next_target_chunk()
        if chunk is None:
            await self._finish()
            raise StopAsyncIteration
        if self._bar is not None:
            self._bar.update(chunk)
        return chunk

    async def _next_target_chunk(self) -> Chunk | None:
        if self._target_sync is None:
            chunk = await self._target_readers[self.targets[0]].get()
            if self._error is not None:
                await self._finish()
            return chunk
        try:
            work = await self._target_sync.next_work()
        except ChunkContinuityError:
            if self._error is None:
                raise
            work = None  # a producer failed and its channel was closed: report that failure
        if self._error is not None:
            await self._finish()
        if work is None or work.flush:
            return None
        pieces = work.parts[next(iter(work.parts))]
        arrays = [concat_arrays(arrs) for _, arrs in pieces]
        data = merge_arrays(arrays, [dt for dt, _ in pieces]) if len(arrays) > 1 else arrays[0]
        first = self._channels[self.targets[0]]
        return Chunk(
            data_type="+".join(self.targets),
            data_kind=self._kind_of(first.data_type),
            dtype=data.dtype,
            run_id=self.run_id,
            start=work.start,
            end=work.end,
            data=data,
        )

    async def _finish(self) -> None:
        """Wait for every task, stop the threads, and raise the first error if there was one."""
        if self._finished:
            if self._error is not None:
                raise self._error
            return
        self._finished = True
        try:
            if self._error is None:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            await self._cleanup()
        if self._error is not None:
            raise self._error

    async def _cleanup(self) -> None:
        try:
            await self._cleanup_steps()
        except GeneratorExit:
            # The coroutine running this is being destroyed (an async iterator left
            # unfinished when its loop closed): no more awaiting, so let go without waiting.
            self._abandon()
            raise

    def _abandon(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            if not task.done():
                task.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self.process_pool is not None:
            for plugin in self._in_workers:
                self.process_pool.forget(plugin)
            if self._own_process_pool:
                self.process_pool.shutdown(kill=True)
            else:
                self.process_pool.trim()
        if self._bar is not None:
            self._bar.close()

    async def _cleanup_steps(self) -> None:
        self._stopping.set()
        # Tasks cancelled one by one look, to the stall monitor, like a graph that cannot
        # move: that is the stop itself, not a deadlock to report as the run's failure.
        if hasattr(self, "_monitor"):
            self._monitor.on_deadlock.clear()
        for task in self._tasks:
            if not task.done():
                task.cancel()
        while True:
            try:
                await asyncio.gather(*self._tasks, return_exceptions=True)
                break
            except asyncio.CancelledError:
                continue
        if self._pool is not None:
            await self._pool.drain()
            self._pool.shutdown()
        if self.process_pool is not None:
            for plugin in self._in_workers:  # registered when the pool started
                self.process_pool.forget(plugin)
            if self._own_process_pool:
                await self.process_pool.aclose(kill=self._error is not None)
            else:
                self.process_pool.trim()  # idle input segments: memory kept for no one
        if self._bar is not None:
            self._bar.close()
        self.summary.wall_seconds = time.perf_counter() - self._t0
        self.summary.stalls_broken = getattr(self, "_monitor", StallMonitor()).stalls_broken

    async def aclose(self) -> None:
        """Stop the pipeline (if still running) and release its tasks and threads."""
        if not self._started or self._finished:
            return
        self._finished = True
        await self._cleanup()

    async def run(self) -> PipelineSummary:
        """Drive the pipeline to the end, dropping the targets' data (savers still save)."""
        try:
            async for _ in self:
                pass
        finally:
            await self.aclose()
        return self.summary

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def statistics(self) -> dict[str, Any]:
        """Channel statistics by data type (a snapshot)."""
        return {dt: ch.statistics() for dt, ch in self._channels.items()}


# ---------------------------------------------------------------------- worker-side functions
def _run_hook(plugin: Plugin, hook: str, done_flag: str) -> None:
    """Run a plugin's setup()/warm_up() once per instance, its errors naming the plugin."""
    if plugin.__dict__.get(done_flag):
        return
    try:
        getattr(plugin, hook)()
    except AsyncstraxError as error:
        raise error.add_context(plugin=plugin.name, run_id=plugin.run_id)
    except Exception as error:
        raise PluginError(
            f"{hook}() raised {type(error).__name__}: {error}",
            plugin=plugin.name,
            run_id=plugin.run_id,
        ) from error
    plugin.__dict__[done_flag] = True


def _setup(plugin: Plugin) -> None:
    _run_hook(plugin, "setup", "_setup_done")


def _ready(plugin: Plugin) -> None:
    """setup() and warm_up(), once per plugin instance (on a worker thread or process)."""
    _run_hook(plugin, "setup", "_setup_done")
    _run_hook(plugin, "warm_up", "_warmed_up")


def _process_batch(plugin: Plugin, batch: list[Work],
                   stopping: Any = None) -> list[dict[str, Chunk]]:
    """Compute the steps of a batch; once ``stopping`` is set (a ``threading.Event``, or in a
    process worker the parent's stop word) the rest are skipped (their results would be
    dropped), so a cancelled request waits for one step, not a batch."""
    _setup(plugin)
    results: list[dict[str, Chunk]] = []
    for work in batch:
        if stopping is not None and stopping.is_set():
            break
        try:
            results.extend(plugin.process_work(work))
        except AsyncstraxError as error:
            raise error.add_context(
                plugin=plugin.name,
                data_type=None if plugin.multi_output else plugin.provides[0],
                run_id=plugin.run_id,
                chunk_i=work.chunk_i,
                time_range=(work.start, work.end),
            )
        except Exception as error:
            raise _plugin_error(plugin, error, work.chunk_i, (work.start, work.end)) from error
    return results


def _source_batch(plugin: Plugin, first_chunk_i: int, stopping: threading.Event | None = None,
                  ) -> tuple[list[dict[str, Chunk]], bool]:
    """Compute every ready chunk of a strax-style source (up to a batch, or until
    ``stopping``); report if finished."""
    _ready(plugin)
    results: list[dict[str, Chunk]] = []
    nbytes = 0
    chunk_i = first_chunk_i
    try:
        while len(results) < BATCH_MAX_STEPS and nbytes < BATCH_MAX_BYTES:
            if stopping is not None and stopping.is_set():
                break
            if not plugin.is_ready(chunk_i):
                return results, (not results and plugin.source_finished())
            result = plugin.call_compute({}, 0, 0, chunk_i) if plugin._compute_args else (
                plugin.compute()
            )
            outputs = plugin.fix_output(result, None, None, chunk_i)  # type: ignore[arg-type]
            nbytes += sum(c.nbytes for c in outputs.values())
            results.append(outputs)
            chunk_i += 1
    except AsyncstraxError as error:
        raise error.add_context(plugin=plugin.name, run_id=plugin.run_id, chunk_i=chunk_i)
    except Exception as error:
        raise _plugin_error(plugin, error, chunk_i, None) from error
    return results, False


def _plugin_error(
    plugin: Plugin, error: BaseException, chunk_i: int, time_range: tuple[int, int] | None
) -> PluginError:
    return PluginError(
        f"compute raised {type(error).__name__}: {error}",
        plugin=plugin.name,
        data_type=None if plugin.multi_output else plugin.provides[0],
        run_id=plugin.run_id,
        chunk_i=chunk_i,
        time_range=time_range,
    )
