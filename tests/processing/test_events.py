"""Event building and event basics vs plain-Python references; the chain helper."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncstrax.dtypes import event_basics_dtype, event_dtype, peak_basics_dtype
from asyncstrax.processing import build_events, event_basics


@st.composite
def peak_basics_st(draw, max_peaks=40):
    n = draw(st.integers(0, max_peaks))
    gaps = draw(st.lists(st.integers(1, 400), min_size=n, max_size=n))
    lengths = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    pb = np.zeros(n, dtype=peak_basics_dtype)
    t = 0
    for i in range(n):
        t += gaps[i]
        pb[i]["time"] = t
        t += lengths[i]
        pb[i]["endtime"] = t
    pb["center_time"] = (pb["time"] + pb["endtime"]) // 2
    pb["area"] = draw(st.lists(st.sampled_from([1.0, 50.0, 99.0, 150.0, 500.0, 1000.0]), min_size=n, max_size=n))
    pb["type"] = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    pb["n_channels"] = np.arange(n) % 7
    pb["range_50p_area"] = np.arange(n) * 1.5
    pb["rise_time"] = np.arange(n) * 0.5
    pb["area_fraction_top"] = np.linspace(0, 1, n)
    return pb


def ref_events(pb, thr, left, right, start, end):
    wins = []
    for p in pb:
        if p["type"] == 2 and p["area"] > thr:
            s, e = max(p["time"] - left, start), min(p["endtime"] + right, end)
            if e <= s:
                continue
            if wins and s <= wins[-1][1]:
                wins[-1][1] = max(wins[-1][1], e)
            else:
                wins.append([s, e])
    return wins


def ref_event_basics(ev, pb):
    inside = [i for i, p in enumerate(pb) if p["time"] >= ev["time"] and p["endtime"] <= ev["endtime"]]
    ps = pb[inside]
    res = dict(n_peaks=len(ps))
    s2s = [i for i in range(len(ps)) if ps[i]["type"] == 2]
    s2s.sort(key=lambda i: -ps[i]["area"])  # stable: earliest wins ties
    s2 = s2s[0] if s2s else -1
    s1s = [i for i in range(len(ps)) if ps[i]["type"] == 1 and (s2 < 0 or ps[i]["time"] < ps[s2]["time"])]
    s1s.sort(key=lambda i: -ps[i]["area"])
    res["s2_index"] = s2
    res["alt_s2_index"] = s2s[1] if len(s2s) > 1 else -1
    res["s1_index"] = s1s[0] if s1s else -1
    res["alt_s1_index"] = s1s[1] if len(s1s) > 1 else -1
    for k in ("s1", "s2"):
        i = res[f"{k}_index"]
        res[f"{k}_area"] = ps[i]["area"] if i >= 0 else np.nan
        res[f"{k}_time"] = ps[i]["time"] if i >= 0 else 0
        res[f"{k}_n_channels"] = ps[i]["n_channels"] if i >= 0 else 0
        res[f"{k}_range_50p_area"] = ps[i]["range_50p_area"] if i >= 0 else np.nan
        res[f"{k}_rise_time"] = ps[i]["rise_time"] if i >= 0 else np.nan
    for k in ("alt_s1", "alt_s2"):
        i = res[f"{k}_index"]
        res[f"{k}_area"] = ps[i]["area"] if i >= 0 else np.nan
    if res["s1_index"] >= 0 and res["s2_index"] >= 0:
        res["drift_time"] = ps[res["s2_index"]]["center_time"] - ps[res["s1_index"]]["center_time"]
    else:
        res["drift_time"] = 0
    return res


@settings(max_examples=200, deadline=None)
@given(peak_basics_st(), st.sampled_from([0, 100]), st.sampled_from([0, 500, 3000]),
       st.sampled_from([0, 200, 2000]), st.integers(0, 2000), st.integers(0, 20000))
def test_build_events_matches_reference(pb, thr, left, right, start, span):
    end = start + span
    ev = build_events(pb, thr, left, right, start, end, first_event_number=7)
    ref = ref_events(pb, thr, left, right, start, end)
    assert ev.dtype == np.dtype(event_dtype)
    assert [[e["time"], e["endtime"]] for e in ev] == ref
    np.testing.assert_array_equal(ev["event_number"], 7 + np.arange(len(ev)))
    assert np.all(ev["time"] >= start) and np.all(ev["endtime"] <= end)


@settings(max_examples=200, deadline=None)
@given(peak_basics_st(), st.sampled_from([0, 100]), st.sampled_from([0, 500, 3000]), st.sampled_from([0, 200, 2000]))
def test_event_basics_matches_reference(pb, thr, left, right):
    ev = build_events(pb, thr, left, right)
    eb = event_basics(ev, pb)
    assert eb.dtype == np.dtype(event_basics_dtype)
    np.testing.assert_array_equal(eb["time"], ev["time"])
    np.testing.assert_array_equal(eb["endtime"], ev["endtime"])
    for e, row in zip(ev, eb):
        ref = ref_event_basics(e, pb)
        for k, v in ref.items():
            if isinstance(v, float) and np.isnan(v):
                assert np.isnan(row[k]), k
            else:
                assert row[k] == v, (k, row[k], v)


def test_main_s1_must_precede_main_s2():
    pb = np.zeros(4, dtype=peak_basics_dtype)
    pb["time"] = [0, 1000, 5000, 9000]
    pb["endtime"] = pb["time"] + 100
    pb["center_time"] = pb["time"] + 50
    pb["type"] = [1, 1, 2, 1]
    pb["area"] = [30, 20, 1000, 500]  # the 500 PE S1 comes after the S2
    ev = build_events(pb, 100, 10_000, 5_000)
    eb = event_basics(ev, pb)
    assert len(eb) == 1
    assert eb["s1_index"][0] == 0 and eb["s2_index"][0] == 2 and eb["alt_s1_index"][0] == 1
    assert eb["s1_area"][0] == 30 and eb["drift_time"][0] == 5000
    assert eb["n_peaks"][0] == 4


def test_empty():
    pb = np.zeros(0, dtype=peak_basics_dtype)
    ev = build_events(pb)
    assert len(ev) == 0 and len(event_basics(ev, pb)) == 0
