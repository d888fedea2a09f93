"""The Plugin base class: what a plugin declares, and how its compute is called.

A plugin is declared as in strax: ``provides``, ``depends_on``, ``data_kind``, ``dtype`` (or
``infer_dtype()``), ``__version__``, options, ``parallel``, ``save_when``, ``rechunk_on_save``,
``compressor``, and ``compute(self, <one argument per input kind>, [start, end], [chunk_i])``.

The runtime never calls ``compute`` on the event loop: it hands a ``Work`` item (one synchronized
time range of every input kind) to ``process_work`` on a worker thread, which merges inputs,
calls ``compute`` and turns its result into checked Chunks. Source plugins either follow strax's
protocol (``is_ready(chunk_i)``, ``source_finished()``, ``compute(chunk_i)``) or are written as
``async def iterate(self)`` yielding chunks, which is how a DAQ reader feeds the engine.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np

from ..chunk import DEFAULT_CHUNK_TARGET_MB, Chunk, check_time_fields, concat_arrays, merge_arrays
from ..errors import (
    AsyncstraxError,
    ChunkError,
    ChunkMergeError,
    InvalidConfiguration,
    PluginError,
    PluginGaveWrongOutput,
)
from ..helpers import camel_to_snake, remove_titles_from_dtype
from ..options import Option

__all__ = ["Plugin", "SaveWhen", "Work"]


class SaveWhen(IntEnum):
    """When a plugin's output is saved (strax's values)."""

    NEVER = 0
    EXPLICIT = 1
    TARGET = 2
    ALWAYS = 3


@dataclass
class Work:
    """One synchronized step of a plugin: its inputs for ``[start, end)``.

    ``parts`` maps each input data kind to ``[(data_type, [arrays...]), ...]``; the arrays of a
    data type are consecutive pieces (views) still to be joined, which happens on the worker.
    """

    chunk_i: int
    start: int
    end: int
    parts: dict[str, list[tuple[str, list[np.ndarray]]]] = field(default_factory=dict)
    #: no input will follow this step
    is_last: bool = False
    #: an empty step at the end, only to tell plugins that hold data back to let it go
    flush: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes of input data in this step, over all pieces."""
        total = 0
        for pieces in self.parts.values():
            for _, arrays in pieces:
                for a in arrays:
                    total += a.nbytes
        return total


def _as_tuple(x: Any) -> tuple[str, ...]:
    if x is None:
        return ()
    if isinstance(x, str):
        return (x,)
    return tuple(x)


