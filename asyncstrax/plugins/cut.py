"""CutPlugin: a boolean per item, from ``cut_by``.

As strax's CutPlugin: define ``cut_by(self, <one argument per input kind>, [start, end],
[chunk_i])`` returning one boolean per item of the plugin's data kind (by default the kind of
its first dependency). The output dtype is derived: strax's time fields (``time``, ``endtime``,
taken from the input items) plus one boolean field named ``cut_name``, titled
``cut_description``. Defaults as strax's: ``cut_name`` is the class name in snake case;
``cut_description`` is ``"Cut by <name>"``, or for names containing ``cut_`` the name with
spaces for underscores. ``save_when`` is ``TARGET``.

A cut of the wrong length is a ``PluginGaveWrongOutput`` naming the plugin (a scalar is
broadcast to every item, as numpy does in strax).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np

from ..chunk import endtime
from ..dtypes import time_fields
from ..errors import InvalidConfiguration, PluginGaveWrongOutput
from ..helpers import camel_to_snake
from .base import Plugin, SaveWhen

__all__ = ["CutPlugin"]


class CutPlugin(Plugin):
    """Plugin providing one boolean field, ``cut_name``, per item of its data kind."""

    save_when: ClassVar[Any] = SaveWhen.TARGET
    # cut_name, cut_description: declare on the class to override the defaults
    _cut_takes_kwargs: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The engine passes inputs by the names cut_by takes, not compute's.
        params = inspect.signature(cls.cut_by).parameters
        names = tuple(
            p.name
            for p in params.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
        if ("start" in names) != ("end" in names):
            raise InvalidConfiguration(
                f"cut_by of {cls.__name__} takes only one of start and end; take both or neither"
            )
        cls._compute_args = names
        cls._cut_takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())

    def __init__(self) -> None:
        super().__init__()
        name = camel_to_snake(type(self).__name__)
        if getattr(type(self), "cut_name", None) is None:
            self.cut_name = name
        if getattr(type(self), "cut_description", None) is None:
            self.cut_description = (
                " ".join(name.split("_")) if "cut_" in name else "Cut by " + name
            )

    def cut_by(self, **kwargs: Any) -> Any:
        """One boolean per item (override this)."""
        raise NotImplementedError(f"{self.name} is a CutPlugin: define cut_by(...)")

    def infer_dtype(self) -> Any:
        """``time`` and ``endtime``, then the boolean ``cut_name`` titled ``cut_description``."""
        return [*time_fields, ((self.cut_description, self.cut_name), bool)]

    def _fix_declarations(self) -> None:
        if self.multi_output:
            raise InvalidConfiguration(
                f"{self.name} is a CutPlugin, which provides one data type, not "
                f"{list(self.provides)}",
                plugin=self.name,
            )
        super()._fix_declarations()
        kinds = self.dependencies_by_kind()
        if self.data_kind not in kinds:
            raise InvalidConfiguration(
                f"{self.name} is a CutPlugin of data kind {self.data_kind!r}, which is not the "
                f"kind of any of its inputs {list(kinds)}: a cut gives one boolean per input "
                f"item",
                plugin=self.name,
            )

    def compute(self, **kwargs: Any) -> Any:
        """Hand the inputs to ``cut_by``; ``call_compute`` makes the output items."""
        return self.cut_by(**kwargs)

    def call_compute(
        self, inputs: dict[str, np.ndarray], start: int, end: int, chunk_i: int
    ) -> Any:
        """Call ``cut_by`` and return one output item per input item of the plugin's data kind:
        that item's ``time`` and ``endtime``, and its cut value. A scalar cut applies to every
        item; a cut of another length raises ``PluginGaveWrongOutput``."""
        items = inputs[self.data_kind]
        data_args = [a for a in self._compute_args if a not in ("start", "end", "chunk_i")]
        if not data_args and self._cut_takes_kwargs:
            values = self.cut_by(**inputs)  # strax-style cut_by(self, **kwargs)
        else:
            values = super().call_compute(inputs, start, end, chunk_i)
        values = np.asarray(values)
        if values.ndim and values.shape != (len(items),):
            got = f"{len(values)} values" if values.ndim == 1 else f"values of shape {values.shape}"
            raise PluginGaveWrongOutput(
                f"cut_by of {self.name} gave {got} for {len(items)} items of "
                f"{self.data_kind!r}; a cut gives one boolean per item",
                plugin=self.name,
            )
        out = np.zeros(len(items), dtype=self.dtype)
        out["time"] = items["time"]
        out["endtime"] = endtime(items)
        out[self.cut_name] = values
        return out
