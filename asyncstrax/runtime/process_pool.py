"""``parallel="process"``: plugin steps computed in worker processes, arrays in shared memory.

A ``ProcessPool`` is a ``concurrent.futures.ProcessPoolExecutor`` driven from asyncio, with:

- **start-up once**: on Linux workers are forked (``start_method``, see
  ``resolve_start_method``) when ``start()`` / ``await astart()`` is called, holding numba's
  compiler lock, after the parent has set up numba's target and warmed the plugins it is
  given, so workers inherit modules and kernels; a forked worker first lets go of the
  parent's loop, signal handlers, sockets and segment mappings (``forked.py``). Spawned
  workers import ``asyncstrax`` (and any ``preload`` modules) when they start.
  ``await pool.warm_up(key, ...)`` makes every worker build the plugins, run their
  ``setup()`` and their optional ``warm_up()`` hook (load numba kernels from the cache by
  calling them on tiny inputs), one worker each (a barrier makes sure of it);
- **plugins sent once**: ``register(plugin) -> key`` pickles the configured plugin (its
  ``deps`` replaced by light stand-ins carrying dtypes and data kinds). Jobs carry that key;
  the pickled bytes ride along only until every worker has acknowledged the key (and on the
  rare miss, when a worker evicted it from its small LRU registry, the job is sent again with
  the bytes). Each worker runs ``setup()`` once per plugin. Parallel plugins are stateless
  across chunks (strax's rule), so any worker may compute any step;
- **arrays through shared memory**: the parent copies a batch's input arrays into one segment
  (``shm.py``; the copy runs on a helper thread, never on the event loop), and only
  descriptors ``(offset, dtype, length)`` are pickled. The worker views them without a copy,
  calls ``asyncstrax.runtime.pipeline._process_batch`` (so errors are the thread path's
  errors), and writes every output array into one segment it creates under a name the parent
  chose. The parent maps that segment and unlinks its name at once: outputs are **not
  copied**; their memory lives exactly as long as the output chunks (all chunks of one batch
  share one mapping);
- **cleanup whatever happens**: a job's segments are unlinked by a done-callback of its
  ``concurrent.futures`` future, which runs whether the job succeeded, failed, was
  cancelled, or its worker died (the names are known in advance, so a segment created by a
  worker that was killed right after is found too). Cancelling the awaiting task cancels the
  job if it has not started, otherwise its result is dropped and cleaned when it comes.
  Every name starts with ``asx_``; the resource tracker unlinks any survivor if the parent
  itself is killed;
- **faults**: an exception in a worker is re-raised in the parent as the same error the
  thread path raises (``PluginError`` naming plugin, data type and chunk, original exception
  as ``__cause__`` with the remote traceback below it); a worker that dies (SIGKILL, out of
  memory) fails every job in flight with ``WorkerDied`` naming the plugin and chunks, never a
  hang, and the next request gets fresh workers;
- **shutdown**: ``await pool.aclose()`` (or ``shutdown()``; also at interpreter exit through
  ``weakref.finalize``) cancels pending jobs, waits for (or with ``kill=True`` terminates)
  running ones, joins every worker and unlinks any segment left.

``ProcessLane`` is ``offload.ComputeLane``'s twin for one plugin: an ordered window of
in-flight batches (``submit_batch(plugin_key, batch)``, ``await next_result()``, ``full``,
``empty``), results delivered in submission order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import multiprocessing as mp
import multiprocessing.util as mp_util
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from typing import Any

import numpy as np

from ..chunk import Chunk
from ..errors import AsyncstraxError, InvalidConfiguration, PluginError
from ..plugins.base import Plugin, Work
from ..storage.inline import WrittenChunk, written_from_meta
from . import shm
from .offload import PluginStats, Window, retrieve_exception

__all__ = ["ProcessLane", "ProcessPool", "ProcessPoolClosed", "WorkerDied"]

#: inputs at least this big are copied into shared memory on a helper thread
PACK_ON_THREAD_BYTES = 256 * 1024
#: plugins a worker keeps (least recently used ones are dropped, and sent again if needed)
WORKER_REGISTRY_SIZE = 64
#: input mappings a worker keeps (segments are reused), at most so many and so many bytes
WORKER_MAPS = 8
WORKER_MAPS_BYTES = 512 * 1024**2
#: how long warm-up waits for every worker to take its share
WARM_UP_TIMEOUT = 120.0
#: bytes at the start of an input segment for the parent's word to the worker: byte 0 set
#: means "stop": the batch's request was cancelled, so its remaining steps are skipped
CONTROL_BYTES = shm.ALIGN


class WorkerDied(PluginError):
    """A worker process died (killed by a signal, out of memory, crashed) during a step."""


class ProcessPoolClosed(AsyncstraxError):
    """A job was submitted to a process pool that is closed."""


# ====================================================================== worker side
_registry: OrderedDict[str, Plugin] = OrderedDict()
_barrier: Any = None
_maps: OrderedDict[str, Any] = OrderedDict()


def _worker_init(preload: tuple[str, ...], barrier: Any, forked: bool = False) -> None:
    """Runs once in each worker when it starts."""
    global _barrier
    if forked:
        from .forked import forget_parent

        forget_parent()
    _barrier = barrier
    _exit_with_parent()
    # Ctrl-C reaches the whole process group: the parent handles it (cancellation), the
    # workers must not die of it half-way through a step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import importlib

    from .malloc import tune_malloc

    tune_malloc()  # the worker's threads (blosc, inline saving) share one arena

    for name in preload:
        importlib.import_module(name)


#: how often a worker checks that the process that started it is alive [s]
PARENT_CHECK_SECONDS = 0.5


def _exit_with_parent() -> None:
    """Exit when the parent dies (SIGKILL, OOM killer): an orphaned worker would go on with
    its step and then wait forever for the next, holding memory. A thread polls the parent
    pid; ``prctl(PR_SET_PDEATHSIG)`` would fire when the parent *thread* that forked exits."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="asx-parent-watch", daemon=True).start()


