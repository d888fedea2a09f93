"""Tune glibc malloc for a pipeline's chunk-sized buffers: one arena, big blocks kept.

**One arena.** glibc gives each thread that allocates its own malloc arena (up to 8 per core),
and each arena keeps freed memory up to its own trim threshold, which grows to tens of MB once
arrays of chunk size have been freed. A pipeline allocates its chunks on the event-loop thread,
on compute threads and on saving threads, so every arena ends up holding about a chunk it does
not need. With one arena the same run peaks 30-40 MiB lower (200 MB TPC job: 342-364 vs 374-403
MiB, five alternating runs, ``benchmarks/whole_process.py``) and is no slower: numpy allocates
under the GIL, and the kernels that release it allocate nothing.

**Blocks up to 32 MiB from the heap.** glibc serves a big allocation with a fresh ``mmap`` and
raises that threshold only to the size of the last such block freed. A compressed chunk file is
allocated at the chunk's full size and then shrunk to what the codec wrote (about half), so the
threshold stays below the next request and every chunk saved comes from fresh memory: one page
fault per 4 kB, about 4.5 us each on this VM (0.9 GB/s). Fixing the mmap threshold at 32 MiB
(glibc's own upper bound for the moving one) and the trim threshold at 64 MiB (twice that, as
glibc does) keeps one chunk's worth of freed memory for the next. Saving every level of the
200 MB TPC job: 40-70k page faults instead of 60-100k, 8-9% less CPU over the whole process,
the same peak RSS at 200 MB and at 2 GB (``benchmarks/whole_process.py``, alternating runs).

These settings are process-wide, so they are applied once, when the first Context is made,
before the engine starts its threads. glibc's own environment variables win
(``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``: glibc read them
at start, and Dask sets the last for its workers); ``ASYNCSTRAX_MALLOC_ARENAS=0`` leaves malloc
alone; any other integer is the arena limit. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["ENV_VAR", "MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "tune_malloc"]

ENV_VAR = "ASYNCSTRAX_MALLOC_ARENAS"
# from glibc's malloc.h
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
#: blocks below this size come from the heap, not a fresh mmap (glibc's cap for its own)
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: freed memory at the top of the heap kept for reuse, up to this much
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
_applied: int | None = None
_tuned = False


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc(arenas: int | None = None) -> int | None:
    """Apply this module's malloc settings: ``arenas`` arenas (default: $ASYNCSTRAX_MALLOC_ARENAS
    or 1) and the fixed mmap and trim thresholds.

    Returns the arena limit set, or None when the arena count is left as it is (not glibc,
    ``MALLOC_ARENA_MAX`` set, or 0 arenas asked, which leaves malloc alone altogether). Threads
    that already have an arena keep it; call this before starting threads that allocate.
    """
    global _applied, _tuned
    if arenas is None:
        if _tuned:
            return _applied
        raw = os.environ.get(ENV_VAR, "1")
        try:
            arenas = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_VAR}={raw!r}: expected an integer (0 leaves malloc "
                             f"alone)") from None
        if "MALLOC_ARENA_MAX" in os.environ and arenas:
            arenas = None
    if arenas is not None and arenas < 0:
        raise ValueError(f"malloc arenas must be >= 0, got {arenas}")
    if arenas == 0:
        return None
    libc = _glibc()
    if libc is None:
        return None
    _tuned = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        # fixing one stops glibc from moving the other, so both or neither
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    if arenas is not None and libc.mallopt(_M_ARENA_MAX, int(arenas)) == 1:
        _applied = int(arenas)
    return _applied
