"""Many runs on Dask ``distributed``: one run per task, results to shared storage.

A run is the unit of work: each is one Dask task that rebuilds the Context from a picklable
description (``ContextSpec``: plugin classes by import path, configuration, storage folders,
context configuration), makes the targets with the ordinary single-run engine and saves them to
the storage every worker sees. Nothing is sent back but a small ``RunReport``; the data stays
on disk, where ``get_df_many`` (eager) and ``lazy_dataframe`` (a ``dask.dataframe`` with one
partition per stored chunk) read it.

- ``process_runs(context, run_ids, targets, client=None)`` / ``aprocess_runs(...)``: runs
  already stored (same lineage) are skipped before anything is submitted; a failing run is
  reported with its error while the others go on; interrupting the call (KeyboardInterrupt, or
  cancelling the task awaiting ``aprocess_runs``) cancels the runs not yet finished. Without a
  client a ``LocalCluster`` sized to the machine is started and closed again
  (``local_client``, which says why: processes, one thread each, not daemonic, no malloc
  trimming).
- ``get_df_many(ctx, run_ids, target)``: one pandas frame, a ``run_id`` column first.
- ``lazy_dataframe(ctx_or_spec, run_ids, target, columns=None)``: larger than memory.
- ``asyncstrax process RUN... --target T --storage PATH --plugins MODULE``: the command line.

Dask is an optional dependency (``pip install "asyncstrax[distributed]"``): this module imports
without it, and every call that needs it says what to install. ``import asyncstrax`` never
imports this module.

Plugins must be importable on the workers under the same module path as here (``module:Class``):
classes defined in ``__main__``, in a notebook or inside a function cannot be sent by name, and
``ContextSpec.from_context`` says so. With ``processes=True`` (the default cluster), workers are
started with this process's ``sys.path``; on a remote cluster install or upload the module.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import pickle
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .context import Context, to_dataframe
from .errors import AsyncstraxError, DataNotAvailable, EventLoopError, InvalidConfiguration
from .lineage import DataKey
from .plugins.base import Plugin

__all__ = [
    "ContextSpec",
    "RunReport",
    "RunReports",
    "add_process_arguments",
    "aprocess_runs",
    "get_df_many",
    "lazy_dataframe",
    "local_client",
    "local_cluster_kwargs",
    "process_one_run",
    "process_runs",
    "run_process",
]

INSTALL_HINT = 'pip install "asyncstrax[distributed]"'


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise ImportError(
            f"processing many runs needs Dask distributed, which is not installed: "
            f"{INSTALL_HINT}  (missing: {error.name or error})"
        ) from error
    return distributed


def _require_dask_dataframe() -> Any:
    try:
        import dask.dataframe as dd
    except ImportError as error:
        raise ImportError(
            f"lazy_dataframe needs dask.dataframe, which is not installed: {INSTALL_HINT}  "
            f"(missing: {error.name or error})"
        ) from error
    return dd


# ============================================================================ the description
def _import_path(obj: Any, what: str) -> str:
    """``module:QualName`` of a class, checked to import back to the very same object."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    hint = (
        "Dask workers import plugins by module path: define it at the top level of a module "
        "they can import (a .py file on their PYTHONPATH, or installed)"
    )
    if not module or module == "__main__" or "<locals>" in qualname:
        where = "in __main__ (a script or notebook)" if module == "__main__" else (
            "inside a function" if "<locals>" in qualname else "in no module")
        raise InvalidConfiguration(f"{what} {obj!r} is defined {where}; {hint}")
    path = f"{module}:{qualname}"
    try:
        found = _import_object(path)
    except (ImportError, AttributeError) as error:
        raise InvalidConfiguration(f"{what} {obj!r} cannot be imported as {path!r} ({error}); "
                                   f"{hint}") from None
    if found is not obj:
        raise InvalidConfiguration(
            f"{what} {obj!r}: {path!r} imports a different object (was the class redefined or "
            f"replaced after import?); {hint}")
    return path


