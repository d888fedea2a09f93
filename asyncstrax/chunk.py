"""Chunks: a time range of one data type, and the rules every chunk obeys.

The rules (strax's, see DESIGN.md "Data model") are checked when a chunk is built, so bad data
is caught where it enters, with a message that quotes the chunk:

- the data has exactly the declared dtype;
- the data is sorted by ``time``;
- every item lies in ``[start, end)``: ``start <= time`` and ``endtime <= end``.

Chunk operations never copy when they can return views: ``split`` slices, ``concatenate`` of a
single non-empty chunk returns its array as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import (
    CannotSplit,
    ChunkBoundaryError,
    ChunkBoundsError,
    ChunkContinuityError,
    ChunkDtypeError,
    ChunkError,
    ChunkMergeError,
    ChunkSortError,
)

__all__ = ["Chunk", "endtime", "split_array", "split_index", "DEFAULT_CHUNK_TARGET_MB"]

DEFAULT_CHUNK_TARGET_MB = 200

#: from this many items on, chunk rules are checked in one numba pass (see _chunk_checks)
BIG_CHUNK_ITEMS = 5_000


def _check_bound(name: str, value: Any) -> int:
    """``value`` as a Python int; only ints and numpy integers are bounds (as in strax, a float
    is refused even when its value is integral: 1.0 ns is a sign of float arithmetic)."""
    if type(value) is int:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    raise ChunkBoundsError(
        f"chunk {name} must be an integer number of ns, got {value!r} ({type(value).__name__})"
    )


def endtime(data: np.ndarray) -> np.ndarray:
    """End time of each item: the ``endtime`` field, or ``time + dt * length``."""
    names = data.dtype.names or ()
    if "endtime" in names:
        return data["endtime"]
    if "dt" in names and "length" in names:
        return data["time"] + data["length"].astype(np.int64) * data["dt"].astype(np.int64)
    raise ChunkDtypeError(
        f"dtype {data.dtype} has no 'endtime' field and no 'dt' and 'length' fields"
    )


_CHECKED_DTYPES: set[np.dtype] = set()


def check_time_fields(dtype: np.dtype) -> None:
    """Raise unless the dtype carries strax's time fields."""
    if dtype in _CHECKED_DTYPES:
        return
    names = dtype.names or ()
    if "time" not in names:
        raise ChunkDtypeError(f"dtype {dtype} has no 'time' field")
    if "endtime" not in names and not ("dt" in names and "length" in names):
        raise ChunkDtypeError(
            f"dtype {dtype} needs an 'endtime' field, or 'dt' and 'length' fields"
        )
    if len(_CHECKED_DTYPES) < 10_000:
        _CHECKED_DTYPES.add(dtype)


def split_index(data: np.ndarray, t: int, allow_early_split: bool = False) -> tuple[int, int]:
    """Where to split sorted ``data`` at time ``t``: returns ``(index, split_time)``.

    Items with ``time < split_time`` go left and must end by ``split_time``. If an item would be
    cut in two at ``t`` and ``allow_early_split`` is true, the split moves to the latest earlier
    time at which no item straddles; otherwise ``CannotSplit`` is raised.
    """
    n = len(data)
    if n == 0:
        return 0, t
    times = data["time"]
    i = int(np.searchsorted(times, t, side="left"))
    if i == 0:
        return 0, t
    ends = endtime(data[:i])
    if int(ends.max()) <= t:
        return i, t
    if not allow_early_split:
        worst = int(np.argmax(ends > t))
        raise CannotSplit(
            f"cannot split at {t}: item {worst} spans [{int(times[worst])}, {int(ends[worst])})"
        )
    # A split just before item k is clean when every earlier item ends by time[k].
    reach = np.maximum.accumulate(ends)
    clean = np.empty(i, dtype=bool)
    clean[0] = True
    clean[1:] = reach[:-1] <= times[1:i]
    k = int(np.flatnonzero(clean)[-1])
    t_split = int(times[k])
    return int(np.searchsorted(times, t_split, side="left")), t_split


