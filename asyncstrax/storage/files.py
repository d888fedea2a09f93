"""FileStore: strax-compatible folders of compressed chunk files, read and written off the loop.

The Context asks a store four things (see ``Context._find_loader``, ``_make_saver``,
``get_metadata``): ``find(key)``, ``loader(key, ...)``, ``saver(key, plugin=...)`` and
``get_metadata(key)``. Names and metadata follow strax 2.2.3 exactly (``metadata.py``), so strax
loads what we save and we load what strax saves.

Loading (``FileLoader``): only the chunks overlapping the requested time range are read. Each
chunk is read and decompressed in one job on a worker thread (one thread hop per chunk; aiofiles
would add a hop per read), and the next ``read_ahead`` chunks are read while the current one is
consumed, so memory stays bounded by a few chunks. The array is ``np.frombuffer`` over the
decompressed buffer: no copy, and writable.

Saving (``FileSaver``): chunks are rechunked to the plugin's target size (``rechunk.py``), then
each is compressed and written by one job on the pipeline's thread pool, at most
``max_writes_in_flight`` at a time, so writing chunk i overlaps receiving chunk i + 1. Everything
goes to a temporary folder owned by this writer (``tempdirs.py``); when the last chunk is written
the metadata is completed and the folder renamed to its final name, atomically.

Failure rules:

- an interrupted writer leaves only a temporary folder, which ``find`` never reports; a later
  writer of the same key removes it if its writer is dead;
- ``abort(error)`` records the traceback in the temporary folder's metadata (``exception``) and
  leaves it unrenamed (incomplete); it never raises;
- existing complete data is never overwritten: ``saver()`` for data that ``find`` reports returns
  a saver that writes nothing, and of two writers racing on one key the first rename wins and the
  other discards its folder (both wrote the same data: same lineage). Incomplete or failed final
  folders (strax renames failed writes, marked with ``exception``) are replaced;
- damaged data (missing, truncated or altered chunk files, unreadable metadata) raises
  ``DataCorrupted`` naming the file and the chunk index; a read-only store, an unwritable path or
  a full disk raise ``StorageError`` saying so.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import shutil
import threading
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from ..chunk import Chunk
from ..errors import (
    AsyncstraxError,
    ChunkError,
    DataCorrupted,
    DataNotAvailable,
    StorageError,
)
from ..lineage import DataKey
from . import checksums, codecs, tempdirs
from .inline import InlineWrite, WrittenChunk
from .metadata import (
    check_run_id,
    chunk_filename,
    chunk_info,
    dtype_from_metadata,
    folder_name,
    is_complete,
    metadata_filename,
    new_metadata,
    read_metadata,
    same_stored_dtype,
    write_metadata,
)
from .rechunk import Rechunker

if TYPE_CHECKING:
    from ..runtime.offload import ThreadPool

__all__ = ["FileLoader", "FileSaver", "FileStore"]

log = logging.getLogger(__name__)

#: compressed-input buffers up to this size are kept per reading thread and reused
SCRATCH_MAX_BYTES = 64 * 1024**2


class FileStore:
    """A directory of strax data folders (strax's ``DataDirectory`` + ``FileSytemBackend``).

    ``compressor`` is used for plugins that declare none (asyncstrax plugins, as strax's, default
    to blosc).
    ``read_ahead``: chunks read ahead of the consumer when loading. ``max_writes_in_flight``:
    chunks being compressed and written at once when saving. ``fsync``: flush every file to disk
    before the final rename (safe against power loss, slower; a killed process needs no fsync).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        readonly: bool = False,
        compressor: str = codecs.DEFAULT_COMPRESSOR,
        deep_scan: bool = False,
        provide_run_metadata: bool = False,
        *,
        read_ahead: int = 2,
        max_writes_in_flight: int = 2,
        fsync: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            # found here, not at the first save (on a Dask worker, after the run was computed)
            raise StorageError(f"storage {self.path} is a file, not a folder: give a folder "
                               f"(it is made if it does not exist)")
        self.readonly = bool(readonly)
        self.compressor = compressor
        self.deep_scan = deep_scan
        self.provide_run_metadata = provide_run_metadata
        self.read_ahead = max(1, int(read_ahead))
        self.max_writes_in_flight = max(1, int(max_writes_in_flight))
        self.fsync = fsync
        codecs.get_codec(compressor)

    def __repr__(self) -> str:
        return f"FileStore({self.path!r}{', readonly=True' if self.readonly else ''})"

    # ------------------------------------------------------------------ paths
    def folder(self, key: DataKey) -> str:
        """Where complete data for ``key`` lives."""
        return os.path.join(self.path, folder_name(key))

    def _metadata_path(self, folder: str, key: DataKey) -> str:
        return os.path.join(folder, metadata_filename(key.data_type, key.lineage_hash))

    def _read_final_metadata(self, key: DataKey) -> dict | None:
        """The final folder's metadata, None if there is no final folder."""
        folder = self.folder(key)
        if not os.path.isdir(folder):
            return None
        path = self._metadata_path(folder, key)
        try:
            metadata = read_metadata(path)
        except FileNotFoundError:
            raise DataCorrupted(
                f"data folder {folder} has no metadata file {os.path.basename(path)}; delete "
                f"the folder to remake the data",
                data_type=key.data_type,
                run_id=key.run_id,
            ) from None
        except DataCorrupted as error:
            raise error.add_context(data_type=key.data_type, run_id=key.run_id) from None
        stored_hash = metadata.get("lineage_hash")
        if stored_hash is not None and stored_hash != key.lineage_hash:
            raise DataCorrupted(
                f"metadata file {path} has lineage hash {stored_hash!r}, but its folder name "
                f"says {key.lineage_hash!r}",
                data_type=key.data_type,
                run_id=key.run_id,
            )
        return metadata

    def _live_metadata(self, key: DataKey) -> tuple[str, dict] | None:
        """``(folder, metadata)`` of the newest live writer of ``key`` (a run still growing).

        Only our own writers' temporary folders whose writer still holds its lock count; the
        metadata lists the chunks written so far, a contiguous prefix (``FileSaver``).
        """
        best: tuple[str, dict] | None = None
        for folder in tempdirs.live_folders(self.folder(key)):
            try:
                metadata = read_metadata(self._metadata_path(folder, key))
            except (OSError, DataCorrupted):
                continue  # just renamed away, or not ours to read
            if metadata.get("exception") or metadata.get("lineage_hash", key.lineage_hash) \
                    != key.lineage_hash:
                continue
            started = metadata.get("writing_started") or 0
            if best is None or started > (best[1].get("writing_started") or 0):
                best = (folder, metadata)
        return best

    # ------------------------------------------------------------------ the Context's calls
    def find(self, key: DataKey, allow_incomplete: bool = False) -> bool:
        """True if complete data with exactly this lineage is stored.

        Data whose writing failed or never ended (strax may rename such folders) is not
        reported. Unreadable metadata raises ``DataCorrupted``. With ``allow_incomplete``,
        data being written right now by a live writer is reported too.
        """
        metadata = self._read_final_metadata(key)
        if metadata is not None and is_complete(metadata):
            return True
        if not allow_incomplete:
            return False
        if self._live_metadata(key) is not None:
            return True
        metadata = self._read_final_metadata(key)  # the writer may have just finished
        return metadata is not None and is_complete(metadata)

    def get_metadata(self, key: DataKey, allow_incomplete: bool = False) -> dict:
        """The metadata of stored data; ``DataNotAvailable`` if there is none.

        With ``allow_incomplete``, if there is no complete data, the metadata of a live
        writer (chunks written so far, no ``writing_ended``) is returned.
        """
        metadata = self._read_final_metadata(key)
        if allow_incomplete and (metadata is None or not is_complete(metadata)):
            live = self._live_metadata(key)
            if live is not None:
                return live[1]
            metadata = self._read_final_metadata(key)
        if metadata is None:
            raise DataNotAvailable(
                f"no data at {self.folder(key)}", data_type=key.data_type, run_id=key.run_id
            )
        return metadata

    def loader(
        self,
        key: DataKey,
        *,
        data_kind: str,
        dtype: Any,
        time_range: tuple[int, int] | None = None,
        allow_incomplete: bool = False,
    ) -> FileLoader:
        """A producer of the stored chunks overlapping ``time_range`` (all if None).

        With ``allow_incomplete`` and no complete data, the chunks a live writer has written
        so far are loaded (``loader.incomplete`` is True; its chunks end at ``loader.available_end``).
        """
        metadata = self._read_final_metadata(key)
        if allow_incomplete and (metadata is None or not is_complete(metadata)):
            live = self._live_metadata(key)
            if live is not None:
                folder, metadata = live
                return FileLoader(
                    folder, key, metadata, data_kind=data_kind, dtype=dtype,
                    time_range=time_range, read_ahead=self.read_ahead,
                    moved_to=self.folder(key),
                )
        metadata = self.get_metadata(key)
        if not is_complete(metadata):
            raise DataNotAvailable(
                f"data at {self.folder(key)} is incomplete"
                + (f" (writing failed: {_last_line(metadata['exception'])})"
                   if metadata.get("exception") else ""),
                data_type=key.data_type,
                run_id=key.run_id,
            )
        return FileLoader(
            self.folder(key), key, metadata, data_kind=data_kind, dtype=dtype,
            time_range=time_range, read_ahead=self.read_ahead,
        )

    def saver(self, key: DataKey, *, plugin: Any) -> FileSaver:
        """A consumer writing ``key.data_type`` as made by ``plugin``.

        If complete data already exists, the saver writes nothing (see the module docstring).
        """
        if self.readonly:
            raise StorageError(
                f"{self!r} is read-only: it cannot save {key.data_type!r}",
                data_type=key.data_type, run_id=key.run_id,
            )
        try:
            check_run_id(key.run_id)
        except ValueError as error:
            raise StorageError(str(error), data_type=key.data_type, run_id=key.run_id) from None
        self._check_writable(key)
        dt = key.data_type
        compressor = getattr(plugin, "compressor", None) or self.compressor
        codecs.get_codec(compressor)
        metadata = new_metadata(
            key,
            data_kind=plugin.data_kind_for(dt),
            dtype=plugin.dtype_for(dt),
            compressor=compressor,
            chunk_target_size_mb=getattr(plugin, "chunk_target_size_mb", 200),
        )
        return FileSaver(
            self, key, metadata,
            rechunk=bool(getattr(plugin, "rechunk_on_save", True)),
            skip=self.find(key),
        )

    def _check_writable(self, key: DataKey) -> None:
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as error:
            raise StorageError(
                f"cannot save to {self.path}: the folder does not exist and cannot be made "
                f"({error.strerror or error})",
                data_type=key.data_type, run_id=key.run_id,
            ) from None
        if not os.access(self.path, os.W_OK):
            raise StorageError(
                f"cannot save to {self.path}: no write permission",
                data_type=key.data_type, run_id=key.run_id,
            )

    # ------------------------------------------------------------------ run metadata
    def _run_metadata_path(self, run_id: str) -> str:
        return os.path.join(self.path, f"{run_id}-metadata.json")

    def run_metadata(self, run_id: str) -> dict:
        """Run-level metadata (strax's ``<run_id>-metadata.json`` in the store's folder)."""
        path = self._run_metadata_path(run_id)
        try:
            return read_metadata(path)
        except FileNotFoundError:
            raise DataNotAvailable(f"no run metadata at {path}", run_id=str(run_id)) from None

    def write_run_metadata(self, run_id: str, metadata: dict) -> None:
        """Save run-level metadata as ``<run_id>-metadata.json`` (strax's name), where
        ``run_metadata`` and ``Context.scan_runs`` find it; an existing file is replaced
        atomically.

        ``name`` defaults to ``run_id``. A read-only store raises ``StorageError``.
        """
        if self.readonly:
            raise StorageError(f"{self!r} is read-only", run_id=str(run_id))
        os.makedirs(self.path, exist_ok=True)
        metadata = {"name": run_id, **metadata}
        metadata.setdefault("chunks", [])  # read_metadata expects strax data; harmless here
        write_metadata(self._run_metadata_path(run_id), metadata)


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ============================================================================ loading
class FileLoader:
    """Yields ``{data_type: Chunk}`` for the stored chunks, in order, reading ahead."""

    def __init__(
        self,
        folder: str,
        key: DataKey,
        metadata: dict,
        *,
        data_kind: str,
        dtype: Any,
        time_range: tuple[int, int] | None = None,
        read_ahead: int = 2,
        moved_to: str | None = None,
    ) -> None:
        self.folder = folder
        #: where the folder goes when its writer finishes (set when reading a growing run)
        self.moved_to = moved_to
        #: True when loading what a live writer has written so far (the run is not finished)
        self.incomplete = moved_to is not None
        chunks = metadata.get("chunks") or []
        #: the end of the last stored chunk (None if there is none)
        last = chunks[-1] if chunks and isinstance(chunks[-1], dict) else {}
        self.available_end: int | None = last.get("end")
        self.key = key
        self.lineage_hash = key.lineage_hash  # hashing the lineage costs ~0.3 ms; once
        self.name = f"load {key.data_type}"
        self.provides = (key.data_type,)
        self.data_type = key.data_type
        self._data_kind = data_kind
        self.dtype = np.dtype(dtype)
        self.metadata = metadata
        self.time_range = time_range
        self.read_ahead = max(1, int(read_ahead))
        self.compressor = metadata.get("compressor", "blosc")
        where = self._metadata_path()
        try:
            self.codec = codecs.get_codec(self.compressor)
            stored = dtype_from_metadata(metadata, where)
        except StorageError as error:  # DataCorrupted included: say whose data it is
            if not isinstance(error, DataCorrupted):
                error = StorageError(f"metadata {where}: {error}")
            raise error.add_context(data_type=key.data_type, run_id=key.run_id) from None
        if not same_stored_dtype(stored, self.dtype):
            raise DataCorrupted(
                f"data in {folder} has dtype {stored}, but the plugin with this lineage "
                f"declares {self.dtype} (was the plugin's dtype changed without a new version?)",
                data_type=key.data_type, run_id=key.run_id,
            )
        self.chunk_infos = self._check_chunk_infos(metadata.get("chunks", []), where)
        #: chunk files opened so far (for diagnostics and tests)
        self.files_read: list[str] = []

    def _metadata_path(self) -> str:
        return os.path.join(self.folder, metadata_filename(self.key.data_type,
                                                           self.lineage_hash))

    def _check_chunk_infos(self, infos: Any, where: str) -> list[dict]:
        if not isinstance(infos, list):
            raise DataCorrupted(f"metadata {where}: 'chunks' is not a list",
                                data_type=self.data_type, run_id=self.key.run_id)
        previous_end = None
        for i, info in enumerate(infos):
            try:
                start, end, n = int(info["start"]), int(info["end"]), int(info["n"])
            except (KeyError, TypeError, ValueError):
                raise DataCorrupted(
                    f"metadata {where}: entry {i} of 'chunks' lacks start, end or n",
                    data_type=self.data_type, run_id=self.key.run_id, chunk_i=i,
                ) from None
            if start > end or n < 0 or (previous_end is not None and start != previous_end):
                raise DataCorrupted(
                    f"metadata {where}: chunk {i} [{start}, {end}) with {n} items does not "
                    f"follow the previous chunk (ended at {previous_end})",
                    data_type=self.data_type, run_id=self.key.run_id, chunk_i=i,
                )
            previous_end = end
        return infos

    def data_kind_for(self, data_type: str) -> str:
        """The data kind the loaded chunks are labelled with (as a plugin's ``data_kind_for``)."""
        return self._data_kind

    def selected_chunks(self) -> list[tuple[int, dict]]:
        """``(chunk_i, info)`` of the chunks overlapping the time range (contiguous)."""
        out = []
        for i, info in enumerate(self.chunk_infos):
            if self.time_range is not None:
                t0, t1 = self.time_range
                # a neighbour touching an edge is read only if it has a (zero-length) item at it
                if (info["end"] < t0 or t1 < info["start"]
                        or info["end"] == t0 and info.get("last_time") != t0
                        or info["start"] == t1 and info.get("first_time") != t1):
                    continue
            out.append((i, info))
        return out

    async def chunks(self, pool: ThreadPool | None = None) -> Any:
        """The chunks, in time order; the next ``read_ahead`` are read while one is used, on
        ``pool`` (the pipeline's threads) or else on the loop's default executor."""
        loop = asyncio.get_running_loop()

        def read(chunk_i: int, info: dict) -> asyncio.Future:
            if pool is not None:
                return pool.submit(self.read_chunk, chunk_i, info)
            return loop.run_in_executor(None, self.read_chunk, chunk_i, info)

        todo = iter(self.selected_chunks())
        pending: deque[asyncio.Future] = deque()

        def fill() -> None:
            while len(pending) < self.read_ahead:
                item = next(todo, None)
                if item is None:
                    return
                pending.append(read(*item))

        try:
            fill()
            while pending:
                chunk = await pending[0]
                pending.popleft()
                fill()
                yield {self.data_type: chunk}
        finally:
            for future in pending:
                future.cancel()

    # -------------------------------------------------------------- on a worker thread
    def _corrupted(self, chunk_i: int, path: str, problem: str) -> DataCorrupted:
        return DataCorrupted(
            f"chunk file {path} (chunk {chunk_i}) {problem}",
            data_type=self.data_type, run_id=self.key.run_id, chunk_i=chunk_i,
        )

    def read_chunk(self, chunk_i: int, info: dict) -> Chunk:
        """Read, decompress and check one chunk (blocking; runs on a worker thread)."""
        n = int(info["n"])
        if n == 0:
            data = np.zeros(0, dtype=self.dtype)
        else:
            data = self._read_array(chunk_i, info, n)
        try:
            return Chunk(
                data_type=self.data_type,
                data_kind=self._data_kind,
                dtype=self.dtype,
                run_id=info.get("run_id", self.key.run_id),
                start=info["start"],
                end=info["end"],
                data=data,
                subruns=info.get("subruns"),
                target_size_mb=self.metadata.get("chunk_target_size_mb", 200),
            )
        except ChunkError as error:
            raise DataCorrupted(
                f"chunk {chunk_i} of {self.folder} breaks a data rule: {error.rule}",
                data_type=self.data_type, run_id=self.key.run_id, chunk_i=chunk_i,
                time_range=(info["start"], info["end"]),
            ) from None

    def _read_array(self, chunk_i: int, info: dict, n: int) -> np.ndarray:
        filename = info.get("filename") or chunk_filename(
            self.key.data_type, self.lineage_hash, chunk_i)
        if (not isinstance(filename, str) or os.path.basename(filename) != filename
                or filename in (".", "..")):
            raise DataCorrupted(
                f"chunk {chunk_i} of {self.folder}: its metadata entry names the file "
                f"{filename!r}, which is not in the folder",
                data_type=self.data_type, run_id=self.key.run_id, chunk_i=chunk_i,
            )
        path = os.path.join(self.folder, filename)
        self.files_read.append(filename)
        if self.moved_to is not None and not os.path.exists(path):
            moved = os.path.join(self.moved_to, filename)
            if os.path.exists(moved):  # the writer finished and renamed its folder meanwhile
                path = moved
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                expected = info.get("filesize")
                if expected is not None and size != int(expected):
                    raise self._corrupted(
                        chunk_i, path,
                        f"has {size} bytes, but the metadata says {expected}: it is truncated "
                        f"or was overwritten",
                    )
                buffer = _read_into_scratch(f, size)
        except FileNotFoundError:
            raise self._corrupted(chunk_i, path, "is missing") from None
        except OSError as error:
            raise self._corrupted(chunk_i, path, f"cannot be read: {error}") from None
        nbytes = n * self.dtype.itemsize
        problem = checksums.mismatch(info, buffer)
        if problem is not None:
            buffer.release()
            raise self._corrupted(chunk_i, path, problem)
        try:
            raw = self.codec.decompress(buffer, nbytes)
        except AsyncstraxError:
            raise
        except Exception as error:  # noqa: BLE001 - every codec has its own error types
            raise self._corrupted(
                chunk_i, path,
                f"cannot be decompressed with {self.compressor} "
                f"({type(error).__name__}: {error})",
            ) from None
        finally:
            buffer.release()
        if len(raw) != nbytes:
            raise self._corrupted(
                chunk_i, path,
                f"holds {len(raw)} bytes, but {n} items of {self.dtype.itemsize} bytes "
                f"({nbytes} bytes) were expected",
            )
        return np.frombuffer(raw, dtype=self.dtype)


_scratch = threading.local()


def _read_into_scratch(f: Any, size: int) -> memoryview:
    """Read ``size`` bytes into a buffer reused by this thread (fresh memory is slow to touch).

    The caller must ``release()`` the view once done with it.
    """
    buf = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < size:
        buf = bytearray(size)
        if size <= SCRATCH_MAX_BYTES:
            _scratch.buf = buf
    view = memoryview(buf)[:size]
    got = 0
    while got < size:
        k = f.readinto(view[got:])
        if not k:
            view.release()
            raise OSError(errno.EIO, f"file ended after {got} of {size} bytes")
        got += k
    return view


# ============================================================================ saving
class FileSaver:
    """Consumes one data type's chunks and writes them as a strax data folder."""

    def __init__(
        self,
        store: FileStore,
        key: DataKey,
        metadata: dict,
        *,
        rechunk: bool = True,
        skip: bool = False,
    ) -> None:
        self.store = store
        self.key = key
        self.lineage_hash = key.lineage_hash  # hashing the lineage costs ~0.3 ms; once
        self.name = f"save {key.data_type}"
        self.data_type = key.data_type
        self.metadata = metadata
        self.final = store.folder(key)
        self.skip = skip
        self.rechunker = Rechunker(metadata["chunk_target_size_mb"], enabled=rechunk)
        self.codec = codecs.get_codec(metadata["compressor"])
        self.folder: tempdirs.WriterFolder | None = None
        self._chunk_i = 0
        self._in_flight: deque[tuple[dict, asyncio.Future]] = deque()
        self._done = False
        self._state_lock = threading.Lock()
        self._abort_error: BaseException | None = None
        self._finalizing = False  # set, under _state_lock, once the folder is being finished
        # Live metadata: chunk entries written so far, published in order (see _chunk_written).
        self._publish_lock = threading.Lock()
        self._written: dict[int, dict] = {}
        self._published: list[dict] = []
        self._publishing_closed = False
        #: "saved", "skipped" (complete data existed) or "lost" (another writer finished first)
        self.outcome: str | None = None
        self._opening: asyncio.Future | None = None

    @property
    def can_write_inline(self) -> bool:
        """Whether the chain that makes this data may write its files itself (``inline``):
        only without rechunking, so its files are one per chunk, numbered as made."""
        return not self.rechunker.enabled and not self.skip

    def inline_spec(self) -> InlineWrite:
        """What a fused chain needs to write this data type's files (see ``storage.inline``)."""
        return InlineWrite(self.key, self.metadata["compressor"], self.store.fsync)

    async def ensure_open(self, pool: Any) -> str | None:
        """Claim the temporary folder (once, whoever asks first); its path, or None when
        nothing is to be written (the save was aborted before it started)."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(pool.submit(self._open))
        await asyncio.shield(self._opening)
        return None if self.folder is None else self.folder.path

    @property
    def _metadata_path(self) -> str:
        assert self.folder is not None
        return os.path.join(self.folder.path, metadata_filename(self.key.data_type,
                                                                self.lineage_hash))

    async def consume(self, reader: Any, pool: Any) -> None:
        """Write every chunk from ``reader`` (writes run on ``pool``), then finish the folder.

        When complete data already exists, the reader is detached and nothing is written.
        ``outcome`` says which happened.
        """
        if self.skip:
            reader.detach()
            self.outcome = "skipped"
            log.info("%s: complete data exists at %s, not saving again", self.name, self.final)
            return
        await self.ensure_open(pool)
        while True:
            chunk = await reader.get()
            if chunk is None:
                break
            if isinstance(chunk, WrittenChunk):
                await self._record_written(chunk, pool)
                continue
            pieces = self.rechunker.receive(chunk)
            chunk = None  # the writes hold what they need; not kept while waiting for more
            while pieces:
                await self._save_chunk(pieces.pop(0), pool)
        for out in self.rechunker.flush():
            await self._save_chunk(out, pool)
        while self._in_flight:
            await self._wait_oldest()
        self.outcome = await pool.submit(self._finalize)
        self._done = True

    async def _save_chunk(self, chunk: Chunk, pool: Any) -> None:
        info = chunk_info(chunk, self._chunk_i)
        self._chunk_i += 1
        self.metadata["chunks"].append(info)
        while len(self._in_flight) >= self.store.max_writes_in_flight:
            await self._wait_oldest()
        path = None
        if len(chunk):  # strax writes no file for an empty chunk
            filename = chunk_filename(self.key.data_type, self.lineage_hash, info["chunk_i"])
            info["filename"] = filename
            assert self.folder is not None
            path = os.path.join(self.folder.path, filename)
        future = pool.submit(self._write_chunk, path, chunk.data, info)
        self._in_flight.append((info, future))

    async def _record_written(self, chunk: WrittenChunk, pool: Any) -> None:
        """A chunk the chain that made it has written already: list it, as if written here."""
        info = dict(chunk.info)
        if info.get("chunk_i") != self._chunk_i:
            raise StorageError(
                f"chunk {info.get('chunk_i')} was written by its chain, but the saver expected "
                f"chunk {self._chunk_i} (an engine bug: inline saving needs one chunk per step)",
                data_type=self.data_type, run_id=self.key.run_id, chunk_i=self._chunk_i)
        self._chunk_i += 1
        self.metadata["chunks"].append(info)
        while len(self._in_flight) >= self.store.max_writes_in_flight:
            await self._wait_oldest()
        future = pool.submit(self._listed, info, chunk.written)
        self._in_flight.append((info, future))

    def _listed(self, info: dict, written: tuple[int, str] | None) -> tuple[int, str] | None:
        self._chunk_written(info, written)
        return written

    async def _wait_oldest(self) -> None:
        info, future = self._in_flight[0]
        try:
            _note_file(info, await future)
        finally:
            if future.done():
                self._in_flight.popleft()

    # -------------------------------------------------------------- on a worker thread
    def _storage_error(self, what: str, error: OSError) -> StorageError:
        return _os_storage_error(what, error, self.key)

    def _write_chunk(self, path: str | None, data: np.ndarray, info: dict
                     ) -> tuple[int, str] | None:
        """Write one chunk's file (none for an empty chunk), then publish the live metadata."""
        written = None
        if path is not None:
            written = _write_chunk_file(path, data, self.codec, self.store.fsync,
                                        info["chunk_i"], self.key)
        self._chunk_written(info, written)
        return written

    def _chunk_written(self, info: dict, written: tuple[int, str] | None) -> None:
        """Rewrite the temporary folder's metadata to list every chunk written so far.

        Chunks may finish out of order (``max_writes_in_flight``); only the contiguous prefix
        from chunk 0 is listed, so a reader (``FileStore.find(key, allow_incomplete=True)``)
        never sees a chunk whose file, or an earlier chunk's file, is not complete. The lock
        keeps the atomic replaces in order (a newer listing is never overwritten by an older).
        """
        entry = dict(info)
        _note_file(entry, written)
        with self._publish_lock:
            if self._publishing_closed or self.folder is None:
                return
            self._written[int(entry["chunk_i"])] = entry
            before = len(self._published)
            while len(self._published) in self._written:
                self._published.append(self._written.pop(len(self._published)))
            if len(self._published) == before:
                return
            live = {k: v for k, v in self.metadata.items() if k != "chunks"}
            live["chunks"] = list(self._published)
            live["start"] = self._published[0]["start"]
            live["end"] = self._published[-1]["end"]
            try:
                write_metadata(self._metadata_path, live)
            except OSError as error:  # the final write will report a real disk problem
                log.warning("%s: could not update the live metadata in %s: %s", self.name,
                            self.folder.path, error)

    def _close_publishing(self) -> None:
        with self._publish_lock:
            self._publishing_closed = True

    def _open(self) -> None:
        with self._state_lock:
            if self._abort_error is not None:
                return  # aborted before starting: write nothing
            try:
                tempdirs.remove_stale(self.final)
                self.folder = tempdirs.claim(self.final)
                write_metadata(self._metadata_path, self.metadata)
            except OSError as error:
                raise self._storage_error(f"cannot start writing {self.final}", error) from None

    def _finalize(self) -> str:
        # An abort (the request cancelled while this runs on its thread) either came first,
        # and nothing is finalized, or waits: every chunk is written, the data is complete.
        with self._state_lock:
            if self._abort_error is not None:
                return "aborted"
            self._finalizing = True
            return self._finalize_folder()

    def _finalize_folder(self) -> str:
        self._close_publishing()
        md = self.metadata
        if md["chunks"]:
            md["start"] = md["chunks"][0]["start"]
            md["end"] = md["chunks"][-1]["end"]
        md["writing_ended"] = time.time()
        assert self.folder is not None
        temp = self.folder.path
        try:
            write_metadata(self._metadata_path, md, fsync=self.store.fsync)
            if self.store.fsync:
                _fsync_dir(temp)
        except OSError as error:
            raise self._storage_error(f"cannot write the metadata of {temp}", error) from None
        self.folder.release(remove_lock_file=True)
        try:
            return self._move_into_place(temp)
        except StorageError:
            # Without its lock the folder is no writer's and would stay forever (no later
            # writer removes a folder it cannot tell is stale): the data is not saved, so
            # nothing is left behind.
            shutil.rmtree(temp, ignore_errors=True)
            raise

    def _move_into_place(self, temp: str) -> str:
        for _ in range(3):
            try:
                os.rename(temp, self.final)
                if self.store.fsync:
                    _fsync_dir(self.store.path)
                return "saved"
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                    raise self._storage_error(f"cannot rename {temp} to {self.final} (the "
                                              f"data is not saved)", error) from None
            # The final folder exists: another writer finished first, or old broken data.
            if self._final_is_complete():
                shutil.rmtree(temp, ignore_errors=True)
                log.info("%s: another writer saved %s first; discarding %s",
                         self.name, self.final, temp)
                return "lost"
            trash = f"{self.final}.replaced-{secrets.token_hex(4)}"
            try:
                os.rename(self.final, trash)
            except FileNotFoundError:
                continue
            except OSError as error:
                raise self._storage_error(f"cannot replace broken data at {self.final}",
                                          error) from None
            shutil.rmtree(trash, ignore_errors=True)
        raise StorageError(f"could not rename {temp} to {self.final}: the final folder keeps "
                           f"reappearing", data_type=self.data_type, run_id=self.key.run_id)

    def _final_is_complete(self) -> bool:
        try:
            return self.store.find(self.key)
        except DataCorrupted:
            return False

    # -------------------------------------------------------------- failure
    async def abort(self, error: BaseException) -> None:
        """Record ``error`` in the temporary folder's metadata; leave it incomplete."""
        if self._done or self.skip:
            return
        try:
            for info, future in list(self._in_flight):
                try:
                    _note_file(info, await future)
                except BaseException:  # noqa: BLE001 - that write's own failure is secondary
                    pass
            self._in_flight.clear()
            # Held briefly by _open (a mkdir and a small write) if it is running right now.
            with self._state_lock:
                if self._finalizing:
                    return  # finished writing before the failure: complete data, kept
                self._abort_error = error
                if self.folder is not None:
                    self._record_failure(error)
        except BaseException as second:  # noqa: BLE001 - never hide the first error
            log.warning("%s: could not record the failure in %s: %r", self.name,
                        getattr(self.folder, "path", self.final), second)

    def _record_failure(self, error: BaseException) -> None:
        assert self.folder is not None
        self._close_publishing()
        md = self.metadata
        md["exception"] = _describe_failure(error)
        if md["chunks"]:
            md["start"] = md["chunks"][0]["start"]
            md["end"] = md["chunks"][-1]["end"]
        try:
            write_metadata(self._metadata_path, md)
        finally:
            self.folder.release()


def _describe_failure(error: BaseException) -> str:
    """The traceback text strax puts in ``exception`` (its last line says what happened)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    if isinstance(error, asyncio.CancelledError):
        text += ("CancelledError: writing was cancelled before the end of the data (the run "
                 "stopped early: another part of the pipeline failed, or it was cancelled)\n")
    return text


def _os_storage_error(what: str, error: OSError, key: DataKey) -> StorageError:
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        reason = "the disk is full"
    elif error.errno == errno.EDQUOT:
        reason = "the disk quota is exceeded"
    elif error.errno in (errno.EROFS,):
        reason = "the file system is read-only"
    elif error.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    where = f" ({error.filename})" if error.filename and str(error.filename) not in what else ""
    return StorageError(f"{what}: {reason}{where}", data_type=key.data_type, run_id=key.run_id)


def _note_file(info: dict, written: tuple[int, str] | None) -> None:
    """Record a written chunk file's size (as strax does) and checksum (ours) in its entry."""
    if written is not None:
        info["filesize"], info[checksums.KEY] = written


def _write_chunk_file(
    path: str, data: np.ndarray, codec: codecs.Codec, fsync: bool, chunk_i: int, key: DataKey
) -> tuple[int, str]:
    """Compress and write one chunk (blocking; on a worker thread).

    Returns the file's size and the checksum of its bytes (checked on load: blosc, the default
    codec, would not notice a flipped byte by itself)."""
    blob = codec.compress(codecs.array_bytes(data), codecs.shuffle_size(data.dtype))
    digest = checksums.checksum(blob)
    try:
        with open(path, "xb") as f:
            f.write(blob)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    except OSError as error:
        raise _os_storage_error(f"cannot write chunk {chunk_i} to {path}", error,
                                key).add_context(chunk_i=chunk_i) from None
    return len(blob), digest


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
