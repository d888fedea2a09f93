"""The reference TPC chain as plugins: raw_records -> records -> peaks -> peak_basics -> events
-> event_basics, on the numba kernels of ``asyncstrax.processing``.

=================  ============  ===========================================================
data type          data kind     plugin
=================  ============  ===========================================================
raw_records        raw_records   ``RawRecords``: synthetic digitizer data (``tpc.sim``), source
truth              truth         ``RawRecords`` (second output): what was injected, per event
records            records       ``Records``: baselined, flipped, zeroed outside hits
peaks              peaks         ``Peaks``: hits clustered and summed over channels
peak_basics        peaks         ``PeakBasics``: per-peak summary and S1/S2 classification
events             events        ``Events``: windows around S2 triggers (overlap window)
event_basics       events        ``EventBasics``: main/alternative S1 and S2 of each event
=================  ============  ===========================================================

Options carry strax's names and the kernels' defaults (``processing.DEFAULT_CONFIG``); an
option used by several plugins (``n_channels``, the hit finder's) is declared by each of them
with the same default, and the Context gives them one value. Each chunk of records, peaks and
peak_basics is exactly what ``processing.process_chunk_plain`` gives for the same raw_records:
the plugins call the same functions with the same configuration.

Events do not depend on the chunking: ``Events`` is an ``OverlapWindowPlugin`` whose window is
``left_event_extension + right_event_extension`` (an event window closes once no later trigger
can reach it; assumes peaks shorter than ~2 windows, true for this detector). Its compute may
run again on cached input, so event numbers are given when events are *sent*, from a counter
of those already sent: they are consecutive across chunks and independent of the chunking.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..chunk import Chunk
from ..dtypes import (
    event_basics_dtype,
    event_dtype,
    peak_basics_dtype,
    peak_dtype,
    raw_record_dtype,
    record_dtype,
)
from ..options import Config
from ..plugins.base import Plugin, SaveWhen, Work
from ..plugins.overlap_window import OverlapWindowPlugin
from ..processing import DEFAULT_CONFIG, chain_config
from ..processing.baseline import record_length_from_dtype
from ..processing.chain import process_peaks, process_records
from ..processing.classify import peak_basics as compute_peak_basics
from ..processing.events import build_events
from ..processing.events import event_basics as compute_event_basics

__all__ = [
    "TPC_PLUGINS",
    "RawRecords",
    "Records",
    "Peaks",
    "PeakBasics",
    "Events",
    "EventBasics",
    "make_simulator",
    "simulate",
]

_D = DEFAULT_CONFIG
_NUMBER = (int, float)
_THRESHOLD = (int, float, list, tuple)

#: Options of the Simulator that RawRecords exposes (same names as the Simulator's arguments).
_SIM_OPTIONS = ("seed", "n_channels", "dark_rate_hz", "chunk_duration_ns", "detector_seed")


def _warm_up_with_empty_inputs(plugin: Plugin) -> None:
    """Call compute on empty inputs: numba loads each kernel's cached machine code on its first
    call, so this moves that cost to warm_up(), which overlaps the first chunk's arrival."""
    kinds = plugin.dependencies_by_kind()
    inputs = {}
    for kind, data_types in kinds.items():
        from ..chunk import merged_dtype_of

        dtype = merged_dtype_of({dt: plugin.deps[dt].dtype_for(dt) for dt in data_types})
        inputs[kind] = np.zeros(0, dtype)
    plugin.call_compute(inputs, 0, 0, 0)


