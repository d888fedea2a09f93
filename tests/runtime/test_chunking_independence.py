"""The central property: a pipeline's output does not depend on how its inputs were chunked,
nor on the channel capacity (hypothesis draws both, empty chunks included)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from strategies import capacities, chunk_boundaries
from toy_plugins import TOY_PLUGINS, reference_neighbours

import asyncstrax as ax


def neighbours(bounds, capacity):
    ctx = ax.Context(register=TOY_PLUGINS, channel_capacity_bytes=capacity)
    ctx.set_config({"chunk_bounds": tuple(bounds)})
    return ctx.get_array("run0", "big_pulse_neighbours"), ctx


def test_single_chunk_matches_reference():
    result, _ = neighbours((), 10**6)
    expected = reference_neighbours()
    assert len(expected) > 10
    np.testing.assert_array_equal(result, expected)


@settings(max_examples=40)
@given(chunk_boundaries(), capacities())
def test_output_independent_of_chunking_and_capacity(bounds, capacity):
    result, ctx = neighbours(bounds + bounds[:2], capacity)  # repeated bounds: empty chunks
    np.testing.assert_array_equal(result, reference_neighbours())


@settings(max_examples=15)
@given(chunk_boundaries())
def test_same_kind_targets_merge_identically(bounds):
    ctx = ax.Context(register=TOY_PLUGINS, config={"chunk_bounds": tuple(bounds)})
    merged = ctx.get_array("run0", ["pulses", "pulse_basics"])
    ref_ctx = ax.Context(register=TOY_PLUGINS)
    pulses = ref_ctx.get_array("run0", "pulses")
    basics = ref_ctx.get_array("run0", "pulse_basics")
    # strax's order: fields by data type name ("pulse_basics" < "pulses"), first seen wins
    assert merged.dtype.names == (*basics.dtype.names, *[
        n for n in pulses.dtype.names if n not in basics.dtype.names])
    np.testing.assert_array_equal(merged["time"], pulses["time"])
    np.testing.assert_array_equal(merged["area"], pulses["area"])