def split_array(
    data: np.ndarray, t: int, allow_early_split: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """Split sorted ``data`` at ``t``; returns ``(left, right, split_time)`` as views."""
    i, t_split = split_index(data, t, allow_early_split)
    return data[:i], data[i:], t_split


class Chunk:
    """A contiguous time range ``[start, end)`` of one data type of one run.

    Built with keyword arguments, as in strax. ``data=None`` means no items.
    """

    __slots__ = (
        "data",
        "data_kind",
        "data_type",
        "dtype",
        "end",
        "run_id",
        "start",
        "subruns",
        "target_size_mb",
    )

    def __init__(
        self,
        *,
        data_type: str,
        data_kind: str,
        dtype: Any,
        run_id: str,
        start: int,
        end: int,
        data: np.ndarray | None,
        subruns: dict | None = None,
        superrun: dict | None = None,
        target_size_mb: float = DEFAULT_CHUNK_TARGET_MB,
        chunk_i: int | None = None,
    ) -> None:
        try:
            start = _check_bound("start", start)
            end = _check_bound("end", end)
        except ChunkError as error:
            raise error.add_context(data_type=data_type, run_id=run_id, chunk_i=chunk_i) from None
        self.data_type = data_type
        self.data_kind = data_kind
        self.dtype = np.dtype(dtype)
        self.run_id = run_id
        self.start = start
        self.end = end
        self.subruns = subruns if subruns is not None else superrun
        self.target_size_mb = target_size_mb
        if data is None:
            data = np.zeros(0, dtype=self.dtype)
        self.data = data
        try:
            self._check()
        except ChunkError as error:
            raise error.add_context(
                data_type=data_type,
                run_id=run_id,
                chunk_i=chunk_i,
                time_range=(self.start, self.end),
            ) from None

    def _init_view(self, parent: Chunk, start: int, data: np.ndarray) -> Chunk:
        """Fill this (unchecked) chunk as the tail of ``parent`` from ``start``: no checks,
        for pieces that are valid by construction (the rest of a checked chunk)."""
        self.data_type = parent.data_type
        self.data_kind = parent.data_kind
        self.dtype = parent.dtype
        self.run_id = parent.run_id
        self.start = start
        self.end = parent.end
        self.subruns = parent.subruns
        self.target_size_mb = parent.target_size_mb
        self.data = data
        return self

    def _check(self) -> None:
        data = self.data
        if type(data) is np.ndarray and data.dtype is self.dtype and data.ndim == 1:
            pass  # the common case: skip the type checks below
        elif not isinstance(data, np.ndarray):
            raise ChunkDtypeError(
                f"chunk data must be a numpy structured array, got {type(data).__name__}"
            )
        elif data.dtype != self.dtype:
            raise ChunkDtypeError(
                f"data has dtype {data.dtype}, but the data type declares {self.dtype}"
            )
        elif data.ndim != 1:
            raise ChunkDtypeError(f"chunk data must be one-dimensional, got shape {data.shape}")
        if self.start < 0:
            raise ChunkBoundsError(f"chunk start {self.start} is negative; times are >= 0")
        if self.start > self.end:
            raise ChunkBoundsError(f"chunk start {self.start} is after its end {self.end}")
        check_time_fields(self.dtype)
        n = len(data)
        if n == 0:
            return
        if n >= BIG_CHUNK_ITEMS:
            self._check_big()
            return
        times = data["time"]
        if n > 1 and not bool((times[1:] >= times[:-1]).all()):
            bad = int(np.argmax(times[1:] < times[:-1]))
            raise ChunkSortError(
                f"data is not sorted by time: item {bad + 1} (time {int(times[bad + 1])}) "
                f"comes after item {bad} (time {int(times[bad])})"
            )
        first = int(times[0])
        if first < self.start:
            raise ChunkBoundaryError(
                f"item 0 starts at {first}, before the chunk start {self.start}"
            )
        ends = data["endtime"] if "endtime" in self.dtype.fields else endtime(data)
        last_end = int(ends.max()) if n > 1 else int(ends[0])
        if last_end > self.end:
            bad = int(np.argmax(ends > self.end))
            raise ChunkBoundaryError(
                f"item {bad} ends at {last_end}, after the chunk end {self.end}"
            )

    def _check_big(self) -> None:
        """The same rules in one numba pass, for chunks where numpy temporaries cost."""
        from . import _chunk_checks

        data = self.data
        if "endtime" in self.dtype.fields:  # type: ignore[operator]
            unsorted, worst, max_end = _chunk_checks.check_with_endtime(
                data["time"], data["endtime"])
        else:
            unsorted, worst, max_end = _chunk_checks.check_with_dt_length(
                data["time"], data["dt"], data["length"])
        if unsorted >= 0:
            times = data["time"]
            raise ChunkSortError(
                f"data is not sorted by time: item {unsorted} (time {int(times[unsorted])}) "
                f"comes after item {unsorted - 1} (time {int(times[unsorted - 1])})"
            )
        first = int(data["time"][0])
        if first < self.start:
            raise ChunkBoundaryError(
                f"item 0 starts at {first}, before the chunk start {self.start}"
            )
        if max_end > self.end:
            bad = int(np.argmax(endtime(data) > self.end))
            raise ChunkBoundaryError(
                f"item {bad} ends at {int(max_end)}, after the chunk end {self.end}"
            )

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self.data)

    @property
    def nbytes(self) -> int:
        """Bytes of the chunk's data."""
        return int(self.data.nbytes)

    @property
    def duration(self) -> int:
        """``end - start`` in ns."""
        return self.end - self.start

    @property
    def is_superrun(self) -> bool:
        """Whether the chunk holds data of several runs (a superrun's)."""
        return bool(self.subruns)

    def _mbs(self) -> float:
        """Megabytes per second of data time, as strax reports it."""
        if self.duration:
            return self.nbytes / 1e6 / (self.duration / 1e9)
        return 0.0

    def __repr__(self) -> str:
        return (
            f"[{self.run_id}.{self.data_type}: {self.start}-{self.end}, "
            f"{len(self)} items, {self.nbytes / 1e6:.1f} MB]"
        )

    def _like(self, start: int, end: int, data: np.ndarray) -> Chunk:
        """A chunk of the same data type with another range and data (rules still checked)."""
        return Chunk(
            data_type=self.data_type,
            data_kind=self.data_kind,
            dtype=self.dtype,
            run_id=self.run_id,
            start=start,
            end=end,
            data=data,
            subruns=self.subruns,
            target_size_mb=self.target_size_mb,
        )

    # ------------------------------------------------------------------ operations
    def split(self, t: int | None, allow_early_split: bool = False) -> tuple[Chunk, Chunk]:
        """Split into ``[start, t')`` and ``[t', end)``; views, no copy.

        ``t'`` is ``t``, or with ``allow_early_split`` the latest earlier time where no item
        straddles. ``t=None`` splits at the end (an empty second chunk).
        """
        if t is None:
            t = self.end
        t = int(min(max(t, self.start), self.end))
        try:
            i, t_split = split_index(self.data, t, allow_early_split)
        except CannotSplit as error:
            raise error.add_context(
                data_type=self.data_type, run_id=self.run_id, time_range=(self.start, self.end)
            ) from None
        t_split = max(t_split, self.start)
        return (
            self._like(self.start, t_split, self.data[:i]),
            self._like(t_split, self.end, self.data[i:]),
        )

    @classmethod
    def concatenate(cls, chunks: Sequence[Chunk]) -> Chunk:
        """Join contiguous chunks of one data type into one chunk."""
        if not chunks:
            raise ChunkError("cannot concatenate an empty list of chunks")
        first = chunks[0]
        if len(chunks) == 1:
            return first
        for prev, nxt in zip(chunks[:-1], chunks[1:]):
            if nxt.data_type != first.data_type:
                raise ChunkMergeError(
                    f"cannot concatenate {first.data_type!r} with {nxt.data_type!r}"
                )
            if nxt.start != prev.end:
                raise ChunkContinuityError(
                    f"chunks are not contiguous: one ends at {prev.end}, "
                    f"the next starts at {nxt.start}",
                    data_type=first.data_type,
                    run_id=first.run_id,
                )
        return first._like(first.start, chunks[-1].end, concat_arrays([c.data for c in chunks]))

    @classmethod
    def merge(cls, chunks: Sequence[Chunk], data_type: str = "<UNKNOWN>") -> Chunk:
        """Combine the fields of same-kind chunks covering the same range and items."""
        if not chunks:
            raise ChunkError("cannot merge an empty list of chunks")
        first = chunks[0]
        if len(chunks) == 1:
            return first
        for c in chunks[1:]:
            problem = None
            if c.data_kind != first.data_kind:
                problem = f"kinds differ: {first.data_kind!r} vs {c.data_kind!r}"
            elif (c.start, c.end) != (first.start, first.end):
                problem = (
                    f"ranges differ: {first.data_type} [{first.start}, {first.end}) vs "
                    f"{c.data_type} [{c.start}, {c.end})"
                )
            elif len(c) != len(first):
                problem = (
                    f"lengths differ: {first.data_type} has {len(first)} items, "
                    f"{c.data_type} has {len(c)}"
                )
            elif not np.array_equal(c.data["time"], first.data["time"]):
                problem = f"{first.data_type} and {c.data_type} have different item times"
            if problem:
                raise ChunkMergeError(
                    f"cannot merge chunks of kind {first.data_kind!r}: {problem}",
                    data_type=data_type,
                    run_id=first.run_id,
                    time_range=(first.start, first.end),
                )
        data = merge_arrays([c.data for c in chunks], [c.data_type for c in chunks])
        return Chunk(
            data_type=data_type,
            data_kind=first.data_kind,
            dtype=data.dtype,
            run_id=first.run_id,
            start=first.start,
            end=first.end,
            data=data,
            subruns=first.subruns,
            target_size_mb=first.target_size_mb,
        )


