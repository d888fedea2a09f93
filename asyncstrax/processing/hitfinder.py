"""Hit finding: intervals of a record at or above a per-channel ADC threshold."""

import numba
import numpy as np

from asyncstrax.dtypes import hit_dtype

__all__ = ["find_hits", "sort_by_time", "channel_thresholds"]

_HIT_DTYPE = np.dtype(hit_dtype)


def channel_thresholds(min_amplitude, n_channels):
    """Per-channel float64 threshold array from a scalar or a sequence."""
    if np.ndim(min_amplitude) == 0:
        return np.full(n_channels, float(min_amplitude), dtype=np.float64)
    thr = np.asarray(min_amplitude, dtype=np.float64)
    if len(thr) < n_channels:
        raise ValueError(f"Too few channel thresholds: {len(thr)} for {n_channels} channels")
    return thr


@numba.njit(nogil=True, cache=True)
def _find_hits(records, thresholds, buffer, start_record, left_extension, right_extension,
               min_height_over_noise):
    """Fill ``buffer`` with hits of records[start_record:]; stop early when it may overflow.

    Returns (n_hits_written, next_record_to_scan). One record holds at most ceil(spr/2) hits, so
    a record is only started when that many slots are free: the caller grows the buffer and
    resumes at next_record_to_scan.
    """
    n = len(records)
    if n == 0:
        return 0, 0
    spr = len(records[0]["data"])
    max_per_record = (spr + 1) // 2
    cap = len(buffer)
    offset = 0
    for rec_i in range(start_record, n):
        if cap - offset < max_per_record:
            return offset, rec_i
        r = records[rec_i]
        ch = r["channel"]
        threshold = thresholds[ch]
        # as strax: the larger of the channel's threshold and a multiple of the record's
        # baseline RMS (0 with the default, so a negative threshold counts as 0)
        noise = r["baseline_rms"] * min_height_over_noise
        if noise > threshold:
            threshold = noise
        # data are integers: x >= threshold  <=>  x >= ceil(threshold)
        ithr = np.int64(np.ceil(threshold))
        n_samples = r["length"]
        d = r["data"]
        bl = r["baseline"]
        fpart = bl - np.floor(bl)  # bl % 1 without the slow Python-semantics modulo
        t0 = r["time"]
        dt = r["dt"]
        i = 0
        while i < n_samples:
            # Tight scan for the start of a hit (most samples are below threshold)
            while i < n_samples and d[i] < ithr:
                i += 1
            if i >= n_samples:
                break
            hit_start = i
            area = 0
            height = d[i]
            max_i = i
            while i < n_samples and d[i] >= ithr:
                x = d[i]
                area += x
                if x > height:
                    height = x
                    max_i = i
                i += 1
            h = buffer[offset]
            length = i - hit_start
            h["time"] = t0 + hit_start * dt
            h["length"] = length
            h["dt"] = dt
            h["channel"] = ch
            h["area"] = area + length * fpart
            h["left"] = hit_start
            h["right"] = i
            h["left_integration"] = hit_start - left_extension
            h["right_integration"] = i + right_extension
            h["record_i"] = rec_i
            h["threshold"] = threshold
            h["height"] = height + fpart
            h["max_time"] = t0 + max_i * dt
            offset += 1
    return offset, n


def find_hits(records, min_amplitude=15, left_extension=0, right_extension=0, n_channels=None,
              min_height_over_noise=0.0):
    """Return hits (hit_dtype): runs of samples with ``data >= threshold[channel]``.

    As strax's ``find_hits``: a hit ends at its record's end, so a pulse crossing a record
    boundary gives two hits (one per fragment); the hits come out in record order, NOT sorted by
    time (use sort_by_time). ``area`` includes ``length * (baseline % 1)``; ``height`` and
    ``max_time`` describe the highest sample. ``left_integration`` / ``right_integration`` are
    ``left - left_extension`` / ``right + right_extension`` (sample indices in the hit's record,
    they may fall outside it: see cut_outside_hits and sum_waveform, which follow the pulse into
    the neighbouring fragments). ``min_amplitude``: scalar or per-channel sequence (ADC counts);
    a record's threshold is the larger of that and ``min_height_over_noise`` times its
    ``baseline_rms``, as in strax.
    """
    if not len(records):
        return np.zeros(0, dtype=_HIT_DTYPE)
    if n_channels is None:
        n_channels = int(records["channel"].max()) + 1
        if np.ndim(min_amplitude) != 0:
            n_channels = max(n_channels, len(min_amplitude))
    thresholds = channel_thresholds(min_amplitude, n_channels)
    if records["channel"].max() >= len(thresholds):
        raise ValueError("Too few channel thresholds specified")
    spr = len(records[0]["data"])
    cap = 4 * len(records) + (spr + 1) // 2  # untouched pages cost nothing
    buffer = np.empty(cap, dtype=_HIT_DTYPE)
    n_done = 0
    next_rec = 0
    while True:
        n_new, next_rec = _find_hits(
            records, thresholds, buffer[n_done:], next_rec, left_extension, right_extension,
            float(min_height_over_noise),
        )
        n_done += n_new
        if next_rec >= len(records):
            break
        new_buffer = np.empty(2 * len(buffer), dtype=_HIT_DTYPE)
        new_buffer[:n_done] = buffer[:n_done]
        buffer = new_buffer
    return buffer[:n_done]


@numba.njit(nogil=True, cache=True)
def _nearly_sorted_argsort(t, max_shifts):
    """Stable argsort by insertion; gives up (returns ok=False) after max_shifts moves.

    Hits come out of find_hits in record order, which is time order up to one record length, so
    insertion sort is close to linear on them.
    """
    n = len(t)
    order = np.arange(n)
    shifts = 0
    for i in range(1, n):
        o = order[i]
        v = t[o]
        j = i - 1
        while j >= 0 and t[order[j]] > v:
            order[j + 1] = order[j]
            j -= 1
            shifts += 1
        order[j + 1] = o
        if shifts > max_shifts:
            return order, False
    return order, True


def sort_by_time(x):
    """Return x sorted by time (stable, so ties keep their order); x itself if already sorted.

    Uses an insertion argsort for nearly-sorted input (falls back to numpy's stable sort) and
    ``take`` (structured fancy indexing is several times slower).
    """
    if len(x) < 2:
        return x
    t = x["time"]
    order, ok = _nearly_sorted_argsort(t, 8 * len(x) + 1000)
    if not ok:
        order = np.argsort(t, kind="stable")
    return x.take(order)
