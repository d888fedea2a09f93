"""Workers forked from a running engine hold nothing that belongs to the parent alone.

Real forked processes, a real loopback connection, a real signal and a real shared-memory
segment: what a worker forked from inside a running event loop must not keep (its peer's
connection, the loop's signal handlers, the parent's chunk memory). Linux only (fork, /proc).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from toy_plugins import Pulses

import asyncstrax as ax
from asyncstrax.errors import InvalidConfiguration
from asyncstrax.runtime import shm
from asyncstrax.runtime.process_pool import ProcessPool, ProcessPoolClosed

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="fork and /proc are Linux's")


class ForkedBasics(ax.Plugin):
    """Area per sample of each pulse, in a worker process."""

    provides = "pulse_basics"
    depends_on = "pulses"
    parallel = "process"
    dtype = [(("Start time", "time"), np.int64), (("End time", "endtime"), np.int64),
             (("Worker pid", "pid"), np.int64), (("Area per sample", "aps"), np.float64)]

    def compute(self, pulses):
        out = np.zeros(len(pulses), self.dtype)
        out["time"] = pulses["time"]
        out["endtime"] = pulses["time"] + pulses["dt"] * pulses["length"]
        out["pid"] = os.getpid()
        out["aps"] = pulses["area"] / np.maximum(pulses["length"], 1)
        return out


class CountedSetup(ForkedBasics):
    """Appends the pid of each process that runs its setup() to a file."""

    setup_log = ax.Config(default="", type=str, help="file to append setup pids to", track=False)

    def setup(self):
        with open(self.setup_log, "a") as f:
            f.write(f"{os.getpid()}\n")


def test_default_start_method_is_fork_on_linux():
    expected = mp.get_start_method(allow_none=True) or "fork"
    assert ProcessPool(1).start_method == expected


def test_unknown_start_method_is_a_configuration_error():
    with pytest.raises(InvalidConfiguration, match="'teleport'.*not available"):
        ProcessPool(1, start_method="teleport")
    with pytest.raises(InvalidConfiguration, match="'teleport'.*not available"):
        ax.Context(process_start_method="teleport")  # when the context is made


@pytest.mark.asyncio
async def test_a_connection_the_parent_closes_ends_for_its_peer():
    server = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    server.close()
    pool = ProcessPool(2, start_method="fork")
    try:
        await pool.warm_up()  # both workers forked and initialised, holding a copy of `ours`
        assert len(pool.worker_pids()) == 2
        ours.close()
        peer.settimeout(10)
        assert peer.recv(1) == b""  # EOF: no worker keeps the connection open
    finally:
        peer.close()
        await pool.aclose()


@pytest.mark.asyncio
async def test_a_signal_to_a_worker_does_not_reach_the_parents_loop():
    loop = asyncio.get_running_loop()
    received: list[str] = []
    loop.add_signal_handler(signal.SIGTERM, received.append, "SIGTERM")
    pool = ProcessPool(2, start_method="fork")
    try:
        await pool.warm_up()
        pids = pool.worker_pids()
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not any(_alive(pid) for pid in pids)  # the default action: they stopped
        await asyncio.sleep(0.2)  # a wake-up byte, had one been written, is read by now
        assert received == []
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await pool.aclose()


@pytest.mark.asyncio
async def test_workers_do_not_map_the_parents_segments():
    name = shm.new_name("parent")
    mapping = shm.create_segment(name, 1 << 20)
    mapping[:4] = b"asx!"
    pool = ProcessPool(2, start_method="fork")
    try:
        await pool.warm_up()
        for pid in pool.worker_pids():
            with open(f"/proc/{pid}/maps") as maps:
                assert name not in maps.read()
        assert mapping[:4] == b"asx!"  # the parent's own mapping is untouched
    finally:
        await pool.aclose()
        shm.unlink_segment(name)
        mapping.close()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_same_output_whatever_the_start_method(method):
    bounds = {"chunk_bounds": (10_000, 25_000, 60_000, 65_000, 90_000)}
    with ax.Context(register=[Pulses, ForkedBasics], config=bounds, max_workers=2,
                    process_start_method=method) as ctx:
        got = ctx.get_array("r", "pulse_basics")
    with ax.Context(register=[Pulses, ForkedBasics], config=bounds) as ctx:
        alone = ctx.get_array("r", "pulse_basics")  # one worker: in this process
    assert os.getpid() not in got["pid"] and os.getpid() in alone["pid"]
    for field in ("time", "endtime", "aps"):
        np.testing.assert_array_equal(got[field], alone[field])



def test_forked_workers_inherit_plugins_set_up_once_in_the_parent(tmp_path):
    log = tmp_path / "setup.log"
    config = {"chunk_bounds": tuple(range(10_000, 100_000, 10_000)), "setup_log": str(log)}
    with ax.Context(register=[Pulses, CountedSetup], config=config, max_workers=2,
                    process_start_method="fork") as ctx:
        got = ctx.get_array("r", "pulse_basics")
        assert os.getpid() not in got["pid"]  # computed in the workers
    assert log.read_text().split() == [str(os.getpid())]


class BrokenSetup(ForkedBasics):
    def setup(self):
        raise ValueError("no calibration for this run")


def test_a_setup_error_before_forking_names_the_plugin_and_starts_no_worker():
    before = set(mp.active_children())
    with ax.Context(register=[Pulses, BrokenSetup], max_workers=2,
                    process_start_method="fork") as ctx:
        with pytest.raises(ax.PluginError, match="no calibration.*plugin BrokenSetup"):
            ctx.get_array("r", "pulse_basics")
        assert not ctx._process_pool or not ctx._process_pool.started
    assert set(mp.active_children()) <= before


class SlowSetup(ForkedBasics):
    def setup(self):
        time.sleep(0.5)


@pytest.mark.asyncio
async def test_closing_while_the_pool_starts_leaves_no_worker():
    """aclose() during astart() (the parent still setting plugins up on a helper thread):
    the workers forked at the end of the start are stopped too, none is left behind."""
    with ax.Context(register=[Pulses, SlowSetup]) as ctx:
        plugin = ctx.get_plugins("r", "pulse_basics")["pulse_basics"]
    pool = ProcessPool(2, start_method="fork")
    starting = asyncio.ensure_future(pool.astart([plugin]))
    await asyncio.sleep(0.1)
    await pool.aclose()
    try:
        await starting
    except ProcessPoolClosed:  # closed before the helper thread began: no start at all
        pass
    assert not pool.started
    assert _children() == []


FRESH_PROCESS = """
import os, sys
sys.path[:0] = [os.path.dirname(os.path.abspath(%r))]
import asyncstrax as ax
from toy_plugins import Pulses
from test_forked_workers import ForkedBasics, _trackers
with ax.Context(register=[Pulses, ForkedBasics], max_workers=2, process_start_method="fork",
                config={"chunk_bounds": (10_000, 50_000)}) as ctx:
    ctx.get_array("r", "pulse_basics")
    print(len(_trackers()))
