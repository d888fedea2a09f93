"""glibc malloc settings, each seen in a fresh interpreter (they are process-wide and applied
once): one arena (the count of arenas after threads have allocated, read with ``malloc_info``),
and chunk-sized blocks kept for reuse (page faults while saving chunk after chunk)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from asyncstrax.runtime.malloc import _glibc, tune_malloc

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
    monkeypatch.setattr("asyncstrax.runtime.malloc._tuned", False)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv("ASYNCSTRAX_MALLOC_ARENAS", "one")
    with pytest.raises(ValueError, match="ASYNCSTRAX_MALLOC_ARENAS='one'"):
        tune_malloc()
    with pytest.raises(ValueError, match=">= 0"):
        tune_malloc(-1)


SAVING = textwrap.dedent("""
    import resource
    import numpy as np
    import asyncstrax as ax
    from asyncstrax.storage import codecs

    ax.Context()
    waveforms = np.random.default_rng(1).normal(0, 3, 10_000_000).astype(np.int16)
    for _ in range(2):  # the first blocks of this size are fresh memory in any case
        codecs.compress("blosc", waveforms)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        blob = codecs.compress("blosc", waveforms)
        del blob
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, 3 * len(
        codecs.compress("blosc", waveforms)) // 4096)
""")


def faults_saving_chunks(**env: str) -> tuple[int, int]:
    """(page faults while compressing three 20 MB chunks, pages their files take)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")
               and k != "ASYNCSTRAX_MALLOC_ARENAS"}
    out = subprocess.run([sys.executable, "-c", SAVING], env={**environ, **env},
                         capture_output=True, text=True, check=True).stdout
    faults, pages = out.split()
    return int(faults), int(pages)


def test_chunk_after_chunk_reuses_memory_instead_of_faulting_in_fresh_pages():
    faults, pages = faults_saving_chunks()
    assert faults < pages / 10
    # glibc's own moving threshold faults every compressed file in afresh
    faults, pages = faults_saving_chunks(ASYNCSTRAX_MALLOC_ARENAS="0")
    assert faults > pages / 2


def test_glibc_threshold_variables_in_the_environment_win():
    # Dask starts its workers with MALLOC_TRIM_THRESHOLD_ set: memory goes back at once
    faults, pages = faults_saving_chunks(MALLOC_TRIM_THRESHOLD_="65536")
    assert faults > pages / 2