def _tiny_records(dtype: np.dtype, n_channels: int = 4) -> np.ndarray:
    """A few records with one pulse each: enough to run every peak kernel once."""
    records = np.zeros(n_channels, dtype)
    samples = records["data"].shape[1]
    records["time"] = 1000
    records["dt"] = 10
    records["length"] = samples
    records["pulse_length"] = samples
    records["channel"] = np.arange(n_channels)
    records["data"][:, samples // 3 : samples // 3 + 10] = 300
    records["area"] = records["data"].sum(axis=1)
    return records


def _chain_cfg(plugin: Plugin, names: tuple[str, ...]) -> dict[str, Any]:
    """chain_config for the given option names, from the plugin's configuration."""
    values = {name: plugin.config[name] for name in names}
    if "hit_min_amplitude" in values and isinstance(values["hit_min_amplitude"], (list, tuple)):
        values["hit_min_amplitude"] = np.asarray(values["hit_min_amplitude"])
    if values.get("n_top_channels", 0) is None:
        values["n_top_channels"] = plugin.config["n_channels"] // 2
    if "to_pe" in values and values["to_pe"] is None:
        from .sim import detector_to_pe

        values["to_pe"] = detector_to_pe(plugin.config["n_channels"],
                                         plugin.config["detector_seed"])
    for name, value in values.items():
        # the kernels' argument types, so numba reuses its cached compilations
        if isinstance(_D.get(name), float) and isinstance(value, int):
            values[name] = float(value)
    return chain_config(**values)


# ---------------------------------------------------------------------- raw_records (+ truth)
def make_simulator(config: dict[str, Any] | None = None, keep_truth: bool = True):
    """The ``tpc.sim.Simulator`` that ``RawRecords`` runs for this configuration.

    ``config`` holds RawRecords options (missing ones take their defaults). With
    ``raw_data_rate_mb_s`` set, the event rate is chosen for that raw data rate (and
    ``event_rate_hz`` ignored); with ``chunk_mb`` set, chunks hold about that many MB.
    ``keep_truth=False``: the simulator does not keep every chunk's truth (``sim.truth``), for
    callers that take it per chunk or not at all.
    """
    from .sim import Simulator

    cfg = {name: opt.get_default() for name, opt in RawRecords.takes_config.items()}
    cfg.update(config or {})
    kwargs = {name: cfg[name] for name in _SIM_OPTIONS}
    kwargs["keep_truth"] = keep_truth
    kwargs["start_time_ns"] = int(cfg["run_start_ns"])
    if cfg["raw_data_rate_mb_s"]:
        return Simulator.for_data_rate(
            float(cfg["raw_data_rate_mb_s"]), chunk_mb=cfg["chunk_mb"], **kwargs
        )
    kwargs["event_rate_hz"] = float(cfg["event_rate_hz"])
    if cfg["chunk_mb"]:
        probe = Simulator(**kwargs)
        kwargs["chunk_duration_ns"] = int(cfg["chunk_mb"] / probe.expected_mb_per_s * 1e9)
    return Simulator(**kwargs)


def simulate(config: dict[str, Any] | None = None, with_truth: bool = True):
    """Every chunk RawRecords makes for ``config``: a list of (start, end, raw_records[, truth]).

    Deterministic from the configuration, so tests can compare the engine with the kernels on
    exactly the data the engine saw.
    """
    cfg = {name: opt.get_default() for name, opt in RawRecords.takes_config.items()}
    cfg.update(config or {})
    sim = make_simulator(cfg, keep_truth=False)
    return list(
        sim.iter_chunks(
            duration_ns=cfg["run_duration_ns"] if not cfg["raw_mb"] else None,
            raw_mb=cfg["raw_mb"] or None,
            with_truth=with_truth,
        )
    )


class RawRecords(Plugin):
    """Source: raw_records of the synthetic TPC (``tpc.sim.Simulator``), and the truth.

    strax's source protocol (``is_ready`` / ``source_finished`` / ``compute(chunk_i)``), so the
    simulation runs on a worker thread, one chunk per call. The run ends after
    ``run_duration_ns`` of detector time, or after ``raw_mb`` MB of raw_records if that is set.
    A second output, ``truth`` (its own data kind, one item per injected event), holds what was
    simulated, for physics checks. raw_records are saved only on request (the simulation
    reproduces them from the options); truth is always saved.
    """

    __version__ = "0.1.0"
    provides = ("raw_records", "truth")
    depends_on = ()
    data_kind = {"raw_records": "raw_records", "truth": "truth"}
    save_when = {"raw_records": SaveWhen.EXPLICIT, "truth": SaveWhen.ALWAYS}
    rechunk_on_save = False

    seed = Config(default=0, type=int, help="random seed of the simulation")
    n_channels = Config(default=_D["n_channels"], type=int, help="number of PMT channels")
    detector_seed = Config(default=0, type=int,
                           help="seed of the PMT gains (the chain's to_pe follows it)")
    event_rate_hz = Config(default=50.0, type=_NUMBER, help="rate of injected events [Hz]")
    raw_data_rate_mb_s = Config(
        default=None, type=_NUMBER,
        help="raw_records data rate [MB/s of run time]; if set, chooses the event rate")
    dark_rate_hz = Config(default=50.0, type=_NUMBER, help="dark count rate per channel [Hz]")
    run_start_ns = Config(default=0, type=int, help="start time of the run [ns]")
    run_duration_ns = Config(default=1_000_000_000, type=int,
                             help="detector time to simulate [ns] (unless raw_mb is set)")
    raw_mb = Config(default=None, type=_NUMBER,
                    help="stop after this many MB of raw_records (instead of run_duration_ns)")
    chunk_duration_ns = Config(default=100_000_000, type=int,
                               help="nominal duration of a chunk [ns] (chunks end between events)")
    chunk_mb = Config(default=None, type=_NUMBER,
                      help="if set, size chunks to hold about this many MB of raw_records")

    def infer_dtype(self) -> dict[str, np.dtype]:
        from .sim import TRUTH_DTYPE

        return {"raw_records": np.dtype(raw_record_dtype()), "truth": TRUTH_DTYPE}

    def setup(self) -> None:
        self.sim = make_simulator(self.config, keep_truth=False)  # truth goes out per chunk
        self._t_begin = self.sim._cursor
        self._n_bytes = 0
        self._n_chunks = 0

    def _done(self) -> bool:
        if self.raw_mb:
            return self._n_bytes >= self.raw_mb * 1e6
        return self.sim._cursor - self._t_begin >= self.run_duration_ns

    def is_ready(self, chunk_i: int) -> bool:
        return not self._done()

    def source_finished(self) -> bool:
        return self._done()

    def compute(self, chunk_i: int) -> dict[str, Chunk]:
        if chunk_i != self._n_chunks:  # pragma: no cover - the runtime asks in order
            raise RuntimeError(f"chunk {chunk_i} asked after {self._n_chunks} chunks")
        start, end, raw, truth = self.sim.next_chunk(with_truth=True)
        self._n_bytes += raw.nbytes
        self._n_chunks += 1
        return {
            "raw_records": self.chunk(start=start, end=end, data=raw, data_type="raw_records"),
            "truth": self.chunk(start=start, end=end, data=truth, data_type="truth"),
        }


# ---------------------------------------------------------------------- records
class Records(Plugin):
    """raw_records -> records: baseline, flip, integrate; samples outside hits are zeroed.

    A new data kind, as in strax (records may be dropped or reduced in later versions).
    """

    __version__ = "0.1.0"
    provides = "records"
    depends_on = "raw_records"
    data_kind = "records"
    parallel = True
    save_when = SaveWhen.TARGET
    # As straxen does for records: chunks are already big, and merging them before writing
    # would hold the whole run in memory and compress it all at the end instead of meanwhile.
    rechunk_on_save = False

    n_channels = Config(default=_D["n_channels"], type=int, help="number of PMT channels")
    baseline_samples = Config(default=_D["baseline_samples"], type=int,
                              help="samples at the start of a pulse used for the baseline")
    hit_min_amplitude = Config(default=_D["hit_min_amplitude"], type=_THRESHOLD,
                               help="hit threshold [ADC counts above baseline], or per channel")
    hit_left_extension = Config(default=_D["hit_left_extension"], type=int,
                                help="samples kept left of each hit")
    hit_right_extension = Config(default=_D["hit_right_extension"], type=int,
                                 help="samples kept right of each hit")

    _CFG = ("n_channels", "baseline_samples", "hit_min_amplitude", "hit_left_extension",
            "hit_right_extension")

    def infer_dtype(self) -> np.dtype:
        raw = self.deps["raw_records"].dtype_for("raw_records")
        return np.dtype(record_dtype(record_length_from_dtype(raw)))

    def setup(self) -> None:
        self.cfg = _chain_cfg(self, self._CFG)

    def compute(self, raw_records: np.ndarray) -> np.ndarray:
        return process_records(raw_records, self.cfg)

    def warm_up(self) -> None:
        _warm_up_with_empty_inputs(self)


# ---------------------------------------------------------------------- peaks
class Peaks(Plugin):
    """records -> peaks: hits (with extensions) clustered by gaps, summed over channels."""

    __version__ = "0.1.0"
    provides = "peaks"
    depends_on = "records"
    data_kind = "peaks"
    parallel = True

    n_channels = Config(default=_D["n_channels"], type=int, help="number of PMT channels")
    detector_seed = Config(default=0, type=int,
                           help="seed of the PMT gains (the chain's to_pe follows it)")
    to_pe = Config(default=None, type=(list, tuple),
                   help="PE per ADC x sample, per channel; None: the simulated detector's")
    hit_min_amplitude = Config(default=_D["hit_min_amplitude"], type=_THRESHOLD,
                               help="hit threshold [ADC counts above baseline], or per channel")
    hit_left_extension = Config(default=_D["hit_left_extension"], type=int,
                                help="samples integrated left of each hit")
    hit_right_extension = Config(default=_D["hit_right_extension"], type=int,
                                 help="samples integrated right of each hit")
    peak_gap_threshold = Config(default=_D["peak_gap_threshold"], type=int,
                                help="no hits for this long [ns] splits peaks")
    peak_left_extension = Config(default=_D["peak_left_extension"], type=int,
                                 help="peak starts this long [ns] before its first hit")
    peak_right_extension = Config(default=_D["peak_right_extension"], type=int,
                                  help="peak ends this long [ns] after its last hit")
    peak_min_area = Config(default=_D["peak_min_area"], type=_NUMBER,
                           help="minimum peak area [PE]")
    peak_min_channels = Config(default=_D["peak_min_channels"], type=int,
                               help="minimum number of channels in a peak")
    peak_max_duration = Config(default=_D["peak_max_duration"], type=int,
                               help="longest peak [ns]")
    n_top_channels = Config(default=None, type=int,
                            help="channels below this are the top array; None: n_channels // 2")
    n_sum_wv_samples = Config(default=_D["n_sum_wv_samples"], type=int,
                              help="samples of the stored (downsampled) sum waveform")
    n_widths = Config(default=_D["n_widths"], type=int, help="number of stored peak widths")

    _CFG = ("n_channels", "to_pe", "hit_min_amplitude", "hit_left_extension",
            "hit_right_extension", "peak_gap_threshold", "peak_left_extension",
            "peak_right_extension", "peak_min_area", "peak_min_channels", "peak_max_duration",
            "n_top_channels", "n_sum_wv_samples", "n_widths")

    def infer_dtype(self) -> np.dtype:
        return np.dtype(peak_dtype(self.config["n_channels"], self.config["n_sum_wv_samples"],
                                   self.config["n_widths"]))

    def setup(self) -> None:
        self.cfg = _chain_cfg(self, self._CFG)

    def compute(self, records: np.ndarray) -> np.ndarray:
        return process_peaks(records, self.cfg)

    def warm_up(self) -> None:
        process_peaks(_tiny_records(self.deps["records"].dtype_for("records")), self.cfg)


# ---------------------------------------------------------------------- peak_basics
class PeakBasics(Plugin):
    """Per-peak summary (area, widths, rise time, channels) and S1/S2 classification."""

    __version__ = "0.1.0"
    provides = "peak_basics"
    depends_on = "peaks"
    dtype = peak_basics_dtype
    parallel = True

    s1_max_rise_time = Config(default=_D["s1_max_rise_time"], type=_NUMBER,
                              help="S1: longest 10%-50% area rise time [ns]")
    s1_max_range_50p_area = Config(default=_D["s1_max_range_50p_area"], type=_NUMBER,
                                   help="S1: widest 50% area width [ns]")
    s1_min_channels = Config(default=_D["s1_min_channels"], type=int,
                             help="S1: fewest contributing channels")
    s2_min_area = Config(default=_D["s2_min_area"], type=_NUMBER, help="S2: least area [PE]")
    s2_min_range_50p_area = Config(default=_D["s2_min_range_50p_area"], type=_NUMBER,
                                   help="S2: narrowest 50% area width [ns]")
    s2_min_channels = Config(default=_D["s2_min_channels"], type=int,
                             help="S2: fewest contributing channels")

    _CFG = ("s1_max_rise_time", "s1_max_range_50p_area", "s1_min_channels", "s2_min_area",
            "s2_min_range_50p_area", "s2_min_channels")

    def setup(self) -> None:
        cfg = _chain_cfg(self, self._CFG)
        self.classification = {name: cfg[name] for name in self._CFG}

    def compute(self, peaks: np.ndarray) -> np.ndarray:
        return compute_peak_basics(peaks, self.classification)

    def warm_up(self) -> None:
        _warm_up_with_empty_inputs(self)


# ---------------------------------------------------------------------- events
class Events(OverlapWindowPlugin):
    """Event windows: [trigger - left_event_extension, trigger end + right_event_extension]
    around every S2 above ``trigger_min_area``, overlapping windows merged.

    Chunking-independent (overlap window); ``event_number`` counts events from 0 over the run.
    """

    __version__ = "0.1.0"
    provides = "events"
    depends_on = "peak_basics"
    data_kind = "events"
    dtype = event_dtype

    trigger_min_area = Config(default=_D["trigger_min_area"], type=_NUMBER,
                              help="S2s above this area [PE] trigger an event")
    left_event_extension = Config(default=_D["left_event_extension"], type=int,
                                  help="event starts this long [ns] before its trigger")
    right_event_extension = Config(default=_D["right_event_extension"], type=int,
                                   help="event ends this long [ns] after its trigger ends")

    def get_window_size(self) -> int:
        return self.left_event_extension + self.right_event_extension

    def compute(self, peaks: np.ndarray, start: int, end: int) -> np.ndarray:
        # event_number is given in process_work, when events are sent
        return build_events(peaks, self.trigger_min_area, self.left_event_extension,
                            self.right_event_extension, start, end)

    def warm_up(self) -> None:
        _warm_up_with_empty_inputs(self)

    def process_work(self, work: Work) -> list[dict[str, Chunk]]:
        results = super().process_work(work)
        n_sent = self.__dict__.get("_n_events_sent", 0)
        for outputs in results:
            data = outputs["events"].data
            data["event_number"] = np.arange(n_sent, n_sent + len(data))
            n_sent += len(data)
        self._n_events_sent = n_sent
        return results


class EventBasics(Plugin):
    """Main and alternative S1/S2 of each event, from the peak_basics fully inside it."""

    __version__ = "0.1.0"
    provides = "event_basics"
    depends_on = ("events", "peak_basics")
    dtype = event_basics_dtype

    def compute(self, events: np.ndarray, peaks: np.ndarray) -> np.ndarray:
        return compute_event_basics(events, peaks)

    def warm_up(self) -> None:
        _warm_up_with_empty_inputs(self)


TPC_PLUGINS = [RawRecords, Records, Peaks, PeakBasics, Events, EventBasics]