def concat_arrays(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate, returning the only non-empty array itself (no copy) when there is one."""
    non_empty = [a for a in arrays if len(a)]
    if len(non_empty) == 1:
        return non_empty[0]
    if not non_empty:
        return arrays[0][:0]
    # Not np.concatenate: it may normalize a structured dtype (byte order, alignment), and a
    # chunk's dtype must stay exactly what was declared.
    out = np.empty(sum(len(a) for a in non_empty), dtype=non_empty[0].dtype)
    i = 0
    for a in non_empty:
        out[i : i + len(a)] = a
        i += len(a)
    return out


def merged_dtype(dtypes: Sequence[np.dtype]) -> np.dtype:
    """The dtype holding every field of ``dtypes``, once; time fields appear once, first seen."""
    descr: list = []
    seen: set[str] = set()
    for dtype in dtypes:
        for name in dtype.names or ():
            if name in seen:
                continue
            seen.add(name)
            field = dtype.fields[name]  # type: ignore[index]
            title = field[2] if len(field) > 2 else None  # type: ignore[misc]
            descr.append(((title, name) if title else name, field[0]))
    return np.dtype(descr)


def merged_dtype_of(dtypes: Mapping[str, np.dtype]) -> np.dtype:
    """The merged dtype of data types of one kind, ``{data_type: dtype}``: fields in the order
    of the data types' names, as strax orders them whatever the order of ``depends_on``."""
    return merged_dtype([np.dtype(dtypes[dt]) for dt in sorted(dtypes)])


def merge_arrays(arrays: Sequence[np.ndarray],
                 data_types: Sequence[str] | None = None) -> np.ndarray:
    """Field-wise merge of equal-length structured arrays into one new array.

    On a field name shared by several arrays the last array's values are kept, as in strax.
    With ``data_types`` (one per array) the fields come in the order of the data types' names
    (``merged_dtype_of``), as strax's.
    """
    if data_types is None:
        dtype = merged_dtype([a.dtype for a in arrays])
    else:
        dtype = merged_dtype_of({dt: a.dtype for dt, a in zip(data_types, arrays)})
    out = np.empty(len(arrays[0]), dtype=dtype)
    for a in arrays:
        for name in a.dtype.names or ():
            out[name] = a[name]
    return out
