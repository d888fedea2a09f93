"""Peak building: group hits into peaks, sum their waveforms, compute area-fraction widths.

Three steps, as in strax: find_peaks (hits close in time -> peak intervals), sum_waveform (the
summed waveform in PE/sample, downsampled to fit the ``data`` field, plus areas), compute_widths
(area deciles). ``build_peaks`` runs all three.
"""

import numba
import numpy as np

from asyncstrax.dtypes import DIGITAL_SUM_WAVEFORM_CHANNEL, peak_dtype
from asyncstrax.processing.records import NO_RECORD_LINK, record_links

__all__ = [
    "find_peaks",
    "find_peak_ranges",
    "time_order",
    "sum_waveform",
    "compute_widths",
    "width_fractions",
    "index_of_fraction",
    "store_downsampled_waveform",
    "build_peaks",
]

_INT64_MIN = np.iinfo(np.int64).min


@numba.njit(nogil=True, cache=True)
def find_peak_ranges(
    hits, order, to_pe, gap_threshold, left_extension, right_extension, min_area,
    min_channels, max_duration, n_channels,
):
    """Group hits, taken in time order ``hits[order[k]]``, into peaks; return the accepted ones.

    Returns (first, end, time, endtime, max_gap, area) arrays: hits order[first:end] make a
    peak. Same rules as strax's find_peaks: a new peak starts when the
    next hit begins ``gap_threshold`` ns or more after the end of all previous hits of the peak,
    or when adding it would make the peak (with extensions) longer than ``max_duration``.
    ``area`` is the sum of hit areas [PE] (above-threshold samples only; sum_waveform
    recomputes it with the hits' extensions). Peaks with area < min_area or fewer than
    min_channels distinct channels are dropped.
    """
    nh = len(order)
    first = np.empty(nh, dtype=np.int64)
    end = np.empty(nh, dtype=np.int64)
    ptime = np.empty(nh, dtype=np.int64)
    pend = np.empty(nh, dtype=np.int64)
    pmaxgap = np.empty(nh, dtype=np.int64)
    parea = np.empty(nh, dtype=np.float64)
    if nh == 0:
        return first, end, ptime, pend, pmaxgap, parea
    ch_area = np.zeros(n_channels, dtype=np.float64)
    touched = np.empty(nh, dtype=np.int64)
    n_touched = 0
    n_peaks = 0
    start_i = 0
    p_time = 0
    p_end = 0
    max_gap = 0
    area = 0.0
    in_peak = False
    # Time, endtime of the next hit in time order (read once per hit)
    nxt_t0 = hits[order[0]]["time"]
    nxt_t1 = nxt_t0 + np.int64(hits[order[0]]["dt"]) * hits[order[0]]["length"]
    for i in range(nh):
        h_i = order[i]
        t0 = nxt_t0
        t1 = nxt_t1
        ch = hits[h_i]["channel"]
        if i < nh - 1:
            o = order[i + 1]
            nxt_t0 = hits[o]["time"]
            nxt_t1 = nxt_t0 + np.int64(hits[o]["dt"]) * hits[o]["length"]
        if in_peak:
            max_gap = max(max_gap, t0 - p_end)
            p_end = max(p_end, t1)
        else:
            in_peak = True
            start_i = i
            p_time = t0 - left_extension
            p_end = t1
            max_gap = 0
            area = 0.0
            for k in range(n_touched):
                ch_area[touched[k]] = 0.0
            n_touched = 0
        a = hits[h_i]["area"] * to_pe[ch]
        if ch_area[ch] == 0.0 and a != 0.0:
            touched[n_touched] = ch
            n_touched += 1
        ch_area[ch] += a
        area += a
        close = True
        if i < nh - 1:
            far = nxt_t0 - p_end >= gap_threshold
            too_long = (nxt_t1 - p_time + left_extension + right_extension) > max_duration
            close = far or too_long
        if close:
            in_peak = False
            n_ch = 0
            for k in range(n_touched):
                if ch_area[touched[k]] != 0.0:
                    n_ch += 1
            if area < min_area or n_ch < min_channels:
                continue
            first[n_peaks] = start_i
            end[n_peaks] = i + 1
            ptime[n_peaks] = p_time
            pend[n_peaks] = p_end + right_extension
            pmaxgap[n_peaks] = max_gap
            parea[n_peaks] = area
            n_peaks += 1
    return (
        first[:n_peaks], end[:n_peaks], ptime[:n_peaks], pend[:n_peaks],
        pmaxgap[:n_peaks], parea[:n_peaks],
    )


