"""parallel="process": steps computed in worker processes, arrays through shared memory.

Real processes, no mocks. Until the pipeline routes "process" plugins to the pool, a small
driver here does what ``Pipeline._run_compute`` does: it makes ``Work`` steps by hand and runs
them through a ``ProcessLane``, and compares with the thread path (``_process_batch`` in this
process). After every test, no segment of ours is left in /dev/shm and no worker process
remains.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from multiprocessing import resource_tracker

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_plugins import PulseBasics, Pulses, cut_points, make_pulses, reference_neighbours

import asyncstrax as ax
from asyncstrax.plugins.base import Work
from asyncstrax.runtime import shm
from asyncstrax.runtime.offload import PluginStats
from asyncstrax.runtime.pipeline import Pipeline, _process_batch
from asyncstrax.runtime.process_pool import ProcessLane, ProcessPool, WorkerDied

T_END = 100_000


# ---------------------------------------------------------------------- plugins (module level:
# workers import this module to unpickle them)
class ProcessBasics(PulseBasics):
    parallel = "process"


class PulseRatio(ax.Plugin):
    """Two data types of one kind in (merged on the worker), start/end/chunk_i used."""

    provides = "pulse_ratio"
    depends_on = ("pulses", "pulse_basics")
    parallel = "process"
    dtype = [
        (("Start time", "time"), np.int64),
        (("End time", "endtime"), np.int64),
        (("Area over area per sample", "ratio"), np.float64),
        (("Step", "chunk_i"), np.int32),
        (("Position in the step", "frac"), np.float64),
    ]

    def compute(self, pulses, start, end, chunk_i):
        out = np.zeros(len(pulses), self.dtype)
        out["time"] = pulses["time"]
        out["endtime"] = pulses["endtime"]
        out["ratio"] = pulses["area"] / pulses["area_per_sample"]
        out["chunk_i"] = chunk_i
        out["frac"] = (pulses["time"] - start) / max(1, end - start)
        return out


class FailingBasics(ProcessBasics):
    def compute(self, pulses, chunk_i):
        if chunk_i == 3:
            raise ValueError("bad calibration constant")
        return super().compute(pulses)


class CalibrationError(Exception):
    """A user exception whose __init__ differs from Exception's: pickles, cannot unpickle."""

    def __init__(self, constant, chunk_i):
        super().__init__(f"bad constant {constant} in chunk {chunk_i}")


class OddlyFailingBasics(ProcessBasics):
    def compute(self, pulses, chunk_i):
        if chunk_i == 3:
            raise CalibrationError(0.5, chunk_i)
        return super().compute(pulses)


class KillerBasics(ProcessBasics):
    """Kills its own worker process (SIGKILL) on chunk 2; never the test process."""

    def compute(self, pulses, chunk_i):
        if chunk_i == 2 and mp.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().compute(pulses)


class SlowBasics(ProcessBasics):
    seconds = ax.Config(default=0.3, type=float)

    def compute(self, pulses):
        time.sleep(self.seconds)
        return super().compute(pulses)


class WarmBasics(ProcessBasics):
    """Leaves a file per (worker, hook) so the test sees setup and warm_up ran everywhere."""

    marker_dir = ax.Config(default="", type=str, track=False)

    def setup(self):
        open(os.path.join(self.marker_dir, f"setup-{os.getpid()}"), "a").close()

    def warm_up(self):
        open(os.path.join(self.marker_dir, f"warm-{os.getpid()}"), "a").close()


# ---------------------------------------------------------------------- helpers
def configured(plugin_class, target, config=None):
    extra = [PulseBasics] if plugin_class is PulseRatio else []
    ctx = ax.Context(register=[Pulses, *extra, plugin_class], config=config or {})
    return ctx.get_plugins("r", target)[target]


