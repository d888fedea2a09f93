"""Shared-memory payloads on one host: a pool of segments on the publisher, mappings on the
subscriber.

The publisher copies each chunk once into a POSIX shared-memory segment (``shm_open``) and sends
only its name over the socket. Every subscriber maps the segment privately (copy-on-write) and
wraps it with ``np.frombuffer``: no copy on the receiving side. A subscriber tells the publisher
twice about a segment: ``ACK`` when it has mapped it (the chunk left the publisher's buffer: flow
control) and ``RELEASE`` when the last array using the mapping was garbage-collected (the
segment may be reused). Reusing segments matters: fresh shared memory is ~10x slower to fill
than memory already touched.

Segment lifetime, "always unlinked":

- the publisher unlinks every segment it created when it closes, whatever the reason (mappings
  that subscribers still hold stay valid: POSIX semantics), and never reuses a segment that a
  disconnected subscriber may still map (it is unlinked instead);
- segment names are ``axs_<publisher pid>_<random>_<n>``; a subscriber that sees its publisher
  die (connection lost and that process gone) unlinks every segment of that prefix, so even a
  SIGKILLed publisher leaves nothing in ``/dev/shm``; Python's resource tracker of the publisher
  process is a second net.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import re
import secrets
import sys
import weakref
from dataclasses import dataclass
from multiprocessing import resource_tracker
from typing import Any, TypeGuard

import numpy as np

from ..errors import StreamError

try:  # the POSIX calls behind multiprocessing.shared_memory
    import _posixshmem
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

__all__ = [
    "Segment",
    "SegmentGone",
    "SegmentPool",
    "map_segment",
    "new_prefix",
    "segment_names",
    "sweep",
    "valid_prefix",
    "valid_segment",
    "process_gone",
]

_PREFIX_RE = re.compile(r"^axs_(\d+)_[0-9a-f]{8}$")
_NAME_RE = re.compile(r"^axs_\d+_[0-9a-f]{8}_\d+$")
#: segments are created with sizes rounded up to this, so they can be reused for similar chunks
_GRANULE = 1 << 20
_SHM_DIR = "/dev/shm"


def new_prefix() -> str:
    """A fresh segment-name prefix, ``axs_<pid>_<random>``: the pid lets a subscriber tell
    whether the publisher that owns the segments is still alive."""
    return f"axs_{os.getpid()}_{secrets.token_hex(4)}"


def valid_prefix(prefix: object) -> bool:
    """Whether ``prefix`` has the form ``new_prefix`` makes."""
    return isinstance(prefix, str) and bool(_PREFIX_RE.match(prefix))


def valid_segment(name: object, prefix: str) -> TypeGuard[str]:
    """Whether ``name`` is a segment name under ``prefix`` (never any other shared memory)."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and name.startswith(prefix + "_")


