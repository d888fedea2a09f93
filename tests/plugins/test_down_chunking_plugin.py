"""DownChunkingPlugin: compute yields several contiguous chunks covering its input range."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import chunk_boundaries
from toy_plugins import Pulses, make_pulses

import asyncstrax as ax
from asyncstrax.plugins.down_chunking import DownChunkingPlugin

SLICE_DTYPE = [("time", np.int64), ("endtime", np.int64), ("area", np.float32)]


def slices(data, start, end, step):
    """(t0, t1, items) pieces of [start, end) about `step` long, cut where nothing straddles."""
    t = start
    while t < end:
        left, data, t_split = ax.split_array(data, min(t + step, end), allow_early_split=True)
        if t_split <= t:  # a long item: take up to the next clean point
            left, data, t_split = data, data[:0], end
            reach = np.maximum.accumulate(ax.endtime(left)) if len(left) else left
            later = np.flatnonzero((left["time"][1:] >= reach[:-1]) & (left["time"][1:] > t))
            if len(later):
                k = int(later[0]) + 1
                left, data, t_split = left[:k], left[k:], int(left["time"][k])
        yield t, t_split, left
        t = t_split


def as_slices(pulses):
    out = np.zeros(len(pulses), SLICE_DTYPE)
    out["time"] = pulses["time"]
    out["endtime"] = ax.endtime(pulses)
    out["area"] = pulses["area"]
    return out


class PulseSlices(DownChunkingPlugin):
    """Re-emits pulses in pieces of at most ~slice_ns."""

    depends_on = "pulses"
    dtype = SLICE_DTYPE
    slice_ns = ax.Config(default=7_000, type=int, help="target piece duration [ns]")

    def compute(self, pulses, start, end):
        for t0, t1, part in slices(as_slices(pulses), start, end, self.slice_ns):
            yield self.chunk(start=t0, end=t1, data=part)


class SplitSlices(DownChunkingPlugin):
    """Multi-output: bright and dim pulses, in pieces."""

    provides = ("bright_slices", "dim_slices")
    depends_on = "pulses"
    data_kind = {"bright_slices": "bright", "dim_slices": "dim"}
    dtype = {"bright_slices": SLICE_DTYPE, "dim_slices": SLICE_DTYPE}

    def compute(self, pulses, start, end):
        for t0, t1, part in slices(as_slices(pulses), start, end, 13_000):
            yield {
                "bright_slices": self.chunk(start=t0, end=t1, data=part[part["area"] > 10],
                                            data_type="bright_slices"),
                "dim_slices": self.chunk(start=t0, end=t1, data=part[part["area"] <= 10],
                                         data_type="dim_slices"),
            }


DOWN_PLUGINS = [Pulses, PulseSlices, SplitSlices]


def ctx_for(bounds=(), plugins=DOWN_PLUGINS, **config):
    return ax.Context(register=plugins, config={"chunk_bounds": tuple(bounds), **config})


@functools.cache
def single_chunk(target):
    """A target of the run in one chunk, made once per session (the reference)."""
    return ctx_for().get_array("r", list(target) if isinstance(target, tuple) else target)


def test_yields_several_chunks_per_input_chunk():
    ctx = ctx_for((25_000, 60_000, 90_000))  # clean cut points
    n_in = len(list(ctx.get_iter("r", "pulses")))
    chunks = list(ctx.get_iter("r", "pulse_slices"))
    assert n_in == 4 and len(chunks) >= 100_000 // 7_000 > n_in
    assert chunks[0].start == 0 and chunks[-1].end == 100_000
    assert all(a.end == b.start for a, b in zip(chunks[:-1], chunks[1:]))
    assert max(c.end - c.start for c in chunks) <= 7_000 + 1_000
    data = np.concatenate([c.data for c in chunks])
    np.testing.assert_array_equal(data, as_slices(make_pulses(500)))


def test_multi_output():
    ctx = ctx_for()
    bright = ctx.get_array("r", "bright_slices")
    dim = ctx.get_array("r", "dim_slices")
    pulses = as_slices(make_pulses(500))
    np.testing.assert_array_equal(bright, pulses[pulses["area"] > 10])
    np.testing.assert_array_equal(dim, pulses[pulses["area"] <= 10])
    assert len(list(ctx.get_iter("r", "bright_slices"))) > 5


@settings(max_examples=15)
@given(chunk_boundaries())
def test_down_chunking_is_chunking_independent(bounds):
    expected = {t: single_chunk(t) for t in ("pulse_slices", "dim_slices")}
    ctx = ctx_for(bounds + bounds[:1], slice_ns=3_000)
    for target, data in expected.items():
        np.testing.assert_array_equal(ctx.get_array("r", target), data)


# ---------------------------------------------------------------------- errors
def failing(compute, provides="bad_slices", **attrs):
    attrs = dict(dict(provides=provides, depends_on="pulses", dtype=SLICE_DTYPE), **attrs)
    cls = type("BadSlices", (DownChunkingPlugin,), dict(compute=compute, **attrs))
    return ctx_for((50_000,), plugins=[Pulses, cls])


def expect_wrong(ctx, message, target="bad_slices"):
    with pytest.raises(ax.PluginGaveWrongOutput, match=message) as info:
        ctx.get_array("r", target)
    assert info.value.plugin == "BadSlices"
    return info.value


def test_compute_must_be_a_generator():
    def compute(self, pulses):
        return as_slices(pulses)

    expect_wrong(failing(compute), r"BadSlices is a DownChunkingPlugin: compute must be a "
                 r"generator yielding chunks .* but it returned ndarray")


def test_gap_between_chunks():
    def compute(self, pulses, start, end):
        mid = (start + end) // 2
        yield self.chunk(start=start, end=mid - 10, data=None)
        yield self.chunk(start=mid, end=end, data=None)

    error = expect_wrong(failing(compute), r"yielded chunk 1 of 'bad_slices' covers "
                         r"\[\d+, \d+\), but it must start at the end of the previous chunk")
    assert error.chunk_i == 0


def test_chunks_must_start_at_the_step_start():
    def compute(self, pulses, start, end):
        yield self.chunk(start=start + 1, end=end, data=None)

    expect_wrong(failing(compute), r"yielded chunk 0 of 'bad_slices' covers \[1, \d+\), but it "
                 r"must start at the step's start \(0\)")


def test_chunks_must_cover_the_step():
    def compute(self, pulses, start, end):
        yield self.chunk(start=start, end=end - 5, data=None)

    expect_wrong(failing(compute), r"the chunks yielded for 'bad_slices' cover \[0, \d+\), but "
                 r"the input covers \[0, \d+\)")


def test_chunks_must_not_pass_the_step_end():
    def compute(self, pulses, start, end):
        yield self.chunk(start=start, end=end + 5, data=None)

    expect_wrong(failing(compute), r"must start at the step's start \(0\) and end by the step's "
                 r"end")


def test_an_empty_generator_covers_nothing():
    def compute(self, pulses):
        yield from ()

    expect_wrong(failing(compute), r"cover \[0, 0\), but the input covers")


def test_must_yield_chunks():
    def compute(self, pulses):
        yield as_slices(pulses)

    expect_wrong(failing(compute), r"yielded ndarray for 'bad_slices'; a DownChunkingPlugin "
                 r"yields chunks made with self.chunk")


def test_multi_output_must_yield_dicts_of_every_type():
    def compute(self, pulses, start, end):
        yield {"a": self.chunk(start=start, end=end, data=None, data_type="a")}

    ctx = failing(compute, provides=("a", "b"), dtype={"a": SLICE_DTYPE, "b": SLICE_DTYPE})
    expect_wrong(ctx, r"yielded a dict with keys \['a'\]; each yield must hold a chunk of every "
                 r"provided data type \['a', 'b'\]", target="a")

    def compute_plain(self, pulses, start, end):
        yield self.chunk(start=start, end=end, data=None, data_type="a")

    ctx = failing(compute_plain, provides=("a", "b"), dtype={"a": SLICE_DTYPE, "b": SLICE_DTYPE})
    expect_wrong(ctx, r"is multi-output, so compute must yield dicts", target="b")


def test_parallel_is_refused():
    class Parallel(PulseSlices):
        parallel = True

    with pytest.raises(ax.InvalidConfiguration, match=r"Parallel is a DownChunkingPlugin, which "
                       r"cannot be parallel"):
        ax.Context(register=[Pulses, Parallel])


def test_compute_errors_propagate_with_context():
    def compute(self, pulses):
        yield from ()
        raise ZeroDivisionError("boom")

    ctx = failing(compute)
    with pytest.raises(ax.PluginError, match=r"compute raised ZeroDivisionError: boom "
                       r"\(plugin BadSlices"):
        ctx.get_array("r", "bad_slices")