@numba.njit(nogil=True, cache=True)
def _peak_of_hit(order, first, end, n_hits):
    result = np.full(n_hits, -1, dtype=np.int64)
    for p in range(len(first)):
        for k in range(first[p], end[p]):
            result[order[k]] = p
    return result


def time_order(hits):
    """Stable argsort of hits by time (fast for find_hits' nearly sorted output)."""
    from asyncstrax.processing.hitfinder import _nearly_sorted_argsort

    t = hits["time"]
    order, ok = _nearly_sorted_argsort(t, 8 * len(t) + 1000)
    if not ok:
        order = np.argsort(t, kind="stable")
    return order


def find_peaks(
    hits,
    to_pe,
    gap_threshold=300,
    left_extension=20,
    right_extension=150,
    min_area=0,
    min_channels=2,
    max_duration=10_000_000,
    n_sum_wv_samples=200,
    n_widths=11,
    result_dtype=None,
    order=None,
):
    """Return (peaks, peak_of_hit): peaks (peak_dtype) grouped from hits, and for each hit the
    index of its peak (-1: in no peak).

    Grouping as strax's ``find_peaks`` (see find_peak_ranges). Hits must be sorted by time, or
    ``order`` must be their time order (e.g. from ``time_order``; find_hits' output order is then
    fine). All hits must share one dt. Peaks get time, length, dt, channel = -1, n_hits, max_gap
    and area (from hit areas); sum_waveform fills the rest. ``gap_threshold`` must exceed
    left + right extension so peaks never overlap; extensions should be multiples of dt.
    ``to_pe`` (PE per ADC x sample, per channel) sets n_channels of the dtype unless
    ``result_dtype`` is given.
    """
    to_pe = np.asarray(to_pe, dtype=np.float64)
    if gap_threshold <= left_extension + right_extension:
        raise ValueError("gap_threshold must be larger than left + right extension")
    if result_dtype is None:
        result_dtype = np.dtype(peak_dtype(len(to_pe), n_sum_wv_samples, n_widths))
    n = len(hits)
    if n and hits["channel"].max() >= len(to_pe):
        raise ValueError("more channels than to_pe")
    if order is None:
        order = np.arange(n)
    order = np.asarray(order, dtype=np.int64)
    first, end, ptime, pend, pmaxgap, parea = find_peak_ranges(
        hits, order, to_pe, gap_threshold, left_extension, right_extension, min_area,
        min_channels, max_duration, len(to_pe),
    )
    dt = int(hits["dt"][0]) if n else 1
    peaks = np.zeros(len(first), dtype=result_dtype)
    if len(first):
        peaks["time"] = ptime
        peaks["length"] = (pend - ptime) // dt
        peaks["dt"] = dt
        peaks["channel"] = DIGITAL_SUM_WAVEFORM_CHANNEL
        peaks["n_hits"] = end - first
        peaks["max_gap"] = pmaxgap
        peaks["area"] = parea
    return peaks, _peak_of_hit(order, first, end, n)


