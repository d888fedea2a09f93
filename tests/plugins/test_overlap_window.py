"""OverlapWindowPlugin computes as if there were no chunk breaks."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from strategies import chunk_boundaries
from toy_plugins import Pulses, make_pulses

import asyncstrax as ax
from asyncstrax.plugins.overlap_window import OverlapWindowPlugin

WINDOW = 2_000


class Neighbourhood(OverlapWindowPlugin):
    """For each pulse, how many pulses start within WINDOW ns of it (either side)."""

    provides = "neighbourhood"
    depends_on = "pulses"
    dtype = [("time", np.int64), ("endtime", np.int64), ("n_near", np.int32)]

    def get_window_size(self):
        return WINDOW

    def compute(self, pulses):
        t = pulses["time"]
        out = np.zeros(len(pulses), self.dtype)
        out["time"] = t
        out["endtime"] = t + 1
        lo = np.searchsorted(t, t - WINDOW, side="left")
        hi = np.searchsorted(t, t + WINDOW, side="right")
        out["n_near"] = hi - lo
        return out


def reference():
    t = make_pulses(500)["time"]
    return (np.searchsorted(t, t + WINDOW, side="right")
            - np.searchsorted(t, t - WINDOW, side="left"))


@settings(max_examples=30)
@given(chunk_boundaries())
def test_overlap_window_is_chunking_independent(bounds):
    ctx = ax.Context(register=[Pulses, Neighbourhood], config={"chunk_bounds": tuple(bounds)})
    result = ctx.get_array("r", "neighbourhood")
    assert len(result) == 500
    np.testing.assert_array_equal(result["n_near"], reference())
