"""Event building: windows around large S2s, and the main S1/S2 of each event."""

import numba
import numpy as np

from asyncstrax.dtypes import PEAK_TYPE_S1, PEAK_TYPE_S2, event_basics_dtype, event_dtype

__all__ = [
    "find_event_windows",
    "build_events",
    "fully_contained_ranges",
    "compute_event_basics",
    "event_basics",
]

_EVENT_DTYPE = np.dtype(event_dtype)
_EVENT_BASICS_DTYPE = np.dtype(event_basics_dtype)


@numba.njit(nogil=True, cache=True)
def find_event_windows(
    time, endtime, area, ptype, trigger_min_area, left_extension, right_extension,
    chunk_start, chunk_end, trigger_type=PEAK_TYPE_S2,
):
    """Return (start, end) arrays of event windows, sorted and disjoint.

    A trigger is a peak of type ``trigger_type`` with area > trigger_min_area [PE]; its window is
    [time - left_extension, endtime + right_extension], clipped to [chunk_start, chunk_end].
    Overlapping or touching windows are merged (so one event may hold several S2s). Peaks must be
    sorted by time. Caveat: across chunk boundaries a window is clipped, not merged with the next
    chunk's; the engine's OverlapWindowPlugin is what makes events chunking-independent.
    """
    n = len(time)
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    n_ev = 0
    for i in range(n):
        if ptype[i] != trigger_type or not area[i] > trigger_min_area:
            continue
        s = max(time[i] - left_extension, chunk_start)
        e = min(endtime[i] + right_extension, chunk_end)
        if e <= s:
            continue
        if n_ev > 0 and s <= ends[n_ev - 1]:
            ends[n_ev - 1] = max(ends[n_ev - 1], e)
        else:
            starts[n_ev] = s
            ends[n_ev] = e
            n_ev += 1
    return starts[:n_ev], ends[:n_ev]


def build_events(
    peak_basics, trigger_min_area=100.0, left_extension=250_000, right_extension=20_000,
    chunk_start=np.iinfo(np.int64).min, chunk_end=np.iinfo(np.int64).max, first_event_number=0,  # noqa: B008 - constants, evaluated once
):
    """Return events (event_dtype) from time-sorted peak_basics; see find_event_windows."""
    # contiguous copies: one kernel signature whether peak_basics is empty or not
    s, e = find_event_windows(
        *(np.ascontiguousarray(peak_basics[f]) for f in ("time", "endtime", "area", "type")),
        float(trigger_min_area), int(left_extension), int(right_extension),
        int(chunk_start), int(chunk_end),
    )
    events = np.empty(len(s), dtype=_EVENT_DTYPE)
    events["time"] = s
    events["endtime"] = e
    events["event_number"] = np.arange(first_event_number, first_event_number + len(s))
    return events


@numba.njit(nogil=True, cache=True)
def fully_contained_ranges(things_time, things_endtime, cont_time, cont_endtime):
    """For each container, the [first, end) index range of things fully inside it.

    Things are sorted by time; containers sorted and disjoint. A thing is contained if
    time >= container time and endtime <= container endtime (strax's fully_contained_in).
    Things are assumed to be non-overlapping in practice (peaks), so once a thing starting inside a
    container ends outside it, later things are still checked individually.
    """
    nc = len(cont_time)
    nt = len(things_time)
    result = np.zeros((nc, 2), dtype=np.int64)
    j = 0
    for c in range(nc):
        while j < nt and things_time[j] < cont_time[c]:
            j += 1
        first = j
        k = j
        while k < nt and things_time[k] < cont_endtime[c]:
            k += 1
        result[c, 0] = first
        result[c, 1] = k
        j = first
    return result


