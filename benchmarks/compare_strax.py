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
import + first run; ``1st/warm`` excludes the import. ``peak RSS`` is that process's
(getrusage): raw_records loaded from the .npy files, the same kernels, one worker, two runs -
not ``benchmarks/whole_process.py``'s job, which simulates its raw_records in the process.

Each child is then run again saving every level (``--save DIR``: each engine's own file store,
compressor "blosc" in both): ``warm+save`` is that process's warm run, ``save/process`` its
ratio to the warm run without saving. The two engines' blosc settings differ (asyncstrax: LZ4
level 5, byte shuffle by the dtype's main field size; strax 2.2.3: blosclz level 9, no
shuffle), so strax saves with asyncstrax's settings (``strax_chain.py --codec asyncstrax``)
for the main table, and once more with its own (``--codec strax``) in a separate row of the
saving table. A codec check follows: the first raw_records chunk file of each store decodes
(with the other engine's interpreter's blosc) to the .npy's bytes, and the blosc headers
(codec, shuffle, typesize) of each level's first chunk file match between the engines.

With ``--workers N`` more tables follow: each engine in fresh processes with 1 worker,
N threads and N processes (strax: its ``threaded_mailbox`` processor; for processes
``allow_multiprocess`` and the parallel plugins declared ``parallel="process"``, without which
strax keeps them on its thread pool; its default processor ignores ``max_workers``): the whole process from start to
exit, and a second run in the same process (each run makes its own pool in both engines),
best of two, with the speed-up over 1 worker; then the peak memory of one more fresh process
per mode (``--memory``: the peak of the summed PSS of the process and its workers, shared
memory counted once, sampled every 20 ms by the same code for both engines) and its ratio to
1 worker.

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
                 "run saving every level (save/process: its ratio to the warm run), both engines "
                 "with asyncstrax's blosc settings; lower is better, except MB/s")
    lines.append("peak RSS: this job's process (VmHWM): raw_records loaded from .npy "
                 "files, the same numba kernels, one worker, 1st + warm run in one process "
                 "(not whole_process.py's job, which simulates raw_records in the process)")
    return "\n".join(lines)


def native_table(ours: dict, native: dict) -> str:
    """All of asyncstrax beside all of strax: strax's engine with strax's own functions for
    records and peaks (the levels where strax has them; benchmarks/strax_native_kernels.py)."""
    native["import_s"] = native["import_engine_s"] + native["import_chain_s"]
    native["cold_s"] = native["import_s"] + native["first_run_s"]
    cols = [("import s", "import_s", "{:.2f}"), ("1st run s", "first_run_s", "{:.2f}"),
            ("cold s", "cold_s", "{:.2f}"), ("warm s", "warm_s", "{:.2f}"),
            ("peak RSS MiB", "peak_rss_mib", "{:.0f}")]
    head = f"{'':<34}" + "".join(f"{c[0]:>13}" for c in cols)
    lines = ["the same job, strax with its own records and peaks functions (straxen's recipe; "
             "peak_basics and events by asyncstrax's kernels on both sides)",
             head, "-" * len(head),
             f"{'asyncstrax, its kernels':<34}" + "".join(
                 f"{fmt.format(ours[key]):>13}" for _, key, fmt in cols),
             f"{'strax, its own functions':<34}" + "".join(
                 f"{fmt.format(native[key]):>13}" for _, key, fmt in cols),
             f"{'ours / strax':<34}" + "".join(
                 f"{ours[key] / native[key]:>13.2f}" for _, key, _ in cols),
             f"events: ours {ours['n_events']}, strax's functions {native['n_events']} (the "
             f"kernels differ in corner cases: docs/decisions.md)"]
    return "\n".join(lines)


def save_table(ours: dict, strax: dict, strax_own: dict) -> str:
    """Saving every level: both engines with asyncstrax's blosc settings, and strax with its own."""
    cols = [("warm s", "warm_s", "{:.2f}"), ("warm+save s", "warm_save_s", "{:.2f}"),
            ("save/process", "save_over_process", "{:.2f}"),
            ("RSS save MiB", "save_rss_mib", "{:.0f}"), ("stored MB", "stored_mb", "{:.1f}")]
    rows = [("asyncstrax, its blosc", ours),
            ("strax, asyncstrax's blosc settings", strax),
            ("strax, its default blosc settings", strax_own)]
    width = 38
    head = f"{'':<{width}}" + "".join(f"{c[0]:>13}" for c in cols)
    lines = ["saving every level (compressor 'blosc'; stored MB: all files of both runs)",
             head, "-" * len(head)]
    for label, r in rows:
        lines.append(f"{label:<{width}}" + "".join(f"{fmt.format(r[key]):>13}"
                                                   for _, key, fmt in cols))
    for label, other in (("ours / strax, same blosc settings", strax),
                         ("ours / strax, strax's own blosc", strax_own)):
        lines.append(f"{label:<{width}}" + "".join(f"{ours[key] / other[key]:>13.2f}"
                                                   for _, key, _ in cols))
    lines.append("asyncstrax's blosc settings: LZ4 level 5, byte shuffle by the size of the dtype "
                 "field holding most of an item's bytes; strax 2.2.3's: blosc.compress(data, "
                 "shuffle=False) = blosclz level 9, no shuffle")
    return "\n".join(lines)


