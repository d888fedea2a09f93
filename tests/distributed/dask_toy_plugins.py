"""Plugins for the Dask tests, in an importable module (workers import plugins by path).

``Samples`` is a source whose data depends on the run id; ``SampleSums`` derives a field
(same kind); ``Fragile`` fails for the runs listed in ``fail_runs``; ``Slow`` sleeps per chunk
(for cancellation); ``ViaProcessPool`` starts a process pool inside the worker (which daemonic
workers could not do); ``FailOnce`` fails the first time per run (for retries); ``Exits`` raises
``SystemExit`` in the runs listed in ``exit_runs``.
"""

from __future__ import annotations

import os
import time
import zlib

import numpy as np

import asyncstrax as ax

SAMPLE_DTYPE = np.dtype(
    [
        (("Start time [ns]", "time"), np.int64),
        (("End time [ns]", "endtime"), np.int64),
        (("Channel", "channel"), np.int16),
        (("Area [PE]", "area"), np.float64),
        (("Samples", "wave"), np.float32, (4,)),
    ]
)

CHUNK_NS = 1_000_000


def run_seed(run_id: str) -> int:
    return zlib.crc32(str(run_id).encode())


def make_samples(run_id: str, chunk_i: int, n: int) -> np.ndarray:
    rng = np.random.default_rng([run_seed(run_id), chunk_i])
    out = np.zeros(n, SAMPLE_DTYPE)
    start = chunk_i * CHUNK_NS
    out["time"] = np.sort(rng.integers(start, start + CHUNK_NS - 100, n))
    out["endtime"] = out["time"] + rng.integers(1, 100, n)
    out["channel"] = rng.integers(0, 16, n)
    out["area"] = rng.exponential(10, n)
    out["wave"] = rng.normal(size=(n, 4))
    return out


class Samples(ax.Plugin):
    """Source: ``n_chunks`` chunks of ``n_per_chunk`` items, random from the run id."""

    __version__ = "0.1.0"
    provides = "samples"
    depends_on = ()
    dtype = SAMPLE_DTYPE
    rechunk_on_save = False
    n_chunks = ax.Config(default=4, type=int, help="chunks per run")
    n_per_chunk = ax.Config(default=1000, type=int, help="items per chunk")

    def is_ready(self, chunk_i: int) -> bool:
        return chunk_i < self.n_chunks

    def source_finished(self) -> bool:
        return True

    def compute(self, chunk_i: int):
        data = make_samples(self.run_id, chunk_i, self.n_per_chunk)
        return self.chunk(start=chunk_i * CHUNK_NS, end=(chunk_i + 1) * CHUNK_NS, data=data)


class SampleSums(ax.Plugin):
    """Same kind as samples: sum of the waveform and area per channel."""

    __version__ = "0.1.0"
    provides = "sample_sums"
    depends_on = "samples"
    rechunk_on_save = False
    dtype = [
        (("Start time [ns]", "time"), np.int64),
        (("End time [ns]", "endtime"), np.int64),
        (("Sum of the samples", "wave_sum"), np.float64),
        (("Area per channel number", "area_per_channel"), np.float64),
    ]

    def compute(self, samples):
        out = np.zeros(len(samples), self.dtype)
        out["time"] = samples["time"]
        out["endtime"] = samples["endtime"]
        out["wave_sum"] = samples["wave"].sum(axis=1)
        out["area_per_channel"] = samples["area"] / (1 + samples["channel"])
        return out


class _TimesOf(ax.Plugin):
    """The samples' time ranges, after ``check()`` (which the subclasses make fail)."""

    __version__ = "0.1.0"
    depends_on = "samples"
    dtype = [(("Start time [ns]", "time"), np.int64), (("End time [ns]", "endtime"), np.int64)]

    def check(self) -> None:
        pass

    def compute(self, samples):
        self.check()
        out = np.zeros(len(samples), self.dtype)
        out["time"] = samples["time"]
        out["endtime"] = samples["endtime"]
        return out


class Fragile(_TimesOf):
    """Fails in the runs listed in ``fail_runs``."""

    provides = "fragile"
    fail_runs = ax.Config(default=(), type=(list, tuple), track=False,
                          help="run ids in which compute raises")

    def check(self) -> None:
        if self.run_id in self.fail_runs:
            raise ValueError(f"boom in run {self.run_id}")


class Slow(ax.Plugin):
    """Sleeps ``sleep_seconds`` per chunk."""

    __version__ = "0.1.0"
    provides = "slow"
    depends_on = "samples"
    dtype = [(("Start time [ns]", "time"), np.int64), (("End time [ns]", "endtime"), np.int64)]
    sleep_seconds = ax.Config(default=0.5, type=(int, float), track=False,
                              help="seconds of sleep per chunk")

    def compute(self, samples):
        time.sleep(self.sleep_seconds)
        out = np.zeros(len(samples), self.dtype)
        out["time"] = samples["time"]
        out["endtime"] = samples["endtime"]
        return out


def _square(x: float) -> float:
    return x * x


class ViaProcessPool(ax.Plugin):
    """Computes in a process pool of its own (needs a non-daemonic worker process)."""

    __version__ = "0.1.0"
    provides = "via_process_pool"
    depends_on = "samples"
    dtype = [(("Start time [ns]", "time"), np.int64), (("End time [ns]", "endtime"), np.int64),
             (("Area squared", "area2"), np.float64)]

    def compute(self, samples):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            area2 = pool.submit(_square, samples["area"]).result()
        out = np.zeros(len(samples), self.dtype)
        out["time"] = samples["time"]
        out["endtime"] = samples["endtime"]
        out["area2"] = area2
        return out


class FailOnce(_TimesOf):
    """Fails the first time per run: a marker file in ``marker_dir`` says it failed before."""

    provides = "fail_once"
    marker_dir = ax.Config(default="", type=str, track=False,
                           help="folder of the markers of runs that failed once")

    def check(self) -> None:
        marker = os.path.join(self.marker_dir, str(self.run_id))
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise OSError(f"transient failure in run {self.run_id}")


class Exits(_TimesOf):
    """Raises ``SystemExit(3)`` in the runs listed in ``exit_runs``."""

    provides = "exits"
    exit_runs = ax.Config(default=(), type=(list, tuple), track=False,
                          help="run ids in which compute raises SystemExit")

    def check(self) -> None:
        if self.run_id in self.exit_runs:
            raise SystemExit(3)


PLUGINS = [Samples, SampleSums, Fragile, Slow, ViaProcessPool, FailOnce, Exits]
