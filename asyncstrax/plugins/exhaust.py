"""ExhaustPlugin: compute once, on the whole run's input.

As strax's ExhaustPlugin: for small, run-level data (a per-run summary, a fit over all events)
the plugin receives all of its input at once. The runtime's steps are collected (views of the
input, no compute) and at the end ``compute`` runs once with every input kind's whole array,
``start`` the first step's start, ``end`` the last step's end and ``chunk_i`` 0; its result
is one output chunk over that range. Multi-output works as for any plugin. The whole input is
held in memory, so keep it to what fits; an ExhaustPlugin cannot be ``parallel``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..chunk import Chunk, concat_arrays
from .base import Plugin, Work, refuse_parallel

__all__ = ["ExhaustPlugin"]


class ExhaustPlugin(Plugin):
    """Plugin that computes once, on all of its input."""

    parallel: ClassVar[bool | str] = False

    def __init__(self) -> None:
        super().__init__()
        refuse_parallel(self, "ExhaustPlugin", "computes once on all its input")
        self._collected: dict[str, list[np.ndarray]] = {}
        self._range: list[int] | None = None

    def process_work(self, work: Work) -> list[dict[str, Chunk]]:
        """Keep this step's inputs; at the last step, compute once on everything kept.

        Earlier steps return nothing; the last one (or the ``flush`` step, if the last data
        step was not known to be last) returns the one output, over the whole range seen.
        """
        for kind, array in self.merge_inputs(work).items():
            self._collected.setdefault(kind, []).append(array)
        if self._range is None:
            self._range = [work.start, work.end]
        self._range[1] = work.end
        if not (work.is_last or work.flush):
            return []
        start, end = self._range
        inputs = {kind: concat_arrays(arrays) for kind, arrays in self._collected.items()}
        self._collected = {}
        result = self.call_compute(inputs, start, end, 0)
        return [self.fix_output(result, start, end, 0)]
