"""Running many runs on a Dask cluster: one task per run, each saved to shared storage.

``process_one_run`` is what a task runs on a worker; ``process_runs`` / ``aprocess_runs``
submit the runs not yet stored and collect a report of each; ``local_client`` starts the
LocalCluster used when no client is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..context import Context
from ..errors import AsyncstraxError, EventLoopError, InvalidConfiguration
from ..lineage import DataKey
from .dependencies import _require_distributed
from .reports import RunReport, RunReports, _error_text, _stored_items
from .spec import ContextSpec, _as_run_ids, _as_spec, _as_targets

__all__ = [
    "LOCAL_CLUSTER_DASK_CONFIG",
    "aprocess_runs",
    "local_client",
    "local_cluster_kwargs",
    "process_one_run",
    "process_runs",
]


# ============================================================================ on the worker
def process_one_run(spec: ContextSpec, run_id: str, targets: Sequence[str],
                    skip_stored: bool = True,
                    lineages: Mapping[str, Mapping[str, Any]] | None = None,
                    retries: int = 0) -> RunReport:
    """Make and save one run's targets (what each Dask task runs); never raises.

    Progress bars are off on workers. Stored data is checked again here, in case another
    call made the run meanwhile. ``lineages``: the lineage of each target as the client
    builds it; a run whose plugins the worker builds otherwise (another version of a plugin
    installed there, other defaults) fails, naming the data type that differs, instead of
    saving data the client would never find. A failing run is tried again up to ``retries``
    times here (the report gives the last error and the number of attempts). Every exception,
    ``SystemExit`` and ``KeyboardInterrupt`` included, is reported with its traceback, not
    raised: a plugin cannot stop the Dask worker.
    """
    t0 = time.perf_counter()
    targets = _as_targets(targets)
    worker = _worker_address()
    attempts = 0
    while True:
        attempts += 1
        try:
            ctx = spec.build(progress_bar=False)
            if lineages is not None:
                _check_lineages(ctx, run_id, targets, lineages)
            stored = all(ctx.is_stored(run_id, t) for t in targets)
            if skip_stored and stored:
                return RunReport(run_id, "skipped", 0.0, _stored_items(ctx, run_id, targets),
                                 worker=worker, attempts=attempts)
            ctx.make(run_id, targets, save=targets)
            items = _stored_items(ctx, run_id, targets)
            missing = [t for t in targets if t not in items]
            if missing:
                raise AsyncstraxError(f"{missing} were made but not saved (their plugin's "
                                      f"save_when is NEVER, or no storage is writable)",
                                      run_id=run_id)
            # stored before this task (skip_stored=False): read back, not rewritten
            return RunReport(run_id, "skipped" if stored else "ok", time.perf_counter() - t0,
                             items, worker=worker, attempts=attempts)
        except BaseException as error:  # noqa: BLE001 - every failure is reported, not raised
            # BaseException too: a plugin's SystemExit or KeyboardInterrupt would otherwise
            # kill the worker process (and Dask would try the run on 3 more)
            if attempts <= retries and not isinstance(error, LineageMismatch):
                continue
            return RunReport(run_id, "failed", time.perf_counter() - t0, {},
                             error=_error_text(error), traceback=traceback.format_exc(),
                             worker=worker, attempts=attempts)


class LineageMismatch(InvalidConfiguration):
    """The worker builds a target's lineage otherwise than the client (not worth retrying)."""


def _check_lineages(ctx: Context, run_id: str, targets: Sequence[str],
                    lineages: Mapping[str, Mapping[str, Any]]) -> None:
    for t in targets:
        expected = lineages.get(t)
        if expected is None:
            continue
        found = ctx.lineage(run_id, t)
        if DataKey(run_id, t, dict(expected)).lineage_hash != DataKey(run_id, t, found
                                                                      ).lineage_hash:
            raise LineageMismatch(
                f"the worker builds {t!r} with another lineage than the client, so its data "
                f"would be stored where the client never looks: "
                f"{_lineage_difference(expected, found)}; install the same plugin versions "
                f"(and defaults) on the client and the workers", run_id=run_id)


