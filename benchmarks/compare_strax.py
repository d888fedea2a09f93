"""asyncstrax's engine beside strax 2.2.3's on the same data: one table of ratios.

    python -m benchmarks.compare_strax [--raw-mb 200] [--strax-python PATH] [--workers 2]

1. Simulates ``--raw-mb`` MB of raw_records once with ``asyncstrax.tpc.sim`` (the chain's own
   simulator, 20 MB chunks) and saves them as .npy chunk files in a temp dir.
2. Ours: a fresh process of this interpreter runs ``benchmarks/asx_chain.py``: a source
   plugin yielding those chunks, then asyncstrax.tpc's Records -> Peaks -> PeakBasics ->
   Events -> EventBasics, one worker.
3. strax: a fresh process of the strax interpreter runs ``benchmarks/strax_chain.py``: the same
   chain as ``strax.Plugin`` classes, on strax's default (single-thread) processor.
   Both chains call the SAME numba kernels (``asyncstrax.processing``, imported in the strax
   venv through PYTHONPATH), so the comparison isolates the engines.

Each child times: import (engine + chain modules), the first run (cold: numba loads its
cached kernels, ...), a second run in the same process (warm), and reports its peak RSS.
Both are first primed on one chunk so numba's on-disk caches exist. ``cold`` in the table is
import + first run; ``1st/warm`` excludes the import. Each child is then run again saving
every level (``--save DIR``: each engine's own file store and default compressor, blosc for
both; ours shuffles): ``warm+save`` is that process's warm run, ``save/process`` its ratio to
the warm run without saving.

With ``--workers N`` a second table follows: each engine in fresh processes with 1 worker,
N threads and N processes (strax: its ``threaded_mailbox`` processor, ``allow_multiprocess``
for processes; its default processor ignores ``max_workers``): the whole process from start to
exit, and a second run in the same process (each run makes its own pool in both engines).

The strax interpreter: ``--strax-python``, else ``$ASYNCSTRAX_STRAX_PYTHON``, else
``/tmp/straxvenv/bin/python`` if it imports strax. strax is never a dependency of asyncstrax.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_STRAX_PYTHON = "/tmp/straxvenv/bin/python"
HOW_TO_GET_STRAX = (
    "strax is not available. Create a separate virtualenv with it (never install it into\n"
    "asyncstrax's environment):\n"
    "    python3 -m venv /tmp/straxvenv && /tmp/straxvenv/bin/pip install -q strax==2.2.3\n"
    "then rerun, or pass --strax-python PATH / set ASYNCSTRAX_STRAX_PYTHON."
)


def strax_version(python: str | None) -> str | None:
    if not python or not os.path.exists(python):
        return None
    proc = subprocess.run([python, "-c", "import strax; print(strax.__version__)"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def simulate_to(folder: str, raw_mb: float, chunk_mb: float) -> tuple[int, float]:
    """Simulate raw_records with the chain's simulator; save chunks.json + one .npy per chunk."""
    import numpy as np

    from asyncstrax.tpc.plugins import make_simulator

    sim = make_simulator({"raw_mb": raw_mb, "chunk_mb": chunk_mb, "raw_data_rate_mb_s": 200.0})
    index = []
    total = 0
    for i, (start, end, raw) in enumerate(sim.iter_chunks(raw_mb=raw_mb, with_truth=False)):
        name = f"raw_records_{i:04d}.npy"
        np.save(os.path.join(folder, name), raw)
        index.append([int(start), int(end), name])
        total += raw.nbytes
    with open(os.path.join(folder, "chunks.json"), "w") as f:
        json.dump({"chunks": index}, f)
    return len(index), total / 1e6


