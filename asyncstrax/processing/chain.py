"""The reference TPC chain, kernels only, on one chunk (no engine).

raw_records -> records -> peaks -> peak_basics -> events -> event_basics, as the TPC plugins
do it. The benchmark compares the engine with ``process_chunk_plain`` in a plain loop.
"""

import numpy as np

from asyncstrax.dtypes import peak_dtype
from asyncstrax.processing.baseline import raw_to_records
from asyncstrax.processing.classify import peak_basics
from asyncstrax.processing.events import build_events, event_basics
from asyncstrax.processing.hitfinder import find_hits
from asyncstrax.processing.peaks import build_peaks
from asyncstrax.processing.records import cut_outside_hits

__all__ = ["DEFAULT_CONFIG", "chain_config", "process_records", "process_peaks", "process_chunk_plain"]

#: Defaults of the reference chain (tuned on asyncstrax.tpc.sim's detector).
DEFAULT_CONFIG = dict(
    n_channels=248,
    to_pe=None,  # PE per (ADC x sample), per channel; None = asyncstrax.tpc.sim.detector_to_pe
    baseline_samples=40,
    hit_min_amplitude=15,  # ADC counts, scalar or per channel
    hit_left_extension=2,  # samples kept / integrated left of a hit
    hit_right_extension=15,  # samples kept / integrated right of a hit
    peak_gap_threshold=300,  # ns
    peak_left_extension=20,  # ns (= hit_left_extension * dt)
    peak_right_extension=150,  # ns (= hit_right_extension * dt)
    peak_min_area=0.0,  # PE
    peak_min_channels=2,
    peak_max_duration=10_000_000,  # ns
    n_top_channels=124,
    n_sum_wv_samples=200,
    n_widths=11,
    s1_max_rise_time=100.0,  # ns
    s1_max_range_50p_area=500.0,  # ns
    s1_min_channels=2,
    s2_min_area=10.0,  # PE
    s2_min_range_50p_area=200.0,  # ns
    s2_min_channels=2,
    trigger_min_area=100.0,  # PE
    left_event_extension=250_000,  # ns (>= max drift time of the simulator, 200 us)
    right_event_extension=20_000,  # ns
)


def chain_config(**overrides):
    """DEFAULT_CONFIG updated with overrides; fills ``to_pe`` from the simulator's detector."""
    unknown = set(overrides) - set(DEFAULT_CONFIG)
    if unknown:
        raise KeyError(f"Unknown chain options: {sorted(unknown)}")
    cfg = dict(DEFAULT_CONFIG, **overrides)
    if cfg["to_pe"] is None:
        from asyncstrax.tpc.sim import detector_to_pe

        cfg["to_pe"] = detector_to_pe(cfg["n_channels"])
    cfg["to_pe"] = np.asarray(cfg["to_pe"], dtype=np.float64)
    return cfg


def process_records(raw_records, cfg):
    """raw_records -> records: baseline, flip, integrate, zero samples outside hits."""
    records = raw_to_records(raw_records, baseline_samples=cfg["baseline_samples"])
    hits = find_hits(records, cfg["hit_min_amplitude"], n_channels=cfg["n_channels"])
    cut_outside_hits(records, hits, cfg["hit_left_extension"], cfg["hit_right_extension"])
    return records


def process_peaks(records, cfg):
    """records -> peaks: hits (with extensions), find_peaks, sum_waveform, widths."""
    hits = find_hits(
        records, cfg["hit_min_amplitude"], cfg["hit_left_extension"], cfg["hit_right_extension"],
        n_channels=cfg["n_channels"],
    )
    return build_peaks(
        records, hits, cfg["to_pe"],
        gap_threshold=cfg["peak_gap_threshold"],
        left_extension=cfg["peak_left_extension"],
        right_extension=cfg["peak_right_extension"],
        min_area=cfg["peak_min_area"],
        min_channels=cfg["peak_min_channels"],
        max_duration=cfg["peak_max_duration"],
        n_top_channels=cfg["n_top_channels"],
        result_dtype=np.dtype(
            peak_dtype(cfg["n_channels"], cfg["n_sum_wv_samples"], cfg["n_widths"])
        ),
    )


_CLASSIFY_KEYS = (
    "s1_max_rise_time", "s1_max_range_50p_area", "s1_min_channels",
    "s2_min_area", "s2_min_range_50p_area", "s2_min_channels",
)


def process_chunk_plain(raw_records, config=None, start=None, end=None, first_event_number=0):
    """Run the whole chain on one chunk of raw_records; return a dict of arrays.

    Keys: records, peaks, peak_basics, events, event_basics. ``config``: a dict of
    DEFAULT_CONFIG keys (missing keys take defaults). ``start``/``end``: the chunk's range
    (events are clipped to it); default: the data's own extent.
    """
    cfg = chain_config(**(config or {}))
    if start is None:
        start = int(raw_records["time"].min()) if len(raw_records) else 0
    if end is None:
        end = (
            int((raw_records["time"] + raw_records["length"] * raw_records["dt"].astype(np.int64)).max())
            if len(raw_records) else start
        )
    records = process_records(raw_records, cfg)
    peaks = process_peaks(records, cfg)
    pb = peak_basics(peaks, {k: cfg[k] for k in _CLASSIFY_KEYS})
    events = build_events(
        pb, cfg["trigger_min_area"], cfg["left_event_extension"], cfg["right_event_extension"],
        start, end, first_event_number,
    )
    eb = event_basics(events, pb)
    return dict(records=records, peaks=peaks, peak_basics=pb, events=events, event_basics=eb)
