"""The first exception stops everything and names plugin, data type and chunk; cancelling the
awaiting task cleans up; the event loop stays free while plugins compute."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time

import numpy as np
import pytest
from toy_plugins import TOY_PLUGINS, PulseBasics, Pulses

import asyncstrax as ax


def engine_threads_at_work() -> list[str]:
    """Names of the engine's threads doing anything but waiting for a job.

    A Context keeps its threads between requests; what must not outlive a request is work.
    An idle pool thread waits in concurrent.futures' ``_worker`` loop."""
    frames = sys._current_frames()
    return [t.name for t in threading.enumerate()
            if t.name.startswith("asyncstrax") and t.ident in frames
            and frames[t.ident].f_code.co_name != "_worker"]


def no_engine_threads() -> bool:
    """No engine thread at work (within 0.1 s: a thread that has just handed back its last
    result may still be returning from the job; a step left running takes far longer)."""
    deadline = time.monotonic() + 0.1
    while engine_threads_at_work() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not engine_threads_at_work()


class FailingBasics(PulseBasics):
    """Raises on its third step."""

    def compute(self, pulses, chunk_i):
        if chunk_i == 2:
            raise ValueError("bad calibration constant")
        return super().compute(pulses)


class SlowBasics(PulseBasics):
    """Computes for a long time (holds a worker thread, like a heavy numba kernel)."""

    seconds = ax.Config(default=2.0, type=float)

    def compute(self, pulses):
        time.sleep(self.seconds)
        return super().compute(pulses)


BOUNDS = {"chunk_bounds": (10_000, 25_000, 60_000, 65_000, 90_000)}


def test_exception_in_middle_plugin_names_plugin_and_chunk():
    ctx = ax.Context(register=[*TOY_PLUGINS, FailingBasics], config=BOUNDS)
    with pytest.raises(ax.PluginError) as info:
        ctx.get_array("r", "big_pulse_neighbours")
    message = str(info.value)
    assert "FailingBasics" in message and "'pulse_basics'" in message and "chunk 2" in message
    assert "ValueError: bad calibration constant" in message
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.plugin == "FailingBasics" and info.value.chunk_i == 2
    assert no_engine_threads()


@pytest.mark.asyncio
async def test_exception_leaves_no_task_running():
    ctx = ax.Context(register=[*TOY_PLUGINS, FailingBasics], config=BOUNDS)
    before = asyncio.all_tasks()
    with pytest.raises(ax.PluginError, match="chunk 2"):
        await ctx.aget_array("r", "big_pulse_neighbours")
    assert asyncio.all_tasks() == before
    assert no_engine_threads()


