"""Framework overhead: 8 trivial plugins over 10,000 small chunks.

What a live DAQ with tiny chunks pays per chunk. Reported as chunks per second through the
whole chain and microseconds per chunk per plugin. strax 2.2.3 (single-threaded processor)
moves 600-730 chunks/s through such a chain of 9 plugins here, 150-185 us per chunk per plugin.

    .venv/bin/python -m pytest benchmarks/test_framework_overhead.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import time

import numpy as np

import asyncstrax as ax

N_CHUNKS = int(os.environ.get("ASYNCSTRAX_BENCH_CHUNKS", 10_000))
N_PLUGINS = 8
DTYPE = np.dtype([("time", np.int64), ("endtime", np.int64), ("value", np.float32)])


class TinyChunks(ax.Plugin):
    """Source: N_CHUNKS chunks of 10 items each, as a DAQ reader with small chunks."""

    provides = "level0"
    depends_on = ()
    dtype = DTYPE
    n_chunks = ax.Config(default=N_CHUNKS, type=int)

    def setup(self):
        base = np.zeros(10, DTYPE)
        base["time"] = np.arange(10) * 10
        base["endtime"] = base["time"] + 5
        self.base = base

    async def iterate(self):
        for i in range(self.n_chunks):
            data = self.base.copy()
            data["time"] += i * 100
            data["endtime"] += i * 100
            yield self.chunk(start=i * 100, end=(i + 1) * 100, data=data)


def _pass_through(level: int) -> type:
    def compute(self, **kwargs):
        (data,) = kwargs.values()
        return data

    return type(
        f"PassThrough{level}",
        (ax.Plugin,),
        {
            "provides": f"level{level}",
            "depends_on": f"level{level - 1}",
            "dtype": DTYPE,
            "compute": lambda self, x: x,
        },
    )


PLUGINS = [TinyChunks] + [_pass_through(i) for i in range(1, N_PLUGINS)]
TARGET = f"level{N_PLUGINS - 1}"


def run_chain() -> float:
    ctx = ax.Context(register=PLUGINS)
    t0 = time.perf_counter()
    ctx.make("bench", TARGET)
    return time.perf_counter() - t0


def test_framework_overhead(benchmark):
    run_chain()  # warm: imports, thread start-up
    seconds = benchmark.pedantic(run_chain, rounds=3, iterations=1)
    seconds = benchmark.stats.stats.min if benchmark.stats else seconds
    chunks_per_s = N_CHUNKS / seconds
    us_per_chunk_per_plugin = seconds / N_CHUNKS / N_PLUGINS * 1e6
    benchmark.extra_info.update(
        chunks=N_CHUNKS,
        plugins=N_PLUGINS,
        chunks_per_second=round(chunks_per_s),
        us_per_chunk_per_plugin=round(us_per_chunk_per_plugin, 1),
        strax_2_2_3_chunks_per_second="600-730 (9 plugins, measured on this machine)",
    )
    print(
        f"\nframework overhead: {N_CHUNKS} chunks x {N_PLUGINS} plugins in {seconds:.2f} s: "
        f"{chunks_per_s:.0f} chunks/s, {us_per_chunk_per_plugin:.1f} us per chunk per plugin"
    )
