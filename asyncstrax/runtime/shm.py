"""Shared-memory transport of numpy arrays between processes: descriptors, not pickles.

A *segment* is a POSIX shared-memory object (``/dev/shm/asx_...``) holding several arrays back
to back (each aligned to 64 bytes). What crosses the process boundary is only a descriptor per
array, ``(offset, dtype, length)``, plus the segment's name; the receiving side maps the
segment and builds ``np.ndarray`` views on it, without copying.

Lifetime rules (see ``process_pool``):

- every segment name starts with ``asx_`` and the creator's pid, so a leak is easy to spot;
- the creator registers the name with multiprocessing's resource tracker (shared by the
  parent and its workers), so even if every process of ours is killed the tracker unlinks it;
- whoever unlinks a segment unregisters it; a name may be unlinked while mapped (Linux keeps
  the memory until the last mapping goes), which is how outputs reach the parent without a
  copy: the parent maps a worker's output segment, unlinks its name at once, and the memory
  lives exactly as long as the arrays that view it.

Mappings are plain ``mmap`` objects, never closed by hand: an array built on one holds a
reference to it, and the mapping goes away with the last array (no ``BufferError`` when a
plugin keeps a view).
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

try:  # POSIX only; the same private module multiprocessing.shared_memory uses
    import _posixshmem
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

from multiprocessing import resource_tracker

__all__ = [
    "ALIGN",
    "PREFIX",
    "ArrayDesc",
    "create_segment",
    "layout",
    "list_segments",
    "map_arrays",
    "new_name",
    "open_segment",
    "unlink_segment",
    "write_arrays",
    "write_into",
]

PREFIX = "asx_"
ALIGN = 64

#: (offset in the segment, dtype, number of items)
ArrayDesc = tuple[int, np.dtype, int]

_counter = itertools.count()
_TRACKER_TYPE = "shared_memory"


def new_name(tag: str = "") -> str:
    """A fresh segment name: ``asx_<pid>_<random>_<n>[_tag]`` (short: macOS allows 31 chars)."""
    name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(3)}_{next(_counter)}"
    return f"{name}_{tag}" if tag else name


def layout(arrays: Iterable[np.ndarray]) -> tuple[list[int], int]:
    """Aligned offsets of ``arrays`` packed back to back, and the total size in bytes."""
    offsets = []
    size = 0
    for a in arrays:
        offsets.append(size)
        size += -(-a.nbytes // ALIGN) * ALIGN
    return offsets, size


def create_segment(name: str, size: int) -> mmap.mmap:
    """Create (exclusively) and map a segment of ``size`` > 0 bytes; registered for cleanup."""
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        resource_tracker.register("/" + name, _TRACKER_TYPE)
        _check_space(size)
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    except BaseException:
        unlink_segment(name)
        raise
    finally:
        os.close(fd)


def _check_space(size: int) -> None:
    """Refuse early when /dev/shm lacks room: writing past it would be a SIGBUS later.

    (Not ``posix_fallocate``: it doubles the cost of filling fresh pages.)"""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:  # pragma: no cover - no /dev/shm
        return
    free = st.f_bavail * st.f_frsize
    if size > free:
        raise OSError(errno.ENOSPC, f"/dev/shm has {free} bytes free, {size} needed")


def open_segment(name: str) -> mmap.mmap:
    """Map an existing segment (read-write, shared)."""
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def unlink_segment(name: str) -> bool:
    """Remove a segment's name (mappings stay valid); False if it did not exist."""
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    resource_tracker.unregister("/" + name, _TRACKER_TYPE)
    return True


def write_arrays(name: str, arrays: Sequence[np.ndarray]) -> tuple[list[ArrayDesc], int]:
    """Copy ``arrays`` into a new segment ``name``; returns their descriptors and the bytes.

    No segment is created when every array is empty (descriptors still describe them).
    """
    offsets, size = layout(arrays)
    descs: list[ArrayDesc] = [(off, a.dtype, len(a)) for off, a in zip(offsets, arrays)]
    if size == 0:
        return descs, 0
    mm = create_segment(name, size)
    for off, a in zip(offsets, arrays):
        if a.nbytes:
            np.ndarray(len(a), a.dtype, buffer=mm, offset=off)[...] = a
    del mm  # unmapped here (no array views it); the name stays until unlinked
    return descs, size


def write_into(mm: mmap.mmap, arrays: Sequence[np.ndarray], base: int = 0
               ) -> tuple[list[ArrayDesc], int]:
    """Copy ``arrays`` into an existing mapping (a reused segment) as ``write_arrays`` does,
    from offset ``base`` on (a multiple of ``ALIGN``; what lies before is the caller's)."""
    offsets, size = layout(arrays)
    if base + size > len(mm):
        raise ValueError(f"segment of {len(mm)} bytes is too small for {base + size}")
    for off, a in zip(offsets, arrays):
        if a.nbytes:
            np.ndarray(len(a), a.dtype, buffer=mm, offset=base + off)[...] = a
    return [(base + off, a.dtype, len(a)) for off, a in zip(offsets, arrays)], size


def map_arrays(name: str | None, descs: Sequence[ArrayDesc],
               dtypes: dict[Any, np.dtype] | None = None,
               mm: mmap.mmap | None = None) -> list[np.ndarray]:
    """Arrays viewing segment ``name`` (or the mapping ``mm``) as described, without a copy;
    empty ones need no segment.

    ``dtypes`` maps a received dtype to an equal local dtype object to use instead (so the
    arrays carry the very dtype objects the receiver declared).
    """
    if mm is None and name is not None and any(n for _, _, n in descs):
        mm = open_segment(name)
    out = []
    for off, dtype, n in descs:
        if dtypes:
            dtype = dtypes.get(dtype, dtype)
        if n == 0:
            out.append(np.zeros(0, dtype))
        else:
            out.append(np.ndarray(n, dtype, buffer=mm, offset=off))
    return out


def list_segments(prefix: str = PREFIX) -> list[str]:
    """Names of segments in /dev/shm starting with ``prefix`` (Linux; [] elsewhere)."""
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))
    except FileNotFoundError:  # pragma: no cover - no /dev/shm
        return []
