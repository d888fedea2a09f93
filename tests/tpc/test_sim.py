"""The synthetic TPC: determinism, chunk layout, data rate, truth, pacing."""

import asyncio

import numpy as np
import pytest

import asyncstrax as ax
from asyncstrax.dtypes import raw_record_dtype
from asyncstrax.processing import record_links
from asyncstrax.tpc.sim import TRUTH_DTYPE, Simulator, apaced, detector_to_pe, paced

SMALL = dict(n_channels=40, event_rate_hz=300, dark_rate_hz=200, chunk_duration_ns=10_000_000)


def _chunks(seed, n=3, **kw):
    sim = Simulator(seed=seed, **{**SMALL, **kw})
    return list(sim.iter_chunks(n_chunks=n, with_truth=True)), sim


def test_deterministic_from_seed():
    a, _ = _chunks(1)
    b, _ = _chunks(1)
    c, _ = _chunks(2)
    for x, y in zip(a, b):
        assert x[0] == y[0] and x[1] == y[1]
        np.testing.assert_array_equal(x[2], y[2])
        np.testing.assert_array_equal(x[3], y[3])
    assert not all(len(x[2]) == len(z[2]) and np.array_equal(x[2], z[2]) for x, z in zip(a, c))


def test_layout_and_contiguity():
    chunks, sim = _chunks(4, n=4, start_time_ns=1_000_000_000)
    assert chunks[0][0] == 1_000_000_000
    spr = 110
    for i, (start, end, raw, truth) in enumerate(chunks):
        if i:
            assert start == chunks[i - 1][1]
        assert end > start
        assert raw.dtype == np.dtype(raw_record_dtype())
        assert np.all(np.diff(raw["time"]) >= 0)
        assert np.all(raw["dt"] == 10)
        assert np.all(raw["time"] >= start)
        assert np.all(raw["time"] + raw["length"] * raw["dt"] <= end)
        assert np.all((raw["length"] > 0) & (raw["length"] <= spr))
        assert np.all((raw["channel"] >= 0) & (raw["channel"] < SMALL["n_channels"]))
        # Zero padding beyond length
        pad = np.arange(spr)[None, :] >= raw["length"][:, None]
        assert np.all(raw["data"][pad] == 0)
        # Record layout of pulses: length of each fragment follows from pulse_length
        expected_len = np.minimum(spr, raw["pulse_length"] - raw["record_i"].astype(np.int64) * spr)
        np.testing.assert_array_equal(raw["length"], expected_len)
        # No pulse crosses a chunk boundary: every fragment's neighbours are in this chunk
        rec = np.zeros(len(raw), dtype=[("time", np.int64), ("dt", np.int16), ("channel", np.int16),
                                         ("record_i", np.int16), ("data", np.int16, spr)])
        for f in ("time", "dt", "channel", "record_i"):
            rec[f] = raw[f]
        prev, nxt = record_links(rec)
        assert np.all(prev[raw["record_i"] > 0] >= 0)
        has_more = (raw["record_i"].astype(np.int64) + 1) * spr < raw["pulse_length"]
        assert np.all(nxt[has_more] >= 0)
        assert np.all(nxt[~has_more] == -1)
        # Signal is negative-going from a 16000 baseline
        first = raw[raw["record_i"] == 0]
        assert abs(np.median(first["data"][:, :40]) - 16000) < 2
        # Truth belongs to this chunk
        assert truth.dtype == TRUTH_DTYPE
        if len(truth):
            assert truth["time"].min() >= start and truth["endtime"].max() <= end
    truth = sim.truth
    np.testing.assert_array_equal(truth["event_number"], np.arange(len(truth)))
    np.testing.assert_array_equal(truth["s2_time"] - truth["s1_time"], truth["drift_time"])
    assert np.all(np.diff(truth["time"]) > 0)
    assert np.all((truth["s1_area"] > 0) & (truth["s2_area"] > truth["s1_area"]))
    np.testing.assert_array_equal(truth["n_photons"], truth["s1_n_photons"] + truth["s2_n_photons"])
    # Areas in PE are close to photon counts (area factors average to 1)
    assert abs(truth["s2_area"].sum() / truth["s2_n_photons"].sum() - 1) < 0.02


