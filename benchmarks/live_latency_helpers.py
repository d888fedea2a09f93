"""Helpers of ``test_live_latency.py``: a digitizer process that timestamps what it publishes,
a FileStore that timestamps what it saves, and the live / offline chains.

Run as a script (``python live_latency_helpers.py '<json>'``) this module *is* the digitizer
process:

- ``mode="digitizer"``: ``asyncstrax digitizer`` itself (``streams.live.serve_digitizer``, real
  time pacing, the simulation on a thread, one chunk at a time), with the publisher's
  ``publish`` wrapped to note ``time.monotonic()`` just before each chunk is handed to the
  stream;
- ``mode="flood"``: every chunk simulated first, then published as fast as the subscriber takes
  them (a lossless ``block`` subscriber: the publisher waits whenever its buffer is full).

It prints ``ADDRESS <tcp://127.0.0.1:port>`` once it listens and ``TIMES <json>`` (one
``[start, end, nbytes, t_published]`` per chunk) after the run's END. ``time.monotonic()`` is
CLOCK_MONOTONIC on Linux: one clock for every process of the host, so the publishing process's
timestamps and this process's can be subtracted.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

clock = time.monotonic


def new_loop_runner() -> asyncio.Runner:
    """What the CLI runs on: uvloop when installed."""
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        return asyncio.Runner()


# ====================================================================== data
def sim_config(p: dict) -> dict:
    """RawRecords / make_simulator options of a digitizer run (what serve_digitizer uses)."""
    return dict(seed=p["seed"], n_channels=p["n_channels"],
                raw_data_rate_mb_s=float(p["rate_mb_s"]), chunk_mb=float(p["chunk_mb"]))


def generate(p: dict) -> list[tuple[int, int, np.ndarray]]:
    """The raw_records chunks of ``p["total_mb"]`` MB, deterministic from the parameters."""
    from asyncstrax.tpc.plugins import make_simulator

    sim = make_simulator(sim_config(p))
    return list(sim.iter_chunks(raw_mb=float(p["total_mb"])))


def warm_kernels() -> None:
    """Load every kernel (numba cache) in this process, as a live process running for a while
    would have; each measurement then sees warm kernels."""
    from asyncstrax.processing import process_chunk_plain
    from asyncstrax.tpc.plugins import make_simulator

    sim = make_simulator(dict(seed=99, raw_data_rate_mb_s=5.0, chunk_mb=0.5))
    start, end, raw = sim.next_chunk()
    process_chunk_plain(raw, None, start, end)


# ====================================================================== the digitizer process
def _emit(kind: str, text: str) -> None:
    print(f"{kind} {text}", flush=True)


async def _serve_paced(p: dict) -> list:
    import argparse

    from asyncstrax.streams.live import add_digitizer_arguments, serve_digitizer

    parser = argparse.ArgumentParser()
    add_digitizer_arguments(parser)
    args = parser.parse_args([
        "--port", "0", "--rate", str(p["rate_mb_s"]), "--chunk-mb", str(p["chunk_mb"]),
        "--seconds", str(p["seconds"]), "--seed", str(p["seed"]),
        "--n-channels", str(p["n_channels"]), "--run-id", p["run_id"],
    ])
    times: list = []

    def ready(pub: Any) -> None:
        publish = pub.publish

        async def timed_publish(chunk: Any) -> None:
            times.append((chunk.start, chunk.end, chunk.nbytes, clock()))
            await publish(chunk)

        pub.publish = timed_publish  # serve_digitizer calls pub.publish(...) for every chunk
        _emit("ADDRESS", pub.address)

    code = await serve_digitizer(args, asyncio.Event(), ready=ready)
    assert code == 0
    return times


async def _serve_flood(p: dict) -> list:
    from asyncstrax.chunk import Chunk
    from asyncstrax.dtypes import raw_record_dtype
    from asyncstrax.streams import Publisher

    chunks = generate(p)
    dtype = np.dtype(raw_record_dtype())
    times: list = []
    # as serve_digitizer makes it (its default --buffer-mb 256)
    pub = Publisher("raw_records", port=0, dtype=dtype, data_kind="raw_records",
                    run_id=p["run_id"], buffer_bytes=256 * 1024**2,
                    transport=p.get("transport", "tcp"))
    async with pub:
        _emit("ADDRESS", pub.address)
        await pub.wait_for_subscribers(1)
        for start, end, data in chunks:
            times.append((start, end, data.nbytes, clock()))
            await pub.publish(Chunk(data_type="raw_records", data_kind="raw_records",
                                    dtype=dtype, run_id=p["run_id"], start=start, end=end,
                                    data=data))
    return times


def _child_main(p: dict) -> None:
    serve = _serve_paced if p["mode"] == "digitizer" else _serve_flood
    with new_loop_runner() as runner:
        times = runner.run(serve(p))
    _emit("TIMES", json.dumps(times))


class DigitizerProcess:
    """This module run as the digitizer, in its own interpreter (``sys.executable``)."""

    def __init__(self, **params: Any) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, __file__, json.dumps(params)],
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     env=env)
        self._lines: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_line(self, prefix: str, timeout: float) -> str:
        deadline = clock() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - clock()))
            except queue.Empty:
                raise TimeoutError(f"the digitizer printed no {prefix} line in {timeout} s: "
                                   f"{self.stderr()}") from None
            if line is None:
                self.proc.wait(5)
                raise RuntimeError(f"the digitizer exited ({self.proc.returncode}) before "
                                   f"{prefix}: {self.stderr()}")
            if line.startswith(prefix + " "):
                return line.split(" ", 1)[1].strip()

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-4000:]

    def address(self, timeout: float = 120) -> str:
        return self.wait_line("ADDRESS", timeout)

    def published(self, timeout: float = 60) -> list[tuple[int, int, int, float]]:
        """[(start, end, nbytes, t_published)] of every chunk, once the run has ended."""
        out = [tuple(x) for x in json.loads(self.wait_line("TIMES", timeout))]
        self.proc.wait(10)
        assert self.proc.returncode == 0, self.stderr()
        return out  # type: ignore[return-value]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


# ====================================================================== timed saving
class SaveLog:
    """When one data type's chunks were taken by its saver and written to disk."""

    def __init__(self) -> None:
        #: (start, end, n items, monotonic time) of each chunk the saver took from the pipeline
        self.taken: list[tuple[int, int, int, float]] = []
        #: saved chunk_i -> monotonic time its file was written (compressed, closed)
        self.written: dict[int, float] = {}
        #: the saver's metadata chunk list (start, end, n, chunk_i of every saved chunk)
        self.chunk_infos: list[dict] = []

    def saved(self) -> list[tuple[int, int, float]]:
        """(start, end, t_saved) of every saved chunk. A chunk with items is saved when its
        file is written; an empty one (strax writes no file for it) when the saver took it."""
        taken_by_end = {end: t for _, end, _, t in self.taken}
        out = []
        for info in self.chunk_infos:
            if info["n"]:
                t = self.written[info["chunk_i"]]
            else:
                t = taken_by_end.get(info["end"], self.taken[-1][3])
            out.append((info["start"], info["end"], t))
        return out


