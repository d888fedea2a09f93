"""Forking workers from a running engine: what the parent prepares, what the worker drops.

``fork`` copies the whole parent: its modules and numba kernels (why a forked worker is ready
at once, where a spawned one imports and loads everything again), but also what belongs to the
parent alone. In the parent, ``prepare_parent()`` sets up numba's target and the workers'
plugins so that they are inherited, and imports the modules a worker's saving imports lazily
(codecs, checksums); the fork runs inside ``no_compilation()``, which first waits for other
threads' imports to finish (a module mid-import is locked in the copy for good: a worker that
imports it waits forever) and then holds numba's compiler lock (no thread inside numba or LLVM
at that moment). ``forget_parent()`` runs first thing in a forked worker and drops what is the
parent's:

- **modules caught mid-import** by the fork despite that wait: dropped with their import locks,
  so the worker imports them afresh instead of waiting for a thread it does not have;

- **objects**: ``gc.freeze()`` puts every object copied from the parent out of the collector's
  reach, so no finalizer of the parent's (a socket's close, a mapping's unmap) runs here on a
  file descriptor or an address the worker may have reused;
- **the event loop**: the worker was forked from inside a running loop; asyncio is told that
  no loop runs in this process;
- **signals**: Python-level handlers (the loop's Ctrl-C and SIGTERM handlers, which write to
  the parent's wake-up pipe) are reset to the default, and the wake-up descriptor is cleared:
  a SIGTERM sent to stop a worker must not reach the parent's loop as its own;
- **sockets and event-loop descriptors**: each is pointed at ``/dev/null`` (the number stays
  taken): a stream connection the parent closes must end for its peer, not live on in a worker;
- **storage writer locks**: the same, so that a writer killed with its workers still running
  leaves a folder that the next writer judges stale (a lock lives while any process holds its
  descriptor);
- **shared-memory segments of ours** mapped by the parent (chunks it still holds) are unmapped
  here, so their memory goes when the parent lets go of it, not when the worker exits.

multiprocessing's own descriptors (pipes) are left alone.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

__all__ = ["forget_parent", "no_compilation", "prepare_parent"]

#: /proc/self/fd link targets of descriptors that belong to the parent's event loop and streams
_PARENT_ONLY = ("socket:", "anon_inode:")


def prepare_parent(warm: Callable[[], None] | None = None) -> None:
    """Before forking: set up numba's CPU target here (~0.3 s, once per process, which the
    parent pays anyway for its own kernels), and run ``warm`` (set up the workers' plugins,
    load their kernels), so that every worker inherits them instead of each doing it again."""
    import numpy as np

    from .._chunk_checks import check_with_endtime

    times = np.zeros(1, np.int64)
    check_with_endtime(times, times)  # a cached kernel: loading it sets the target up
    for module in _WORKERS_IMPORT:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional codec; the worker reports it if it is needed
            pass
    if warm is not None:
        warm()


#: modules a worker imports lazily when its chain saves (storage/inline.py)
_WORKERS_IMPORT = ("asyncstrax.storage.files", "blosc", "lz4.frame", "xxhash")
#: how long a fork waits for other threads' imports to finish [s]
IMPORT_WAIT_SECONDS = 10.0


def _importing() -> list[str]:
    """Modules another thread is importing right now (initializing, in sys.modules). Not
    this thread's own: a script that processes data at import forks from inside its own
    import, which finishes only after the fork (and in a worker must not start over)."""
    from importlib import _bootstrap  # type: ignore[attr-defined]

    locks = getattr(_bootstrap, "_module_locks", {})
    me = threading.get_ident()
    names = []
    for name, module in list(sys.modules.items()):
        if not getattr(getattr(module, "__spec__", None), "_initializing", False):
            continue
        ref = locks.get(name)
        lock = ref() if callable(ref) else None
        if getattr(lock, "owner", None) != me:
            names.append(name)
    return names


def _wait_for_imports(timeout: float = IMPORT_WAIT_SECONDS) -> None:
    """Wait until no other thread is importing a module (bounded: an import may itself wait
    for something this thread holds)."""
    deadline = time.monotonic() + timeout
    while _importing() and time.monotonic() < deadline:
        time.sleep(0.001)


def no_compilation() -> AbstractContextManager[Any]:
    """Wait for other threads' imports to finish, then hold numba's compiler lock (if numba
    is loaded) around a fork: no thread is then in the middle of compiling or loading a kernel
    (inside LLVM), whose locks a worker would inherit held. It is reentrant, and a forked
    worker's thread is its holder, so a worker can still compile (a new type signature)
    without waiting for it."""
    _wait_for_imports()
    if "numba" not in sys.modules:
        return nullcontext()
    from numba.core.compiler_lock import global_compiler_lock

    return cast(AbstractContextManager[Any], global_compiler_lock)


def forget_parent(segment_prefix: str = "/dev/shm/asx_") -> None:
    """Drop the parent's loop, signal handlers, sockets and segment mappings (see module doc)."""
    gc.freeze()
    _drop_half_imported()
    asyncio.events._set_running_loop(None)
    _reset_signals()
    if sys.platform.startswith("linux"):
        _release_descriptors()
        _unmap_segments(segment_prefix)


def _drop_half_imported() -> None:
    """Modules a parent's thread was importing at the fork: their import locks are held by a
    thread this process does not have. Dropping module and lock lets an import start over."""
    half = _importing()
    if not half:
        return
    from importlib import _bootstrap  # type: ignore[attr-defined]

    locks = getattr(_bootstrap, "_module_locks", None)
    for name in half:
        sys.modules.pop(name, None)
        if isinstance(locks, dict):
            locks.pop(name, None)


def _reset_signals() -> None:
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # pragma: no cover - not the main thread
        pass
    for sig in signal.valid_signals():
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):  # pragma: no cover - SIGKILL and co.
            continue


def _release_descriptors() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd == devnull:
                continue
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # the listing's own descriptor, already closed
                continue
            if target.startswith(_PARENT_ONLY) or _is_writer_lock(target):
                os.dup2(devnull, fd, inheritable=False)
    finally:
        os.close(devnull)


def _is_writer_lock(target: str) -> bool:
    from ..storage.tempdirs import LOCK_NAME

    name = os.path.basename(target.removesuffix(" (deleted)"))
    return name.startswith(LOCK_NAME)


def _unmap_segments(prefix: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    munmap = libc.munmap
    munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    regions = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith(prefix):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                regions.append((start, end - start))
    for start, length in regions:
        munmap(start, length)
