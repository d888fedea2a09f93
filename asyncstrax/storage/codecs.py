"""Compressors: turn an array's raw bytes into a chunk file's bytes, and back.

A chunk file is the raw bytes of the chunk's array compressed whole, as strax writes it. strax
names the codec in the metadata's ``compressor`` field; the names here are strax's, so data moves
both ways:

- ``blosc`` (the default, as in strax): blosc's byte shuffle then LZ4, one thread, the GIL
  released. The shuffle's element size is that of the dtype field holding most of the item's
  bytes (2 for int16 waveforms), which groups the high bytes of the samples together: measured
  on the TPC chain's raw_records, 3x faster than a plain LZ4 frame both ways, and smaller (see
  docs/decisions.md). Any blosc reads it (shuffle and size are in blosc's header), so strax does.
  Blosc has no checksum of its own: the saver records one of each chunk file in the metadata
  and the loader checks it (``checksums.py``). Decompression writes straight into a numpy
  buffer of the size the metadata and blosc's header agree on.
- ``lz4``: an LZ4 *frame* (``lz4.frame``), with the content size and a content checksum in the
  frame. strax's own lz4 files (no checksum) read the same way, and strax reads ours.
- ``zstd``: optional; its package is imported only when such data is met, with an error naming
  what to ``pip install`` when missing.
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

__all__ = ["DEFAULT_COMPRESSOR", "Codec", "available_codecs", "compress", "decompress",
           "get_codec", "shuffle_size"]

#: what plugins and stores use unless they name another compressor (strax's default too)
DEFAULT_COMPRESSOR = "blosc"

Buffer = Any  # bytes, bytearray, memoryview: anything with the buffer protocol


@dataclass(frozen=True)
class Codec:
    """One compressor: ``compress(buffer, typesize) -> bytes``, ``decompress(buffer, nbytes)``.

    ``typesize`` is the element size a shuffling codec groups bytes by (``shuffle_size``);
    others ignore it. ``nbytes`` is the uncompressed size from the chunk's metadata (or None
    when unknown); codecs that need an output size (zstd frames without one) use it.
    """

    name: str
    compress: Callable[[Buffer, int], Buffer]
    decompress: Callable[[Buffer, int | None], Buffer]


def _optional_module(module: str, package: str, compressor: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StorageError(
            f"data compressed with {compressor!r} needs the {package!r} package: "
            f"pip install {package}"
        ) from None


# ---------------------------------------------------------------------------- lz4
def _lz4_compress(buffer: Buffer, typesize: int = 1) -> bytes:
    import lz4.frame

    return lz4.frame.compress(buffer, content_checksum=True, store_size=True)


def _lz4_decompress(buffer: Buffer, nbytes: int | None) -> Buffer:
    import lz4.frame

    # A bytearray is writable (users may modify loaded arrays, as with strax) and, measured
    # here, no slower than bytes.
    return lz4.frame.decompress(buffer, return_bytearray=True)


# ---------------------------------------------------------------------------- blosc
_blosc_module: Any = None


def _blosc() -> Any:
    """python-blosc, set up once: one thread per call (our saver threads are the parallelism)
    and the GIL released while it works (python-blosc holds it by default)."""
    global _blosc_module
    if _blosc_module is None:
        blosc = _optional_module("blosc", "blosc", "blosc")
        blosc.set_nthreads(1)
        blosc.set_releasegil(True)
        _blosc_module = blosc
    return _blosc_module


def _blosc_compress(buffer: Buffer, typesize: int = 8) -> bytes:
    blosc = _blosc()
    if memoryview(buffer).nbytes >= blosc.MAX_BUFFERSIZE:
        raise StorageError("blosc cannot compress a chunk of 2 GB or more: use smaller chunks "
                           "or compressor='lz4'")
    return blosc.compress(buffer, typesize=max(1, min(int(typesize), 255)), clevel=5,
                          shuffle=blosc.SHUFFLE, cname="lz4")


def _blosc_header_nbytes(buffer: Buffer) -> int | None:
    """The uncompressed size a blosc header states (bytes 4-8, little endian), or None."""
    view = memoryview(buffer).cast("B")
    if view.nbytes < _BLOSC_HEADER_BYTES:
        return None
    return int.from_bytes(view[4:8], "little")


_BLOSC_HEADER_BYTES = 16


def _blosc_decompress(buffer: Buffer, nbytes: int | None) -> Buffer:
    blosc = _blosc()
    if nbytes and _blosc_header_nbytes(buffer) == nbytes:
        # into a numpy buffer: numpy asks for huge pages on big allocations, so fresh memory
        # costs a few page faults instead of one per 4 kB (the size check above keeps the
        # header from writing past the buffer)
        out = np.empty(nbytes, np.uint8)
        blosc.decompress_ptr(buffer, out.ctypes.data)
        return out
    return blosc.decompress(buffer, as_bytearray=True)


# ---------------------------------------------------------------------------- zstd
def _zstd_compress(buffer: Buffer, typesize: int = 1) -> bytes:
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
def _bz2_compress(buffer: Buffer, typesize: int = 1) -> bytes:
    return bz2.compress(buffer)


def _bz2_decompress(buffer: Buffer, nbytes: int | None) -> Buffer:
    return bz2.decompress(buffer)


_CODECS = {
    "lz4": Codec("lz4", _lz4_compress, _lz4_decompress),
    "blosc": Codec("blosc", _blosc_compress, _blosc_decompress),
    "zstd": Codec("zstd", _zstd_compress, _zstd_decompress),
    "bz2": Codec("bz2", _bz2_compress, _bz2_decompress),
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


def shuffle_size(dtype: np.dtype) -> int:
    """The element size to shuffle an item by: that of the field holding most of its bytes.

    raw_records and records -> 2 (their int16 waveform), peaks -> 4 (float32 waveform), a plain
    float64 array -> 8. Ties go to the smaller size."""
    dtype = np.dtype(dtype)
    weights: dict[int, int] = {}

    def walk(dt: np.dtype, count: int) -> None:
        if dt.subdtype is not None:
            base, shape = dt.subdtype
            walk(base, count * int(np.prod(shape)))
        elif dt.names:
            for name in dt.names:
                walk(dt[name], count)
        elif dt.itemsize:
            weights[dt.itemsize] = weights.get(dt.itemsize, 0) + count * dt.itemsize

    walk(dtype, 1)
    if not weights:
        return 1
    return min(weights, key=lambda size: (-weights[size], size))


def compress(name: str, data: np.ndarray) -> Buffer:
    """Compress an array's raw bytes with the named codec."""
    return get_codec(name).compress(array_bytes(data), shuffle_size(data.dtype))


def decompress(name: str, buffer: Buffer, nbytes: int | None = None) -> Buffer:
    """Decompress a chunk file's bytes with the named codec."""
    return get_codec(name).decompress(buffer, nbytes)