def basics_work(bounds, n_pulses=150, seed=0, pieces=1):
    """Work steps of ``pulses`` for chunk ends ``bounds``; each step's input in ``pieces``."""
    pulses = make_pulses(n_pulses, seed, T_END)
    edges = [0, *cut_points(pulses, bounds, T_END), T_END]  # no pulse cut by a bound
    steps = []
    for start, end in zip(edges[:-1], edges[1:]):
        steps.append((start, end, pulses[(pulses["time"] >= start) & (pulses["time"] < end)]))
    work = []
    for i, (start, end, sel) in enumerate(steps):
        cuts = np.linspace(0, len(sel), pieces + 1).astype(int)
        arrays = [sel[c0:c1] for c0, c1 in zip(cuts[:-1], cuts[1:])]
        work.append(Work(i, start, end, {"pulses": [("pulses", arrays)]}))
    return work


def ratio_work(bounds, pieces=2):
    """Work for PulseRatio: pulses and pulse_basics, both of kind 'pulses', in pieces."""
    ref = configured(PulseBasics, "pulse_basics")
    out = []
    for w in basics_work(bounds, pieces=pieces):
        (_, arrays), = w.parts["pulses"]
        basics = [PulseBasics.compute(ref, a) for a in arrays]
        out.append(Work(w.chunk_i, w.start, w.end,
                        {"pulses": [("pulses", arrays), ("pulse_basics", basics)]}))
    return out


def batched(work, size):
    return [work[i:i + size] for i in range(0, len(work), size)]


async def drive(pool, plugin, batches, max_in_flight=None):
    """What Pipeline._run_compute does with a lane: a window of batches, results in order."""
    key = pool.register(plugin)
    lane = ProcessLane(pool, max_in_flight or pool.n_workers, PluginStats(plugin.name))
    pending = deque(batches)
    out = []
    try:
        while pending or not lane.empty:
            while pending and not lane.full:
                lane.submit_batch(key, pending.popleft())
            out.extend(await lane.next_result())
    finally:
        pool.unregister(key)
    drive.last_stats = lane.stats
    return out


def thread_path(plugin, batches):
    return [r for batch in batches for r in _process_batch(plugin, batch)]


def assert_same(result, expected):
    assert len(result) == len(expected)
    for got, want in zip(result, expected):
        assert list(got) == list(want)
        for dt in want:
            g, w = got[dt], want[dt]
            assert (g.start, g.end, g.data_type, g.data_kind, g.run_id) == (
                w.start, w.end, w.data_type, w.data_kind, w.run_id)
            assert g.data.dtype == w.data.dtype
            assert g.data.tobytes() == w.data.tobytes()  # bit-identical


def our_segments():
    return shm.list_segments(f"{shm.PREFIX}{os.getpid()}_")


MODULE_POOLS: dict[int, ProcessPool] = {}


def assert_only_idle_segments(pool):
    """After a run: nothing but idle (reusable) input segments of the pools; trim() drops them."""
    pools = {id(p): p for p in [pool, *MODULE_POOLS.values()]}.values()
    assert set(our_segments()) <= {n for p in pools for n in p.idle_segments()}
    for p in pools:
        p.trim()
    assert our_segments() == []


def child_pids():
    """Processes whose parent is this one (from /proc), except multiprocessing's tracker."""
    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and int(entry) != tracker:
            pids.append(int(entry))
    return pids


def assert_clean(allowed=()):
    """No segment of ours; no child process but those in ``allowed`` (pids)."""
    assert our_segments() == []
    assert [p for p in mp.active_children() if p.pid not in allowed] == []
    deadline = time.monotonic() + 5
    while set(child_pids()) - set(allowed) and time.monotonic() < deadline:
        time.sleep(0.05)  # a reaped child leaves /proc a little later
    assert set(child_pids()) - set(allowed) == set()


@pytest.fixture(scope="module")
def pools():
    """Pools by worker count, started once for the module (a start costs up to ~1 s)."""
    made = MODULE_POOLS

    def get(n):
        if n not in made:
            made[n] = ProcessPool(n)
        return made[n]

    yield get
    for pool in made.values():
        pool.shutdown()
    made.clear()
    assert_clean()