@pytest.mark.asyncio
async def test_cancelling_the_awaiting_task_cleans_up():
    ctx = ax.Context(register=[*TOY_PLUGINS, SlowBasics], config={**BOUNDS, "seconds": 0.3})
    before = asyncio.all_tasks()
    task = asyncio.create_task(ctx.aget_array("r", "big_pulse_neighbours"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == before
    assert no_engine_threads()


@pytest.mark.asyncio
async def test_event_loop_stays_free_while_a_plugin_computes():
    ctx = ax.Context(register=[*TOY_PLUGINS, SlowBasics], config={"seconds": 2.0})
    worst = 0.0
    done = False

    async def heartbeat():
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    t0 = time.perf_counter()
    result = await ctx.aget_array("r", "pulse_basics")
    done = True
    await beat
    assert time.perf_counter() - t0 >= 2.0 and len(result) == 500
    # computing on the loop would block it for the whole 2 s; a loaded machine may pause the
    # process for a while, so only a block of a good part of the compute counts
    assert worst < 0.5, f"the loop was blocked for {worst * 1e3:.0f} ms"


class WrongDtype(PulseBasics):
    def compute(self, pulses):
        return np.zeros(len(pulses), [("time", np.int64), ("endtime", np.int64)])


class Unsorted(PulseBasics):
    def compute(self, pulses):
        return super().compute(pulses)[::-1]


class OutOfRange(PulseBasics):
    def compute(self, pulses, start, end):
        out = super().compute(pulses)
        out["endtime"] += 10**9
        return out


@pytest.mark.parametrize(
    "plugin, pattern",
    [
        (WrongDtype, "compute returned an array of dtype .* but 'pulse_basics' is declared as"),
        (Unsorted, "output breaks a chunk rule: data is not sorted by time"),
        (OutOfRange, "output breaks a chunk rule: item 0 ends at .* after the chunk end"),
    ],
)
def test_wrong_output_is_a_clear_error(plugin, pattern):
    ctx = ax.Context(register=[*TOY_PLUGINS, plugin])
    with pytest.raises(ax.PluginGaveWrongOutput, match=pattern) as info:
        ctx.get_array("r", "pulse_basics")
    assert f"plugin {plugin.__name__}" in str(info.value) and "chunk 0" in str(info.value)


class StraxSourceNotReadyYet(ax.Plugin):
    """A strax-style source that becomes ready over time (a live DAQ writing files)."""

    provides = "ticks"
    depends_on = ()
    dtype = [("time", np.int64), ("endtime", np.int64)]
    source_poll_interval = 0.01

    def setup(self):
        self.t0 = time.monotonic()

    def is_ready(self, chunk_i):
        return chunk_i < 3 and time.monotonic() - self.t0 > 0.02 * chunk_i

    def source_finished(self):
        return time.monotonic() - self.t0 > 0.1

    def compute(self, chunk_i):
        d = np.zeros(1, self.dtype)
        d["time"], d["endtime"] = chunk_i * 10, chunk_i * 10 + 1
        return self.chunk(start=chunk_i * 10, end=chunk_i * 10 + 10, data=d)


def test_strax_source_protocol_polls_until_finished():
    ctx = ax.Context(register=[StraxSourceNotReadyYet])
    assert ctx.get_array("r", "ticks")["time"].tolist() == [0, 10, 20]


class AsyncSource(ax.Plugin):
    """The native form: an async generator, as a DAQ reader would write it."""

    provides = "ticks"
    depends_on = ()
    dtype = [("time", np.int64), ("endtime", np.int64)]

    async def iterate(self):
        for i in range(4):
            await asyncio.sleep(0)
            d = np.zeros(2, self.dtype)
            d["time"] = [i * 10, i * 10 + 5]
            d["endtime"] = d["time"] + 1
            yield self.chunk(start=i * 10, end=i * 10 + 10, data=d)


class FailingAsyncSource(AsyncSource):
    async def iterate(self):
        async for chunk in super().iterate():
            yield chunk
            raise ConnectionError("digitizer went away")


def test_native_async_source():
    ctx = ax.Context(register=[AsyncSource])
    assert len(ctx.get_array("r", "ticks")) == 8


def test_native_async_source_error_names_plugin_and_chunk():
    ctx = ax.Context(register=[FailingAsyncSource])
    with pytest.raises(ax.PluginError, match="FailingAsyncSource.*chunk 1|chunk 1.*") as info:
        ctx.get_array("r", "ticks")
    assert "ConnectionError: digitizer went away" in str(info.value)


class GappySource(AsyncSource):
    async def iterate(self):
        for start in (0, 10, 25):  # the third chunk leaves a gap [20, 25)
            d = np.zeros(1, self.dtype)
            d["time"], d["endtime"] = start, start + 1
            yield self.chunk(start=start, end=start + 10, data=d)


def test_gap_between_source_chunks_names_the_source():
    ctx = ax.Context(register=[GappySource])
    with pytest.raises(ax.ChunkContinuityError, match="previous chunk ended at 20") as info:
        ctx.get_array("r", "ticks")
    assert info.value.plugin == "GappySource" and info.value.chunk_i == 2


@pytest.mark.parametrize("stored", [False, True])
def test_script_leaving_get_iter_unfinished_exits(tmp_path, stored):
    # An iterator left open at module level is closed at exit while threads can still start;
    # left to the interpreter's final clean-up, loading stored data made the exit hang.
    import os
    import subprocess
    import sys

    script = tmp_path / "leave_open.py"
    script.write_text(
        "import asyncstrax as ax\n"
        "from toy_plugins import TOY_PLUGINS, PulseBasics, Pulses\n"
        "class ManyChunks(PulseBasics):\n"
        "    rechunk_on_save = False  # stored as many chunks: the loader reads ahead\n"
        f"ctx = ax.Context(storage={str(tmp_path / 'data')!r}, register=[*TOY_PLUGINS, ManyChunks],\n"
        "                 config={'chunk_bounds': tuple(range(1000, 100000, 1000))})\n"
        + ("ctx.make('r', 'pulse_basics')\n" if stored else "")
        + "it = ctx.get_iter('r', 'pulse_basics')\n"
        "for i, chunk in enumerate(it):\n"
        "    if i == 2:\n"
        "        break\n"
        "print('left open', flush=True)\n")
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": tests_dir})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "left open" and "Traceback" not in done.stderr


def test_break_out_of_aiter_at_the_end_of_asyncio_run_leaves_no_engine_thread():
    # The iterator is finalized after main() returns, and asyncio.run closes the loop before
    # that clean-up task ends: the pipeline then lets its threads go without awaiting.
    ctx = ax.Context(register=TOY_PLUGINS, config={"chunk_bounds": tuple(range(1000, 99000, 1000))})

    async def main():
        async for _ in ctx.aiter("r", "pulse_basics"):
            break

    asyncio.run(main())
    assert no_engine_threads()
    threads = [t for executor in ctx._thread_executors.values() for t in executor._threads]
    assert threads  # kept for the context's next request ...
    ctx.close()  # ... until it is closed
    for thread in threads:
        thread.join(timeout=10)
    assert not [t.name for t in threads if t.is_alive()]


class CountedBasics(PulseBasics):
    """Counts its steps; each holds its thread for a while."""

    steps = 0

    def compute(self, pulses):
        type(self).steps += 1
        time.sleep(0.02)
        return super().compute(pulses)


class CountedParallelBasics(CountedBasics):
    parallel = True


@pytest.mark.parametrize("plugin, workers", [(CountedBasics, 1), (CountedParallelBasics, 2)])
def test_cancelling_waits_for_the_current_step_not_the_whole_batch(plugin, workers):
    # The source makes many small chunks at once, so the steps reach the thread in batches.
    ctx = ax.Context(register=[*TOY_PLUGINS, plugin], max_workers=workers,
                     config={"chunk_bounds": tuple(range(500, 99_500, 500))})

    async def main():
        plugin.steps = 0
        task = asyncio.create_task(ctx.aget_array("r", "pulse_basics"))
        while plugin.steps < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return plugin.steps

    steps = asyncio.run(main())
    assert steps <= 3 + 2 * workers  # the steps under way, not the rest of a batch (up to 64)
    assert no_engine_threads()


def test_a_failing_plugin_among_several_targets_is_the_error_reported():
    # The failed plugin's channel closes early; the targets' synchronization must not report
    # that as inputs ending at different times in place of the real failure.
    class FailingCut(PulseBasics):
        provides = "failing_cut"

        def compute(self, pulses, chunk_i):
            if chunk_i == 1:
                raise ValueError("bad calibration constant")
            return super().compute(pulses)

    ctx = ax.Context(register=[*TOY_PLUGINS, FailingCut], config=BOUNDS)
    for targets in (["pulse_basics", "failing_cut"], ["failing_cut", "pulse_basics"]):
        with pytest.raises(ax.PluginError, match="bad calibration constant") as info:
            ctx.get_array("r", targets)
        assert info.value.plugin == "FailingCut"


class FailsEveryChunk(PulseBasics):
    """Chunk 0 fails first; chunk 1, in flight beside it, fails after the request ended."""

    provides = "fails_every_chunk"
    parallel = True

    def compute(self, pulses, chunk_i):
        time.sleep(0.05 if chunk_i == 0 else 0.3)
        raise ValueError(f"bad constant in chunk {chunk_i}")


class TrickledPulses(Pulses):
    """The toy source, its chunks arriving one by one (as from a digitizer): one job each."""

    async def iterate(self):
        for chunk_i in range(len(self.ranges)):
            yield self.compute(chunk_i)
            await asyncio.sleep(0.02)


def test_jobs_failing_after_the_first_error_are_not_logged_as_unretrieved(caplog):
    ctx = ax.Context(register=[*TOY_PLUGINS, TrickledPulses, FailsEveryChunk], max_workers=2,
                     config={"chunk_bounds": (30_000, 60_000)})

    async def main():
        with pytest.raises(ax.PluginError, match="bad constant in chunk 0"):
            await ctx.aget_array("r", "fails_every_chunk")
        await asyncio.sleep(0.5)  # chunk 1 fails now, on a loop still running
        gc.collect()
        await asyncio.sleep(0)

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(main())
        gc.collect()
    assert "never retrieved" not in caplog.text
