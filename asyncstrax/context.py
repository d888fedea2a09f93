"""The Context: the user's front door, with strax's names.

It holds the registered plugins, the configuration and the storage, and turns a request
(``get_array(run_id, targets, ...)``) into a ``Pipeline``: plugins built and configured by
``graph``, stored data loaded instead of recomputed, savers for what ``save_when`` asks for.
Everything else lives in its own room (graph, lineage, runtime, storage); this class only
wires them together.

Every request has an async form for async applications (``aget_array``, ``aiter``, ``amake``);
the sync forms run their own event loop (uvloop when installed) and refuse to run inside a
running loop, naming the async form instead of blocking it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import difflib
import os
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .chunk import Chunk
from .errors import DataNotAvailable, EventLoopError, InvalidConfiguration
from .graph import PluginRegistry, build_plugins, check_config_names
from .lineage import DataKey
from .options import OMITTED
from .plugins.base import Plugin, SaveWhen
from .query import apply_request_selection
from .runtime.channel import DEFAULT_CAPACITY_BYTES
from .runtime.fusion import FusedChain, fuse_parallel_chains
from .runtime.malloc import tune_malloc
from .runtime.offload import new_executor, thread_count
from .runtime.pipeline import Pipeline, PipelineSummary
from .runtime.process_pool import ProcessPool, resolve_start_method
from .selection import check_time_selection, chunk_overlaps, select_time_range
from .strax_compat import StraxContextMethods, _str_tuple

__all__ = ["Context"]

DEFAULT_CONTEXT_CONFIG: dict[str, Any] = {
    "max_workers": 1,
    "channel_capacity_bytes": DEFAULT_CAPACITY_BYTES,
    "progress_bar": False,
    "allow_incomplete": False,
    # run chains of parallel plugins as one step per chunk (see runtime/fusion.py)
    "fuse_parallel": True,
    # how parallel="process" workers start: None = fork on Linux (ready at once, see
    # runtime/forked.py), else spawn; or "fork", "spawn", "forkserver"
    "process_start_method": None,
}

# Context options read elsewhere (strax's names), beyond DEFAULT_CONTEXT_CONFIG.
_CONTEXT_OPTIONS_USED = frozenset((
    "allow_incomplete", "apply_data_function", "check_available", "forbid_creation_of",
    "free_options", "max_runs_in_flight", "store_run_fields", "use_per_run_defaults",
))
#: what ``show_config()`` says about each context option
_CONTEXT_OPTION_HELP = {
    "max_workers": "chunks of parallel plugins computed at once (threads, or processes for "
                   "parallel='process' plugins)",
    "channel_capacity_bytes": "bytes a channel between two plugins holds before its producer "
                              "waits (at least one chunk)",
    "progress_bar": "show a tqdm progress bar while making data",
    "allow_incomplete": "load data that a live writer is still writing",
    "fuse_parallel": "run chains of parallel plugins as one step per chunk",
    "process_start_method": "how process workers start: None (fork on Linux), 'fork', "
                            "'spawn' or 'forkserver'",
    "apply_data_function": "functions f(data, run_id, targets) applied to loaded data",
    "check_available": "data types whose storage select_runs and list_available report",
    "forbid_creation_of": "data types that must be loaded, never made",
    "free_options": "options that do not change a data type's lineage",
    "max_runs_in_flight": "runs processed at once by the multi-run calls",
    "store_run_fields": "run metadata fields that scan_runs keeps",
    "use_per_run_defaults": "allow options whose defaults depend on the run",
}
# strax's context options that have no meaning here: accepted with a warning, not kept.
_STRAX_CONTEXT_OPTIONS_IGNORED = {
    "processors": "it has one runtime",
    "allow_multiprocess": "parallel='process' plugins use processes when max_workers > 1",
    "allow_shm": "process workers always exchange arrays through shared memory",
    "allow_lazy": "it has one runtime",
    "allow_rechunk": "savers rechunk as each plugin's rechunk_on_save says",
    "max_messages": "channels are bounded by channel_capacity_bytes",
    "timeout": "a stalled pipeline is detected, not timed out",
    "saver_timeout": "a stalled pipeline is detected, not timed out",
    "fuzzy_for": "lineages are always checked in full",
    "fuzzy_for_options": "lineages are always checked in full",
    "write_superruns": "superruns are not saved",
    "storage_converter": "it does not copy data between stores while loading",
}


def _check_context_options(options: dict[str, Any]) -> None:
    """Warn about context options that do nothing here (and drop strax's ignored ones), as
    strax warns about invalid ones: a typo such as ``max_worker=4`` must not pass silently."""
    known = DEFAULT_CONTEXT_CONFIG.keys() | _CONTEXT_OPTIONS_USED
    for name in list(options):
        if name in known:
            continue
        if name in _STRAX_CONTEXT_OPTIONS_IGNORED:
            options.pop(name)
            warnings.warn(f"context option {name!r} is ignored: "
                          f"{_STRAX_CONTEXT_OPTIONS_IGNORED[name]}", stacklevel=3)
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        warnings.warn(f"unknown context option {name!r} does nothing{hint}; the options are "
                      f"{', '.join(sorted(known))}", stacklevel=3)


# strax's processor arguments: accepted, meaningless here (one runtime, no switch).
_IGNORED_REQUEST_ARGS = (
    "processor",
    "allow_multiprocess",
    "allow_shm",
    "timeout",
    "multi_run_progress_bar",
)
# strax's multi-run arguments: used when run_id is a list of runs, ignored for one run.
_MULTI_RUN_ARGS = ("add_run_id_field", "run_id_as_bytes", "ignore_errors")


def _combined(old: Mapping[str, Any], new: Mapping[str, Any], mode: str, what: str
              ) -> dict[str, Any]:
    """strax's modes of changing a config: ``update`` (new wins), ``setdefault`` (old wins),
    ``replace`` (only the new)."""
    if mode == "update":
        return {**old, **new}
    if mode == "setdefault":
        return {**new, **old}
    if mode == "replace":
        return dict(new)
    raise InvalidConfiguration(f"{what} mode must be update, setdefault or replace, got "
                               f"{mode!r}")


def _as_targets(targets: str | Sequence[str]) -> tuple[str, ...]:
    """Targets as a tuple; a data type named twice counts once (strax keeps the first)."""
    if isinstance(targets, str):
        return (targets,)
    return tuple(dict.fromkeys(targets))


_THREADS_LOCK = threading.Lock()


def _new_threads_lock() -> None:
    """In a forked child: a fresh lock (a parent's thread may have held it at the fork)."""
    global _THREADS_LOCK
    _THREADS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_threads_lock)


def _uvloop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional at heart
        return None
    return uvloop.new_event_loop


def run_sync(coro: Any, async_name: str) -> Any:
    """Run ``coro`` to completion on a fresh loop (uvloop if installed), never inside one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise EventLoopError(
            f"this is the blocking form, called inside a running event loop; use "
            f"'await ctx.{async_name}(...)' instead"
        )
    try:
        with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
            return runner.run(coro)
    except RuntimeError as error:
        # Ctrl-C just as the request ends: the KeyboardInterrupt, raised inside uvloop's own
        # teardown, leaves the loop marked running, and closing it fails twice over; the
        # interrupt is what happened
        interrupt = _interrupt_behind(error)
        if interrupt is not None:
            raise interrupt from None
        raise


def _interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt that a chain of "event loop is running" errors followed."""
    while isinstance(error, RuntimeError) and ("event loop is already running" in str(error)
                                               or "running event loop" in str(error)):
        context = error.__context__
        if isinstance(context, KeyboardInterrupt):
            return context
        if context is None:
            return None
        error = context
    return None


class Context(StraxContextMethods):
    """Registered plugins, configuration and storage; makes and loads data on request.

    strax's other Context methods (``new_context``, ``select_runs``, ``accumulate``, ...) come
    from ``StraxContextMethods`` (strax_compat.py).
    """

    def __init__(
        self,
        storage: Any = None,
        register: Any = None,
        config: Mapping[str, Any] | None = None,
        register_all: Any = None,
        **context_config: Any,
    ) -> None:
        tune_malloc()  # once per process, before the engine starts its threads
        self._registry = PluginRegistry()
        self.config: dict[str, Any] = {}
        context_config = dict(context_config)
        _check_context_options(context_config)
        self.context_config: dict[str, Any] = {**DEFAULT_CONTEXT_CONFIG, **context_config}
        if self.context_config["process_start_method"] is not None:  # a typo fails here
            resolve_start_method(self.context_config["process_start_method"])
        if storage is None:
            storage = []
        from .storage import FileStore

        storage = list(storage) if isinstance(storage, (list, tuple)) else [storage]
        # strax accepts a path for a DataDirectory
        self.storage: list[Any] = [
            FileStore(s) if isinstance(s, (str, os.PathLike)) else s for s in storage
        ]
        self.last_summary: PipelineSummary | None = None
        self._process_pool: ProcessPool | None = None
        self._thread_executors: dict[int, cf.ThreadPoolExecutor] = {}
        #: the process whose workers these are (see _leave_parents_workers)
        self._owner_pid = os.getpid()
        if register_all is not None:
            self.register_all(register_all)
        if register is not None:
            self.register(register)
        if config:
            self.set_config(config)

    # ------------------------------------------------------------------ registration & config
    def register(self, plugin_class: Any) -> Any:
        """Register a plugin class (or a list of them); usable as a class decorator."""
        if isinstance(plugin_class, (list, tuple)):
            for cls in plugin_class:
                self.register(cls)
            return plugin_class
        self._registry.register(plugin_class)
        return plugin_class

    @property
    def _plugin_class_registry(self) -> dict[str, type[Plugin]]:
        return self._registry.by_data_type

    def set_config(self, config: Mapping[str, Any] | None = None, mode: str = "update") -> None:
        """Set option values for every plugin that takes them (strax's modes).

        Options may be set before their plugins are registered (straxen's contexts do so);
        a name no registered plugin takes is an error when data is requested.
        """
        self.config = _combined(self.config, dict(config or {}), mode, "set_config")

    def set_context_config(self, context_config: Mapping[str, Any] | None = None,
                           mode: str = "update") -> None:
        """Set context options (``max_workers``, ``progress_bar``, ...), with strax's modes:
        ``update``, ``setdefault`` (only options not set yet) or ``replace`` (the defaults
        plus these). Names that do nothing here are warned about, as in the constructor."""
        context_config = dict(context_config or {})
        _check_context_options(context_config)
        base = DEFAULT_CONTEXT_CONFIG if mode == "replace" else self.context_config
        self.context_config = {**base, **_combined(self.context_config, context_config, mode,
                                                   "set_context_config")}

    def _config_for(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        """The options of one request; a name no registered plugin takes is a typo."""
        config = {**self.config, **extra} if extra else self.config
        check_config_names(self._registry, config)
        return config

    def get_plugins(
        self, run_id: str, targets: str | Sequence[str], config: Mapping[str, Any] | None = None
    ) -> dict[str, Plugin]:
        """Configured plugin instances for the targets and their dependencies, by data type."""
        return build_plugins(self._registry, str(run_id), _as_targets(targets),
                             self._config_for(config))

    def get_single_plugin(self, run_id: str, data_type: str) -> Plugin:
        """The configured plugin that provides ``data_type`` for the run."""
        return self.get_plugins(run_id, data_type)[data_type]

    def lineage(self, run_id: str, data_type: str) -> dict[str, Any]:
        """What ``data_type`` is made from: ``{data type: (plugin class, version, options)}`` for
        it and everything it depends on; its hash names the stored data."""
        return self.get_single_plugin(run_id, data_type).lineage  # type: ignore[attr-defined]

    def key_for(self, run_id: str, target: str) -> DataKey:
        """The storage key of data type ``target`` for the run: run id, data type and
        lineage."""
        return DataKey(str(run_id), target, self.lineage(run_id, target))

    # ------------------------------------------------------------------ information
    def show_config(self, data_type: str | None = None, pattern: str = "*",
                    run_id: str = "9" * 20) -> Any:
        """Options of the plugins a data type needs: default (for ``run_id`` where it depends
        on the run; strax's default run id, a new run's), current value, help. Without a data
        type, the context's own options, as in strax. Unset values show as OMITTED."""
        import fnmatch

        import pandas as pd

        columns = ["option", "default", "current", "applies_to", "help"]
        if data_type is None:
            return pd.DataFrame(
                [dict(option=name, default=DEFAULT_CONTEXT_CONFIG.get(name, OMITTED),
                      current=self.context_config.get(name, OMITTED), applies_to="Context",
                      help=text)
                 for name, text in _CONTEXT_OPTION_HELP.items()
                 if fnmatch.fnmatch(name, pattern)], columns=columns)
        classes = {type(p) for p in self.get_plugins(run_id, data_type).values()}
        rows: dict[str, dict[str, Any]] = {}
        for cls in sorted(classes, key=lambda c: c.__name__):
            for name, option in cls.takes_config.items():
                if not fnmatch.fnmatch(name, pattern):
                    continue
                row = rows.setdefault(
                    name,
                    dict(
                        option=name,
                        default=option.get_default(run_id) if option.has_default else OMITTED,
                        current=self.config.get(name, OMITTED),
                        applies_to=[],
                        help=option.help,
                    ),
                )
                row["applies_to"].extend(cls().provides)
        for row in rows.values():
            row["applies_to"] = tuple(row["applies_to"])
        return pd.DataFrame(list(rows.values()), columns=columns)

    def data_info(self, data_type: str) -> Any:
        """The fields of a data type: name, numpy dtype (as strax gives it), and the title as
        comment."""
        import pandas as pd

        dtype = self.get_single_plugin("0", data_type).dtype_for(data_type)
        rows = []
        for name in dtype.names or ():
            field: Any = dtype.fields[name]  # type: ignore[index]
            rows.append(
                {"Field name": name, "Data type": field[0],
                 "Comment": field[2] if len(field) > 2 else ""}
            )
        return pd.DataFrame(rows, columns=["Field name", "Data type", "Comment"])

    def provided_dtypes(self) -> dict[str, Any]:
        """``{data type: {"dtype": ..., "data_kind": ...}}`` for every registered data type."""
        out = {}
        for dt in self._registry.by_data_type:
            plugin = self.get_single_plugin("0", dt)
            out[dt] = dict(dtype=plugin.dtype_for(dt), data_kind=plugin.data_kind_for(dt))
        return out

    # ------------------------------------------------------------------ planning
    def pipeline(
        self,
        run_id: str,
        targets: str | Sequence[str],
        *,
        save: str | Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        max_workers: int | None = None,
        progress_bar: bool | None = None,
        time_range: tuple[int, int] | None = None,
        _plugins: Mapping[str, Plugin] | None = None,
        **kwargs: Any,
    ) -> Pipeline:
        """A Pipeline for the targets: stored data is loaded, the rest computed (and saved)."""
        self._warn_ignored(kwargs)
        run_id = str(run_id)
        superrun = self.superrun_spec(run_id)
        if superrun is not None:
            raise InvalidConfiguration(
                f"{run_id!r} is a superrun: its data is its runs' data, joined when read "
                f"(get_array, get_df); nothing is made or saved under its name. Make each of "
                f"its runs instead: {sorted(superrun)}")
        targets = _as_targets(targets)
        plugins = dict(_plugins) if _plugins is not None else self.get_plugins(
            run_id, targets, config)
        to_save = set(_as_targets(save))
        for dt in sorted(to_save & set(plugins)):
            if self._save_when(plugins[dt], dt) == SaveWhen.NEVER:
                raise InvalidConfiguration(
                    f"save asks for {dt!r}, but {plugins[dt].name} never lets it be saved "
                    f"(save_when NEVER)", plugin=plugins[dt].name, data_type=dt)
        chosen: dict[int, Plugin] = {}
        loaders: list[Any] = []
        loaded: set[str] = set()
        savers: list[Any] = []

        def visit(dt: str) -> None:
            plugin = plugins[dt]
            if id(plugin) in chosen or dt in loaded:
                return
            # A time range narrows what the one target reads, if loaded. Data a computation
            # takes, or merged with other targets, is read whole: those must cover the same
            # span, which their own chunkings may not share.
            loader = self._find_loader(run_id, dt, plugin,
                                       time_range if targets == (dt,) else None)
            if loader is not None and (dt in targets or not plugin.multi_output):
                loaders.append(loader)
                loaded.add(dt)
                return
            chosen[id(plugin)] = plugin
            for dep in plugin.depends_on:
                visit(dep)

        for target in targets:
            visit(target)
        # A multi-output plugin computed for one output makes its stored siblings too: they
        # come from the computation (one producer per data type), and are not saved again.
        computed = {dt for plugin in chosen.values() for dt in plugin.provides}
        stored = {loader.data_type for loader in loaders if loader.data_type in computed}
        loaders = [loader for loader in loaders if loader.data_type not in stored]
        partial = [loader.data_type for loader in loaders if getattr(loader, "incomplete", False)]
        if partial and chosen:
            warnings.warn(
                f"nothing computed from {partial} is saved: the run is not finished, so it "
                f"would be saved from part of the run as if complete",
                stacklevel=3,
            )
        for plugin in chosen.values():
            self._check_creation_allowed(run_id, plugin)
            for dt in plugin.provides:
                if partial:
                    continue
                if dt not in stored and self._should_save(plugin, dt, targets, to_save):
                    saver = self._make_saver(run_id, dt, plugin)
                    if saver is not None:
                        savers.append(saver)
        ordered = [p for p in _dependency_order(chosen.values())]
        max_workers = max_workers or self.context_config["max_workers"]
        # With one worker, separate plugins overlap one another on the threads, which beats a
        # fused chain; with several, a fused chain keeps several chunks in flight end to end.
        if max_workers > 1 and self.context_config.get("fuse_parallel", True):
            # a saved data type stays inside a chain when its saver lets the chain write it
            inline = {s.data_type: s for s in savers
                      if getattr(s, "can_write_inline", False) and s.data_type not in targets}
            visible = set(targets) | {s.data_type for s in savers if s.data_type not in inline}
            ordered = fuse_parallel_chains(ordered, visible)
            for plugin in ordered:
                if isinstance(plugin, FusedChain):
                    for stage in plugin.stages[:-1]:
                        if stage.provides[0] in inline:
                            plugin.save_inline(stage.provides[0],
                                               inline[stage.provides[0]].inline_spec())
        return Pipeline(
            ordered,
            targets,
            run_id=run_id,
            loaders=loaders,
            savers=savers,
            capacity_bytes=self.context_config["channel_capacity_bytes"],
            max_workers=max_workers,
            progress_bar=(self.context_config["progress_bar"] if progress_bar is None
                          else progress_bar),
            process_pool=self._process_pool_for(max_workers),
            thread_executor=self._threads_for(max_workers),
        )

    def _threads_for(self, max_workers: int) -> cf.ThreadPoolExecutor:
        """The threads of requests with ``max_workers``: made on first need, kept for later
        requests (their memory stays warm), stopped by close()."""
        n_threads = thread_count(max_workers)
        self._leave_parents_workers()
        with _THREADS_LOCK:  # blocking calls from several threads may share one Context
            executor = self._thread_executors.get(n_threads)
            if executor is None:
                executor = self._thread_executors[n_threads] = new_executor(n_threads)
        return executor

    # ------------------------------------------------------------------ worker processes
    def _process_pool_for(self, max_workers: int) -> ProcessPool | None:
        """The pool of parallel="process" plugins: made on first need (its workers start
        at the first step sent to them), reused by every later request, closed by close()."""
        if max_workers <= 1:
            return None
        self._leave_parents_workers()
        if self._process_pool is None:
            self._process_pool = ProcessPool(
                max(max_workers, self.context_config["max_workers"]),
                start_method=self.context_config["process_start_method"])
        return self._process_pool

    def _leave_parents_workers(self) -> None:
        """In a forked copy of this Context (multiprocessing's fork), start workers of its own:
        the kept threads stayed in the parent (a job sent to them here would wait forever), and
        the process pool's workers and segments are the parent's (not to be stopped here)."""
        with _THREADS_LOCK:
            if self._owner_pid == os.getpid():
                return
            self._owner_pid = os.getpid()
            self._thread_executors = {}
            pool, self._process_pool = self._process_pool, None
        if pool is not None:
            pool.disown()

    def close(self) -> None:
        """Stop the worker processes and threads, if any (they start again on the next need)."""
        self._leave_parents_workers()
        self._stop_threads()
        pool, self._process_pool = self._process_pool, None
        if pool is not None:
            pool.shutdown()

    async def aclose(self) -> None:
        """Stop the context's workers (``async with Context(...)`` calls this)."""
        self._leave_parents_workers()
        self._stop_threads()
        pool, self._process_pool = self._process_pool, None
        if pool is not None:
            await pool.aclose()

    def _stop_threads(self) -> None:
        with _THREADS_LOCK:
            executors, self._thread_executors = self._thread_executors, {}
        for executor in executors.values():
            # jobs already queued still run: a request running meanwhile then fails at its
            # next submit with ContextClosed, not with a job cancelled under it
            executor.shutdown(wait=False)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> Context:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def _warn_ignored(self, kwargs: Mapping[str, Any]) -> None:
        unknown = [k for k in kwargs if k not in _IGNORED_REQUEST_ARGS]
        if unknown:
            raise TypeError(f"unexpected request argument(s): {unknown}")
        if kwargs:
            warnings.warn(
                f"asyncstrax ignores {sorted(kwargs)}: it has one runtime, configured with "
                f"max_workers and each plugin's 'parallel'",
                stacklevel=3,
            )

    def _check_creation_allowed(self, run_id: str, plugin: Plugin) -> None:
        """strax's ``forbid_creation_of``: data that must be loaded, never made."""
        forbidden = _str_tuple(self.context_config.get("forbid_creation_of") or ())
        made = [dt for dt in plugin.provides if dt in forbidden]
        if made:
            raise DataNotAvailable(
                f"{made[0]!r} is not stored for this lineage and the context forbids creating "
                f"it (forbid_creation_of={list(forbidden)}); plugin {plugin.name} would have to "
                f"compute it",
                data_type=made[0], run_id=run_id,
            )

    @staticmethod
    def _save_when(plugin: Plugin, dt: str) -> SaveWhen:
        when = plugin.save_when
        if isinstance(when, Mapping):
            when = when.get(dt, SaveWhen.ALWAYS)
        return SaveWhen(when)

    def _should_save(self, plugin: Plugin, dt: str, targets: tuple, save: set) -> bool:
        when = self._save_when(plugin, dt)
        if when == SaveWhen.NEVER:
            return False
        if when == SaveWhen.ALWAYS:
            return True
        if when == SaveWhen.TARGET:
            return dt in targets or dt in save
        return dt in save

    def _find_loader(self, run_id: str, dt: str, plugin: Plugin,
                     time_range: tuple[int, int] | None = None) -> Any:
        if not self.storage:
            return None
        key = DataKey(run_id, dt, plugin.lineage)  # type: ignore[attr-defined]
        incomplete = self._incomplete_kwargs()
        for store in self.storage:
            if store.find(key, **incomplete):
                loader = store.loader(key, data_kind=plugin.data_kind_for(dt),
                                      dtype=plugin.dtype_for(dt), time_range=time_range,
                                      **incomplete)
                if getattr(loader, "incomplete", False):
                    end = getattr(loader, "available_end", None)
                    warnings.warn(
                        f"run {run_id!r} is not finished: loading the {dt!r} written so far "
                        f"(data up to time {end if end is not None else 'its start'})",
                        stacklevel=3,
                    )
                return loader
        return None

    def _incomplete_kwargs(self) -> dict[str, Any]:
        """``allow_incomplete=True`` for the stores if the context allows incomplete data."""
        return {"allow_incomplete": True} if self.context_config.get("allow_incomplete") else {}

    def _make_saver(self, run_id: str, dt: str, plugin: Plugin) -> Any:
        key = DataKey(run_id, dt, plugin.lineage)  # type: ignore[attr-defined]
        for store in self.storage:
            if not getattr(store, "readonly", False):
                return store.saver(key, plugin=plugin)
        return None

    def is_stored(self, run_id: str, target: str | Sequence[str], detailed: bool = False,
                  **kwargs: Any) -> bool:
        """Whether complete data of ``target`` (all of them, for a list) is stored for this
        lineage. As in strax, keyword arguments (``config=...``, context options) ask about
        a context made from this one with them (``new_context``)."""
        if kwargs:
            return bool(self.new_context(**kwargs).is_stored(run_id, target, detailed))
        if not isinstance(target, str):
            return all(self.is_stored(run_id, t, detailed) for t in target)
        key = self.key_for(run_id, target)
        incomplete = self._incomplete_kwargs()
        found = [bool(store.find(key, **incomplete)) for store in self.storage]
        if detailed:  # strax prints where it looked
            for store, here in zip(self.storage, found):
                print(f"{key}: {'stored' if here else 'not stored'} in {store!r}")
        return any(found)

    def get_metadata(self, run_id: str, target: str) -> dict[str, Any]:
        """The stored metadata of ``target`` (lineage, dtype, compressor, chunks, ...);
        ``DataNotAvailable`` if no store holds it with this context's lineage."""
        key = self.key_for(run_id, target)
        incomplete = self._incomplete_kwargs()
        for store in self.storage:
            if store.find(key, **incomplete):
                return store.get_metadata(key, **incomplete)
        raise DataNotAvailable(f"no stored {target!r} for run {run_id!r} with this lineage",
                               data_type=target, run_id=str(run_id))

    # ------------------------------------------------------------------ async requests
    async def aiter(
        self,
        run_id: str,
        targets: str | Sequence[str],
        *,
        time_range: tuple[int, int] | None = None,
        time_selection: str = "fully_contained",
        seconds_range: tuple[float, float] | None = None,
        time_within: Any = None,
        selection: Any = None,
        keep_columns: str | Sequence[str] | None = None,
        drop_columns: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Chunk]:
        """The targets' chunks as they are made, with strax's selections applied: time range
        (``time_range``, ``seconds_range`` or ``time_within``), the context's
        ``apply_data_function``, then ``selection`` and ``keep_columns``/``drop_columns``.

        To stop early, ``async with contextlib.aclosing(ctx.aiter(...)) as chunks`` cleans
        up at the ``break``; otherwise the request stops when the loop finalizes the iterator."""
        check_time_selection(time_selection)
        for name in _MULTI_RUN_ARGS:
            kwargs.pop(name, None)
        time_range = self.to_absolute_time_range(
            run_id, targets, time_range=time_range, seconds_range=seconds_range,
            time_within=time_within)
        if keep_columns and drop_columns:
            raise InvalidConfiguration(
                "give keep_columns or drop_columns, not both: their logic contradicts")
        shaping = bool(selection is not None or keep_columns or drop_columns
                       or self.context_config.get("apply_data_function"))
        pipeline = self.pipeline(run_id, targets, time_range=time_range, **kwargs)
        try:
            async for chunk in pipeline:
                if not chunk_overlaps(chunk.start, chunk.end, time_range, time_selection):
                    continue
                data = chunk.data
                start, end = chunk.start, chunk.end
                if time_range is not None:
                    data = select_time_range(data, time_range, time_selection)
                    if time_selection == "fully_contained":  # items lie inside: as strax,
                        start = max(start, time_range[0])  # the chunk spans only the range
                        end = min(end, time_range[1])
                        if start == end and chunk.start < chunk.end and not len(data):
                            continue  # a neighbour touching an edge, with nothing at it
                if shaping:
                    data = self.apply_data_functions(data, run_id, targets)
                    data = apply_request_selection(data, selection, keep_columns, drop_columns)
                if data is not chunk.data or (start, end) != (chunk.start, chunk.end):
                    # A selection of a checked chunk's items is still valid; unchecked because
                    # keep_columns may drop the time fields, as strax allows.
                    selected = Chunk.__new__(Chunk)._init_view(chunk, start, data)
                    selected.end = end
                    selected.dtype = data.dtype
                    chunk = selected
                yield chunk
        finally:
            await pipeline.aclose()
            self.last_summary = pipeline.summary

    async def aget_array(self, run_id: str, targets: str | Sequence[str], **kwargs: Any
                         ) -> np.ndarray:
        """All of the targets' data for a run (or time range) as one structured array.

        A list of run ids gives every run's data joined, with a ``run_id`` field (strax's
        multi-run form); a superrun id (``_name``, see ``define_run``) its runs' data joined.
        """
        if not isinstance(run_id, str) and isinstance(run_id, (list, tuple, np.ndarray)):
            if len(run_id) != 1:
                return await self.aget_array_runs(run_id, targets, **kwargs)
            (run_id,) = run_id
        if self.superrun_spec(run_id) is not None:
            return await self.aget_superrun_array(run_id, targets, **kwargs)
        arrays = []
        dtype = None
        agen: Any = self.aiter(run_id, targets, **kwargs)
        try:
            async for chunk in agen:
                dtype = chunk.dtype
                if len(chunk):
                    arrays.append(chunk.data)
        finally:
            await agen.aclose()
        if not arrays:
            if dtype is None:
                dtype = self._target_dtype(run_id, targets)
                return apply_request_selection(
                    np.zeros(0, dtype=dtype), None, kwargs.get("keep_columns"),
                    kwargs.get("drop_columns"))
            return np.zeros(0, dtype=dtype)
        return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]

    async def aget_df(self, run_id: str, targets: str | Sequence[str], **kwargs: Any) -> Any:
        """``get_df`` for async code: a pandas DataFrame of the targets (as ``aget_array``)."""
        return to_dataframe(await self.aget_array(run_id, targets, **kwargs))

    async def amake(self, run_id: str, targets: str | Sequence[str], **kwargs: Any) -> None:
        """Make (and save) the targets without keeping their data in memory (for each run, when
        given a list of runs)."""
        if not isinstance(run_id, str) and isinstance(run_id, (list, tuple, np.ndarray)):
            for one in run_id:
                await self.amake(str(one), targets, **kwargs)
            return
        for name in _MULTI_RUN_ARGS:
            kwargs.pop(name, None)
        pipeline = self.pipeline(run_id, targets, **kwargs)
        try:
            await pipeline.run()
        finally:
            self.last_summary = pipeline.summary

    def _target_dtype(self, run_id: str, targets: str | Sequence[str]) -> np.dtype:
        from .chunk import merged_dtype_of

        plugins = self.get_plugins(run_id, targets)
        return merged_dtype_of({t: plugins[t].dtype_for(t) for t in _as_targets(targets)})

    # ------------------------------------------------------------------ sync requests
    def get_array(self, run_id: str, targets: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        """The targets' data for the run as one array: loaded where stored, else computed (and
        saved as each plugin's ``save_when`` says). Targets of one data kind are merged; a list
        of runs adds a ``run_id`` field. Takes strax's request arguments (``time_range``,
        ``selection``, ``keep_columns``, ``config``, ``save``, ...). In async code use
        ``aget_array``."""
        return run_sync(self.aget_array(run_id, targets, **kwargs), "aget_array")

    def get_df(self, run_id: str, targets: str | Sequence[str], **kwargs: Any) -> Any:
        """A pandas DataFrame of the targets; a list of runs gets a ``run_id`` column."""
        if not isinstance(run_id, (str, int)):
            from .distributed import get_df_many

            return get_df_many(self, run_id, targets, _stacklevel=4, **kwargs)
        return to_dataframe(run_sync(self.aget_array(run_id, targets, **kwargs), "aget_df"))

    def make(self, run_id: str, targets: str | Sequence[str], **kwargs: Any) -> None:
        """Make (and save) the targets without keeping their data in memory."""
        run_sync(self.amake(run_id, targets, **kwargs), "amake")

    def get_iter(self, run_id: str, targets: str | Sequence[str], **kwargs: Any
                 ) -> Iterator[Chunk]:
        """The targets' chunks, one at a time, driving a private event loop between calls."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise EventLoopError(
                "get_iter is the blocking form, called inside a running event loop; use "
                "'async for chunk in ctx.aiter(...)' instead"
            )
        iterator = _drive(self.aiter(run_id, targets, **kwargs))
        _open_iterators.add(iterator)
        return iterator


def _drive(agen: Any) -> Iterator[Chunk]:
    with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
        try:
            while True:
                try:
                    chunk = runner.run(agen.__anext__())
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            runner.run(agen.aclose())


# get_iter iterators still open: a script may leave one unfinished at module level
_open_iterators: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_iterators() -> None:
    """Finish unfinished get_iter iterators while threads can still start: left to the
    interpreter's final clean-up, closing one would wait forever for its loop's executor."""
    for iterator in list(_open_iterators):
        try:
            iterator.close()
        except (ValueError, RuntimeError) as error:  # being iterated by a thread still running
            warnings.warn(f"could not close an unfinished get_iter at exit: {error}",
                          stacklevel=1)


def _dependency_order(plugins: Iterable[Plugin]) -> list[Plugin]:
    """Plugins sorted so that each comes after those it depends on (stable for display)."""
    plugins = list(plugins)
    by_dt = {dt: p for p in plugins for dt in p.provides}
    order: list[Plugin] = []
    seen: set[int] = set()

    def visit(p: Plugin) -> None:
        if id(p) in seen:
            return
        seen.add(id(p))
        for dep in p.depends_on:
            if dep in by_dt:
                visit(by_dt[dep])
        order.append(p)

    for p in plugins:
        visit(p)
    return order


def to_dataframe(data: np.ndarray, warn: bool = True, stacklevel: int = 3) -> Any:
    """A pandas DataFrame of a structured array; multi-dimensional fields (waveforms) are
    left out, with a warning naming them: a column of per-row arrays (strax's choice) costs a
    Python object per row and defeats pandas' operations. ``get_array`` keeps them."""
    import pandas as pd

    fields: Any = data.dtype.fields
    names = [n for n in data.dtype.names or () if fields[n][0].shape == ()]
    left_out = [n for n in data.dtype.names or () if n not in names]
    if left_out and warn:
        warnings.warn(f"get_df leaves out the multi-dimensional fields {left_out}; use "
                      f"get_array to read them (keep_columns without them: no warning)",
                      stacklevel=stacklevel)
    return pd.DataFrame({n: data[n] for n in names})
