"""``asyncstrax demo``: simulate a few seconds of a TPC, process it, show what happened.

Steps: the synthetic detector (``tpc.sim``) feeds the reference chain (``tpc.plugins``) through
the engine, with a progress bar; then a per-plugin table (compute seconds, items, MB/s), the
reconstruction compared with what was injected (events found, S1 and S2 area ratios), and a
PNG with one event's waveform and the S1-vs-S2 areas. With storage (``--storage``, default
``<output>/strax_data``) the results are saved in strax's format, and a second run with the same
options loads them instead of computing.

The run is deterministic from ``--seed``, ``--seconds`` and ``--rate``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

from asyncstrax.cli import int_at_least, positive_number

__all__ = ["add_arguments", "run", "process_demo_run", "reconstruction_summary", "format_summary"]

RUN_ID = "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``asyncstrax demo``."""
    parser.add_argument("--seconds", type=positive_number, default=5.0,
                        help="seconds of detector time to simulate (default 5)")
    parser.add_argument("--rate", type=positive_number, default=20.0,
                        help="raw_records data rate of the detector [MB/s] (default 20)")
    parser.add_argument("--seed", type=int_at_least(0), default=0,
                        help="random seed, 0 or more (default 0)")
    parser.add_argument("--chunk-mb", type=positive_number, default=10.0,
                        help="size of the simulated chunks [MB] (default 10)")
    parser.add_argument("--output", default="demo_output",
                        help="folder for the plot and the data (default ./demo_output)")
    parser.add_argument("--storage", default=None, metavar="PATH",
                        help="where to save the data (default OUTPUT/strax_data)")
    parser.add_argument("--no-storage", action="store_true", help="do not save anything")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1,
                        help="worker threads for parallel plugins (default: CPU count)")


def make_storage(path: str | None) -> list[Any]:
    """``[FileStore(path)]`` if asyncstrax's storage is available, else no storage."""
    if not path:
        return []
    try:
        from asyncstrax.storage import FileStore
    except ImportError:
        return []
    return [FileStore(path)]


class _Tap:
    """Reads one data type of the pipeline alongside its consumers, keeping some fields."""

    def __init__(self, data_type: str, fields: tuple[str, ...] | None = None) -> None:
        self.name = f"tap:{data_type}"
        self.data_type = data_type
        self.fields = fields
        self.arrays: list[np.ndarray] = []

    async def consume(self, reader: Any, pool: Any) -> None:
        while (chunk := await reader.get()) is not None:
            data = chunk.data
            if self.fields is not None and len(data):
                kept = np.empty(len(data), [(n, data.dtype[n]) for n in self.fields])
                for name in self.fields:
                    kept[name] = data[name]
                data = kept
            self.arrays.append(data)

    async def abort(self, error: BaseException) -> None:
        self.arrays.clear()

    def result(self) -> np.ndarray | None:
        if not self.arrays:
            return None
        return np.concatenate(self.arrays)


_TAP_FIELDS = {"peaks": ("time", "length", "dt", "type", "area", "data"), "peak_basics": ("type",)}


async def process_demo_run(ctx: Any, *, max_workers: int = 1, progress_bar: bool = True,
                   run_id: str = RUN_ID) -> dict[str, Any]:
    """Process the run; return event_basics, events, peaks, truth and the summary.

    Events, peaks and truth are read from the same pipeline when it makes them (a tap on
    their channels: nothing is computed twice), else loaded (or made) afterwards.
    """
    pipeline = ctx.pipeline(run_id, "event_basics", max_workers=max_workers,
                            progress_bar=progress_bar)
    produced = {dt for c in [*pipeline.plugins, *pipeline.loaders] for dt in c.provides}
    wanted = ("events", "peaks", "peak_basics", "truth")
    taps = {dt: _Tap(dt, _TAP_FIELDS.get(dt)) for dt in wanted if dt in produced}
    pipeline.savers.extend(taps.values())
    arrays = []
    t0 = time.perf_counter()
    try:
        async for chunk in pipeline:
            if len(chunk):
                arrays.append(chunk.data)
    finally:
        await pipeline.aclose()
        ctx.last_summary = pipeline.summary
    wall = time.perf_counter() - t0
    out = dict(summary=pipeline.summary, wall=wall,
               loaded=sorted(dt for loader in pipeline.loaders for dt in loader.provides))
    out["event_basics"] = (np.concatenate(arrays) if arrays else
                           np.zeros(0, ctx.get_single_plugin(run_id, "event_basics").dtype))
    for dt in wanted:
        data = taps[dt].result() if dt in taps else None
        if data is None:
            data = await ctx.aget_array(run_id, dt)
        out[dt] = data
    # peaks are classified in peak_basics (same kind: same items, same order)
    peaks = np.empty(len(out["peaks"]), [(n, out["peaks"].dtype[n]) for n in _TAP_FIELDS["peaks"]])
    for name in _TAP_FIELDS["peaks"]:
        peaks[name] = out["peaks"][name]
    peaks["type"] = out.pop("peak_basics")["type"]
    out["peaks"] = peaks
    return out


