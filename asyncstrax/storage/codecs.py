"""Compressors: turn an array's raw bytes into a chunk file's bytes, and back.

A chunk file is the raw bytes of the chunk's array compressed whole, as strax writes it. strax
names the codec in the metadata's ``compressor`` field; the names here are strax's, so data moves
both ways:

- ``lz4`` (our default): an LZ4 *frame* (``lz4.frame``), with the content size and a content
  checksum in the frame so a flipped byte or a truncated file is detected on load. strax's own lz4
  files (no checksum) read the same way, and strax reads ours.
- ``blosc`` (strax's default) and ``zstd``: optional; their packages are imported only when such
  data is met, with an error naming what to ``pip install`` when missing.
- ``bz2``: the standard library's.

Every function here is blocking and meant to run on a worker thread; lz4, blosc and zstd release
the GIL while they work.
"""

from __future__ import annotations

import bz2
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import StorageError

__all__ = ["Codec", "available_codecs", "compress", "decompress", "get_codec"]

Buffer = Any  # bytes, bytearray, memoryview: anything with the buffer protocol


@dataclass(frozen=True)
class Codec:
    """One compressor: ``compress(buffer) -> bytes``, ``decompress(buffer, nbytes) -> buffer``.

    ``nbytes`` is the uncompressed size from the chunk's metadata (or None when unknown); codecs
    that need an output size (zstd frames without one) use it.
    """

    name: str
    compress: Callable[[Buffer], Buffer]
    decompress: Callable[[Buffer, int | None], Buffer]


def _optional_module(module: str, package: str, compressor: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StorageError(
            f"data compressed with {compressor!r} needs the {package!r} package: "
            f"pip install {package}  (or: pip install 'asyncstrax[compression]')"
        ) from None


# ---------------------------------------------------------------------------- lz4
def _lz4_compress(buffer: Buffer) -> bytes:
    import lz4.frame

    return lz4.frame.compress(buffer, content_checksum=True, store_size=True)


def _lz4_decompress(buffer: Buffer, nbytes: int | None) -> Buffer:
    import lz4.frame

    # A bytearray is writable (users may modify loaded arrays, as with strax) and, measured
    # here, no slower than bytes.
    return lz4.frame.decompress(buffer, return_bytearray=True)


# ---------------------------------------------------------------------------- blosc
def _blosc_compress(buffer: Buffer) -> bytes:
    blosc = _optional_module("blosc", "blosc", "blosc")
    if memoryview(buffer).nbytes >= blosc.MAX_BUFFERSIZE:
        raise StorageError("blosc cannot compress a chunk of 2 GB or more; use lz4")
    return blosc.compress(buffer, shuffle=False)


def _blosc_decompress(buffer: Buffer, nbytes: int | None) -> Buffer:
    blosc = _optional_module("blosc", "blosc", "blosc")
    return blosc.decompress(bytes(buffer) if not isinstance(buffer, bytes) else buffer,
                            as_bytearray=True)


# ---------------------------------------------------------------------------- zstd
def _zstd_compress(buffer: Buffer) -> bytes:
    try:
        import zstandard
    except ImportError:
        zstd = _optional_module("zstd", "zstd", "zstd")
        return zstd.compress(bytes(buffer), 3, 1)
    return zstandard.ZstdCompressor(level=3).compress(buffer)


def _zstd_decompress(buffer: Buffer, nbytes: int | None) -> Buffer:
    try:
        import zstandard
    except ImportError:
        zstd = _optional_module("zstd", "zstd", "zstd")
        return zstd.decompress(bytes(buffer))
    decompressor = zstandard.ZstdDecompressor()
    # strax writes with python-zstd, whose frames may lack the content size: pass it.
    return decompressor.decompress(buffer, max_output_size=nbytes or 0)


# ---------------------------------------------------------------------------- bz2
def _bz2_decompress(buffer: Buffer, nbytes: int | None) -> Buffer:
    return bz2.decompress(buffer)


_CODECS = {
    "lz4": Codec("lz4", _lz4_compress, _lz4_decompress),
    "blosc": Codec("blosc", _blosc_compress, _blosc_decompress),
    "zstd": Codec("zstd", _zstd_compress, _zstd_decompress),
    "bz2": Codec("bz2", bz2.compress, _bz2_decompress),
}


def get_codec(name: str) -> Codec:
    """The codec called ``name`` (strax's names), or a StorageError listing the known ones."""
    try:
        return _CODECS[name]
    except (KeyError, TypeError):
        raise StorageError(
            f"unknown compressor {name!r}; known: {sorted(_CODECS)}"
        ) from None


def available_codecs() -> list[str]:
    """Names of the codecs whose packages are importable here."""
    out = []
    for name in _CODECS:
        module = {"lz4": "lz4.frame", "blosc": "blosc", "bz2": "bz2"}.get(name)
        modules = [module] if module else ["zstandard", "zstd"]
        for m in modules:
            try:
                importlib.import_module(m)
            except ImportError:
                continue
            out.append(name)
            break
    return out


def array_bytes(data: np.ndarray) -> memoryview:
    """The raw bytes of a 1-d array as a flat byte view (a copy only if not contiguous)."""
    data = np.ascontiguousarray(data)
    return memoryview(data.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def compress(name: str, data: np.ndarray) -> Buffer:
    """Compress an array's raw bytes with the named codec."""
    return get_codec(name).compress(array_bytes(data))


def decompress(name: str, buffer: Buffer, nbytes: int | None = None) -> Buffer:
    """Decompress a chunk file's bytes with the named codec."""
    return get_codec(name).decompress(buffer, nbytes)
