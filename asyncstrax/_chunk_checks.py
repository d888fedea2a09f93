"""One-pass numba check of a big chunk's rules (sorted, inside [start, end)).

The numpy form of these checks makes several temporary arrays (a comparison array, and for
``dt``/``length`` dtypes three int64 arrays for the end times): milliseconds on a 20 MB chunk.
This pass reads each field once. It is imported only when a chunk is big, so a plain
``import asyncstrax`` does not pay for importing numba.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def check_with_endtime(time: np.ndarray, endtime: np.ndarray) -> tuple[int, int, int]:
    """(first unsorted index or -1, index of the largest endtime, that endtime)."""
    unsorted = -1
    worst = 0
    max_end = endtime[0]
    for i in range(1, len(time)):
        if unsorted < 0 and time[i] < time[i - 1]:
            unsorted = i
        if endtime[i] > max_end:
            max_end = endtime[i]
            worst = i
    return unsorted, worst, max_end


@numba.njit(nogil=True, cache=True)
def check_with_dt_length(time: np.ndarray, dt: np.ndarray, length: np.ndarray
                         ) -> tuple[int, int, int]:
    """As ``check_with_endtime``, with endtime = time + dt * length computed on the fly."""
    unsorted = -1
    worst = 0
    max_end = time[0] + np.int64(dt[0]) * np.int64(length[0])
    for i in range(1, len(time)):
        if unsorted < 0 and time[i] < time[i - 1]:
            unsorted = i
        end = time[i] + np.int64(dt[i]) * np.int64(length[i])
        if end > max_end:
            max_end = end
            worst = i
    return unsorted, worst, max_end