class Plugin:
    """Base class of every plugin; subclass it and declare what you provide and need."""

    provides: ClassVar[Any] = ()
    depends_on: ClassVar[Any] = ()
    data_kind: Any = ()
    dtype: Any = None
    __version__: ClassVar[str] = "0.0.0"
    parallel: ClassVar[bool | str] = False
    save_when: ClassVar[Any] = SaveWhen.ALWAYS
    rechunk_on_save: ClassVar[bool] = True
    compressor: ClassVar[str] = "blosc"
    chunk_target_size_mb: ClassVar[float] = DEFAULT_CHUNK_TARGET_MB
    takes_config: ClassVar[dict[str, Option]] = {}
    child_plugin: ClassVar[bool] = False
    _compute_args: ClassVar[tuple[str, ...]] = ()
    #: seconds between ``is_ready`` polls of a strax-style source plugin
    source_poll_interval: ClassVar[float] = 0.05

    # set by the Context when the plugin is configured for a request
    run_id: str
    config: dict[str, Any]
    deps: dict[str, Plugin]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        options: dict[str, Option] = {}
        for klass in reversed(cls.__mro__):
            options.update(getattr(klass, "takes_config", {}) or {})
            for value in vars(klass).values():
                if isinstance(value, Option) and value.name:
                    options[value.name] = value
        cls.takes_config = options
        cls._compute_args = _compute_signature(cls)

    def __init__(self) -> None:
        provides = _as_tuple(type(self).provides) or (camel_to_snake(type(self).__name__),)
        self.provides = provides  # type: ignore[misc]
        self.depends_on = _as_tuple(type(self).depends_on)  # type: ignore[misc]
        self.config = {}
        self.deps = {}
        self.run_id = ""

    # ------------------------------------------------------------------ declaration
    @property
    def multi_output(self) -> bool:
        """True if the plugin provides several data types; its ``dtype`` and ``data_kind`` are
        then dicts by data type."""
        return len(self.provides) > 1

    @property
    def name(self) -> str:
        """The class name: how errors, logs and statistics refer to the plugin."""
        return type(self).__name__

    def version(self, run_id: str | None = None) -> str:
        """The version string that goes into the lineage."""
        return str(type(self).__version__)

    def infer_dtype(self) -> Any:
        """Override to compute the dtype from the dependencies' dtypes (``self.deps``)."""
        raise InvalidConfiguration(
            f"plugin {self.name} declares no dtype and does not override infer_dtype()"
        )

    def dtype_for(self, data_type: str) -> np.dtype:
        """The dtype of ``data_type``, one of the data types this plugin provides.

        A numpy dtype once the Context has configured the plugin; before that, what the class
        declares."""
        if self.multi_output:
            return self.dtype[data_type]
        return self.dtype

    def data_kind_for(self, data_type: str) -> str:
        """The data kind of ``data_type``, one of the data types this plugin provides."""
        if self.multi_output:
            return self.data_kind[data_type]
        return self.data_kind

    def dependencies_by_kind(self) -> dict[str, list[str]]:
        """Input data types grouped by data kind, in ``depends_on`` order."""
        kinds: dict[str, list[str]] = {}
        for dt in self.depends_on:
            kinds.setdefault(self.deps[dt].data_kind_for(dt), []).append(dt)
        return kinds

    def is_source(self) -> bool:
        """True if the plugin depends on nothing: it makes its data itself (a DAQ reader, a
        simulator, a stream subscriber)."""
        return not self.depends_on

    def _fix_declarations(self) -> None:
        """Normalize dtype and data_kind once dependencies are known (called by the Context)."""
        parallel = type(self).parallel if "parallel" not in vars(self) else self.parallel
        if parallel not in (False, True, "process"):
            raise InvalidConfiguration(
                f"parallel must be False, True (threads) or 'process', not {parallel!r}",
                plugin=self.name)
        declared = type(self).dtype if "dtype" not in vars(self) else self.dtype
        dtype = declared if declared is not None else self.infer_dtype()
        if self.multi_output:
            if not isinstance(dtype, dict) or set(dtype) != set(self.provides):
                raise InvalidConfiguration(
                    f"plugin {self.name} provides {list(self.provides)}, so its dtype must be a "
                    f"dict with exactly those keys",
                    plugin=self.name,
                )
            self.dtype = {k: to_numpy_dtype(v) for k, v in dtype.items()}
        else:
            if isinstance(dtype, dict):
                dtype = dtype.get(self.provides[0], dtype)
            self.dtype = to_numpy_dtype(dtype)
        for dt in self.provides:
            try:
                check_time_fields(self.dtype_for(dt))
            except ChunkError as error:
                raise InvalidConfiguration(
                    f"dtype of {dt!r} is unusable: {error.rule}", plugin=self.name
                ) from None
        kind = type(self).data_kind if "data_kind" not in vars(self) else self.data_kind
        if self.multi_output:
            if isinstance(kind, dict):
                missing = set(self.provides) - set(kind)
                if missing:
                    raise InvalidConfiguration(
                        f"data_kind of plugin {self.name} lacks {sorted(missing)}",
                        plugin=self.name,
                    )
                self.data_kind = dict(kind)
            elif isinstance(kind, str) and kind:
                self.data_kind = {dt: kind for dt in self.provides}
            else:
                self.data_kind = {dt: dt for dt in self.provides}
        else:
            if isinstance(kind, dict):
                kind = kind.get(self.provides[0], "")
            if not kind:
                if self.depends_on:
                    first = self.depends_on[0]
                    kind = self.deps[first].data_kind_for(first)
                else:
                    kind = self.provides[0]
            self.data_kind = kind

    # ------------------------------------------------------------------ user hooks
    def setup(self) -> None:
        """Runs once, after configuration and before the first chunk."""

    def warm_up(self) -> None:
        """Load now what the first chunk would otherwise load (numba kernels from their cache).

        Runs once, on a worker, right after ``setup()`` and before the first input arrives, so
        a fresh process loads every plugin's kernels while its sources produce the first chunk.
        """

    def compute(self, *args: Any, **kwargs: Any) -> Any:
        """Make this plugin's output for one step of input (override this).

        The engine passes one array per input data kind, by kind name when the parameters are
        named after the kinds, else in order; and ``start``, ``end`` (the inputs' time range)
        and ``chunk_i`` if compute takes them. Return a numpy array of the declared dtype, a
        dict of field arrays or a Chunk; a multi-output plugin returns a dict of those by data
        type. A strax-style source's compute gets only ``chunk_i`` (if it takes it) and returns
        ``self.chunk(...)``.
        """
        raise NotImplementedError(f"plugin {self.name} must implement compute()")

    def is_ready(self, chunk_i: int) -> bool:
        """strax source protocol: whether chunk ``chunk_i`` can be computed now."""
        raise PluginError(
            f"source plugin {self.name} must implement is_ready() and source_finished(), "
            f"or be written as 'async def iterate(self)'",
            plugin=self.name,
        )

    def source_finished(self) -> bool:
        """strax source protocol: whether no chunk beyond the ready ones will come."""
        raise PluginError(
            f"source plugin {self.name} must implement source_finished()", plugin=self.name
        )

    def iterate(self) -> AsyncIterator[Any]:  # pragma: no cover - replaced by subclasses
        """Native source form: ``async def iterate(self)`` yielding Chunks (or dicts of them)."""
        raise NotImplementedError

    def has_native_iterate(self) -> bool:
        """True if the class defines ``iterate``: the engine then runs this source as an async
        generator instead of polling ``is_ready``."""
        return type(self).iterate is not Plugin.iterate

    # ------------------------------------------------------------------ helpers for users
    def chunk(
        self, *, start: int, end: int, data: Any, data_type: str | None = None
    ) -> Chunk:
        """Build an output Chunk of this plugin, as strax's ``self.chunk(...)``."""
        if data_type is None:
            if self.multi_output:
                raise PluginGaveWrongOutput(
                    "a multi-output plugin must name the data_type of each chunk",
                    plugin=self.name,
                )
            data_type = self.provides[0]
        dtype = self.dtype_for(data_type)
        if isinstance(data, dict):
            data = dict_to_array(data, dtype)
        elif isinstance(data, np.ndarray) and data.dtype != dtype:
            # strax compares dtypes without titles: a title-less twin is the declared dtype
            data = _retitled(data, dtype)
        return Chunk(
            data_type=data_type,
            data_kind=self.data_kind_for(data_type),
            dtype=dtype,
            run_id=self.run_id,
            start=start,
            end=end,
            data=data,
            target_size_mb=self.chunk_target_size_mb,
        )

    def empty_result(self) -> Any:
        """Output without items: an empty array of the dtype, or for a multi-output plugin a
        dict of them by data type."""
        if self.multi_output:
            return {dt: np.zeros(0, self.dtype[dt]) for dt in self.provides}
        return np.zeros(0, self.dtype)

    # ------------------------------------------------------------------ engine side
    def stream(self, inputs: Any) -> AsyncIterator[dict[str, Chunk]]:
        """The engine's form of this plugin; the runtime replaces it per plugin kind."""
        raise NotImplementedError

    def merge_inputs(self, work: Work) -> dict[str, np.ndarray]:
        """Join each data type's pieces and merge data types of one kind (on the worker)."""
        merged = {}
        for kind, pieces in work.parts.items():
            if len(pieces) == 1 and len(pieces[0][1]) == 1:
                merged[kind] = pieces[0][1][0]
                continue
            arrays = [concat_arrays(arrs) for _, arrs in pieces]
            if len(arrays) == 1:
                merged[kind] = arrays[0]
                continue
            lengths = {dt: len(a) for (dt, _), a in zip(pieces, arrays)}
            if len(set(lengths.values())) > 1:
                raise ChunkMergeError(
                    f"inputs of kind {kind!r} have different numbers of items in the same "
                    f"range: {lengths}; data types of one kind must correspond one to one",
                    time_range=(work.start, work.end),
                )
            merged[kind] = merge_arrays(arrays, [dt for dt, _ in pieces])
        return merged

    def process_work(self, work: Work) -> list[dict[str, Chunk]]:
        """Run compute on one synchronized step; returns the output chunks (on the worker).

        Family plugins that hold data back (overlap windows, rechunkers) override this; a
        ``flush`` step carries no data and only matters to them.
        """
        if work.flush:
            return []
        inputs = self.merge_inputs(work)
        result = self.call_compute(inputs, work.start, work.end, work.chunk_i)
        return [self.fix_output(result, work.start, work.end, work.chunk_i)]

    def call_compute(
        self, inputs: dict[str, np.ndarray], start: int, end: int, chunk_i: int
    ) -> Any:
        """Call compute with one argument per input kind (by name, else in order)."""
        plan = self.__dict__.get("_call_plan")
        if plan is None or plan[0] != tuple(inputs):
            plan = self.__dict__["_call_plan"] = self._make_call_plan(tuple(inputs))
        _, names, extras = plan
        kwargs = dict(zip(names, inputs.values()))
        if extras:
            if "start" in extras:
                kwargs["start"] = start
                kwargs["end"] = end
            if "chunk_i" in extras:
                kwargs["chunk_i"] = chunk_i
        return self.compute(**kwargs)

    def _make_call_plan(self, kinds: tuple[str, ...]) -> tuple:
        args = type(self)._compute_args
        data_names = [a for a in args if a not in ("start", "end", "chunk_i")]
        extras = tuple(a for a in args if a in ("start", "end", "chunk_i"))
        if set(data_names) == set(kinds):
            names: tuple[str, ...] = kinds
        elif getattr(args, "var_keyword", False) and set(data_names) <= set(kinds):
            # compute(self, [some kinds,] **kwargs): as strax, every kind by its name; start,
            # end and chunk_i only where compute names them
            names = kinds
        elif len(data_names) == len(kinds):
            names = tuple(data_names)  # positional, in the order of the input kinds
        else:
            raise InvalidConfiguration(
                f"compute of {self.name} takes {data_names} but the plugin has "
                f"{len(kinds)} input kind(s): {list(kinds)}",
                plugin=self.name,
            )
        return kinds, names, extras

    def fix_output(self, result: Any, start: int, end: int, chunk_i: int) -> dict[str, Chunk]:
        """Turn what compute returned into checked Chunks, one per provided data type."""
        try:
            if self.multi_output:
                if not isinstance(result, dict) or set(result) != set(self.provides):
                    got = sorted(result) if isinstance(result, dict) else type(result).__name__
                    raise PluginGaveWrongOutput(
                        f"a multi-output plugin must return a dict with keys "
                        f"{sorted(self.provides)}, got {got}"
                    )
                return {
                    dt: self._to_chunk(value, dt, start, end) for dt, value in result.items()
                }
            dt = self.provides[0]
            return {dt: self._to_chunk(result, dt, start, end)}
        except AsyncstraxError as error:
            raise _as_wrong_output(error).add_context(
                plugin=self.name, chunk_i=chunk_i, run_id=self.run_id
            ) from None

    def _to_chunk(self, value: Any, data_type: str, start: int, end: int) -> Chunk:
        if isinstance(value, Chunk):
            if value.data_type != data_type:
                raise PluginGaveWrongOutput(
                    f"returned a chunk of {value.data_type!r} where {data_type!r} was expected",
                    data_type=data_type,
                )
            return value
        dtype = self.dtype_for(data_type)
        if isinstance(value, dict):
            value = dict_to_array(value, dtype)
        if not isinstance(value, np.ndarray):
            raise PluginGaveWrongOutput(
                f"compute returned {type(value).__name__}; expected a numpy array of the "
                f"declared dtype, a dict of field arrays, or a Chunk",
                data_type=data_type,
            )
        if value.dtype != dtype:
            value = _as_declared_dtype(value, dtype, data_type)
        return self.chunk(start=start, end=end, data=value, data_type=data_type)


