"""LoopPlugin: per base item, the other kinds' items fully contained in / touching it."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import chunk_boundaries, interval_arrays
from toy_plugins import BigPulses, PulseBasics, Pulses

import asyncstrax as ax
from asyncstrax.plugins.base import Work
from asyncstrax.plugins.loop import (
    ItemGroups,
    LoopPlugin,
    fully_contained_in,
    split_by_containment,
    touching_windows,
)

CLUSTER_DTYPE = [
    (("Start time", "time"), np.int64),
    (("End time", "endtime"), np.int64),
    (("Big pulses in the cluster", "n_big"), np.int32),
]


class BigClusters(ax.Plugin):
    """Disjoint intervals: clusters of overlapping big pulses (a base kind to loop over)."""

    provides = "big_clusters"
    depends_on = "big_pulses"
    data_kind = "big_clusters"
    dtype = CLUSTER_DTYPE

    def compute(self, big_pulses):
        return clusters_of(big_pulses)


def clusters_of(items):
    if not len(items):
        return np.zeros(0, CLUSTER_DTYPE)
    t, e = items["time"], ax.endtime(items)
    reach = np.maximum.accumulate(e)
    first = np.flatnonzero(np.r_[True, reach[:-1] <= t[1:]])
    last = np.r_[first[1:], len(items)] - 1
    out = np.zeros(len(first), CLUSTER_DTYPE)
    out["time"] = t[first]
    out["endtime"] = reach[last]
    out["n_big"] = last - first + 1
    return out


CONTENT_DTYPE = [
    (("Start time", "time"), np.int64),
    (("End time", "endtime"), np.int64),
    (("Pulses", "n_pulses"), np.int32),
    (("Summed channel numbers", "channel_sum"), np.int64),
    (("Largest area", "max_area"), np.float32),
]


def content_row(pulses):
    return dict(
        n_pulses=len(pulses),
        channel_sum=int(pulses["channel"].sum()),
        max_area=pulses["area"].max() if len(pulses) else 0,
    )


class ClusterContents(LoopPlugin):
    """Pulses fully contained in each cluster (time/endtime left to the LoopPlugin)."""

    depends_on = ("big_clusters", "pulses", "pulse_basics")
    dtype = CONTENT_DTYPE

    def compute_loop(self, cluster, pulses):
        assert isinstance(cluster, np.void)
        assert "area_per_sample" in pulses.dtype.names  # same-kind inputs arrive merged
        return content_row(pulses)


class ClusterContentsVec(LoopPlugin):
    """The same, vectorized: compute_loop is never called."""

    depends_on = ("big_clusters", "pulses")
    dtype = CONTENT_DTYPE

    def compute_loop(self, cluster, pulses):  # pragma: no cover - must not run
        raise AssertionError("the vectorized path must be used")

    def compute_loop_vectorized(self, big_clusters, pulses):
        assert isinstance(pulses, ItemGroups) and len(pulses) == len(big_clusters)
        return dict(
            n_pulses=pulses.counts,
            channel_sum=pulses.reduce(pulses.data["channel"].astype(np.int64)),
            max_area=pulses.reduce("area", np.maximum, empty=0),
        )


class ClusterTouching(LoopPlugin):
    """Pulses touching each cluster (an item may go to several clusters)."""

    depends_on = ("big_clusters", "pulses")
    time_selection = "touching"
    dtype = CONTENT_DTYPE

    def compute_loop(self, cluster, pulses):
        return dict(time=cluster["time"], endtime=cluster["endtime"], **content_row(pulses))


class ClusterSplit(LoopPlugin):
    """Multi-output, with the base kind not first in depends_on (loop_over declared)."""

    provides = ("cluster_counts", "cluster_extremes")
    depends_on = ("pulses", "big_clusters")
    loop_over = "big_clusters"
    dtype = {
        "cluster_counts": [("time", np.int64), ("endtime", np.int64), ("n_pulses", np.int32)],
        "cluster_extremes": [("time", np.int64), ("endtime", np.int64),
                             ("first_channel", np.int16), ("max_area", np.float32)],
    }

    def compute_loop(self, big_clusters, pulses):
        return {
            "cluster_counts": dict(n_pulses=len(pulses)),
            "cluster_extremes": dict(
                first_channel=pulses["channel"][0] if len(pulses) else -1,
                max_area=pulses["area"].max() if len(pulses) else 0,
            ),
        }


LOOP_PLUGINS = [Pulses, PulseBasics, BigPulses, BigClusters, ClusterContents,
                ClusterContentsVec, ClusterTouching, ClusterSplit]
CLUSTER_TARGETS = ["big_clusters", "cluster_contents", "cluster_contents_vec",
                   "cluster_touching", "cluster_counts", "cluster_extremes"]


# ---------------------------------------------------------------------- references
def strax_fully_contained(things, containers):
    """strax's pointer walk, written out (the behaviour we must reproduce)."""
    result = -np.ones(len(things), dtype=np.int64)
    a_ends, b_ends = ax.endtime(things), ax.endtime(containers)
    b_i = 0
    for a_i in range(len(things)):
        while b_i < len(containers) and b_ends[b_i] <= things["time"][a_i]:
            b_i += 1
        if b_i == len(containers):
            break
        if containers["time"][b_i] <= things["time"][a_i] and a_ends[a_i] <= b_ends[b_i]:
            result[a_i] = b_i
    return result


