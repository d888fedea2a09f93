"""OverlapWindowPlugin: its documented rules and errors, beyond chunking independence."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import chunk_boundaries
from toy_plugins import BigPulses, PulseBasics, Pulses, make_pulses

import asyncstrax as ax
from asyncstrax.plugins.base import Work
from asyncstrax.plugins.overlap_window import OverlapWindowPlugin

NEAR_DTYPE = [("time", np.int64), ("endtime", np.int64), ("n_near", np.int32)]
WINDOW = 1_500


def near_counts(t, centres, before, after):
    return (np.searchsorted(t, centres + after, side="right")
            - np.searchsorted(t, centres - before, side="left"))


class Near(OverlapWindowPlugin):
    """Pulses starting within (before, after) of each pulse: an asymmetric window."""

    depends_on = "pulses"
    dtype = NEAR_DTYPE
    before = ax.Config(default=WINDOW, type=int, help="look back [ns]")
    after = ax.Config(default=WINDOW // 3, type=int, help="look ahead [ns]")

    def get_window_size(self):
        return (self.before, self.after)

    def compute(self, pulses):
        t = pulses["time"]
        out = np.zeros(len(pulses), NEAR_DTYPE)
        out["time"] = t
        out["endtime"] = t + 1
        out["n_near"] = near_counts(t, t, self.before, self.after)
        return out


class BigNeighbours(OverlapWindowPlugin):
    """Multi-output, two input kinds: for each big pulse, pulses near it; and a per-pulse
    count of big pulses near it."""

    provides = ("big_near", "pulse_near_big")
    depends_on = ("big_pulses", "pulses", "pulse_basics")
    data_kind = {"big_near": "big_pulses", "pulse_near_big": "pulses"}
    dtype = {"big_near": NEAR_DTYPE, "pulse_near_big": NEAR_DTYPE}

    def get_window_size(self):
        return float(WINDOW)  # floats are accepted, as in strax

    def compute(self, big_pulses, pulses):
        big = np.zeros(len(big_pulses), NEAR_DTYPE)
        big["time"] = big_pulses["time"]
        big["endtime"] = big_pulses["endtime"]
        big["n_near"] = near_counts(pulses["time"], big_pulses["time"], WINDOW, WINDOW)
        per_pulse = np.zeros(len(pulses), NEAR_DTYPE)
        per_pulse["time"] = pulses["time"]
        per_pulse["endtime"] = pulses["endtime"]
        per_pulse["n_near"] = near_counts(big_pulses["time"], pulses["time"], WINDOW, WINDOW)
        return {"big_near": big, "pulse_near_big": per_pulse}


OVERLAP_PLUGINS = [Pulses, PulseBasics, BigPulses, Near, BigNeighbours]


def ctx_for(bounds=(), plugins=OVERLAP_PLUGINS, **config):
    return ax.Context(register=plugins, config={"chunk_bounds": tuple(bounds), **config})


@functools.cache
def single_chunk(target):
    """A target of the run in one chunk, made once per session (the reference)."""
    return ctx_for().get_array("r", list(target) if isinstance(target, tuple) else target)


def reference_near(before=WINDOW, after=WINDOW // 3):
    t = make_pulses(500)["time"]
    return near_counts(t, t, before, after)


# ---------------------------------------------------------------------- what is sent, when
def test_nothing_sent_twice_or_lost():
    ctx = ctx_for((25_000, 60_000, 90_000))
    chunks = list(ctx.get_iter("r", "near"))
    assert chunks[0].start == 0 and chunks[-1].end == 100_000
    assert all(a.end == b.start for a, b in zip(chunks[:-1], chunks[1:]))
    data = np.concatenate([c.data for c in chunks])
    np.testing.assert_array_equal(data["time"], make_pulses(500)["time"])  # each exactly once
    np.testing.assert_array_equal(data["n_near"], reference_near())
    # Results near a chunk end wait for the next chunk: the first output ends a window early.
    assert chunks[0].end <= 25_000 - WINDOW // 3


def test_window_longer_than_the_run_holds_everything_to_the_end():
    ctx = ctx_for((25_000, 60_000, 90_000), before=10**6, after=10**6)
    chunks = list(ctx.get_iter("r", "near"))
    assert sum(len(c) for c in chunks[:-1]) == 0
    assert (chunks[-1].end, len(chunks[-1])) == (100_000, 500)
    np.testing.assert_array_equal(chunks[-1].data["n_near"], np.full(500, 500))


@pytest.mark.parametrize("ending", ["is_last", "flush"])
def test_last_step_or_flush_sends_everything(ending):
    plugin = Near()
    plugin.run_id = "r"
    plugin.config = {"before": WINDOW, "after": WINDOW}
    pulses = make_pulses(500)
    t = pulses["time"]
    bounds = [0, 25_000, 60_000, 100_000]
    steps = [pulses[(t >= a) & (t < b)] for a, b in zip(bounds[:-1], bounds[1:])]
    outputs = []
    for i, data in enumerate(steps):
        last = ending == "is_last" and i == len(steps) - 1
        work = Work(i, bounds[i], bounds[i + 1], {"pulses": [("pulses", [data])]}, is_last=last)
        outputs += plugin.process_work(work)
    if ending == "flush":
        sent = sum(len(o["near"]) for o in outputs)
        assert sent < 500  # the end of the last step was held back
        flush = Work(3, 100_000, 100_000, {"pulses": [("pulses", [pulses[:0]])]},
                     is_last=True, flush=True)
        outputs += plugin.process_work(flush)
        assert plugin.process_work(flush) == []  # a second flush has nothing left
    chunks = [o["near"] for o in outputs]
    assert chunks[-1].end == 100_000
    assert all(a.end == b.start for a, b in zip(chunks[:-1], chunks[1:]))
    data = np.concatenate([c.data for c in chunks])
    np.testing.assert_array_equal(data["n_near"], near_counts(t, t, WINDOW, WINDOW))


MARKER_DTYPE = np.dtype([("time", np.int64), ("endtime", np.int64), ("v", np.int64)])


class EndMarkers(OverlapWindowPlugin):
    """A zero-length marker at each input's end: one lands on the run's end."""

    provides = "end_markers"
    depends_on = "markers_in"
    dtype = MARKER_DTYPE

    def get_window_size(self) -> int:
        return 10

    def compute(self, markers_in):
        out = np.zeros(len(markers_in), MARKER_DTYPE)
        out["time"] = out["endtime"] = markers_in["endtime"]
        out["v"] = markers_in["v"]
        return out


@pytest.mark.parametrize("ending", ["is_last", "flush"])
def test_zero_length_results_at_the_run_end_are_sent(ending):
    plugin = EndMarkers()
    plugin.run_id = "r"
    data = np.zeros(2, MARKER_DTYPE)
    data["time"], data["endtime"], data["v"] = [10, 390], [20, 400], [0, 1]
    parts = {"markers_in": [("markers_in", [data])]}
    outputs = plugin.process_work(Work(0, 0, 400, parts, is_last=ending == "is_last"))
    if ending == "flush":
        outputs += plugin.process_work(Work(1, 400, 400, {"markers_in": [(
            "markers_in", [data[:0]])]}, is_last=True, flush=True))
    sent = np.concatenate([o["end_markers"].data for o in outputs])
    assert sent["v"].tolist() == [0, 1] and sent["time"].tolist() == [20, 400]


def test_multi_output_with_two_input_kinds():
    ctx = ctx_for((25_000, 60_000, 90_000))
    pulses = make_pulses(500)
    big = ctx.get_array("r", "big_pulses")
    big_near = ctx.get_array("r", "big_near")
    np.testing.assert_array_equal(big_near["n_near"],
                                  near_counts(pulses["time"], big["time"], WINDOW, WINDOW))
    per_pulse = ctx.get_array("r", ["pulses", "pulse_near_big"])
    np.testing.assert_array_equal(per_pulse["n_near"],
                                  near_counts(big["time"], pulses["time"], WINDOW, WINDOW))
    assert per_pulse["n_near"].max() > 1


@settings(max_examples=20)
@given(chunk_boundaries())
def test_multi_output_is_chunking_independent(bounds):
    # Targets one at a time: same-kind targets of different chunkings can hit the engine bug
    # shown in test_family_engine_issues.py.
    ctx = ctx_for(bounds + bounds[:1])
    for target in ("near", "pulse_near_big", "big_near"):
        np.testing.assert_array_equal(ctx.get_array("r", target), single_chunk(target))


# ---------------------------------------------------------------------- errors
def test_negative_window_is_a_clear_error():
    class Backwards(Near):
        def get_window_size(self):
            return -5

    ctx = ctx_for(plugins=[Pulses, Backwards])
    with pytest.raises(ax.PluginGaveWrongOutput, match=r"get_window_size\(\) returned -5; it "
                       r"must be >= 0 \(plugin Backwards") as info:
        ctx.get_array("r", "backwards")
    assert info.value.plugin == "Backwards"


def test_missing_window_is_a_clear_error():
    class NoWindow(OverlapWindowPlugin):
        depends_on = "pulses"
        dtype = NEAR_DTYPE

        def compute(self, pulses):
            return np.zeros(0, NEAR_DTYPE)

    ctx = ctx_for(plugins=[Pulses, NoWindow])
    with pytest.raises(ax.PluginError, match=r"NoWindow must implement get_window_size\(\)"):
        ctx.get_array("r", "no_window")


@pytest.mark.parametrize("window", [(-5, 10), (1, 2, 3)])
def test_bad_window_tuples_are_refused(window):
    class BadTuple(Near):
        def get_window_size(self):
            return window

    ctx = ctx_for(plugins=[Pulses, BadTuple])
    with pytest.raises(ax.PluginGaveWrongOutput, match="get_window_size"):
        ctx.get_array("r", "bad_tuple")


class Growing(OverlapWindowPlugin):
    """Breaks its own window: once more input has come, its results reach 3000 ns ahead, so a
    recomputed result straddles what was already sent."""

    depends_on = "pulses"
    dtype = NEAR_DTYPE

    def setup(self):
        self.calls = 0

    def get_window_size(self):
        return 2_000

    def compute(self, pulses):
        out = np.zeros(len(pulses), NEAR_DTYPE)
        out["time"] = pulses["time"]
        grown = (self.calls > 0) & (pulses["time"] + 3_000 <= pulses["time"].max(initial=0))
        out["endtime"] = pulses["time"] + np.where(grown, 3_000, 1)
        self.calls += 1
        return out


def test_results_straddling_what_was_sent_are_an_error():
    ctx = ctx_for((25_000, 60_000, 90_000), plugins=[Pulses, Growing])
    with pytest.raises(ax.PluginGaveWrongOutput,
                       match=r"recomputed results straddle time \d+.*cannot split at \d+: item "
                             r"\d+ spans.*beyond the window") as info:
        ctx.get_array("r", "growing")
    assert info.value.plugin == "Growing"
    assert info.value.chunk_i == 1
    # In one chunk nothing was sent before, so nothing can straddle it.
    assert len(ctx_for(plugins=[Pulses, Growing]).get_array("r", "growing")) == 500


@pytest.mark.parametrize("parallel", [True, "process"])
def test_parallel_is_refused(parallel):
    """Its steps carry state to the next: in flight together they gave wrong data."""

    class ParallelNear(Near):
        provides = "parallel_near"

    ParallelNear.parallel = parallel
    with pytest.raises(ax.InvalidConfiguration, match="OverlapWindowPlugin.*cannot be parallel"):
        ax.Context(register=[Pulses, ParallelNear], max_workers=2).get_array("r", "parallel_near")


@pytest.mark.parametrize("parallel", ["processes", "thread", 2])
def test_unknown_parallel_values_are_refused(parallel):
    class Typo(PulseBasics):
        provides = "typo_basics"

    Typo.parallel = parallel
    with pytest.raises(ax.InvalidConfiguration, match="parallel must be False, True"):
        ax.Context(register=[Pulses, Typo]).get_array("r", "typo_basics")
