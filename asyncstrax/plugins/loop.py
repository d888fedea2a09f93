"""LoopPlugin: compute per item of a base kind, given the items of other kinds inside it.

As strax's LoopPlugin: ``loop_over`` names the base kind (by default the kind of the first
dependency); for every base item (an event, say) ``compute_loop(base_item, **others)`` gets the
items of every other input kind (``peaks=...``) selected by ``time_selection``:

- ``"fully_contained"`` (default): items with ``base.time <= time`` and
  ``endtime <= base.endtime``;
- ``"touching"``: items overlapping ``[base.time - touching_window,
  base.endtime + touching_window)`` (an item may then belong to several base items; strax warns
  about that, so do we).

``compute_loop`` returns a dict of field values for that base item (for a multi-output plugin,
a dict ``{data_type: {field: value}}``). The output has one item per base item. Where the result
leaves ``time``/``endtime`` out, they are taken from the base item (strax would leave zeros,
which no chunk accepts).

The selection is vectorized: once per step, with ``numpy.searchsorted`` on the base items' times
(the same result as strax's ``split_by_containment`` / ``touching_windows``). Only the call of
``compute_loop`` is a Python loop. To avoid that loop too, define
``compute_loop_vectorized(self, base, **others)``: it gets the whole base array and, per other
kind, an ``ItemGroups`` (the selected items and each base item's ``[start, stop)`` index range
into them, with ``reduce`` for per-base-item sums, maxima, ...), and returns what ``compute``
would (an array, a dict of field arrays, or for multi-output a dict of those).

The runtime synchronizes kinds so that no item straddles a step boundary, so a base item and the
items contained in or overlapping it always arrive in the same step. With ``touching_window > 0``
(or ``< 0``) items that only come within the window without overlapping may sit in a
neighbouring step and are then not seen, as in strax.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from ..chunk import endtime
from ..errors import InvalidConfiguration, PluginError, PluginGaveWrongOutput
from .base import Plugin

__all__ = [
    "ItemGroups",
    "LoopPlugin",
    "fully_contained_in",
    "split_by_containment",
    "split_touching_windows",
    "touching_windows",
]

LOOP_TIME_SELECTIONS = ("fully_contained", "touching")


class ItemGroups:
    """Items of one kind, grouped per base item: group ``i`` is ``data[starts[i]:stops[i]]``.

    For ``fully_contained`` the groups are disjoint and in order (``data`` holds only the items
    contained in some base item); for ``touching`` they may overlap.
    """

    __slots__ = ("data", "starts", "stops")

    def __init__(self, data: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> None:
        self.data = data
        self.starts = np.asarray(starts, dtype=np.int64)
        self.stops = np.maximum(np.asarray(stops, dtype=np.int64), self.starts)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.data[self.starts[i]:self.stops[i]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for s, e in zip(self.starts.tolist(), self.stops.tolist()):
            yield self.data[s:e]

    def __repr__(self) -> str:
        return f"ItemGroups({len(self)} groups of {len(self.data)} items)"

    @property
    def counts(self) -> np.ndarray:
        """Number of items per base item."""
        return self.stops - self.starts

    def owner(self) -> tuple[np.ndarray, np.ndarray]:
        """``(base_index, item_index)`` for every (base item, selected item) pair."""
        counts = self.counts
        base_index = np.repeat(np.arange(len(self), dtype=np.int64), counts)
        offsets = np.repeat(self.starts - np.cumsum(counts) + counts, counts)
        item_index = np.arange(len(base_index), dtype=np.int64) + offsets
        return base_index, item_index

    def reduce(self, values: Any, ufunc: np.ufunc = np.add, empty: Any = 0) -> np.ndarray:
        """``ufunc.reduce`` of ``values`` (a field name, or an array along ``data``) per group,
        e.g. ``groups.reduce("area")`` sums, ``groups.reduce("area", np.maximum)``; groups
        without items get ``empty``."""
        if isinstance(values, str):
            values = self.data[values]
        values = np.asarray(values)
        if len(values) != len(self.data):
            raise ValueError(
                f"reduce needs one value per item ({len(self.data)}), got {len(values)}"
            )
        dtype = ufunc.reduceat(np.zeros(1, values.dtype), [0]).dtype
        counts = self.counts
        n = len(self)
        if n == 0 or not counts.any():
            return np.full((n, *values.shape[1:]), empty, dtype=dtype)
        # One padding element so that every stop is a valid index; reduce over the pairs
        # (start, stop) and keep every other result.
        padded = np.concatenate([values, values[-1:]])
        idx = np.empty(2 * n, dtype=np.int64)
        idx[0::2] = self.starts
        idx[1::2] = self.stops
        reduced = ufunc.reduceat(padded, idx)[0::2]
        reduced[counts == 0] = empty
        return reduced


# ---------------------------------------------------------------------- selections (vectorized)
def fully_contained_in(things: np.ndarray, containers: np.ndarray) -> np.ndarray:
    """For each thing, the index of the container it lies fully inside, or -1 (as strax's).

    Both sorted by time. Where containers overlap, the first container that has not ended
    before the thing starts is the only one considered, as in strax.
    """
    result = np.full(len(things), -1, dtype=np.int64)
    if not len(things) or not len(containers):
        return result
    c_ends = endtime(containers)
    t_start = things["time"]
    # strax walks a pointer past containers ending at or before each thing's start; with things
    # sorted that is the first container whose running-max end exceeds the start.
    reach = np.maximum.accumulate(c_ends)
    candidate = np.searchsorted(reach, t_start, side="right")
    valid = candidate < len(containers)
    c = np.minimum(candidate, len(containers) - 1)
    inside = valid & (containers["time"][c] <= t_start) & (endtime(things) <= c_ends[c])
    result[inside] = c[inside]
    return result


def split_by_containment(things: np.ndarray, containers: np.ndarray) -> ItemGroups:
    """The things fully contained in each container, as ``ItemGroups`` (strax's semantics)."""
    which = fully_contained_in(things, containers)
    mask = which >= 0
    if mask.all():
        data = things
    else:
        data = things[mask]
        which = which[mask]
    ids = np.arange(len(containers))
    return ItemGroups(
        data,
        np.searchsorted(which, ids, side="left"),
        np.searchsorted(which, ids, side="right"),
    )


def touching_windows(
    things: np.ndarray, containers: np.ndarray, window: int = 0
) -> np.ndarray:
    """``(n_containers, 2)`` index ranges of things overlapping each container +- window.

    Same result as strax's ``touching_windows``: a range starts at the first thing ending after
    ``container.time - window`` and stops before the first thing starting at or after
    ``container.endtime + window``.
    """
    result = np.zeros((len(containers), 2), dtype=np.int64)
    if not len(things) or not len(containers):
        return result
    reach = np.maximum.accumulate(endtime(things))
    result[:, 0] = np.searchsorted(reach, containers["time"] - window, side="right")
    result[:, 1] = np.searchsorted(things["time"], endtime(containers) + window, side="left")
    return result


def split_touching_windows(
    things: np.ndarray, containers: np.ndarray, window: int = 0
) -> ItemGroups:
    """The things overlapping each container +- ``window``, as ``ItemGroups`` (the ranges of
    ``touching_windows``; strax's ``split_touching_windows``). Unlike with containment, a thing
    may be in several groups."""
    windows = touching_windows(things, containers, window)
    return ItemGroups(things, windows[:, 0], windows[:, 1])


# ---------------------------------------------------------------------- the plugin
class LoopPlugin(Plugin):
    """Plugin computed per item of a base kind, with the other kinds' items inside each."""

    #: "fully_contained" (default) or "touching"
    time_selection: ClassVar[str] = "fully_contained"
    #: for "touching": how far (ns) beyond the base item an item may lie and still be selected
    touching_window: ClassVar[int] = 0
    # loop_over: the base data kind; default the first dependency's kind (declare to change)

    def _loop_kind(self) -> str:
        declared = getattr(self, "loop_over", None)
        if declared is None:
            first = self.depends_on[0]
            return self.deps[first].data_kind_for(first)
        return declared

    def _fix_declarations(self) -> None:
        if not self.depends_on:
            raise InvalidConfiguration(
                f"{self.name} is a LoopPlugin, so it needs at least one dependency",
                plugin=self.name,
            )
        loop_over = self._loop_kind()
        kinds = self.dependencies_by_kind()
        if not isinstance(loop_over, str) or loop_over not in kinds:
            raise InvalidConfiguration(
                f"loop_over of {self.name} is {loop_over!r}, which is not the data kind of any "
                f"of its inputs {list(kinds)}; set 'loop_over = <one of those kinds>'",
                plugin=self.name,
            )
        if self.time_selection not in LOOP_TIME_SELECTIONS:
            raise InvalidConfiguration(
                f"time_selection of {self.name} is {self.time_selection!r}; a LoopPlugin "
                f"selects by one of {LOOP_TIME_SELECTIONS}",
                plugin=self.name,
            )
        declared_kind = type(self).data_kind if "data_kind" not in vars(self) else self.data_kind
        if not declared_kind:
            # One output item per base item: the output is of the base kind.
            self.data_kind = loop_over
        super()._fix_declarations()

    def compute_loop(self, base_item: Any, **others: np.ndarray) -> dict[str, Any]:
        """Field values of the output item for one base item (override this)."""
        raise NotImplementedError(
            f"{self.name} is a LoopPlugin: define compute_loop(self, <base item>, **others) "
            f"or compute_loop_vectorized(self, base, **groups)"
        )

    def compute_loop_vectorized(self, base: np.ndarray, **groups: ItemGroups) -> Any:
        """Optional: the whole step at once; ``groups[kind]`` are ItemGroups per base item."""
        raise NotImplementedError

    def _has_vectorized(self) -> bool:
        return type(self).compute_loop_vectorized is not LoopPlugin.compute_loop_vectorized

    def compute(self, **kwargs: Any) -> Any:  # the engine calls call_compute below
        """Not used: define ``compute_loop`` or ``compute_loop_vectorized`` instead."""
        raise NotImplementedError

    def call_compute(
        self, inputs: dict[str, np.ndarray], start: int, end: int, chunk_i: int
    ) -> Any:
        """Group the other kinds' items per base item (``time_selection``), then call
        ``compute_loop_vectorized`` once if defined, else ``compute_loop`` per base item.

        Returns one output item per base item. Base items must not overlap (``PluginError``).
        """
        loop_over = self._loop_kind()
        base = inputs[loop_over]
        if len(base) > 1:
            ends = endtime(base)
            overlapping = base["time"][1:] < ends[:-1]
            if overlapping.any():
                i = int(np.argmax(overlapping))
                raise PluginError(
                    f"{self.name} loops over {loop_over!r}, but its items overlap: item {i} "
                    f"[{int(base['time'][i])}, {int(ends[i])}) and item {i + 1} starting at "
                    f"{int(base['time'][i + 1])}; loop over a kind of disjoint intervals",
                    plugin=self.name,
                )
        groups = {
            kind: self._select(kind, things, base)
            for kind, things in inputs.items()
            if kind != loop_over
        }
        if self._has_vectorized():
            result = self.compute_loop_vectorized(base, **groups)
            return self._vectorized_result(result, base)
        return self._loop(base, groups)

    def _select(self, kind: str, things: np.ndarray, base: np.ndarray) -> ItemGroups:
        if self.time_selection == "fully_contained":
            return split_by_containment(things, base)
        if not getattr(self, "_warned_touching", False):
            self._warned_touching = True
            warnings.warn(
                f"{self.name} has a touching time selection: two {self._loop_kind()} items "
                f"may touch the same {kind} item, which is then given to both",
                stacklevel=2,
            )
        return split_touching_windows(things, base, int(self.touching_window))

    # ------------------------------------------------------------------ building the output
    def _blank(self, data_type: str, base: np.ndarray) -> np.ndarray:
        out = np.zeros(len(base), dtype=self.dtype_for(data_type))
        names = out.dtype.names or ()
        out["time"] = base["time"]
        if "endtime" in names:
            out["endtime"] = endtime(base)
        return out

    def _loop(self, base: np.ndarray, groups: Mapping[str, ItemGroups]) -> Any:
        outputs = {dt: self._blank(dt, base) for dt in self.provides}
        columns = {dt: {n: out[n] for n in out.dtype.names or ()} for dt, out in outputs.items()}
        single = None if self.multi_output else columns[self.provides[0]]
        kinds = list(groups)
        group_list = [groups[k] for k in kinds]
        for i in range(len(base)):
            others = {k: g[i] for k, g in zip(kinds, group_list)}
            result = self.compute_loop(base[i], **others)
            if not isinstance(result, Mapping):
                raise PluginGaveWrongOutput(
                    f"compute_loop of {self.name} must return a dict of field values, got "
                    f"{type(result).__name__}",
                    plugin=self.name,
                )
            if single is not None:
                self._store(single, result, i, self.provides[0])
                continue
            if set(result) != set(self.provides):
                raise PluginGaveWrongOutput(
                    f"compute_loop of multi-output {self.name} must return "
                    f"{{data_type: {{field: value}}}} for {sorted(self.provides)}, got keys "
                    f"{sorted(map(str, result))}",
                    plugin=self.name,
                )
            for dt, values in result.items():
                if not isinstance(values, Mapping):
                    raise PluginGaveWrongOutput(
                        f"compute_loop of {self.name} gave {type(values).__name__} for {dt!r}; "
                        f"expected a dict of field values",
                        plugin=self.name,
                    )
                self._store(columns[dt], values, i, dt)
        if self.multi_output:
            return outputs
        return outputs[self.provides[0]]

    def _store(self, columns: dict[str, np.ndarray], values: Mapping, i: int, dt: str) -> None:
        for name, value in values.items():
            column = columns.get(name)
            if column is None:
                raise PluginGaveWrongOutput(
                    f"compute_loop of {self.name} returned field {name!r}, which is not in the "
                    f"dtype of {dt!r} {list(columns)}",
                    plugin=self.name,
                )
            if not _fills(np.shape(value), column.shape[1:]):
                raise PluginGaveWrongOutput(
                    f"compute_loop of {self.name} returned {name!r} of shape {np.shape(value)} "
                    f"for one {self._loop_kind()} item, but {dt!r} holds shape "
                    f"{column.shape[1:]}; a LoopPlugin gives one output item per base item",
                    plugin=self.name,
                )
            column[i] = value  # a scalar fills an array field, as in strax

    def _vectorized_result(self, result: Any, base: np.ndarray) -> Any:
        if not self.multi_output:
            return self._vectorized_one(result, base, self.provides[0])
        if not isinstance(result, Mapping) or set(result) != set(self.provides):
            got = sorted(map(str, result)) if isinstance(result, Mapping) else type(
                result).__name__
            raise PluginGaveWrongOutput(
                f"compute_loop_vectorized of multi-output {self.name} must return a dict with "
                f"keys {sorted(self.provides)}, got {got}",
                plugin=self.name,
            )
        return {dt: self._vectorized_one(v, base, dt) for dt, v in result.items()}

    def _vectorized_one(self, value: Any, base: np.ndarray, dt: str) -> np.ndarray:
        if isinstance(value, np.ndarray) and value.dtype.names:
            if len(value) != len(base):
                raise PluginGaveWrongOutput(
                    f"compute_loop_vectorized of {self.name} returned {len(value)} items of "
                    f"{dt!r} for {len(base)} {self._loop_kind()} items",
                    plugin=self.name,
                )
            return value
        if not isinstance(value, Mapping):
            raise PluginGaveWrongOutput(
                f"compute_loop_vectorized of {self.name} must return an array or a dict of "
                f"field arrays for {dt!r}, got {type(value).__name__}",
                plugin=self.name,
            )
        out = self._blank(dt, base)
        for name, column in value.items():
            if name not in (out.dtype.names or ()):
                raise PluginGaveWrongOutput(
                    f"compute_loop_vectorized of {self.name} returned field {name!r}, which is "
                    f"not in the dtype of {dt!r}",
                    plugin=self.name,
                )
            column = np.asarray(column)
            if column.shape[:1] != (len(base),) and column.ndim:
                raise PluginGaveWrongOutput(
                    f"compute_loop_vectorized of {self.name} returned {len(column)} values of "
                    f"{name!r} for {len(base)} {self._loop_kind()} items",
                    plugin=self.name,
                )
            out[name] = column
        return out



def _fills(shape: tuple[int, ...], field_shape: tuple[int, ...]) -> bool:
    """Whether a value of ``shape`` fills a field of ``field_shape`` (numpy broadcasting: a
    scalar fills a vector field, as strax's loop plugins allow; a wrong length does not)."""
    try:
        return np.broadcast_shapes(shape, field_shape) == field_shape
    except ValueError:
        return False
