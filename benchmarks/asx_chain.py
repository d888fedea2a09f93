"""The reference TPC chain on asyncstrax's engine, fed saved raw_records; prints one JSON line.

    python benchmarks/asx_chain.py CHUNK_DIR [--warm] [--max-chunks N] [--workers N]
                                   [--processes] [--save DIR]

Child of ``benchmarks/compare_strax.py`` and ``benchmarks/test_whole_process.py``; the twin of
``benchmarks/strax_chain.py``. A source plugin yields the raw_records chunks saved by
compare_strax.py (``chunks.json`` + one .npy per chunk); the rest is ``asyncstrax.tpc``'s
Records -> Peaks -> PeakBasics -> Events -> EventBasics.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

T_START = time.perf_counter()


def peak_rss_mib() -> float:
    """This process's peak RSS since it started its program: VmHWM of /proc/self/status.

    Not ``getrusage().ru_maxrss``: Linux carries the peak of the memory a child had before
    ``exec`` over into it, and a child spawned by a parent holding 1.5 GB reports 1.5 GB
    (``subprocess`` uses vfork, so that memory is the parent's). VmHWM is the new program's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def first_and_warm(run: Any, warm: bool, memory: bool) -> tuple:
    """``run("000000")`` and, with ``warm``, ``run("000001")``; each run returns (seconds,
    events, s2 area sum). Returns those of the first, the warm seconds (or None) and, with
    ``memory``, the peak summed PSS over both runs (else None). Both engines' scripts use it."""
    sampler = MemorySampler()
    if memory:
        sampler.__enter__()
    try:
        first, n_events, s2_sum = run("000000")
        warm_s = run("000001")[0] if warm else None
    finally:
        if memory:
            sampler.__exit__()
    return first, n_events, s2_sum, warm_s, sampler.peak_mib if memory else None


class MemorySampler:
    """Peak of the summed PSS of this process and its descendants (a process pool's workers),
    sampled every 20 ms from /proc (Linux): shared pages, such as shared-memory segments
    mapped by several processes, count once in total."""

    def __init__(self) -> None:
        import threading

        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _pss_kib(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    @staticmethod
    def _descendants(pid: int) -> list[int]:
        """Children, their children, ...: workers forked by a forkserver are grandchildren."""
        parents: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(name))
        out, todo = [], [pid]
        while todo:
            kids = parents.get(todo.pop(), [])
            out += kids
            todo += kids
        return out

    def sample(self) -> None:
        me = os.getpid()
        total = self._pss_kib(me) + sum(self._pss_kib(c) for c in self._descendants(me))
        self.peak_mib = max(self.peak_mib, total / 1024)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def build_source(chunk_dir: str, max_chunks: int | None):
    import numpy as np

    from asyncstrax.dtypes import raw_record_dtype
    from asyncstrax.plugins.base import Plugin, SaveWhen

    with open(os.path.join(chunk_dir, "chunks.json")) as f:
        index = json.load(f)["chunks"]
    if max_chunks:
        index = index[:max_chunks]

    class RawRecords(Plugin):
        """Source: the saved raw_records chunks, one per compute(chunk_i)."""

        __version__ = "0.1.0"
        provides = "raw_records"
        depends_on = ()
        data_kind = "raw_records"
        dtype = raw_record_dtype()
        save_when = SaveWhen.EXPLICIT
        rechunk_on_save = False

        def is_ready(self, chunk_i):
            return chunk_i < len(index)

        def source_finished(self):
            return True

        def compute(self, chunk_i):
            start, end, name = index[chunk_i]
            data = np.load(os.path.join(chunk_dir, name))
            return self.chunk(start=start, end=end, data=data)

    return RawRecords


ALL_LEVELS = ("raw_records", "records", "peaks", "peak_basics", "events", "event_basics")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("chunk_dir")
    parser.add_argument("--warm", action="store_true", help="also time a second run")
    parser.add_argument("--max-chunks", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--processes", action="store_true",
                        help="parallel plugins in worker processes (parallel='process')")
    parser.add_argument("--memory", action="store_true",
                        help="sample the summed PSS of this process and its workers")
    parser.add_argument("--save", default=None, metavar="DIR",
                        help="save every level to a FileStore in DIR (default compressor)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    import asyncstrax as ax

    t_import_engine = time.perf_counter() - t0
    t0 = time.perf_counter()
    from asyncstrax.tpc.plugins import EventBasics, Events, PeakBasics, Peaks, Records

    if args.processes:
        import sys

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from process_tpc_plugins import ProcessPeakBasics, ProcessPeaks, ProcessRecords

        Records, Peaks, PeakBasics = ProcessRecords, ProcessPeaks, ProcessPeakBasics  # noqa: N806
    plugins = [build_source(args.chunk_dir, args.max_chunks), Records, Peaks, PeakBasics,
               Events, EventBasics]
    t_import_chain = time.perf_counter() - t0

    def run(run_id: str) -> tuple[float, int, float]:
        storage = [ax.FileStore(args.save)] if args.save else []
        save = ALL_LEVELS if args.save else ()
        t = time.perf_counter()
        n, s2 = 0, 0.0
        # the context's process pool (if any) starts with the run and is closed after it
        with ax.Context(storage=storage, register=plugins, max_workers=args.workers) as ctx:
            for chunk in ctx.get_iter(run_id, "event_basics", save=save):
                n += len(chunk.data)
                s2 += float(chunk.data["s2_area"].sum())
        return time.perf_counter() - t, n, s2

    first, n_events, s2_sum, warm, peak_pss = first_and_warm(run, args.warm, args.memory)
    print(json.dumps(dict(
        workers=args.workers, processes=args.processes,
        peak_pss_with_workers_mib=peak_pss,
        engine=f"asyncstrax {ax.__version__}", import_engine_s=t_import_engine,
        import_chain_s=t_import_chain, first_run_s=first, warm_s=warm,
        total_s=time.perf_counter() - T_START,
        peak_rss_mib=peak_rss_mib(),
        n_events=n_events, s2_area_sum=s2_sum,
    )))


if __name__ == "__main__":
    main()
