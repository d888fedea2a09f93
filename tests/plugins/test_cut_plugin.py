"""CutPlugin: one boolean per item, with a dtype derived as strax derives it."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import chunk_boundaries
from toy_plugins import BigPulses, PulseBasics, Pulses, make_pulses

import asyncstrax as ax
from asyncstrax.dtypes import time_fields
from asyncstrax.plugins.base import SaveWhen
from asyncstrax.plugins.cut import CutPlugin


class CutLargeArea(CutPlugin):
    """Uses two same-kind inputs (merged) and an option; default name and description."""

    depends_on = ("pulses", "pulse_basics")
    min_area_per_sample = ax.Config(default=0.5, type=float, help="threshold [PE/sample]")

    def cut_by(self, pulses):
        return pulses["area_per_sample"] > self.min_area_per_sample


class WideEnough(CutPlugin):
    """Declared name/description/provides; takes start, end and chunk_i like compute may."""

    provides = "cut_wide"
    depends_on = "pulses"
    cut_name = "cut_wide"
    cut_description = "At least 10 samples"
    seen = []

    def cut_by(self, pulses, start, end, chunk_i):
        WideEnough.seen.append((start, end, chunk_i))
        return pulses["length"] >= 10


class KwargsCut(CutPlugin):
    """strax's signature spelling: cut_by(self, **kwargs)."""

    depends_on = "big_pulses"

    def cut_by(self, **kwargs):
        return kwargs["big_pulses"]["channel"] % 2 == 0


class AlwaysTrue(CutPlugin):
    depends_on = "pulses"

    def cut_by(self, pulses):
        return True  # a scalar broadcasts, as numpy does in strax


CUT_PLUGINS = [Pulses, PulseBasics, BigPulses, CutLargeArea, WideEnough, KwargsCut, AlwaysTrue]


def ctx_for(bounds=(), **config):
    return ax.Context(register=CUT_PLUGINS, config={"chunk_bounds": tuple(bounds), **config})


@functools.cache
def single_chunk(target):
    """A target of the run in one chunk, made once per session (the reference)."""
    return ctx_for().get_array("r", list(target) if isinstance(target, tuple) else target)


def test_dtype_and_defaults_as_strax():
    ctx = ctx_for()
    plugin = ctx.get_single_plugin("r", "cut_large_area")
    assert plugin.cut_name == "cut_large_area"
    assert plugin.cut_description == "cut large area"  # "cut_" in the name: spaces
    assert plugin.save_when == SaveWhen.TARGET
    expected = np.dtype([*time_fields, (("cut large area", "cut_large_area"), bool)])
    assert plugin.dtype == expected
    assert plugin.data_kind == "pulses"
    always = ctx.get_single_plugin("r", "always_true")
    assert always.cut_description == "Cut by always_true"  # no "cut_": "Cut by <name>"
    wide = ctx.get_single_plugin("r", "cut_wide")
    assert wide.dtype.names == ("time", "endtime", "cut_wide")
    assert wide.dtype.fields["cut_wide"][2] == "At least 10 samples"
    info = ctx.data_info("cut_wide")
    assert list(info["Field name"]) == ["time", "endtime", "cut_wide"]


def test_cut_values_and_time_fields():
    pulses = make_pulses(500)
    ctx = ctx_for(min_area_per_sample=0.7)
    cut = ctx.get_array("r", "cut_large_area")
    np.testing.assert_array_equal(cut["time"], pulses["time"])
    np.testing.assert_array_equal(cut["endtime"], ax.endtime(pulses))
    np.testing.assert_array_equal(cut["cut_large_area"],
                                  pulses["area"] / pulses["length"] > 0.7)
    assert 0 < cut["cut_large_area"].sum() < len(pulses)


