"""Keep glibc from holding freed chunk memory in one arena per thread.

glibc gives each thread that allocates its own malloc arena (up to 8 per core), and each arena
keeps freed memory up to its own trim threshold, which grows to tens of MB once arrays of
chunk size have been freed. A pipeline allocates its chunks on the event-loop thread, on
compute threads and on saving threads, so every arena ends up holding about a chunk it does not
need. With one arena the same run peaks 30-40 MiB lower (200 MB TPC job: 342-364 vs 374-403
MiB, five alternating runs, ``benchmarks/whole_process.py``) and is no slower: numpy allocates
under the GIL, and the kernels that release it allocate nothing.

The limit is process-wide, so it is applied once, when the first Context is made, before the
engine starts its threads. ``MALLOC_ARENA_MAX`` in the environment wins (glibc read it at
start); ``ASYNCSTRAX_MALLOC_ARENAS=0`` leaves malloc alone; any other integer is the limit.
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["ENV_VAR", "limit_malloc_arenas"]

ENV_VAR = "ASYNCSTRAX_MALLOC_ARENAS"
_M_ARENA_MAX = -8  # from glibc's malloc.h
_applied: int | None = None


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


def limit_malloc_arenas(arenas: int | None = None) -> int | None:
    """Limit glibc to ``arenas`` malloc arenas (default: $ASYNCSTRAX_MALLOC_ARENAS or 1).

    Returns the limit in force after the call, or None when malloc is left as it is (not
    glibc, ``MALLOC_ARENA_MAX`` set, or the limit is 0). Threads that already have an arena
    keep it; call this before starting threads that allocate.
    """
    global _applied
    if arenas is None:
        if _applied is not None:
            return _applied
        if "MALLOC_ARENA_MAX" in os.environ:
            return None
        raw = os.environ.get(ENV_VAR, "1")
        try:
            arenas = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_VAR}={raw!r}: expected an integer (0 leaves malloc "
                             f"alone)") from None
    if arenas < 0:
        raise ValueError(f"malloc arenas must be >= 0, got {arenas}")
    if arenas == 0:
        return None
    libc = _glibc()
    if libc is None or libc.mallopt(_M_ARENA_MAX, int(arenas)) != 1:
        return None
    _applied = int(arenas)
    return _applied
