"""strax's other Context methods, so notebooks written for strax run here unchanged.

``StraxContextMethods`` is a mixin of ``Context``: everything here is built on the Context's own
requests (``get_plugins``, ``key_for``, ``pipeline``, ``aiter``, the storage list), so it adds
names, not another engine. What each method keeps of strax and where it differs is in its
docstring; docs/migration.md has the overview.

Also here: ``RunMetadataNotAvailable`` (strax's error when a run has no run document; a
``DataNotAvailable`` here, so code catching either works) and ``ProcessorComponents`` (what
``get_components`` returns).
"""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import inspect
import json
import os
import types
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from .chunk import endtime
from .errors import (
    DataExistsError,
    DataNotAvailable,
    InvalidConfiguration,
)
from .lineage import DataKey
from .plugins.base import Plugin, SaveWhen
from .query import add_run_id_field, apply_request_selection
from .run_selection import (
    flatten_run_metadata,
    run_docs,
    run_number,
    tag_match,
    tags_match,
    to_ns,
)

__all__ = ["ProcessorComponents", "RunMetadataNotAvailable", "StraxContextMethods", "exporter"]

#: the run-document field strax reads per-run option defaults from
RUN_DEFAULTS_KEY = "strax_defaults"


class RunMetadataNotAvailable(DataNotAvailable):
    """No run-level metadata (run document) for the run in any store."""


@dataclass
class ProcessorComponents:
    """What a request is made of (strax's ``ProcessorComponents``).

    ``plugins``: data type -> plugin that computes it; ``loaders``: data type -> loader of
    stored data; ``savers``: data type -> savers; ``targets``: what was asked for;
    ``pipeline``: the (not yet started) ``Pipeline`` these form; run it with
    ``await components.pipeline.run()``.
    """

    plugins: dict[str, Any]
    loaders: dict[str, Any]
    loader_plugins: dict[str, Any]
    savers: dict[str, list[Any]]
    targets: tuple[str, ...]
    pipeline: Any = field(default=None, repr=False)


def _str_tuple(x: Any) -> tuple[str, ...]:
    if x is None:
        return ()
    if isinstance(x, str):
        return (x,)
    if isinstance(x, np.ndarray):
        return tuple(str(v) for v in x.tolist())
    return tuple(str(v) for v in x)


def _run_sync(coro: Any, async_name: str) -> Any:
    from .context import run_sync

    return run_sync(coro, async_name)


def _is_asyncstrax_base(cls: type) -> bool:
    """Plugin base classes of asyncstrax itself (Plugin, LoopPlugin, ...): never registered."""
    return cls.__module__.startswith("asyncstrax.plugins") or cls is Plugin