BLOSC_CODECS = {0: "blosclz", 1: "lz4", 2: "snappy", 3: "zlib", 4: "zstd"}


def blosc_header(path: str) -> str:
    """Codec, shuffle and typesize from a blosc frame's 16-byte header."""
    with open(path, "rb") as f:
        head = f.read(16)
    flags, typesize = head[2], head[3]
    shuffle = "byte" if flags & 0x1 else "bit" if flags & 0x4 else "none"
    memcpy = " (stored uncompressed)" if flags & 0x2 else ""
    return f"{BLOSC_CODECS.get(flags >> 5, flags >> 5)}, shuffle {shuffle}, typesize {typesize}{memcpy}"


def first_chunk_files(store: str) -> dict[str, str]:
    """{data type: path of its first chunk file} for run 000000 of a strax-layout store."""
    out = {}
    for entry in sorted(os.listdir(store)):
        if entry.count("-") != 2:
            continue
        run_id, data_type, key = entry.split("-")
        path = os.path.join(store, entry, f"{data_type}-{key}-000000")
        if run_id == "000000" and os.path.exists(path):
            out[data_type] = path
    return out


DECODE_CHECK = ("import sys, blosc, numpy as np; "
                "data = blosc.decompress(open(sys.argv[1], 'rb').read()); "
                "print(int(bytes(data) == np.load(sys.argv[2]).tobytes()))")


def codec_check(folder: str, stores: dict[str, str], strax_python: str) -> str:
    """Do the engines' files decode with the other's blosc, and do their headers match?"""
    with open(os.path.join(folder, "chunks.json")) as f:
        npy = os.path.join(folder, json.load(f)["chunks"][0][2])
    files = {name: first_chunk_files(store) for name, store in stores.items()}
    lines = ["codec check (first chunk file of each level, run 000000):"]
    # each store's raw_records chunk 0, decoded by the OTHER engine's interpreter's blosc
    for name, python in (("ours", strax_python), ("strax", sys.executable),
                         ("strax_own", sys.executable)):
        path = files[name]["raw_records"]
        ok = subprocess.run([python, "-c", DECODE_CHECK, path, npy], capture_output=True,
                            text=True).stdout.strip() == "1"
        reader = "strax's interpreter" if python == strax_python else "asyncstrax's interpreter"
        lines.append(f"  {name:<9} raw_records chunk 0 [{blosc_header(path)}] decoded by "
                     f"blosc.decompress in {reader}: {'equals' if ok else 'DIFFERS FROM'} the .npy")
    with open(files["ours"]["raw_records"], "rb") as a, open(files["strax"]["raw_records"], "rb") as b:
        same = a.read() == b.read()
    lines.append(f"  raw_records chunk 0, ours vs strax with asyncstrax's settings: "
                 f"{'identical bytes' if same else 'DIFFERENT BYTES'}")
    for data_type, path in files["ours"].items():
        ours_h, strax_h = blosc_header(path), blosc_header(files["strax"].get(data_type, path))
        own_h = blosc_header(files["strax_own"][data_type]) if data_type in files["strax_own"] else "-"
        mark = "" if ours_h == strax_h else "  (HEADERS DIFFER)"
        lines.append(f"  {data_type:<13} ours [{ours_h}], strax [{strax_h}]{mark}; "
                     f"strax's own [{own_h}]")
    return "\n".join(lines)


def store_mb(store: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(store)
               for f in names) / 1e6


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
    lines.append(f"speed-up with {n} workers over 1 (1-worker seconds / {n}-worker seconds; above "
                 f"1 is faster):")
    for engine, by_mode in runs.items():
        one = by_mode[modes[0]]
        for key, what in (("process_s", "whole process, start to exit"),
                          ("warm_s", "second run in the process")):
            lines.append(f"  {engine:<6} {what:<30} " + ", ".join(
                f"{m} {one[key] / by_mode[m][key]:.2f}x" for m in modes[1:]))
    return "\n".join(lines)