def _lineage_difference(client: Mapping[str, Any], worker: Mapping[str, Any]) -> str:
    """What differs between two lineages (``{data type: (plugin, version, options)}``)."""
    parts = []
    for dt in sorted(set(client) | set(worker)):
        a, b = client.get(dt), worker.get(dt)
        if a == b:
            continue
        if a is None or b is None:
            side = "worker" if a is None else "client"
            parts.append(f"{dt!r} is only in the {side}'s lineage")
            continue
        if not (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list))
                and len(a) == len(b) == 3):
            parts.append(f"{dt!r}: {a!r} on the client, {b!r} on the worker")
            continue
        what = []
        if a[0] != b[0]:
            what.append(f"plugin {a[0]} on the client, {b[0]} on the worker")
        if a[1] != b[1]:
            what.append(f"version {a[1]!r} on the client, {b[1]!r} on the worker")
        opts_a, opts_b = dict(a[2] or {}), dict(b[2] or {})
        for name in sorted(set(opts_a) | set(opts_b)):
            va, vb = opts_a.get(name, "<unset>"), opts_b.get(name, "<unset>")
            if va != vb:
                what.append(f"option {name}={va!r} on the client, {vb!r} on the worker")
        parts.append(f"{dt!r} (plugin {b[0]}): {', '.join(what) or 'differs'}")
    return "; ".join(parts) or "lineages differ"


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
    ``n_workers``: None or 0 for one per core; a negative number is a ``ValueError``.
    """
    _check_n_workers(n_workers)
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
        self.run_ids = _as_run_ids(run_ids)
        self.skip_stored = skip_stored
        self.retries = _check_retries(retries)
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
        # each target's lineage as built here: the worker checks that it builds the same
        self.lineages: dict[str, dict[str, Any]] = {}
        # runs whose targets were all stored when the call began: a worker finding them
        # stored did not make them (with skip_stored they are not even submitted)
        self.stored_at_start: set[str] = set()
        for run_id in self.run_ids:
            try:
                self.lineages[run_id] = {t: ctx.lineage(run_id, t) for t in self.targets}
                if all(ctx.is_stored(run_id, t) for t in self.targets):
                    self.stored_at_start.add(run_id)
                    if skip_stored:
                        self.reports[run_id] = RunReport(
                            run_id, "skipped", 0.0, _stored_items(ctx, run_id, self.targets),
                            attempts=0)
            except AsyncstraxError as error:  # this run only (e.g. a damaged data folder)
                self.reports[run_id] = RunReport(run_id, "failed", 0.0, {},
                                                 error=_error_text(error),
                                                 traceback=traceback.format_exc(), attempts=0)
        self.todo = [r for r in self.run_ids if r not in self.reports]
        self.futures: list[Any] = []
        self.run_of: dict[str, str] = {}
        self.bar = _progress(progress_bar, len(self.run_ids), len(self.reports), self.targets)

    def submit(self, client: Any) -> None:
        token = uuid.uuid4().hex[:8]
        for run_id in self.todo:
            key = f"asyncstrax-run-{run_id}-{token}"
            # retries happen inside the task (it never raises); a worker dying mid-run is
            # Dask's business (distributed.scheduler.allowed-failures)
            future = client.submit(process_one_run, self.spec, run_id, self.targets,
                                   self.skip_stored, self.lineages[run_id], self.retries,
                                   key=key, pure=False)
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
        elif report.status == "skipped" and run_id not in self.stored_at_start:
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


def _check_retries(retries: Any) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
    return retries


def _check_n_workers(n_workers: Any) -> None:
    """``n_workers`` of the LocalCluster: None or 0 for one per core, else at least 1."""
    if n_workers is None:
        return
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
        raise ValueError(f"n_workers must be a whole number >= 0 (0 or None: one per core), "
                         f"got {n_workers!r}")


def _check_local_cluster(client: Any, n_workers: Any,
                         cluster_kwargs: Mapping[str, Any] | None) -> None:
    """Refuse, before any work, a LocalCluster that would have no worker (a wait forever)."""
    _check_n_workers(n_workers)
    if client is None and cluster_kwargs is not None:
        n = cluster_kwargs.get("n_workers")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"cluster_kwargs n_workers={n!r}: the LocalCluster would have no "
                             f"worker and process_runs would wait forever")


def _progress(enabled: bool | None, total: int, initial: int, targets: tuple[str, ...]) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="run", desc=f"making {', '.join(targets)}")


def _warn_if_no_workers(client: Any) -> None:
    """A cluster with no worker yet is not an error (an adaptive cluster scales up once tasks
    wait), but without one nothing moves: say so instead of waiting in silence."""
    try:
        workers = client.scheduler_info().get("workers", {})
    except Exception:  # noqa: BLE001 - an informational check only
        return
    if not workers:
        warnings.warn(f"the Dask cluster at {getattr(client.scheduler, 'address', '?')} has no "
                      f"worker yet: the runs wait until one joins (an adaptive cluster adds "
                      f"them; otherwise start workers, or pass no client to use a "
                      f"LocalCluster)", RuntimeWarning, stacklevel=4)


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
                _warn_if_no_workers(client)
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
    data is stored then only loads it, since savers never overwrite complete data, and is
    reported ``"skipped"``, not made). A run that fails is reported (``status="failed"``,
    ``error``) while the others go on; ``raise_on_error=True`` raises after all runs ended
    instead. ``KeyboardInterrupt`` cancels
    the runs not yet finished (a run already running finishes on its worker; its result is
    dropped) and is raised again.

    ``client``: a ``distributed.Client`` whose cluster is used as it is. Without one, a
    ``LocalCluster`` is started for this call and closed at its end (``local_client``):
    ``n_workers`` worker processes (default, or 0: one per core; negative is a
    ``ValueError``), one thread each, not daemonic, without Dask's malloc trimming
    (``local_cluster_kwargs`` and ``local_client`` explain why; ``cluster_kwargs`` overrides
    any LocalCluster argument). Scripts that start it need the
    ``if __name__ == "__main__":`` guard (workers are spawned).

    ``run_ids``: an iterable of run ids, or one run id (a ``str`` is one run, not its
    characters). A run that cannot even be checked for stored data here (e.g. a damaged data
    folder) is reported failed and the others go on.

    ``retries``: how many more times a failing run is tried, right away on the same worker
    (a transient failure: a file system hiccup, ...); its report gives the last attempt's
    error and ``attempts``. A worker process dying mid-run is another matter: Dask reruns
    the task elsewhere up to its ``distributed.scheduler.allowed-failures`` setting, then
    the run is reported failed (``KilledWorker``).

    Each run's target lineages are sent with it: a worker that builds the plugins otherwise
    (another plugin version installed there) fails the run, naming the data type that
    differs, rather than store data the client would not find.

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
    _check_local_cluster(client, n_workers, cluster_kwargs)
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
    _check_local_cluster(client, n_workers, cluster_kwargs)
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