def child(python: str, script: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([python, os.path.join(HERE, script), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed ({python}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(ours: dict, strax: dict, raw_mb: float, n_chunks: int) -> str:
    for r in (ours, strax):
        r["import_s"] = r["import_engine_s"] + r["import_chain_s"]
        r["cold_s"] = r["import_s"] + r["first_run_s"]
        r["first_over_warm"] = r["first_run_s"] / r["warm_s"]
        r["mb_s"] = raw_mb / r["warm_s"]
        r["save_over_process"] = r["warm_save_s"] / r["warm_s"]
    cols = [("import s", "import_s", "{:.2f}"), ("1st run s", "first_run_s", "{:.2f}"),
            ("cold s", "cold_s", "{:.2f}"), ("warm s", "warm_s", "{:.2f}"),
            ("1st/warm", "first_over_warm", "{:.2f}"), ("warm MB/s", "mb_s", "{:.0f}"),
            ("peak RSS MiB", "peak_rss_mib", "{:.0f}"), ("warm+save s", "warm_save_s", "{:.2f}"),
            ("save/process", "save_over_process", "{:.2f}"), ("RSS save MiB", "save_rss_mib", "{:.0f}")]
    head = f"{'':<18}" + "".join(f"{c[0]:>13}" for c in cols)
    lines = [f"raw_records -> event_basics, {raw_mb:.0f} MB in {n_chunks} chunks, one worker; "
             f"both engines run asyncstrax's numba kernels",
             head, "-" * len(head)]
    for r in (ours, strax):
        lines.append(f"{r['engine']:<18}" + "".join(f"{fmt.format(r[key]):>13}"
                                                     for _, key, fmt in cols))
    lines.append(f"{'ours / strax':<18}" + "".join(
        f"{ours[key] / strax[key]:>13.2f}" for _, key, _ in cols))
    lines.append(f"events: ours {ours['n_events']}, strax {strax['n_events']}; "
                 f"sum s2_area: ours {ours['s2_area_sum']:.6g}, strax {strax['s2_area_sum']:.6g}"
                 + ("" if ours["n_events"] == strax["n_events"] else "  (MISMATCH)"))
    lines.append("cold = import + 1st run; 1st/warm excludes the import; warm+save: the warm "
                 "run saving every level (save/process: its ratio to the warm run); lower is "
                 "better, except MB/s")
    return "\n".join(lines)


WORKER_MODES = (("1 worker", ()), ("{n} threads", ("--workers", "{n}")),
                ("{n} processes", ("--workers", "{n}", "--processes")))


def worker_table(runs: dict[str, dict[str, dict]], n: int) -> str:
    """Seconds per engine and mode, and each mode's speed-up over that engine's 1 worker."""
    modes = [name.format(n=n) for name, _ in WORKER_MODES]
    head = f"{'':<18}" + "".join(f"{m + ' ' + k:>24}" for m in modes for k in ("process s", "2nd run s"))
    lines = [f"the same chain with {n} workers: a whole fresh process (start to exit), and a "
             f"second run in it; speed-up over the engine's 1-worker figure in brackets",
             head, "-" * len(head)]
    for engine, by_mode in runs.items():
        one = by_mode[modes[0]]
        cells = []
        for m in modes:
            r = by_mode[m]
            for key in ("process_s", "warm_s"):
                cells.append(f"{r[key]:.2f} ({one[key] / r[key]:.2f}x)")
        lines.append(f"{engine:<18}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def timed_child(python: str, script: str, *args: str) -> dict:
    import time

    t0 = time.perf_counter()
    result = child(python, script, *args)
    result["process_s"] = time.perf_counter() - t0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw-mb", type=float, default=200)
    parser.add_argument("--chunk-mb", type=float, default=20)
    parser.add_argument("--strax-python", default=None,
                        help="python of a virtualenv with strax (default: "
                             "$ASYNCSTRAX_STRAX_PYTHON, else /tmp/straxvenv/bin/python)")
    parser.add_argument("--json", action="store_true", help="also print the raw results")
    parser.add_argument("--workers", type=int, default=0,
                        help="also compare N workers, threads and processes, with 1")
    args = parser.parse_args()

    strax_python = (args.strax_python or os.environ.get("ASYNCSTRAX_STRAX_PYTHON")
                    or DEFAULT_STRAX_PYTHON)
    version = strax_version(strax_python)
    if version is None:
        print(f"Cannot import strax with {strax_python}.\n{HOW_TO_GET_STRAX}")
        return

    folder = tempfile.mkdtemp(prefix="asx_vs_strax_")
    try:
        n_chunks, mb = simulate_to(folder, args.raw_mb, args.chunk_mb)
        # prime numba's on-disk caches (both engines run the same kernels)
        child(sys.executable, "asx_chain.py", folder, "--max-chunks", "1")
        child(strax_python, "strax_chain.py", folder, "--max-chunks", "1")
        ours = child(sys.executable, "asx_chain.py", folder, "--warm")
        strax = child(strax_python, "strax_chain.py", folder, "--warm")
        # the same, saving every level (each engine's default storage and compressor)
        for name, python, script, result in (("ours", sys.executable, "asx_chain.py", ours),
                                             ("strax", strax_python, "strax_chain.py", strax)):
            store = os.path.join(folder, f"store_{name}")
            saving = child(python, script, folder, "--warm", "--save", store)
            result["warm_save_s"] = saving["warm_s"]
            result["save_rss_mib"] = saving["peak_rss_mib"]
            shutil.rmtree(store, ignore_errors=True)
        workers: dict[str, dict[str, dict]] = {"ours": {}, "strax": {}}
        if args.workers > 1:
            for _ in range(2):  # best of two, modes alternating (the machine drifts)
                for name, extra in WORKER_MODES:
                    mode = name.format(n=args.workers)
                    flags = [f.format(n=args.workers) for f in extra]
                    for engine, python, script in (("ours", sys.executable, "asx_chain.py"),
                                                   ("strax", strax_python, "strax_chain.py")):
                        r = timed_child(python, script, folder, "--warm", *flags)
                        best = workers[engine].get(mode)
                        workers[engine][mode] = r if best is None else {
                            k: min(r[k], best[k]) for k in ("process_s", "warm_s")}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(table(ours, strax, mb, n_chunks))
    if args.workers > 1:
        print()
        print(worker_table(workers, args.workers))
    if args.json:
        print(json.dumps({"ours": ours, "strax": strax, "workers": workers}))


if __name__ == "__main__":
    main()