@pytest.fixture
def clean():
    """After the test: no segment, no child but those alive before (the module's pools)."""
    before = child_pids()
    yield
    assert_clean(allowed=before)


# ---------------------------------------------------------------------- ordering & identity
@pytest.mark.asyncio
async def test_results_in_chunk_order_and_identical_to_threads(pools):
    pool = pools(2)
    plugin = configured(ProcessBasics, "pulse_basics")
    work = basics_work(range(5_000, T_END, 5_000), pieces=3)
    batches = batched(work, 2)
    result = await drive(pool, plugin, batches)
    assert [r["pulse_basics"].start for r in result] == [w.start for w in work]
    assert_same(result, thread_path(configured(ProcessBasics, "pulse_basics"), batches))
    stats = drive.last_stats
    assert stats.calls == len(batches) and stats.extra["shm_bytes_in"] > 0
    assert_only_idle_segments(pool)


@pytest.mark.asyncio
async def test_two_inputs_of_one_kind_and_step_arguments(pools):
    pool = pools(2)
    work = ratio_work([7_000, 7_000, 33_000, 80_000], pieces=2)
    batches = batched(work, 1)
    result = await drive(pool, configured(PulseRatio, "pulse_ratio"), batches)
    assert_same(result, thread_path(configured(PulseRatio, "pulse_ratio"), batches))
    assert sum(len(r["pulse_ratio"]) for r in result) > 100


@pytest.mark.asyncio
async def test_outputs_outlive_the_segment_names(pools):
    pool = pools(1)
    batches = batched(basics_work([50_000]), 1)
    result = await drive(pool, configured(ProcessBasics, "pulse_basics"), batches)
    assert_only_idle_segments(pool)  # output names gone, data still mapped and writable
    data = result[0]["pulse_basics"].data
    before = data["area_per_sample"].copy()
    data["area_per_sample"] += 1
    np.testing.assert_array_equal(data["area_per_sample"], before + 1)


@settings(max_examples=8)
@given(
    bounds=st.lists(st.integers(1, T_END - 1), max_size=10),
    batch_size=st.integers(1, 4),
    pieces=st.integers(1, 3),
    n_workers=st.sampled_from([1, 2, 4]),
)
def test_bit_identical_for_any_chunking_and_worker_count(pools, bounds, batch_size, pieces,
                                                         n_workers):
    work = basics_work(bounds + bounds[:1], pieces=pieces)  # a repeated bound: an empty step
    batches = batched(work, batch_size)
    expected = thread_path(configured(ProcessBasics, "pulse_basics"), batches)
    plugin = configured(ProcessBasics, "pulse_basics")
    result = asyncio.run(drive(pools(n_workers), plugin, batches))
    assert_same(result, expected)
    assert_only_idle_segments(pools(n_workers))


@pytest.mark.asyncio
async def test_warm_up_sets_up_every_worker_once(pools, tmp_path):
    pool = pools(2)
    plugin = configured(WarmBasics, "pulse_basics", {"marker_dir": str(tmp_path)})
    key = pool.register(plugin)
    await pool.warm_up(key)
    pids = {int(p.name.split("-")[1]) for p in tmp_path.iterdir()}
    assert sorted(pids) == pool.worker_pids() and len(pids) == 2
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["setup"] * 2 + [
        "warm"] * 2
    lane = ProcessLane(pool, 2, PluginStats("w"))
    for batch in batched(basics_work([30_000, 60_000]), 1):
        lane.submit_batch(key, batch)
    while not lane.empty:
        await lane.next_result()
    assert len(list(tmp_path.iterdir())) == 4  # no second setup
    pool.unregister(key)
    assert_only_idle_segments(pool)


