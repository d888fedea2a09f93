"""ExhaustPlugin: compute once, at the end, on the whole input."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import chunk_boundaries
from toy_plugins import BigPulses, PulseBasics, Pulses, make_pulses

import asyncstrax as ax
from asyncstrax.plugins.base import Work
from asyncstrax.plugins.exhaust import ExhaustPlugin

RANK_DTYPE = [("time", np.int64), ("endtime", np.int64), ("area_rank", np.int32)]
SUMMARY_DTYPE = [("time", np.int64), ("endtime", np.int64), ("n_pulses", np.int32),
                 ("n_big", np.int32), ("max_area", np.float32)]


def ranks(pulses):
    out = np.zeros(len(pulses), RANK_DTYPE)
    out["time"] = pulses["time"]
    out["endtime"] = ax.endtime(pulses)
    out["area_rank"][np.argsort(pulses["area"], kind="stable")] = np.arange(len(pulses))
    return out


class AreaRanks(ExhaustPlugin):
    """Rank of each pulse's area in the whole run: needs every pulse at once."""

    depends_on = "pulses"
    dtype = RANK_DTYPE
    calls = []

    def compute(self, pulses, start, end, chunk_i):
        AreaRanks.calls.append((start, end, chunk_i, len(pulses)))
        return ranks(pulses)


class RunSummary(ExhaustPlugin):
    """Multi-output, two input kinds: a one-item run summary and the ranks."""

    provides = ("run_summary", "summary_ranks")
    depends_on = ("pulses", "pulse_basics", "big_pulses")
    data_kind = {"run_summary": "run_summary", "summary_ranks": "pulses"}
    dtype = {"run_summary": SUMMARY_DTYPE, "summary_ranks": RANK_DTYPE}

    def compute(self, pulses, big_pulses, start, end):
        summary = np.zeros(1, SUMMARY_DTYPE)
        summary["time"], summary["endtime"] = start, end
        summary["n_pulses"] = len(pulses)
        summary["n_big"] = len(big_pulses)
        summary["max_area"] = pulses["area"].max()
        return {"run_summary": summary, "summary_ranks": ranks(pulses)}


EXHAUST_PLUGINS = [Pulses, PulseBasics, BigPulses, AreaRanks, RunSummary]


def ctx_for(bounds=()):
    return ax.Context(register=EXHAUST_PLUGINS, config={"chunk_bounds": tuple(bounds)})


@functools.cache
def single_chunk(target):
    """A target of the run in one chunk, made once per session (the reference)."""
    return ctx_for().get_array("r", list(target) if isinstance(target, tuple) else target)


def test_computes_once_on_the_whole_run():
    AreaRanks.calls.clear()
    ctx = ctx_for((25_000, 60_000, 90_000))
    assert len(list(ctx.get_iter("r", "pulses"))) == 4
    chunks = list(ctx.get_iter("r", "area_ranks"))
    assert AreaRanks.calls == [(0, 100_000, 0, 500)]
    assert [(c.start, c.end) for c in chunks] == [(0, 100_000)]
    np.testing.assert_array_equal(chunks[0].data, ranks(make_pulses(500)))


def test_multi_output_and_several_kinds():
    ctx = ctx_for((25_000, 60_000))
    summary = ctx.get_array("r", "run_summary")
    assert len(summary) == 1
    assert (summary["time"][0], summary["endtime"][0]) == (0, 100_000)
    assert summary["n_pulses"][0] == 500
    assert summary["n_big"][0] == len(ctx.get_array("r", "big_pulses"))
    np.testing.assert_array_equal(ctx.get_array("r", "summary_ranks"), ranks(make_pulses(500)))
    both = ctx.get_df("r", ["pulses", "area_ranks", "summary_ranks"])
    assert len(both) == 500 and "area_rank" in both


@settings(max_examples=15)
@given(chunk_boundaries())
def test_exhaust_is_chunking_independent(bounds):
    expected = {t: single_chunk(t) for t in ("run_summary", "summary_ranks")}
    ctx = ctx_for(bounds + bounds[:1])
    for target, data in expected.items():
        np.testing.assert_array_equal(ctx.get_array("r", target), data)


# ---------------------------------------------------------------------- the two ways to end
def _step(i, start, end, data, **flags):
    return Work(i, start, end, {"pulses": [("pulses", [data])]}, **flags)


def _plugin():
    plugin = AreaRanks()
    plugin.run_id = "r"

    class _Dep:
        def data_kind_for(self, dt):
            return "pulses"

        def dtype_for(self, dt):
            return Pulses.dtype

    plugin.deps = {"pulses": _Dep()}
    plugin._fix_declarations()
    return plugin


@pytest.mark.parametrize("ending", ["is_last", "flush"])
def test_last_step_or_flush_triggers_the_compute(ending):
    AreaRanks.calls.clear()
    pulses = make_pulses(500)
    t = pulses["time"]
    pieces = [pulses[t < 30_000], pulses[(t >= 30_000) & (t < 60_000)], pulses[t >= 60_000]]
    plugin = _plugin()
    assert plugin.process_work(_step(0, 0, 30_000, pieces[0])) == []
    assert plugin.process_work(_step(1, 30_000, 60_000, pieces[1])) == []
    if ending == "is_last":
        (out,) = plugin.process_work(_step(2, 60_000, 100_000, pieces[2], is_last=True))
    else:
        assert plugin.process_work(_step(2, 60_000, 100_000, pieces[2])) == []
        (out,) = plugin.process_work(_step(3, 100_000, 100_000, pulses[:0], is_last=True,
                                           flush=True))
    chunk = out["area_ranks"]
    assert (chunk.start, chunk.end) == (0, 100_000)
    np.testing.assert_array_equal(chunk.data, ranks(pulses))
    assert AreaRanks.calls == [(0, 100_000, 0, 500)]


def test_parallel_is_refused():
    class ParallelRanks(AreaRanks):
        parallel = True

    with pytest.raises(ax.InvalidConfiguration, match="ParallelRanks is an ExhaustPlugin, which "
                       "computes once on all its input and cannot be parallel"):
        ax.Context(register=[Pulses, ParallelRanks])


def test_compute_errors_name_the_plugin():
    class Broken(ExhaustPlugin):
        depends_on = "pulses"
        dtype = RANK_DTYPE

        def compute(self, pulses):
            raise ValueError(f"saw {len(pulses)} pulses")

    ctx = ax.Context(register=[Pulses, Broken], config={"chunk_bounds": (25_000, 60_000)})
    with pytest.raises(ax.PluginError, match=r"compute raised ValueError: saw 500 pulses "
                       r"\(plugin Broken"):
        ctx.get_array("r", "broken")


def test_wrong_output_is_caught():
    class Unsorted(ExhaustPlugin):
        depends_on = "pulses"
        dtype = RANK_DTYPE

        def compute(self, pulses):
            return ranks(pulses)[::-1].copy()

    ctx = ax.Context(register=[Pulses, Unsorted], config={"chunk_bounds": (25_000, 60_000)})
    with pytest.raises(ax.PluginGaveWrongOutput, match="not sorted by time"):
        ctx.get_array("r", "unsorted")