class _TimedReader:
    def __init__(self, reader: Any, log: SaveLog) -> None:
        self._reader = reader
        self._log = log

    async def get(self) -> Any:
        chunk = await self._reader.get()
        if chunk is not None:
            self._log.taken.append((chunk.start, chunk.end, len(chunk), clock()))
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class _TimedPool:
    """The pipeline's thread pool as the saver sees it: chunk writes note when they finish
    (on the writing thread, so the time does not wait for the event loop)."""

    def __init__(self, pool: Any, log: SaveLog) -> None:
        self._pool = pool
        self._log = log

    def submit(self, fn: Any, *args: Any) -> Any:
        from asyncstrax.storage import files

        if getattr(fn, "__func__", None) is files.FileSaver._write_chunk:
            chunk_i = args[2]["chunk_i"]  # (path, data, info)
            written = self._log.written

            def timed(*a: Any) -> Any:
                result = fn(*a)
                written[chunk_i] = clock()
                return result

            return self._pool.submit(timed, *args)
        return self._pool.submit(fn, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class _TimedSaver:
    def __init__(self, inner: Any, log: SaveLog) -> None:
        self.inner = inner
        self.log = log
        self.name = inner.name
        self.data_type = inner.data_type

    async def consume(self, reader: Any, pool: Any) -> None:
        try:
            await self.inner.consume(_TimedReader(reader, self.log), _TimedPool(pool, self.log))
        finally:
            self.log.chunk_infos = list(self.inner.metadata["chunks"])

    async def abort(self, error: BaseException) -> None:
        await self.inner.abort(error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def timed_file_store(path: str, timed: tuple[str, ...] = ("event_basics",)) -> Any:
    """A FileStore whose savers of the ``timed`` data types log when each chunk is saved
    (``store.save_logs[data_type]``). Only observes: the files written are the same."""
    from asyncstrax.storage import FileStore

    class TimedFileStore(FileStore):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.save_logs: dict[str, SaveLog] = {}

        def saver(self, key: Any, *, plugin: Any) -> Any:
            inner = super().saver(key, plugin=plugin)
            if key.data_type not in timed:
                return inner
            log = self.save_logs[key.data_type] = SaveLog()
            return _TimedSaver(inner, log)

    return TimedFileStore(path)


# ====================================================================== the chains
def live_plugins(address: str, dtype: Any) -> list:
    """``asyncstrax live``'s plugins (streams.live.process_live): the TPC chain with raw_records
    from the stream (a lossless ``block`` subscriber)."""
    from asyncstrax.streams import subscriber_plugin

    source = subscriber_plugin("raw_records", address, dtype, "raw_records", policy="block")
    return chain_plugins(source)


def chain_plugins(source: type) -> list:
    """The chain exactly as ``asyncstrax live`` builds it: every level saved chunk by chunk."""
    from asyncstrax.streams.live import live_chain_plugins

    return live_chain_plugins(source)


def pregenerated_source(chunks: list[tuple[int, int, np.ndarray]]) -> type:
    """A source plugin yielding chunks made beforehand, saved like the subscriber's
    raw_records (``save_when=ALWAYS``, no rechunking)."""
    import asyncstrax as ax
    from asyncstrax.dtypes import raw_record_dtype
    from asyncstrax.plugins.base import SaveWhen

    class PregeneratedRawRecords(ax.Plugin):
        __version__ = "0.0.1"
        provides = "raw_records"
        depends_on = ()
        data_kind = "raw_records"
        dtype = raw_record_dtype()
        save_when = SaveWhen.ALWAYS
        rechunk_on_save = False

        async def iterate(self) -> Any:
            for start, end, raw in chunks:
                yield self.chunk(start=start, end=end, data=raw)

    return PregeneratedRawRecords


async def run_chain(ctx: Any, run_id: str) -> tuple[float, int, Any]:
    """Make event_basics as ``asyncstrax live`` does (iterate the pipeline, everything saved):
    (wall seconds from the pipeline's creation to its end, event_basics items, pipeline)."""
    t0 = clock()
    pipeline = ctx.pipeline(run_id, "event_basics", max_workers=os.cpu_count() or 1)
    n = 0
    try:
        async for chunk in pipeline:
            n += len(chunk)
    finally:
        await pipeline.aclose()
    return clock() - t0, n, pipeline


def subscriber_of(pipeline: Any) -> Any:
    from asyncstrax.streams.live import _subscriber

    return _subscriber(pipeline)


# ====================================================================== latency
def coverage_times(raw_ends: np.ndarray, saved: list[tuple[int, int, float]]) -> np.ndarray:
    """For each raw chunk end E: the time by which every saved chunk starting before E was
    saved, i.e. the data over [run start, E) is complete on disk. NaN if nothing saved reaches E.
    """
    saved = sorted(saved)
    starts = np.array([s for s, _, _ in saved], dtype=np.int64)
    ends = np.array([e for _, e, _ in saved], dtype=np.int64)
    done = np.maximum.accumulate(np.array([t for _, _, t in saved], dtype=float))
    idx = np.searchsorted(starts, raw_ends, side="left") - 1
    out = np.full(len(raw_ends), np.nan)
    ok = (idx >= 0) & (ends[np.clip(idx, 0, None)] >= raw_ends)
    out[ok] = done[idx[ok]]
    return out


def latency_figures(ms: np.ndarray) -> dict[str, float]:
    return dict(median_ms=round(float(np.median(ms)), 1),
                p99_ms=round(float(np.percentile(ms, 99)), 1),
                max_ms=round(float(np.max(ms)), 1),
                first_ms=round(float(ms[0]), 1))


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