@numba.njit(nogil=True, cache=True)
def store_downsampled_waveform(p, wv, wv_top, store_data_top, store_data_start):
    """Store wv (PE/sample at p's dt, p['length'] samples) into p['data'], downsampling if needed.

    As strax: factor = ceil(length / n_samples); the length is floored to length // factor so
    the peak never grows into its neighbour (the last few samples are dropped from ``data``,
    not from ``area``); dt is multiplied by the factor. ``data_start`` keeps the first samples at
    full resolution. ``wv`` must hold at least p['length'] samples.
    """
    n_samples = len(p["data"])
    length = p["length"]
    factor = (length + n_samples - 1) // n_samples
    if factor > 1:
        new_length = length // factor
        for k in range(new_length):
            s = 0.0
            st = 0.0
            for j in range(k * factor, (k + 1) * factor):
                s += wv[j]
                if store_data_top:
                    st += wv_top[j]
            p["data"][k] = s
            if store_data_top:
                p["data_top"][k] = st
        p["length"] = new_length
        p["dt"] = p["dt"] * factor
    else:
        for k in range(length):
            p["data"][k] = wv[k]
            if store_data_top:
                p["data_top"][k] = wv_top[k]
    if store_data_start:
        n_start = min(length, len(p["data_start"]))
        for k in range(n_start):
            p["data_start"][k] = wv[k]


@numba.njit(nogil=True, cache=True)
def _add_record_overlap(records, ri, w0, w1, p_time, dt, scale, wv, wv_top, off, is_top):
    """Add records[ri]'s samples in [w0, w1) ns, in PE, to wv[off + (t - p_time) / dt];
    return the PE added. (Takes the array and an index: numba copies Record arguments.)
    """
    r_t0 = records[ri]["time"]
    a = max(w0, r_t0)
    b = min(w1, r_t0 + np.int64(records[ri]["length"]) * dt)
    if b <= a:
        return 0.0
    j0 = (a - r_t0) // dt
    j1 = (b - r_t0) // dt
    k0 = off + (a - p_time) // dt - j0
    bl = records[ri]["baseline"]
    fpart = bl - np.floor(bl)  # = bl % 1, without the slow Python-semantics modulo
    d = records[ri]["data"]
    isum = 0
    for j in range(j0, j1):
        isum += d[j]
    if is_top:
        for j in range(j0, j1):
            v = np.float32((d[j] + fpart) * scale)
            wv[k0 + j] += v
            wv_top[k0 + j] += v
    else:
        for j in range(j0, j1):
            wv[k0 + j] += np.float32((d[j] + fpart) * scale)
    return (isum + (j1 - j0) * fpart) * scale


@numba.njit(nogil=True, cache=True)
def _sum_waveform(
    peaks, hits, peak_of_hit, records, prev_r, next_r, to_pe, n_top_channels,
    store_data_top, store_data_start,
):
    n_peaks = len(peaks)
    if n_peaks == 0:
        return
    n_channels = len(peaks[0]["area_per_channel"])
    spr = len(records[0]["data"])
    offsets = np.empty(n_peaks + 1, dtype=np.int64)
    offsets[0] = 0
    p_times = np.empty(n_peaks, dtype=np.int64)
    p_ends = np.empty(n_peaks, dtype=np.int64)
    dt = np.int64(peaks[0]["dt"])
    for i in range(n_peaks):
        offsets[i + 1] = offsets[i] + peaks[i]["length"]
        peaks[i]["area_per_channel"][:] = 0
        p_times[i] = peaks[i]["time"]
        p_ends[i] = peaks[i]["time"] + np.int64(peaks[i]["length"]) * dt
        if peaks[i]["dt"] != dt:
            raise ValueError("All peaks must have the same dt (sum_waveform before downsampling)")
    wv = np.zeros(offsets[n_peaks], dtype=np.float32)
    wv_top = np.zeros(offsets[n_peaks] if store_data_top else 1, dtype=np.float32)
    area = np.zeros(n_peaks, dtype=np.float64)
    last_end = np.full(n_channels, _INT64_MIN, dtype=np.int64)
    # Hits in record order: sequential memory access; per channel this is time order.
    for h_i in range(len(hits)):
        p_i = peak_of_hit[h_i]
        if p_i < 0:
            continue
        ch = hits[h_i]["channel"]
        ri = hits[h_i]["record_i"]
        left = np.int64(hits[h_i]["left"])
        li = np.int64(hits[h_i]["left_integration"])
        rgt = np.int64(hits[h_i]["right_integration"])
        p_time = p_times[p_i]
        p_end = p_ends[p_i]
        h_t0 = hits[h_i]["time"]
        # Data reachable from this hit: its record, plus linked fragments of its pulse if the
        # window spills over. Clipping to it keeps the windows of a channel in order, so
        # last_end makes their union (no sample counted twice).
        has_prev = li < 0 and prev_r[ri] != NO_RECORD_LINK
        has_next = rgt > spr and next_r[ri] != NO_RECORD_LINK
        lo = records[prev_r[ri]]["time"] if has_prev else records[ri]["time"]
        hi_ri = next_r[ri] if has_next else ri
        hi = records[hi_ri]["time"] + np.int64(records[hi_ri]["length"]) * dt
        w0 = max(h_t0 - (left - li) * dt, last_end[ch], p_time, lo)
        w1 = min(h_t0 + (rgt - left) * dt, p_end, hi)
        if w1 <= w0:
            continue
        last_end[ch] = max(last_end[ch], w1)
        scale = to_pe[ch]
        is_top = store_data_top and ch < n_top_channels
        off = offsets[p_i]
        a = _add_record_overlap(records, ri, w0, w1, p_time, dt, scale, wv, wv_top, off, is_top)
        if has_prev:
            a += _add_record_overlap(
                records, prev_r[ri], w0, w1, p_time, dt, scale, wv, wv_top, off, is_top
            )
        if has_next:
            a += _add_record_overlap(
                records, next_r[ri], w0, w1, p_time, dt, scale, wv, wv_top, off, is_top
            )
        area[p_i] += a
        peaks[p_i]["area_per_channel"][ch] += a
    for p_i in range(n_peaks):
        p = peaks[p_i]
        p["area"] = area[p_i]
        if n_top_channels > 0:
            top = 0.0
            for c in range(min(n_top_channels, n_channels)):
                top += p["area_per_channel"][c]
            p["area_fraction_top"] = top / area[p_i] if area[p_i] > 0 else np.nan
        o0 = offsets[p_i]
        o1 = offsets[p_i + 1]
        if store_data_top:
            store_downsampled_waveform(p, wv[o0:o1], wv_top[o0:o1], True, store_data_start)
        else:
            store_downsampled_waveform(p, wv[o0:o1], wv_top, False, store_data_start)