def _worker_map(name: str) -> Any:
    """A mapping of input segment ``name``, kept for the next batch in the same segment (the
    parent reuses its segments), so its pages are not faulted in again."""
    mm = _maps.get(name)
    if mm is not None:
        _maps.move_to_end(name)
        return mm
    mm = _maps[name] = shm.open_segment(name)
    while len(_maps) > 1 and (len(_maps) > WORKER_MAPS
                              or sum(len(m) for m in _maps.values()) > WORKER_MAPS_BYTES):
        _maps.popitem(last=False)  # unmapped once no array views it any more
    return mm


def _worker_plugin(key: str, payload: bytes | None) -> Plugin | None:
    plugin = _registry.get(key)
    if plugin is not None:
        _registry.move_to_end(key)
        return plugin
    if payload is None:
        return None
    plugin = pickle.loads(payload)
    _registry[key] = plugin
    while len(_registry) > WORKER_REGISTRY_SIZE:
        _registry.popitem(last=False)
    return plugin


def _worker_ready(plugin: Plugin) -> None:
    """setup() once per worker per plugin, then the plugin's warm_up() hook."""
    from .pipeline import _ready

    _ready(plugin)


def _worker_warm(jobs: Sequence[tuple[str, bytes]], wait: bool) -> tuple[int, list[str]]:
    """Build and set up plugins here; with ``wait``, hold until every worker has one job."""
    done = []
    for key, payload in jobs:
        plugin = _worker_plugin(key, payload)
        if plugin is not None:
            _worker_ready(plugin)
            done.append(key)
    if wait and _barrier is not None:
        try:
            _barrier.wait(WARM_UP_TIMEOUT)
        except threading.BrokenBarrierError:
            pass
    return os.getpid(), done


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives the trip to the parent, else a RuntimeError carrying its type
    and message. Both ways are tried: an exception class whose ``__init__`` takes other
    arguments than it passes to ``Exception`` pickles but cannot be unpickled, and the parent
    failing to unpickle a result breaks the whole pool."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _worker_run(job: tuple) -> tuple:
    """Compute one batch; returns ("ok", ...), ("missing", pid) or ("error", ...)."""
    key, payload, in_name, work_descs, in_descs, out_name = job
    pid = os.getpid()
    try:
        try:
            plugin = _worker_plugin(key, payload)
        except Exception as error:
            raise PluginError(
                f"cannot rebuild the plugin in a worker process: {type(error).__name__}: "
                f"{error}", plugin=key.split("#")[0]) from error
        if plugin is None:
            return ("missing", pid)
        mm = _worker_map(in_name) if any(n for _, _, n in in_descs) else None
        arrays = shm.map_arrays(None, in_descs, mm=mm)
        batch = [
            Work(chunk_i, start, end,
                 {kind: [(dt, [arrays[i] for i in idx]) for dt, idx in pieces]
                  for kind, pieces in parts.items()},
                 is_last=is_last, flush=flush)
            for chunk_i, start, end, is_last, flush, parts in work_descs
        ]
        del arrays
        from .pipeline import _process_batch

        t0 = time.perf_counter()
        _worker_ready(plugin)
        results = _process_batch(plugin, batch, None if mm is None else _StopWord(mm))
        seconds = time.perf_counter() - t0
        del batch
        out_arrays: list[np.ndarray] = []
        metas = []
        for outputs in results:
            meta = []
            for dt, chunk in outputs.items():
                # a chunk a fused chain saved here goes back as its file entry only
                extra = (chunk.info, chunk.written) if isinstance(chunk, WrittenChunk) else None
                meta.append((dt, chunk.data_kind, chunk.run_id, chunk.start, chunk.end,
                             chunk.subruns, chunk.target_size_mb, extra))
                out_arrays.append(chunk.data)
            metas.append(meta)
        out_descs, out_bytes = shm.write_arrays(out_name, out_arrays)
        return ("ok", pid, seconds, metas, out_descs, out_bytes)
    except BaseException as error:  # noqa: BLE001 - everything goes back to the parent
        cause = error.__cause__
        tb = "".join(traceback.format_exception(cause if cause is not None else error))
        return ("error", pid, _portable(error), None if cause is None else _portable(cause), tb)


