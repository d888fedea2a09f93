"""Real processes: a writer killed mid-write leaves nothing complete; racing writers agree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from storage_testing import ENDTIME_DTYPE, StubPlugin, concat, load_chunks, make_chunks

from asyncstrax.storage import FileStore, list_stored, tempdirs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))

WRITER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    import numpy as np
    from storage_testing import ENDTIME_DTYPE, StubPlugin, make_chunks, save_chunks
    from asyncstrax.storage import FileStore

    path, delay, go_file = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    chunks = make_chunks(ENDTIME_DTYPE, list(range(0, 20_001, 1000)), [2000] * 20,
                         np.random.default_rng(7))
    while go_file != "-" and not os.path.exists(go_file):
        time.sleep(0.001)
    store = FileStore(path)
    plugin = StubPlugin("things", ENDTIME_DTYPE)
    saver = asyncio.run(save_chunks(store, plugin.key(), plugin, chunks, delay=delay))
    print("outcome", saver.outcome, flush=True)
    """
)


def expected():
    return make_chunks(ENDTIME_DTYPE, list(range(0, 20_001, 1000)), [2000] * 20,
                       np.random.default_rng(7))


def start_writer(tmp_path, store_path, delay=0.0, go_file="-"):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, HERE])}
    return subprocess.Popen(
        [sys.executable, str(script), str(store_path), str(delay), str(go_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.asyncio
async def test_killed_writer_leaves_nothing_complete_and_rerun_completes(tmp_path):
    store_path = tmp_path / "store"
    plugin = StubPlugin("things", ENDTIME_DTYPE)
    key = plugin.key()
    proc = start_writer(tmp_path, store_path, delay=0.1)
    temp = store_path / (os.path.basename(FileStore(store_path).folder(key)) + "_temp")
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the writer never wrote a chunk file"
            if temp.exists() and sum(n[-6:].isdigit() for n in os.listdir(temp)) >= 3:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store = FileStore(store_path)
    assert not store.find(key)
    (row,) = list_stored(store_path)
    assert row["temporary"] and not row["complete"]
    assert row["problem"] == "writing did not end"

    # Rerun (another process, as after a crash): the stale folder goes, the data is complete.
    rerun = start_writer(tmp_path, store_path)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "outcome saved" in out
    assert store.find(key)
    assert os.listdir(store_path) == [os.path.basename(store.folder(key))]
    loaded = await load_chunks(store, key, plugin)
    np.testing.assert_array_equal(concat(loaded, ENDTIME_DTYPE),
                                  concat(expected(), ENDTIME_DTYPE))


@pytest.mark.asyncio
async def test_racing_writer_processes(tmp_path):
    store_path = tmp_path / "store"
    go = tmp_path / "go"
    procs = [start_writer(tmp_path, store_path, go_file=go) for _ in range(3)]
    time.sleep(1.0)  # let them import and wait at the start line
    go.write_text("go")
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes.append(out.split("outcome")[-1].strip())
    assert outcomes.count("saved") >= 1
    assert set(outcomes) <= {"saved", "lost", "skipped"}
    store = FileStore(store_path)
    plugin = StubPlugin("things", ENDTIME_DTYPE)
    assert os.listdir(store_path) == [os.path.basename(store.folder(plugin.key()))]
    loaded = await load_chunks(store, plugin.key(), plugin)
    np.testing.assert_array_equal(concat(loaded, ENDTIME_DTYPE),
                                  concat(expected(), ENDTIME_DTYPE))


KILLED_WITH_WORKERS = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import asyncstrax as ax

    DT = [("time", "<i8"), ("endtime", "<i8")]

    class Source(ax.Plugin):
        provides = "source"
        depends_on = ()
        dtype = DT
        save_when = ax.SaveWhen.NEVER
        def is_ready(self, chunk_i): return chunk_i < 20
        def source_finished(self): return True
        def compute(self, chunk_i):
            d = np.zeros(100, DT)
            d["time"] = chunk_i * 10_000 + np.arange(100) * 10
            d["endtime"] = d["time"] + 5
            return self.chunk(start=chunk_i * 10_000, end=(chunk_i + 1) * 10_000, data=d)

    class InWorker(ax.Plugin):
        provides = "in_worker"
        depends_on = "source"
        dtype = DT
        parallel = "process"
        rechunk_on_save = False
        def compute(self, source, chunk_i):
            if chunk_i == 3:  # say who we are, then hold the step while the parent is killed
                with open(sys.argv[2] + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.rename(sys.argv[2] + ".tmp", sys.argv[2])
                time.sleep(60)
            return source

    ctx = ax.Context(storage=ax.FileStore(sys.argv[1]), register=[Source, InWorker],
                     max_workers=2)
    ctx.make("r1", "in_worker")
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and /proc are Linux's")
def test_writer_killed_with_process_workers_leaves_a_stale_folder_and_no_worker(tmp_path):
    script, store_path, flag = tmp_path / "job.py", tmp_path / "store", tmp_path / "worker_pid"
    script.write_text(KILLED_WITH_WORKERS)
    proc = subprocess.Popen([sys.executable, str(script), str(store_path), str(flag)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    try:
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no worker reached chunk 3"
            time.sleep(0.02)
        worker = int(flag.read_text())
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    # the orphaned worker exits by itself, mid-step (it would sleep a minute more)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{worker}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{worker}"), "the worker outlived its parent"
    # no process holds the writer's lock: the folder is a dead writer's, not a growing run
    (temp,) = [p for p in os.listdir(store_path) if "_temp" in p]
    assert not tempdirs.is_live(str(store_path / temp))
    (row,) = list_stored(store_path)
    assert row["temporary"] and not row["complete"]