def sum_waveform(peaks, hits, peak_of_hit, records, to_pe, n_top_channels=0, links=None):
    """Fill (in place) data, data_top, data_start, area, area_per_channel, area_fraction_top.

    The waveform of a peak is the sum, over its hits (``peak_of_hit[i]`` = peak of hit i, -1 for
    none), of the record samples in the hit's integration window [left_integration,
    right_integration) (the hit extended by find_hits' extensions, following the pulse into
    neighbouring fragments), in PE/sample with ``baseline % 1`` added back so areas are
    unbiased. Windows of one channel never count a sample twice (each starts where the previous
    window of the channel ended), and are clipped to the peak. Hits must be in time order per
    channel: time-sorted, or find_hits' record order (fastest: sequential memory access).
    Hits, records and peaks share one dt. The waveform is then downsampled into ``data``
    (dt grows). area_fraction_top is set if n_top_channels > 0 (channels below it are the top
    array). Saturation and hit-timing fields are left at zero.
    """
    if not len(peaks) or not len(records):
        return
    if links is None:
        links = record_links(records)
    names = peaks.dtype.names
    _sum_waveform(
        peaks, hits, np.asarray(peak_of_hit, dtype=np.int64), records, links[0], links[1],
        np.asarray(to_pe, dtype=np.float64), n_top_channels,
        "data_top" in names, "data_start" in names,
    )


def width_fractions(n_widths):
    """Area fractions at which compute_widths needs times (strax's choice, sorted, with 0.5)."""
    desired_widths = np.linspace(0, 1, n_widths)[1:]
    fr = np.concatenate([0.5 - desired_widths / 2, 0.5 + desired_widths / 2, [0.5]])
    return np.sort(np.unique(fr))


