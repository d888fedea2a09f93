"""How compute is called (``**kwargs`` as in strax) and what ``self.chunk`` accepts."""

from __future__ import annotations

import numpy as np
import pytest
from toy_plugins import TOY_PLUGINS, BigPulseNeighbours

import asyncstrax as ax
from asyncstrax.plugins.cut import CutPlugin

TITLED = [(("Start time", "time"), np.int64), (("End time", "endtime"), np.int64)]
PLAIN = np.dtype([("time", np.int64), ("endtime", np.int64)])


# ---------------------------------------------------------------- self.chunk and field titles
class PlainSource(ax.Plugin):
    """Declares a titled dtype, builds its data with the title-less twin, calls self.chunk."""

    provides = "plain_source"
    depends_on = ()
    dtype = TITLED
    save_when = ax.SaveWhen.NEVER

    def is_ready(self, chunk_i):
        return chunk_i < 2

    def source_finished(self):
        return True

    def compute(self, chunk_i):
        d = np.zeros(1, PLAIN)
        d["time"], d["endtime"] = 100 * chunk_i + 10, 100 * chunk_i + 20
        return self.chunk(start=100 * chunk_i, end=100 * (chunk_i + 1), data=d)


def test_self_chunk_accepts_dtype_differing_only_in_titles():
    ctx = ax.Context(register=[PlainSource])
    out = ctx.get_array("r", "plain_source")
    assert out.dtype == np.dtype(TITLED)
    np.testing.assert_array_equal(out["time"], [10, 110])
    np.testing.assert_array_equal(out["endtime"], [20, 120])


def test_self_chunk_views_title_less_data_without_copy():
    plugin = ax.Context(register=[PlainSource]).get_single_plugin("r", "plain_source")
    d = np.zeros(3, PLAIN)
    d["time"], d["endtime"] = [1, 2, 3], [4, 5, 6]
    chunk = plugin.chunk(start=0, end=10, data=d)
    assert chunk.data.dtype == plugin.dtype  # the declared dtype, titles and all
    assert np.shares_memory(chunk.data, d)
    np.testing.assert_array_equal(chunk.data["endtime"], [4, 5, 6])


def test_self_chunk_still_refuses_other_dtypes():
    plugin = ax.Context(register=[PlainSource]).get_single_plugin("r", "plain_source")
    other = np.zeros(1, [("time", np.int64), ("endtime", np.int32)])
    with pytest.raises(ax.ChunkDtypeError, match="declares"):
        plugin.chunk(start=0, end=10, data=other)


# ---------------------------------------------------------------- compute(self, **kwargs)
class Neighbours(BigPulseNeighbours):
    """The same computation as BigPulseNeighbours, taking its inputs the strax **kwargs way."""

    seen: list = []

    def compute(self, **kwargs):
        type(self).seen.append(sorted(kwargs))
        return super().compute(kwargs["big_pulses"], kwargs["pulses"])


class NeighboursOneNamed(BigPulseNeighbours):
    """One kind by name, the other in **kwargs, plus start and end (named, so passed)."""

    seen: list = []

    def compute(self, big_pulses, start, end, **kwargs):
        type(self).seen.append((sorted(kwargs), start <= end))
        return super().compute(big_pulses, kwargs["pulses"])


class NeighboursChunkI(BigPulseNeighbours):
    seen: list = []

    def compute(self, chunk_i, **kwargs):
        type(self).seen.append((sorted(kwargs), chunk_i))
        return super().compute(kwargs["big_pulses"], kwargs["pulses"])


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        # strax passes one keyword per input kind, and nothing else to a bare **kwargs
        (Neighbours, ["big_pulses", "pulses"]),
        (NeighboursOneNamed, (["pulses"], True)),
        (NeighboursChunkI, (["big_pulses", "pulses"], 0)),
    ],
)
def test_compute_with_var_keyword_gets_one_keyword_per_kind(cls, expected):
    cls.seen.clear()
    ctx = ax.Context(register=[*TOY_PLUGINS[:3], cls])
    reference = ax.Context(register=TOY_PLUGINS).get_array("r", "big_pulse_neighbours")
    out = ctx.get_array("r", "big_pulse_neighbours")
    np.testing.assert_array_equal(out, reference)
    assert cls.seen and cls.seen[0] == expected


class NeighboursUnknownName(BigPulseNeighbours):
    def compute(self, peaks, **kwargs):  # 'peaks' is not an input kind
        raise AssertionError("not called")


def test_compute_with_var_keyword_and_unknown_name_is_refused():
    ctx = ax.Context(register=[*TOY_PLUGINS[:3], NeighboursUnknownName])
    with pytest.raises(ax.InvalidConfiguration, match=r"takes \['peaks'\]"):
        ctx.get_array("r", "big_pulse_neighbours")


class CutNamed(CutPlugin):
    """A cut_by naming one of two kinds: CutPlugin.compute takes **kwargs, cut_by does not."""

    depends_on = ("big_pulses", "pulse_basics")

    def cut_by(self, big_pulses):
        raise AssertionError("not called")


def test_cut_by_is_not_given_kinds_it_does_not_take():
    ctx = ax.Context(register=[*TOY_PLUGINS[:3], CutNamed])
    with pytest.raises(ax.InvalidConfiguration, match="takes"):
        ctx.get_array("r", "cut_named")
