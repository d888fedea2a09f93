"""A Context keeps its worker threads between requests (their memory stays warm) and stops
them on close(); a loader reads on the request's threads, so cancelling waits for its reads."""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading

import numpy as np
import pytest
from toy_plugins import TOY_PLUGINS, PulseBasics

import asyncstrax as ax
from asyncstrax.runtime.offload import thread_count

BOUNDS = {"chunk_bounds": tuple(range(5_000, 100_000, 5_000))}


class ThreadRecordingBasics(PulseBasics):
    """Notes which thread ran each step."""

    threads: set[int] = set()

    def compute(self, pulses):
        type(self).threads.add(threading.get_ident())
        return super().compute(pulses)


def test_requests_share_the_contexts_threads_until_close():
    ctx = ax.Context(register=[*TOY_PLUGINS, ThreadRecordingBasics], config=BOUNDS)
    ThreadRecordingBasics.threads = set()
    first = ctx.get_array("r", "pulse_basics")
    second = ctx.get_array("r", "pulse_basics")
    np.testing.assert_array_equal(first, second)
    # a pool per request would have run the steps on up to twice as many threads
    assert 1 <= len(ThreadRecordingBasics.threads) <= thread_count(1)
    threads = [t for executor in ctx._thread_executors.values() for t in executor._threads]
    assert {t.ident for t in threads} >= ThreadRecordingBasics.threads
    ctx.close()
    for thread in threads:
        thread.join(timeout=10)
    assert not [t.name for t in threads if t.is_alive()]
    # closed is not broken: the next request starts threads again
    np.testing.assert_array_equal(ctx.get_array("r", "pulse_basics"), first)
    ctx.close()


class SlowBasics(PulseBasics):
    def compute(self, pulses):
        import time

        time.sleep(0.05)
        return super().compute(pulses)


def test_closing_a_context_while_a_request_runs_is_a_clear_error():
    ctx = ax.Context(register=[*TOY_PLUGINS, SlowBasics], config=BOUNDS)
    outcome: dict = {}
    started = threading.Event()

    def request():
        started.set()
        try:
            outcome["data"] = ctx.get_array("r", "pulse_basics")
        except BaseException as error:  # noqa: BLE001 - what the request raised is the point
            outcome["error"] = error

    thread = threading.Thread(target=request)
    thread.start()
    started.wait()
    while not ctx._thread_executors:  # the request's threads are up: it is running
        thread.join(0.01)
    ctx.close()  # 19 chunks of 50 ms each are still to come
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), ax.ContextClosed), outcome
    assert "the Context was closed while this request ran" in str(outcome["error"])
    # the next request starts threads again
    assert len(ctx.get_array("r", "pulse_basics")) == 500
    ctx.close()


def test_stored_data_is_read_on_the_contexts_threads(tmp_path, monkeypatch):
    ctx = ax.Context(storage=ax.DataDirectory(tmp_path), register=TOY_PLUGINS, config=BOUNDS)
    made = ctx.get_array("r", "pulse_basics")
    assert ctx.is_stored("r", "pulse_basics")
    readers: set[str] = set()
    original = ax.storage.files.FileLoader.read_chunk

    def read_chunk(self, chunk_i, info):
        readers.add(threading.current_thread().name)
        return original(self, chunk_i, info)

    monkeypatch.setattr(ax.storage.files.FileLoader, "read_chunk", read_chunk)
    np.testing.assert_array_equal(ctx.get_array("r", "pulse_basics"), made)
    ctx.close()
    assert readers and all(name.startswith("asyncstrax") for name in readers), readers


def _get_in_child(ctx, queue):
    queue.put(ctx.get_array("r", "pulse_basics").tobytes())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork")
def test_a_forked_copy_of_a_used_context_makes_data():
    # multiprocessing's fork after a request: the kept threads exist only in the parent
    ctx = ax.Context(register=TOY_PLUGINS, config=BOUNDS)
    made = ctx.get_array("r", "pulse_basics")
    fork = mp.get_context("fork")
    queue = fork.Queue()
    child = fork.Process(target=_get_in_child, args=(ctx, queue))
    child.start()
    try:
        assert queue.get(timeout=60) == made.tobytes()
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
        ctx.close()
    assert child.exitcode == 0