@numba.njit(nogil=True, cache=True)
def _index_of_fraction(data, length, area_tot, fractions, result):
    """Fractional sample indices where the cumulative sum of data reaches fractions of area_tot.

    strax's compute_index_of_fraction: linear interpolation inside the sample that crosses the
    fraction; fractions never reached keep their (zero) value. A last fraction of 1.0 is always
    placed at ``length`` (strax does so too, even after trailing zeros).
    """
    fraction_seen = 0.0
    fi = 0
    nf = len(fractions)
    needed = fractions[0]
    for i in range(length):
        x = data[i]
        fr_this = x / area_tot
        while fraction_seen + fr_this >= needed:
            area_needed = area_tot * (needed - fraction_seen)
            if x != 0:
                result[fi] = i + area_needed / x
            else:
                result[fi] = i
            fi += 1
            if fi > nf - 1:
                break
            needed = fractions[fi]
        if fi > nf - 1:
            break
        fraction_seen += fr_this
    if needed == 1:
        result[nf - 1] = length


@numba.njit(nogil=True, cache=True)
def index_of_fraction(peaks, fractions):
    """(len(peaks), len(fractions)) fractional indices; rows of non-positive-area peaks are 0."""
    result = np.zeros((len(peaks), len(fractions)), dtype=np.float32)
    for i in range(len(peaks)):
        p = peaks[i]
        if p["area"] <= 0:
            continue
        _index_of_fraction(p["data"], p["length"], p["area"], fractions, result[i])
    return result


@numba.njit(nogil=True, cache=True)
def _compute_widths(peaks, fractions):
    n_fr = len(fractions)
    mid = n_fr // 2
    fr_times = np.zeros(n_fr, dtype=np.float32)
    for p_i in range(len(peaks)):
        p = peaks[p_i]
        fr_times[:] = 0
        if p["area"] > 0:
            _index_of_fraction(p["data"], p["length"], p["area"], fractions, fr_times)
        dt = p["dt"]
        for k in range(n_fr):
            fr_times[k] *= dt
        p["median_time"] = fr_times[mid]
        for k in range(mid + 1):
            p["width"][k] = fr_times[mid + k] - fr_times[mid - k]
        for k in range(mid + 1):
            p["area_decile_from_midpoint"][k] = fr_times[2 * k] - fr_times[mid]
        # Center time: area-weighted mean sample centre (strax's compute_center_time)
        s = 0.0
        sw = 0.0
        for k in range(p["length"]):
            s += p["data"][k]
            sw += p["data"][k] * k
        endtime = p["time"] + np.int64(p["length"]) * dt
        if s == 0.0:
            p["center_time"] = p["time"]
        else:
            ct = p["time"] + np.int64((sw / s + 0.5) * dt)
            p["center_time"] = min(max(ct, p["time"]), endtime)


def compute_widths(peaks):
    """Fill median_time, width, area_decile_from_midpoint and center_time (in place).

    Same definitions as strax's compute_widths / compute_center_time: with n = len(width) (11),
    width[k] is the time containing the central k/(n-1) of the area (width[5]: 50%, width[9]:
    90%), area_decile_from_midpoint[k] = time of the k/(n-1) area quantile minus the median
    time (so -area_decile_from_midpoint[1] is the 10%->50% rise time). Fractions use
    ``peaks['area']`` as the total, like strax; quantiles beyond what ``data`` holds (data of a
    downsampled peak drops its last samples) are placed at the end.
    """
    if not len(peaks):
        return
    n_widths = peaks.dtype["width"].shape[0]
    _compute_widths(peaks, width_fractions(n_widths))


def build_peaks(
    records, hits, to_pe, gap_threshold=300, left_extension=20, right_extension=150,
    min_area=0, min_channels=2, max_duration=10_000_000, n_top_channels=0,
    n_sum_wv_samples=200, n_widths=11, result_dtype=None,
):
    """find_peaks + sum_waveform + compute_widths, for hits in find_hits' (record) order."""
    order = time_order(hits)
    peaks, peak_of_hit = find_peaks(
        hits, to_pe, gap_threshold, left_extension, right_extension, min_area, min_channels,
        max_duration, n_sum_wv_samples, n_widths, result_dtype, order=order,
    )
    sum_waveform(peaks, hits, peak_of_hit, records, to_pe, n_top_channels)
    compute_widths(peaks)
    return peaks
