"""The whole reference chain with 2 workers vs 1, threads and processes, warm, in one run.

With ``max_workers=2`` the parallel plugins Records -> Peaks -> PeakBasics run as one fused
chain (one step per chunk in one thread hop or one process job). Note that the 1-worker run is
not single-core: different plugins already overlap on the pool's threads (about 1.5 of the 2
cores busy), so on this machine 2 workers can be at most about 2 / 1.5 = 1.3x faster than 1.
The same 1-worker run pinned to one CPU (every thread of this process, then unpinned) is
measured too: the speed-up of 2 cores over 1 core, which is what a 1-worker run measures where
plugins cannot overlap.

    .venv/bin/python -m pytest benchmarks/test_chain_scaling.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

import asyncstrax as ax
from asyncstrax.tpc import plugins as tpc
from asyncstrax.tpc.plugins import make_simulator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import process_tpc_plugins as proc  # noqa: E402 - workers import it by this name

CHUNKS: list = []


class Pregenerated(ax.Plugin):
    """raw_records simulated once, handed over as they are (simulation is not timed)."""

    provides = "raw_records"
    depends_on = ()
    data_kind = "raw_records"
    dtype = np.dtype(ax.dtypes.raw_record_dtype())
    save_when = ax.SaveWhen.NEVER

    async def iterate(self):
        for start, end, data in CHUNKS:
            yield self.chunk(start=start, end=end, data=data)


THREADS = [Pregenerated, tpc.Records, tpc.Peaks, tpc.PeakBasics, tpc.Events, tpc.EventBasics]
PROCESSES = [Pregenerated, proc.ProcessRecords, proc.ProcessPeaks, proc.ProcessPeakBasics,
             tpc.Events, tpc.EventBasics]


@pytest.fixture(scope="module")
def raw_mb(request) -> float:
    enabled = request.config.getoption("benchmark_enable", False) or not request.config.getoption(
        "benchmark_disable", False)
    mb = 200.0 if enabled else 20.0
    sim = make_simulator({"raw_mb": mb, "chunk_mb": mb / 10, "raw_data_rate_mb_s": 200.0})
    CHUNKS[:] = list(sim.iter_chunks(raw_mb=mb))
    return sum(c[2].nbytes for c in CHUNKS) / 1e6


@contextmanager
def one_cpu() -> Iterator[None]:
    """Pin every thread of this process (and the threads they start) to one CPU, then unpin."""
    def all_threads(cpus: set[int]) -> None:
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:  # a thread that just ended
                pass

    allowed = os.sched_getaffinity(0)
    all_threads({min(allowed)})
    try:
        yield
    finally:
        all_threads(allowed)


def best_seconds(plugins: list, workers: int, rounds: int) -> tuple[float, np.ndarray]:
    with ax.Context(register=plugins, max_workers=workers) as ctx:
        result = ctx.get_array("r", "event_basics")  # warm: kernels, pools, threads
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            ctx.make("r", "event_basics")
            best = min(best, time.perf_counter() - t0)
    return best, result


def test_chain_scaling(benchmark, raw_mb):
    rounds = 3 if raw_mb > 50 else 1

    def measure():
        with one_cpu():
            pinned = best_seconds(THREADS, 1, rounds)
        return (best_seconds(THREADS, 1, rounds), best_seconds(THREADS, 2, rounds),
                best_seconds(PROCESSES, 2, rounds), pinned)

    (t1, r1), (t2, r2), (tp, rp), (tc, rc) = benchmark.pedantic(measure, rounds=1)
    # bit-identical (NaN fields included) whatever the workers
    assert r1.tobytes() == r2.tobytes() == rp.tobytes() == rc.tobytes()
    figures = dict(raw_mb=raw_mb, one_worker_mb_s=raw_mb / t1, two_threads_mb_s=raw_mb / t2,
                   two_processes_mb_s=raw_mb / tp, threads_2v1=t1 / t2, processes_2v1=t1 / tp,
                   one_cpu_mb_s=raw_mb / tc, threads_2v1_cpu=tc / t2, processes_2v1_cpu=tc / tp)
    benchmark.extra_info.update(figures)
    print(f"\nchain, {raw_mb:.0f} MB: 1 worker {raw_mb / t1:.0f} MB/s; 2 threads {raw_mb / t2:.0f} "
          f"MB/s ({t1 / t2:.2f}x); 2 processes {raw_mb / tp:.0f} MB/s ({t1 / tp:.2f}x)"
          f"\n  vs 1 worker on one CPU, {raw_mb / tc:.0f} MB/s: 2 threads {tc / t2:.2f}x, "
          f"2 processes {tc / tp:.2f}x")
