"""The reference TPC chain as strax 2.x plugins, run by strax's engine; prints one JSON line.

    <strax python> benchmarks/strax_chain.py CHUNK_DIR [--warm] [--max-chunks N]
                                             [--workers N [--processes]] [--memory]
                                             [--save DIR [--codec asyncstrax|strax]]

Child of ``benchmarks/compare_strax.py`` (run it, not this). It needs an interpreter where
``import strax`` works (a separate virtualenv: strax is *not* a dependency of asyncstrax) and
``PYTHONPATH`` holding this repository: the plugins call asyncstrax's numba kernels
(``asyncstrax.processing``), the same ones the asyncstrax plugins call, so the comparison
isolates the engines. The source reads raw_records chunks saved by compare_strax.py (a
``chunks.json`` index and one .npy file per chunk). Not a test module (no ``test_`` prefix):
pytest never imports it.

``--codec`` (with ``--save``) picks what strax's "blosc" compressor does: ``asyncstrax`` (the
default here) replaces ``strax.io.COMPRESSORS["blosc"]["compress"]`` by a copy of asyncstrax's
blosc settings (LZ4 level 5, byte shuffle by the size of the dtype field holding most of an
item's bytes: ``asyncstrax/storage/codecs.py``), so a saving comparison compares the engines,
not two codec settings; ``strax`` keeps strax 2.2.3's own (``blosc.compress(data,
shuffle=False)``: blosclz level 9, no shuffle). Either way the files are plain blosc frames
(shuffle and typesize are in blosc's header), which strax and asyncstrax both read.

``--memory`` samples the peak of the summed PSS of this process and its descendants (a process
pool's workers) with the same sampler as ``benchmarks/asx_chain.py`` (imported from it).
"""

from __future__ import annotations

import argparse
import json
import os
import time

T_START = time.perf_counter()


def asyncstrax_blosc_compress(data):
    """asyncstrax's blosc compressor, for strax's _save_file (which passes the numpy array):
    LZ4 level 5, byte shuffle by the size of the dtype field holding most of an item's bytes.
    The very function asyncstrax's store calls (this interpreter has the repository on its
    path for the kernels), so both engines write the same bytes."""
    from asyncstrax.storage import codecs

    return codecs.compress("blosc", data)


