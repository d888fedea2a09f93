"""The kernels-only chain on simulated data: structure, and the physics check."""

import numpy as np
import pytest

from asyncstrax.dtypes import event_basics_dtype, peak_basics_dtype, peak_dtype, record_dtype
from asyncstrax.processing import DEFAULT_CONFIG, chain_config, process_chunk_plain
from asyncstrax.tpc.sim import Simulator


def _check_sorted_within(x, start, end):
    assert np.all(np.diff(x["time"]) >= 0)
    if len(x):
        endtime = x["endtime"] if "endtime" in x.dtype.names else x["time"] + x["length"] * x["dt"]
        assert x["time"].min() >= start and endtime.max() <= end


def test_chain_structure():
    sim = Simulator(seed=5, n_channels=50, event_rate_hz=200, chunk_duration_ns=20_000_000)
    cfg = chain_config(n_channels=50, n_top_channels=25)
    for start, end, raw in sim.iter_chunks(n_chunks=2):
        out = process_chunk_plain(raw, cfg, start, end)
        assert out["records"].dtype == np.dtype(record_dtype())
        assert out["peaks"].dtype == np.dtype(peak_dtype(50))
        assert out["peak_basics"].dtype == np.dtype(peak_basics_dtype)
        assert out["event_basics"].dtype == np.dtype(event_basics_dtype)
        assert len(out["records"]) == len(raw)
        assert len(out["peaks"]) == len(out["peak_basics"]) > 0
        assert len(out["events"]) == len(out["event_basics"]) > 0
        for k in ("records", "peaks", "peak_basics", "events"):
            _check_sorted_within(out[k], start, end)
        # Peaks never overlap
        pb = out["peak_basics"]
        assert np.all(pb["endtime"][:-1] <= pb["time"][1:])


def test_unknown_option():
    with pytest.raises(KeyError):
        chain_config(hit_threshold=3)
    assert set(chain_config()) == set(DEFAULT_CONFIG)


def run_physics_check(seed=3, duration_ns=1_000_000_000, event_rate_hz=100.0):
    """sim -> chain on ~1 s; return (found fraction, median S1 ratio, median S2 ratio, n)."""
    sim = Simulator(seed=seed, event_rate_hz=event_rate_hz, chunk_duration_ns=200_000_000)
    cfg = chain_config()
    ebs, truths = [], []
    for start, end, raw, truth in sim.iter_chunks(duration_ns=duration_ns, with_truth=True):
        eb = process_chunk_plain(raw, cfg, start, end)["event_basics"]
        ebs.append(eb)
        truths.append(truth)
    eb, tr = np.concatenate(ebs), np.concatenate(truths)
    # Matched: an event window contains the injected S2's centre time
    idx = np.searchsorted(eb["time"], tr["s2_time"], side="right") - 1
    found = (idx >= 0) & (tr["s2_time"] < eb["endtime"][np.clip(idx, 0, None)])
    m, t = eb[idx[found]], tr[found]
    r1 = np.nanmedian(m["s1_area"] / t["s1_area"])
    r2 = np.nanmedian(m["s2_area"] / t["s2_area"])
    return found.mean(), r1, r2, len(tr)


@pytest.mark.parametrize("seed", [3, 11])
def test_physics_check(seed):
    found, r1, r2, n = run_physics_check(seed)
    assert n >= 70
    assert found >= 0.95
    assert abs(r1 - 1) < 0.10
    assert abs(r2 - 1) < 0.10