def _import_object(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:  # an ImportError: reported like a missing module
            raise ImportError(f"{module_name!r} has no {qualname!r}") from None
    return obj


def _store_description(store: Any) -> dict[str, Any]:
    from .storage.files import FileStore

    if isinstance(store, FileStore):
        return dict(path=os.path.abspath(store.path), readonly=store.readonly,
                    compressor=store.compressor, read_ahead=store.read_ahead,
                    max_writes_in_flight=store.max_writes_in_flight, fsync=store.fsync)
    path = getattr(store, "path", None)
    if path is None:
        raise InvalidConfiguration(
            f"storage {store!r} cannot be described for Dask workers: only stores with a "
            f"'path' (FileStore) can be shared between processes")
    return {"class": _import_path(type(store), "storage class"),
            "path": os.path.abspath(os.fspath(path)),
            "readonly": bool(getattr(store, "readonly", False))}


def _build_store(description: Mapping[str, Any]) -> Any:
    from .storage.files import FileStore

    description = dict(description)
    cls_path = description.pop("class", None)
    cls = FileStore if cls_path is None else _import_object(cls_path)
    return cls(**description)


@dataclasses.dataclass(frozen=True)
class ContextSpec:
    """What a worker needs to rebuild a Context: picklable, and small.

    ``plugins``: import paths ``"module:Class"``, registered in order; ``config``: option
    values; ``storage``: one dict per store (``path``, ``readonly`` and the store's other
    arguments; ``class`` as ``"module:Class"`` for stores other than ``FileStore``);
    ``context_config``: the Context's own settings (``max_workers``, ...).
    """

    plugins: tuple[str, ...]
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    storage: tuple[Mapping[str, Any], ...] = ()
    context_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_context(cls, context: Context) -> ContextSpec:
        """The description of a live Context; every plugin class must be importable by path."""
        classes = list(dict.fromkeys(context._plugin_class_registry.values()))
        spec = cls(
            plugins=tuple(_import_path(c, "plugin class") for c in classes),
            config=dict(context.config),
            storage=tuple(_store_description(s) for s in context.storage),
            context_config=dict(context.context_config),
        )
        spec.check_picklable()
        return spec

    @classmethod
    def from_plugins(
        cls,
        plugins: str | Sequence[str | type[Plugin]],
        storage: str | os.PathLike | Sequence[str | os.PathLike] = (),
        config: Mapping[str, Any] | None = None,
        **context_config: Any,
    ) -> ContextSpec:
        """A description from plugin names (as ``--plugins`` takes them) and storage paths.

        Each entry of ``plugins`` is a class, ``"module:Class"``, ``"module:A,B"``, or a module:
        its ``PLUGINS`` list, else its ``register_all(context)`` function, else its one
        ``*_PLUGINS`` list, else every Plugin class it defines.
        """
        if isinstance(plugins, str):
            plugins = [plugins]
        paths: list[str] = []
        for entry in plugins:
            if isinstance(entry, type):
                paths.append(_import_path(entry, "plugin class"))
            else:
                paths.extend(_expand_plugin_arg(entry))
        if isinstance(storage, (str, os.PathLike)):
            storage = [storage]
        return cls(
            plugins=tuple(dict.fromkeys(paths)),
            config=dict(config or {}),
            storage=tuple(dict(path=os.path.abspath(os.fspath(p)), readonly=False)
                          for p in storage),
            context_config=context_config,
        )

    def build(self, **context_config: Any) -> Context:
        """A Context as described (``context_config`` overrides the described settings)."""
        return Context(
            storage=[_build_store(s) for s in self.storage],
            register=[_import_object(p) for p in self.plugins],
            config=dict(self.config),
            **{**self.context_config, **context_config},
        )

    def check_picklable(self) -> None:
        """Refuse, naming the culprit, a description that cannot be sent to Dask workers."""
        try:
            pickle.dumps(self)
        except Exception as error:  # noqa: BLE001 - pickle raises many kinds
            bad = [k for k, v in self.config.items() if not _picklable(v)]
            raise InvalidConfiguration(
                "the context cannot be sent to Dask workers: "
                + (f"option value(s) {bad} cannot be pickled" if bad else
                   f"it cannot be pickled ({type(error).__name__}: {error})")
            ) from None


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001
        return False
    return True


def _expand_plugin_arg(text: str) -> list[str]:
    """``"module:A,B"`` -> two import paths; ``"module"`` -> the module's plugins."""
    text = text.strip()
    module_name, sep, names = text.partition(":")
    if sep:
        return [f"{module_name}:{name.strip()}" for name in names.split(",") if name.strip()]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InvalidConfiguration(f"cannot import plugin module {module_name!r}: {error}"
                                   ) from None
    classes: list[Any]
    if isinstance(getattr(module, "PLUGINS", None), (list, tuple)):
        classes = list(module.PLUGINS)
    elif callable(getattr(module, "register_all", None)):
        scratch = Context()
        module.register_all(scratch)
        classes = list(dict.fromkeys(scratch._plugin_class_registry.values()))
    else:
        lists = [v for k, v in vars(module).items()
                 if k.endswith("_PLUGINS") and isinstance(v, (list, tuple))]
        if len(lists) == 1:
            classes = list(lists[0])
        else:
            classes = [v for v in vars(module).values()
                       if isinstance(v, type) and issubclass(v, Plugin)
                       and v.__module__ == module.__name__ and v.provides]
    if not classes:
        raise InvalidConfiguration(f"module {module_name!r} has no plugins (give a PLUGINS "
                                   f"list, a register_all(context) function or Plugin classes)")
    return [_import_path(c, "plugin class") for c in classes]


def _as_spec(context: Context | ContextSpec) -> ContextSpec:
    if isinstance(context, ContextSpec):
        return context
    if isinstance(context, Context):
        return ContextSpec.from_context(context)
    raise TypeError(f"expected a Context or a ContextSpec, got {type(context).__name__}")


def _as_targets(targets: str | Sequence[str]) -> tuple[str, ...]:
    return (targets,) if isinstance(targets, str) else tuple(targets)


# ============================================================================ reports
@dataclasses.dataclass(frozen=True)
class RunReport:
    """What became of one run: ``status`` is ``"ok"`` (stored during the call), ``"skipped"``
    (already stored before it) or ``"failed"`` (``error``: the error's last line,
    ``traceback``: all of it).

    ``seconds``: time on the worker (0 if skipped); ``items``: stored items per target.
    """

    run_id: str
    status: str
    seconds: float = 0.0
    items: Mapping[str, int] = dataclasses.field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None

    @property
    def ok(self) -> bool:
        """The run's data is stored (made now or before)."""
        return self.status in ("ok", "skipped")


class RunReports(list):
    """The ``RunReport`` of every run, in the order the runs were given."""

    wall_seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        """Run ids that failed, in the order given."""
        return [r.run_id for r in self if r.status == "failed"]

    @property
    def skipped(self) -> list[str]:
        """Run ids already stored before the call."""
        return [r.run_id for r in self if r.status == "skipped"]

    @property
    def done(self) -> list[str]:
        """Run ids made and saved by the call."""
        return [r.run_id for r in self if r.status == "ok"]

    def by_run(self) -> dict[str, RunReport]:
        """The reports by run id."""
        return {r.run_id: r for r in self}

    def raise_if_failed(self) -> None:
        """Raise ``AsyncstraxError`` naming every failed run and its error."""
        failed = [r for r in self if r.status == "failed"]
        if failed:
            lines = "\n".join(f"  {r.run_id}: {r.error}" for r in failed)
            raise AsyncstraxError(f"{len(failed)} of {len(self)} runs failed:\n{lines}")

    def to_dataframe(self) -> Any:
        """One row per run: status, seconds, worker, items per target, error."""
        import pandas as pd

        rows = [dict(run_id=r.run_id, status=r.status, seconds=r.seconds,
                     items=sum(r.items.values()), worker=r.worker, error=r.error) for r in self]
        return pd.DataFrame(rows, columns=["run_id", "status", "seconds", "items", "worker",
                                           "error"])

    def table(self) -> str:
        """A text table of the runs and a count of made, skipped and failed ones."""
        lines = [f"{'run':<16}{'status':<9}{'seconds':>9}{'items':>12}  error"]
        for r in self:
            lines.append(f"{r.run_id:<16}{r.status:<9}{r.seconds:>9.2f}"
                         f"{sum(r.items.values()):>12}  {r.error or ''}")
        lines.append(f"{len(self.done)} made, {len(self.skipped)} skipped, {len(self.failed)} "
                     f"failed in {self.wall_seconds:.1f} s")
        return "\n".join(lines)


def _stored_items(ctx: Context, run_id: str, targets: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for t in targets:
        try:
            md = ctx.get_metadata(run_id, t)
        except DataNotAvailable:
            continue
        out[t] = sum(int(c.get("n", 0)) for c in md.get("chunks", []))
    return out


def _error_text(error: BaseException) -> str:
    """``Type: message`` (the message's first line): enough to tell runs' failures apart."""
    message = str(error).strip()
    if not message:
        return type(error).__name__
    return f"{type(error).__name__}: {message.splitlines()[0]}"


# ============================================================================ on the worker
def process_one_run(spec: ContextSpec, run_id: str, targets: Sequence[str],
                    skip_stored: bool = True) -> RunReport:
    """Make and save one run's targets (what each Dask task runs); never raises.

    Progress bars are off on workers. Stored data is checked again here, in case another
    call made the run meanwhile.
    """
    t0 = time.perf_counter()
    targets = _as_targets(targets)
    worker = _worker_address()
    try:
        ctx = spec.build(progress_bar=False)
        if skip_stored and all(ctx.is_stored(run_id, t) for t in targets):
            return RunReport(run_id, "skipped", 0.0, _stored_items(ctx, run_id, targets),
                             worker=worker)
        ctx.make(run_id, targets, save=targets)
        items = _stored_items(ctx, run_id, targets)
        missing = [t for t in targets if t not in items]
        if missing:
            raise AsyncstraxError(f"{missing} were made but not saved (their plugin's "
                                  f"save_when is NEVER, or no storage is writable)",
                                  run_id=run_id)
        return RunReport(run_id, "ok", time.perf_counter() - t0, items, worker=worker)
    except Exception as error:  # noqa: BLE001 - every failure is reported, not raised
        return RunReport(run_id, "failed", time.perf_counter() - t0, {},
                         error=_error_text(error), traceback=traceback.format_exc(),
                         worker=worker)


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:  # noqa: BLE001 - not on a worker
        return None


# ============================================================================ the cluster
def _n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def local_cluster_kwargs(n_workers: int | None = None, **overrides: Any) -> dict[str, Any]:
    """The ``LocalCluster`` arguments ``process_runs`` uses when given no client.

    One worker process per core, one thread each: a run is a whole pipeline with its own event
    loop and thread pool, and much of the framework is Python, so runs in threads of one
    process would share a GIL; processes give each run a core, and one thread per worker means
    one run per core at a time (each run's own ``max_workers`` still applies inside it). The
    memory limit is the machine's divided among the workers (Dask's ``"auto"``); the
    dashboard is Dask's default (``:8787``, another port if taken; it needs bokeh).
    """
    kwargs: dict[str, Any] = dict(
        n_workers=n_workers or _n_cores(),
        threads_per_worker=1,
        processes=True,
        memory_limit="auto",
    )
    kwargs.update(overrides)
    return kwargs


#: dask configuration while our LocalCluster lives (see ``local_client``)
LOCAL_CLUSTER_DASK_CONFIG: dict[str, Any] = {
    "distributed.worker.daemon": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


@contextlib.contextmanager
def local_client(n_workers: int | None = None, **cluster_kwargs: Any) -> Any:
    """A ``distributed.Client`` of a new LocalCluster (``local_cluster_kwargs``), closed on exit.

    What ``process_runs`` starts when given no client; use it to keep one cluster over several
    calls. Two Dask settings differ from Dask's defaults, for the whole life of the cluster
    (restarted workers included):

    - workers are not daemonic processes (``distributed.worker.daemon: False``), so a run whose
      plugins use ``parallel="process"`` can start its own process pool inside the worker
      (daemonic processes may not have children); the nanny still stops its worker on close;
    - ``MALLOC_TRIM_THRESHOLD_`` is not set in the workers. Dask sets it (to 65536) so that
      workers give memory back to the OS, but setting it switches off glibc's adaptive mmap
      threshold: every chunk-sized array is then freshly mapped memory, slow to touch, and a
      TPC run took ~1.7x the CPU time it takes in a plain process. asyncstrax bounds memory
      with its channels instead. (On a cluster of your own, set
      ``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null`` likewise.)
    """
    distributed = _require_distributed()
    import dask

    with dask.config.set(LOCAL_CLUSTER_DASK_CONFIG):
        cluster = distributed.LocalCluster(**local_cluster_kwargs(n_workers, **cluster_kwargs))
        try:
            client = distributed.Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()


class _Batch:
    """One call of process_runs: what to submit, the futures, and the reports as they come."""

    def __init__(self, context: Context | ContextSpec, run_ids: Iterable[str],
                 targets: str | Sequence[str], *, skip_stored: bool, progress_bar: bool | None,
                 retries: int) -> None:
        self.spec = _as_spec(context)
        self.spec.check_picklable()
        self.targets = tuple(dict.fromkeys(_as_targets(targets)))
        if not self.targets:
            raise ValueError("process_runs needs at least one target")
        self.run_ids = list(dict.fromkeys(str(r) for r in run_ids))
        self.skip_stored = skip_stored
        self.retries = retries
        self.t0 = time.perf_counter()
        ctx = context if isinstance(context, Context) else self.spec.build()
        if not any(not getattr(s, "readonly", False) for s in ctx.storage):
            raise InvalidConfiguration("process_runs saves every run to storage: give the "
                                       "context a writable storage (e.g. FileStore(path))")
        plugins = ctx.get_plugins(self.run_ids[0] if self.run_ids else "0", self.targets)
        kinds = {t: plugins[t].data_kind_for(t) for t in self.targets}
        if len(set(kinds.values())) > 1:  # one request makes one kind: every run would fail
            raise InvalidConfiguration(f"targets {kinds} are of several data kinds; process "
                                       f"one kind per call")
        self.reports: dict[str, RunReport] = {}
        for run_id in self.run_ids:
            if skip_stored and all(ctx.is_stored(run_id, t) for t in self.targets):
                self.reports[run_id] = RunReport(run_id, "skipped", 0.0,
                                                 _stored_items(ctx, run_id, self.targets))
        self.todo = [r for r in self.run_ids if r not in self.reports]
        self.futures: list[Any] = []
        self.run_of: dict[str, str] = {}
        self.bar = _progress(progress_bar, len(self.run_ids), len(self.reports), self.targets)

    def submit(self, client: Any) -> None:
        token = uuid.uuid4().hex[:8]
        for run_id in self.todo:
            key = f"asyncstrax-run-{run_id}-{token}"
            future = client.submit(process_one_run, self.spec, run_id, self.targets,
                                   self.skip_stored, key=key, pure=False, retries=self.retries)
            self.futures.append(future)
            self.run_of[future.key] = run_id

    def record(self, future: Any, report: RunReport | None, error: BaseException | None
               ) -> None:
        run_id = self.run_of[future.key]
        if report is None:
            # the task itself never raises: this is the cluster failing (worker killed,
            # cancelled, lost data), not the run's code
            status = getattr(future, "status", "error")
            report = RunReport(run_id, "failed", 0.0, {},
                               error=_error_text(error) if error is not None else
                               f"task {status}",
                               traceback="".join(traceback.format_exception(error))
                               if error is not None else None)
        elif report.status == "skipped" and run_id in self.todo:
            # not stored when this call began, stored now: made during the call, most often by
            # an earlier attempt of this very task whose worker died after saving
            report = dataclasses.replace(report, status="ok")
        self.reports[run_id] = report
        if self.bar is not None:
            self.bar.update(1)
            failed = sum(r.status == "failed" for r in self.reports.values())
            if failed:
                self.bar.set_postfix(failed=failed)

    def pending(self) -> list[Any]:
        return [f for f in self.futures if self.run_of[f.key] not in self.reports]

    def result(self) -> RunReports:
        reports = RunReports(self.reports[r] for r in self.run_ids if r in self.reports)
        reports.wall_seconds = time.perf_counter() - self.t0
        return reports

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _progress(enabled: bool | None, total: int, initial: int, targets: tuple[str, ...]) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="run", desc=f"making {', '.join(targets)}")


def _wait_sync(batch: _Batch, client: Any) -> None:
    """Collect every future of a (non-asynchronous) client as it completes."""
    distributed = _require_distributed()
    for future in distributed.as_completed(batch.futures):
        if future.status == "finished":
            try:
                batch.record(future, future.result(), None)
            except Exception as error:  # noqa: BLE001 - result lost between finish and fetch
                batch.record(future, None, error)
        elif future.status == "cancelled":
            batch.record(future, None, None)
        else:
            batch.record(future, None, future.exception())


def _run_blocking(batch: _Batch, client: Any, n_workers: int | None,
                  cluster_kwargs: Mapping[str, Any] | None,
                  cancelled: threading.Event | None = None,
                  holder: list[Any] | None = None) -> RunReports:
    """Submit and collect with a regular client (started here if None, and closed).

    ``cancelled`` and ``holder`` serve ``aprocess_runs``: the client in use is put in
    ``holder`` for the event loop to cancel futures with, and nothing is submitted (or what
    was is cancelled) once ``cancelled`` is set.
    """
    try:
        if not batch.todo:
            return batch.result()
        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(local_client(n_workers, **(cluster_kwargs or {})))
            if holder is not None:
                holder.append(client)
            if cancelled is not None and cancelled.is_set():
                return batch.result()
            try:
                batch.submit(client)
                if cancelled is not None and cancelled.is_set():
                    client.cancel(batch.pending())
                _wait_sync(batch, client)
            except BaseException:
                pending = batch.pending()
                if pending:
                    client.cancel(pending)
                raise
        return batch.result()
    finally:
        batch.close()


def process_runs(
    context: Context | ContextSpec,
    run_ids: Iterable[str],
    targets: str | Sequence[str],
    client: Any = None,
    *,
    skip_stored: bool = True,
    progress_bar: bool | None = None,
    n_workers: int | None = None,
    cluster_kwargs: Mapping[str, Any] | None = None,
    retries: int = 0,
    raise_on_error: bool = False,
) -> RunReports:
    """Make and save ``targets`` for many runs on Dask, one run per task; a report per run.

    ``context``: a Context (described with ``ContextSpec.from_context``: its plugin classes
    must be importable by module path) or a ``ContextSpec``. Its storage must be shared by the
    workers (same paths) and writable. Runs whose targets are all stored with this lineage are
    skipped before anything is submitted (``skip_stored=False`` submits every run; one whose
    data is stored then only loads it: savers never overwrite complete data). A run that
    fails is reported (``status="failed"``, ``error``) while the others go on;
    ``raise_on_error=True`` raises after all runs ended instead. ``KeyboardInterrupt`` cancels
    the runs not yet finished (a run already running finishes on its worker; its result is
    dropped) and is raised again.

    ``client``: a ``distributed.Client`` whose cluster is used as it is. Without one, a
    ``LocalCluster`` is started for this call and closed at its end (``local_client``):
    ``n_workers`` worker processes (default one per core), one thread each, not daemonic,
    without Dask's malloc trimming (``local_cluster_kwargs`` and ``local_client`` explain why;
    ``cluster_kwargs`` overrides any LocalCluster argument). Scripts that start it need the
    ``if __name__ == "__main__":`` guard (workers are spawned).

    ``progress_bar``: a tqdm bar over runs (None: when stderr is a terminal).

    This is the blocking form: inside a running event loop use ``await aprocess_runs(...)``.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise EventLoopError("process_runs is the blocking form, called inside a running "
                             "event loop; use 'await aprocess_runs(...)' instead")
    if client is not None and getattr(client, "asynchronous", False):
        raise TypeError("this client is asynchronous: use 'await aprocess_runs(...)' with it")
    batch = _Batch(context, run_ids, targets, skip_stored=skip_stored,
                   progress_bar=progress_bar, retries=retries)
    reports = _run_blocking(batch, client, n_workers, cluster_kwargs)
    if raise_on_error:
        reports.raise_if_failed()
    return reports


async def aprocess_runs(
    context: Context | ContextSpec,
    run_ids: Iterable[str],
    targets: str | Sequence[str],
    client: Any = None,
    *,
    skip_stored: bool = True,
    progress_bar: bool | None = None,
    n_workers: int | None = None,
    cluster_kwargs: Mapping[str, Any] | None = None,
    retries: int = 0,
    raise_on_error: bool = False,
) -> RunReports:
    """``process_runs`` for async applications; cancelling the awaiting task cancels the runs.

    With an asynchronous client (``Client(asynchronous=True)``) everything happens on this
    event loop. Otherwise (a regular client, or none: a LocalCluster is started) the waiting
    runs on a worker thread, and cancellation cancels the pending Dask futures, waits for that
    thread to end (and for the cluster it started to close), then raises CancelledError.
    """
    if client is not None and getattr(client, "asynchronous", False):
        batch = _Batch(context, run_ids, targets, skip_stored=skip_stored,
                       progress_bar=progress_bar, retries=retries)
        reports = await _run_async_client(batch, client)
    else:
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(None, lambda: _Batch(
            context, run_ids, targets, skip_stored=skip_stored, progress_bar=progress_bar,
            retries=retries))
        holder: list[Any] = []
        cancelled = threading.Event()
        work = loop.run_in_executor(None, _run_blocking, batch, client, n_workers,
                                    cluster_kwargs, cancelled, holder)
        try:
            reports = await asyncio.shield(work)
        except asyncio.CancelledError:
            cancelled.set()
            if holder:
                cancel_client = holder[0]
                pending = batch.pending()
                if pending:
                    await loop.run_in_executor(None, cancel_client.cancel, pending)
            # the thread ends once the cancelled futures are collected (and closes its cluster)
            with contextlib.suppress(Exception):
                await asyncio.shield(work)
            raise
    if raise_on_error:
        reports.raise_if_failed()
    return reports


async def _run_async_client(batch: _Batch, client: Any) -> RunReports:
    distributed = _require_distributed()
    try:
        if not batch.todo:
            return batch.result()
        batch.submit(client)
        try:
            async for future in distributed.as_completed(batch.futures):
                if future.status == "cancelled":
                    batch.record(future, None, None)
                    continue
                try:
                    report = await future
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - the cluster failed this task
                    batch.record(future, None, error)
                else:
                    batch.record(future, report, None)
        except BaseException:
            pending = batch.pending()
            if pending:
                await client.cancel(pending)
            raise
        return batch.result()
    finally:
        batch.close()


# ============================================================================ loading
def get_df_many(ctx: Context, run_ids: Iterable[str], targets: str | Sequence[str],
                **kwargs: Any) -> Any:
    """``ctx.get_df`` of several runs, concatenated, with a ``run_id`` column first.

    Runs come in the order given (strax sorts them); the index runs from 0 over all rows.
    Runs not stored are made here, one after another (``max_runs_in_flight`` is accepted for
    strax's sake): make many with ``process_runs`` first. strax's multi-run arguments
    ``ignore_errors`` (leave a failing run out, with a warning), ``add_run_id_field`` and
    ``run_id_as_bytes`` apply; other ``kwargs`` go to ``get_df`` for every run.
    """
    import pandas as pd

    from .context import to_dataframe

    stacklevel = kwargs.pop("_stacklevel", 3)  # the user's line for warnings, via get_df too
    ignore_errors = kwargs.pop("ignore_errors", False)
    add_run_id = kwargs.pop("add_run_id_field", True)
    as_bytes = kwargs.pop("run_id_as_bytes", False)
    kwargs.pop("max_runs_in_flight", None)
    frames: list[Any] = []
    for run_id in dict.fromkeys(str(r) for r in run_ids):
        try:
            data = ctx.get_array(run_id, targets, **kwargs)
        except AsyncstraxError as error:
            if not ignore_errors:
                raise
            warnings.warn(f"run {run_id!r} failed and is left out: {error}",
                          stacklevel=stacklevel - 1)
            continue
        # fields left out of the frame are the same for every run: say so once
        df = to_dataframe(data, warn=not frames, stacklevel=stacklevel)
        if add_run_id:
            label: Any = run_id.encode() if as_bytes else run_id
            df.insert(0, "run_id", pd.Series([label] * len(df), index=df.index,
                                             dtype=object if as_bytes else str))
        frames.append(df)
    if not frames:
        raise ValueError("get_df_many needs at least one run id")
    return pd.concat(frames, ignore_index=True)


@dataclasses.dataclass(frozen=True)
class _ChunkFile:
    """One stored chunk, as a dataframe partition: everything needed to read it anywhere."""

    folder: str
    run_id: str
    data_type: str
    lineage: Mapping[str, Any]
    data_kind: str
    dtype: str  # repr(dtype.descr), as in the metadata
    compressor: str
    chunk_i: int
    info: Mapping[str, Any]
    offset: int  # index of its first row in the whole frame


def _read_chunk_frame(part: _ChunkFile, columns: Sequence[str] | None = None) -> Any:
    """One stored chunk as a DataFrame: read, decompress, keep ``columns`` (a partition of
    ``lazy_dataframe``; dask passes the columns it needs, so a selection reaches the reader)."""
    import pandas as pd

    from .storage.files import FileLoader

    key = DataKey(part.run_id, part.data_type, dict(part.lineage))
    dtype = np.dtype(_literal_dtype(part.dtype))
    metadata = {"dtype": part.dtype, "compressor": part.compressor, "chunks": [dict(part.info)]}
    loader = FileLoader(part.folder, key, metadata, data_kind=part.data_kind, dtype=dtype)
    data = loader.read_chunk(part.chunk_i, dict(part.info)).data
    if columns is None:
        columns = ["run_id", *_scalar_fields(dtype)]
    index = pd.RangeIndex(part.offset, part.offset + len(data))
    frame = pd.DataFrame({name: data[name] for name in columns if name != "run_id"},
                         index=index)
    if "run_id" in columns:
        frame.insert(0, "run_id", pd.Series([part.run_id] * len(data), dtype=object,
                                            index=index))
    return frame[list(columns)]


def _scalar_fields(dtype: np.dtype) -> list[str]:
    """The fields a dataframe can hold (``get_df`` leaves multi-dimensional ones out)."""
    fields: Mapping[str, Any] = dtype.fields or {}
    return [name for name in dtype.names or () if fields[name][0].shape == ()]


def _literal_dtype(text: str) -> Any:
    from ast import literal_eval

    return literal_eval(text)


def lazy_dataframe(
    ctx_or_spec: Context | ContextSpec,
    run_ids: Iterable[str],
    target: str,
    columns: Sequence[str] | None = None,
) -> Any:
    """A ``dask.dataframe`` over the stored ``target`` of many runs, one partition per chunk.

    Nothing is read until computed, and then only the partitions (chunk files) asked for;
    each is decompressed and only ``columns`` kept (default: every field but the
    multi-dimensional ones, which ``get_df`` leaves out too; asking for one is an error). A
    ``run_id`` column comes first, and the index numbers the rows over all runs in order, so
    the divisions are known and the frame equals ``get_df_many`` of the same runs. Runs not
    stored (with this context's lineage) raise ``DataNotAvailable``: make them first with
    ``process_runs``. Empty chunks have no file and no partition.
    """
    dd = _require_dask_dataframe()
    import pandas as pd

    ctx = ctx_or_spec.build() if isinstance(ctx_or_spec, ContextSpec) else ctx_or_spec
    run_ids = list(dict.fromkeys(str(r) for r in run_ids))
    plugin = ctx.get_single_plugin(run_ids[0] if run_ids else "0", target)
    dtype = np.dtype(plugin.dtype_for(target))
    scalar = _scalar_fields(dtype)
    names = list(dtype.names or ())
    if columns is None:
        wanted = ["run_id", *scalar]
    else:
        wanted = list(dict.fromkeys(columns))
        for name in wanted:
            if name == "run_id":
                continue
            if name not in names:
                raise KeyError(f"{target!r} has no field {name!r}; fields: {names}")
            if name not in scalar:
                raise ValueError(f"field {name!r} of {target!r} is multi-dimensional: a "
                                 f"dataframe column cannot hold it (use get_array)")
    parts: list[_ChunkFile] = []
    offset = 0
    for run_id in run_ids:
        if ctx.superrun_spec(run_id) is not None:
            raise InvalidConfiguration(
                f"{run_id!r} is a superrun, stored as its runs: give those runs, or use "
                f"get_df_many, which joins a superrun's runs")
        key = ctx.key_for(run_id, target)
        store = next((s for s in ctx.storage if s.find(key)), None)
        if store is None:
            raise DataNotAvailable(f"{target!r} of run {run_id!r} is not stored with this "
                                   f"lineage; make it first (process_runs)",
                                   data_type=target, run_id=run_id)
        metadata = store.get_metadata(key)
        folder = store.folder(key)
        data_kind = ctx.get_single_plugin(run_id, target).data_kind_for(target)
        for chunk_i, info in enumerate(metadata.get("chunks", [])):
            n = int(info.get("n", 0))
            if n == 0:
                continue
            parts.append(_ChunkFile(folder, run_id, target, key.lineage, data_kind,
                                    metadata["dtype"], metadata.get("compressor", "blosc"),
                                    chunk_i, info, offset))
            offset += n
    meta_all = to_dataframe(np.zeros(0, dtype), warn=False)
    meta_all.insert(0, "run_id", pd.Series([], dtype=object))
    meta = meta_all[wanted]
    if not parts:
        return dd.from_pandas(meta, npartitions=1)
    divisions = (*[p.offset for p in parts], offset - 1)
    return dd.from_map(_read_chunk_frame, parts, columns=wanted, meta=meta, divisions=divisions,
                       label=f"load-{target}", enforce_metadata=False)


# ============================================================================ command line
def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``asyncstrax process``."""
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run ids to process")
    parser.add_argument("--target", "-t", action="append", required=True,
                        help="data type to make and save (repeat or comma-separate for more)")
    parser.add_argument("--storage", required=True, metavar="PATH",
                        help="storage folder every worker can read and write")
    parser.add_argument("--plugins", action="append", required=True,
                        metavar="MODULE[:Class,...]",
                        help="plugins: a module (its PLUGINS list or register_all) or "
                             "module:Class,Class; e.g. asyncstrax.tpc.plugins")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="address of a Dask scheduler (default: start a LocalCluster)")
    parser.add_argument("--n-workers", type=int, default=None,
                        help="workers of the LocalCluster (default: one per core)")
    parser.add_argument("--config", action="append", default=[], metavar="OPTION=VALUE",
                        help="plugin option (value as JSON, else a string); repeatable")
    parser.add_argument("--max-workers", type=int, default=None,
                        help="threads of each run's pipeline (default: the Context's)")
    parser.add_argument("--no-skip", action="store_true",
                        help="do not check for stored runs before submitting")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_config(items: Sequence[str]) -> dict[str, Any]:
    config = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            # a usage error: run_process prints it in one line, exit code 2
            raise InvalidConfiguration(f"--config wants OPTION=VALUE, got {item!r}")
        try:
            config[name.strip()] = json.loads(text)
        except ValueError:
            config[name.strip()] = text
    return config


def run_process(args: argparse.Namespace) -> int:
    """``asyncstrax process``: 0 if every run was made or skipped, 1 if any failed."""
    targets = [t.strip() for arg in args.target for t in arg.split(",") if t.strip()]
    context_config = {} if args.max_workers is None else {"max_workers": args.max_workers}
    try:
        spec = ContextSpec.from_plugins(args.plugins, storage=args.storage,
                                        config=_parse_config(args.config), **context_config)
        spec.build()  # fail here, with the plugin or option at fault, before any cluster
    except (AsyncstraxError, ImportError) as error:
        print(f"asyncstrax process: {error}", file=sys.stderr)
        return 2
    progress = False if args.no_progress else None
    try:
        distributed = _require_distributed()
        if args.scheduler:
            try:
                client = distributed.Client(args.scheduler)
            except OSError as error:
                print(f"asyncstrax process: cannot reach the scheduler {args.scheduler}: "
                      f"{error}", file=sys.stderr)
                return 2
            with client:
                reports = process_runs(spec, args.runs, targets, client,
                                       skip_stored=not args.no_skip, progress_bar=progress)
        else:
            reports = process_runs(spec, args.runs, targets, skip_stored=not args.no_skip,
                                   progress_bar=progress, n_workers=args.n_workers)
    except (AsyncstraxError, ImportError) as error:
        print(f"asyncstrax process: {error}", file=sys.stderr)
        return 2
    print(reports.table())
    for r in reports:
        if r.status == "failed" and r.traceback:
            print(f"\n--- {r.run_id} ---\n{r.traceback}", file=sys.stderr)
    return 1 if reports.failed else 0