def strax_touching(things, containers, window=0):
    result = np.zeros((len(containers), 2), dtype=np.int64)
    if not len(things) or not len(containers):
        return result
    t_end, c_end = ax.endtime(things), ax.endtime(containers)
    left = right = 0
    for i, t0 in enumerate(containers["time"]):
        while left < len(things) and t_end[left] <= t0 - window:
            left += 1
        result[i, 0] = left
    for i in np.argsort(c_end, kind="mergesort"):
        while right < len(things) and things["time"][right] < c_end[i] + window:
            right += 1
        result[i, 1] = right
    return result


def reference(pulses, clusters, selection):
    rows = np.zeros(len(clusters), CONTENT_DTYPE)
    rows["time"] = clusters["time"]
    rows["endtime"] = clusters["endtime"]
    which = strax_fully_contained(pulses, clusters)
    windows = strax_touching(pulses, clusters)
    for i in range(len(clusters)):
        sel = pulses[which == i] if selection == "fully_contained" else pulses[
            windows[i, 0]:windows[i, 1]]
        for k, v in content_row(sel).items():
            rows[k][i] = v
    return rows


def run(bounds=(), targets="cluster_contents", **config):
    ctx = ax.Context(register=LOOP_PLUGINS, config={"chunk_bounds": tuple(bounds), **config})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the touching-selection warning
        return ctx.get_array("r", targets)


@functools.cache
def single_chunk_clusters():
    return run((), CLUSTER_TARGETS)


# ---------------------------------------------------------------------- selections
@settings(max_examples=200)
@given(interval_arrays(max_items=30), interval_arrays(max_items=8))
def test_selections_match_strax_algorithms(things, containers):
    np.testing.assert_array_equal(fully_contained_in(things, containers),
                                  strax_fully_contained(things, containers))
    for window in (0, 5, -1):
        np.testing.assert_array_equal(touching_windows(things, containers, window),
                                      strax_touching(things, containers, window))


@settings(max_examples=100)
@given(interval_arrays(max_items=30), interval_arrays(max_items=8))
def test_split_by_containment_groups(things, containers):
    # containers made disjoint, as a LoopPlugin's base
    containers = clusters_of(containers)
    groups = split_by_containment(things, containers)
    which = strax_fully_contained(things, containers)
    assert len(groups) == len(containers)
    for i, group in enumerate(groups):
        np.testing.assert_array_equal(group, things[which == i])
    np.testing.assert_array_equal(groups.counts, [np.sum(which == i) for i in range(len(groups))])
    base_i, item_i = groups.owner()
    np.testing.assert_array_equal(base_i, which[which >= 0])
    np.testing.assert_array_equal(groups.data[item_i], things[which >= 0])
    sums = groups.reduce("value")
    np.testing.assert_array_equal(sums, [things["value"][which == i].sum()
                                         for i in range(len(groups))])
    maxima = groups.reduce("value", np.maximum, empty=-7)
    np.testing.assert_array_equal(
        maxima, [things["value"][which == i].max(initial=-7) if np.any(which == i) else -7
                 for i in range(len(groups))])


# ---------------------------------------------------------------------- behaviour
def test_fully_contained_and_touching_match_reference():
    pulses = run(targets=["pulses"])
    clusters = run(targets="big_clusters")
    assert len(clusters) > 20
    contents = run(targets="cluster_contents")
    expected = reference(pulses, clusters, "fully_contained")
    np.testing.assert_array_equal(contents, expected)
    assert contents["n_pulses"].sum() > len(clusters)  # more than the big pulses themselves
    touching = run(targets="cluster_touching")
    np.testing.assert_array_equal(touching, reference(pulses, clusters, "touching"))
    assert (touching["n_pulses"] >= contents["n_pulses"]).all()
    assert (touching["n_pulses"] > contents["n_pulses"]).any()


def test_vectorized_hook_gives_the_loop_result():
    both = run(targets=["cluster_contents", "cluster_contents_vec"])
    loop = run(targets="cluster_contents")
    vec = run(targets="cluster_contents_vec")
    np.testing.assert_array_equal(loop, vec)
    assert len(both) == len(loop)


