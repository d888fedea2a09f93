"""Regression: inputs (or targets) of one kind whose chunkings differ, so a step can hold
no item of one data type while its chunk goes on past the step's end."""

from __future__ import annotations

import numpy as np
from toy_plugins import Pulses

import asyncstrax as ax
from asyncstrax.plugins.overlap_window import OverlapWindowPlugin


class Late(OverlapWindowPlugin):
    """Same kind as pulses, chunked differently (results held back a window)."""

    depends_on = "pulses"
    dtype = [("time", np.int64), ("endtime", np.int64), ("late", np.int32)]

    def get_window_size(self):
        return 1_000

    def compute(self, pulses):
        out = np.zeros(len(pulses), self.dtype)
        out["time"] = pulses["time"]
        out["endtime"] = pulses["time"] + 1
        return out


class Both(ax.Plugin):
    """Reads two same-kind inputs of different chunkings."""

    depends_on = ("pulses", "late")
    dtype = [("time", np.int64), ("endtime", np.int64), ("area", np.float32)]

    def compute(self, pulses):
        out = np.zeros(len(pulses), self.dtype)
        out["time"] = pulses["time"]
        out["endtime"] = pulses["time"] + 1
        out["area"] = pulses["area"]
        return out


def ctx():
    # A first chunk [0, 1) of pulses holds nothing; late's first chunk runs past 1.
    return ax.Context(register=[Pulses, Late, Both], config={"chunk_bounds": (1,)})




def test_same_kind_targets_of_different_chunkings():
    assert len(ctx().get_array("r", ["pulses", "late"])) == 500


def test_same_kind_inputs_of_different_chunkings():
    assert len(ctx().get_array("r", "both")) == 500


def test_each_alone_is_fine():
    c = ctx()
    assert len(c.get_array("r", "pulses")) == len(c.get_array("r", "late")) == 500
