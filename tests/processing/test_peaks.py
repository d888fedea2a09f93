"""Peak finding, summed waveforms, widths, peak_basics and classification vs references."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncstrax.dtypes import hit_dtype, peak_basics_dtype, peak_dtype, raw_record_dtype
from asyncstrax.processing import (
    classify_peaks,
    compute_widths,
    find_hits,
    find_peaks,
    peak_basics,
    raw_to_records,
    record_links,
    sort_by_time,
    sum_waveform,
    width_fractions,
)
from asyncstrax.processing.peaks import build_peaks, store_downsampled_waveform, time_order

DT = 10
N_CH = 5


# ----------------------------------------------------------------------------- data generation
def make_raw_records(pulses, spr, dt=DT):
    rows = []
    for ch, start, data in pulses:
        n = len(data)
        for i in range(-(-n // spr)):
            seg = data[i * spr:(i + 1) * spr]
            rows.append((ch, (start + i * spr) * dt, len(seg), n, i, seg))
    rr = np.zeros(len(rows), dtype=raw_record_dtype(spr))
    rows.sort(key=lambda x: (x[1], x[0]))
    for k, (ch, t, length, n, i, seg) in enumerate(rows):
        rr[k]["time"], rr[k]["length"], rr[k]["dt"], rr[k]["channel"] = t, length, dt, ch
        rr[k]["pulse_length"], rr[k]["record_i"] = n, i
        rr[k]["data"][:length] = seg
    return rr


@st.composite
def records_st(draw, spr=10, max_pulses=10):
    """Baselined records of random pulses (baseline 1000 + noise, negative-going signals)."""
    pulses = []
    next_free = {}
    for _ in range(draw(st.integers(1, max_pulses))):
        ch = draw(st.integers(0, N_CH - 1))
        start = next_free.get(ch, 0) + draw(st.integers(0, 40))
        n = draw(st.integers(4, 5 * spr))
        sig = draw(st.lists(st.sampled_from([0, 0, 0, 1, 3, 20, 40, 80]), min_size=n, max_size=n))
        noise = draw(st.lists(st.integers(-2, 2), min_size=n, max_size=n))
        data = 1000 + np.array(noise) - np.array(sig)
        data[:3] = 1000 + np.array(noise[:3])  # baseline region
        next_free[ch] = start + n + draw(st.integers(1, 5))
        pulses.append((ch, start, data.astype(np.int16)))
    return raw_to_records(make_raw_records(pulses, spr), baseline_samples=3)


@st.composite
def hits_st(draw, max_hits=60):
    n = draw(st.integers(0, max_hits))
    gaps = draw(st.lists(st.integers(0, 60), min_size=n, max_size=n))
    hits = np.zeros(n, dtype=hit_dtype)
    hits["time"] = np.cumsum(np.array(gaps, dtype=np.int64) * DT)
    hits["length"] = draw(st.lists(st.integers(1, 8), min_size=n, max_size=n))
    hits["dt"] = DT
    hits["channel"] = draw(st.lists(st.integers(0, N_CH - 1), min_size=n, max_size=n))
    hits["area"] = draw(st.lists(st.sampled_from([0.0, 5.0, 20.0, 100.0]), min_size=n, max_size=n))
    return hits


# ----------------------------------------------------------------------------- references
def ref_find_peaks(hits, to_pe, gap, le, re_, min_area, min_channels, max_duration):
    """Plain-Python grouping; returns a list of (time, endtime, hit indices, area, max_gap)."""
    out = []
    cur = None
    for i, h in enumerate(hits):
        t0, t1 = int(h["time"]), int(h["time"] + h["length"] * h["dt"])
        if cur is None:
            cur = dict(time=t0 - le, end=t1, idx=[], area=0.0, gap=0, ch={})
        else:
            cur["gap"] = max(cur["gap"], t0 - cur["end"])
            cur["end"] = max(cur["end"], t1)
        cur["idx"].append(i)
        a = float(h["area"]) * to_pe[h["channel"]]
        cur["area"] += a
        cur["ch"][h["channel"]] = cur["ch"].get(h["channel"], 0.0) + a
        if i + 1 < len(hits):
            nx = hits[i + 1]
            nx_end = int(nx["time"] + nx["length"] * nx["dt"])
            close = (nx["time"] - cur["end"] >= gap) or (nx_end - cur["time"] + le + re_ > max_duration)
        else:
            close = True
        if close:
            n_ch = sum(1 for v in cur["ch"].values() if v != 0)
            if cur["area"] >= min_area and n_ch >= min_channels:
                out.append((cur["time"], cur["end"] + re_, cur["idx"], cur["area"], cur["gap"]))
            cur = None
    return out


def ref_sum_waveform(peak_time, peak_length, hit_list, records, to_pe, le, re_):
    """Per-peak waveform (PE/sample, no downsampling) and area per channel: per channel, the
    union of the hits' extended windows, clipped to the peak and to the hit's reachable data."""
    spr = records.dtype["data"].shape[0]
    prev, nxt = record_links(records)
    wv = np.zeros(peak_length)
    apc = np.zeros(len(to_pe))
    covered = {}  # channel -> set of sample times
    for h in hit_list:
        ri = h["record_i"]
        t0 = h["time"] - le * DT
        t1 = h["time"] + (h["length"] + re_) * DT
        rs = [ri]
        if h["left_integration"] < 0 and prev[ri] >= 0:
            rs.append(prev[ri])
        if h["right_integration"] > spr and nxt[ri] >= 0:
            rs.append(nxt[ri])
        for rj in rs:
            r = records[rj]
            for j in range(r["length"]):
                t = r["time"] + j * DT
                k = (t - peak_time) // DT
                if t0 <= t < t1 and 0 <= k < peak_length:
                    key = (h["channel"], t)
                    if key in covered:
                        continue
                    covered[key] = True
                    v = (float(r["data"][j]) + float(r["baseline"] % 1)) * to_pe[h["channel"]]
                    wv[k] += v
                    apc[h["channel"]] += v
    return wv, apc


def ref_fraction_times(data, area, fractions):
    """Fractional index where the cumulative sum of data reaches each fraction of area.

    As strax, the 100% quantile is the end of the waveform (whatever trailing zeros)."""
    cum = np.concatenate([[0.0], np.cumsum(data, dtype=np.float64)]) / area
    res = np.zeros(len(fractions))
    for k, f in enumerate(fractions):
        i = np.nonzero(cum[1:] >= f)[0]
        if f == 1:
            res[k] = len(data)
            continue
        if not len(i):
            res[k] = len(data) if f == 1 else 0
            continue
        i = i[0]
        x = data[i]
        res[k] = i + (f - cum[i]) * area / x if x != 0 else i
    return res


# ----------------------------------------------------------------------------- find_peaks
@settings(max_examples=200, deadline=None)
@given(
    hits_st(),
    st.sampled_from([100, 300, 1000]),
    st.sampled_from([0, 20]),
    st.sampled_from([0, 30]),
    st.sampled_from([0.0, 10.0, 150.0]),
    st.integers(1, 3),
    st.sampled_from([200, 2_000, 10_000_000]),
)
def test_find_peaks_matches_reference(hits, gap, le, re_, min_area, min_channels, max_duration):
    to_pe = np.linspace(0.5, 1.5, N_CH)
    peaks, poh = find_peaks(hits, to_pe, gap, le, re_, min_area, min_channels, max_duration)
    ref = ref_find_peaks(hits, to_pe, gap, le, re_, min_area, min_channels, max_duration)
    assert len(peaks) == len(ref)
    assert peaks.dtype == np.dtype(peak_dtype(N_CH))
    expected_poh = np.full(len(hits), -1)
    for i, (p, (t, e, idx, area, mg)) in enumerate(zip(peaks, ref)):
        assert p["time"] == t
        assert p["time"] + p["length"] * p["dt"] == e
        assert p["n_hits"] == len(idx)
        assert p["max_gap"] == mg
        assert p["channel"] == -1
        np.testing.assert_allclose(p["area"], area, rtol=1e-5)
        expected_poh[idx] = i
    np.testing.assert_array_equal(poh, expected_poh)


@settings(max_examples=100, deadline=None)
@given(hits_st(), st.randoms(use_true_random=False))
def test_find_peaks_with_order_equals_sorted(hits, rnd):
    perm = np.arange(len(hits))
    rnd.shuffle(perm)
    shuffled = hits[perm]
    to_pe = np.ones(N_CH)
    order = time_order(shuffled)
    p1, poh1 = find_peaks(hits, to_pe, min_channels=1)
    p2, poh2 = find_peaks(shuffled, to_pe, min_channels=1, order=order)
    np.testing.assert_array_equal(p1, p2)
    # peak_of_hit refers to the hits as passed
    np.testing.assert_array_equal(poh2, poh1[perm])


def test_find_peaks_rejects_small_gap():
    import pytest

    with pytest.raises(ValueError):
        find_peaks(np.zeros(0, hit_dtype), np.ones(3), gap_threshold=100, left_extension=50, right_extension=60)


# ----------------------------------------------------------------------------- sum_waveform
@settings(max_examples=150, deadline=None)
@given(records_st(), st.integers(0, 4), st.integers(0, 12), st.sampled_from([1, 2, 3]))
def test_sum_waveform_matches_reference(records, hle, hre, min_channels):
    to_pe = np.linspace(0.01, 0.02, N_CH)
    le, re_ = hle * DT, hre * DT
    hits = find_hits(records, 15, hle, hre)  # record order
    order = time_order(hits)
    peaks, poh = find_peaks(
        hits, to_pe, gap_threshold=le + re_ + 50, left_extension=le, right_extension=re_,
        min_channels=min_channels, n_sum_wv_samples=2000, order=order,
    )
    orig_len = peaks["length"].copy()
    sum_waveform(peaks, hits, poh, records, to_pe, n_top_channels=2)
    for i, p in enumerate(peaks):
        wv, apc = ref_sum_waveform(p["time"], orig_len[i], hits[poh == i], records, to_pe, hle, hre)
        np.testing.assert_allclose(p["data"][: p["length"]], wv, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(p["data_start"][: p["length"]], wv, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(p["area_per_channel"], apc, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(p["area"], apc.sum(), rtol=1e-4, atol=1e-5)
        top_wv, _ = ref_sum_waveform(
            p["time"], orig_len[i], hits[(poh == i) & (hits["channel"] < 2)], records, to_pe, hle, hre
        )
        np.testing.assert_allclose(p["data_top"][: p["length"]], top_wv, rtol=1e-4, atol=1e-5)
        if apc.sum() > 0:
            np.testing.assert_allclose(p["area_fraction_top"], apc[:2].sum() / apc.sum(), rtol=1e-4, atol=1e-5)
    # Sorted hits give the same result
    peaks2, poh2 = find_peaks(
        sort_by_time(hits), to_pe, gap_threshold=le + re_ + 50, left_extension=le,
        right_extension=re_, min_channels=min_channels, n_sum_wv_samples=2000,
    )
    sum_waveform(peaks2, sort_by_time(hits), poh2, records, to_pe, n_top_channels=2)
    np.testing.assert_allclose(peaks2["area"], peaks["area"], rtol=1e-5, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 700), st.integers(2, 50), st.booleans())
def test_store_downsampled_waveform(length, n_samples, top):
    p = np.zeros(1, dtype=peak_dtype(3, n_sum_wv_samples=n_samples))[0:1]
    p["length"] = length
    p["dt"] = 10
    wv = np.random.default_rng(length).random(length).astype(np.float32)
    store_downsampled_waveform(p[0], wv, wv * 2, top, True)
    f = -(-length // n_samples)
    n = length // f
    assert p["length"][0] == n
    assert p["dt"][0] == 10 * f
    np.testing.assert_allclose(p["data"][0][:n], wv[: n * f].reshape(n, f).sum(axis=1), rtol=1e-5)
    if top:
        np.testing.assert_allclose(p["data_top"][0][:n], 2 * wv[: n * f].reshape(n, f).sum(axis=1), rtol=1e-5)
    k = min(length, n_samples)
    np.testing.assert_array_equal(p["data_start"][0][:k], wv[:k])


# ----------------------------------------------------------------------------- widths
# Samples are strictly positive: where the waveform is zero the cumulative area is flat and any
# time on the plateau reaches the fraction, so kernel and reference may both be right and differ.
@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.floats(0.0625, 100, width=32), min_size=1, max_size=60), min_size=1,
                max_size=8),
       st.sampled_from([1, 10]))
def test_compute_widths_matches_reference(waveforms, dt):
    peaks = np.zeros(len(waveforms), dtype=peak_dtype(3, n_sum_wv_samples=60))
    fr = width_fractions(11)
    for p, w in zip(peaks, waveforms):
        p["length"] = len(w)
        p["dt"] = dt
        p["time"] = 1000
        p["data"][: len(w)] = w
        p["area"] = np.sum(np.array(w, dtype=np.float32))
    compute_widths(peaks)
    for p, w in zip(peaks, waveforms):
        w = np.array(w, dtype=np.float32)
        if p["area"] <= 0:
            assert np.all(p["width"] == 0)
            assert p["center_time"] == p["time"]
            continue
        t = ref_fraction_times(w, float(p["area"]), fr) * dt
        mid = len(fr) // 2
        # Cumulative sums in float32 vs float64: allow a little slack
        tol = dict(atol=0.02 * dt * len(w) + 1e-3, rtol=1e-3)
        np.testing.assert_allclose(p["median_time"], t[mid], **tol)
        np.testing.assert_allclose(p["width"], t[mid:] - t[::-1][mid:], **tol)
        np.testing.assert_allclose(p["area_decile_from_midpoint"], t[::2] - t[mid], **tol)
        ct = p["time"] + int((np.average(np.arange(len(w)), weights=w) + 0.5) * dt)
        assert abs(p["center_time"] - ct) <= 1


def test_widths_of_a_box():
    peaks = np.zeros(1, dtype=peak_dtype(3, n_sum_wv_samples=200))
    peaks["length"], peaks["dt"], peaks["time"] = 100, 10, 0
    peaks["data"][0][:100] = 1.0
    peaks["area"] = 100
    compute_widths(peaks)
    np.testing.assert_allclose(peaks["width"][0][5], 500, atol=1e-3)  # 50% of a 1000 ns box
    np.testing.assert_allclose(peaks["width"][0][10], 1000, atol=1e-3)
    np.testing.assert_allclose(peaks["median_time"][0], 500, atol=1e-3)
    np.testing.assert_allclose(peaks["area_decile_from_midpoint"][0][1], -400, atol=1e-3)
    assert peaks["center_time"][0] == 500  # mean sample centre


# ----------------------------------------------------------------------------- classification
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e4), st.floats(0, 5000), st.floats(0, 5000), st.integers(0, 10)),
                max_size=30))
def test_classify_matches_reference(rows):
    a = np.array([r[0] for r in rows], dtype=np.float32)
    rise = np.array([r[1] for r in rows], dtype=np.float32)
    w50 = np.array([r[2] for r in rows], dtype=np.float32)
    nch = np.array([r[3] for r in rows], dtype=np.int16)
    got = classify_peaks(a, rise, w50, nch)
    is_s1 = (rise <= 100) & (w50 <= 500) & (nch >= 2)
    is_s2 = ~is_s1 & (a >= 10) & (w50 >= 200) & (nch >= 2)
    np.testing.assert_array_equal(got, np.where(is_s1, 1, np.where(is_s2, 2, 0)))


@settings(max_examples=50, deadline=None)
@given(records_st())
def test_peak_basics_fields(records):
    to_pe = np.full(N_CH, 0.01)
    hits = find_hits(records, 15, 1, 3)
    peaks = build_peaks(records, hits, to_pe, gap_threshold=100, left_extension=10,
                        right_extension=30, min_channels=1, n_top_channels=2)
    pb = peak_basics(peaks)
    assert pb.dtype == np.dtype(peak_basics_dtype)
    np.testing.assert_array_equal(pb["time"], peaks["time"])
    np.testing.assert_array_equal(pb["endtime"], peaks["time"] + peaks["length"] * peaks["dt"])
    np.testing.assert_array_equal(pb["n_channels"], (peaks["area_per_channel"] > 0).sum(axis=1))
    if len(peaks):
        np.testing.assert_array_equal(pb["max_pmt"], np.argmax(peaks["area_per_channel"], axis=1))
    np.testing.assert_array_equal(pb["range_50p_area"], peaks["width"][:, 5])
    np.testing.assert_array_equal(pb["range_90p_area"], peaks["width"][:, 9])
    np.testing.assert_array_equal(pb["rise_time"], -peaks["area_decile_from_midpoint"][:, 1])
    np.testing.assert_array_equal(
        pb["type"], classify_peaks(pb["area"], pb["rise_time"], pb["range_50p_area"], pb["n_channels"])
    )
    assert np.all(np.diff(pb["time"]) > 0)
    assert np.all(pb["endtime"][:-1] <= pb["time"][1:])
