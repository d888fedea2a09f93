"""The TPC plugins: the engine gives what the kernels give, events do not depend on the
chunking, and the chain finds what the simulator injected."""

from __future__ import annotations

import numpy as np
import pytest

import asyncstrax as ax
from asyncstrax.processing import process_chunk_plain
from asyncstrax.tpc.plugins import (
    TPC_PLUGINS,
    Events,
    PeakBasics,
    Peaks,
    RawRecords,
    Records,
    make_simulator,
    simulate,
)

#: A short run in a few chunks (~0.1 s of processing).
SHORT = dict(seed=7, event_rate_hz=150.0, run_duration_ns=300_000_000,
             chunk_duration_ns=60_000_000)


def assert_same(a: np.ndarray, b: np.ndarray, what: str = "") -> None:
    """Equal dtype and values, field by field (NaN == NaN)."""
    assert a.dtype == b.dtype, what
    assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} items"
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{what}.{name}")


def tpc_context(**config) -> ax.Context:
    return ax.Context(register=TPC_PLUGINS, config=config)


# ---------------------------------------------------------------------- declarations
def test_declarations():
    ctx = tpc_context()
    plugins = ctx.get_plugins("r", "event_basics")
    kinds = {dt: p.data_kind_for(dt) for dt, p in plugins.items()}
    assert kinds == {
        "raw_records": "raw_records", "truth": "truth", "records": "records", "peaks": "peaks",
        "peak_basics": "peaks", "events": "events", "event_basics": "events",
    }
    for cls in TPC_PLUGINS:
        assert cls.__version__ != "0.0.0"
    assert Records.parallel and Peaks.parallel and PeakBasics.parallel
    assert not Events.parallel  # holds state between chunks
    assert plugins["peaks"].dtype["area_per_channel"].shape == (248,)
    # one option, one value, for every plugin that takes it
    assert {"n_channels"} <= set(RawRecords.takes_config) & set(Peaks.takes_config)
    config = ctx.show_config("event_basics")
    assert {"hit_min_amplitude", "left_event_extension", "seed"} <= set(config["option"])


def test_options_reach_lineage():
    ctx = tpc_context()
    a = ctx.key_for("r", "event_basics").lineage_hash
    ctx.set_config({"trigger_min_area": 200.0})
    assert ctx.key_for("r", "event_basics").lineage_hash != a
    unchanged = tpc_context().key_for("r", "peaks").lineage_hash
    assert ctx.key_for("r", "peaks").lineage_hash == unchanged


def test_simulator_options():
    sim = make_simulator(dict(raw_data_rate_mb_s=30.0, chunk_mb=5.0))
    assert sim.expected_mb_per_s == pytest.approx(30.0, rel=0.01)
    assert sim.chunk_duration_ns == pytest.approx(5 / 30 * 1e9, rel=0.01)
    chunks = simulate(dict(raw_mb=3.0, chunk_mb=1.0, raw_data_rate_mb_s=30.0))
    total = sum(c[2].nbytes for c in chunks) / 1e6
    assert 3.0 <= total < 5.0
    ctx = tpc_context(raw_mb=3.0, chunk_mb=1.0, raw_data_rate_mb_s=30.0)
    raw = ctx.get_array("r", "raw_records")
    np.testing.assert_array_equal(raw, np.concatenate([c[2] for c in chunks]))


# ---------------------------------------------------------------------- engine == kernels
@pytest.fixture(scope="module")
def short_run():
    chunks = simulate(SHORT)
    assert len(chunks) >= 4
    return chunks, [process_chunk_plain(c[2], None, c[0], c[1]) for c in chunks]


@pytest.mark.parametrize("data_type", ["records", "peaks", "peak_basics"])
def test_chunks_equal_kernels(short_run, data_type):
    chunks, plain = short_run
    got = list(tpc_context(**SHORT).get_iter("r", data_type))
    assert [(c.start, c.end) for c in got] == [(c[0], c[1]) for c in chunks]
    for i, (chunk, expected) in enumerate(zip(got, plain)):
        assert_same(chunk.data, expected[data_type], f"{data_type} chunk {i}")


def test_one_chunk_run_equals_kernels():
    config = dict(SHORT, chunk_duration_ns=SHORT["run_duration_ns"])
    ((start, end, raw, truth),) = simulate(config)
    plain = process_chunk_plain(raw, None, start, end)
    ctx = tpc_context(**config)
    assert len(plain["events"]) > 10
    for data_type in ("events", "event_basics"):
        assert_same(ctx.get_array("r", data_type), plain[data_type], data_type)
    np.testing.assert_array_equal(ctx.get_array("r", "truth"), truth)


