"""One malloc arena per process: the count of glibc arenas after threads have allocated, read
with ``malloc_info`` in a fresh interpreter (the limit is process-wide and applies once)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from asyncstrax.runtime.malloc import _glibc, limit_malloc_arenas

pytestmark = pytest.mark.skipif(_glibc() is None, reason="glibc only")

PROGRAM = textwrap.dedent("""
    import ctypes, re, sys, tempfile, threading
    import numpy as np
    import asyncstrax as ax

    ax.Context()
    held = []
    together = threading.Barrier(4)

    def allocate():
        # all four alive at once: a thread that had exited would hand its arena to the next
        together.wait()
        held.append(np.ones(2000))  # 16 kB: from an arena, not mmap
        together.wait()

    threads = [threading.Thread(target=allocate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as f:
        fp = libc.fopen(f.name.encode(), b"w")
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        print(len(re.findall(r'<heap nr="', open(f.name).read())))
""")


def arenas_after_threads(**env: str) -> int:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("MALLOC_ARENA_MAX", "ASYNCSTRAX_MALLOC_ARENAS")}
    out = subprocess.run([sys.executable, "-c", PROGRAM], env={**environ, **env},
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1])


def test_a_context_limits_the_process_to_one_arena():
    assert arenas_after_threads() == 1


def test_the_limit_can_be_set_or_switched_off():
    assert arenas_after_threads(ASYNCSTRAX_MALLOC_ARENAS="0") > 1
    assert arenas_after_threads(ASYNCSTRAX_MALLOC_ARENAS="2") == 2


def test_malloc_arena_max_in_the_environment_wins():
    assert arenas_after_threads(MALLOC_ARENA_MAX="3") == 3


def test_a_bad_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("asyncstrax.runtime.malloc._applied", None)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv("ASYNCSTRAX_MALLOC_ARENAS", "one")
    with pytest.raises(ValueError, match="ASYNCSTRAX_MALLOC_ARENAS='one'"):
        limit_malloc_arenas()
    with pytest.raises(ValueError, match=">= 0"):
        limit_malloc_arenas(-1)