class _StopWord:
    """The parent's stop word in an input segment, read as ``_process_batch`` reads a
    ``threading.Event``: checked before each step of the batch."""

    __slots__ = ("mm",)

    def __init__(self, mm: Any) -> None:
        self.mm = mm

    def is_set(self) -> bool:
        return self.mm[0] != 0


# ====================================================================== parent side
class _DepStub:
    """What a worker-side plugin may ask of a dependency: names, dtypes, kinds, config."""

    def __init__(self, plugin: Plugin) -> None:
        self.name = plugin.name
        self.provides = tuple(plugin.provides)
        self.depends_on = tuple(plugin.depends_on)
        self.dtype = plugin.dtype
        self.data_kind = plugin.data_kind
        self.run_id = plugin.run_id
        self.config = dict(plugin.config)
        self.lineage = getattr(plugin, "lineage", None)
        self._version = plugin.version()

    @property
    def multi_output(self) -> bool:
        return len(self.provides) > 1

    def dtype_for(self, data_type: str) -> np.dtype:
        return self.dtype[data_type] if self.multi_output else self.dtype

    def data_kind_for(self, data_type: str) -> str:
        return self.data_kind[data_type] if self.multi_output else self.data_kind

    def version(self, run_id: str | None = None) -> str:
        return self._version


