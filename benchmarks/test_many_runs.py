"""Many runs: 8 TPC runs on a Dask LocalCluster vs the same runs one after another here.

Each run is the reference TPC chain (``asyncstrax.tpc.plugins``: simulated raw_records ->
records -> peaks -> peak_basics -> events -> event_basics) on ``ASYNCSTRAX_BENCH_RUN_MB`` MB of
raw_records (default 100 MB, ~1.5 s of compute; 4 MB when benchmarks are disabled, so the
suite stays quick), event_basics saved (with what the chain always saves).

- sequential: ``ctx.make(run, "event_basics")`` for each run, in this process;
- cluster: ``process_runs(ctx, runs, "event_basics", client)`` on ``local_client()``, the
  LocalCluster ``process_runs`` starts by default: one worker process per core, 1 thread
  each, without Dask's malloc trimming (with it, each run takes ~1.7x the CPU);
- ratio: sequential time / cluster time, measured in one test, interleaved over ``ROUNDS``
  rounds (new run ids each round), best of each side. Goal on 2 cores: >= 1.8.
- cores busy: CPU seconds per wall second of each side (this process; all worker processes).
  One run alone already keeps more than one core busy (the engine overlaps plugins on its
  threads and numba releases the GIL), so the ratio's ceiling is 2 / that figure, not 2.

Both sides are warm: the workers and this process each made a small run first (imports and
numba's cached kernels loaded), and the cluster is started before the timing (its start-up is
reported on its own; with benchmarks disabled there is no warm-up, and no figure to trust).
Each side saves to its own folder; the results are compared.

    PYTHONPATH=. .venv/bin/python -m pytest benchmarks/test_many_runs.py -s --benchmark-enable
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np
import pytest
from bench_sizes import bench_size

distributed = pytest.importorskip("distributed")

import asyncstrax as ax  # noqa: E402
from asyncstrax.distributed import local_client, process_runs  # noqa: E402
from asyncstrax.tpc.plugins import TPC_PLUGINS  # noqa: E402

N_RUNS = 8
ROUNDS = 2
TARGET = "event_basics"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tpc_context(path: str, run_mb: float) -> ax.Context:
    return ax.Context(storage=ax.FileStore(path), register=TPC_PLUGINS,
                      config=dict(raw_mb=run_mb, chunk_mb=min(10.0, run_mb)))


def _warm(path: str) -> None:
    """One small run: imports and numba's cached kernels loaded (as a task on each worker:
    not with ``client.run``, which runs on the worker's event loop; or here)."""
    tpc_context(path, 2.0).make("warm", TARGET)


def _workers_cpu(client: Any) -> float:
    """CPU seconds used so far by all worker processes."""
    return float(sum(client.run(time.process_time).values()))


def test_many_runs_cluster_vs_one_by_one(benchmark: Any, tmp_path: Any,
                                         request: pytest.FixtureRequest) -> None:
    run_mb = bench_size(request.config, 100.0, 4.0, "ASYNCSTRAX_BENCH_RUN_MB")
    rounds = 1 if benchmark.disabled else ROUNDS
    times: dict[str, list[float]] = {"sequential": [], "cluster": []}
    cores: dict[str, list[float]] = {"sequential": [], "cluster": []}  # CPU-s per second
    per_run: list[float] = []
    compared: list[str] = []
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, old_path) if p)
    figures: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        with local_client(dashboard_address=":0") as client:
            n_workers = len(client.scheduler_info()["workers"])
            if not benchmark.disabled:  # disabled: a quick check of correctness only
                client.gather([client.submit(_warm, tempfile.mkdtemp(dir=tmp_path),
                                             pure=False, workers=[address],
                                             allow_other_workers=False)
                               for address in client.scheduler_info()["workers"]])
                _warm(str(tmp_path / "warm_here"))
            figures["cluster_start"] = time.perf_counter() - t0

            sequential_ctx = tpc_context(str(tmp_path / "sequential"), run_mb)
            cluster_ctx = tpc_context(str(tmp_path / "cluster"), run_mb)

            def measure() -> None:
                # fresh run ids each round: made data would be loaded (or skipped) otherwise
                for round_i in range(rounds):
                    runs = [f"r{round_i}_{i:02d}" for i in range(N_RUNS)]
                    t, c = time.perf_counter(), time.process_time()
                    for run_id in runs:
                        sequential_ctx.make(run_id, TARGET)
                    times["sequential"].append(time.perf_counter() - t)
                    cores["sequential"].append((time.process_time() - c) / times["sequential"][-1])
                    c = _workers_cpu(client)
                    t = time.perf_counter()
                    reports = process_runs(cluster_ctx, runs, TARGET, client,
                                           progress_bar=False)
                    times["cluster"].append(time.perf_counter() - t)
                    cores["cluster"].append((_workers_cpu(client) - c) / times["cluster"][-1])
                    assert reports.done == runs, reports.table()
                    per_run.extend(r.seconds for r in reports)
                    compared.append(runs[-1])

            benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path

    figures["sequential"], figures["cluster"] = min(times["sequential"]), min(times["cluster"])
    figures["per_run_on_workers"] = float(np.mean(per_run))
    for run_id in compared:
        ours, theirs = (c.get_array(run_id, TARGET) for c in (sequential_ctx, cluster_ctx))
        for name in ours.dtype.names:  # field by field: NaN equals NaN there
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    ratio = figures["sequential"] / figures["cluster"]
    total_mb = run_mb * N_RUNS
    benchmark.extra_info.update(
        runs=N_RUNS, run_mb=run_mb, workers=n_workers,
        sequential_s=round(figures["sequential"], 2), cluster_s=round(figures["cluster"], 2),
        cluster_start_s=round(figures["cluster_start"], 2),
        per_run_on_workers_s=round(figures["per_run_on_workers"], 2), ratio=round(ratio, 2),
        ratio_with_start=round(figures["sequential"]
                               / (figures["cluster"] + figures["cluster_start"]), 2),
        cores_sequential=round(float(np.mean(cores["sequential"])), 2),
        cores_cluster=round(float(np.mean(cores["cluster"])), 2),
    )
    print(f"\n{N_RUNS} runs x {run_mb:.0f} MB raw_records -> {TARGET}, {n_workers} workers:")
    print(f"  one by one in one process: {figures['sequential']:.2f} s "
          f"({total_mb / figures['sequential']:.0f} MB/s)")
    print(f"  LocalCluster:              {figures['cluster']:.2f} s "
          f"({total_mb / figures['cluster']:.0f} MB/s; {figures['per_run_on_workers']:.2f} s "
          f"per run on a worker; start-up + warm-up {figures['cluster_start']:.2f} s apart)")
    print(f"  ratio {ratio:.2f} (goal >= 1.8 on 2 cores); with start-up "
          f"{benchmark.extra_info['ratio_with_start']:.2f}")
    print(f"  cores busy on average: one by one {benchmark.extra_info['cores_sequential']:.2f} "
          f"(one run already overlaps its plugins on threads), cluster "
          f"{benchmark.extra_info['cores_cluster']:.2f}; load average now "
          f"{os.getloadavg()[0]:.1f}")
    # the figure is the report; a loaded machine must not fail the suite (and with the tiny
    # runs of a disabled benchmark, per-task overhead dominates: correctness only)
    if not benchmark.disabled:
        assert ratio > 0.5

