"""Peak summaries (peak_basics) and S1/S2 classification.

S1s (prompt scintillation) are fast: most of their light arrives within ~100 ns, so their
10%->50% area rise time is short. S2s (proportional scintillation of drifted electrons) are
microseconds wide. Like straxen, the classifier cuts on the rise time and the 50% area width,
plus minimum channel counts and a minimum S2 area.
"""

import numba
import numpy as np

from asyncstrax.dtypes import PEAK_TYPE_S1, PEAK_TYPE_S2, PEAK_TYPE_UNKNOWN, peak_basics_dtype

__all__ = ["classify_peaks", "compute_peak_basics", "peak_basics"]

_PEAK_BASICS_DTYPE = np.dtype(peak_basics_dtype)


@numba.njit(nogil=True, cache=True)
def classify_peaks(
    area, rise_time, range_50p_area, n_channels,
    s1_max_rise_time=100.0, s1_max_range_50p_area=500.0, s1_min_channels=2,
    s2_min_area=10.0, s2_min_range_50p_area=200.0, s2_min_channels=2,
):
    """Return int8 types (0 unknown, 1 S1, 2 S2) from per-peak properties (arrays, same length).

    S1: rise_time <= s1_max_rise_time [ns], range_50p_area <= s1_max_range_50p_area [ns] and
    n_channels >= s1_min_channels. Otherwise S2: area >= s2_min_area [PE], range_50p_area >=
    s2_min_range_50p_area [ns], n_channels >= s2_min_channels. Else unknown. Caveat: a single
    electron S2 or a pile-up of S1s is not handled specially.
    """
    n = len(area)
    result = np.zeros(n, dtype=np.int8)
    for i in range(n):
        if (
            rise_time[i] <= s1_max_rise_time
            and range_50p_area[i] <= s1_max_range_50p_area
            and n_channels[i] >= s1_min_channels
        ):
            result[i] = PEAK_TYPE_S1
        elif (
            area[i] >= s2_min_area
            and range_50p_area[i] >= s2_min_range_50p_area
            and n_channels[i] >= s2_min_channels
        ):
            result[i] = PEAK_TYPE_S2
        else:
            result[i] = PEAK_TYPE_UNKNOWN
    return result


@numba.njit(nogil=True, cache=True)
def compute_peak_basics(peaks, out):
    """Fill peak_basics ``out`` (same length) from peaks (after sum_waveform, compute_widths).

    n_channels counts channels with positive area; max_pmt is the channel with the largest
    area; range_50p_area = width[5], range_90p_area = width[9] (needs n_widths=11);
    rise_time = -area_decile_from_midpoint[1]. ``type`` is left for classify_peaks.
    """
    for i in range(len(peaks)):
        p = peaks[i]
        o = out[i]
        o["time"] = p["time"]
        o["endtime"] = p["time"] + np.int64(p["length"]) * p["dt"]
        o["center_time"] = p["center_time"]
        o["area"] = p["area"]
        o["n_hits"] = p["n_hits"]
        apc = p["area_per_channel"]
        n_ch = 0
        best = 0
        best_area = apc[0]
        for c in range(len(apc)):
            a = apc[c]
            if a > 0:
                n_ch += 1
            if a > best_area:
                best_area = a
                best = c
        o["n_channels"] = n_ch
        o["max_pmt"] = best
        o["max_pmt_area"] = best_area
        o["range_50p_area"] = p["width"][5]
        o["range_90p_area"] = p["width"][9]
        o["area_fraction_top"] = p["area_fraction_top"]
        o["rise_time"] = -p["area_decile_from_midpoint"][1]
        o["type"] = 0


def peak_basics(peaks, classification=None, out=None):
    """Return peak_basics (classified) for peaks. ``classification``: kwargs of classify_peaks."""
    if out is None:
        out = np.empty(len(peaks), dtype=_PEAK_BASICS_DTYPE)
    if peaks.dtype["width"].shape[0] < 10:
        raise ValueError("peak_basics needs at least 10 widths (n_widths=11)")
    # The kernels run on empty input too (a plugin's warm-up loads them that way), and get
    # contiguous copies of the fields: a field of an empty array is contiguous, of a full one
    # strided, and each layout would be a kernel of its own to load.
    compute_peak_basics(peaks, out)
    out["type"] = classify_peaks(
        *(np.ascontiguousarray(out[f]) for f in ("area", "rise_time", "range_50p_area",
                                                 "n_channels")),
        **(classification or {}),
    )
    return out
