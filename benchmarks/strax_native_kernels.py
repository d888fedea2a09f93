"""records and peaks made with strax 2.2.3's own processing functions (straxen's recipe).

``benchmarks/strax_chain.py --kernels strax`` uses these in place of asyncstrax's kernels for
the two heavy levels, so ``compare_strax.py --kernels strax`` sets the whole of strax (engine
and its kernels) beside the whole of asyncstrax on the same raw_records. strax has no
classification or event building of its own (straxen adds them), so peak_basics, events and
event_basics use asyncstrax's kernels on both sides. The recipe follows straxen's
PulseProcessing and Peaklets plugins at the level of detail of asyncstrax's chain: baseline,
flip, integrate, hits, zero samples outside hits; hits sorted by time, peaks found, hit
integration bounds, the sum waveform and the peak properties. Runs in the strax interpreter
(strax imported here); not a test module.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def strax_records(raw_records: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """raw_records -> records, with strax's functions."""
    import strax

    records = strax.raw_to_records(raw_records)
    strax.zero_out_of_bounds(records)
    strax.baseline(records, baseline_samples=cfg["baseline_samples"], flip=True)
    strax.integrate(records)
    thresholds = cfg["hit_min_amplitude"] * np.ones(cfg["n_channels"])
    hits = strax.find_hits(records, min_amplitude=thresholds)
    return strax.cut_outside_hits(records, hits, left_extension=cfg["hit_left_extension"],
                                  right_extension=cfg["hit_right_extension"])


def strax_peaks(records: np.ndarray, cfg: dict[str, Any], start: int, end: int,
                dtype: np.dtype) -> np.ndarray:
    """records -> peaks of ``dtype``, with strax's functions."""
    import strax

    n_channels = cfg["n_channels"]
    left, right = cfg["hit_left_extension"], cfg["hit_right_extension"]
    hits = strax.find_hits(records, min_amplitude=cfg["hit_min_amplitude"] * np.ones(n_channels))
    hits = strax.sort_by_time(hits)
    peaks = strax.find_peaks(
        hits, cfg["to_pe"], gap_threshold=cfg["peak_gap_threshold"],
        left_extension=cfg["peak_left_extension"], right_extension=cfg["peak_right_extension"],
        min_area=cfg["peak_min_area"], min_channels=cfg["peak_min_channels"],
        max_duration=cfg["peak_max_duration"], result_dtype=dtype)
    if not len(peaks) or not len(records):
        return peaks
    hits = hits[strax.fully_contained_in(hits, peaks) >= 0]
    dt = int(records["dt"][0])
    # the gaps between peaks (and the chunk's edges): where hits may be integrated
    outside = np.zeros(len(peaks) + 1, dtype=strax.time_fields)
    outside[0]["time"], outside[0]["endtime"] = start, peaks[0]["time"]
    outside[1:-1]["time"] = strax.endtime(peaks[:-1])
    outside[1:-1]["endtime"] = peaks["time"][1:]
    outside[-1]["time"], outside[-1]["endtime"] = strax.endtime(peaks[-1]), end
    outside = outside[(outside["endtime"] - outside["time"]) > 0]
    strax.find_hit_integration_bounds(hits, outside, records,
                                      save_outside_hits=(left * dt, right * dt),
                                      n_channels=n_channels, allow_bounds_beyond_records=True)
    extended = hits.copy()
    extended["time"] -= (extended["left"] - extended["left_integration"]) * extended["dt"]
    extended["length"] = extended["right_integration"] - extended["left_integration"]
    extended = strax.sort_by_time(extended)
    strax.sum_waveform(peaks, extended, records, strax.record_links(records), cfg["to_pe"],
                       n_top_channels=cfg["n_top_channels"], store_data_top=True,
                       store_data_start=True)
    strax.compute_properties(peaks, n_top_channels=cfg["n_top_channels"])
    return peaks