def build_plugins(chunk_dir: str, max_chunks: int | None, processes: bool = False,
                  strax_kernels: bool = False):
    import numpy as np
    import strax
    from strax_native_kernels import strax_peaks, strax_records  # this script's folder

    from asyncstrax.dtypes import (
        DEFAULT_RECORD_LENGTH,
        event_basics_dtype,
        event_dtype,
        peak_basics_dtype,
        peak_dtype,
        raw_record_dtype,
        record_dtype,
    )
    from asyncstrax.processing import chain_config
    from asyncstrax.processing.chain import process_peaks, process_records
    from asyncstrax.processing.classify import peak_basics as compute_peak_basics
    from asyncstrax.processing.events import build_events
    from asyncstrax.processing.events import event_basics as compute_event_basics

    with open(os.path.join(chunk_dir, "chunks.json")) as f:
        index = json.load(f)["chunks"]
    if max_chunks:
        index = index[:max_chunks]
    cfg = chain_config()
    # strax sends only parallel="process" plugins to its process pool (allow_multiprocess);
    # parallel=True plugins run on its thread pool even when processes are allowed
    PARALLEL = "process" if processes else True  # noqa: N806
    classification = {name: cfg[name] for name in (
        "s1_max_rise_time", "s1_max_range_50p_area", "s1_min_channels", "s2_min_area",
        "s2_min_range_50p_area", "s2_min_channels")}

    class RawRecords(strax.Plugin):
        """Source: the saved raw_records chunks, one per compute(chunk_i)."""

        __version__ = "0.1.0"
        provides = "raw_records"
        depends_on = ()
        data_kind = "raw_records"
        dtype = raw_record_dtype()
        rechunk_on_save = False

        def is_ready(self, chunk_i):
            return chunk_i < len(index)

        def source_finished(self):
            return True

        def compute(self, chunk_i):
            start, end, name = index[chunk_i]
            data = np.load(os.path.join(chunk_dir, name))
            return self.chunk(start=start, end=end, data=data)

    class Records(strax.Plugin):
        __version__ = "0.1.0"
        provides = "records"
        depends_on = "raw_records"
        data_kind = "records"
        parallel = PARALLEL
        dtype = record_dtype(DEFAULT_RECORD_LENGTH)
        rechunk_on_save = False

        def compute(self, raw_records):
            if strax_kernels:
                return strax_records(raw_records, cfg)
            return process_records(raw_records, cfg)

    class Peaks(strax.Plugin):
        __version__ = "0.1.0"
        provides = "peaks"
        depends_on = "records"
        data_kind = "peaks"
        parallel = PARALLEL
        dtype = peak_dtype(cfg["n_channels"], cfg["n_sum_wv_samples"], cfg["n_widths"])

        def compute(self, records, start, end):
            if strax_kernels:
                return strax_peaks(records, cfg, start, end, self.dtype)
            return process_peaks(records, cfg)

    class PeakBasics(strax.Plugin):
        __version__ = "0.1.0"
        provides = "peak_basics"
        depends_on = "peaks"
        data_kind = "peaks"
        parallel = PARALLEL
        dtype = peak_basics_dtype

        def compute(self, peaks):
            return compute_peak_basics(peaks, classification)

    class Events(strax.OverlapWindowPlugin):
        __version__ = "0.1.0"
        provides = "events"
        depends_on = "peak_basics"
        data_kind = "events"
        dtype = event_dtype

        def get_window_size(self):
            return cfg["left_event_extension"] + cfg["right_event_extension"]

        def compute(self, peaks, start, end):
            return build_events(peaks, cfg["trigger_min_area"], cfg["left_event_extension"],
                                cfg["right_event_extension"], start, end)

        def iter(self, iters, executor=None):
            # number events when they are sent (compute may see the overlap region twice)
            n_sent = 0
            for chunk in super().iter(iters, executor=executor):
                if chunk is not None:
                    chunk.data["event_number"] = np.arange(n_sent, n_sent + len(chunk.data))
                    n_sent += len(chunk.data)
                yield chunk

    class EventBasics(strax.Plugin):
        __version__ = "0.1.0"
        provides = "event_basics"
        depends_on = ("events", "peak_basics")
        data_kind = "events"
        dtype = event_basics_dtype

        def compute(self, events, peaks):
            return compute_event_basics(events, peaks)

    plugins = [RawRecords, Records, Peaks, PeakBasics, Events, EventBasics]
    # strax's process pool pickles plugins (by class reference): make the classes module
    # globals; its workers are forked from this process, so they have them (and cfg, index)
    for cls in plugins:
        cls.__qualname__ = cls.__name__
        globals()[cls.__name__] = cls
    return plugins


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("chunk_dir")
    parser.add_argument("--warm", action="store_true", help="also time a second run")
    parser.add_argument("--max-chunks", type=int, default=None)
    parser.add_argument("--kernels", choices=("asyncstrax", "strax"), default="asyncstrax",
                        help="records and peaks by asyncstrax's kernels (the engines alone "
                             "differ) or by strax's own functions (benchmarks/"
                             "strax_native_kernels.py: all of strax beside all of asyncstrax)")
    parser.add_argument("--save", default=None, metavar="DIR",
                        help="save every level to a DataDirectory in DIR (strax's defaults)")
    parser.add_argument("--workers", type=int, default=1,
                        help="above 1: strax's threaded_mailbox processor with this many "
                             "workers (its default processor ignores max_workers)")
    parser.add_argument("--processes", action="store_true",
                        help="with --workers: the parallel plugins (Records, Peaks, "
                             "PeakBasics) declared parallel='process', in strax's process "
                             "pool (allow_multiprocess); with parallel=True strax would run "
                             "them on its thread pool")
    parser.add_argument("--codec", choices=("asyncstrax", "strax"), default="asyncstrax",
                        help="with --save: strax's 'blosc' compressor with asyncstrax's settings "
                             "(default) or strax's own (blosclz level 9, no shuffle)")
    parser.add_argument("--memory", action="store_true",
                        help="sample the summed PSS of this process and its workers")
    args = parser.parse_args()

    t0 = time.perf_counter()
    import strax

    t_import_engine = time.perf_counter() - t0
    if args.codec == "asyncstrax":
        # _save_file looks the compressor up at call time; process-pool workers are forked
        # from this process, so they inherit the replacement too
        strax.io.COMPRESSORS["blosc"]["compress"] = asyncstrax_blosc_compress
    t0 = time.perf_counter()
    plugins = build_plugins(args.chunk_dir, args.max_chunks, args.processes,  # imports kernels
                            strax_kernels=args.kernels == "strax")
    t_import_chain = time.perf_counter() - t0

    def run(run_id: str) -> tuple[float, int, float]:
        # with storage, strax saves every level (save_when ALWAYS, its default) with blosc
        storage = [strax.DataDirectory(args.save)] if args.save else []
        st = strax.Context(storage=storage, register=plugins,
                           allow_multiprocess=args.processes)
        t = time.perf_counter()
        n, s2 = 0, 0.0
        # 1 worker: strax's default processor, single process/thread (max_workers=None)
        parallel = dict(max_workers=args.workers, processor="threaded_mailbox",
                        ) if args.workers > 1 else {}
        for chunk in st.get_iter(run_id, "event_basics", progress_bar=False, **parallel):
            n += len(chunk.data)
            s2 += float(chunk.data["s2_area"].sum())
        return time.perf_counter() - t, n, s2

    from asx_chain import first_and_warm, peak_rss_mib  # this script's folder is sys.path[0]

    first, n_events, s2_sum, warm, peak_pss = first_and_warm(run, args.warm, args.memory)
    print(json.dumps(dict(
        workers=args.workers, processes=args.processes,
        codec=args.codec if args.save else None,
        peak_pss_with_workers_mib=peak_pss,
        engine=f"strax {strax.__version__}", import_engine_s=t_import_engine,
        import_chain_s=t_import_chain, first_run_s=first, warm_s=warm,
        total_s=time.perf_counter() - T_START,
        peak_rss_mib=peak_rss_mib(),
        n_events=n_events, s2_area_sum=s2_sum,
    )))


if __name__ == "__main__":
    main()
