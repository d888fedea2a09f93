"""Baselining, record helpers and hit finding, against plain-Python references."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncstrax.dtypes import hit_dtype, raw_record_dtype, record_dtype
from asyncstrax.processing import (
    baseline,
    cut_outside_hits,
    find_hits,
    integrate,
    raw_to_records,
    record_links,
    sort_by_time,
    zero_out_of_bounds,
)

SPR = 10  # small records so pulses cross record boundaries often
DT = 10


# ----------------------------------------------------------------------------- data generation
@st.composite
def raw_records_st(draw, spr=SPR, max_pulses=12, n_channels=4, lo=-50, hi=300):
    """strax-layout raw_records: pulses cut into spr-sample records, sorted by time."""
    n_pulses = draw(st.integers(0, max_pulses))
    pulses = []
    next_free = {}
    for _ in range(n_pulses):
        ch = draw(st.integers(0, n_channels - 1))
        gap = draw(st.integers(0, 30))
        start = next_free.get(ch, 0) + gap
        length = draw(st.integers(1, 4 * spr))
        data = draw(st.lists(st.integers(lo, hi), min_size=length, max_size=length))
        next_free[ch] = start + length + 1
        pulses.append((ch, start, np.array(data, dtype=np.int16)))
    return make_raw_records(pulses, spr)


def make_raw_records(pulses, spr=SPR, dt=DT):
    """pulses: (channel, start sample, int16 data) -> raw_records sorted by (time, channel)."""
    rows = []
    for ch, start, data in pulses:
        n = len(data)
        for i in range(-(-n // spr)):
            seg = data[i * spr:(i + 1) * spr]
            rows.append((ch, (start + i * spr) * dt, len(seg), n, i, seg))
    rr = np.zeros(len(rows), dtype=raw_record_dtype(spr))
    rows.sort(key=lambda x: (x[1], x[0]))
    for k, (ch, t, length, n, i, seg) in enumerate(rows):
        rr[k]["time"] = t
        rr[k]["length"] = length
        rr[k]["dt"] = dt
        rr[k]["channel"] = ch
        rr[k]["pulse_length"] = n
        rr[k]["record_i"] = i
        rr[k]["data"][:length] = seg
    return rr


# ----------------------------------------------------------------------------- references
def ref_raw_to_records(raw, baseline_samples):
    rec = np.zeros(len(raw), dtype=record_dtype(len(raw[0]["data"]) if len(raw) else SPR))
    last = {}
    for i, r in enumerate(raw):
        for f in ("time", "length", "dt", "channel", "pulse_length", "record_i"):
            rec[i][f] = r[f]
        n = r["length"]
        if r["record_i"] == 0:
            w = r["data"][: min(baseline_samples, n)].astype(np.float64)
            last[r["channel"]] = (np.float32(w.mean()), np.float32(w.std()))
        bl, rms = last.get(r["channel"], (np.float32(16000), np.float32(np.nan)))
        d = np.clip(int(bl) - r["data"][:n].astype(np.int64), -32768, 32767)
        rec[i]["data"][:n] = d
        rec[i]["baseline"] = bl
        rec[i]["baseline_rms"] = rms
        rec[i]["area"] = int(d.sum()) + int(round(float(bl % 1) * n))
    return rec


def ref_links(records):
    prev = np.full(len(records), -1)
    nxt = np.full(len(records), -1)
    last = {}
    spr = records.dtype["data"].shape[0]
    for i, r in enumerate(records):
        ch = r["channel"]
        if r["record_i"] != 0 and ch in last and records[last[ch]]["time"] + spr * r["dt"] == r["time"]:
            prev[i] = last[ch]
            nxt[last[ch]] = i
        last[ch] = i
    return prev, nxt


def ref_find_hits(records, thresholds):
    hits = []
    for ri, r in enumerate(records):
        thr = thresholds[r["channel"]]
        d = r["data"][: r["length"]]
        above = d >= thr
        i = 0
        while i < len(d):
            if not above[i]:
                i += 1
                continue
            j = i
            while j < len(d) and above[j]:
                j += 1
            seg = d[i:j].astype(np.int64)
            hits.append(
                dict(
                    time=r["time"] + i * r["dt"], length=j - i, channel=r["channel"], left=i,
                    right=j, record_i=ri,
                    area=seg.sum() + (j - i) * (r["baseline"] % 1),
                    height=seg.max() + r["baseline"] % 1,
                    max_time=r["time"] + (i + int(np.argmax(seg))) * r["dt"],
                )
            )
            i = j
    return hits


def ref_cut_outside_hits(records, hits, le, re_):
    """Keep samples whose absolute time is in a hit's extended window, within the hit's pulse."""
    out = records.copy()
    spr = records.dtype["data"].shape[0]
    prev, nxt = ref_links(records)
    keep = np.zeros((len(records), spr), bool)
    for h in hits:
        ri = h["record_i"]
        t0 = h["time"] - le * h["dt"]
        t1 = h["time"] + (h["length"] + re_) * h["dt"]
        for rj in (ri, prev[ri], nxt[ri]):
            if rj < 0:
                continue
            ts = records[rj]["time"] + np.arange(spr) * records[rj]["dt"]
            keep[rj] |= (ts >= t0) & (ts < t1)
    out["data"][~keep] = 0
    return out


# ----------------------------------------------------------------------------- tests
@settings(max_examples=150, deadline=None)
@given(raw_records_st(), st.integers(1, 25))
def test_raw_to_records_matches_reference(raw, baseline_samples):
    rec = raw_to_records(raw, baseline_samples=baseline_samples)
    ref = ref_raw_to_records(raw, baseline_samples)
    for f in ("time", "length", "dt", "channel", "pulse_length", "record_i", "data", "area", "baseline"):
        np.testing.assert_array_equal(rec[f], ref[f], err_msg=f)
    np.testing.assert_allclose(rec["baseline_rms"], ref["baseline_rms"], rtol=1e-4, atol=1e-3)
    assert np.all(rec["reduction_level"] == 0)


def test_find_hits_threshold_is_at_least_the_noise_multiple():
    # strax: threshold = max(min_amplitude, baseline_rms * min_height_over_noise), so with the
    # default (0) a negative min_amplitude acts as 0 and does not select baseline samples
    rng = np.random.default_rng(3)
    data = (16000 + rng.normal(0, 3, 400)).astype(np.int16)
    data[200:205] = 15950  # a 50 ADC pulse
    rec = raw_to_records(make_raw_records([(2, 0, data)]), baseline_samples=40)
    np.testing.assert_array_equal(find_hits(rec, -5), find_hits(rec, 0))
    assert set(find_hits(rec, -5)["threshold"]) == {0.0}
    noisy = find_hits(rec, 1, min_height_over_noise=5)
    assert np.allclose(noisy["threshold"], 5 * rec["baseline_rms"][noisy["record_i"]])
    assert 0 < len(noisy) < len(find_hits(rec, 1))
    assert (noisy["height"] >= noisy["threshold"]).all()


@settings(max_examples=100, deadline=None)
@given(raw_records_st(), st.integers(1, 25))
def test_baseline_in_place_and_integrate(raw, baseline_samples):
    rec = np.zeros(len(raw), dtype=record_dtype(SPR))
    for f in ("time", "length", "dt", "channel", "pulse_length", "record_i", "data"):
        rec[f] = raw[f]
    baseline(rec, baseline_samples)
    zero_out_of_bounds(rec)
    integrate(rec)
    ref = ref_raw_to_records(raw, baseline_samples)
    np.testing.assert_array_equal(rec["data"], ref["data"])
    np.testing.assert_array_equal(rec["baseline"], ref["baseline"])
    np.testing.assert_array_equal(rec["area"], ref["area"])


def test_baseline_flips_signal():
    data = np.full(30, 16000, np.int16)
    data[20:23] = [15900, 15800, 15950]
    rec = raw_to_records(make_raw_records([(0, 0, data)], spr=30), baseline_samples=10)
    assert rec["baseline"][0] == 16000
    np.testing.assert_array_equal(rec["data"][0][18:24], [0, 0, 100, 200, 50, 0])
    assert rec["area"][0] == 350


def test_missing_first_fragment_uses_fallback():
    raw = make_raw_records([(0, 0, np.full(25, 15990, np.int16))])[1:]
    rec = raw_to_records(raw)
    assert np.all(rec["baseline"] == 16000)
    assert np.all(np.isnan(rec["baseline_rms"]))
    assert np.all(rec["data"][0] == 10)


@settings(max_examples=100, deadline=None)
@given(raw_records_st())
def test_record_links(raw):
    rec = raw_to_records(raw)
    prev, nxt = record_links(rec)
    rp, rn = ref_links(rec)
    np.testing.assert_array_equal(prev, rp)
    np.testing.assert_array_equal(nxt, rn)


def _hit_thresholds(data, n=4):
    return data.draw(st.lists(st.integers(1, 120), min_size=n, max_size=n))


@settings(max_examples=150, deadline=None)
@given(raw_records_st(), st.data())
def test_find_hits_matches_reference(raw, data):
    rec = raw_to_records(raw, baseline_samples=3)
    thr = np.array(_hit_thresholds(data), dtype=np.float64)
    hits = find_hits(rec, thr, left_extension=2, right_extension=3)
    ref = ref_find_hits(rec, thr)
    assert len(hits) == len(ref)
    assert hits.dtype == np.dtype(hit_dtype)
    for h, r in zip(hits, ref):
        for k in ("time", "length", "channel", "left", "right", "record_i", "max_time"):
            assert h[k] == r[k], k
        np.testing.assert_allclose(h["area"], r["area"], rtol=1e-6, atol=1e-3)
        np.testing.assert_allclose(h["height"], r["height"], rtol=1e-6)
        assert h["left_integration"] == r["left"] - 2
        assert h["right_integration"] == r["right"] + 3
        assert h["threshold"] == thr[r["channel"]]
        assert h["dt"] == DT


def test_find_hits_buffer_growth():
    # Many hits per record: alternate above / below threshold
    data = np.tile(np.array([16000, 16000, 15000], np.int16), 2000)
    raw = make_raw_records([(0, 0, data), (1, 5, data)], spr=110)
    rec = raw_to_records(raw, baseline_samples=2)
    hits = find_hits(rec, 100)
    assert len(hits) == 4000
    assert len(ref_find_hits(rec, [100, 100])) == 4000


def test_find_hits_scalar_threshold_and_empty():
    assert len(find_hits(np.zeros(0, record_dtype(SPR)))) == 0
    data = np.full(40, 16000, np.int16)
    data[15] = 15980  # 20 ADC: a hit at threshold 15, none at 25
    rec = raw_to_records(make_raw_records([(2, 0, data)]), baseline_samples=5)
    assert len(find_hits(rec, 15)) == 1
    assert len(find_hits(rec, 25)) == 0


@settings(max_examples=100, deadline=None)
@given(raw_records_st(), st.integers(0, 12), st.integers(0, 12), st.data())
def test_cut_outside_hits_matches_reference(raw, le, re_, data):
    rec = raw_to_records(raw, baseline_samples=3)
    thr = np.array(_hit_thresholds(data), dtype=np.float64)
    hits = find_hits(rec, thr)
    ref = ref_cut_outside_hits(rec, hits, le, re_)
    cut_outside_hits(rec, hits, le, re_)
    np.testing.assert_array_equal(rec["data"], ref["data"])
    assert np.all(rec["reduction_level"] == 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=200))
def test_sort_by_time(times):
    x = np.zeros(len(times), dtype=hit_dtype)
    x["time"] = times
    x["channel"] = np.arange(len(times)) % 7
    s = sort_by_time(x)
    o = np.argsort(x["time"], kind="stable")
    np.testing.assert_array_equal(s, x[o])
