"""strax's small array and dtype helpers, under strax's names and with strax's results.

Plugins ported from strax call these from ``compute`` (``strax.merge_arrs``,
``strax.split_by_containment``, ...); here they are ``asyncstrax.<name>``, so the port is the
import line. ``sort_by_time``'s numba kernel is loaded on its first call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "camel_to_snake",
    "dict_to_rec",
    "merge_arrs",
    "merged_dtype",
    "remove_titles_from_dtype",
    "sort_by_time",
    "stable_argsort",
    "stable_sort",
    "to_str_tuple",
    "unpack_dtype",
]


def to_str_tuple(x: Any) -> tuple[Any, ...]:
    """A string (or bytes) as a 1-tuple; a list, tuple, array or pandas Series as a tuple."""
    if isinstance(x, (str, bytes)):
        return (x,)
    if isinstance(x, tuple):
        return x
    if isinstance(x, list):
        return tuple(x)
    if isinstance(x, np.ndarray):
        return tuple(x.tolist())
    if type(x).__name__ == "Series" and hasattr(x, "to_numpy"):  # pandas, without importing it
        return tuple(x.to_numpy().tolist())
    raise TypeError(f"expected a string or a sequence of strings, got {type(x).__name__}")


def camel_to_snake(name: str) -> str:
    """``PeakBasics`` -> ``peak_basics``; a run of capitals stays one word (``PeaksHE`` ->
    ``peaks_he``), as strax names what a plugin provides by default."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def unpack_dtype(dtype: Any) -> list[tuple]:
    """The field list that rebuilds ``dtype``: ``np.dtype(unpack_dtype(d)) == d`` (titles kept
    as ``((title, name), type)``)."""
    dtype = np.dtype(dtype)
    fields: Any = dtype.fields
    out: list[tuple] = []
    for name in dtype.names or ():
        info = fields[name]
        out.append(((info[2], name), info[0]) if len(info) > 2 else (name, info[0]))
    return out


def remove_titles_from_dtype(dtype: Any) -> np.dtype:
    """``dtype`` with the same fields and types but no titles (strax compares dtypes so)."""
    return np.dtype([(field[0][1] if isinstance(field[0], tuple) else field[0], field[1])
                     for field in unpack_dtype(dtype)])


def merged_dtype(dtypes: Iterable[Any]) -> list[tuple]:
    """The field list of all ``dtypes`` together; a name seen twice keeps its first field."""
    merged: dict[str, tuple] = {}
    for dtype in dtypes:
        for field in unpack_dtype(dtype):
            name = field[0][1] if isinstance(field[0], tuple) else field[0]
            merged.setdefault(name, field)
    return list(merged.values())


def merge_arrs(arrays: Sequence[np.ndarray], dtype: Any = None,
               replacing: bool = False) -> np.ndarray:
    """Field-wise merge of equal-length structured arrays (later arrays win on a shared name).

    One array comes back as it is unless ``replacing`` (then it is copied into ``dtype``).
    """
    if not len(arrays):
        raise ValueError("merge_arrs needs at least one array")
    if len(arrays) == 1 and not replacing:
        return arrays[0]
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) > 1:
        raise ValueError(f"arrays to merge must have the same length, got lengths {lengths}")
    out = np.zeros(lengths[0], dtype=merged_dtype(a.dtype for a in arrays) if dtype is None
                   else dtype)
    names = set(out.dtype.names or ())
    for array in arrays:
        for name in array.dtype.names or ():
            if name in names:
                out[name] = array[name]
    return out


def dict_to_rec(fields: Mapping[str, Any] | np.ndarray, dtype: Any = None) -> np.ndarray:
    """A structured array from ``{field: values}`` (an array is returned as it is); without
    ``dtype`` the fields take their values' types."""
    if isinstance(fields, np.ndarray):
        return fields
    if dtype is None:
        if not fields:
            raise ValueError("cannot infer a dtype from an empty dict")
        dtype = [(name, np.asarray(values).dtype) for name, values in fields.items()]
    if not fields:
        return np.zeros(0, dtype=dtype)
    out = np.zeros(len(next(iter(fields.values()))), dtype=dtype)
    for name, values in fields.items():
        out[name] = values
    return out


def _stable_kind(kind: str) -> None:
    if kind not in ("mergesort", "stable"):
        raise ValueError(f"sort kind {kind!r} is not stable, so results could depend on the "
                         f"platform; use kind='mergesort' (strax allows only that)")


def stable_sort(arr: np.ndarray, kind: str = "mergesort", **kwargs: Any) -> np.ndarray:
    """``np.sort`` that is always stable (equal keys keep their order), as strax requires."""
    _stable_kind(kind)
    return np.sort(arr, kind="stable", **kwargs)


def stable_argsort(arr: np.ndarray, kind: str = "mergesort", **kwargs: Any) -> np.ndarray:
    """``np.argsort`` that is always stable."""
    _stable_kind(kind)
    return np.argsort(arr, kind="stable", **kwargs)


def sort_by_time(x: np.ndarray) -> np.ndarray:
    """``x`` sorted by ``time``, stably (``x`` itself when already sorted)."""
    from .processing.hitfinder import sort_by_time as sort  # numba: loaded on first call

    return sort(x)