"""


def test_workers_share_the_parents_resource_tracker(tmp_path):
    """In a fresh process (no tracker yet when the pool forks): the workers' output segments
    are registered with the parent's tracker, not with one tracker per worker."""
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS % __file__)
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [tests, os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"], (out.stdout, out.stderr)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children_of(pid: int) -> list[int]:
    """Every thread of ``pid`` lists the children it made (the pool forks from a helper)."""
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:  # gone meanwhile
        pass
    return found


def _is_tracker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" in f.read()
    except OSError:
        return False


def _children() -> list[int]:
    """Live child processes of this process but multiprocessing's resource tracker."""
    return [p for p in _children_of(os.getpid()) if not _is_tracker(p) and _alive(p)]


def _trackers() -> list[int]:
    """multiprocessing resource trackers among this process's descendants."""
    found, todo = [], _children_of(os.getpid())
    while todo:
        pid = todo.pop()
        if _is_tracker(pid):
            found.append(pid)
        todo += _children_of(pid)
    return found


def _child_request(ctx, max_workers, queue):
    got = ctx.get_array("r", "pulse_basics", max_workers=max_workers)
    queue.put((_without_pid(got), set(got["pid"].tolist())))


def _without_pid(data):
    return b"".join(data[field].tobytes() for field in ("time", "endtime", "aps"))


@pytest.mark.parametrize("first", [1, 2])
def test_a_forked_copy_of_a_context_starts_its_own_workers(first):
    # multiprocessing's fork after the parent ran requests: the kept threads stayed in the
    # parent and the pool's workers are the parent's; the child must neither wait for them
    # forever nor stop them (the parent's next request still uses its own)
    config = {"chunk_bounds": tuple(range(10_000, 100_000, 10_000))}
    ctx = ax.Context(register=[Pulses, ForkedBasics], config=config, max_workers=2)
    try:
        made = ctx.get_array("r", "pulse_basics")
        parents_workers = set(ctx._process_pool.worker_pids())
        fork = mp.get_context("fork")
        queue = fork.Queue()
        # first a 1-worker request in the child (threads only), then a 2-worker one
        for workers in dict.fromkeys([first, 2]):
            child = fork.Process(target=_child_request, args=(ctx, workers, queue))
            child.start()
            data, pids = queue.get(timeout=60)
            child.join(30)
            assert child.exitcode == 0
            assert data == _without_pid(made)
            assert not pids & parents_workers  # never computed by the parent's workers
        assert set(ctx._process_pool.worker_pids()) == parents_workers  # still alive, still ours
        assert _without_pid(ctx.get_array("r", "pulse_basics")) == _without_pid(made)
    finally:
        ctx.close()


SLOW_MODULE = "import time\ntime.sleep(1.5)\nVALUE = 42\n"


def _import_in_thread(tmp_path, name: str):
    """A thread importing module ``name`` (1.5 s to import); returns once the import is on."""
    import threading

    from asyncstrax.runtime.forked import _importing

    (tmp_path / f"{name}.py").write_text(SLOW_MODULE)
    sys.path.insert(0, str(tmp_path))
    thread = threading.Thread(target=__import__, args=(name,))
    thread.start()
    deadline = time.monotonic() + 10
    while name not in _importing() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert name in _importing()
    return thread


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_worker_forked_during_a_parents_import_can_import_the_module(tmp_path):
    """A fork that catches another thread mid-import copies that module's lock held by a
    thread the child does not have: the child's own import of it used to wait forever (a
    worker restarted while a saving thread imported blosc hung the request)."""
    from asyncstrax.runtime.forked import forget_parent

    thread = _import_in_thread(tmp_path, "asx_slow_module_a")
    try:
        pid = os.fork()
        if pid == 0:  # the child: as a worker starts
            try:
                forget_parent()
                import asx_slow_module_a

                os._exit(0 if asx_slow_module_a.VALUE == 42 else 1)
            finally:
                os._exit(2)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung importing a module its parent was importing")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        thread.join()
        sys.path.remove(str(tmp_path))


def test_a_fork_waits_for_other_threads_imports(tmp_path):
    from asyncstrax.runtime.forked import _importing, no_compilation

    thread = _import_in_thread(tmp_path, "asx_slow_module_b")
    try:
        with no_compilation():
            assert "asx_slow_module_b" not in _importing()
            assert sys.modules["asx_slow_module_b"].VALUE == 42
    finally:
        thread.join()
        sys.path.remove(str(tmp_path))


def test_a_fork_from_inside_a_modules_own_import_does_not_wait_for_it(tmp_path):
    """A script that processes data when imported forks from inside its own import: that
    import is not another thread's to wait for (nor, in the worker, to start over)."""
    (tmp_path / "asx_self_importing.py").write_text(
        "from asyncstrax.runtime.forked import _importing, no_compilation\n"
        "with no_compilation():\n"
        "    OWN_LISTED = __name__ in _importing()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import asx_self_importing

        assert asx_self_importing.OWN_LISTED is False
    finally:
        sys.path.remove(str(tmp_path))
