"""Plugins written exactly as for strax, with only the import changed.

A straxen-style plugin module: ``export, __all__ = strax.exporter()``, options by
``@strax.takes_config(strax.Option(...))`` and by class-attribute ``strax.Config``, a strax-style
source (``is_ready``/``source_finished``/``compute(chunk_i)``), a plain plugin, a multi-output
plugin, an OverlapWindowPlugin, a CutPlugin, a LoopPlugin and a MergeOnlyPlugin.
"""

import numpy as np

import asyncstrax as strax

try:
    export, __all__ = strax.exporter()
except AttributeError:  # until asyncstrax/__init__ exports it
    from asyncstrax.strax_compat import exporter

    export, __all__ = exporter()


def _family(name, module):
    """strax.<name>, or from its module until asyncstrax/__init__ exports it."""
    found = getattr(strax, name, None)
    if found is None:
        import importlib

        found = getattr(importlib.import_module(f"asyncstrax.plugins.{module}"), name)
    return found


LoopPlugin = _family("LoopPlugin", "loop")
CutPlugin = _family("CutPlugin", "cut")
MergeOnlyPlugin = _family("MergeOnlyPlugin", "merge_only")

CHUNK_NS = 10_000
SAMPLE_NS = 10


def make_pulses(chunk_i, per_chunk, seed):
    """Pulses of one chunk: sorted, inside [chunk_i * CHUNK_NS, (chunk_i + 1) * CHUNK_NS)."""
    rng = np.random.default_rng(seed + chunk_i)
    p = np.zeros(per_chunk, dtype=Pulses.dtype)
    p["length"] = rng.integers(1, 20, per_chunk)
    p["dt"] = SAMPLE_NS
    p["time"] = chunk_i * CHUNK_NS + np.sort(rng.integers(0, CHUNK_NS - 20 * SAMPLE_NS,
                                                          per_chunk))
    p["channel"] = rng.integers(0, 4, per_chunk)
    p["area"] = rng.exponential(10, per_chunk)
    return p


@export
@strax.takes_config(
    strax.Option("n_chunks", default=4, type=int, help="chunks in a run"),
    strax.Option("pulses_per_chunk", default=50, type=int, help="pulses per chunk"),
    strax.Option("pulse_seed", default=1, type=int, help="random seed"),
)
class Pulses(strax.Plugin):
    """A strax-style source: chunk i is ready at once; the run has n_chunks chunks."""

    __version__ = "0.1.0"
    provides = "pulses"
    depends_on = tuple()
    data_kind = "pulses"
    dtype = strax.time_dt_fields + [
        (("Channel", "channel"), np.int16),
        (("Integral [PE]", "area"), np.float32),
    ]

    def is_ready(self, chunk_i):
        return chunk_i < self.config["n_chunks"]

    def source_finished(self):
        return True

    def compute(self, chunk_i):
        data = make_pulses(chunk_i, self.config["pulses_per_chunk"], self.config["pulse_seed"])
        return self.chunk(start=chunk_i * CHUNK_NS, end=(chunk_i + 1) * CHUNK_NS, data=data)


@export
class PulseBasics(strax.Plugin):
    """Same kind as pulses: area in PE (times a gain) and the end time."""

    __version__ = "0.0.2"
    depends_on = ("pulses",)
    provides = "pulse_basics"
    gain = strax.Config(default=1.0, type=float, help="gain correction")
    dtype = strax.time_fields + [
        (("Corrected area [PE]", "area"), np.float64),
        (("Channel", "channel"), np.int16),
    ]

    def compute(self, pulses):
        r = np.zeros(len(pulses), self.dtype)
        r["time"] = pulses["time"]
        r["endtime"] = strax.endtime(pulses)
        r["area"] = pulses["area"] * self.gain
        r["channel"] = pulses["channel"]
        return r


@export
@strax.takes_config(
    strax.Option("split_area", default=10.0, help="small below, large above [PE]",
                 infer_type=True),
)
class SplitPulses(strax.Plugin):
    """Multi-output: pulses below and above an area, as two new data kinds."""

    __version__ = "0.0.1"
    depends_on = "pulse_basics"
    provides = ("small_pulses", "large_pulses")
    data_kind = dict(small_pulses="small_pulses", large_pulses="large_pulses")
    dtype = dict(small_pulses=strax.time_fields + [(("Area", "area"), np.float64)],
                 large_pulses=strax.time_fields + [(("Area", "area"), np.float64)])

    def compute(self, pulses):  # arguments are named by data kind, as in strax
        small = pulses["area"] < self.config["split_area"]
        out = {}
        for name, sel in (("small_pulses", small), ("large_pulses", ~small)):
            r = np.zeros(sel.sum(), self.dtype[name])
            for f in ("time", "endtime", "area"):
                r[f] = pulses[f][sel]
            out[name] = r
        return out


@export
class LargePulseNeighbours(strax.OverlapWindowPlugin):
    """Per large pulse: how many large pulses start within the window around it."""

    depends_on = "large_pulses"
    provides = "large_pulse_neighbours"
    data_kind = "large_pulses"
    neighbour_window = strax.Config(default=2_000, type=int, help="window [ns]")
    dtype = strax.time_fields + [(("Neighbours within the window", "n_neighbours"), np.int32)]

    def get_window_size(self):
        return 2 * self.neighbour_window

    def compute(self, large_pulses):
        t = large_pulses["time"]
        lo = np.searchsorted(t, t - self.neighbour_window, side="left")
        hi = np.searchsorted(t, t + self.neighbour_window, side="right")
        r = np.zeros(len(t), self.dtype)
        r["time"] = t
        r["endtime"] = large_pulses["endtime"]
        r["n_neighbours"] = hi - lo - 1
        return r


@export
class CutBigPulse(CutPlugin):
    """A boolean per pulse: area above min_area."""

    depends_on = "pulse_basics"
    provides = "cut_big_pulse"
    cut_name = "cut_big_pulse"
    cut_description = "area above min_area"
    min_area = strax.Config(default=20.0, type=float, help="[PE]")

    def cut_by(self, pulses):
        return pulses["area"] > self.min_area


@export
class Windows(strax.Plugin):
    """Fixed, disjoint windows inside each chunk (a new data kind to loop over)."""

    depends_on = "pulses"
    provides = "windows"
    data_kind = "windows"
    window_length = strax.Config(default=2_500, type=int, help="[ns]", track=True)
    dtype = strax.time_fields

    def compute(self, pulses, start, end):
        edges = np.arange(start, end + 1, self.window_length)
        r = np.zeros(max(len(edges) - 1, 0), self.dtype)
        r["time"] = edges[:-1]
        r["endtime"] = edges[1:]
        return r


@export
class WindowSummary(LoopPlugin):
    """Per window: the pulses fully inside it, counted and summed (strax's LoopPlugin)."""

    depends_on = ("windows", "pulse_basics")
    provides = "window_summary"
    dtype = strax.time_fields + [
        (("Pulses in the window", "n_pulses"), np.int32),
        (("Summed area [PE]", "area"), np.float64),
    ]

    def compute_loop(self, windows, pulses):
        return dict(n_pulses=len(pulses), area=pulses["area"].sum())


@export
class PulseInfo(MergeOnlyPlugin):
    """pulse_basics and the cut in one data type."""

    depends_on = ("pulse_basics", "cut_big_pulse")
    provides = "pulse_info"
    save_when = strax.SaveWhen.TARGET


#: not a plugin: register_all must skip it
NOT_A_PLUGIN = 42
