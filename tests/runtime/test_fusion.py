"""Chains of parallel plugins run fused: same output, one component, errors name the inner
plugin; data types someone else needs stay separate."""

from __future__ import annotations

import numpy as np
import pytest
from toy_plugins import PulseBasics, Pulses

import asyncstrax as ax

BOUNDS = {"chunk_bounds": (10_000, 25_000, 60_000, 65_000, 90_000)}


class ParallelBasics(PulseBasics):
    parallel = True


class Scaled(ax.Plugin):
    provides = "scaled"
    depends_on = "pulse_basics"
    parallel = True
    dtype = [("time", np.int64), ("endtime", np.int64), ("twice", np.float64)]

    def compute(self, pulses):
        out = np.zeros(len(pulses), self.dtype)
        out["time"], out["endtime"] = pulses["time"], pulses["endtime"]
        out["twice"] = 2 * pulses["area_per_sample"]
        return out


class ProcessBasics(ParallelBasics):
    parallel = "process"


class ProcessScaled(Scaled):
    parallel = "process"


class FailingScaled(Scaled):
    def compute(self, pulses, chunk_i):
        if chunk_i == 3:
            raise ZeroDivisionError("bad scale")
        return super().compute(pulses)


def run(plugins, fuse=True, **kwargs):
    ctx = ax.Context(register=[Pulses, *plugins], config=BOUNDS, fuse_parallel=fuse, **kwargs)
    try:
        return ctx.get_array("r", "scaled"), ctx
    finally:
        ctx.close()


def test_fused_chain_gives_the_same_output_as_separate_plugins():
    fused, ctx = run([ParallelBasics, Scaled], max_workers=2)
    separate, ctx2 = run([ParallelBasics, Scaled], fuse=False, max_workers=2)
    np.testing.assert_array_equal(fused, separate)
    assert [c.name for c in ctx.last_summary.components] == ["Pulses", "ParallelBasics+Scaled"]
    assert [c.name for c in ctx2.last_summary.components] == ["Pulses", "ParallelBasics",
                                                              "Scaled"]
    one_worker, ctx3 = run([ParallelBasics, Scaled])  # one worker: plugins stay separate
    np.testing.assert_array_equal(one_worker, separate)
    assert len(ctx3.last_summary.components) == 3


def test_fused_chain_in_worker_processes():
    separate, _ = run([ParallelBasics, Scaled], fuse=False)
    fused, ctx = run([ProcessBasics, ProcessScaled], max_workers=2)
    np.testing.assert_array_equal(fused, separate)
    (chain,) = [c for c in ctx.last_summary.components if "+" in c.name]
    assert chain.name == "ProcessBasics+ProcessScaled"


def test_an_error_inside_a_fused_chain_names_the_inner_plugin():
    with pytest.raises(ax.PluginError) as info:
        run([ParallelBasics, FailingScaled], max_workers=2)
    message = str(info.value)
    assert "plugin FailingScaled" in message and "chunk 3" in message
    assert "ZeroDivisionError: bad scale" in message


class Halved(Scaled):
    provides = "halved"
    dtype = [("time", np.int64), ("endtime", np.int64), ("half", np.float64)]

    def compute(self, pulses):
        out = np.zeros(len(pulses), self.dtype)
        out["time"], out["endtime"] = pulses["time"], pulses["endtime"]
        out["half"] = pulses["area_per_sample"] / 2
        return out


def test_data_types_others_need_are_not_fused():
    ctx = ax.Context(register=[Pulses, ParallelBasics, Scaled, Halved], config=BOUNDS,
                     max_workers=2)

    def names(targets):
        return sorted(p.name for p in ctx.pipeline("r", targets).plugins)

    assert names("scaled") == ["ParallelBasics+Scaled", "Pulses"]
    assert names("pulse_basics") == ["ParallelBasics", "Pulses"]  # a target stays visible
    # read by two plugins in one request: pulse_basics must reach both
    assert names(["scaled", "halved"]) == ["Halved", "ParallelBasics", "Pulses", "Scaled"]
    both = ctx.get_array("r", ["scaled", "halved"])
    np.testing.assert_allclose(both["twice"], 4 * both["half"])
