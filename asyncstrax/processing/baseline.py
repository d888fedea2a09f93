"""Baselining: raw ADC counts -> signal above baseline, positive-going.

Digitizers of PMTs record negative-going pulses on top of a baseline (~16000 ADC). strax's
convention, followed here: the baseline is the mean of the first ``baseline_samples`` samples of a
pulse (its pre-trigger region), and ``data = int(baseline) - raw``, stored as int16, with the
float baseline (and its RMS) kept in the record so ``baseline % 1`` can be added back where areas
must be unbiased.
"""

import numba
import numpy as np

from asyncstrax.dtypes import record_dtype

__all__ = ["baseline", "raw_to_records", "record_length_from_dtype"]

_INT16_MIN = -32768
_INT16_MAX = 32767


def record_length_from_dtype(dtype):
    """Number of samples in the ``data`` field of a records-like dtype."""
    return np.dtype(dtype)["data"].shape[0]


@numba.njit(nogil=True, cache=True)
def baseline(records, baseline_samples=40, flip=True, fallback_baseline=16000.0):
    """Baseline records (record_dtype) in place, as strax's ``baseline``.

    For the first fragment of a pulse (``record_i == 0``) the baseline is the mean of its first
    ``baseline_samples`` samples (of all it has, if fewer; see raw_to_records for this and the
    other corner cases where strax differs); later fragments reuse the last baseline seen in their channel,
    so records must be sorted by time (or by channel, then time). A continuation fragment whose
    first fragment is not in the array gets ``fallback_baseline`` and a NaN rms (strax raises
    unless ``allow_sloppy_chunking``; chunks of our simulator never cut pulses).

    ``data[:length] = int(baseline) - data`` when flipping (else ``data - int(baseline)``),
    clipped to the int16 range. Samples beyond ``length`` are left untouched (keep them zero).
    """
    n = len(records)
    if n == 0:
        return
    n_channels = records["channel"].max() + 1
    last_bl = np.full(n_channels, fallback_baseline, dtype=np.float32)
    last_rms = np.full(n_channels, np.nan, dtype=np.float32)
    sign = -1 if flip else 1
    for i in range(n):
        r = records[i]
        ch = r["channel"]
        if r["record_i"] == 0:
            nb = min(baseline_samples, r["length"])
            s = 0.0
            s2 = 0.0
            for j in range(nb):
                x = float(r["data"][j])
                s += x
                s2 += x * x
            if nb > 0:
                m = s / nb
                var = max(s2 / nb - m * m, 0.0)
                last_bl[ch] = m
                last_rms[ch] = np.sqrt(var)
        bl = last_bl[ch]
        ibl = int(bl)
        d = r["data"]
        for j in range(r["length"]):
            v = sign * (np.int32(d[j]) - ibl)
            d[j] = min(max(v, _INT16_MIN), _INT16_MAX)
        r["baseline"] = bl
        r["baseline_rms"] = last_rms[ch]


@numba.njit(nogil=True, cache=True)
def _raw_to_records(raw, out, baseline_samples, flip, fallback_baseline):
    """One pass: copy metadata, baseline + flip the data, integrate the area."""
    n = len(raw)
    if n == 0:
        return
    n_channels = raw["channel"].max() + 1
    spr = len(raw[0]["data"])
    last_bl = np.full(n_channels, fallback_baseline, dtype=np.float32)
    last_rms = np.full(n_channels, np.nan, dtype=np.float32)
    sign = -1 if flip else 1
    for i in range(n):
        r = raw[i]
        o = out[i]
        ch = r["channel"]
        length = r["length"]
        o["time"] = r["time"]
        o["length"] = length
        o["dt"] = r["dt"]
        o["channel"] = ch
        o["pulse_length"] = r["pulse_length"]
        o["record_i"] = r["record_i"]
        o["reduction_level"] = 0
        o["amplitude_bit_shift"] = 0
        d = r["data"]
        if r["record_i"] == 0:
            nb = min(baseline_samples, length)
            s = 0.0
            s2 = 0.0
            for j in range(nb):
                x = float(d[j])
                s += x
                s2 += x * x
            if nb > 0:
                m = s / nb
                last_bl[ch] = m
                last_rms[ch] = np.sqrt(max(s2 / nb - m * m, 0.0))
        bl = last_bl[ch]
        ibl = int(bl)
        od = o["data"]
        area = 0
        for j in range(length):
            v = sign * (np.int32(d[j]) - ibl)
            v = min(max(v, _INT16_MIN), _INT16_MAX)
            od[j] = v
            area += v
        for j in range(length, spr):
            od[j] = 0
        o["baseline"] = bl
        o["baseline_rms"] = last_rms[ch]
        o["area"] = area + int(round((bl % 1) * length))


def raw_to_records(raw_records, baseline_samples=40, flip=True, fallback_baseline=16000.0, out=None):
    """Return records (record_dtype) from raw_records: copied, baselined, flipped, integrated.

    strax's ``raw_to_records`` + ``baseline`` + ``integrate`` (+ zeroing beyond ``length``)
    in a single pass over the data, with the same results except in three corner cases, where
    strax's results are artefacts: a pulse whose first record is shorter than
    ``baseline_samples`` is baselined on the samples it has (strax averages the zero padding
    in, giving a baseline thousands of ADC low); a sample beyond the int16 range is clipped
    (strax wraps it around); a first record of length 0 leaves the channel's baseline as it was
    (strax sets 0). Pass ``out`` (a record_dtype array of the same
    length) to reuse a buffer: fresh memory is slow to touch on first use.
    """
    spr = record_length_from_dtype(raw_records.dtype)
    if out is None:
        out = np.empty(len(raw_records), dtype=record_dtype(spr))
    elif len(out) != len(raw_records):
        raise ValueError("out must have the same length as raw_records")
    _raw_to_records(raw_records, out, baseline_samples, flip, np.float32(fallback_baseline))
    return out
