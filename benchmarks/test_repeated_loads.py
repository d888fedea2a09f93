"""Loading stored data again and again in one process, as a notebook does: one Context kept
(its worker threads kept between requests) vs a new Context per call (new threads each time).

records of the reference chain (~220 MB from 200 MB of raw_records with ``--benchmark-enable``,
10x less otherwise) are made and stored once; then each round loads them with
``ctx.get_array`` from the kept Context and from a fresh one, interleaved, ``REPEATS`` rounds.
Each figure is its best round; the ratio is of the bests. A fresh thread's memory is fresh
pages, which a 20 MB chunk pays for in page faults; kept threads reuse their warm memory.

    .venv/bin/python -m pytest benchmarks/test_repeated_loads.py --benchmark-enable -s
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from bench_sizes import bench_size

import asyncstrax as ax
from asyncstrax.tpc import PLUGINS

REPEATS = 5


def test_repeated_loads(benchmark, tmp_path, request: pytest.FixtureRequest):
    raw_mb = bench_size(request.config, 200.0, 20.0)
    config = {"raw_mb": raw_mb, "chunk_mb": raw_mb / 10, "raw_data_rate_mb_s": 200.0}

    def context() -> ax.Context:
        return ax.Context(storage=ax.FileStore(tmp_path), register=PLUGINS, config=config)

    kept = context()
    kept.make("r0", "records")
    assert kept.is_stored("r0", "records")
    expected = kept.get_array("r0", "records")  # also warms the kept Context
    times: dict[str, list[float]] = {"kept": [], "fresh": []}

    def measure() -> None:
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            got = kept.get_array("r0", "records")
            times["kept"].append(time.perf_counter() - t0)
            assert got.nbytes == expected.nbytes
            del got
            with context() as fresh:
                t0 = time.perf_counter()
                got = fresh.get_array("r0", "records")
                times["fresh"].append(time.perf_counter() - t0)
            np.testing.assert_array_equal(got[:100], expected[:100])
            del got

    benchmark.pedantic(measure, rounds=1, iterations=1)
    kept.close()
    best = {name: min(t) for name, t in times.items()}
    mb = expected.nbytes / 1e6
    figures = {"records_mb": round(mb, 1), "kept_s": round(best["kept"], 3),
               "fresh_s": round(best["fresh"], 3),
               "fresh_vs_kept": round(best["fresh"] / best["kept"], 2)}
    benchmark.extra_info.update(figures)
    print(f"\nload {mb:.0f} MB of stored records, best of {REPEATS} interleaved rounds: "
          f"kept Context {best['kept']:.3f} s ({mb / best['kept']:.0f} MB/s), new Context per "
          f"call {best['fresh']:.3f} s: {figures['fresh_vs_kept']}x the time")
