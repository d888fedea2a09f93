"""The plugin family together: a small chain of every member, loaded as one data frame.

pulses -> big_pulses -> big_clusters (disjoint intervals, kind "clusters"), then of that kind:
cluster_contents (LoopPlugin: pulses inside each cluster), cut_crowded (CutPlugin),
cluster_isolation (OverlapWindowPlugin: gaps to the neighbouring clusters), cluster_info
(MergeOnlyPlugin), cluster_pieces (DownChunkingPlugin: small output chunks) and
cluster_ranks + run_totals (multi-output ExhaustPlugin: ranks over the whole run).
"""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import given, settings
from strategies import chunk_boundaries
from toy_plugins import BigPulses, PulseBasics, Pulses, make_pulses

import asyncstrax as ax
from asyncstrax.plugins.base import to_numpy_dtype
from asyncstrax.plugins.cut import CutPlugin
from asyncstrax.plugins.down_chunking import DownChunkingPlugin
from asyncstrax.plugins.exhaust import ExhaustPlugin
from asyncstrax.plugins.loop import LoopPlugin
from asyncstrax.plugins.merge_only import MergeOnlyPlugin
from asyncstrax.plugins.overlap_window import OverlapWindowPlugin

ISOLATION_WINDOW = 3_000


def clusters_of(items):
    dtype = to_numpy_dtype(BigClusters.dtype)
    if not len(items):
        return np.zeros(0, dtype)
    t, e = items["time"], ax.endtime(items)
    reach = np.maximum.accumulate(e)
    first = np.flatnonzero(np.r_[True, reach[:-1] <= t[1:]])
    last = np.r_[first[1:], len(items)] - 1
    out = np.zeros(len(first), dtype)
    out["time"], out["endtime"], out["n_big"] = t[first], reach[last], last - first + 1
    return out


class BigClusters(ax.Plugin):
    depends_on = "big_pulses"
    data_kind = "clusters"
    dtype = [*ax.time_fields, ("n_big", np.int32, "big pulses in the cluster")]

    def compute(self, big_pulses):
        return clusters_of(big_pulses)


class ClusterContents(LoopPlugin):
    depends_on = ("big_clusters", "pulses")
    dtype = [*ax.time_fields, ("n_pulses", np.int32, "pulses inside"),
             ("channel_sum", np.int64, "sum of their channels")]

    def compute_loop(self, cluster, pulses):
        return dict(n_pulses=len(pulses), channel_sum=pulses["channel"].sum())


class CutCrowded(CutPlugin):
    depends_on = "cluster_contents"
    min_pulses = ax.Config(default=3, type=int, help="pulses for a crowded cluster")

    def cut_by(self, cluster_contents):
        return cluster_contents["n_pulses"] >= self.min_pulses


class ClusterIsolation(OverlapWindowPlugin):
    depends_on = "big_clusters"
    dtype = [*ax.time_fields, ("gap_before", np.int64, "to the previous cluster, capped"),
             ("gap_after", np.int64, "to the next cluster, capped")]

    def get_window_size(self):
        return ISOLATION_WINDOW

    def compute(self, big_clusters):
        return isolation(big_clusters, self.dtype)


def isolation(clusters, dtype):
    out = np.zeros(len(clusters), to_numpy_dtype(dtype))
    out["time"], out["endtime"] = clusters["time"], clusters["endtime"]
    cap = ISOLATION_WINDOW
    gaps = clusters["time"][1:] - clusters["endtime"][:-1]
    out["gap_before"] = np.minimum(np.r_[cap, gaps], cap)
    out["gap_after"] = np.minimum(np.r_[gaps, cap], cap)
    return out


class ClusterInfo(MergeOnlyPlugin):
    depends_on = ("big_clusters", "cluster_contents", "cut_crowded")


class ClusterPieces(DownChunkingPlugin):
    depends_on = "cluster_info"
    dtype = [*ax.time_fields, ("weight", np.int64, "n_pulses * n_big")]

    def compute(self, cluster_info, start, end):
        out = np.zeros(len(cluster_info), self.dtype)
        out["time"], out["endtime"] = cluster_info["time"], cluster_info["endtime"]
        out["weight"] = cluster_info["n_pulses"].astype(np.int64) * cluster_info["n_big"]
        t = start
        while t < end:
            left, out, t_next = ax.split_array(out, min(t + 4_000, end), allow_early_split=True)
            if t_next <= t:  # cannot happen for disjoint clusters, but stay safe
                left, out, t_next = out, out[:0], end
            yield self.chunk(start=t, end=t_next, data=left)
            t = t_next


class ClusterRanks(ExhaustPlugin):
    provides = ("cluster_ranks", "run_totals")
    depends_on = ("cluster_contents", "cut_crowded")
    data_kind = {"cluster_ranks": "clusters", "run_totals": "run_totals"}
    dtype = {
        "cluster_ranks": [*ax.time_fields, ("rank", np.int32, "rank of n_pulses in the run")],
        "run_totals": [*ax.time_fields, ("n_clusters", np.int32, "clusters"),
                       ("n_crowded", np.int32, "crowded clusters")],
    }

    def compute(self, cluster_contents, start, end):
        return ranks_and_totals(cluster_contents, start, end, self.dtype)