# ---------------------------------------------------------------------- chunking independence
class RechunkedRawRecords(RawRecords):
    """RawRecords of one simulated chunk, cut again at quiet times near ``split_at``.

    A cut is placed in a gap of the raw data (no record within 1 us, so no pulse or peak is
    cut) and outside every injected event's truth interval (truth items must not straddle).
    It may well fall inside a reconstructed event window (250 us before its S2).
    """

    split_at = ax.Config(default=(), help="wished chunk ends [ns]", track=False)

    def setup(self) -> None:
        ((start, end, raw, truth),) = simulate(
            dict(self.config, chunk_duration_ns=self.run_duration_ns))
        ends = raw["time"] + raw["length"].astype(np.int64) * raw["dt"]
        reach = np.maximum.accumulate(ends)
        lo, hi = reach[:-1] + 1000, raw["time"][1:] - 1000  # quiet gaps [lo, hi]
        gaps = np.flatnonzero(hi > lo)
        mid = (lo[gaps] + hi[gaps]) // 2
        in_truth = np.zeros(len(mid), bool)
        for t0, t1 in zip(truth["time"], truth["endtime"]):
            in_truth |= (mid >= t0) & (mid < t1)
        mid = mid[~in_truth]
        cuts = sorted({int(mid[np.argmin(np.abs(mid - b))]) for b in self.split_at})
        edges = [start, *[c for c in cuts if start < c < end], end]
        self.pieces = []
        for a, b in zip(edges[:-1], edges[1:]):
            r = raw[(raw["time"] >= a) & (raw["time"] < b)]
            t = truth[(truth["time"] >= a) & (truth["time"] < b)]
            self.pieces.append((a, b, r, t))
        self.n_pieces = len(self.pieces)

    def is_ready(self, chunk_i: int) -> bool:
        return chunk_i < len(self.pieces)

    def source_finished(self) -> bool:
        return True

    def compute(self, chunk_i: int):
        a, b, r, t = self.pieces[chunk_i]
        return {"raw_records": self.chunk(start=a, end=b, data=r, data_type="raw_records"),
                "truth": self.chunk(start=a, end=b, data=t, data_type="truth")}


RUN = dict(seed=11, event_rate_hz=200.0, run_duration_ns=250_000_000)


@pytest.fixture(scope="module")
def one_chunk_reference():
    ((start, end, raw, _),) = simulate(dict(RUN, chunk_duration_ns=RUN["run_duration_ns"]))
    return process_chunk_plain(raw, None, start, end)


def _rechunked(split_at, **context_config):
    ctx = ax.Context(register=[*TPC_PLUGINS, RechunkedRawRecords],
                     config=dict(RUN, split_at=tuple(split_at)), **context_config)
    return ctx


@pytest.mark.parametrize(
    "n_cuts, max_workers",
    [(0, 1), (3, 1), (12, 2), (60, 1)],
)
def test_events_do_not_depend_on_chunking(one_chunk_reference, n_cuts, max_workers):
    rng = np.random.default_rng(n_cuts)
    split_at = rng.uniform(0, RUN["run_duration_ns"], n_cuts)
    ctx = _rechunked(split_at, max_workers=max_workers)
    n_chunks = len(list(ctx.get_iter("r", "raw_records")))
    assert n_chunks >= min(n_cuts, 30) // 2 + 1
    expected = one_chunk_reference
    assert len(expected["events"]) > 20
    for data_type in ("peak_basics", "events", "event_basics"):
        assert_same(ctx.get_array("r", data_type), expected[data_type],
                    f"{data_type} with {n_chunks} chunks")


def test_event_numbers_consecutive_across_chunks():
    events = tpc_context(**SHORT).get_array("r", "events")
    np.testing.assert_array_equal(events["event_number"], np.arange(len(events)))
    assert np.all(events["endtime"][:-1] < events["time"][1:])


def test_small_channel_capacity_same_result(one_chunk_reference):
    ctx = _rechunked(np.linspace(0, RUN["run_duration_ns"], 8)[1:-1],
                     channel_capacity_bytes=100_000, max_workers=2)
    assert_same(ctx.get_array("r", "event_basics"), one_chunk_reference["event_basics"])


# ---------------------------------------------------------------------- physics
def match(event_basics: np.ndarray, truth: np.ndarray):
    """Per injected event: the event window holding its S2 centre (-1 if none)."""
    idx = np.searchsorted(event_basics["time"], truth["s2_time"], side="right") - 1
    ok = idx >= 0
    ok[ok] = truth["s2_time"][ok] < event_basics["endtime"][idx[ok]]
    return np.where(ok, idx, -1)


def test_physics_through_the_engine():
    ctx = tpc_context(seed=3, event_rate_hz=100.0, run_duration_ns=1_000_000_000,
                      chunk_duration_ns=150_000_000)
    eb = ctx.get_array("r", "event_basics")
    truth = ctx.get_array("r", "truth")
    assert len(truth) >= 70
    idx = match(eb, truth)
    found = idx >= 0
    assert found.mean() >= 0.95
    m, t = eb[idx[found]], truth[found]
    assert abs(np.nanmedian(m["s1_area"] / t["s1_area"]) - 1) < 0.10
    assert abs(np.nanmedian(m["s2_area"] / t["s2_area"]) - 1) < 0.10
