"""One whole job in this process, as a physicist's script runs it; prints one JSON line.

    python benchmarks/whole_process.py --raw-mb 200 [--warm] [--save DIR] [--workers N]

Times the import of asyncstrax and of the TPC chain, the first (cold) run of the reference
chain raw_records -> ... -> event_basics, optionally a second (warm) run in the same process,
and reports the peak RSS of the process. The raw data is simulated by the chain's own source
(the simulator's numba kernels are cached like every other kernel).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time

T_START = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw-mb", type=float, default=200)
    parser.add_argument("--chunk-mb", type=float, default=20)
    parser.add_argument("--warm", action="store_true", help="also time a second run")
    parser.add_argument("--save", action="store_true", help="save every level to a temp store")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--capacity-mb", type=float, default=None,
                        help="channel capacity (default: the context's)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    import asyncstrax as ax

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    from asyncstrax.tpc import PLUGINS

    t_import_tpc = time.perf_counter() - t0
    config = {"raw_mb": args.raw_mb, "chunk_mb": args.chunk_mb,
              "raw_data_rate_mb_s": 200.0}
    targets = ["raw_records", "records", "peaks", "peak_basics", "events", "event_basics"]

    cpu: dict[str, float] = {}

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def run(run_id: str) -> float:
        folder = tempfile.mkdtemp(prefix="asx_bench_") if args.save else None
        storage = [ax.FileStore(folder)] if folder else []
        extra = {}
        if args.capacity_mb is not None:
            extra["channel_capacity_bytes"] = int(args.capacity_mb * 1e6)
        ctx = ax.Context(storage=storage, register=PLUGINS, config=config,
                         max_workers=args.workers, **extra)
        t, c = time.perf_counter(), cpu_seconds()
        ctx.make(run_id, "event_basics", save=targets if args.save else ())
        seconds = time.perf_counter() - t
        cpu[run_id] = cpu_seconds() - c
        if folder:
            shutil.rmtree(folder)
        return seconds

    cold = run("cold")
    warm = run("warm") if args.warm else None
    from asx_chain import peak_rss_mib  # this script's folder is sys.path[0]

    rss_mib = peak_rss_mib()  # not ru_maxrss: it can carry the spawning parent's memory
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(dict(
        import_s=t_import, import_tpc_s=t_import_tpc, cold_s=cold, warm_s=warm,
        cold_cpu_s=cpu.get("cold"), warm_cpu_s=cpu.get("warm"),
        total_s=time.perf_counter() - T_START, peak_rss_mib=rss_mib,
        peak_rss_children_mib=rss_children, raw_mb=args.raw_mb, workers=args.workers,
        save=args.save,
    )))


if __name__ == "__main__":
    main()
