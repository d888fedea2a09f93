"""Framework overhead: 8 trivial plugins over 10,000 small chunks, asyncstrax and strax 2.2.3.

What a live DAQ with tiny chunks pays per chunk. The chain: a source yielding chunks of 10
items (a copy of one base array, shifted), then 7 pass-through plugins each returning its input.
10,000 chunks with ``--benchmark-enable``, 1,000 otherwise so the default run stays quick
(``ASYNCSTRAX_BENCH_CHUNKS`` overrides both). Reported as chunks per second through the whole
chain and microseconds per chunk per plugin.

Plugin count convention (the same in ``benchmarks/strax_overhead.py``): N_PLUGINS counts EVERY
plugin of the chain, the source included (8 = 1 source + 7 pass-throughs), and
``us per chunk per plugin = seconds / chunks / N_PLUGINS * 1e6``.

strax 2.2.3 runs the same chain (``benchmarks/strax_overhead.py``: same plugin count, chunk
count, chunk sizes and per-plugin work, its default single-thread processor, no storage) in its
own interpreter (``$ASYNCSTRAX_STRAX_PYTHON``, else ``/tmp/straxvenv/bin/python``; never a
dependency of asyncstrax), one subprocess per round, timed inside the subprocess after a short
warm-up run. Rounds alternate ours, strax, ours, strax, ...; each side's figure is its best of
ROUNDS; the ratio is of the bests. Without a strax interpreter the strax part is skipped with a
message saying how to get one.

    .venv/bin/python -m pytest benchmarks/test_framework_overhead.py --benchmark-enable -s
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
from bench_sizes import bench_size

import asyncstrax as ax

N_PLUGINS = 8  # every plugin of the chain, the source included
ROUNDS = 3  # best of ROUNDS on both sides
DTYPE = np.dtype([("time", np.int64), ("endtime", np.int64), ("value", np.float32)])
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_STRAX_PYTHON = "/tmp/straxvenv/bin/python"
HOW_TO_GET_STRAX = (
    "strax part skipped: no interpreter with strax. Create a separate virtualenv with it (never "
    "install it into asyncstrax's environment): python3 -m venv /tmp/straxvenv && "
    "/tmp/straxvenv/bin/pip install -q strax==2.2.3, or set ASYNCSTRAX_STRAX_PYTHON."
)


class TinyChunks(ax.Plugin):
    """Source: ``n_chunks`` chunks of 10 items each, as a DAQ reader with small chunks."""

    provides = "level0"
    depends_on = ()
    dtype = DTYPE
    n_chunks = ax.Config(default=10_000, type=int)

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


def run_chain(n_chunks: int) -> float:
    ctx = ax.Context(register=PLUGINS, config={"n_chunks": n_chunks})
    t0 = time.perf_counter()
    ctx.make("bench", TARGET)
    return time.perf_counter() - t0


def strax_python() -> str | None:
    """The strax interpreter, if one imports strax."""
    python = os.environ.get("ASYNCSTRAX_STRAX_PYTHON") or DEFAULT_STRAX_PYTHON
    if not os.path.exists(python):
        return None
    proc = subprocess.run([python, "-c", "import strax"], capture_output=True)
    return python if proc.returncode == 0 else None


def run_strax(python: str, n_chunks: int) -> dict:
    """One strax round in a fresh subprocess; the seconds are timed inside it."""
    proc = subprocess.run(
        [python, os.path.join(HERE, "strax_overhead.py"), "--chunks", str(n_chunks),
         "--plugins", str(N_PLUGINS)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"strax_overhead.py failed ({python}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_framework_overhead(benchmark, request):
    n_chunks = int(bench_size(request.config, 10_000, 1_000, "ASYNCSTRAX_BENCH_CHUNKS"))
    python = strax_python()
    run_chain(n_chunks)  # warm: imports, thread start-up
    times: dict[str, list[float]] = {"asyncstrax": [], "strax": []}
    strax_version = None

    def measure() -> None:
        nonlocal strax_version
        for _ in range(ROUNDS):  # interleaved: ours, strax, ours, strax, ...
            times["asyncstrax"].append(run_chain(n_chunks))
            if python:
                r = run_strax(python, n_chunks)
                assert r["chunks"] == n_chunks and r["plugins"] == N_PLUGINS
                strax_version = r["engine"]
                times["strax"].append(r["seconds"])

    benchmark.pedantic(measure, rounds=1, iterations=1)

    def us(seconds: float) -> float:
        return seconds / n_chunks / N_PLUGINS * 1e6

    ours = min(times["asyncstrax"])
    info = dict(
        chunks=n_chunks,
        plugins=N_PLUGINS,
        plugin_count_convention="every plugin, the source included (1 source + 7 pass-throughs)",
        rounds=ROUNDS,
        chunks_per_second=round(n_chunks / ours),
        us_per_chunk_per_plugin=round(us(ours), 1),
    )
    print(f"\nframework overhead, {n_chunks} chunks x {N_PLUGINS} plugins (source included), "
          f"best of {ROUNDS} interleaved rounds:")
    print(f"  asyncstrax: {ours:.3f} s, {n_chunks / ours:.0f} chunks/s, "
          f"{us(ours):.1f} us per chunk per plugin")
    if python:
        theirs = min(times["strax"])
        info.update(
            strax_engine=strax_version,
            strax_chunks_per_second=round(n_chunks / theirs),
            strax_us_per_chunk_per_plugin=round(us(theirs), 1),
            ours_over_strax_time=round(ours / theirs, 3),
        )
        print(f"  {strax_version}: {theirs:.3f} s, {n_chunks / theirs:.0f} chunks/s, "
              f"{us(theirs):.1f} us per chunk per plugin")
        print(f"  asyncstrax time / strax time = {ours / theirs:.3f} "
              f"(strax / asyncstrax = {theirs / ours:.1f}x)")
    else:
        info.update(strax_engine="skipped: no strax interpreter")
        print(f"  {HOW_TO_GET_STRAX}")
    benchmark.extra_info.update(info)
