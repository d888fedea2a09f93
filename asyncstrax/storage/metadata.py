"""strax's on-disk names and metadata, in one place: what a folder is called, what its JSON holds.

Facts of strax 2.2.3's ``FileSytemBackend`` that this module follows, so strax finds our data and
we find strax's:

- data lives in ``<path>/<run_id>-<data_type>-<lineage_hash>/``; while being written the folder
  has ``_temp`` after that name, and it is renamed when complete;
- the folder holds ``<data_type>-<lineage_hash>-metadata.json`` and one file per non-empty chunk,
  ``<data_type>-<lineage_hash>-<chunk_i:06d>``; an empty chunk has no file, and its chunk entry
  has no ``filename``, ``filesize``, ``first_time`` ... fields, only ``n = 0``;
- the metadata JSON (``sort_keys=True, indent=4``) holds ``run_id, data_type, data_kind``,
  ``dtype`` as ``repr(dtype.descr)`` (read back with ``ast.literal_eval``), ``lineage,
  lineage_hash, compressor, chunk_target_size_mb``, ``strax_version`` (strax warns without it),
  ``start, end`` (of the first and last chunk), ``writing_started`` and ``writing_ended``
  (``time.time()``, float seconds), ``chunks`` (one entry per chunk, in order), and
  ``exception`` (a formatted traceback) when writing failed;
- strax treats data as complete when the final folder exists and its metadata has
  ``writing_ended`` and no ``exception``; ``is_complete`` says the same.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from ast import literal_eval
from typing import Any

import numpy as np

from ..chunk import Chunk, endtime
from ..errors import DataCorrupted
from ..lineage import DataKey

__all__ = [
    "STRAX_FORMAT_VERSION",
    "TEMP_SUFFIX",
    "chunk_filename",
    "chunk_info",
    "dtype_from_metadata",
    "folder_name",
    "is_complete",
    "metadata_filename",
    "new_metadata",
    "parse_folder_name",
    "read_metadata",
    "same_stored_dtype",
    "write_metadata",
]

#: the strax version whose format we write (strax refuses data from before 0.9.0, and warns
#: when the field is missing)
STRAX_FORMAT_VERSION = "2.2.3"
TEMP_SUFFIX = "_temp"


def folder_name(key: DataKey) -> str:
    """``<run_id>-<data_type>-<lineage_hash>``, the name of complete data."""
    return f"{key.run_id}-{key.data_type}-{key.lineage_hash}"


def prefix(data_type: str, lineage_hash: str) -> str:
    """``<data_type>-<lineage_hash>``, how every file in a data folder starts."""
    return f"{data_type}-{lineage_hash}"


def metadata_filename(data_type: str, lineage_hash: str) -> str:
    """The name of a data folder's metadata file."""
    return f"{prefix(data_type, lineage_hash)}-metadata.json"


def chunk_filename(data_type: str, lineage_hash: str, chunk_i: int) -> str:
    """The name of chunk ``chunk_i``'s file (the index zero-padded to six digits)."""
    return f"{prefix(data_type, lineage_hash)}-{chunk_i:06d}"


def parse_folder_name(name: str) -> tuple[str, str, str, bool] | None:
    """``(run_id, data_type, lineage_hash, is_temp)`` of a data folder name, or None.

    Temporary folders are ``<name>_temp`` (strax's) and ``<name>_temp_<writer id>`` (ours, when
    several writers work on one key at once).
    """
    parts = os.path.basename(os.path.normpath(name)).split("-")
    if len(parts) != 3 or not all(parts):
        return None
    run_id, data_type, rest = parts
    lineage_hash, sep, _ = rest.partition(TEMP_SUFFIX)
    if not lineage_hash:
        return None
    return run_id, data_type, lineage_hash, bool(sep)


def check_run_id(run_id: str) -> None:
    """A run id must make one folder name inside the store, as strax's file names need."""
    text = str(run_id)
    if "/" in text or "\\" in text or "\0" in text:
        raise ValueError(
            f"run_id {run_id!r} contains a path separator: its data would be saved outside "
            f"the store; run ids are names, not paths"
        )
    if "-" in text:
        raise ValueError(
            f"run_id {run_id!r} contains '-', which the file store (like strax's) cannot use "
            f"in folder names; replace it with '_'"
        )