class StraxContextMethods:
    """strax's Context methods not in the core Context (mixed into ``Context``)."""

    #: run documents found by ``scan_runs`` (a pandas DataFrame), as strax's ``Context.runs``
    runs: Any = None

    # These are the Context's; declared for readers and type checkers.
    _registry: Any
    register: Any
    set_config: Any
    config: dict
    context_config: dict
    storage: list

    # ================================================================== contexts & registration
    def new_context(
        self,
        storage: Any = (),
        config: Mapping[str, Any] | None = None,
        register: Any = None,
        register_all: Any = None,
        processors: Any = None,
        replace: bool = False,
        **kwargs: Any,
    ) -> Any:
        """A new context: this one's storage, options, plugins and context options, with those
        given added (``replace=True``: only those given). ``processors`` is accepted and
        ignored (one runtime here)."""
        from .storage import FileStore

        storage = [storage] if not isinstance(storage, (list, tuple)) else list(storage)
        storage = [FileStore(s) if isinstance(s, (str, os.PathLike)) else s for s in storage]
        config = dict(config or {})
        register = [] if register is None else register
        if not isinstance(register, (list, tuple)):
            register = [register]
        if replace:
            context_config = dict(kwargs)
        else:
            storage = list(self.storage) + storage
            config = {**self.config, **config}
            context_config = {**self.context_config, **kwargs}
        new = cast(Any, type(self))(storage=storage, **context_config)
        if not replace:
            new._registry.by_data_type = dict(self._registry.by_data_type)
            superruns = getattr(self, "_superrun_specs", None)
            if superruns:
                new._superrun_specs = dict(superruns)
        if register_all is not None:
            new.register_all(register_all)
        new.register(list(register))
        if config:
            new.set_config(config)
        return new

    def register_all(self, module: Any) -> None:
        """Register every plugin class defined in a module (or in each of a list of modules).

        asyncstrax's own base classes (``Plugin``, ``LoopPlugin``, ...) are skipped when a module
        imported them by name, which strax would try to register.
        """
        if isinstance(module, (list, tuple)):
            for m in module:
                self.register_all(m)
            return
        for name in dir(module):
            obj = getattr(module, name)
            if (isinstance(obj, type) and issubclass(obj, Plugin)
                    and not _is_asyncstrax_base(obj)):
                self.register(obj)

    def register_cut_list(self, cut_list: Any) -> None:
        """Register the cuts of a cut list (an object with ``.cuts``) and the list itself."""
        if isinstance(cut_list, str):
            raise InvalidConfiguration("register_cut_list takes cut list objects, not strings")
        if isinstance(cut_list, (list, tuple)):
            for c in cut_list:
                self.register_cut_list(c)
            return
        for cut in getattr(cut_list, "cuts", ()):
            if hasattr(cut, "cuts"):
                self.register_cut_list(cut)
            else:
                self.register(cut)
        self.register(cut_list)

    def deregister_plugins_with_missing_dependencies(self) -> None:
        """Drop registered plugins that depend on a data type nothing provides (repeatedly,
        since dropping one may orphan others)."""
        registry = self._registry.by_data_type
        while True:
            provided = set(registry)
            orphans = {
                dt for dt, cls in registry.items()
                if not set(cls().depends_on) <= provided
            }
            if not orphans:
                return
            for dt in orphans:
                del registry[dt]

    def purge_unused_configs(self) -> None:
        """Remove options that no registered plugin takes (except ``free_options``)."""
        taken = self._registry.options()
        free = set(_str_tuple(self.context_config.get("free_options", ())))
        for name in list(self.config):
            if name not in taken and name not in free:
                warnings.warn(f"option {name!r} purged from the context config: no registered "
                              f"plugin takes it", stacklevel=2)
                del self.config[name]

    @classmethod
    def add_method(cls, f: Any) -> Any:
        """Add ``f`` as a method of the Context class (as strax's plugin packages do)."""
        setattr(cls, f.__name__, f)
        return f

    # ================================================================== the plugin graph
    def _plugin_for(self, data_type: str, run_id: str = "0") -> Plugin:
        return self.get_plugins(run_id, data_type)[data_type]  # type: ignore[attr-defined]

    def data_itemsize(self, data_type: str) -> int:
        """Bytes per item of a data type."""
        return int(self._plugin_for(data_type).dtype_for(data_type).itemsize)

    def get_dependencies(self, data_type: str) -> set[str]:
        """Every data type ``data_type`` is made from, directly or not."""
        registry = self._registry
        seen: set[str] = set()
        todo = [data_type]
        while todo:
            dt = todo.pop()
            for dep in registry.provider(dt)().depends_on:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    def get_dependency_plugins(self, target: str, run_id: str = "0") -> dict[str, Plugin]:
        """The configured plugins of everything ``target`` depends on, by data type."""
        plugins = self.get_plugins(run_id, target)  # type: ignore[attr-defined]
        own = set(plugins[target].provides)
        return {dt: p for dt, p in plugins.items() if dt not in own}

    def get_data_kinds(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        """``({data_kind: [data types]}, {data_type: data_kind})`` over registered plugins."""
        by_kind: dict[str, list[str]] = {}
        by_type: dict[str, str] = {}
        for dt in self._registry.by_data_type:
            kind = self._plugin_for(dt).data_kind_for(dt)
            by_kind.setdefault(kind, []).append(dt)
            by_type[dt] = kind
        return by_kind, by_type

    @property
    def root_data_types(self) -> set[str]:
        """Registered data types that depend on nothing."""
        return {dt for dt, cls in self._registry.by_data_type.items() if not cls().depends_on}

    @property
    def tree(self) -> dict[str, list[str]]:
        """data type -> what it depends on."""
        out: dict[str, list[str]] = {}
        for cls in set(self._registry.by_data_type.values()):
            p = cls()
            for dt in p.provides:
                out.setdefault(dt, []).extend(p.depends_on)
        return out

    @property
    def inversed_tree(self) -> dict[str, list[str]]:
        """data type -> what depends on it."""
        out: dict[str, list[str]] = {}
        for cls in set(self._registry.by_data_type.values()):
            p = cls()
            for dep in p.depends_on:
                out.setdefault(dep, []).extend(p.provides)
        return out

    @property
    def tree_levels(self) -> dict[bool, dict[str, dict[str, Any]]]:
        """Per data type its level in the graph (0 = source), by the longest (key False) and
        shortest (key True) path from a source, with class, index in provides and order."""
        registry = self._registry.by_data_type
        results: dict[bool, dict[str, dict[str, Any]]] = {}
        for shortest in (False, True):
            levels: dict[str, dict[str, Any]] = {}

            def level(dt: str, _levels: dict = levels, _shortest: bool = shortest) -> int:
                if dt in _levels:
                    return _levels[dt]["level"]
                p = registry[dt]()
                deps = [level(d) for d in p.depends_on]
                lv = (min(deps) if _shortest else max(deps)) + 1 if deps else 0
                _levels[dt] = dict(level=lv, **{"class": registry[dt].__name__},
                                   index=p.provides.index(dt))
                return lv

            for dt in registry:
                level(dt)
            ordered = sorted(levels.items(),
                             key=lambda kv: (kv[1]["level"], kv[1]["class"], kv[1]["index"]))
            for order, (_, value) in enumerate(ordered):
                value["order"] = order
            results[shortest] = dict(ordered)
        return results

    def check_superrun(self) -> None:
        """Raise if a plugin that allows superruns feeds one that does not (strax's rule)."""
        registry = self._registry.by_data_type
        inversed = self.inversed_tree

        def allows(dt: str) -> bool:
            return bool(getattr(registry[dt], "allow_superrun", False))

        def visit(dt: str, seen_allow: str | None, checked: set[str]) -> None:
            if allows(dt):
                seen_allow = dt
            elif seen_allow is not None:
                raise InvalidConfiguration(
                    f"{seen_allow!r} supports superruns, but {dt!r}, which depends on it, "
                    f"does not"
                )
            if dt in checked:
                return
            checked.add(dt)
            for child in inversed.get(dt, ()):
                visit(child, seen_allow, checked)

        for root in self.root_data_types:
            visit(root, None, set())

    def get_save_when(self, target: str) -> SaveWhen:
        """The plugin's ``save_when`` for ``target`` (a per-data-type dict is looked up)."""
        cls = self._registry.provider(target)
        when = cls.save_when
        if isinstance(when, Mapping):
            when = when[target]
        try:
            return SaveWhen(when)
        except ValueError:
            raise InvalidConfiguration(f"save_when of {cls.__name__} is {when!r}, not a "
                                       f"SaveWhen") from None

    def search_field(
        self,
        pattern: str,
        include_code_usage: bool = True,
        return_matches: bool = False,
    ) -> Any:
        """Which data types have a field matching ``pattern`` (fnmatch), and which plugin
        methods use it; printed, or returned as ``(field_matches, code_matches)``."""
        field_matches: dict[str, list[tuple[str, str]]] = defaultdict(list)
        code_matches: dict[str, list[str]] = {}
        for dt in sorted(self._registry.by_data_type):
            plugin = self._plugin_for(dt)
            for name in plugin.dtype_for(dt).names or ():
                if not fnmatch.fnmatch(name, pattern):
                    continue
                field_matches[name].append((dt, type(plugin).__name__))
                if include_code_usage and name not in code_matches:
                    used = self.search_field_usage(name)
                    if used:
                        code_matches[name] = used
        if return_matches:
            return dict(field_matches), code_matches
        for name, matches in field_matches.items():
            print()
            for dt, cls_name in matches:
                print(f"{name} is part of {dt} (provided by {cls_name})")
        for name, functions in code_matches.items():
            print()
            for function in functions:
                print(f"{name} is used in {function}")
        return None

    def search_field_usage(self, search_string: str, plugin: Any = None) -> list[str]:
        """``Class.method`` for every method of the plugins whose source mentions the string."""
        if plugin is None:
            plugin = list(dict.fromkeys(self._registry.by_data_type.values()))
        if not isinstance(plugin, (list, tuple)):
            plugin = [plugin]
        result = []
        for p in plugin:
            cls = p if isinstance(p, type) else type(p)
            for attr, value in vars(cls).items():
                if not isinstance(value, types.FunctionType):
                    continue
                try:
                    source = inspect.getsource(value)
                except (OSError, TypeError):
                    continue
                if search_string in source:
                    result.append(f"{cls.__name__}.{attr}")
        return result

    # ================================================================== keys and storage
    def get_data_key(self, run_id: str, target: str, lineage: dict) -> DataKey:
        """The key of ``target`` for the run with the given lineage (no plugin is consulted:
        ``key_for`` builds the lineage from the registered plugins)."""
        return DataKey(str(run_id), target, lineage)

    def keys_for_runs(self, target: str, run_ids: Any) -> list[DataKey]:
        """The keys of ``target`` for many runs; the lineage is built once unless an option of
        the chain has a per-run default (``default_by_run``)."""
        run_ids = _str_tuple(run_ids)
        if not run_ids:
            return []
        plugins = self.get_plugins(run_ids[0], target)  # type: ignore[attr-defined]
        per_run = any(
            _has_by_run(option)
            for p in set(plugins.values()) for option in type(p).takes_config.values()
        )
        if per_run:
            return [self.key_for(r, target) for r in run_ids]  # type: ignore[attr-defined]
        lineage = plugins[target].lineage
        return [DataKey(r, target, lineage) for r in run_ids]

    def writable_storage(self) -> list[Any]:
        """The context's stores that are not read-only, in their order."""
        return [s for s in self.storage if not getattr(s, "readonly", False)]

    def _is_stored_in(self, run_id: str, target: str, store: Any) -> bool:
        try:
            return bool(store.find(self.key_for(run_id, target)))  # type: ignore[attr-defined]
        except DataNotAvailable:
            return False

    def get_source_sf(self, run_id: str, target: Any, should_exist: bool = False) -> list[Any]:
        """The stores holding ``target`` (every one of several targets) for the run."""
        targets = _str_tuple(target)
        if not targets:
            raise InvalidConfiguration("get_source_sf needs at least one target")
        stores = [s for s in self.storage
                  if all(self._is_stored_in(str(run_id), t, s) for t in targets)]
        if should_exist and not stores:
            raise DataNotAvailable(f"no store holds {list(targets)} for run {run_id!r}",
                                   run_id=str(run_id))
        return stores

    def stored_dependencies(
        self,
        run_id: str,
        target: Any,
        check_forbidden: bool = True,
        _targets_stored: dict | None = None,
    ) -> dict[str, bool] | None:
        """The data types needed to make ``target``, each with whether it is stored; the walk
        stops at stored data. ``DataNotAvailable`` if a source is not stored or a data type in
        the context option ``forbid_creation_of`` would have to be made."""
        if _targets_stored is None:
            _targets_stored = {}
        forbidden = set(_str_tuple(self.context_config.get("forbid_creation_of", ())))
        for t in _str_tuple(target):
            if t in _targets_stored:
                continue
            stored = bool(self.is_stored(run_id, t))  # type: ignore[attr-defined]
            _targets_stored[t] = stored
            if stored:
                continue
            deps = self._registry.provider(t)().depends_on
            if not deps:
                raise DataNotAvailable(f"lowest-level data type {t!r} is not stored",
                                       data_type=t, run_id=str(run_id))
            if check_forbidden and t in forbidden:
                raise DataNotAvailable(
                    f"for run {run_id!r} {t!r} is not stored and the context forbids making it "
                    f"(forbid_creation_of); pass check_forbidden=False to skip this check",
                    data_type=t, run_id=str(run_id),
                )
            self.stored_dependencies(run_id, deps, check_forbidden, _targets_stored)
        return _targets_stored

    def get_source(self, run_id: str, target: str, check_forbidden: bool = True
                   ) -> set[str] | None:
        """The stored data types processing of ``target`` would start from (None if it
        cannot be made)."""
        try:
            stored = self.stored_dependencies(run_id, target, check_forbidden=check_forbidden)
        except DataNotAvailable:
            return None
        return {dt for dt, is_stored in (stored or {}).items() if is_stored}

    def size_mb(self, run_id: str, target: str) -> float:
        """Megabytes (1e6 bytes) of memory the stored ``target`` takes when loaded."""
        md = self.get_metadata(run_id, target)  # type: ignore[attr-defined]
        return sum(int(c.get("nbytes", 0)) for c in md.get("chunks", [])) / 1e6

    def available_for_run(
        self,
        run_id: str,
        include_targets: Any = None,
        exclude_targets: Any = None,
        pattern_type: str = "fnmatch",
    ) -> Any:
        """A table of every registered data type that may be saved (``save_when`` not NEVER),
        filtered by the include/exclude patterns, with whether it is stored for the run."""
        import pandas as pd

        if not isinstance(run_id, str):
            raise InvalidConfiguration(f"available_for_run takes one run_id (a str), got "
                                       f"{run_id!r}")
        rows: dict[str, list] = {"target": [], "is_stored": []}
        for target in self._registry.by_data_type:
            if self.get_save_when(target) == SaveWhen.NEVER:
                continue
            if any(tag_match(target, p, pattern_type, False)
                   for p in _str_tuple(exclude_targets)):
                continue
            includes = _str_tuple(include_targets)
            if includes and not any(tag_match(target, p, pattern_type, False)
                                    for p in includes):
                continue
            rows["target"].append(target)
            rows["is_stored"].append(bool(self.is_stored(run_id, target)))  # type: ignore
        return pd.DataFrame(rows)

    def copy_to_frontend(
        self,
        run_id: str,
        target: str,
        target_frontend_id: int | None = None,
        target_compressor: str | None = None,
        rechunk: bool = False,
        rechunk_to_mb: float | None = None,
    ) -> None:
        """Copy stored data to another store (``self.storage[target_frontend_id]``, or every
        writable store that lacks it), optionally recompressed or rechunked."""
        return _run_sync(
            self.acopy_to_frontend(run_id, target, target_frontend_id, target_compressor,
                                   rechunk, rechunk_to_mb),
            "acopy_to_frontend",
        )

    async def acopy_to_frontend(
        self,
        run_id: str,
        target: str,
        target_frontend_id: int | None = None,
        target_compressor: str | None = None,
        rechunk: bool = False,
        rechunk_to_mb: float | None = None,
    ) -> None:
        """Async form of ``copy_to_frontend``."""
        from .runtime.pipeline import Pipeline

        run_id = str(run_id)
        if len(_str_tuple(target)) != 1:
            raise InvalidConfiguration("copy_to_frontend copies one target at a time")
        if target_frontend_id is not None and target_frontend_id >= len(self.storage):
            raise InvalidConfiguration(
                f"cannot select store {target_frontend_id}: the context has "
                f"{len(self.storage)} store(s)"
            )
        sources = self.get_source_sf(run_id, target)
        if not sources:
            raise DataNotAvailable(f"cannot copy {target!r} of run {run_id!r}: it is not stored",
                                   data_type=target, run_id=run_id)
        source = sources[0]
        candidates = (self.storage if target_frontend_id is None
                      else [self.storage[target_frontend_id]])
        destinations = [s for s in candidates
                        if s is not source and not getattr(s, "readonly", False)
                        and not self._is_stored_in(run_id, target, s)]
        if not destinations:
            raise DataExistsError(
                f"no store to copy {target!r} of run {run_id!r} to: every writable store "
                f"already has it (or none is writable)", data_type=target, run_id=run_id,
            )
        plugin = self._plugin_for(target, run_id)
        key = DataKey(run_id, target, plugin.lineage)  # type: ignore[attr-defined]
        stored_md = source.get_metadata(key)
        shape = _SaverPlugin(
            plugin,
            compressor=target_compressor or stored_md.get("compressor") or plugin.compressor,
            chunk_target_size_mb=(rechunk_to_mb if rechunk and rechunk_to_mb
                                  else stored_md.get("chunk_target_size_mb",
                                                     plugin.chunk_target_size_mb)),
            rechunk_on_save=bool(rechunk),
        )
        for dest in destinations:
            loader = source.loader(key, data_kind=plugin.data_kind_for(target),
                                   dtype=plugin.dtype_for(target))
            saver = dest.saver(key, plugin=shape)
            await Pipeline([], (target,), run_id=run_id, loaders=[loader],
                           savers=[saver]).run()

    # ================================================================== run metadata
    def run_metadata(self, run_id: str, projection: Any = None) -> dict:
        """The run document of ``run_id`` from the first store that has one (flattened as
        strax does; ``projection``: a field name or list of them to keep).

        Unlike strax, every store with a ``run_metadata`` method is asked, whatever its
        ``provide_run_metadata`` (a strax DataDirectory says False there by default, yet holds
        run documents); ``RunMetadataNotAvailable`` if none has one.
        """
        for store in self.storage:
            getter = getattr(store, "run_metadata", None)
            if getter is None:
                continue
            try:
                md = getter(str(run_id))
            except (DataNotAvailable, NotImplementedError, FileNotFoundError):
                continue
            md = flatten_run_metadata(dict(md))
            if md.get("chunks") == []:
                del md["chunks"]
            if projection is not None:
                wanted = set(_str_tuple(projection))
                md = {k: v for k, v in md.items() if k in wanted}
            return md
        raise RunMetadataNotAvailable(f"no run-level metadata for run {run_id!r} in any store",
                                      run_id=str(run_id))

    def run_defaults(self, run_id: str) -> dict:
        """Per-run option defaults from the run document (strax's experimental feature, only
        with the context option ``use_per_run_defaults``). Reported, not applied to plugins."""
        if not self.context_config.get("use_per_run_defaults", False):
            return {}
        try:
            return dict(self.run_metadata(run_id).get(RUN_DEFAULTS_KEY, {}))
        except RunMetadataNotAvailable:
            return {}

    def estimate_run_start_and_end(self, run_id: str, targets: Any = None
                                   ) -> tuple[int, Any]:
        """Run start and end in ns since the epoch: from the run document, else from stored
        data of the targets or what they are made from (floored to seconds), else
        ``(0, inf)``."""
        try:
            md = self.run_metadata(run_id, ("start", "end"))
            return to_ns(md["start"]), to_ns(md["end"])
        except (RunMetadataNotAvailable, KeyError, InvalidConfiguration):
            pass
        if targets:
            for dt in self.get_plugins(run_id, _str_tuple(targets)):  # type: ignore[attr-defined]
                try:
                    md = self.get_metadata(run_id, dt)  # type: ignore[attr-defined]
                except DataNotAvailable:
                    continue
                chunks = md.get("chunks") or []
                if not chunks:
                    continue
                second = 1_000_000_000
                return (int(chunks[0]["start"]) // second * second,
                        int(chunks[-1]["end"]) // second * second)
        warnings.warn(f"could not estimate the start and end of run {run_id!r} from run "
                      f"metadata or stored data: assuming 0 and inf", stacklevel=2)
        return 0, float("inf")

    def to_absolute_time_range(
        self,
        run_id: str,
        targets: Any = None,
        time_range: Any = None,
        seconds_range: Any = None,
        time_within: Any = None,
        full_range: Any = None,
    ) -> tuple[int, int] | None:
        """``(start, end)`` in ns since the epoch from one of: ``time_range`` (returned as
        integers), ``seconds_range`` (seconds since the run start), ``time_within`` (an item,
        e.g. an event: its time to its endtime) or ``full_range=True`` (the whole run)."""
        given = sum(x is not None for x in (time_range, seconds_range, time_within, full_range))
        if given > 1:
            raise InvalidConfiguration(
                "give at most one of time_range, seconds_range, time_within and full_range"
            )
        if seconds_range is not None:
            t0, _ = self.estimate_run_start_and_end(run_id, targets)
            time_range = (t0 + int(1e9 * seconds_range[0]), t0 + int(1e9 * seconds_range[1]))
        if time_within is not None:
            row = np.asarray(time_within).reshape(-1)[:1]
            time_range = (int(row["time"][0]), int(endtime(row)[0]))
        if full_range:
            start, end = self.estimate_run_start_and_end(run_id, targets)
            return int(start), end  # end may be inf when unknown, as in strax
        if time_range is not None:
            time_range = tuple(int(x) for x in time_range)
            if len(time_range) != 2:
                raise InvalidConfiguration(f"time_range must be (start, end), got {time_range}")
        return time_range

    def compare_metadata(self, data1: Any, data2: Any, return_results: bool = False) -> Any:
        """Compare two stored data's metadata (or lineages when one is not stored). Each side
        is ``(run_id, target)``, a path to a metadata JSON file, or a metadata dict. Prints the
        differences; ``return_results=True`` returns the metadata and lineages instead."""

        def extract(data: Any) -> tuple[dict | None, dict]:
            if isinstance(data, (tuple, list)):
                run_id, target = data
                if self.is_stored(run_id, target):  # type: ignore[attr-defined]
                    md = self.get_metadata(run_id, target)  # type: ignore[attr-defined]
                    return md, md["lineage"]
                return None, self.key_for(run_id, target).lineage  # type: ignore
            if isinstance(data, dict):
                return data, data["lineage"]
            if isinstance(data, (str, os.PathLike)):
                with open(data) as f:
                    md = json.load(f)
                return md, md["lineage"]
            raise InvalidConfiguration("compare_metadata takes (run_id, target), a metadata "
                                       "file path or a metadata dict")

        md1, lineage1 = extract(data1)
        md2, lineage2 = extract(data2)
        lineage1, lineage2 = _jsonish(lineage1), _jsonish(lineage2)
        if return_results:
            return dict(metadata1=md1, lineage1=lineage1, metadata2=md2, lineage2=lineage2)
        if md1 is not None and md2 is not None:
            print("Both metadata exist: comparing them")
            differences = _dict_differences(_jsonish(md1), _jsonish(md2))
        else:
            print("Both metadata are not available: comparing lineages")
            differences = _dict_differences(lineage1, lineage2)
        for line in differences or ["no differences"]:
            print(line)
        return None

    # ================================================================== runs in storage
    def scan_runs(
        self,
        check_available: Any = (),
        if_check_available: str = "raise",
        store_fields: Any = (),
    ) -> Any:
        """Update and return ``self.runs``: a DataFrame of the runs the stores know (their run
        documents; a FileStore with ``deep_scan=True`` also reports runs that only have data),
        with ``<data_type>_available`` columns for ``check_available`` data types."""
        import pandas as pd

        store_fields = tuple(dict.fromkeys(
            [*_str_tuple(store_fields), "name", "number", "tags", "mode",
             *_str_tuple(self.context_config.get("store_run_fields", ()))]
        ))
        if if_check_available == "raise":
            check_available = tuple(dict.fromkeys(
                [*_str_tuple(check_available),
                 *_str_tuple(self.context_config.get("check_available", ()))]
            ))
        elif if_check_available == "skip":
            check_available = ()
        else:
            raise InvalidConfiguration(f"if_check_available must be 'raise' or 'skip', got "
                                       f"{if_check_available!r}")
        for target in check_available:
            if self.get_save_when(target) < SaveWhen.ALWAYS:
                warnings.warn(f"{target!r} is not always saved (save_when "
                              f"{self.get_save_when(target).name}), so it is most likely not "
                              f"stored", stacklevel=2)
        docs: list[dict] = []
        seen: set[str] = set()
        for store in self.storage:
            for doc in run_docs(store, store_fields):
                doc = dict(doc)
                name = str(doc.get("name", doc.get("number", "")))
                if name in seen:
                    continue
                seen.add(name)
                doc["name"] = name
                doc.setdefault("number", run_number(name))
                doc.setdefault("mode", "")
                doc.setdefault("source", "")
                for key in ("mode", "source"):
                    if isinstance(doc[key], (list, tuple)):
                        doc[key] = ",".join(map(str, doc[key]))
                doc["tags"] = ",".join(
                    t["name"] if isinstance(t, dict) else str(t) for t in doc.get("tags") or []
                )
                if RUN_DEFAULTS_KEY in doc and not self.context_config.get(
                        "use_per_run_defaults", False):
                    del doc[RUN_DEFAULTS_KEY]
                docs.append(doc)
        runs = pd.DataFrame(docs) if docs else pd.DataFrame([], columns=list(store_fields))
        for col in ("name", "number", "tags", "mode"):
            if col not in runs.columns:
                runs[col] = pd.Series(dtype=object)
        runs = runs[["name"] + [c for c in runs.columns if c != "name"]]
        runs = runs.sort_values("name", kind="stable").reset_index(drop=True)
        self.runs = runs
        for target in check_available:
            runs[target + "_available"] = np.isin(runs["name"].values,
                                                  self.list_available(target))
        return self.runs

    def list_available(self, target: str, runs: Any = None, **kwargs: Any) -> list[str]:
        """Sorted run ids for which ``target`` is stored with this context's lineage (among
        ``runs``, default: the runs ``scan_runs`` finds). Extra keyword arguments make a
        temporary context (``config=...``, ...) as in strax."""
        ctx = self.new_context(**kwargs) if kwargs else self
        if runs is None:
            if ctx.runs is None:
                ctx.scan_runs(if_check_available="skip")
            runs = ctx.runs["name"].values
        keys = ctx.keys_for_runs(target, runs)
        found = set()
        for store in ctx.storage:
            for key in keys:
                if key.run_id in found:
                    continue
                try:
                    if store.find(key):
                        found.add(key.run_id)
                except DataNotAvailable:
                    continue
        return sorted(found)

    def select_runs(
        self,
        run_mode: Any = None,
        run_id: Any = None,
        include_tags: Any = None,
        exclude_tags: Any = None,
        available: Any = (),
        pattern_type: str = "fnmatch",
        ignore_underscore: bool = True,
        force_reload: bool = False,
    ) -> Any:
        """Runs matching a name pattern, run mode, tags and data availability (a DataFrame).

        ``run_id``/``run_mode``/tags: patterns (fnmatch, or regular expressions with
        ``pattern_type='re'``), one or a list (any may match); exclusion wins over inclusion;
        ``available``: data types that must be stored (adds ``<data_type>_available``).
        """
        if pattern_type not in ("fnmatch", "re"):
            raise InvalidConfiguration("pattern_type must be 'fnmatch' or 're'")
        if self.runs is None or force_reload:
            self.scan_runs(if_check_available="skip")
        runs = self.runs.copy()
        for column, wanted in (("name", run_id), ("mode", run_mode)):
            if wanted is None:
                continue
            patterns = _str_tuple(wanted)
            mask: Any = [any(tag_match(str(v), p, pattern_type, False) for p in patterns)
                    for v in runs[column].values]
            runs = runs[np.asarray(mask, dtype=bool)]
        for tags, keep in ((include_tags, True), (exclude_tags, False)):
            if tags is None:
                continue
            if not isinstance(tags, (str, list, tuple)):
                raise InvalidConfiguration("include_tags/exclude_tags must be a str, list or "
                                           "tuple")
            mask = np.asarray(tags_match(runs["tags"].values, tags, pattern_type,
                                         ignore_underscore), dtype=bool)
            runs = runs[mask if keep else ~mask]
        check = tuple(dict.fromkeys(
            [*_str_tuple(available), *_str_tuple(self.context_config.get("check_available", ()))]
        ))
        for target in check:
            runs[target + "_available"] = np.isin(
                runs["name"].values, self.list_available(target, runs=runs["name"].values))
        for target in _str_tuple(available):
            runs = runs[runs[target + "_available"].values.astype(bool)]
        return runs

    # ================================================================== superruns
    def define_run(self, name: str, data: Any, from_run: str | None = None) -> str:
        """Define a superrun ``name`` (given a leading ``_`` if missing, as in strax) made of
        several runs: ``data`` is a list of run ids, a dict ``{run_id: "all" or [[start, end],
        ...]}``, or an array/DataFrame of items (time ranges of ``from_run`` or of each item's
        ``run_id``). Returns the superrun's name.

        The definition is kept in this context, and written as the run document
        ``<name>-metadata.json`` (``sub_run_spec``, and start/end/livetime/tags/mode when
        the sub-runs have run documents) to the first writable store, so other contexts on that
        storage know it. Load it with ``get_superrun_array`` (or ``get_array`` where the Context
        routes superrun ids there).
        """
        import pandas as pd

        if isinstance(data, (pd.DataFrame, np.ndarray)):
            df = pd.DataFrame.from_records(data) if isinstance(data, np.ndarray) else data
            end = (df["endtime"] if "endtime" in df.columns
                   else df["time"] + df["length"] * df["dt"])
            ranges = pd.DataFrame({"start": df["time"].values, "end": np.asarray(end)})
            if from_run is not None:
                spec: dict[str, Any] = {str(from_run): ranges.values.tolist()}
            elif "run_id" in df.columns:
                ranges["run_id"] = df["run_id"].values
                spec = {str(r): g[["start", "end"]].values.tolist()
                        for r, g in ranges.groupby("run_id")}
            else:
                raise InvalidConfiguration("give from_run, or data with a run_id column, to "
                                           "define a superrun from items")
        elif isinstance(data, (list, tuple)):
            spec = {str(r): "all" for r in data}
        elif isinstance(data, dict):
            spec = {str(r): (v if isinstance(v, str) else np.asarray(v).reshape(-1, 2).tolist())
                    for r, v in data.items()}
        else:
            raise InvalidConfiguration(f"cannot define a run from {type(data).__name__}")
        if not spec:
            raise InvalidConfiguration("a superrun needs at least one run")
        if not name.startswith("_"):
            name = "_" + name
        run_md: dict[str, Any] = {}
        starts = {}
        for sub in spec:
            try:
                doc = self.run_metadata(sub)
            except RunMetadataNotAvailable:
                continue
            if "start" in doc and "end" in doc:
                starts[sub] = to_ns(doc["start"])
                run_md["start"] = min(run_md.get("start", starts[sub]), starts[sub])
                run_md["end"] = max(run_md.get("end", to_ns(doc["end"])), to_ns(doc["end"]))
                run_md["livetime"] = run_md.get("livetime", 0) + (
                    to_ns(doc["end"]) - starts[sub]) / 1e9
            for key in ("mode", "source"):
                if doc.get(key):
                    run_md.setdefault(key, [])
                    for v in _str_tuple(doc[key]):
                        if v not in run_md[key]:
                            run_md[key].append(v)
            for tag in doc.get("tags") or []:
                tag_name = tag["name"] if isinstance(tag, dict) else str(tag)
                run_md.setdefault("tags", [])
                if {"name": tag_name} not in run_md["tags"]:
                    run_md["tags"].append({"name": tag_name})
        if len(starts) == len(spec):
            spec = dict(sorted(spec.items(), key=lambda kv: starts[kv[0]]))
        for key in ("start", "end"):
            if key in run_md:
                run_md[key] = datetime.datetime.fromtimestamp(
                    run_md[key] / 1e9, tz=datetime.timezone.utc).isoformat()
        if name in spec or any(self._contains_superrun(sub, name) for sub in spec):
            raise InvalidConfiguration(f"superrun {name!r} would contain itself")
        if not hasattr(self, "_superrun_specs") or self._superrun_specs is None:
            self._superrun_specs: dict[str, dict] = {}
        self._superrun_specs[name] = spec
        for store in self.storage:
            writer = getattr(store, "write_run_metadata", None)
            if writer is not None and not getattr(store, "readonly", False):
                writer(name, {"name": name, "sub_run_spec": spec, **run_md})
                break
        return name

    def _contains_superrun(self, run_id: str, name: str) -> bool:
        """Whether superrun ``run_id`` holds ``name``, directly or through other superruns."""
        if not str(run_id).startswith("_"):
            return False
        try:
            spec = self.superrun_spec(run_id) or {}
        except DataNotAvailable:
            return False
        return name in spec or any(self._contains_superrun(sub, name) for sub in spec)

    def superrun_spec(self, run_id: str) -> dict[str, Any] | None:
        """``{sub_run_id: "all" or [[start, end], ...]}`` of a superrun, None for a plain run."""
        run_id = str(run_id)
        if not run_id.startswith("_"):
            return None
        known = getattr(self, "_superrun_specs", None) or {}
        if run_id in known:
            return known[run_id]
        try:
            spec = self.run_metadata(run_id).get("sub_run_spec")
        except RunMetadataNotAvailable:
            spec = None
        if spec is None:
            raise DataNotAvailable(f"{run_id!r} looks like a superrun (leading '_') but no "
                                   f"superrun of that name is defined; use define_run",
                                   run_id=run_id)
        return spec

    async def aget_superrun_array(self, run_id: str, targets: Any, **kwargs: Any) -> np.ndarray:
        """The targets of every run of a superrun, joined in time order.

        Each sub-run is processed (or loaded) as a plain run with this context's options; a
        sub-run given as time ranges keeps only its items fully inside one of them. Nothing is
        saved under the superrun's name and no plugin sees the runs as one stream (strax's
        ``allow_superrun`` processing is not supported): plugins that work across run borders
        (sums over a superrun, a ``_`` run's own data) must be run on the joined array.
        """
        spec = self.superrun_spec(run_id)
        if spec is None:
            return await self.aget_array(run_id, targets, **kwargs)  # type: ignore[attr-defined]
        # columns are chosen after the join, which needs the time fields
        keep_columns = kwargs.pop("keep_columns", None)
        drop_columns = kwargs.pop("drop_columns", None)
        arrays = []
        for sub, ranges in spec.items():
            arr = await self.aget_array(sub, targets, **kwargs)  # type: ignore[attr-defined]
            if not isinstance(ranges, str) and len(arr):
                ends = endtime(arr)
                keep = np.zeros(len(arr), bool)
                for t0, t1 in ranges:
                    keep |= (arr["time"] >= t0) & (ends <= t1)
                arr = arr[keep]
            arrays.append(arr)
        out = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        if len(out) > 1 and (np.diff(out["time"]) < 0).any():
            out = out[np.argsort(out["time"], kind="stable")]
        if keep_columns or drop_columns:
            from .query import apply_request_selection

            out = apply_request_selection(out, None, keep_columns, drop_columns)
        return out

    def get_superrun_array(self, run_id: str, targets: Any, **kwargs: Any) -> np.ndarray:
        """Blocking form of ``aget_superrun_array`` (not for use inside a running event loop)."""
        return _run_sync(self.aget_superrun_array(run_id, targets, **kwargs),
                         "aget_superrun_array")

    # ================================================================== many runs
    async def aget_array_runs(
        self,
        run_ids: Any,
        targets: Any,
        *,
        add_run_id_field: bool = True,
        run_id_as_bytes: bool = False,
        ignore_errors: bool = False,
        max_runs_in_flight: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """The targets of several runs, joined in run-id order, each item with its ``run_id``
        (strax's multi-run ``get_array``). ``max_runs_in_flight`` runs are processed at once
        (default: the context option ``max_runs_in_flight``, else 2); ``ignore_errors`` drops
        runs that fail, with a warning."""
        run_ids = sorted(_str_tuple(run_ids))
        if not run_ids:
            raise InvalidConfiguration("no run ids given")
        limit = max_runs_in_flight or int(self.context_config.get("max_runs_in_flight", 2))
        semaphore = asyncio.Semaphore(max(1, limit))
        superrun = any(r.startswith("_") for r in run_ids)
        add_field = add_run_id_field and not superrun
        width = max(len(r) for r in run_ids)
        field_dtype = f"S{width}" if run_id_as_bytes else f"U{width}"

        async def one(r: str) -> np.ndarray | None:
            async with semaphore:
                try:
                    if r.startswith("_"):
                        arr = await self.aget_superrun_array(r, targets, **kwargs)
                    else:
                        arr = await self.aget_array(r, targets, **kwargs)  # type: ignore
                except Exception as error:
                    if not ignore_errors:
                        raise
                    warnings.warn(f"run {r!r} failed and is left out: {error}", stacklevel=2)
                    return None
            return add_run_id_field_fn(arr, r, field_dtype) if add_field else arr

        results = await asyncio.gather(*(one(r) for r in run_ids))
        arrays = [a for a in results if a is not None]
        if not arrays:
            raise DataNotAvailable(f"every one of the runs {run_ids} failed")
        return np.concatenate(arrays)

    def get_array_runs(self, run_ids: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        """Blocking form of ``aget_array_runs`` (not for use inside a running event loop)."""
        return _run_sync(self.aget_array_runs(run_ids, targets, **kwargs), "aget_array_runs")

    # ================================================================== reductions
    async def aaccumulate(
        self,
        run_id: str,
        targets: Any,
        fields: Any = None,
        function: Any = None,
        store_first_for_others: bool = True,
        function_takes_fields: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Async form of ``accumulate``."""
        if kwargs.pop("allow_multiple", False):
            raise InvalidConfiguration("accumulate cannot allow_multiple")
        selection = kwargs.pop("selection", None)
        keep_columns = kwargs.pop("keep_columns", None)
        drop_columns = kwargs.pop("drop_columns", None)
        if function is None:
            def function(arr: np.ndarray) -> np.ndarray:
                return arr

            function_takes_fields = False
        fields = None if fields is None else list(_str_tuple(fields))
        result: dict[str, Any] = {"n_rows": 0}
        n_chunks = 0
        seen_data = False
        agen = self.aiter(run_id, targets, **kwargs)  # type: ignore[attr-defined]
        try:
            async for chunk in agen:
                data = apply_request_selection(chunk.data, selection, keep_columns, drop_columns)
                if n_chunks == 0:
                    result["start"] = chunk.start
                    if fields is None:
                        fields = [n for n in cast("tuple[str, ...]", data.dtype.names)
                                  if n not in ("time", "endtime")]
                if store_first_for_others and not seen_data and len(data):
                    for name in cast("tuple[str, ...]", data.dtype.names):
                        if name not in fields:
                            result[name] = data[0][name]
                    seen_data = True
                result["end"] = chunk.end
                result["n_rows"] += len(data)
                out = function(data, fields) if function_takes_fields else function(data)
                if out is None:
                    pass
                elif isinstance(out, dict) or (isinstance(out, np.ndarray)
                                               and out.dtype.fields is not None):
                    for name in fields:
                        result[name] = result.get(name, 0) + np.sum(out[name], axis=0)
                else:
                    result["result"] = np.sum(out, axis=0) + result.get("result", 0)
                n_chunks += 1
        finally:
            await agen.aclose()
        result["n_chunks"] = n_chunks
        return result

    def accumulate(
        self,
        run_id: str,
        targets: Any,
        fields: Any = None,
        function: Any = None,
        store_first_for_others: bool = True,
        function_takes_fields: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Sums over a run, chunk by chunk, without holding the run in memory.

        Without ``function``: the sum of every field (or of ``fields``) except time/endtime.
        ``function(chunk_array)`` (or ``function(chunk_array, fields)`` with
        ``function_takes_fields``) may transform each chunk first: a record array or dict is
        summed per field, a scalar or flat array into ``result``, None is skipped.
        ``store_first_for_others``: fields not summed get their first value. Always added:
        ``start``/``end`` (of the first/last chunk), ``n_chunks`` and ``n_rows``. Other
        arguments are those of ``get_iter`` (``selection`` etc. are applied per chunk).
        """
        return _run_sync(
            self.aaccumulate(run_id, targets, fields, function, store_first_for_others,
                             function_takes_fields, **kwargs),
            "aaccumulate",
        )

    # ================================================================== processing plans
    def get_components(
        self,
        run_id: str,
        targets: Any = (),
        save: Any = (),
        time_range: Any = None,
        **kwargs: Any,
    ) -> ProcessorComponents:
        """What a request would run: plugins to compute, loaders of stored data, savers."""
        targets = _str_tuple(targets)
        pipeline = self.pipeline(run_id, targets, save=_str_tuple(save),  # type: ignore
                                 time_range=time_range, **kwargs)
        plugins = {dt: p for p in pipeline.plugins for dt in p.provides}
        loaders = {getattr(ld, "data_type", None) or ld.provides[0]: ld
                   for ld in pipeline.loaders}
        loader_plugins = {}
        if loaders:
            configured = self.get_plugins(run_id, tuple(loaders))  # type: ignore[attr-defined]
            loader_plugins = {dt: configured[dt] for dt in loaders}
        savers: dict[str, list[Any]] = {}
        for saver in pipeline.savers:
            savers.setdefault(saver.data_type, []).append(saver)
        return ProcessorComponents(plugins=plugins, loaders=loaders,
                                   loader_plugins=loader_plugins, savers=savers,
                                   targets=tuple(pipeline.targets), pipeline=pipeline)

    # ================================================================== data functions
    def apply_data_functions(self, data: np.ndarray, run_id: str, targets: Any) -> np.ndarray:
        """Apply the context option ``apply_data_function`` (a function or list of functions
        ``f(data, run_id, targets)``) to data about to be returned, as strax does."""
        functions = self.context_config.get("apply_data_function", ())
        if callable(functions):
            functions = [functions]
        if not isinstance(functions, (list, tuple)):
            raise InvalidConfiguration(f"apply_data_function must be a function or a list of "
                                       f"them, got {functions!r}")
        for f in functions:
            if not callable(f):
                raise InvalidConfiguration(f"apply_data_function holds {f!r}, which is not "
                                           f"callable")
            data = f(data, run_id, targets)
        return data


add_run_id_field_fn = add_run_id_field


class _SaverPlugin:
    """A plugin seen by a saver with another compressor or chunk size (copy_to_frontend)."""

    def __init__(self, plugin: Plugin, **overrides: Any) -> None:
        self._plugin = plugin
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plugin, name)


def _has_by_run(option: Any) -> bool:
    from .options import OMITTED

    return getattr(option, "default_by_run", OMITTED) is not OMITTED


def _jsonish(obj: Any) -> Any:
    """Tuples as lists, recursively (lineages read from JSON hold lists)."""
    if isinstance(obj, dict):
        return {k: _jsonish(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonish(v) for v in obj]
    return obj


def _dict_differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in a:
                out.append(f"{where}: only in the second: {b[key]!r}")
            elif key not in b:
                out.append(f"{where}: only in the first: {a[key]!r}")
            else:
                out.extend(_dict_differences(a[key], b[key], where))
        return out
    if a != b:
        return [f"{path}: {a!r} != {b!r}"]
    return []


def exporter(export_self: bool = False) -> tuple[Any, list[str]]:
    """strax's module helper: ``export, __all__ = strax.exporter()``, then ``@export`` on each
    public function or class adds its name to ``__all__``."""
    all_: list[str] = ["exporter"] if export_self else []

    def export(obj: Any) -> Any:
        all_.append(obj.__name__)
        return obj

    return export, all_