@numba.njit(nogil=True, cache=True)
def compute_event_basics(events, peaks, ranges, out):
    """Fill event_basics ``out`` for events; peaks = peak_basics, ranges from
    fully_contained_ranges (candidates; endtime is checked here).

    Main S2: largest-area S2 in the event; alt S2: second largest. Main S1: largest S1 starting
    before the main S2 (any S1 if there is no S2); alt S1: second largest such. drift_time =
    s2_center_time - s1_center_time. Indices are positions in the event's contained peaks.
    Missing peaks: index -1, float fields NaN, times / drift_time / n_channels 0.
    """
    for e_i in range(len(events)):
        o = out[e_i]
        ev_end = events[e_i]["endtime"]
        o["time"] = events[e_i]["time"]
        o["endtime"] = ev_end
        a, b = ranges[e_i, 0], ranges[e_i, 1]
        s2 = -1
        alt_s2 = -1
        s2_i = -1
        alt_s2_i = -1
        n_in = 0
        for k in range(a, b):
            if peaks[k]["endtime"] > ev_end:
                continue
            if peaks[k]["type"] == PEAK_TYPE_S2:
                if s2 < 0 or peaks[k]["area"] > peaks[s2]["area"]:
                    alt_s2, alt_s2_i = s2, s2_i
                    s2, s2_i = k, n_in
                elif alt_s2 < 0 or peaks[k]["area"] > peaks[alt_s2]["area"]:
                    alt_s2, alt_s2_i = k, n_in
            n_in += 1
        o["n_peaks"] = n_in
        s1 = -1
        alt_s1 = -1
        s1_i = -1
        alt_s1_i = -1
        n_in = 0
        for k in range(a, b):
            if peaks[k]["endtime"] > ev_end:
                continue
            if peaks[k]["type"] == PEAK_TYPE_S1 and (s2 < 0 or peaks[k]["time"] < peaks[s2]["time"]):
                if s1 < 0 or peaks[k]["area"] > peaks[s1]["area"]:
                    alt_s1, alt_s1_i = s1, s1_i
                    s1, s1_i = k, n_in
                elif alt_s1 < 0 or peaks[k]["area"] > peaks[alt_s1]["area"]:
                    alt_s1, alt_s1_i = k, n_in
            n_in += 1
        o["s1_index"] = s1_i
        o["s2_index"] = s2_i
        o["alt_s1_index"] = alt_s1_i
        o["alt_s2_index"] = alt_s2_i
        o["alt_s1_area"] = peaks[alt_s1]["area"] if alt_s1 >= 0 else np.nan
        o["alt_s2_area"] = peaks[alt_s2]["area"] if alt_s2 >= 0 else np.nan
        if s1 >= 0:
            p = peaks[s1]
            o["s1_area"] = p["area"]
            o["s1_time"] = p["time"]
            o["s1_center_time"] = p["center_time"]
            o["s1_n_channels"] = p["n_channels"]
            o["s1_range_50p_area"] = p["range_50p_area"]
            o["s1_rise_time"] = p["rise_time"]
            o["s1_area_fraction_top"] = p["area_fraction_top"]
        else:
            o["s1_area"] = np.nan
            o["s1_time"] = 0
            o["s1_center_time"] = 0
            o["s1_n_channels"] = 0
            o["s1_range_50p_area"] = np.nan
            o["s1_rise_time"] = np.nan
            o["s1_area_fraction_top"] = np.nan
        if s2 >= 0:
            p = peaks[s2]
            o["s2_area"] = p["area"]
            o["s2_time"] = p["time"]
            o["s2_center_time"] = p["center_time"]
            o["s2_n_channels"] = p["n_channels"]
            o["s2_range_50p_area"] = p["range_50p_area"]
            o["s2_rise_time"] = p["rise_time"]
            o["s2_area_fraction_top"] = p["area_fraction_top"]
        else:
            o["s2_area"] = np.nan
            o["s2_time"] = 0
            o["s2_center_time"] = 0
            o["s2_n_channels"] = 0
            o["s2_range_50p_area"] = np.nan
            o["s2_rise_time"] = np.nan
            o["s2_area_fraction_top"] = np.nan
        if s1 >= 0 and s2 >= 0:
            o["drift_time"] = peaks[s2]["center_time"] - peaks[s1]["center_time"]
        else:
            o["drift_time"] = 0


def event_basics(events, peak_basics, out=None):
    """Return event_basics for events from time-sorted peak_basics (same chunk)."""
    if out is None:
        out = np.empty(len(events), dtype=_EVENT_BASICS_DTYPE)
    # also on empty input (warm-up loads the kernels so); contiguous field copies: one
    # kernel signature whether the arrays are empty or not
    ranges = fully_contained_ranges(
        *(np.ascontiguousarray(a[f]) for a in (peak_basics, events) for f in ("time", "endtime"))
    )
    compute_event_basics(events, peak_basics, ranges, out)
    return out
