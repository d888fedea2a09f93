"""Plots of the reference TPC chain (matplotlib, imported only when a plot is made).

``demo_figure`` draws what ``asyncstrax demo`` writes: one event's summed waveform with its
peaks marked, and the S1 vs S2 areas of every event, reconstructed and injected.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..dtypes import PEAK_TYPE_S1, PEAK_TYPE_S2

__all__ = ["choose_event", "demo_figure", "plot_event", "plot_s1_s2"]

_TYPE_STYLE = {
    PEAK_TYPE_S1: ("S1", "tab:blue"),
    PEAK_TYPE_S2: ("S2", "tab:green"),
}
_OTHER_STYLE = ("other", "tab:gray")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "plots need matplotlib: pip install 'asyncstrax[demo]' (or pass --no-plot)"
        ) from error
    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def choose_event(event_basics: np.ndarray) -> int:
    """Index of a typical event: main S1 and S2, the S2 area nearest the median; -1 if none."""
    ok = np.flatnonzero((event_basics["s1_index"] >= 0) & (event_basics["s2_index"] >= 0))
    if not len(ok):
        return int(np.argmax(event_basics["n_peaks"])) if len(event_basics) else -1
    s2 = event_basics["s2_area"][ok]
    return int(ok[np.argmin(np.abs(s2 - np.median(s2)))])


def _peaks_in(event: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    return peaks[(peaks["time"] >= event["time"]) & (peaks["time"] < event["endtime"])]


def _draw_peak(ax: Any, p: np.ndarray, t0: int, unit: float, label: str | None,
               colour: str) -> None:
    n, dt = int(p["length"]), int(p["dt"])
    x = (p["time"] - t0 + dt * np.arange(n + 1)) / unit
    y = np.append(p["data"][:n], 0.0) / dt  # PE per ns
    ax.step(x, y, where="post", color=colour, lw=0.9, label=label)
    ax.axvspan(x[0], x[-1], color=colour, alpha=0.12, lw=0)


def plot_event(ax: Any, event: np.ndarray, peaks: np.ndarray) -> None:
    """The summed waveform (PE/ns) of the peaks inside ``event``, each peak shaded by type.

    ``peaks``: a peaks-like array (time, length, dt, type, area, data); those outside the
    event are ignored.
    """
    t0 = int(event["time"])
    inside = _peaks_in(event, peaks)
    seen = set()
    for p in inside:
        label, colour = _TYPE_STYLE.get(int(p["type"]), _OTHER_STYLE)
        _draw_peak(ax, p, t0, 1e3, None if label in seen else label, colour)
        seen.add(label)
    ax.set_xlim(0, (event["endtime"] - t0) / 1e3)
    ax.set_xlabel("time since event start [us]")
    ax.set_ylabel("summed waveform [PE/ns]")
    names = event.dtype.names or ()
    number = f" {int(event['event_number'])}" if "event_number" in names else ""
    ax.set_title(f"event{number}: {len(inside)} peaks")
    if seen:
        ax.legend(loc="upper left", fontsize=8)


def plot_peak(ax: Any, peak: np.ndarray | None, title: str) -> None:
    """One peak's waveform, zoomed (time in ns since its start)."""
    ax.set_title(title, fontsize=9)
    if peak is None:
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
        return
    label, colour = _TYPE_STYLE.get(int(peak["type"]), _OTHER_STYLE)
    _draw_peak(ax, peak, int(peak["time"]), 1.0, f"{label}: {peak['area']:.0f} PE", colour)
    ax.set_xlabel("ns since peak start", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(loc="upper right", fontsize=7)


def plot_s1_s2(ax: Any, event_basics: np.ndarray, truth: np.ndarray | None = None) -> None:
    """S2 area vs S1 area (PE): reconstructed events, and the injected ones if given."""
    if truth is not None and len(truth):
        ax.scatter(truth["s1_area"], truth["s2_area"], s=14, facecolors="none",
                   edgecolors="tab:orange", lw=0.8, label=f"injected ({len(truth)})")
    ok = np.isfinite(event_basics["s1_area"]) & np.isfinite(event_basics["s2_area"])
    ax.scatter(event_basics["s1_area"][ok], event_basics["s2_area"][ok], s=5, c="tab:blue",
               label=f"reconstructed ({int(ok.sum())})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.tick_params(which="minor", labelbottom=False, labelleft=False)
    ax.set_xlabel("S1 area [PE]")
    ax.set_ylabel("S2 area [PE]")
    ax.set_title("main S1 vs main S2")
    ax.legend(loc="lower right", fontsize=8)


def demo_figure(path: str, event_basics: np.ndarray, events: np.ndarray, peaks: np.ndarray,
                truth: np.ndarray | None = None, event_i: int | None = None) -> str:
    """Write the demo's PNG to ``path`` and return it: one event's waveform with its peaks
    (and zooms on its main S1 and S2), and the S1 vs S2 areas of all events.

    ``events`` and ``event_basics`` correspond one to one; ``peaks`` needs time, length, dt,
    type (classified), area and data.
    """
    plt = _pyplot()
    if event_i is None:
        event_i = choose_event(event_basics)
    fig = plt.figure(figsize=(15, 5.2))
    grid = fig.add_gridspec(2, 3, width_ratios=[2.2, 1, 1.5])
    ax_event = fig.add_subplot(grid[:, 0])
    ax_s1, ax_s2 = fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1])
    ax_scatter = fig.add_subplot(grid[:, 2])
    try:
        if event_i >= 0:
            event, basics = events[event_i], event_basics[event_i]
            plot_event(ax_event, event, peaks)
            inside = _peaks_in(event, peaks)
            for ax, s in ((ax_s1, "s1"), (ax_s2, "s2")):
                sel = inside[inside["time"] == basics[f"{s}_time"]] if basics[
                    f"{s}_index"] >= 0 else inside[:0]
                plot_peak(ax, sel[0] if len(sel) else None, f"main {s.upper()}")
        else:
            ax_event.text(0.5, 0.5, "no event", ha="center", transform=ax_event.transAxes)
        plot_s1_s2(ax_scatter, event_basics, truth)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