# ---------------------------------------------------------------------- faults
@pytest.mark.asyncio
async def test_exception_in_worker_names_plugin_and_chunk(pools):
    pool = pools(2)
    batches = batched(basics_work(range(10_000, T_END, 10_000)), 1)
    with pytest.raises(ax.PluginError) as info:
        await drive(pool, configured(FailingBasics, "pulse_basics"), batches)
    message = str(info.value)
    assert "FailingBasics" in message and "'pulse_basics'" in message and "chunk 3" in message
    assert "ValueError: bad calibration constant" in message
    assert info.value.plugin == "FailingBasics" and info.value.chunk_i == 3
    assert isinstance(info.value.__cause__, ValueError)
    assert "bad calibration constant" in str(info.value.__cause__.__cause__)  # remote traceback
    # same error as the thread path
    with pytest.raises(ax.PluginError) as thread_info:
        thread_path(configured(FailingBasics, "pulse_basics"), batches)
    assert str(thread_info.value) == message
    # in-flight jobs after the failing one end and clean up (how soon depends on the load)
    deadline = time.monotonic() + 30
    while our_segments() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert our_segments() == []  # a failure empties the ring too


def test_worker_killed_by_sigkill_raises_then_pool_recovers(clean):
    async def main():
        pool = ProcessPool(2)
        try:
            batches = batched(basics_work(range(10_000, T_END, 10_000)), 1)
            t0 = time.monotonic()
            with pytest.raises(WorkerDied) as info:
                await asyncio.wait_for(
                    drive(pool, configured(KillerBasics, "pulse_basics"), batches), 60)
            assert time.monotonic() - t0 < 30
            assert isinstance(info.value, ax.PluginError)
            assert "KillerBasics" in str(info.value) and "died" in str(info.value)
            # the next request gets fresh workers
            again = await drive(pool, configured(ProcessBasics, "pulse_basics"), batches[:3])
            assert len(again) == 3
        finally:
            await pool.aclose()

    asyncio.run(main())


def test_cancellation_mid_run_cleans_up(clean):
    async def main():
        pool = ProcessPool(2)
        plugin = configured(SlowBasics, "pulse_basics", {"seconds": 0.4})
        batches = batched(basics_work(range(10_000, T_END, 10_000)), 1)
        task = asyncio.create_task(drive(pool, plugin, batches))
        while not pool.started or not our_segments():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # still usable after a cancelled request
        fast = await drive(pool, configured(ProcessBasics, "pulse_basics"), batches[:2])
        assert len(fast) == 2
        await pool.aclose()

    asyncio.run(main())


class CountedSlowBasics(SlowBasics):
    """Appends a line to ``log`` for each step it computes."""

    log = ax.Config(default="", type=str, track=False)

    def compute(self, pulses):
        with open(self.log, "a") as f:
            f.write("step\n")
        return super().compute(pulses)


def test_a_cancelled_batch_stops_after_its_current_step(clean, tmp_path):
    """A batch of five 0.6 s steps, cancelled during its first: the worker skips the rest
    (the thread path's rule) instead of computing results no one will read."""
    async def main():
        pool = ProcessPool(1)
        log = tmp_path / "steps"
        try:
            slow = configured(CountedSlowBasics, "pulse_basics",
                              {"seconds": 0.6, "log": str(log)})
            work = basics_work(range(10_000, T_END, 10_000))
            task = asyncio.create_task(drive(pool, slow, [work[:5]]))
            while not log.exists():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # once the worker stops, the job's segment goes: its request is over, so it is
            # not kept for reuse (a request's end has trimmed the ring already)
            deadline = time.monotonic() + 30
            while our_segments() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert our_segments() == []
            # the one worker takes the next job once the cancelled batch has stopped
            fast = await drive(pool, configured(ProcessBasics, "pulse_basics"), [work[:1]])
            assert len(fast) == 1
            assert log.read_text().count("step") <= 2  # the current step (and, on a slow
            # machine, the next one that started before the word arrived); not all five

        finally:
            await pool.aclose()

    asyncio.run(main())


