"""MergeOnlyPlugin: the fields of several same-kind data types as one data type."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import chunk_boundaries
from toy_plugins import BigPulses, PulseBasics, Pulses

import asyncstrax as ax
from asyncstrax.chunk import merged_dtype
from asyncstrax.plugins.base import SaveWhen
from asyncstrax.plugins.cut import CutPlugin
from asyncstrax.plugins.merge_only import MergeOnlyPlugin


class CutBright(CutPlugin):
    depends_on = "pulses"

    def cut_by(self, pulses):
        return pulses["area"] > 10


class PulseInfo(MergeOnlyPlugin):
    depends_on = ("pulses", "pulse_basics", "cut_bright")


class JustPulses(MergeOnlyPlugin):
    depends_on = "pulses"


MERGE_PLUGINS = [Pulses, PulseBasics, BigPulses, CutBright, PulseInfo, JustPulses]


def ctx_for(bounds=()):
    return ax.Context(register=MERGE_PLUGINS, config={"chunk_bounds": tuple(bounds)})


@functools.cache
def single_chunk(target):
    """A target of the run in one chunk, made once per session (the reference)."""
    return ctx_for().get_array("r", list(target) if isinstance(target, tuple) else target)


def test_dtype_is_strax_merged_dtype_in_sorted_order():
    ctx = ctx_for()
    plugin = ctx.get_single_plugin("r", "pulse_info")
    deps = {dt: ctx.get_single_plugin("r", dt).dtype_for(dt) for dt in plugin.depends_on}
    # strax merges in the order of the sorted data type names
    assert plugin.dtype == merged_dtype([deps[d] for d in sorted(deps)])
    assert plugin.dtype.names[:3] == ("time", "endtime", "cut_bright")
    assert set(plugin.dtype.names) == {n for d in deps.values() for n in d.names}
    assert plugin.data_kind == "pulses"
    assert plugin.save_when == SaveWhen.EXPLICIT
    assert ctx.get_single_plugin("r", "just_pulses").dtype == Pulses.dtype


def test_values_are_the_dependencies_values():
    ctx = ctx_for((25_000, 50_000, 75_000))
    merged = ctx.get_array("r", "pulse_info")
    assert merged.dtype == ctx.get_single_plugin("r", "pulse_info").dtype
    parts = ctx.get_array("r", ["pulses", "pulse_basics", "cut_bright"])
    for name in merged.dtype.names:
        np.testing.assert_array_equal(merged[name], parts[name])
    np.testing.assert_array_equal(ctx.get_array("r", "just_pulses"), ctx.get_array("r", "pulses"))


@settings(max_examples=15)
@given(chunk_boundaries())
def test_merge_is_chunking_independent(bounds):
    expected = single_chunk("pulse_info")
    np.testing.assert_array_equal(ctx_for(bounds + bounds[:1]).get_array("r", "pulse_info"),
                                  expected)


def test_several_kinds_are_refused():
    class Mixed(MergeOnlyPlugin):
        depends_on = ("pulses", "big_pulses")

    ctx = ax.Context(register=[*MERGE_PLUGINS, Mixed])
    with pytest.raises(ax.InvalidConfiguration, match=r"Mixed is a MergeOnlyPlugin, which merges "
                       r"data of one kind, but its dependencies are of several kinds"):
        ctx.get_array("r", "mixed")


def test_nothing_to_merge():
    class Empty(MergeOnlyPlugin):
        pass

    ctx = ax.Context(register=[*MERGE_PLUGINS, Empty])
    with pytest.raises(ax.InvalidConfiguration, match="MergeOnlyPlugin without dependencies"):
        ctx.get_array("r", "empty")