# ---------------------------------------------------------------------- reporting
def reconstruction_summary(event_basics: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Injected vs found events, and reconstructed / true S1 and S2 area ratios."""
    idx = np.searchsorted(event_basics["time"], truth["s2_time"], side="right") - 1
    found = idx >= 0
    found[found] = truth["s2_time"][found] < event_basics["endtime"][idx[found]]
    matched, true = event_basics[idx[found]], truth[found]
    result: dict[str, Any] = dict(
        injected=len(truth),
        reconstructed=len(event_basics),
        found=int(found.sum()),
        efficiency=float(found.mean()) if len(truth) else float("nan"),
        # several injected events may share one window (pile-up): count windows once
        unmatched_events=len(event_basics) - len(np.unique(idx[found])),
    )
    for s in ("s1", "s2"):
        ratio = matched[f"{s}_area"] / true[f"{s}_area"]
        ratio = ratio[np.isfinite(ratio)]
        if len(ratio):
            lo, med, hi = np.percentile(ratio, [16, 50, 84])
        else:
            lo = med = hi = float("nan")
        result[f"{s}_ratio_median"] = float(med)
        result[f"{s}_ratio_spread"] = float((hi - lo) / 2)
        result[f"{s}_n"] = len(ratio)
    return result


def format_table(summary: Any, raw_mb: float | None = None) -> str:
    """The per-plugin table: chunks, items, compute seconds, MB/s in, share of the compute."""
    comps = summary.components
    total = sum(s.compute_seconds for s in comps)
    head = (f"{'plugin':<24}{'kind':<7}{'chunks':>7}{'items':>10}{'MB in':>9}{'seconds':>9}"
            f"{'MB/s':>9}{'share':>7}")
    lines = [head, "-" * len(head)]
    for s in comps:
        mb = (s.bytes_in or s.bytes_out) / 1e6
        lines.append(
            f"{s.name:<24}{s.kind:<7}{s.chunks:>7}{s.items:>10}{mb:>9.1f}"
            f"{s.compute_seconds:>9.3f}{s.mb_per_s:>9.1f}"
            f"{s.compute_seconds / total if total else 0:>7.0%}"
        )
    lines.append("-" * len(head))
    tail = f"compute {total:.2f} s over all plugins, wall {summary.wall_seconds:.2f} s"
    if raw_mb and summary.wall_seconds:
        tail += f": {raw_mb / summary.wall_seconds:.1f} MB/s of raw_records end to end"
    lines.append(tail)
    return "\n".join(lines)


def format_summary(r: dict[str, Any]) -> str:
    """The demo's printed result: injected, reconstructed and found events, S1/S2 areas."""
    lines = [
        f"injected events      {r['injected']:>6}",
        f"reconstructed events {r['reconstructed']:>6}",
        f"found (S2 in window) {r['found']:>6}  ({r['efficiency']:.1%})",
        f"windows w/o injected {r['unmatched_events']:>6}",
    ]
    for s in ("s1", "s2"):
        lines.append(
            f"{s.upper()} area reco/true   median {r[f'{s}_ratio_median']:.3f}, "
            f"spread (16-84%/2) {r[f'{s}_ratio_spread']:.3f}  (n={r[f'{s}_n']})"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- command
def run(args: argparse.Namespace) -> int:
    """``asyncstrax demo``: simulate, process, save, print and plot; returns the exit code."""
    from asyncstrax import Context
    from asyncstrax.context import run_sync
    from asyncstrax.errors import StorageError
    from asyncstrax.tpc.plugins import TPC_PLUGINS, make_simulator

    t_start = time.perf_counter()
    config = dict(
        seed=args.seed,
        raw_data_rate_mb_s=float(args.rate),
        run_duration_ns=int(args.seconds * 1e9),
        chunk_mb=float(args.chunk_mb),
    )
    # options the detector itself refuses (a --rate below what dark counts alone give) end
    # here, in one line, not in a traceback from inside the pipeline
    try:
        make_simulator(config, keep_truth=False)
    except ValueError as error:
        print(f"asyncstrax demo: cannot simulate --rate {args.rate:g} MB/s: {error}",
              file=sys.stderr)
        return 2
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as error:
        why = ("a file of that name exists" if os.path.isfile(args.output)
               else error.strerror or str(error))
        print(f"asyncstrax demo: cannot make the --output folder {args.output}: {why}",
              file=sys.stderr)
        return 2
    storage_path = None if args.no_storage else (
        args.storage or os.path.join(args.output, "strax_data"))
    try:
        storage = make_storage(storage_path)
    except StorageError as error:
        print(f"asyncstrax demo: --storage: {error}", file=sys.stderr)
        return 2
    ctx = Context(storage=storage, register=TPC_PLUGINS, config=config)
    print(f"asyncstrax demo: {args.seconds:g} s of a {ctx.config.get('n_channels', 248)}-channel "
          f"TPC at {args.rate:g} MB/s of raw_records (seed {args.seed}), "
          f"{args.max_workers} worker(s)")
    print(f"storage: {storage[0].path if storage else 'none'}")
    result = run_sync(
        process_demo_run(ctx, max_workers=args.max_workers, progress_bar=not args.no_progress),
        "process_demo_run",
    )
    summary = result["summary"]
    raw_mb = next((s.bytes_out / 1e6 for s in summary.components if s.name == "RawRecords"),
                  None)
    print()
    if result["loaded"]:
        print(f"loaded from storage: {', '.join(result['loaded'])}")
    print(format_table(summary, raw_mb))
    print()
    print(format_summary(reconstruction_summary(result["event_basics"], result["truth"])))
    if not args.no_plot:
        from asyncstrax.tpc.plots import demo_figure

        path = demo_figure(os.path.join(args.output, "demo.png"), result["event_basics"],
                           result["events"], result["peaks"], result["truth"])
        print(f"\nplot: {path}")
    print(f"done in {time.perf_counter() - t_start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `asyncstrax demo`
    parser = argparse.ArgumentParser(
        prog="asyncstrax demo",
        description="simulate, process and plot a few seconds of a TPC")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