def test_close_with_kill_does_not_wait_for_running_steps(clean):
    async def main():
        pool = ProcessPool(1)
        plugin = configured(SlowBasics, "pulse_basics", {"seconds": 30.0})
        task = asyncio.create_task(drive(pool, plugin, batched(basics_work([]), 1)))
        while not our_segments():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        task.cancel()
        await pool.aclose(kill=True)
        assert time.monotonic() - t0 < 10
        with pytest.raises((asyncio.CancelledError, WorkerDied)):
            await task

    asyncio.run(main())


def test_unpicklable_plugin_is_a_configuration_error():
    plugin = configured(ProcessBasics, "pulse_basics")
    plugin.lock = __import__("threading").Lock()
    pool = ProcessPool(1)
    with pytest.raises(ax.InvalidConfiguration, match="pickle"):
        pool.register(plugin)
    pool.shutdown()
    assert not pool.started


# ---------------------------------------------------------------------- end to end (after
# integration)
@pytest.mark.skipif(
    "process_pool" not in inspect.signature(Pipeline).parameters,
    reason="the pipeline does not route parallel='process' plugins to a ProcessPool yet "
           "(integration adds Pipeline(process_pool=...))",
)
def test_context_end_to_end(clean):
    from toy_plugins import BigPulseNeighbours, BigPulses

    ctx = ax.Context(register=[Pulses, ProcessBasics, BigPulses, BigPulseNeighbours],
                     config={"chunk_bounds": (10_000, 25_000, 60_000, 65_000, 90_000)},
                     max_workers=2)
    try:
        np.testing.assert_array_equal(ctx.get_array("r", "big_pulse_neighbours"),
                                      reference_neighbours())
        # second request reuses the pool
        np.testing.assert_array_equal(ctx.get_array("r", "big_pulse_neighbours"),
                                      reference_neighbours())
        ctx2 = ax.Context(register=[Pulses, KillerBasics], max_workers=2,
                          config={"chunk_bounds": tuple(range(10_000, T_END, 10_000))})
        try:
            with pytest.raises(WorkerDied, match="KillerBasics"):
                ctx2.get_array("r", "pulse_basics")
        finally:
            ctx2.close()
    finally:
        ctx.close()


def test_an_exception_that_cannot_be_unpickled_is_reported_not_a_dead_pool(clean):
    ctx = ax.Context(register=[Pulses, OddlyFailingBasics], max_workers=2,
                     config={"chunk_bounds": tuple(range(10_000, T_END, 10_000))})
    try:
        with pytest.raises(ax.PluginError, match="CalibrationError: bad constant 0.5 in chunk 3"
                           ) as info:
            ctx.get_array("r", "pulse_basics")
        assert not isinstance(info.value, WorkerDied) and info.value.chunk_i == 3
        assert "CalibrationError" in str(info.value.__cause__)
        ctx.set_context_config({"max_workers": 1})
        assert len(ctx.get_array("r", "pulses")) == 500  # the context still works
    finally:
        ctx.close()


def test_worker_killed_between_requests_is_replaced(clean):
    # The pool is idle when a worker dies (the OOM killer, an operator): the next request
    # gets fresh workers rather than the broken pool's failure.
    ctx = ax.Context(register=[Pulses, ProcessBasics], max_workers=2,
                     config={"chunk_bounds": (10_000, 25_000, 60_000, 65_000, 90_000)})
    try:
        first = ctx.get_array("r", "pulse_basics")
        victim = ctx._process_pool.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _dead(victim):
            time.sleep(0.01)
        np.testing.assert_array_equal(ctx.get_array("r", "pulse_basics"), first)
        assert victim not in ctx._process_pool.worker_pids()
    finally:
        ctx.close()


def _dead(pid: int) -> bool:
    """Gone or a zombie (the pool may reap it at any moment, even while /proc is read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except OSError:  # FileNotFoundError, or ProcessLookupError when reaped mid-read
        return True
