"""Selecting items by time range, as strax's ``time_range`` and ``time_selection`` do.

``fully_contained`` keeps items with ``t0 <= time`` and ``endtime <= t1``; ``touching`` keeps
items that overlap ``[t0, t1)`` at all; ``skip`` keeps everything.
"""

from __future__ import annotations

import numpy as np

from .chunk import endtime
from .errors import InvalidConfiguration

__all__ = ["TIME_SELECTIONS", "chunk_overlaps", "select_time_range"]

TIME_SELECTIONS = ("fully_contained", "touching", "skip")


def check_time_selection(time_selection: str) -> None:
    if time_selection not in TIME_SELECTIONS:
        raise InvalidConfiguration(
            f"time_selection must be one of {TIME_SELECTIONS}, got {time_selection!r}"
        )


def chunk_overlaps(start: int, end: int, time_range: tuple[int, int] | None,
                   time_selection: str = "fully_contained") -> bool:
    """Whether a chunk ``[start, end)`` can hold items of the time range.

    Fully contained items include zero-length ones at ``t0`` or ``t1``, which a chunk ending
    at ``t0`` or starting at ``t1`` may hold. ``skip`` selects nothing out, so every chunk.
    """
    if time_range is None or time_selection == "skip":
        return True
    t0, t1 = time_range
    if time_selection == "fully_contained":
        return start <= t1 and end >= t0
    return start < t1 and end > t0 or start == end == t0


def select_time_range(
    data: np.ndarray,
    time_range: tuple[int, int] | None,
    time_selection: str = "fully_contained",
) -> np.ndarray:
    """The items of sorted ``data`` selected by ``time_range`` (a view where possible)."""
    if time_range is None or time_selection == "skip" or not len(data):
        return data
    t0, t1 = time_range
    times = data["time"]
    if time_selection == "fully_contained":
        lo = int(np.searchsorted(times, t0, side="left"))
        hi = int(np.searchsorted(times, t1, side="right"))  # zero-length items at t1 too
        part = data[lo:hi]
        ends = endtime(part)
        return part if bool((ends <= t1).all()) else part[ends <= t1]
    if time_selection == "touching":
        hi = int(np.searchsorted(times, t1, side="left"))
        part = data[:hi]
        return part[endtime(part) > t0]
    check_time_selection(time_selection)
    return data
