"""MergeOnlyPlugin: one data type holding the fields of several data types of one kind.

As strax's MergeOnlyPlugin: no compute of its own; the dtype is the merged dtype of its
dependencies (``infer_dtype``), fields in the order strax uses (dependencies sorted by name, a
field name shared by several appearing once, its values from the last), so the saved layout is
strax's. All dependencies must be of one data kind. ``save_when`` is ``EXPLICIT``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from ..chunk import merged_dtype_of
from ..errors import InvalidConfiguration
from .base import Plugin, SaveWhen, Work

__all__ = ["MergeOnlyPlugin"]


class MergeOnlyPlugin(Plugin):
    """Plugin that merges same-kind data types into one."""

    save_when: ClassVar[Any] = SaveWhen.EXPLICIT

    def infer_dtype(self) -> Any:
        """The dependencies' dtypes merged in strax's field order (one dependency: its dtype)."""
        if len(self.depends_on) == 1:
            (dt,) = self.depends_on
            return self.deps[dt].dtype_for(dt)
        return merged_dtype_of({dt: self.deps[dt].dtype_for(dt) for dt in self.depends_on})

    def _fix_declarations(self) -> None:
        if self.multi_output:
            raise InvalidConfiguration(
                f"{self.name} is a MergeOnlyPlugin, which provides one data type, not "
                f"{list(self.provides)}",
                plugin=self.name,
            )
        if not self.depends_on:
            raise InvalidConfiguration(
                f"{self.name} is a MergeOnlyPlugin without dependencies: nothing to merge",
                plugin=self.name,
            )
        kinds = self.dependencies_by_kind()
        if len(kinds) != 1:
            raise InvalidConfiguration(
                f"{self.name} is a MergeOnlyPlugin, which merges data of one kind, but its "
                f"dependencies are of several kinds: {kinds}",
                plugin=self.name,
            )
        super()._fix_declarations()

    def merge_inputs(self, work: Work) -> dict[str, np.ndarray]:
        """As ``Plugin.merge_inputs``, with the data types sorted by name first."""
        # Merge in strax's order (data types sorted by name), the order infer_dtype promised.
        parts = {kind: sorted(pieces, key=lambda p: p[0]) for kind, pieces in work.parts.items()}
        return super().merge_inputs(replace(work, parts=parts))

    def compute(self, **kwargs: Any) -> Any:  # the engine calls call_compute below
        """The merged input, unchanged; unused, as ``call_compute`` returns it directly."""
        return next(iter(kwargs.values()))

    def call_compute(
        self, inputs: dict[str, np.ndarray], start: int, end: int, chunk_i: int
    ) -> Any:
        """The merged array of the one input kind is the output: there is nothing to compute."""
        (merged,) = inputs.values()
        return merged
