"""OverlapWindowPlugin: compute as if there were no chunk breaks, for a finite look-around.

A plugin whose output for an item depends on inputs up to ``get_window_size()`` ns before or
after it (a cluster of peaks, an event window) cannot be computed near a chunk's end. So, per
step: the inputs cached from the previous step are prepended; compute runs on the lot; results
already sent are dropped; results that later input could still change (within the window of the
end) are held back and recomputed next time; inputs that the next computation may still need
(two windows before what was sent) are cached. The last step sends everything.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..chunk import Chunk, concat_arrays, split_index
from ..errors import CannotSplit, PluginGaveWrongOutput
from .base import Plugin, Work, refuse_parallel

__all__ = ["OverlapWindowPlugin", "common_split_time"]


def common_split_time(arrays: dict[str, np.ndarray], t: int, floor: int) -> int:
    """The latest time <= t where none of the arrays has an item straddling (at least floor)."""
    for _ in range(64):
        t_new = t
        for data in arrays.values():
            _, t_dt = split_index(data, t_new, allow_early_split=True)
            t_new = min(t_new, t_dt)
        t_new = max(t_new, floor)
        if t_new == t:
            return t
        t = t_new
    return t  # pragma: no cover - the split time only decreases


class OverlapWindowPlugin(Plugin):
    """Plugin whose items need inputs within a window around them, across chunk breaks.

    It carries its inputs and held-back results from one step to the next, so its steps
    must run one after another: it cannot be ``parallel`` (as in strax, where it never is).
    """

    parallel: ClassVar[bool | str] = False

    def __init__(self) -> None:
        super().__init__()
        refuse_parallel(self, "OverlapWindowPlugin",
                        "carries inputs and results from each step to the next")

    def get_window_size(self) -> Any:
        """Nanoseconds of input an output item may need on either side."""
        raise NotImplementedError(f"{self.name} must implement get_window_size()")

    def _window(self) -> int:
        declared = self.get_window_size()
        if isinstance(declared, (tuple, list)):
            # (before, after): strax's form for asymmetric windows; we cache the larger
            if len(declared) != 2 or min(declared) < 0:
                raise PluginGaveWrongOutput(
                    f"get_window_size() returned {declared!r}; give one number >= 0 or a "
                    f"(before, after) pair of numbers >= 0",
                    plugin=self.name,
                )
            return int(max(declared))
        window = int(declared)
        if window < 0:
            raise PluginGaveWrongOutput(
                f"get_window_size() returned {window}; it must be >= 0", plugin=self.name
            )
        return window

    def process_work(self, work: Work) -> list[dict[str, Chunk]]:
        """One step of the scheme in the module docstring; returns the output sent this step.

        Compute runs on the cached inputs plus the new ones; results sent before are dropped
        and those within a window of the step's end are held back (the last step sends them
        all). A ``flush`` step sends what was held back. A recomputed result that straddles
        the time up to which results were sent raises ``PluginGaveWrongOutput``: the declared
        window is too small.
        """
        state = self.__dict__.setdefault("_overlap_state", _OverlapState(work.start))
        if work.flush:
            return [state.flush(self, work.end)] if state.held is not None else []
        window = self._window()
        fresh = self.merge_inputs(work)
        inputs = {
            kind: concat_arrays([state.cached[kind], arr]) if kind in state.cached else arr
            for kind, arr in fresh.items()
        }
        compute_start = state.cache_start if state.cached else work.start
        result = self.call_compute(inputs, compute_start, work.end, work.chunk_i)
        outputs = self.fix_output(result, compute_start, work.end, work.chunk_i)
        new = {}
        for dt, chunk in outputs.items():
            try:
                i, _ = split_index(chunk.data, state.sent_until, allow_early_split=False)
            except CannotSplit as error:
                raise PluginGaveWrongOutput(
                    f"recomputed results straddle time {state.sent_until}, up to which results "
                    f"were already sent ({error.rule}); results must not change beyond the "
                    f"window that get_window_size() declares",
                    plugin=self.name,
                    data_type=dt,
                ) from None
            new[dt] = chunk.data[i:]
        if work.is_last:
            send_until = work.end
        else:
            send_until = common_split_time(new, work.end - window - 1, state.sent_until)
        sent = {}
        held = {}
        for dt, data in new.items():
            # the last step sends everything, zero-length items at the run's end included
            i = len(data) if work.is_last else split_index(
                data, send_until, allow_early_split=True)[0]
            sent[dt], held[dt] = data[:i], data[i:]
        out = {
            dt: self.chunk(start=state.sent_until, end=send_until, data=arr, data_type=dt)
            for dt, arr in sent.items()
        }
        state.sent_until = send_until
        state.held = None if work.is_last else held
        # Cache the inputs the next computation may need: two windows before what was sent.
        cache_from = common_split_time(inputs, send_until - 2 * window - 1, compute_start)
        state.cached = {}
        for kind, arr in inputs.items():
            i, _ = split_index(arr, cache_from, allow_early_split=True)
            state.cached[kind] = arr[i:]
        state.cache_start = cache_from
        return [out]


class _OverlapState:
    """What an overlap-window plugin carries from one step to the next."""

    def __init__(self, start: int) -> None:
        self.sent_until = start
        self.cached: dict[str, np.ndarray] = {}
        self.cache_start = start
        self.held: dict[str, np.ndarray] | None = None

    def flush(self, plugin: Plugin, end: int) -> dict[str, Chunk]:
        """After the last step: send what was held back."""
        held = self.held or {}
        out = {
            dt: plugin.chunk(start=self.sent_until, end=end, data=data, data_type=dt)
            for dt, data in held.items()
        }
        self.sent_until = end
        self.held = None
        return out
