"""Small plugins for engine tests: a source of pulses with chosen chunk boundaries, and a graph
of three levels and two data kinds whose output must not depend on that chunking."""

from __future__ import annotations

import numpy as np

import asyncstrax as ax

PULSE_DTYPE = np.dtype(
    [
        (("Start time since unix epoch [ns]", "time"), np.int64),
        (("Length of the interval in samples", "length"), np.int32),
        (("Width of one sample [ns]", "dt"), np.int16),
        (("Channel", "channel"), np.int16),
        (("Integral [PE]", "area"), np.float32),
    ]
)


def make_pulses(n: int, seed: int = 0, t_max: int = 100_000) -> np.ndarray:
    """Sorted, overlapping pulses inside [0, t_max)."""
    rng = np.random.default_rng(seed)
    pulses = np.zeros(n, PULSE_DTYPE)
    pulses["length"] = rng.integers(1, 50, n)
    pulses["dt"] = 10
    pulses["time"] = np.sort(rng.integers(0, t_max - 600, n))
    pulses["channel"] = rng.integers(0, 8, n)
    pulses["area"] = rng.exponential(10, n).astype(np.float32)
    return pulses


def cut_points(data: np.ndarray, boundaries, t_end: int) -> list[int]:
    """Clean chunk boundaries near the requested ones (no pulse cut), increasing, in range."""
    ends = data["time"] + data["length"].astype(np.int64) * data["dt"]
    reach = np.maximum.accumulate(ends) if len(ends) else ends
    cuts = []
    for b in sorted(set(int(b) for b in boundaries)):
        i = int(np.searchsorted(data["time"], b))
        if i > 0 and reach[i - 1] > b:
            continue
        if 0 < b < t_end and (not cuts or b >= cuts[-1]):
            cuts.append(b)
    return cuts


class Pulses(ax.Plugin):
    """Source: pulses of a run, chunked at ``chunk_bounds`` (strax source protocol)."""

    provides = "pulses"
    depends_on = ()
    dtype = PULSE_DTYPE
    n_pulses = ax.Config(default=500, type=int, help="pulses in the run")
    seed = ax.Config(default=0, type=int, help="random seed")
    t_end = ax.Config(default=100_000, type=int, help="run end [ns]")
    chunk_bounds = ax.Config(default=(), help="times at which chunks end", track=False)

    def setup(self) -> None:
        self.data = make_pulses(self.n_pulses, self.seed, self.t_end)
        edges = [0, *cut_points(self.data, self.chunk_bounds, self.t_end), self.t_end]
        self.ranges = list(zip(edges[:-1], edges[1:]))

    def is_ready(self, chunk_i: int) -> bool:
        return chunk_i < len(self.ranges)

    def source_finished(self) -> bool:
        return True

    def compute(self, chunk_i: int):
        start, end = self.ranges[chunk_i]
        t = self.data["time"]
        sel = self.data[(t >= start) & (t < end)]
        return self.chunk(start=start, end=end, data=sel)


class PulseBasics(ax.Plugin):
    """Same kind as pulses: a derived field per pulse."""

    provides = "pulse_basics"
    depends_on = "pulses"
    dtype = [
        (("Start time", "time"), np.int64),
        (("End time", "endtime"), np.int64),
        (("Area per sample", "area_per_sample"), np.float64),
    ]

    def compute(self, pulses):
        out = np.zeros(len(pulses), self.dtype)
        out["time"] = pulses["time"]
        out["endtime"] = ax.endtime(pulses)
        out["area_per_sample"] = pulses["area"] / pulses["length"]
        return out


class BigPulses(ax.Plugin):
    """A new kind: the pulses above a threshold (items removed -> new data kind)."""

    provides = "big_pulses"
    depends_on = ("pulses", "pulse_basics")
    data_kind = "big_pulses"
    threshold = ax.Config(default=15.0, type=float, help="area threshold [PE]")
    dtype = [
        (("Start time", "time"), np.int64),
        (("End time", "endtime"), np.int64),
        (("Area", "area"), np.float32),
        (("Channel", "channel"), np.int16),
    ]

    def compute(self, pulses):
        sel = pulses[pulses["area"] > self.threshold]
        out = np.zeros(len(sel), self.dtype)
        out["time"] = sel["time"]
        out["endtime"] = sel["time"] + sel["length"].astype(np.int64) * sel["dt"]
        out["area"] = sel["area"]
        out["channel"] = sel["channel"]
        return out


class BigPulseNeighbours(ax.Plugin):
    """Two kinds in: for each big pulse, the pulses fully inside it (containment sync)."""

    provides = "big_pulse_neighbours"
    depends_on = ("big_pulses", "pulse_basics")
    dtype = [
        (("Start time", "time"), np.int64),
        (("End time", "endtime"), np.int64),
        (("Pulses contained", "n_contained"), np.int32),
        (("Summed area per sample of contained pulses", "sum_aps"), np.float64),
    ]

    def compute(self, big_pulses, pulses):
        out = np.zeros(len(big_pulses), self.dtype)
        out["time"] = big_pulses["time"]
        out["endtime"] = big_pulses["endtime"]
        for i, bp in enumerate(big_pulses):
            inside = (pulses["time"] >= bp["time"]) & (pulses["endtime"] <= bp["endtime"])
            out["n_contained"][i] = inside.sum()
            out["sum_aps"][i] = pulses["area_per_sample"][inside].sum()
        return out


TOY_PLUGINS = [Pulses, PulseBasics, BigPulses, BigPulseNeighbours]


def reference_neighbours(n_pulses=500, seed=0, t_end=100_000, threshold=15.0) -> np.ndarray:
    """What BigPulseNeighbours must give, computed in one go without the engine."""
    pulses = make_pulses(n_pulses, seed, t_end)
    ends = pulses["time"] + pulses["length"].astype(np.int64) * pulses["dt"]
    aps = pulses["area"] / pulses["length"]
    big = pulses["area"] > threshold
    rows = []
    for t, e in zip(pulses["time"][big], ends[big]):
        inside = (pulses["time"] >= t) & (ends <= e)
        rows.append((t, e, inside.sum(), aps[inside].sum()))
    return np.array(rows, dtype=BigPulseNeighbours.dtype) if rows else np.zeros(
        0, BigPulseNeighbours.dtype)