def test_multi_output_and_loop_over_a_later_dependency():
    ctx = ax.Context(register=LOOP_PLUGINS)
    plugin = ctx.get_single_plugin("r", "cluster_counts")
    assert plugin.data_kind == {"cluster_counts": "big_clusters",
                                "cluster_extremes": "big_clusters"}
    merged = run(targets=["big_clusters", "cluster_counts", "cluster_extremes"])
    contents = run(targets="cluster_contents")
    np.testing.assert_array_equal(merged["n_pulses"], contents["n_pulses"])
    np.testing.assert_array_equal(merged["max_area"], contents["max_area"])
    assert (merged["first_channel"][merged["n_pulses"] > 0] >= 0).all()


def test_parallel_loop_plugin_in_a_thread_pool():
    class ParallelContents(ClusterContents):
        parallel = True

    plugins = [*LOOP_PLUGINS[:4], ParallelContents]
    ctx = ax.Context(register=plugins, max_workers=4,
                     config={"chunk_bounds": tuple(range(5_000, 100_000, 5_000))})
    np.testing.assert_array_equal(ctx.get_array("r", "parallel_contents"), run())


def test_touching_selection_warns():
    ctx = ax.Context(register=LOOP_PLUGINS)
    with pytest.warns(UserWarning, match="touching time selection"):
        ctx.get_array("r", "cluster_touching")


@settings(max_examples=25)
@given(chunk_boundaries())
def test_loop_plugins_are_chunking_independent(bounds):
    expected = single_chunk_clusters()
    got = run(bounds + bounds[:1], CLUSTER_TARGETS)  # a repeated bound: an empty chunk
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------- the fast path
def _synthetic(n_base, per_base):
    base = np.zeros(n_base, [("time", np.int64), ("endtime", np.int64)])
    base["time"] = np.arange(n_base) * 100
    base["endtime"] = base["time"] + 90
    things = np.zeros(n_base * per_base, [("time", np.int64), ("endtime", np.int64),
                                          ("v", np.int64)])
    things["time"] = np.repeat(base["time"], per_base) + np.tile(np.arange(per_base) * 20,
                                                                 n_base)
    things["endtime"] = things["time"] + 25  # the last of each base item sticks out
    things["v"] = np.arange(len(things))
    return base, things


class FastLoop(LoopPlugin):
    depends_on = ("base_items", "things")
    dtype = [("time", np.int64), ("endtime", np.int64), ("n", np.int32), ("v_sum", np.int64)]

    def compute_loop(self, base_item, things):  # pragma: no cover - must not run
        raise AssertionError

    def compute_loop_vectorized(self, base_items, things):
        return dict(n=things.counts, v_sum=things.reduce("v"))


def _direct_plugin(cls, base, things):
    """A configured plugin without a Context, fed one Work by hand."""
    plugin = cls()

    class _Dep:
        def __init__(self, kind, dtype):
            self.kind, self.dtype = kind, dtype

        def data_kind_for(self, dt):
            return self.kind

        def dtype_for(self, dt):
            return self.dtype

    plugin.deps = {"base_items": _Dep("base_items", base.dtype), "things": _Dep("things",
                                                                                 things.dtype)}
    plugin._fix_declarations()
    work = Work(0, 0, int(base["endtime"][-1]) + 100,
                {"base_items": [("base_items", [base])], "things": [("things", [things])]})
    return plugin, work


def test_vectorized_path_handles_1e5_items_without_a_python_loop():
    base, things = _synthetic(100_000, 5)
    plugin, work = _direct_plugin(FastLoop, base, things)

    def per_item(*args, **kwargs):
        raise AssertionError("the vectorized path must not call compute_loop per item")

    plugin.compute_loop = per_item
    (out,) = plugin.process_work(work)
    result = out["fast_loop"].data
    assert len(result) == 100_000
    assert (result["n"] == 4).all()  # the fifth thing of each base item is not contained
    v = things["v"].reshape(-1, 5)[:, :4].sum(axis=1)
    np.testing.assert_array_equal(result["v_sum"], v)
    np.testing.assert_array_equal(result["time"], base["time"])


def test_per_item_hook_over_1e5_items():
    # 1e5 base items through the per-item hook (the selection is made once per step).
    base, things = _synthetic(100_000, 2)

    class Counting(LoopPlugin):
        provides = "counting"
        depends_on = ("base_items", "things")
        dtype = [("time", np.int64), ("endtime", np.int64), ("n", np.int32)]

        def compute_loop(self, base_item, things):
            return {"n": len(things)}

    plugin, work = _direct_plugin(Counting, base, things)
    (out,) = plugin.process_work(work)
    assert (out["counting"].data["n"] == 2).all()