# ---------------------------------------------------------------------------- JSON
def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot write an object of type {type(obj).__name__} to metadata")


def dumps(metadata: dict) -> str:
    """Metadata as JSON text: sorted keys, indented; numpy values and sets become JSON values."""
    return json.dumps(metadata, sort_keys=True, indent=4, default=_json_default)


def write_metadata(path: str, metadata: dict, fsync: bool = False) -> None:
    """Write the metadata JSON atomically (a reader never sees half a file)."""
    text = dumps(metadata)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_metadata(path: str) -> dict:
    """The metadata at ``path``; DataCorrupted (naming the file) if it is not valid metadata.

    A missing file raises FileNotFoundError, for the caller to decide what that means.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise DataCorrupted(f"cannot read metadata file {path}: {error}") from error
    try:
        metadata = json.loads(text)
    except ValueError as error:
        raise DataCorrupted(
            f"metadata file {path} is not valid JSON ({error}); delete its folder to remake "
            f"the data"
        ) from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("chunks", []), list):
        raise DataCorrupted(f"metadata file {path} does not hold strax metadata")
    return metadata


def is_complete(metadata: dict) -> bool:
    """strax's test: writing ended, without an exception."""
    return "writing_ended" in metadata and not metadata.get("exception")


def same_stored_dtype(stored: np.dtype, dtype: np.dtype) -> bool:
    """Whether data stored with dtype ``stored`` (as read back from metadata) is of ``dtype``.

    ``repr(dtype.descr)`` writes padding (``align=True``, explicit offsets) as unnamed void
    fields, which numpy reads back as fields named ``f2``, ...: compare ``dtype`` after the
    same round trip, so such data can be loaded again (strax loads it)."""
    if stored == dtype:
        return True
    try:
        return stored == np.dtype(literal_eval(repr(dtype.descr)))
    except (ValueError, TypeError, SyntaxError):
        return False


def dtype_from_metadata(metadata: dict, where: str) -> np.dtype:
    """The dtype written as ``repr(dtype.descr)``."""
    try:
        return np.dtype(literal_eval(metadata["dtype"]))
    except Exception as error:  # noqa: BLE001 - any failure here means a bad file
        raise DataCorrupted(
            f"metadata {where} has no usable dtype ({type(error).__name__}: {error})"
        ) from None


# ---------------------------------------------------------------------------- building
def new_metadata(
    key: DataKey,
    *,
    data_kind: str,
    dtype: np.dtype,
    compressor: str,
    chunk_target_size_mb: float,
) -> dict:
    """The metadata of data about to be written (strax's ``Plugin.metadata`` plus the saver's)."""
    from .. import __version__

    return dict(
        run_id=key.run_id,
        data_type=key.data_type,
        data_kind=data_kind,
        dtype=repr(np.dtype(dtype).descr),
        lineage=key.lineage,
        lineage_hash=key.lineage_hash,
        compressor=compressor,
        chunk_target_size_mb=chunk_target_size_mb,
        strax_version=STRAX_FORMAT_VERSION,
        asyncstrax_version=__version__,
        writing_started=time.time(),
        chunks=[],
    )


def chunk_info(chunk: Chunk, chunk_i: int) -> dict:
    """A chunk's entry in ``chunks`` (without ``filename``/``filesize``, added once written)."""
    info: dict[str, Any] = dict(
        chunk_i=chunk_i,
        n=len(chunk),
        start=chunk.start,
        end=chunk.end,
        run_id=chunk.run_id,
        subruns=chunk.subruns,
        nbytes=chunk.nbytes,
    )
    if len(chunk):
        data = chunk.data
        ends = endtime(data[[0, -1]])
        info["first_time"] = int(data["time"][0])
        info["last_time"] = int(data["time"][-1])
        info["first_endtime"] = int(ends[0])
        info["last_endtime"] = int(ends[-1])
    return info
