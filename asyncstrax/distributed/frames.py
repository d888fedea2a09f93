"""Stored runs as dataframes: ``get_df_many`` (pandas, eager) and ``lazy_dataframe`` (a
``dask.dataframe`` with one partition per stored chunk)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..context import Context, to_dataframe
from ..errors import AsyncstraxError, DataNotAvailable, InvalidConfiguration
from ..lineage import DataKey
from .dependencies import _require_dask_dataframe
from .spec import ContextSpec, _as_run_ids

__all__ = ["get_df_many", "lazy_dataframe"]


def get_df_many(ctx: Context, run_ids: Iterable[str], targets: str | Sequence[str],
                **kwargs: Any) -> Any:
    """``ctx.get_df`` of several runs, concatenated, with a ``run_id`` column first.

    Runs come in the order given (strax sorts them; one ``str`` is one run); the index runs
    from 0 over all rows.
    Runs not stored are made here, one after another (``max_runs_in_flight`` is accepted for
    strax's sake): make many with ``process_runs`` first. strax's multi-run arguments
    ``ignore_errors`` (leave a failing run out, with a warning), ``add_run_id_field`` and
    ``run_id_as_bytes`` apply; other ``kwargs`` go to ``get_df`` for every run.
    """
    import pandas as pd

    from ..context import to_dataframe

    stacklevel = kwargs.pop("_stacklevel", 3)  # the user's line for warnings, via get_df too
    ignore_errors = kwargs.pop("ignore_errors", False)
    add_run_id = kwargs.pop("add_run_id_field", True)
    as_bytes = kwargs.pop("run_id_as_bytes", False)
    kwargs.pop("max_runs_in_flight", None)
    frames: list[Any] = []
    for run_id in _as_run_ids(run_ids):
        try:
            data = ctx.get_array(run_id, targets, **kwargs)
        except AsyncstraxError as error:
            if not ignore_errors:
                raise
            warnings.warn(f"run {run_id!r} failed and is left out: {error}",
                          stacklevel=stacklevel - 1)
            continue
        # fields left out of the frame are the same for every run: say so once
        df = to_dataframe(data, warn=not frames, stacklevel=stacklevel)
        if add_run_id:
            label: Any = run_id.encode() if as_bytes else run_id
            df.insert(0, "run_id", pd.Series([label] * len(df), index=df.index,
                                             dtype=object if as_bytes else str))
        frames.append(df)
    if not frames:
        raise ValueError("get_df_many needs at least one run id")
    return pd.concat(frames, ignore_index=True)


@dataclasses.dataclass(frozen=True)
class _ChunkFile:
    """One stored chunk, as a dataframe partition: everything needed to read it anywhere."""

    folder: str
    run_id: str
    data_type: str
    lineage: Mapping[str, Any]
    data_kind: str
    dtype: str  # repr(dtype.descr), as in the metadata
    compressor: str
    chunk_i: int
    info: Mapping[str, Any]
    offset: int  # index of its first row in the whole frame


def _read_chunk_frame(part: _ChunkFile, columns: Sequence[str] | None = None) -> Any:
    """One stored chunk as a DataFrame: read, decompress, keep ``columns`` (a partition of
    ``lazy_dataframe``; dask passes the columns it needs, so a selection reaches the reader)."""
    import pandas as pd

    from ..storage.files import FileLoader

    key = DataKey(part.run_id, part.data_type, dict(part.lineage))
    dtype = np.dtype(_literal_dtype(part.dtype))
    metadata = {"dtype": part.dtype, "compressor": part.compressor, "chunks": [dict(part.info)]}
    loader = FileLoader(part.folder, key, metadata, data_kind=part.data_kind, dtype=dtype)
    data = loader.read_chunk(part.chunk_i, dict(part.info)).data
    if columns is None:
        columns = ["run_id", *_scalar_fields(dtype)]
    index = pd.RangeIndex(part.offset, part.offset + len(data))
    frame = pd.DataFrame({name: data[name] for name in columns if name != "run_id"},
                         index=index)
    if "run_id" in columns:
        frame.insert(0, "run_id", pd.Series([part.run_id] * len(data), dtype=object,
                                            index=index))
    return frame[list(columns)]


def _scalar_fields(dtype: np.dtype) -> list[str]:
    """The fields a dataframe can hold (``get_df`` leaves multi-dimensional ones out)."""
    fields: Mapping[str, Any] = dtype.fields or {}
    return [name for name in dtype.names or () if fields[name][0].shape == ()]


def _literal_dtype(text: str) -> Any:
    from ast import literal_eval

    return literal_eval(text)


def lazy_dataframe(
    ctx_or_spec: Context | ContextSpec,
    run_ids: Iterable[str],
    target: str,
    columns: Sequence[str] | None = None,
) -> Any:
    """A ``dask.dataframe`` over the stored ``target`` of many runs, one partition per chunk.

    Nothing is read until computed, and then only the partitions (chunk files) asked for;
    each is decompressed and only ``columns`` kept (default: every field but the
    multi-dimensional ones, which ``get_df`` leaves out too; asking for one is an error). A
    ``run_id`` column comes first, and the index numbers the rows over all runs in order, so
    the divisions are known and the frame equals ``get_df_many`` of the same runs. Runs not
    stored (with this context's lineage) raise ``DataNotAvailable``: make them first with
    ``process_runs``. Empty chunks have no file and no partition. One ``str`` is one run.
    """
    dd = _require_dask_dataframe()
    import pandas as pd

    ctx = ctx_or_spec.build() if isinstance(ctx_or_spec, ContextSpec) else ctx_or_spec
    run_ids = _as_run_ids(run_ids)
    plugin = ctx.get_single_plugin(run_ids[0] if run_ids else "0", target)
    dtype = np.dtype(plugin.dtype_for(target))
    scalar = _scalar_fields(dtype)
    names = list(dtype.names or ())
    if columns is None:
        wanted = ["run_id", *scalar]
    else:
        wanted = list(dict.fromkeys(columns))
        for name in wanted:
            if name == "run_id":
                continue
            if name not in names:
                raise KeyError(f"{target!r} has no field {name!r}; fields: {names}")
            if name not in scalar:
                raise ValueError(f"field {name!r} of {target!r} is multi-dimensional: a "
                                 f"dataframe column cannot hold it (use get_array)")
    parts: list[_ChunkFile] = []
    offset = 0
    for run_id in run_ids:
        if ctx.superrun_spec(run_id) is not None:
            raise InvalidConfiguration(
                f"{run_id!r} is a superrun, stored as its runs: give those runs, or use "
                f"get_df_many, which joins a superrun's runs")
        key = ctx.key_for(run_id, target)
        store = next((s for s in ctx.storage if s.find(key)), None)
        if store is None:
            raise DataNotAvailable(f"{target!r} of run {run_id!r} is not stored with this "
                                   f"lineage; make it first (process_runs)",
                                   data_type=target, run_id=run_id)
        metadata = store.get_metadata(key)
        folder = store.folder(key)
        data_kind = ctx.get_single_plugin(run_id, target).data_kind_for(target)
        for chunk_i, info in enumerate(metadata.get("chunks", [])):
            n = int(info.get("n", 0))
            if n == 0:
                continue
            parts.append(_ChunkFile(folder, run_id, target, key.lineage, data_kind,
                                    metadata["dtype"], metadata.get("compressor", "blosc"),
                                    chunk_i, info, offset))
            offset += n
    meta_all = to_dataframe(np.zeros(0, dtype), warn=False)
    meta_all.insert(0, "run_id", pd.Series([], dtype=object))
    meta = meta_all[wanted]
    if not parts:
        return dd.from_pandas(meta, npartitions=1)
    divisions = (*[p.offset for p in parts], offset - 1)
    return dd.from_map(_read_chunk_frame, parts, columns=wanted, meta=meta, divisions=divisions,
                       label=f"load-{target}", enforce_metadata=False)