def segment_names(prefix: str = "axs_") -> list[str]:
    """Names in /dev/shm that start with ``prefix`` (for tests and sweeps)."""
    try:
        return sorted(n for n in os.listdir(_SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:  # pragma: no cover - no /dev/shm on this system
        return []


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:  # pragma: no cover - no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def sweep(prefix: str) -> int:
    """Unlink every segment of a (dead) publisher; returns how many were removed."""
    if not valid_prefix(prefix) or _posixshmem is None:
        return 0
    removed = 0
    for name in segment_names(prefix + "_"):
        try:
            _posixshmem.shm_unlink("/" + name)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


class _Mapping(mmap.mmap):
    """An mmap that supports weak references (to learn when its last array is gone)."""


# Mappings hold no file descriptor. A subscriber may keep thousands of chunks alive (a run
# collected in memory) and a publisher as many segments: with one descriptor each they would
# hit the open-files limit (RLIMIT_NOFILE, often 1024). The mapping stays valid once its
# descriptor is closed, but Python's mmap keeps a duplicate of it open until the mmap is
# closed, except with ``trackfd=False`` (Python >= 3.13). Before 3.13 the segment is mapped
# with libc's mmap: a ctypes byte array at the mapped address, unmapped when it is garbage
# collected (arrays made with np.frombuffer, and memoryviews, keep it alive).
_PROT = mmap.PROT_READ | mmap.PROT_WRITE


def _load_libc() -> Any:
    if sys.version_info >= (3, 13) or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):  # pragma: no cover - no usable libc
        return None
    return libc


_libc = _load_libc()
_MAP_FAILED = ctypes.c_void_p(-1).value


def _map_fd(fd: int, size: int, flags: int) -> Any:
    """A writable buffer over ``size`` bytes of ``fd`` that keeps no descriptor open (the
    caller closes ``fd``); it supports weak references, and is unmapped once collected."""
    if sys.version_info >= (3, 13):
        return _Mapping(fd, size, flags=flags, prot=_PROT, trackfd=False)  # type: ignore[call-arg]
    if _libc is None:  # pragma: no cover - keeps a duplicate of fd open
        return _Mapping(fd, size, flags=flags, prot=_PROT)
    addr = _libc.mmap(None, size, _PROT, flags, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    buf = (ctypes.c_ubyte * size).from_address(addr)
    # not at exit: arrays may still use it then; the process's end unmaps everything
    weakref.finalize(buf, _libc.munmap, addr, size).atexit = False
    return buf


def _os_failure(what: str, error: OSError) -> str:
    """``what`` failed with ``error``: the message, with the limit that was hit."""
    text = f"{what}: {error.strerror or error}"
    if error.errno in (errno.EMFILE, errno.ENFILE):
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            limit = f"{soft} (hard limit {hard})"
        except (ImportError, OSError, ValueError):  # pragma: no cover
            limit = "unknown"
        text += (f" (the open-files limit RLIMIT_NOFILE is {limit}; raise it with "
                 f"'ulimit -n', or keep fewer files and sockets open)")
    elif error.errno == errno.ENOMEM:
        text += " (too many mappings: vm.max_map_count, or out of memory)"
    return text


class SegmentGone(StreamError):
    """A segment named in a CHUNK frame does not exist (any more)."""


def map_segment(name: str, nbytes: int, seq: int | None = None) -> Any:
    """Map segment ``name`` (at least ``nbytes``) privately (writes stay local: copy-on-write).

    The mapping keeps no file descriptor open; it is unmapped when garbage-collected. ``seq``:
    the chunk's sequence number, for error messages."""
    if _posixshmem is None:  # pragma: no cover
        raise StreamError("shared-memory streams need POSIX shared memory")
    of_chunk = f" (chunk seq {seq})" if seq is not None else ""
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
    except FileNotFoundError:
        raise SegmentGone(
            f"shared-memory segment {name!r}{of_chunk} does not exist (the publisher died, or "
            f"is not on this host)"
        ) from None
    except OSError as error:
        raise StreamError(_os_failure(f"cannot open shared-memory segment {name!r}{of_chunk}",
                                      error)) from None
    try:
        size = os.fstat(fd).st_size
        if size < nbytes:
            raise StreamError(
                f"shared-memory segment {name!r}{of_chunk} holds {size} bytes, the frame "
                f"announces {nbytes}"
            )
        # the whole segment: its size is a multiple of _GRANULE, so few buffer types are made
        return _map_fd(fd, size, mmap.MAP_PRIVATE)
    except OSError as error:
        raise StreamError(_os_failure(f"cannot map shared-memory segment {name!r}{of_chunk}",
                                      error)) from None
    finally:
        os.close(fd)


def _create(name: str, size: int) -> Any:
    """Create segment ``name`` of ``size`` bytes and map it (shared); no descriptor stays
    open. Registered with the resource tracker, which unlinks it if this process dies."""
    if _posixshmem is None:  # pragma: no cover
        raise StreamError("shared-memory streams need POSIX shared memory")
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    except OSError as error:
        raise StreamError(_os_failure(f"cannot create shared-memory segment {name!r}",
                                      error)) from None
    try:
        os.ftruncate(fd, size)
        buf = _map_fd(fd, size, mmap.MAP_SHARED)
    except OSError as error:
        _posixshmem.shm_unlink("/" + name)
        raise StreamError(_os_failure(f"cannot create shared-memory segment {name!r} of "
                                      f"{size} bytes", error)) from None
    finally:
        os.close(fd)
    resource_tracker.register("/" + name, "shared_memory")
    return buf


def _reserve(name: str, nbytes: int) -> None:
    """Allocate the first ``nbytes`` of segment ``name`` in /dev/shm now.

    A segment is sparse when created: writing into it when /dev/shm is full kills the process
    with SIGBUS. Reserving the pages that the chunk will fill (``posix_fallocate``; they would
    be allocated by the copy anyway) turns that into ENOSPC here, a StreamError.
    """
    if _posixshmem is None or not hasattr(os, "posix_fallocate"):  # pragma: no cover
        return
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        try:
            os.posix_fallocate(fd, 0, nbytes)
        finally:
            os.close(fd)
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # pragma: no cover - cannot reserve
            return
        if error.errno in (errno.EMFILE, errno.ENFILE):
            raise StreamError(_os_failure(f"cannot open shared-memory segment {name!r}",
                                          error)) from None
        raise StreamError(
            f"cannot put a chunk of {nbytes} bytes in shared memory: {_SHM_DIR} has "
            f"{_shm_free()} bytes free ({error.strerror}). Make smaller chunks, enlarge "
            f"{_SHM_DIR}, or use the tcp transport"
        ) from None


def _shm_free() -> int | str:
    try:
        st = os.statvfs(_SHM_DIR)
    except OSError:  # pragma: no cover - no /dev/shm
        return "unknown"
    return st.f_bavail * st.f_frsize


@dataclass(eq=False)
class Segment:
    """One shared-memory segment of a pool, with its reference count."""

    #: the mapping (no file descriptor); None once unlinked (unmapped when unused)
    buf: Any
    name: str
    size: int
    refs: int = 0
    #: a subscriber that went away may still map it: unlink when unreferenced, never reuse
    retired: bool = False
    nbytes: int = 0
    #: bytes from the start that are allocated in /dev/shm (``_reserve``)
    reserved: int = 0


class SegmentPool:
    """The publisher's segments: created on demand, reused once every subscriber released
    them, unlinked on close. At most ``keep_bytes`` of free segments are kept for reuse."""

    def __init__(self, prefix: str | None = None, keep_bytes: int = 256 * 1024**2) -> None:
        self.prefix = prefix or new_prefix()
        self.keep_bytes = int(keep_bytes)
        self._n = 0
        self._free: list[Segment] = []
        self._all: dict[str, Segment] = {}
        self.created = 0
        self.reused = 0
        self.unlinked = 0
        self.closed = False

    @property
    def live_segments(self) -> int:
        """Segments that exist now, in use or free."""
        return len(self._all)

    @property
    def live_bytes(self) -> int:
        """Total size of the segments that exist now."""
        return sum(s.size for s in self._all.values())

    @property
    def free_bytes(self) -> int:
        """Total size of the segments kept for reuse."""
        return sum(s.size for s in self._free)

    def acquire(self, nbytes: int) -> Segment:
        """A segment of at least ``nbytes`` (one reference held by the caller)."""
        if self.closed:
            raise StreamError("the publisher's shared-memory pool is closed")
        best = None
        for seg in self._free:
            fits = nbytes <= seg.size <= 2 * nbytes + _GRANULE
            if fits and (best is None or seg.size < best.size):
                best = seg
        if best is not None:
            self._free.remove(best)
            self.reused += 1
            seg = best
        else:
            size = max(_GRANULE, -(-nbytes // _GRANULE) * _GRANULE)
            name = f"{self.prefix}_{self._n}"
            self._n += 1
            seg = Segment(_create(name, size), name, size)
            self._all[name] = seg
            self.created += 1
        if nbytes > seg.reserved:
            try:
                _reserve(seg.name, nbytes)
            except StreamError:
                self._unlink(seg)  # nobody uses it: give its space back
                raise
            seg.reserved = nbytes
        seg.refs = 1
        seg.nbytes = nbytes
        return seg

    @staticmethod
    def write(seg: Segment, data: np.ndarray) -> None:
        """Copy ``data`` (contiguous or not) into the segment (safe to call on a thread)."""
        buf = seg.buf  # mapped while the segment is referenced
        if data.flags.c_contiguous:
            # a byte copy: numpy copies structured dtypes field by field, ~5x slower
            target = np.frombuffer(buf, dtype=np.uint8, count=data.nbytes)
            np.copyto(target, data.view(np.uint8).reshape(-1))
        else:
            target = np.frombuffer(buf, dtype=data.dtype, count=len(data))
            target[...] = data
        del target

    def ref(self, seg: Segment) -> None:
        """One more holder of ``seg``."""
        seg.refs += 1

    def unref(self, seg: Segment) -> None:
        """One holder less; the last one frees ``seg`` for reuse, or unlinks it if it is
        retired, the pool is closed or the free segments already fill ``keep_bytes``."""
        seg.refs -= 1
        if seg.refs > 0:
            return
        if seg.retired or self.closed or self.free_bytes + seg.size > self.keep_bytes:
            self._unlink(seg)
        else:
            self._free.append(seg)

    def retire(self, seg: Segment) -> None:
        """Never reuse ``seg`` (a subscriber that went away may still map it)."""
        seg.retired = True

    def _unlink(self, seg: Segment) -> None:
        if self._all.pop(seg.name, None) is None:
            return
        if seg in self._free:
            self._free.remove(seg)
        seg.buf = None  # unmapped once unused (a copy still running on a thread holds it)
        try:
            _posixshmem.shm_unlink("/" + seg.name)
        except FileNotFoundError:
            pass
        else:
            resource_tracker.unregister("/" + seg.name, "shared_memory")
        self.unlinked += 1

    def close(self) -> None:
        """Unlink every segment (subscribers' mappings stay valid until they drop them)."""
        self.closed = True
        for seg in list(self._all.values()):
            self._unlink(seg)
        self._free.clear()
