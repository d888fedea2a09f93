"""The whole reference chain with 2 workers vs 1, threads and processes, warm, in one run.

With ``max_workers=2`` the parallel plugins Records -> Peaks -> PeakBasics run as one fused
chain (one step per chunk in one thread hop or one process job). Note that the 1-worker run is
not single-core: different plugins already overlap on the pool's threads (about 1.5 of the 2
cores busy), so on this machine 2 workers can be at most about 2 / 1.5 = 1.3x faster than 1.
The same 1-worker run pinned to one CPU (every thread of this process, then unpinned) is
measured too: the speed-up of 2 cores over 1 core, which is what a 1-worker run measures where
plugins cannot overlap.

The four variants (1 worker, 2 threads, 2 processes, 1 worker on one CPU) each have their own
Context, all open and warmed first; then every round runs each once, interleaved, so they see
the same machine state. Each figure is its best of 3 rounds (1 round at the 20 MB default
size, without ``--benchmark-enable``); speed-ups are ratios of the bests.

    .venv/bin/python -m pytest benchmarks/test_chain_scaling.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext

import numpy as np
import pytest
from bench_sizes import bench_size

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
    mb = bench_size(request.config, 200.0, 20.0)
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


#: (name, plugins, max_workers, pinned to one CPU)
VARIANTS = (("one_worker", THREADS, 1, False), ("two_threads", THREADS, 2, False),
            ("two_processes", PROCESSES, 2, False), ("one_worker_one_cpu", THREADS, 1, True))


def measure_variants(rounds: int) -> dict[str, tuple[float, np.ndarray]]:
    """Every variant's Context open at once, each warmed, then one make per variant per round,
    interleaved (1 worker, 2 threads, 2 processes, 1 worker on one CPU, 1 worker, ...); the
    best time of each, and each variant's result."""
    with ExitStack() as stack:
        ctxs, results = {}, {}
        for name, plugins, workers, pinned in VARIANTS:
            ctx = ctxs[name] = stack.enter_context(ax.Context(register=plugins,
                                                              max_workers=workers))
            with one_cpu() if pinned else nullcontext():
                results[name] = ctx.get_array("r", "event_basics")  # warm: kernels, pools
        best = dict.fromkeys(ctxs, float("inf"))
        for _ in range(rounds):
            for name, _plugins, _workers, pinned in VARIANTS:
                with one_cpu() if pinned else nullcontext():
                    t0 = time.perf_counter()
                    ctxs[name].make("r", "event_basics")
                    best[name] = min(best[name], time.perf_counter() - t0)
    return {name: (best[name], results[name]) for name in best}


def test_chain_scaling(benchmark, raw_mb):
    rounds = 3 if raw_mb > 50 else 1
    by_name = benchmark.pedantic(measure_variants, args=(rounds,), rounds=1)
    (t1, r1), (t2, r2), (tp, rp), (tc, rc) = (by_name[name] for name, *_ in VARIANTS)
    # bit-identical (NaN fields included) whatever the workers
    assert r1.tobytes() == r2.tobytes() == rp.tobytes() == rc.tobytes()
    figures = dict(raw_mb=raw_mb, rounds=rounds, one_worker_mb_s=raw_mb / t1,
                   two_threads_mb_s=raw_mb / t2, two_processes_mb_s=raw_mb / tp,
                   threads_2v1=t1 / t2, processes_2v1=t1 / tp, one_cpu_mb_s=raw_mb / tc,
                   threads_2v1_cpu=tc / t2, processes_2v1_cpu=tc / tp)
    benchmark.extra_info.update(figures)
    print(f"\nchain, {raw_mb:.0f} MB, best of {rounds} interleaved rounds: 1 worker "
          f"{raw_mb / t1:.0f} MB/s; 2 threads {raw_mb / t2:.0f} "
          f"MB/s ({t1 / t2:.2f}x); 2 processes {raw_mb / tp:.0f} MB/s ({t1 / tp:.2f}x)"
          f"\n  vs 1 worker on one CPU, {raw_mb / tc:.0f} MB/s: 2 threads {tc / t2:.2f}x, "
          f"2 processes {tc / tp:.2f}x")