def test_limits():
    sim = Simulator(seed=0, **SMALL)
    chunks = list(sim.iter_chunks(duration_ns=35_000_000))
    assert chunks[-1][1] - chunks[0][0] >= 35_000_000
    assert chunks[-2][1] - chunks[0][0] < 35_000_000
    sim = Simulator(seed=0, **SMALL)
    chunks = list(sim.iter_chunks(raw_mb=3))
    total = sum(c[2].nbytes for c in chunks)
    assert total >= 3e6 and total - chunks[-1][2].nbytes < 3e6


@pytest.mark.parametrize("mb_per_s", [30, 150])
def test_data_rate(mb_per_s):
    sim = Simulator.for_data_rate(mb_per_s, chunk_mb=10, seed=7)
    assert abs(sim.expected_mb_per_s - mb_per_s) < 1e-6 * mb_per_s
    nbytes = 0
    chunks = list(sim.iter_chunks(duration_ns=1_000_000_000))
    nbytes = sum(c[2].nbytes for c in chunks)
    rate = nbytes / 1e6 / ((chunks[-1][1] - chunks[0][0]) / 1e9)
    assert abs(rate / mb_per_s - 1) < 0.2, rate
    sizes = np.array([c[2].nbytes for c in chunks[:-1]]) / 1e6
    assert abs(np.median(sizes) / 10 - 1) < 0.3


def test_for_data_rate_too_low():
    with pytest.raises(ValueError):
        Simulator.for_data_rate(0.1, dark_rate_hz=1000)


def test_to_pe_matches_detector():
    sim = Simulator(seed=3, n_channels=17)
    np.testing.assert_allclose(sim.to_pe, detector_to_pe(17))
    assert sim.n_top_channels == 8


def test_paced_sleeps_until_chunk_end():
    now = [100.0]
    slept = []

    def clock():
        return now[0]

    def sleep(dt):
        slept.append(dt)
        now[0] += dt

    items = [(0, 500_000_000, None), (500_000_000, 1_500_000_000, None)]
    out = list(paced(items, speed=2.0, clock=clock, sleep=sleep))
    assert out == items
    np.testing.assert_allclose(slept, [0.25, 0.5])


def test_apaced_sync_and_async_sources():
    items = [(0, 1_000_000, "a"), (1_000_000, 3_000_000, "b")]

    async def agen():
        for x in items:
            yield x

    async def collect(src):
        return [x async for x in apaced(src, speed=1.0)]

    assert asyncio.run(collect(items)) == items
    assert asyncio.run(collect(agen())) == items


def test_keep_truth_false_hands_truth_out_per_chunk_and_keeps_none():
    kept = Simulator(seed=4, event_rate_hz=200)
    handed = Simulator(seed=4, event_rate_hz=200, keep_truth=False)
    a = list(kept.iter_chunks(n_chunks=3, with_truth=True))
    b = list(handed.iter_chunks(n_chunks=3, with_truth=True))
    for (s1, e1, r1, t1), (s2, e2, r2, t2) in zip(a, b):
        assert (s1, e1) == (s2, e2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(kept.truth, np.concatenate([t for *_, t in a]))
    with pytest.raises(RuntimeError, match="keep_truth=False"):
        _ = handed.truth


def test_the_raw_records_source_does_not_accumulate_truth():
    from asyncstrax.tpc import PLUGINS

    ctx = ax.Context(register=PLUGINS, config={"run_duration_ns": 300_000_000})
    truth = ctx.get_array("r", "truth")  # the run's truth still arrives, chunk by chunk
    assert len(truth) > 0
    source = ctx.get_plugins("r", "truth")["truth"]
    source.setup()
    source.compute(0)
    with pytest.raises(RuntimeError, match="keep_truth=False"):
        _ = source.sim.truth
