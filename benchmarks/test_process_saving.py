"""Saving with 2 process workers: a fused chain writing records in the worker vs unfused plugins
sending records back to be saved.

The reference chain with 2 process workers, every level saved, in two configurations that
differ in TWO ways at once (``fuse_parallel``, the only switch; no separate one exists):

- fused (``fuse_parallel=True``, the default): the parallel plugins are fused into chains, one
  worker job per chunk per chain (here Records+Peaks; PeakBasics stays its own job: the jobs
  are printed), and the saved records, made inside the chain, are written by the worker;
- unfused (``fuse_parallel=False``): every plugin is its own worker job, and records are sent
  back to the parent to be saved there (and to go on to the Peaks job).

So the ratio measures fusion and worker-side saving together, not worker-side saving alone.

Both Contexts are open at once (warm pools, kernels loaded); each round runs fused then unfused
(interleaved, so both see the same machine state), each into a fresh run id; each figure is
its best of 3 rounds (1 round at the 20 MB default size, without ``--benchmark-enable``).
Also reported: the bytes that crossed the process boundary per chunk in each direction, from
the last round (the lanes' ``shm_bytes_in`` / ``shm_bytes_out``). The saved data must be
identical.

    .venv/bin/python -m pytest benchmarks/test_process_saving.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack

import numpy as np
import pytest
from bench_sizes import bench_size

import asyncstrax as ax
from asyncstrax.tpc import plugins as tpc
from asyncstrax.tpc.plugins import make_simulator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import process_tpc_plugins as proc  # noqa: E402 - workers import it by this name
from test_chain_scaling import CHUNKS, Pregenerated  # noqa: E402

# every level the chain makes (raw_records come from memory and are never saved)
LEVELS = ["records", "peaks", "peak_basics", "events", "event_basics"]
PLUGINS = [Pregenerated, proc.ProcessRecords, proc.ProcessPeaks, proc.ProcessPeakBasics,
           tpc.Events, tpc.EventBasics]


@pytest.fixture(scope="module")
def raw_mb(request) -> float:
    mb = bench_size(request.config, 200.0, 20.0)
    sim = make_simulator({"raw_mb": mb, "chunk_mb": mb / 10, "raw_data_rate_mb_s": 200.0})
    CHUNKS[:] = list(sim.iter_chunks(raw_mb=mb))
    return sum(c[2].nbytes for c in CHUNKS) / 1e6


VARIANTS = (("fused", True), ("unfused", False))


def saving_runs(rounds: int) -> dict[str, tuple[float, dict, np.ndarray]]:
    """Per variant: best wall time, boundary bytes per chunk of the last round, saved records."""
    folders = {name: tempfile.mkdtemp(prefix=f"asx_procsave_{name}_") for name, _ in VARIANTS}
    try:
        with ExitStack() as stack:
            ctxs = {}
            for name, fuse in VARIANTS:
                ctx = ctxs[name] = stack.enter_context(ax.Context(
                    storage=ax.FileStore(folders[name]), register=PLUGINS, max_workers=2,
                    fuse_parallel=fuse))
                ctx.make("warm", "event_basics")  # pools started, kernels loaded
            best = dict.fromkeys(ctxs, float("inf"))
            crossing = {}
            for i in range(rounds):
                for name, ctx in ctxs.items():  # interleaved: fused, unfused, fused, ...
                    t0 = time.perf_counter()
                    ctx.make(f"r{i}", "event_basics", save=LEVELS)
                    best[name] = min(best[name], time.perf_counter() - t0)
                    stats = [c for c in ctx.last_summary.components if c.extra]
                    n = len(CHUNKS)
                    crossing[name] = {
                        "in_mb_per_chunk": sum(c.extra["shm_bytes_in"] for c in stats) / n / 1e6,
                        "out_mb_per_chunk": sum(c.extra["shm_bytes_out"] for c in stats) / n
                        / 1e6,
                        "jobs": [c.name for c in stats],
                    }
            records = {name: ctx.get_array(f"r{rounds - 1}", "records")
                       for name, ctx in ctxs.items()}
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)
    return {name: (best[name], crossing[name], records[name]) for name in ctxs}


def test_process_saving(benchmark, raw_mb):
    rounds = 3 if raw_mb > 50 else 1
    by_name = benchmark.pedantic(saving_runs, args=(rounds,), rounds=1)
    (t_in, x_in, rec_in), (t_out, x_out, rec_out) = by_name["fused"], by_name["unfused"]
    assert rec_in.tobytes() == rec_out.tobytes()
    figures = dict(raw_mb=raw_mb, rounds=rounds, fused_worker_saves_s=t_in,
                   unfused_parent_saves_s=t_out, unfused_over_fused_time=t_out / t_in,
                   fused_worker_saves=x_in, unfused_parent_saves=x_out)
    benchmark.extra_info.update(figures)
    print(f"\n{raw_mb:.0f} MB, 2 process workers, every level saved, best of {rounds} "
          f"interleaved rounds:"
          f"\n  fused chain writing records in the worker: {raw_mb / t_in:.0f} MB/s "
          f"({x_in['jobs']}: {x_in['in_mb_per_chunk']:.1f} MB in, "
          f"{x_in['out_mb_per_chunk']:.2f} MB out per chunk)"
          f"\n  unfused plugins sending records back to be saved: {raw_mb / t_out:.0f} MB/s "
          f"({x_out['jobs']}: {x_out['in_mb_per_chunk']:.1f} MB in, "
          f"{x_out['out_mb_per_chunk']:.2f} MB out per chunk)"
          f"\n  unfused time / fused time = {t_out / t_in:.2f}x (fusion and worker-side saving "
          f"together)")