def refuse_parallel(plugin: Plugin, family: str, why: str = "") -> None:
    """Refuse a ``parallel`` plugin of a family whose steps cannot run side by side; ``why``
    says what the family does that forbids it."""
    parallel = type(plugin).parallel
    if parallel:
        raise InvalidConfiguration(
            f"{plugin.name} is a{'n' if family[0] in 'AEIOU' else ''} {family}, which "
            f"{why + ' and ' if why else ''}cannot be parallel (parallel={parallel!r}); set "
            f"parallel = False", plugin=plugin.name)


def _retitled(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``value`` as ``dtype`` if the two differ only in field titles (strax compares dtypes
    without titles): a view when the field offsets match, else a copy. Any other ``value`` is
    returned as is, for the Chunk to refuse."""
    if remove_titles_from_dtype(value.dtype) != remove_titles_from_dtype(dtype):
        return value
    got: Any = value.dtype.fields
    want: Any = dtype.fields
    if value.dtype.itemsize == dtype.itemsize and all(
        got[n][1] == want[n][1] for n in dtype.names or ()
    ):
        return value.view(dtype)
    return value.astype(dtype)


def _as_declared_dtype(value: np.ndarray, dtype: np.dtype, data_type: str) -> np.ndarray:
    """``value`` as ``dtype`` if the two differ only in field titles (``_retitled``); else the
    plugin broke its declaration."""
    value = _retitled(value, dtype)
    if value.dtype == dtype:
        return value
    raise PluginGaveWrongOutput(
        f"compute returned an array of dtype {value.dtype}, but {data_type!r} is declared as "
        f"{dtype}",
        data_type=data_type,
    )


def _as_wrong_output(error: AsyncstraxError) -> AsyncstraxError:
    """A chunk rule broken by a plugin's output is the plugin's fault: say so in the type."""
    if isinstance(error, PluginGaveWrongOutput):
        return error
    wrong = PluginGaveWrongOutput(f"output breaks a chunk rule: {error.rule}")
    wrong.add_context(
        data_type=error.data_type,
        run_id=error.run_id,
        chunk_i=error.chunk_i,
        time_range=error.time_range,
    )
    return wrong


def to_numpy_dtype(declared: Any) -> np.dtype:
    """A numpy dtype from a declaration, accepting strax's ``(name, type, comment)`` fields."""
    if isinstance(declared, np.dtype):
        return declared
    if isinstance(declared, list):
        fields = []
        for field_ in declared:
            if (
                isinstance(field_, tuple)
                and len(field_) == 3
                and isinstance(field_[0], str)
                and isinstance(field_[2], str)
            ):
                name, type_, comment = field_
                fields.append(((comment, name), type_))
            else:
                fields.append(field_)
        return np.dtype(fields)
    return np.dtype(declared)


def dict_to_array(fields: dict[str, Any], dtype: np.dtype) -> np.ndarray:
    """A structured array of ``dtype`` from a dict of equal-length field arrays."""
    lengths = {name: len(np.atleast_1d(v)) for name, v in fields.items()}
    if len(set(lengths.values())) > 1:
        raise PluginGaveWrongOutput(f"field arrays have different lengths: {lengths}")
    unknown = set(fields) - set(dtype.names or ())
    if unknown:
        raise PluginGaveWrongOutput(f"fields {sorted(unknown)} are not in the dtype {dtype}")
    n = next(iter(lengths.values()), 0)
    out = np.zeros(n, dtype=dtype)
    for name, values in fields.items():
        out[name] = values
    return out


class _ComputeArgs(tuple):
    """The named parameters of compute, and whether it also takes ``**kwargs``.

    The flag rides on the tuple, not on a class attribute of its own, so that a plugin family
    that replaces ``_compute_args`` with another method's names (CutPlugin: ``cut_by``) does not
    inherit it from its own ``compute(self, **kwargs)``.
    """

    var_keyword: bool = False


def _compute_signature(cls: type) -> tuple[str, ...]:
    compute = getattr(cls, "compute", None)
    if compute is None:
        return ()
    try:
        params = inspect.signature(compute).parameters
    except (TypeError, ValueError):
        return ()
    names = [
        p.name
        for p in params.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if ("start" in names) != ("end" in names):
        raise InvalidConfiguration(
            f"compute of {cls.__name__} takes only one of start and end; take both or neither"
        )
    args = _ComputeArgs(names)
    args.var_keyword = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return args
