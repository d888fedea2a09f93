"""Throughput of the reference TPC chain: the engine vs its kernels in a plain loop.

raw_records -> records -> peaks -> peak_basics -> events -> event_basics on ~200 MB of
simulated raw_records in 10 chunks of 20 MB (``ASYNCSTRAX_BENCH_MB`` to change; 20 MB when
benchmarks are disabled, so the suite stays quick). The data is simulated once per module and
fed to the engine by a source plugin that yields the pre-generated chunks, so simulation time
is in neither figure.

- kernels: ``processing.process_chunk_plain`` on each chunk, in a plain loop (no engine);
- engine: ``Context.make(..., "event_basics")`` with ``max_workers=1``, the TPC plugins;
- ratio: kernels time / engine time, measured interleaved in one test (best of a few rounds
  each), so both see the same machine state. Goal: >= 0.95. Even at ``max_workers=1`` the
  engine overlaps *different* plugins (records of chunk i+1 while peaks of chunk i run, on the
  pool's threads; numba releases the GIL), so its wall time can beat the plain loop on 2 cores.
  The CPU-time ratio (process CPU seconds, all threads) is the framework's real overhead.

Figures are printed and stored in ``benchmark.extra_info``. Run with::

    PYTHONPATH=. .venv/bin/python -m pytest benchmarks/test_chain_throughput.py -s \
        --benchmark-enable
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from bench_sizes import bench_size

import asyncstrax as ax
from asyncstrax.dtypes import raw_record_dtype
from asyncstrax.processing import process_chunk_plain
from asyncstrax.tpc.plugins import TPC_PLUGINS, RawRecords
from asyncstrax.tpc.sim import Simulator

N_CHUNKS = 10
#: raw data rate of the simulated detector [MB/s]: sets the mix of events and dark counts
DETECTOR_MB_S = 50.0
ROUNDS = 3
RATIO_ROUNDS = 5


@pytest.fixture(scope="module")
def raw_chunks(request: pytest.FixtureRequest) -> list[tuple[int, int, np.ndarray]]:
    total_mb = bench_size(request.config, 200.0, 20.0, "ASYNCSTRAX_BENCH_MB")
    sim = Simulator.for_data_rate(DETECTOR_MB_S, chunk_mb=total_mb / N_CHUNKS, seed=2024)
    chunks = list(sim.iter_chunks(n_chunks=N_CHUNKS))
    process_chunk_plain(chunks[0][2][:5000])  # compile / load every kernel before timing
    return chunks


def _mb(chunks: list[tuple[int, int, np.ndarray]]) -> float:
    return sum(raw.nbytes for _, _, raw in chunks) / 1e6


class PregeneratedRawRecords(ax.Plugin):
    """Source yielding chunks made beforehand (``chunks``, set by the benchmark)."""

    __version__ = "0.0.1"
    provides = "raw_records"
    depends_on = ()
    dtype = raw_record_dtype()
    chunks: list[tuple[int, int, np.ndarray]] = []

    async def iterate(self) -> Any:
        for start, end, raw in type(self).chunks:
            yield self.chunk(start=start, end=end, data=raw)


def run_kernels(chunks: list[tuple[int, int, np.ndarray]]) -> int:
    n_events = 0
    for start, end, raw in chunks:
        out = process_chunk_plain(raw, None, start, end, first_event_number=n_events)
        n_events += len(out["events"])
    return n_events


def engine_context() -> ax.Context:
    plugins = [p for p in TPC_PLUGINS if p is not RawRecords] + [PregeneratedRawRecords]
    return ax.Context(register=plugins, max_workers=1)


def run_engine(ctx: ax.Context) -> None:
    ctx.make("bench", "event_basics")


def _report(benchmark: Any, name: str, mb: float, seconds: float, **extra: Any) -> None:
    benchmark.extra_info.update(raw_mb=round(mb, 1), seconds=round(seconds, 3),
                                mb_per_s=round(mb / seconds, 1), **extra)
    print(f"\n{name}: {mb:.0f} MB of raw_records in {seconds:.3f} s = {mb / seconds:.1f} MB/s")


def test_kernels_plain_loop(benchmark: Any, raw_chunks: list) -> None:
    benchmark.pedantic(run_kernels, args=(raw_chunks,), rounds=ROUNDS, iterations=1)
    seconds = benchmark.stats.stats.min if benchmark.stats else _once(run_kernels, raw_chunks)
    _report(benchmark, "kernels (plain loop)", _mb(raw_chunks), seconds)


def test_engine_one_worker(benchmark: Any, raw_chunks: list) -> None:
    PregeneratedRawRecords.chunks = raw_chunks
    ctx = engine_context()
    benchmark.pedantic(run_engine, args=(ctx,), rounds=ROUNDS, iterations=1)
    seconds = benchmark.stats.stats.min if benchmark.stats else _once(run_engine, ctx)
    _report(benchmark, "engine (1 worker)", _mb(raw_chunks), seconds)
    print(ctx.last_summary.table())


def test_engine_over_kernels_ratio(benchmark: Any, raw_chunks: list) -> None:
    """Interleaved: kernels, engine, kernels, engine... best of each; ratio of the bests."""
    PregeneratedRawRecords.chunks = raw_chunks
    ctx = engine_context()
    rounds = 1 if benchmark.disabled else RATIO_ROUNDS
    times: dict[str, list[float]] = {"kernels": [], "engine": []}
    cpu: dict[str, list[float]] = {"kernels": [], "engine": []}

    def measure() -> None:
        for _ in range(rounds):
            for name, fn, arg in (("kernels", run_kernels, raw_chunks),
                                  ("engine", run_engine, ctx)):
                c0 = time.process_time()
                times[name].append(_once(fn, arg))
                cpu[name].append(time.process_time() - c0)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    mb = _mb(raw_chunks)
    kernels, engine = min(times["kernels"]), min(times["engine"])
    ratio = kernels / engine
    cpu_kernels, cpu_engine = min(cpu["kernels"]), min(cpu["engine"])
    benchmark.extra_info.update(
        raw_mb=round(mb, 1),
        kernels_mb_per_s=round(mb / kernels, 1),
        engine_mb_per_s=round(mb / engine, 1),
        ratio=round(ratio, 3),
        kernels_cpu_mb_per_s=round(mb / cpu_kernels, 1),
        engine_cpu_mb_per_s=round(mb / cpu_engine, 1),
        cpu_ratio=round(cpu_kernels / cpu_engine, 3),
    )
    print(f"\nwall: kernels {mb / kernels:.1f} MB/s, engine {mb / engine:.1f} MB/s at 1 worker: "
          f"engine / kernels = {ratio:.3f} (goal >= 0.95)")
    print(f"cpu:  kernels {mb / cpu_kernels:.1f} MB/cpu-s, engine {mb / cpu_engine:.1f} "
          f"MB/cpu-s: engine / kernels = {cpu_kernels / cpu_engine:.3f}")
    # A loose bound: the figure is the report; a noisy machine must not fail the suite.
    assert ratio > 0.5


def _once(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0
