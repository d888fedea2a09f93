"""Record-level helpers: integration, padding, links between fragments, zeroing outside hits."""

import numba
import numpy as np

__all__ = [
    "NO_RECORD_LINK",
    "integrate",
    "zero_out_of_bounds",
    "record_links",
    "cut_outside_hits",
    "REDUCTION_HITS_ONLY",
]

#: Value in record_links' arrays meaning "no previous / next fragment".
NO_RECORD_LINK = -1
#: strax.ReductionLevel.HITS_ONLY
REDUCTION_HITS_ONLY = 2


@numba.njit(nogil=True, cache=True)
def integrate(records):
    """Set ``area`` (int32, ADC x samples) of each record, as strax's ``integrate``.

    area = sum(data) * 2**amplitude_bit_shift + round((baseline % 1) * length): the fractional
    part of the baseline was truncated away by ``int(baseline)`` and is added back. Samples beyond
    ``length`` must be zero (see zero_out_of_bounds).
    """
    for i in range(len(records)):
        r = records[i]
        s = 0
        d = r["data"]
        for j in range(len(d)):
            s += d[j]
        records[i]["area"] = s * 2 ** r["amplitude_bit_shift"] + int(
            round((r["baseline"] % 1) * r["length"])
        )


@numba.njit(nogil=True, cache=True)
def zero_out_of_bounds(records):
    """Set samples beyond each record's ``length`` to zero (in place)."""
    if len(records) == 0:
        return
    spr = len(records[0]["data"])
    for i in range(len(records)):
        r = records[i]
        for j in range(r["length"], spr):
            r["data"][j] = 0


@numba.njit(nogil=True, cache=True)
def record_links(records):
    """Return (prev, next): index of the previous / next fragment of the same pulse, or -1.

    Records must be sorted by time. A fragment continues the last fragment seen in its channel if
    its ``record_i`` is not 0 and it starts exactly where that one's full data field ends (strax's
    rule). Negative channels raise.
    """
    n = len(records)
    prev_r = np.full(n, NO_RECORD_LINK, dtype=np.int32)
    next_r = np.full(n, NO_RECORD_LINK, dtype=np.int32)
    if n == 0:
        return prev_r, next_r
    if records["channel"].min() < 0:
        raise ValueError("Negative channel number")
    n_channels = records["channel"].max() + 1
    spr = len(records[0]["data"])
    last_seen = np.full(n_channels, NO_RECORD_LINK, dtype=np.int32)
    expected_next = np.zeros(n_channels, dtype=np.int64)
    for i in range(n):
        r = records[i]
        ch = r["channel"]
        if r["record_i"] != 0 and last_seen[ch] != NO_RECORD_LINK and r["time"] == expected_next[ch]:
            prev_r[i] = last_seen[ch]
            next_r[last_seen[ch]] = i
        last_seen[ch] = i
        expected_next[ch] = r["time"] + spr * np.int64(r["dt"])
    return prev_r, next_r


@numba.njit(nogil=True, cache=True)
def _mark(keep, i, a, b):
    for j in range(a, b):
        keep[i, j] = 1


@numba.njit(nogil=True, cache=True)
def cut_outside_hits(records, hits, left_extension=2, right_extension=15):
    """Zero (in place) all samples not within [left - left_extension, right + right_extension) of
    a hit, like strax's ``cut_outside_hits`` (which returns a copy instead).

    Extensions are in samples and spill into the previous / next fragment of the same pulse
    (found with record_links). ``hits['record_i']`` must index into ``records``. Sets
    ``reduction_level`` to HITS_ONLY on every record. Record areas are not recomputed (strax
    keeps the area of the unreduced record too).
    """
    n = len(records)
    if n == 0:
        return
    spr = len(records[0]["data"])
    prev_r, next_r = record_links(records)
    keep = np.zeros((n, spr), dtype=np.uint8)
    for h_i in range(len(hits)):
        h = hits[h_i]
        ri = h["record_i"]
        a = np.int64(h["left"]) - left_extension
        b = np.int64(h["right"]) + right_extension
        _mark(keep, ri, max(a, 0), min(b, spr))
        if a < 0 and prev_r[ri] != NO_RECORD_LINK:
            _mark(keep, prev_r[ri], max(spr + a, 0), spr)
        if b > spr and next_r[ri] != NO_RECORD_LINK:
            _mark(keep, next_r[ri], 0, min(b - spr, spr))
    for i in range(n):
        d = records[i]["data"]
        for j in range(spr):
            d[j] *= keep[i, j]
        records[i]["reduction_level"] = REDUCTION_HITS_ONLY
