"""The simulator's pilot run is cached on disk and gives the same simulation either way."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from asyncstrax.tpc import pilot_cache
from asyncstrax.tpc.sim import Simulator, _mb_per_event


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    _mb_per_event.cache_clear()
    yield tmp_path
    _mb_per_event.cache_clear()


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_second_process_reads_the_value(cache_dir):
    compute, calls = counting(0.125)
    assert pilot_cache.cached_pilot(("a", 1, (2, 3)), compute) == 0.125
    assert pilot_cache.cached_pilot(("a", 1, (2, 3)), compute) == 0.125
    assert pilot_cache.cached_pilot(("a", 2, (2, 3)), compute) == 0.125
    assert len(calls) == 2  # one per key
    saved = json.loads((cache_dir / pilot_cache._FILE_NAME).read_text())
    assert len(saved["values"]) == 2


def test_a_changed_simulator_or_a_broken_file_recomputes(cache_dir, monkeypatch):
    compute, calls = counting(1.5)
    pilot_cache.cached_pilot(("k",), compute)
    monkeypatch.setattr(pilot_cache, "_stamp", lambda: [0.0, 1])  # sim.py edited
    pilot_cache.cached_pilot(("k",), compute)
    assert len(calls) == 2
    (cache_dir / pilot_cache._FILE_NAME).write_text("{not json")
    assert pilot_cache.cached_pilot(("k",), compute) == 1.5
    assert len(calls) == 3


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_cache_folder_still_calibrates(cache_dir):
    cache_dir.chmod(0o500)
    try:
        compute, calls = counting(2.0)
        assert pilot_cache.cached_pilot(("k",), compute) == 2.0
        assert pilot_cache.cached_pilot(("k",), compute) == 2.0
        assert len(calls) == 2
    finally:
        cache_dir.chmod(0o700)


def test_a_cache_folder_that_cannot_be_made_still_calibrates(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "below_a_file"))
    compute, calls = counting(3.0)
    assert pilot_cache.cached_pilot(("k",), compute) == 3.0
    assert len(calls) == 1


def test_cached_and_fresh_calibration_simulate_the_same_bytes(cache_dir, monkeypatch):
    def first_chunk():
        sim = Simulator.for_data_rate(50, chunk_mb=1, seed=5, n_channels=60)
        return sim.next_chunk()[2]

    fresh = first_chunk()
    assert (cache_dir / pilot_cache._FILE_NAME).exists()
    _mb_per_event.cache_clear()  # as in a new process: the value comes from disk

    def no_pilot(*args):
        raise AssertionError("the pilot ran again")

    monkeypatch.setattr("asyncstrax.tpc.sim._pilot_mb_per_event", no_pilot)
    np.testing.assert_array_equal(first_chunk(), fresh)
