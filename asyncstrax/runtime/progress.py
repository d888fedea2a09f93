"""The progress bar of a request: how much of the run's time the targets have covered.

As strax's bar, it counts run time rather than chunks (chunks differ in size), with a
percentage and an estimate of the time left when the run's extent is known beforehand (its
data is loaded from storage, or a time range was asked for), and the rate of target data.
"""

from __future__ import annotations

import time
from typing import Any

from ..chunk import Chunk

__all__ = ["ProgressBar"]

_NS = 1e9


class ProgressBar:
    """A tqdm bar over run seconds; ``extent`` is the run's ``(start, end)`` if known."""

    def __init__(self, description: str, extent: tuple[int, int] | None = None) -> None:
        from tqdm.auto import tqdm

        self._origin = extent[0] if extent else None
        total = (extent[1] - extent[0]) / _NS if extent and extent[1] > extent[0] else None
        if total is None:
            bar_format = "{desc}: {n:.3g} s of run [{elapsed}]{postfix}"
        else:
            bar_format = ("{desc}: {percentage:3.0f}%|{bar}| {n:.3g}/{total:.3g} s of run "
                          "[{elapsed}<{remaining}]{postfix}")
        self._bar: Any = tqdm(desc=description, total=total, bar_format=bar_format)
        self._t0 = time.perf_counter()
        self._bytes = 0
        self._chunks = 0

    def update(self, chunk: Chunk) -> None:
        """Count a target chunk: its end is how far the run has come."""
        if self._origin is None:
            self._origin = chunk.start
        self._chunks += 1
        self._bytes += chunk.nbytes
        covered = (chunk.end - self._origin) / _NS
        if self._bar.total is not None:
            covered = min(covered, self._bar.total)
        mb_s = self._bytes / 1e6 / max(time.perf_counter() - self._t0, 1e-9)
        self._bar.set_postfix_str(f"{self._chunks} chunks, {mb_s:.1f} MB/s", refresh=False)
        self._bar.update(covered - self._bar.n)

    def close(self) -> None:
        self._bar.close()
