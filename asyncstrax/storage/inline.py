"""Saving inside a fused chain: chunk files written where the chunk was made.

When a fused chain (``runtime.fusion``) makes a data type that is saved but read by nothing
else, the chain writes that data type's chunk files itself, on the worker thread or in the
worker process that computed them, into the saver's temporary folder. Only a ``WrittenChunk``
goes on to the parent's ``FileSaver``: the chunk's time range and metadata entry, no data. So
``records`` made in a worker process are compressed and written there and never cross back.

This is only done for savers that do not rechunk (one file per chunk, numbered as the chain's
steps), so the files and metadata are exactly what the saver would have written itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..chunk import Chunk
from ..lineage import DataKey
from . import codecs
from .metadata import chunk_filename, chunk_info

__all__ = ["InlineWrite", "WrittenChunk"]


class WrittenChunk(Chunk):
    """A chunk already saved by the chain that made it: its range and file entry, no items.

    ``info`` is its entry in the metadata's ``chunks`` (``chunk_i``, ``n``, times, ...;
    ``filename`` when a file was written); ``written`` is ``(filesize, checksum)`` or None for an
    empty chunk (no file, as strax does)."""

    __slots__ = ("info", "written")

    info: dict
    written: tuple[int, str] | None

    @classmethod
    def of(cls, chunk: Chunk, info: dict, written: tuple[int, str] | None) -> WrittenChunk:
        """The stand-in for ``chunk`` once written: same range and labels, no items (built
        without the chunk checks, which the written chunk passed)."""
        out = object.__new__(cls)
        out.data_type = chunk.data_type
        out.data_kind = chunk.data_kind
        out.dtype = chunk.dtype
        out.run_id = chunk.run_id
        out.start = chunk.start
        out.end = chunk.end
        out.subruns = chunk.subruns
        out.target_size_mb = chunk.target_size_mb
        out.data = np.zeros(0, dtype=chunk.dtype)
        out.info = info
        out.written = written
        return out


@dataclass
class InlineWrite:
    """What a chain needs to write one saved data type's files (pickles to worker processes).

    ``folder`` is the saver's temporary folder, filled in once the saver has claimed it; None
    means nothing is written (the data is stored already, or the save was abandoned)."""

    key: DataKey
    compressor: str
    fsync: bool
    folder: str | None = None

    def write(self, chunk: Chunk, chunk_i: int) -> WrittenChunk:
        """Write ``chunk`` as the saver's chunk ``chunk_i`` (blocking; on a worker)."""
        from .files import _write_chunk_file

        info = chunk_info(chunk, chunk_i)
        written = None
        if self.folder is not None and len(chunk):
            filename = chunk_filename(self.key.data_type, self.key.lineage_hash, chunk_i)
            info["filename"] = filename
            path = f"{self.folder}/{filename}"
            written = _write_chunk_file(path, chunk.data, codecs.get_codec(self.compressor),
                                        self.fsync, chunk_i, self.key)
        return WrittenChunk.of(chunk, info, written)

    def __repr__(self) -> str:
        return f"InlineWrite({self.key.data_type!r} -> {self.folder!r})"


def written_from_meta(chunk: Chunk, extra: Any) -> Chunk:
    """Rebuild a WrittenChunk sent back by a worker process (``extra`` = (info, written))."""
    if extra is None:
        return chunk
    info, written = extra
    return WrittenChunk.of(chunk, info, None if written is None else tuple(written))