# ---------------------------------------------------------------------- errors
def test_overlapping_base_items_are_refused():
    class OverBig(LoopPlugin):
        depends_on = ("big_pulses", "pulses")
        dtype = CONTENT_DTYPE

        def compute_loop(self, big_pulse, pulses):
            return content_row(pulses)

    ctx = ax.Context(register=[*LOOP_PLUGINS, OverBig])
    with pytest.raises(ax.PluginError, match=r"loops over 'big_pulses', but its items overlap"
                       ) as info:
        ctx.get_array("r", "over_big")
    assert info.value.plugin == "OverBig"


def test_unknown_loop_over_kind():
    class Lost(LoopPlugin):
        depends_on = ("big_clusters", "pulses")
        loop_over = "events"
        dtype = CONTENT_DTYPE

    ctx = ax.Context(register=[*LOOP_PLUGINS, Lost])
    with pytest.raises(ax.InvalidConfiguration, match=r"loop_over of Lost is 'events', which is "
                       r"not the data kind of any of its inputs \['big_clusters', 'pulses'\]"):
        ctx.get_array("r", "lost")


def test_unknown_time_selection():
    class Odd(LoopPlugin):
        depends_on = ("big_clusters", "pulses")
        time_selection = "nearby"
        dtype = CONTENT_DTYPE

    ctx = ax.Context(register=[*LOOP_PLUGINS, Odd])
    with pytest.raises(ax.InvalidConfiguration, match="time_selection of Odd is 'nearby'"):
        ctx.get_array("r", "odd")


@pytest.mark.parametrize(
    "result, message",
    [
        ([1, 2], "compute_loop of Bad must return a dict of field values, got list"),
        ({"nope": 1}, r"returned field 'nope', which is not in the dtype of 'bad'"),
        ({"n_pulses": [1, 2]}, r"returned 'n_pulses' of shape \(2,\) for one big_clusters item"),
    ],
)
def test_wrong_compute_loop_results(result, message):
    class Bad(LoopPlugin):
        depends_on = ("big_clusters", "pulses")
        dtype = CONTENT_DTYPE

        def compute_loop(self, cluster, pulses):
            return result

    ctx = ax.Context(register=[*LOOP_PLUGINS, Bad])
    with pytest.raises(ax.PluginGaveWrongOutput, match=message) as info:
        ctx.get_array("r", "bad")
    assert info.value.plugin == "Bad"


def test_a_scalar_fills_an_array_field_as_in_strax():
    class Spread(LoopPlugin):
        depends_on = ("big_clusters", "pulses")
        dtype = [*CONTENT_DTYPE[:2], (("Per channel", "per_channel"), np.float64, (3,))]

        def compute_loop(self, cluster, pulses):
            value = np.nan if not len(pulses) else float(len(pulses))
            return dict(time=cluster["time"], endtime=cluster["endtime"], per_channel=value)

    class Short(Spread):
        def compute_loop(self, cluster, pulses):
            return dict(time=cluster["time"], endtime=cluster["endtime"], per_channel=[1, 2])

    out = ax.Context(register=[*LOOP_PLUGINS, Spread]).get_array("r", "spread")
    assert len(out) and out["per_channel"].shape == (len(out), 3)
    counts = out["per_channel"][:, 0]
    np.testing.assert_array_equal(out["per_channel"], np.repeat(counts[:, None], 3, axis=1))
    with pytest.raises(ax.PluginGaveWrongOutput, match=r"returned 'per_channel' of shape \(2,\) "
                       r"for one big_clusters item, but 'short' holds shape \(3,\)"):
        ax.Context(register=[*LOOP_PLUGINS, Short]).get_array("r", "short")


def test_wrong_multi_output_results():
    class BadSplit(ClusterSplit):
        def compute_loop(self, big_clusters, pulses):
            return {"cluster_counts": dict(n_pulses=len(pulses))}

    ctx = ax.Context(register=[*LOOP_PLUGINS, BadSplit])
    with pytest.raises(ax.PluginGaveWrongOutput, match=r"must return \{data_type: \{field: "
                       r"value\}\} for \['cluster_counts', 'cluster_extremes'\]"):
        ctx.get_array("r", "cluster_counts")


def test_wrong_vectorized_length():
    class BadVec(LoopPlugin):
        depends_on = ("big_clusters", "pulses")
        dtype = CONTENT_DTYPE

        def compute_loop_vectorized(self, big_clusters, pulses):
            return dict(n_pulses=np.zeros(len(big_clusters) + 1))

    ctx = ax.Context(register=[*LOOP_PLUGINS, BadVec])
    with pytest.raises(ax.PluginGaveWrongOutput, match=r"returned \d+ values of 'n_pulses' for "
                       r"\d+ big_clusters items"):
        ctx.get_array("r", "bad_vec")