def memory_table(memory: dict[str, dict[str, float]], n: int) -> str:
    """Peak summed PSS per engine and mode, and its ratio to the engine's 1-worker figure."""
    modes = [name.format(n=n) for name, _ in WORKER_MODES]
    head = f"{'':<18}" + "".join(f"{m + ' PSS MiB':>24}" for m in modes)
    lines = [f"peak memory with {n} workers: the summed PSS of the process and its workers "
             f"(shared memory counted once), peak over one fresh process's two runs (not the "
             f"timed processes); ratio to the engine's 1-worker figure in brackets",
             head, "-" * len(head)]
    for engine, by_mode in memory.items():
        one = by_mode[modes[0]]
        lines.append(f"{engine:<18}" + "".join(
            f"{f'{by_mode[m]:.0f} ({by_mode[m] / one:.2f}x)':>24}" for m in modes))
    lines.append(f"{'ours / strax':<18}" + "".join(
        f"{memory['ours'][m] / memory['strax'][m]:>24.2f}" for m in modes))
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
        child(strax_python, "strax_chain.py", folder, "--max-chunks", "1", "--kernels", "strax")
        ours = child(sys.executable, "asx_chain.py", folder, "--warm")
        strax = child(strax_python, "strax_chain.py", folder, "--warm")
        native = child(strax_python, "strax_chain.py", folder, "--warm", "--kernels", "strax")
        # the same, saving every level (each engine's own file store, compressor "blosc"):
        # strax with asyncstrax's blosc settings, then with its own as a separate row
        strax_own = {"warm_s": strax["warm_s"]}
        stores = {}
        for name, python, script, result, extra in (
                ("ours", sys.executable, "asx_chain.py", ours, ()),
                ("strax", strax_python, "strax_chain.py", strax, ("--codec", "asyncstrax")),
                ("strax_own", strax_python, "strax_chain.py", strax_own, ("--codec", "strax"))):
            stores[name] = os.path.join(folder, f"store_{name}")
            saving = child(python, script, folder, "--warm", "--save", stores[name], *extra)
            result["warm_save_s"] = saving["warm_s"]
            result["save_rss_mib"] = saving["peak_rss_mib"]
            result["save_over_process"] = saving["warm_s"] / result["warm_s"]
            result["stored_mb"] = store_mb(stores[name])
        check = codec_check(folder, stores, strax_python)
        for store in stores.values():
            shutil.rmtree(store, ignore_errors=True)
        workers: dict[str, dict[str, dict]] = {"ours": {}, "strax": {}}
        memory: dict[str, dict[str, float]] = {"ours": {}, "strax": {}}
        mismatches: list[str] = []
        if args.workers > 1:
            for _ in range(2):  # best of two, modes alternating (the machine drifts)
                for name, extra in WORKER_MODES:
                    mode = name.format(n=args.workers)
                    flags = [f.format(n=args.workers) for f in extra]
                    for engine, python, script in (("ours", sys.executable, "asx_chain.py"),
                                                   ("strax", strax_python, "strax_chain.py")):
                        r = timed_child(python, script, folder, "--warm", *flags)
                        if r["n_events"] != ours["n_events"]:
                            mismatches.append(f"{engine} {mode}: {r['n_events']} events")
                        best = workers[engine].get(mode)
                        workers[engine][mode] = r if best is None else {
                            k: min(r[k], best[k]) for k in ("process_s", "warm_s")}
            # memory in separate processes: sampling /proc costs CPU of its own
            for name, extra in WORKER_MODES:
                mode = name.format(n=args.workers)
                flags = [f.format(n=args.workers) for f in extra]
                for engine, python, script in (("ours", sys.executable, "asx_chain.py"),
                                               ("strax", strax_python, "strax_chain.py")):
                    r = child(python, script, folder, "--warm", "--memory", *flags)
                    memory[engine][mode] = r["peak_pss_with_workers_mib"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(table(ours, strax, mb, n_chunks))
    print()
    print(native_table(ours, native))
    print()
    print(save_table(ours, strax, strax_own))
    print(check)
    if args.workers > 1:
        print()
        print(worker_table(workers, args.workers))
        print(f"events: every run {ours['n_events']}" if not mismatches else
              f"events MISMATCH (1-worker runs: {ours['n_events']}): " + "; ".join(mismatches))
        print()
        print(memory_table(memory, args.workers))
    if args.json:
        print(json.dumps({"ours": ours, "strax": strax, "strax_own_codec": strax_own,
                          "strax_own_functions": native,
                          "workers": workers, "memory": memory}))


if __name__ == "__main__":
    main()