def _pickle_plugin(plugin: Plugin) -> bytes:
    """The configured plugin as a worker gets it: not set up, dependencies as stand-ins."""
    state = dict(plugin.__dict__)
    for name in ("_setup_done", "_warmed_up", "_call_plan"):
        state.pop(name, None)
    stubs: dict[int, _DepStub] = {}
    state["deps"] = {dt: stubs.setdefault(id(dep), _DepStub(dep))
                     for dt, dep in plugin.deps.items()}
    clone = object.__new__(type(plugin))
    clone.__dict__.update(state)
    try:
        return pickle.dumps(clone, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise InvalidConfiguration(
            f"parallel='process' needs a plugin that pickles (its class importable by name, "
            f"its attributes picklable): {type(error).__name__}: {error}",
            plugin=plugin.name,
        ) from error


@dataclass
class _Registered:
    name: str
    data_type: str | None
    run_id: str
    payload: bytes
    dtypes: dict[np.dtype, np.dtype]
    acked: set[int] = field(default_factory=set)


class _Job:
    """One batch on its way to a worker: its segments and their cleanup."""

    __slots__ = ("state", "in_name", "in_mm", "out_name", "out_map", "map_error", "epoch",
                 "_lock", "_cleaned", "_stopped")

    def __init__(self, state: _State) -> None:
        self.state = state
        self.in_name: str | None = None
        self.in_mm: Any = None
        self.out_name = shm.new_name("o")
        self.out_map: Any = None
        self.map_error: BaseException | None = None
        self.epoch = state.epoch
        self._lock = threading.Lock()
        self._cleaned = False
        self._stopped = False
        state.live.add(self.out_name)

    def on_worker_done(self, future: cf.Future) -> None:
        """Done-callback of the worker job: map a successful output, then release all."""
        ok = False
        try:
            if not future.cancelled() and future.exception() is None:
                result = future.result()
                ok = result[0] in ("ok", "missing")
                if result[0] == "ok" and any(n for _, _, n in result[4]):
                    self.out_map = shm.open_segment(self.out_name)
        except BaseException as error:  # noqa: BLE001 - reported by the awaiting side
            self.map_error = error
            ok = False
        finally:
            self.cleanup(ok)

    def stop(self) -> None:
        """Tell the worker to skip the batch's remaining steps (its request was cancelled).
        Only while the job holds its segment: once cleaned up, the segment may be another
        job's."""
        with self._lock:
            self._stopped = True
            if not self._cleaned and self.in_mm is not None:
                self.in_mm[0] = 1

    def cleanup(self, ok: Any = False) -> None:
        """Input segment back to the ring (if all went well and the job was not stopped) or
        unlinked; output unlinked (a mapped output lives on in its chunks). Any failure
        empties the ring."""
        with self._lock:
            if self._cleaned:
                return
            self._cleaned = True
        ok = ok is True
        state = self.state
        if self.in_name is not None:
            # A stopped job's request is over (and may have trimmed the ring already): its
            # segment is memory kept for no one.
            state.release(self.in_name,
                          reuse=ok and not self._stopped and self.epoch == state.epoch)
        shm.unlink_segment(self.out_name)
        state.live.discard(self.out_name)
        if not ok:
            state.failed()


class _State:
    """Executors and segments: what the finalizer needs (no reference to the pool itself).

    Input segments form a ring: a segment whose job went well is reused for a later batch
    (pages already touched: filling fresh shared memory costs several times more than
    reusing it). At most ``max_free`` idle segments are kept; any failure unlinks the idle
    ones and bumps ``epoch`` so that segments of jobs in flight are unlinked when they end.
    """

    def __init__(self, max_free: int) -> None:
        #: the process that owns the workers and segments: a forked copy of this state
        #: (a Context used in a forked child) must never stop or unlink them
        self.pid = os.getpid()
        self.executor: cf.ProcessPoolExecutor | None = None
        self.packer: cf.ThreadPoolExecutor | None = None
        self.live: set[str] = set()  # output names a worker may create
        self.owned: dict[str, Any] = {}  # input segments (in use or idle): name -> mmap
        self.free: list[str] = []
        self.max_free = max_free
        self.epoch = 0
        self.closed = False
        #: broken executors with their manager threads and worker processes, joined at
        #: shutdown (an executor shut down without waiting forgets both)
        self.retired: list[tuple[cf.ProcessPoolExecutor, list[Any]]] = []
        self.lock = threading.Lock()

    def take(self, size: int) -> tuple[str, Any]:
        """An idle input segment of at least ``size`` bytes, or a new one."""
        with self.lock:
            fits = [n for n in self.free if len(self.owned[n]) >= size]
            if fits:
                name = min(fits, key=lambda n: len(self.owned[n]))
                self.free.remove(name)
                return name, self.owned[name]
            name = shm.new_name("i")
            self.owned[name] = None  # so that close() unlinks it even if creation fails midway
        try:
            mm = shm.create_segment(name, -(-int(size * 1.25) // (1 << 20)) << 20)
        except BaseException:
            with self.lock:
                self.owned.pop(name, None)
            raise
        with self.lock:
            if name in self.owned:
                self.owned[name] = mm
                return name, mm
        shm.unlink_segment(name)  # closed meanwhile
        raise ProcessPoolClosed("the process pool is closed")

    def release(self, name: str, reuse: bool) -> None:
        with self.lock:
            if name not in self.owned:
                return
            if reuse and not self.closed:
                self.free.append(name)
                if len(self.free) <= self.max_free:
                    return
                name = min(self.free, key=lambda n: len(self.owned[n]))
                self.free.remove(name)
            self.owned.pop(name, None)
        shm.unlink_segment(name)

    def failed(self) -> None:
        with self.lock:
            self.epoch += 1
            drop, self.free = self.free, []
            for name in drop:
                self.owned.pop(name, None)
        for name in drop:
            shm.unlink_segment(name)

    def shutdown(self, kill: bool = False) -> None:
        self.closed = True
        if os.getpid() != self.pid:  # the parent's workers and segments: leave them be
            self.executor = self.packer = None
            self.retired.clear()
            return
        executor, self.executor = self.executor, None
        stopping = list(self.retired)
        if executor is not None:
            stopping.append((executor, _worker_processes(executor)))
        for old, processes in stopping:
            if kill:
                _terminate(processes)
            try:
                old.shutdown(wait=True, cancel_futures=True)
            except Exception:  # pragma: no cover - at interpreter exit
                pass
            _join(processes)
        self.retired.clear()
        packer, self.packer = self.packer, None
        if packer is not None:
            packer.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            names = [*self.owned, *self.live]
            self.owned.clear()
            self.free.clear()
            self.live.clear()
        for name in names:
            shm.unlink_segment(name)


def resolve_start_method(method: str | None) -> str:
    """``None``: what ``multiprocessing.set_start_method`` chose, else ``fork`` where there is
    one (Linux, macOS is left out: its system libraries are not fork-safe), else ``spawn``."""
    if method is None:
        method = mp.get_start_method(allow_none=True)  # does not fix the default
    if method is None:
        method = ("fork" if sys.platform.startswith("linux")
                  and "fork" in mp.get_all_start_methods() else "spawn")
    if method not in mp.get_all_start_methods():
        raise InvalidConfiguration(
            f"process start method {method!r} is not available here; choose one of "
            f"{mp.get_all_start_methods()}")
    return method


def _worker_processes(executor: cf.ProcessPoolExecutor) -> list[Any]:
    """The executor's manager thread, then its worker processes: what must end before the
    pool is gone. concurrent.futures has no public way (before 3.14) to reach them."""
    thread = getattr(executor, "_executor_manager_thread", None)
    return ([thread] if thread is not None else []) + list(
        (getattr(executor, "_processes", None) or {}).values())


def _exited(pid: int) -> bool:
    """A worker that exited, as /proc shows it (Linux): a zombie, or gone. ``exitcode`` alone
    misses one that the executor's manager thread is reaping at the same moment (its waitpid
    wins, ours sees no child), before the executor is marked broken."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return sys.platform.startswith("linux")
    except (OSError, IndexError):  # reaped while read, or an unexpected format
        return False


def _terminate(processes: list[Any]) -> None:
    for process in processes:
        if isinstance(process, mp.process.BaseProcess) and process.is_alive():
            process.terminate()


def _join(processes: list[Any], timeout: float = 10.0) -> None:
    """Wait for the manager thread (a broken pool's terminates and reaps its workers; joining
    them beside it races for their exit status), then for the workers."""
    deadline = time.monotonic() + timeout
    for item in processes:
        item.join(max(0.0, deadline - time.monotonic()))
        if isinstance(item, mp.process.BaseProcess) and item.is_alive():  # pragma: no cover
            item.kill()  # a worker that ignored SIGTERM
            item.join(1.0)


def _describe(batch: Sequence[Work]) -> tuple[list[np.ndarray], list[tuple]]:
    """Flatten a batch's arrays; describe its Work items by array index."""
    arrays: list[np.ndarray] = []
    descs = []
    for w in batch:
        parts = {}
        for kind, pieces in w.parts.items():
            described = []
            for dt, arrs in pieces:
                described.append((dt, list(range(len(arrays), len(arrays) + len(arrs)))))
                arrays.extend(arrs)
            parts[kind] = described
        descs.append((w.chunk_i, w.start, w.end, w.is_last, w.flush, parts))
    return arrays, descs


@dataclass
class BatchResult:
    """What one batch gave: output chunks, worker compute time, bytes moved."""

    outputs: list[dict[str, Chunk]]
    seconds: float
    bytes_in: int  # copied into shared memory by the parent
    bytes_out: int  # written into shared memory by the worker (not copied again)


class ProcessPool:
    """Worker processes for ``parallel="process"`` plugins; see the module docstring."""

    def __init__(self, n_workers: int, *, preload: Iterable[str] = ("asyncstrax",),
                 start_method: str | None = None) -> None:
        self.n_workers = max(1, int(n_workers))
        self.preload = tuple(preload)
        self.start_method = resolve_start_method(start_method)
        self._state = _State(max_free=self.n_workers + 2)
        self._plugins: dict[str, _Registered] = {}
        self._keys = itertools.count()
        self._closed = False
        self._barrier: Any = None
        self._start_lock = threading.Lock()
        self._by_plugin: dict[int, tuple[Plugin, str]] = {}
        self._finalizer = weakref.finalize(self, self._state.shutdown, True)
        # multiprocessing's children leave through os._exit, without atexit, once they have
        # joined their own children: a pool started in one (a Context used in a forked
        # worker) must stop before that join, or the child waits for its workers forever
        self._mp_finalizer = mp_util.Finalize(self, self._state.shutdown, args=(True,),
                                              exitpriority=10)

    # ------------------------------------------------------------------ life cycle
    @property
    def started(self) -> bool:
        return self._state.executor is not None and not self._drop_if_broken()

    def _drop_if_broken(self) -> bool:
        """Retire the executor if a worker died since the last job (killed while idle, say):
        the next request then gets fresh workers instead of the old executor's failure."""
        executor = self._state.executor
        if executor is None:
            return False
        processes = getattr(executor, "_processes", None) or {}
        if getattr(executor, "_broken", False) or any(
                p.exitcode is not None or _exited(pid) for pid, p in list(processes.items())):
            self._retire(executor)
            return True
        return False

    def start(self, plugins: Sequence[Plugin] = ()) -> None:
        """Create the workers (idempotent; also after a worker died, with fresh ones).

        Forked workers inherit ``plugins`` registered, set up and warmed up (their kernels
        loaded) here first. It blocks (about 0.4 s in a fresh process when forking): from a
        coroutine, ``await astart()``."""
        with self._start_lock:
            if self._closed:
                raise ProcessPoolClosed("the process pool is closed")
            if self._state.executor is not None and not self._drop_if_broken():
                return
            ctx = mp.get_context(self.start_method)
            forked = self.start_method == "fork"
            inherited: list[str] = []
            if forked:
                from .forked import prepare_parent

                def set_up() -> None:
                    # Built from the bytes a worker would get, set up and warmed here: every
                    # worker inherits them ready (setup() runs once, not once per worker).
                    for plugin in plugins:
                        key = self.register(plugin)
                        _registry[key] = pickle.loads(self._plugins[key].payload)
                        _worker_ready(_registry[key])
                        inherited.append(key)

                prepare_parent(set_up)
                # Workers register the segments they create with the parent's resource
                # tracker; forked before it runs, each would start a tracker of its own.
                resource_tracker.ensure_running()
            self._barrier = ctx.Barrier(self.n_workers)
            executor = cf.ProcessPoolExecutor(
                self.n_workers, mp_context=ctx, initializer=_worker_init,
                initargs=(self.preload, self._barrier, forked),
            )
            if forked:
                from .forked import no_compilation

                # concurrent.futures forks every worker at the first submit: do it now,
                # while no thread of ours is inside numba or LLVM (whose locks a worker
                # would inherit held).
                with no_compilation():
                    executor.submit(os.getpid)
                for key in inherited:  # the parent computes none of them itself
                    _registry.pop(key, None)
            self._state.executor = executor
            self._state.packer = cf.ThreadPoolExecutor(
                min(4, self.n_workers), thread_name_prefix="asx-shm-pack")
            for reg in self._plugins.values():
                reg.acked.clear()

    async def astart(self, plugins: Sequence[Plugin] = ()) -> None:
        """``start()`` on a helper thread: the event loop (a source making the first chunk)
        keeps running while the parent prepares and forks."""
        if self.started:
            return
        await asyncio.get_running_loop().run_in_executor(None, self.start, tuple(plugins))

    def _retire(self, executor: cf.ProcessPoolExecutor) -> None:
        """A worker died: the executor is broken; the next job starts fresh workers."""
        state = self._state
        if state.executor is executor:
            state.executor = None
            state.retired.append((executor, _worker_processes(executor)))
            executor.shutdown(wait=False, cancel_futures=True)

    async def warm_up(self, *keys: str) -> None:
        """Start every worker and build, set up and warm the given plugins in each of them."""
        await self.astart()
        executor = self._state.executor
        if executor is None:  # closed while it started
            raise ProcessPoolClosed("the process pool is closed")
        jobs = [(key, self._plugins[key].payload) for key in keys]
        futures = [executor.submit(_worker_warm, jobs, True) for _ in range(self.n_workers)]
        try:
            for pid, done in await asyncio.gather(*map(asyncio.wrap_future, futures)):
                for key in done:
                    self._plugins[key].acked.add(pid)
        except BrokenProcessPool as error:
            self._retire(executor)
            raise WorkerDied("a worker process died during warm-up") from error
        finally:
            self._barrier.reset()

    def shutdown(self, kill: bool = False) -> None:
        """Cancel pending jobs, wait for running ones (or terminate them), join the workers."""
        self._closed = True
        with self._start_lock:  # a start under way (on a helper thread) ends first
            self._state.shutdown(kill)
        self._finalizer.detach()
        self._mp_finalizer.cancel()

    def disown(self) -> None:
        """Forget this pool without touching it: for a copy of it in a forked child, whose
        workers and segments are the parent's (shutting them down here would kill the
        parent's workers and unlink its segments)."""
        self._closed = True
        self._finalizer.detach()
        self._mp_finalizer.cancel()

    async def aclose(self, kill: bool = False) -> None:
        """``shutdown`` without blocking the event loop."""
        if self._closed and self._state.executor is None:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown, kill)

    async def __aenter__(self) -> ProcessPool:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def idle_segments(self) -> list[str]:
        """Names of the idle input segments kept for reuse."""
        with self._state.lock:
            return list(self._state.free)

    def trim(self) -> None:
        """Unlink the idle input segments (the memory they hold); e.g. after a request."""
        state = self._state
        with state.lock:
            drop, state.free = state.free, []
            for name in drop:
                state.owned.pop(name, None)
        for name in drop:
            shm.unlink_segment(name)

    def worker_pids(self) -> list[int]:
        executor = self._state.executor
        return sorted((getattr(executor, "_processes", None) or {}).keys())

    # ------------------------------------------------------------------ plugins
    def register(self, plugin: Plugin) -> str:
        """Send ``plugin`` (configured, not set up) to the workers; returns its key (the same
        key again for the same plugin object, until it is unregistered)."""
        known = self._by_plugin.get(id(plugin))
        if known is not None and known[0] is plugin:
            return known[1]
        key = f"{plugin.name}#{next(self._keys)}@{os.getpid()}"
        dtypes = {}
        for dt in plugin.provides:
            dtype = plugin.dtype_for(dt)
            dtypes[dtype] = dtype
        self._plugins[key] = _Registered(
            name=plugin.name,
            data_type=None if plugin.multi_output else plugin.provides[0],
            run_id=plugin.run_id,
            payload=_pickle_plugin(plugin),
            dtypes=dtypes,
        )
        self._by_plugin[id(plugin)] = (plugin, key)
        return key

    def unregister(self, key: str) -> None:
        """Forget a plugin (workers drop it from their LRU registry in time)."""
        self._plugins.pop(key, None)
        for ident, (_, known) in list(self._by_plugin.items()):
            if known == key:
                del self._by_plugin[ident]

    def forget(self, plugin: Plugin) -> None:
        """``unregister`` a plugin object, if it is registered."""
        known = self._by_plugin.get(id(plugin))
        if known is not None and known[0] is plugin:
            self.unregister(known[1])

    # ------------------------------------------------------------------ jobs
    async def run_batch(self, plugin_key: str, batch: Sequence[Work]) -> list[dict[str, Chunk]]:
        """Compute a batch of steps of a registered plugin in a worker; chunks in order."""
        return (await self.run_batch_stats(plugin_key, batch)).outputs

    async def run_batch_stats(self, plugin_key: str, batch: Sequence[Work]) -> BatchResult:
        reg = self._plugins[plugin_key]
        self.start()
        state = self._state
        executor = state.executor
        assert executor is not None
        send = len(reg.acked) < self.n_workers
        while True:
            job = _Job(state)
            work_descs, in_descs, in_bytes = await self._pack(job, batch)
            payload = reg.payload if send else None
            try:
                future = executor.submit(
                    _worker_run,
                    (plugin_key, payload, job.in_name, work_descs, in_descs, job.out_name),
                )
            except BrokenProcessPool as error:
                job.cleanup()
                self._retire(executor)
                raise self._died(reg, batch) from error
            except RuntimeError as error:  # shut down meanwhile
                job.cleanup()
                raise ProcessPoolClosed("the process pool is closed") from error
            # Cleans up when the job ends, however it ends (also after we stop waiting).
            future.add_done_callback(job.on_worker_done)
            try:
                result = await asyncio.wrap_future(future)
            except BrokenProcessPool as error:
                self._retire(executor)
                raise self._died(reg, batch) from error
            except asyncio.CancelledError:
                job.stop()  # the worker stops after its current step, not after the batch
                raise
            if result[0] != "missing":
                break
            if send:  # pragma: no cover - the worker had the bytes
                raise PluginError("a worker did not keep the plugin", plugin=reg.name)
            send = True  # the worker had dropped it from its registry: send it again
        status, pid = result[0], result[1]
        if status == "error":
            _, _, error, cause, tb = result  # type: ignore[misc]
            if cause is not None:
                cause.__cause__ = _RemoteTraceback(tb)
                raise error from cause
            error.__cause__ = _RemoteTraceback(tb)
            raise error
        reg.acked.add(pid)
        _, _, seconds, metas, out_descs, out_bytes = result
        if job.map_error is not None:
            raise PluginError(f"cannot map the worker's output: {job.map_error}",
                              plugin=reg.name) from job.map_error
        out = _arrays_from(job.out_map, out_descs, reg.dtypes)
        outputs = []
        i = 0
        for meta in metas:
            chunks = {}
            for dt, kind, run_id, start, end, subruns, target, extra in meta:
                chunks[dt] = written_from_meta(
                    _chunk_unchecked(dt, kind, run_id, start, end, subruns, target, out[i]),
                    extra)
                i += 1
            outputs.append(chunks)
        return BatchResult(outputs, seconds, in_bytes, out_bytes)

    async def _pack(self, job: _Job, batch: Sequence[Work]) -> tuple[list, list, int]:
        """Copy the batch's arrays into an input segment of the ring (big ones on a thread)."""
        try:
            arrays, work_descs = _describe(batch)
            _, size = shm.layout(arrays)
            if size == 0:
                return work_descs, [(0, a.dtype, 0) for a in arrays], 0
            job.in_name, job.in_mm = self._state.take(CONTROL_BYTES + size)
            job.in_mm[0] = 0  # a reused segment: the last job's stop word cleared
            if size < PACK_ON_THREAD_BYTES:
                in_descs, in_bytes = shm.write_into(job.in_mm, arrays, CONTROL_BYTES)
                return work_descs, in_descs, in_bytes
            packing = self._state.packer.submit(  # type: ignore[union-attr]
                shm.write_into, job.in_mm, arrays, CONTROL_BYTES)
        except BaseException:
            job.cleanup()
            raise
        del arrays
        try:
            in_descs, in_bytes = await asyncio.wrap_future(packing)
        except BaseException:
            packing.add_done_callback(job.cleanup)  # once the copy has stopped
            raise
        return work_descs, in_descs, in_bytes

    def _died(self, reg: _Registered, batch: Sequence[Work]) -> WorkerDied:
        first, last = batch[0].chunk_i, batch[-1].chunk_i
        chunks = f"chunk {first}" if first == last else f"chunks {first}-{last}"
        return WorkerDied(
            f"a worker process died (killed by a signal, out of memory, or crashed) while "
            f"computing {chunks} or another step in flight; the pool's workers were stopped",
            plugin=reg.name,
            data_type=reg.data_type,
            run_id=reg.run_id,
            chunk_i=first,
        )


def _arrays_from(mm: Any, descs: Sequence[shm.ArrayDesc],
                 dtypes: dict[np.dtype, np.dtype]) -> list[np.ndarray]:
    out = []
    for off, dtype, n in descs:
        dtype = dtypes.get(dtype, dtype)
        out.append(np.ndarray(n, dtype, buffer=mm, offset=off) if n else np.zeros(0, dtype))
    return out


def _chunk_unchecked(data_type: str, data_kind: str, run_id: str, start: int, end: int,
                     subruns: Any, target_size_mb: float, data: np.ndarray) -> Chunk:
    """A Chunk rebuilt from one the worker already checked (no second check)."""
    chunk = object.__new__(Chunk)
    chunk.data_type = data_type
    chunk.data_kind = data_kind
    chunk.dtype = data.dtype
    chunk.run_id = run_id
    chunk.start = start
    chunk.end = end
    chunk.subruns = subruns
    chunk.target_size_mb = target_size_mb
    chunk.data = data
    return chunk


class ProcessLane(Window):
    """One plugin's ordered window of in-flight batches on a ``ProcessPool``."""

    def __init__(self, pool: ProcessPool, max_in_flight: int, stats: PluginStats) -> None:
        super().__init__(max_in_flight, stats)
        self.pool = pool
        stats.extra.setdefault("process", True)
        stats.extra.setdefault("shm_bytes_in", 0)
        stats.extra.setdefault("shm_bytes_out", 0)

    def submit_batch(self, plugin_key: str, batch: list[Work]) -> None:
        task = asyncio.get_running_loop().create_task(
            self.pool.run_batch_stats(plugin_key, batch), name=f"asx-process-{plugin_key}")
        self._in_flight.append(task)

    async def next_result(self) -> list[dict[str, Chunk]]:
        """The oldest batch's chunks (results come back in submission order)."""
        task = self._in_flight[0]
        try:
            result: BatchResult = await task
        except BaseException:
            self.cancel()
            raise
        finally:
            if self._in_flight and self._in_flight[0] is task and task.done():
                self._in_flight.popleft()
        self.stats.compute_seconds += result.seconds
        self.stats.calls += 1
        self.stats.extra["shm_bytes_in"] += result.bytes_in
        self.stats.extra["shm_bytes_out"] += result.bytes_out
        return result.outputs

    def cancel(self) -> None:
        """Cancel every batch in flight (their segments are cleaned when their workers end)."""
        while self._in_flight:
            task = self._in_flight.popleft()
            task.cancel()
            task.add_done_callback(retrieve_exception)

    async def aclose(self) -> None:
        """Cancel what is in flight and wait until those tasks have ended."""
        tasks = list(self._in_flight)
        self.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