def test_start_end_chunk_i_and_kwargs_spelling():
    WideEnough.seen.clear()
    ctx = ctx_for((30_000, 60_000))
    wide = ctx.get_array("r", "cut_wide")
    seen = WideEnough.seen
    assert len(seen) >= 2 and [s[2] for s in seen] == list(range(len(seen)))
    assert seen[0][0] == 0 and seen[-1][1] == 100_000
    assert all(a[1] == b[0] for a, b in zip(seen[:-1], seen[1:]))
    np.testing.assert_array_equal(wide["cut_wide"], make_pulses(500)["length"] >= 10)
    big = ctx.get_array("r", "big_pulses")
    kw = ctx.get_array("r", "kwargs_cut")
    assert len(kw) == len(big)
    np.testing.assert_array_equal(kw["kwargs_cut"], big["channel"] % 2 == 0)
    assert ctx.get_array("r", "always_true")["always_true"].all()


def test_cut_loads_with_its_data():
    df = ctx_for().get_df("r", ["pulses", "cut_large_area", "cut_wide"])
    assert {"area", "cut_large_area", "cut_wide"} <= set(df.columns)
    assert len(df) == 500
    selected = df[df["cut_large_area"] & df["cut_wide"]]
    assert 0 < len(selected) < 500


@settings(max_examples=15)
@given(chunk_boundaries())
def test_cuts_are_chunking_independent(bounds):
    targets = ("cut_large_area", "cut_wide", "always_true")
    expected = single_chunk(targets)
    got = ctx_for(bounds + bounds[:1]).get_array("r", list(targets))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(ctx_for(bounds).get_array("r", "kwargs_cut"),
                                  single_chunk("kwargs_cut"))


def test_cut_of_wrong_length_names_the_plugin():
    class ShortCut(CutPlugin):
        depends_on = "pulses"

        def cut_by(self, pulses):
            return np.ones(len(pulses) - 1, bool)

    ctx = ax.Context(register=[*CUT_PLUGINS, ShortCut])
    with pytest.raises(ax.PluginGaveWrongOutput,
                       match=r"cut_by of ShortCut gave 499 values for 500 items of 'pulses'; "
                             r"a cut gives one boolean per item \(plugin ShortCut") as info:
        ctx.get_array("r", "short_cut")
    assert info.value.plugin == "ShortCut"
    assert info.value.chunk_i == 0


def test_cut_of_wrong_shape():
    class SquareCut(CutPlugin):
        depends_on = "pulses"

        def cut_by(self, pulses):
            return np.ones((len(pulses), 2), bool)

    ctx = ax.Context(register=[*CUT_PLUGINS, SquareCut])
    with pytest.raises(ax.PluginGaveWrongOutput, match=r"gave values of shape \(500, 2\)"):
        ctx.get_array("r", "square_cut")


def test_cut_must_take_start_with_end():
    with pytest.raises(ax.InvalidConfiguration, match="takes only one of start and end"):
        class HalfCut(CutPlugin):  # noqa: F841
            depends_on = "pulses"

            def cut_by(self, pulses, start):
                return True


def test_multi_output_cut_is_refused():
    class TwoCuts(CutPlugin):
        provides = ("cut_a", "cut_b")
        depends_on = "pulses"

        def cut_by(self, pulses):
            return True

    ctx = ax.Context(register=[*CUT_PLUGINS, TwoCuts])
    with pytest.raises(ax.InvalidConfiguration, match=r"TwoCuts is a CutPlugin, which provides "
                       r"one data type, not \['cut_a', 'cut_b'\]"):
        ctx.get_array("r", "cut_a")


def test_cut_of_a_kind_it_does_not_read():
    class Elsewhere(CutPlugin):
        depends_on = "pulses"
        data_kind = "events"

        def cut_by(self, pulses):
            return True

    ctx = ax.Context(register=[*CUT_PLUGINS, Elsewhere])
    with pytest.raises(ax.InvalidConfiguration, match="of data kind 'events', which is not the "
                       r"kind of any of its inputs \['pulses'\]"):
        ctx.get_array("r", "elsewhere")