def ranks_and_totals(contents, start, end, dtypes):
    ranks = np.zeros(len(contents), dtypes["cluster_ranks"])
    ranks["time"], ranks["endtime"] = contents["time"], contents["endtime"]
    order = np.argsort(-contents["n_pulses"], kind="stable")
    ranks["rank"][order] = np.arange(len(contents))
    totals = np.zeros(1, dtypes["run_totals"])
    totals["time"], totals["endtime"] = start, end
    totals["n_clusters"] = len(contents)
    totals["n_crowded"] = contents["cut_crowded"].sum()
    return {"cluster_ranks": ranks, "run_totals": totals}


CHAIN = [Pulses, PulseBasics, BigPulses, BigClusters, ClusterContents, CutCrowded,
         ClusterIsolation, ClusterInfo, ClusterPieces, ClusterRanks]
CLUSTER_TYPES = ["cluster_info", "cluster_isolation", "cluster_pieces", "cluster_ranks"]
FRAME_TYPES = ["cluster_info", "cluster_isolation", "cluster_ranks"]


def ctx_for(bounds=()):
    return ax.Context(register=CHAIN, config={"chunk_bounds": tuple(bounds)})


@functools.cache
def reference():
    """The chain computed in one go with numpy, without the engine."""
    pulses = make_pulses(500)
    p_end = ax.endtime(pulses)
    big = pulses[pulses["area"] > 15.0]
    big_view = np.zeros(len(big), [("time", np.int64), ("endtime", np.int64)])
    big_view["time"], big_view["endtime"] = big["time"], ax.endtime(big)
    clusters = clusters_of(big_view)
    n_pulses = np.array([((pulses["time"] >= c["time"]) & (p_end <= c["endtime"])).sum()
                         for c in clusters])
    channel_sum = np.array([pulses["channel"][(pulses["time"] >= c["time"])
                                              & (p_end <= c["endtime"])].sum() for c in clusters])
    iso = isolation(clusters, ClusterIsolation.dtype)
    rank = np.zeros(len(clusters), np.int32)
    rank[np.argsort(-n_pulses, kind="stable")] = np.arange(len(clusters))
    return dict(clusters=clusters, n_pulses=n_pulses, channel_sum=channel_sum, iso=iso,
                rank=rank)


def check_frame(df, ref):
    clusters = ref["clusters"]
    assert len(df) == len(clusters) > 20
    np.testing.assert_array_equal(df["time"], clusters["time"])
    np.testing.assert_array_equal(df["endtime"], clusters["endtime"])
    np.testing.assert_array_equal(df["n_big"], clusters["n_big"])
    np.testing.assert_array_equal(df["n_pulses"], ref["n_pulses"])
    np.testing.assert_array_equal(df["channel_sum"], ref["channel_sum"])
    np.testing.assert_array_equal(df["cut_crowded"], ref["n_pulses"] >= 3)
    np.testing.assert_array_equal(df["gap_before"], ref["iso"]["gap_before"])
    np.testing.assert_array_equal(df["gap_after"], ref["iso"]["gap_after"])
    np.testing.assert_array_equal(df["weight"], ref["n_pulses"] * clusters["n_big"])
    np.testing.assert_array_equal(df["rank"], ref["rank"])


def frame(ctx, types):
    """One data frame of several same-kind data types (get_df), plus any loaded alone."""
    df = ctx.get_df("r", FRAME_TYPES)
    for dt in types:
        data = ctx.get_array("r", dt)
        for name in data.dtype.names:
            df[name] = data[name]
    return df


def test_chain_as_one_data_frame():
    ref = reference()
    df = frame(ctx_for(), ["cluster_pieces"])
    assert {"n_big", "n_pulses", "cut_crowded", "gap_before", "weight", "rank"} <= set(df)
    check_frame(df, ref)
    crowded = df[df["cut_crowded"]]
    assert 0 < len(crowded) < len(df)


def test_chain_in_several_chunks():
    ctx = ctx_for((25_000, 60_000, 90_000))  # clean cut points of the toy run
    check_frame(frame(ctx, ["cluster_pieces"]), reference())
    assert len(list(ctx.get_iter("r", "pulses"))) == 4
    assert len(list(ctx.get_iter("r", "cluster_pieces"))) >= 25  # down-chunked
    (totals,) = list(ctx.get_iter("r", "run_totals"))  # exhausted: one chunk
    assert (totals.start, totals.end) == (0, 100_000)
    assert totals.data["n_clusters"][0] == len(reference()["clusters"])


def test_chain_with_the_down_chunked_type_in_one_frame():
    check_frame(ctx_for().get_df("r", CLUSTER_TYPES), reference())


@settings(max_examples=20)
@given(chunk_boundaries())
def test_chain_is_chunking_independent(bounds):
    ref = reference()
    ctx = ctx_for(bounds + bounds[:1])
    check_frame(ctx.get_df("r", CLUSTER_TYPES), ref)
    totals = ctx.get_array("r", "run_totals")
    assert totals["n_crowded"][0] == (ref["n_pulses"] >= 3).sum()
