"""Saving inside worker processes: the reference chain with 2 process workers, every level
saved, with the saved records written by the worker that made them (the default) vs sent
back to the parent to be saved there (``fuse_parallel=False``: every plugin its own job).

Reports wall time of each (best of 3, warm pools, fresh store each run), and the bytes that
crossed the process boundary per chunk in each direction (the lanes' ``shm_bytes_in`` /
``shm_bytes_out``). The saved data must be identical.

    .venv/bin/python -m pytest benchmarks/test_process_saving.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pytest

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
    enabled = request.config.getoption("benchmark_enable", False)
    mb = 200.0 if enabled else 20.0
    sim = make_simulator({"raw_mb": mb, "chunk_mb": mb / 10, "raw_data_rate_mb_s": 200.0})
    CHUNKS[:] = list(sim.iter_chunks(raw_mb=mb))
    return sum(c[2].nbytes for c in CHUNKS) / 1e6


def saving_run(fuse: bool, rounds: int) -> tuple[float, dict, np.ndarray]:
    """Best wall time, boundary bytes per chunk of the last run, and the saved records."""
    folder = tempfile.mkdtemp(prefix="asx_procsave_")
    try:
        with ax.Context(storage=ax.FileStore(folder), register=PLUGINS, max_workers=2,
                        fuse_parallel=fuse) as ctx:
            ctx.make("warm", "event_basics")  # pools started, kernels loaded
            best = float("inf")
            for i in range(rounds):
                t0 = time.perf_counter()
                ctx.make(f"r{i}", "event_basics", save=LEVELS)
                best = min(best, time.perf_counter() - t0)
            stats = [c for c in ctx.last_summary.components if c.extra]
            n = len(CHUNKS)
            crossing = {
                "in_mb_per_chunk": sum(c.extra["shm_bytes_in"] for c in stats) / n / 1e6,
                "out_mb_per_chunk": sum(c.extra["shm_bytes_out"] for c in stats) / n / 1e6,
                "jobs": [c.name for c in stats],
            }
            records = ctx.get_array(f"r{rounds - 1}", "records")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return best, crossing, records


def test_process_saving(benchmark, raw_mb):
    rounds = 3 if raw_mb > 50 else 1

    def measure():
        return saving_run(True, rounds), saving_run(False, rounds)

    (t_in, x_in, rec_in), (t_out, x_out, rec_out) = benchmark.pedantic(measure, rounds=1)
    assert rec_in.tobytes() == rec_out.tobytes()
    figures = dict(raw_mb=raw_mb, inline_s=t_in, parent_saves_s=t_out,
                   speedup=t_out / t_in, inline=x_in, parent_saves=x_out)
    benchmark.extra_info.update(figures)
    print(f"\n{raw_mb:.0f} MB, 2 process workers, every level saved: records written in the "
          f"worker {raw_mb / t_in:.0f} MB/s ({x_in['jobs']}: {x_in['in_mb_per_chunk']:.1f} MB "
          f"in, {x_in['out_mb_per_chunk']:.2f} MB out per chunk); saved by the parent "
          f"{raw_mb / t_out:.0f} MB/s ({x_out['jobs']}: {x_out['in_mb_per_chunk']:.1f} MB in, "
          f"{x_out['out_mb_per_chunk']:.2f} MB out per chunk): {t_out / t_in:.2f}x")
