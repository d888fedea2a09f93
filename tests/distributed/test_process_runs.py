"""Many runs on a real Dask LocalCluster (2 worker processes, 1 thread each), started once.

Runs are made and saved by the workers and must equal the same runs made one by one here; a
failing run is reported while the others complete; stored runs are skipped; interrupting or
cancelling cancels what is pending; the lazy dataframe equals the eager one; the command line
works against the same cluster. Plugins come from ``dask_toy_plugins`` (importable: workers
are given this directory on their PYTHONPATH).
"""

from __future__ import annotations

import _thread
import asyncio
import os
import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")

import dask_toy_plugins as toy  # noqa: E402

import asyncstrax as ax  # noqa: E402
from asyncstrax import cli  # noqa: E402
from asyncstrax.distributed import (  # noqa: E402
    ContextSpec,
    aprocess_runs,
    get_df_many,
    lazy_dataframe,
    local_client,
    process_runs,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
N_CHUNKS, N_PER_CHUNK = 3, 400


@pytest.fixture(scope="module")
def client():
    paths = [ROOT, HERE, os.environ.get("PYTHONPATH", "")]
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    try:
        with local_client(2, dashboard_address=":0") as c:
            assert len(c.scheduler_info()["workers"]) == 2
            yield c
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def make_context(path, **config) -> ax.Context:
    return ax.Context(storage=ax.FileStore(path), register=toy.PLUGINS,
                      config=dict(n_chunks=N_CHUNKS, n_per_chunk=N_PER_CHUNK, **config))


def test_runs_are_made_saved_and_equal_one_by_one(client, tmp_path):
    ctx = make_context(tmp_path / "data")
    runs = ["r0", "r1", "r2", "r3", "r4"]
    reports = process_runs(ctx, runs, ["samples", "sample_sums"], client, progress_bar=True)
    assert [r.run_id for r in reports] == runs
    assert [r.status for r in reports] == ["ok"] * len(runs), reports.table()
    assert all(r.items == {"samples": N_CHUNKS * N_PER_CHUNK,
                           "sample_sums": N_CHUNKS * N_PER_CHUNK} for r in reports)
    assert {r.worker for r in reports} <= set(client.scheduler_info()["workers"])
    assert reports.done == runs and not reports.failed
    reference = ax.Context(register=toy.PLUGINS,
                           config=dict(n_chunks=N_CHUNKS, n_per_chunk=N_PER_CHUNK))
    for run_id in runs:
        assert ctx.is_stored(run_id, "sample_sums")
        stored = ctx.get_array(run_id, "sample_sums")
        np.testing.assert_array_equal(stored, reference.get_array(run_id, "sample_sums"))
    # runs differ from each other (the data depends on the run id)
    assert not np.array_equal(ctx.get_array("r0", "samples")["area"],
                              ctx.get_array("r1", "samples")["area"])


def test_a_failing_run_is_reported_while_the_others_complete(client, tmp_path):
    ctx = make_context(tmp_path / "data", fail_runs=["bad"])
    reports = process_runs(ctx, ["a", "bad", "c"], "fragile", client, progress_bar=False)
    by_run = reports.by_run()
    assert by_run["bad"].status == "failed"
    assert "boom in run bad" in by_run["bad"].error
    assert "boom in run bad" in by_run["bad"].traceback
    assert by_run["a"].status == by_run["c"].status == "ok"
    assert reports.failed == ["bad"]
    assert ctx.is_stored("a", "fragile") and ctx.is_stored("c", "fragile")
    assert not ctx.is_stored("bad", "fragile")
    with pytest.raises(ax.AsyncstraxError, match="boom in run bad"):
        reports.raise_if_failed()
    with pytest.raises(ax.AsyncstraxError, match="1 of 2 runs failed"):
        process_runs(ctx, ["a", "bad"], "fragile", client, progress_bar=False,
                     raise_on_error=True)


def test_stored_runs_are_skipped_before_submitting(client, tmp_path):
    ctx = make_context(tmp_path / "data")
    first = process_runs(ctx, ["a", "b"], "sample_sums", client, progress_bar=False)
    assert first.done == ["a", "b"]
    folder_a = ctx.storage[0].folder(ctx.key_for("a", "sample_sums"))
    mtime = os.path.getmtime(folder_a)
    second = process_runs(ctx, ["a", "b", "c", "a"], "sample_sums", client, progress_bar=False)
    assert [r.run_id for r in second] == ["a", "b", "c"]  # duplicates run once
    assert second.skipped == ["a", "b"] and second.done == ["c"]
    skipped = second.by_run()["a"]
    assert skipped.worker is None and skipped.seconds == 0  # never submitted
    assert skipped.items == {"sample_sums": N_CHUNKS * N_PER_CHUNK}
    # everything stored: nothing at all is submitted
    third = process_runs(ctx, ["a", "b", "c"], "sample_sums", client, progress_bar=False)
    assert third.skipped == ["a", "b", "c"]
    # a new lineage is new data: nothing skipped
    other = make_context(tmp_path / "data")
    other.set_config({"n_per_chunk": N_PER_CHUNK + 1})
    assert process_runs(other, ["a"], "sample_sums", client, progress_bar=False).done == ["a"]
    assert os.path.getmtime(folder_a) == mtime  # never rewritten


def test_a_run_stored_while_the_call_ran_counts_as_made(client, tmp_path):
    """A task retried after its worker died finds the run saved by its first attempt: the run
    was made by this call, not skipped."""
    from asyncstrax.distributed import _Batch, _wait_sync

    ctx = make_context(tmp_path / "data")
    batch = _Batch(ctx, ["a"], "sample_sums", skip_stored=True, progress_bar=False, retries=0)
    assert batch.todo == ["a"]
    ctx.make("a", "sample_sums", save="sample_sums")  # what the first attempt did
    batch.submit(client)
    _wait_sync(batch, client)
    report = batch.result().by_run()["a"]
    assert report.status == "ok" and report.items == {"sample_sums": N_CHUNKS * N_PER_CHUNK}


def test_lazy_dataframe_equals_the_eager_one(client, tmp_path):
    ctx = make_context(tmp_path / "data")
    runs = ["x", "y", "z"]
    assert process_runs(ctx, runs, "samples", client, progress_bar=False).done == runs
    with pytest.warns(UserWarning, match=r"leaves out the multi-dimensional fields \['wave'\]"):
        eager = get_df_many(ctx, runs, "samples")
    assert list(eager.columns) == ["run_id", "time", "endtime", "channel", "area"]  # no wave
    assert list(eager["run_id"].unique()) == runs
    lazy = lazy_dataframe(ctx, runs, "samples")
    assert lazy.npartitions == len(runs) * N_CHUNKS  # one per stored chunk
    assert lazy.known_divisions
    assert list(lazy.columns) == list(eager.columns)
    pd.testing.assert_frame_equal(_plain(lazy.compute()), _plain(eager))
    # one partition reads one chunk file; columns are selected after decompression
    part = lazy.partitions[4].compute()
    pd.testing.assert_frame_equal(_plain(part), _plain(eager.iloc[4 * N_PER_CHUNK:
                                                                  5 * N_PER_CHUNK]))
    some = lazy_dataframe(ctx, runs, "samples", columns=["area", "run_id"])
    pd.testing.assert_frame_equal(_plain(some.compute()), _plain(eager[["area", "run_id"]]))
    projected = lazy[["channel"]].compute()
    pd.testing.assert_frame_equal(projected, eager[["channel"]])
    # an aggregate over all runs, on the cluster
    by_run = lazy.groupby("run_id")["area"].sum().compute()
    expected = eager.groupby("run_id")["area"].sum()
    assert np.allclose(by_run.sort_index().to_numpy(), expected.sort_index().to_numpy())
    # from a ContextSpec (what a worker or another process would hold)
    from_spec = lazy_dataframe(ContextSpec.from_context(ctx), ["y"], "samples")
    with pytest.warns(UserWarning, match="multi-dimensional"):
        eager_y = get_df_many(ctx, ["y"], "samples")
    pd.testing.assert_frame_equal(_plain(from_spec.compute()), _plain(eager_y))
    with pytest.raises(ValueError, match="multi-dimensional"):
        lazy_dataframe(ctx, runs, "samples", columns=["wave"])
    with pytest.raises(KeyError, match="no field"):
        lazy_dataframe(ctx, runs, "samples", columns=["nope"])
    with pytest.raises(ax.DataNotAvailable, match="not stored"):
        lazy_dataframe(ctx, ["x", "never_made"], "samples")


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Dask may store strings as pyarrow strings; compare values, not string storage."""
    df = df.copy()
    if "run_id" in df:
        df["run_id"] = df["run_id"].astype(object)
    return df


def test_worker_processes_may_start_process_pools(client, tmp_path):
    ctx = make_context(tmp_path / "data")
    reports = process_runs(ctx, ["p"], "via_process_pool", client, progress_bar=False)
    assert reports.done == ["p"], reports.table()
    data = ctx.get_array("p", "via_process_pool")
    np.testing.assert_allclose(data["area2"], ctx.get_array("p", "samples")["area"] ** 2)


def test_keyboard_interrupt_cancels_pending_runs(client, tmp_path):
    ctx = make_context(tmp_path / "data", sleep_seconds=0.6)
    runs = [f"k{i}" for i in range(8)]
    timer = threading.Timer(0.8, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            process_runs(ctx, runs, "slow", client, progress_bar=False)
    finally:
        timer.cancel()
    _wait_idle(client)
    made = [r for r in runs if ctx.is_stored(r, "slow")]
    assert len(made) <= 4, made  # those running when interrupted finish; the rest never start


@pytest.mark.asyncio
async def test_aprocess_runs_and_its_cancellation(client, tmp_path):
    ctx = make_context(tmp_path / "data", sleep_seconds=0.6)
    reports = await aprocess_runs(ctx, ["q0", "q1"], "slow", client, progress_bar=False)
    assert reports.done == ["q0", "q1"]
    runs = [f"c{i}" for i in range(8)]
    task = asyncio.create_task(aprocess_runs(ctx, runs, "slow", client, progress_bar=False))
    await asyncio.sleep(0.8)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.get_running_loop().run_in_executor(None, _wait_idle, client)
    made = [r for r in runs if ctx.is_stored(r, "slow")]
    assert len(made) <= 4, made


@pytest.mark.asyncio
async def test_aprocess_runs_with_an_asynchronous_client(client, tmp_path):
    ctx = make_context(tmp_path / "data", fail_runs=["f2"])
    with pytest.raises(ax.EventLoopError, match="await aprocess_runs"):
        process_runs(ctx, ["f1"], "fragile", client)
    async with distributed.Client(client.scheduler.address, asynchronous=True) as aclient:
        reports = await aprocess_runs(ctx, ["f1", "f2", "f3"], "fragile", aclient,
                                      progress_bar=False)
    assert reports.done == ["f1", "f3"] and reports.failed == ["f2"]
    assert "boom in run f2" in reports.by_run()["f2"].error


def _wait_idle(client, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(client.processing().values()):
        assert time.monotonic() < deadline, client.processing()
        time.sleep(0.1)


def test_command_line(client, tmp_path, capsys):
    storage = str(tmp_path / "data")
    argv = ["process", "u1", "u2", "--target", "sample_sums", "--storage", storage,
            "--plugins", "dask_toy_plugins", "--scheduler", client.scheduler.address,
            "--config", f"n_chunks={N_CHUNKS}", "--config", "n_per_chunk=50", "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 made, 0 skipped, 0 failed" in out
    ctx = ax.Context(storage=ax.FileStore(storage), register=toy.PLUGINS,
                     config=dict(n_chunks=N_CHUNKS, n_per_chunk=50))
    assert ctx.is_stored("u1", "sample_sums") and ctx.is_stored("u2", "sample_sums")
    assert cli.main(argv) == 0
    assert "0 made, 2 skipped" in capsys.readouterr().out
    failing = ["process", "v1", "v2", "-t", "fragile", "--storage", storage,
               "--plugins", "dask_toy_plugins:Samples,Fragile", "--scheduler",
               client.scheduler.address, "--config", 'fail_runs=["v2"]', "--no-progress"]
    assert cli.main(failing) == 1
    captured = capsys.readouterr()
    assert "boom in run v2" in captured.out and "boom in run v2" in captured.err
    bad = ["process", "w", "-t", "samples", "--storage", storage, "--plugins",
           "no_such_module_here", "--no-progress"]
    assert cli.main(bad) == 2
    assert "cannot import plugin module" in capsys.readouterr().err


def test_without_a_client_a_local_cluster_is_started_and_closed(tmp_path, monkeypatch):
    import psutil

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, HERE]))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    ctx = make_context(tmp_path / "data")
    reports = process_runs(ctx, ["n1", "n2"], "sample_sums", n_workers=2, progress_bar=False,
                           cluster_kwargs=dict(dashboard_address=":0"))
    assert reports.done == ["n1", "n2"]
    assert len({r.worker for r in reports}) >= 1
    deadline = time.monotonic() + 10
    while True:
        left = [p for p in psutil.Process().children(recursive=True)
                if p.pid not in before and p.is_running() and p.status() != "zombie"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, left


def test_local_cluster_settings(client):
    def worker_state():
        import multiprocessing

        import dask_toy_plugins  # noqa: F401 - importable on the worker

        return (multiprocessing.current_process().daemon,
                os.environ.get("MALLOC_TRIM_THRESHOLD_"))

    states = client.run(worker_state)
    assert list(states.values()) == [(False, None)] * 2
    workers = client.scheduler_info()["workers"].values()
    assert [w["nthreads"] for w in workers] == [1, 1]


# ---------------------------------------------------------------------- defects fixed
def test_a_worker_building_another_lineage_fails_the_run(client, tmp_path, monkeypatch):
    """Another plugin version on the workers: the run fails, naming what differs, rather than
    being reported made while its data is stored under a lineage the client never reads."""
    ctx = make_context(tmp_path / "data")
    monkeypatch.setattr(toy.SampleSums, "__version__", "0.2.0")  # the workers still have 0.1.0
    reports = process_runs(ctx, ["l1"], "sample_sums", client, progress_bar=False)
    report = reports.by_run()["l1"]
    assert report.status == "failed", reports.table()
    assert "LineageMismatch" in report.error and "'sample_sums'" in report.error
    assert "version '0.2.0' on the client, '0.1.0' on the worker" in report.error
    assert report.attempts == 1  # not worth retrying


def test_lineage_check_on_the_worker_names_the_option(tmp_path):
    from asyncstrax.distributed import process_one_run

    ctx = make_context(tmp_path / "data")
    spec = ContextSpec.from_context(ctx)
    expected = {"sample_sums": ctx.lineage("o1", "sample_sums")}
    samples = expected["sample_sums"]["samples"]
    expected["sample_sums"]["samples"] = (samples[0], samples[1],
                                          {**samples[2], "n_per_chunk": 7})
    report = process_one_run(spec, "o1", ["sample_sums"], lineages=expected)
    assert report.status == "failed"
    assert f"option n_per_chunk=7 on the client, {N_PER_CHUNK} on the worker" in report.error
    assert not ctx.is_stored("o1", "samples")
    same = {"sample_sums": ctx.lineage("o1", "sample_sums")}
    assert process_one_run(spec, "o1", ["sample_sums"], lineages=same).status == "ok"


def test_one_run_id_string_is_one_run(client, tmp_path):
    ctx = make_context(tmp_path / "data")
    reports = process_runs(ctx, "012", "sample_sums", client, progress_bar=False)
    assert [r.run_id for r in reports] == ["012"] and reports.done == ["012"]
    assert list(get_df_many(ctx, "012", "sample_sums")["run_id"].unique()) == ["012"]
    lazy = lazy_dataframe(ctx, "012", "sample_sums")
    assert list(lazy["run_id"].unique().compute()) == ["012"]
    assert [r.run_id for r in process_runs(ctx, 12, "sample_sums", client,
                                           progress_bar=False)] == ["12"]


def test_retries_apply_to_a_failing_run(client, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    ctx = make_context(tmp_path / "data", marker_dir=str(markers), fail_runs=["bad"])
    reports = process_runs(ctx, ["t1", "t2"], "fail_once", client, progress_bar=False,
                           retries=2)
    assert reports.done == ["t1", "t2"], reports.table()
    assert [r.attempts for r in reports] == [2, 2]
    # a run failing every time: its last error, after 1 + retries attempts
    failing = process_runs(ctx, ["bad"], "fragile", client, progress_bar=False, retries=2)
    assert failing.failed == ["bad"] and failing[0].attempts == 3
    assert "boom in run bad" in failing[0].error
    # without retries, the first failure is final
    once = process_runs(ctx, ["t3"], "fail_once", client, progress_bar=False)
    assert once.failed == ["t3"] and once[0].attempts == 1
    assert "transient failure in run t3" in once[0].error
    with pytest.raises(ValueError, match="retries"):
        process_runs(ctx, ["t4"], "fail_once", client, progress_bar=False, retries=-1)


def test_a_damaged_run_fails_alone(client, tmp_path):
    ctx = make_context(tmp_path / "data")
    os.makedirs(ctx.storage[0].folder(ctx.key_for("b", "samples")))  # no metadata in it
    reports = process_runs(ctx, ["a", "b", "c"], "samples", client, progress_bar=False)
    assert reports.done == ["a", "c"] and reports.failed == ["b"], reports.table()
    bad = reports.by_run()["b"]
    assert "DataCorrupted" in bad.error and bad.worker is None and bad.attempts == 0
    assert ctx.is_stored("a", "samples") and ctx.is_stored("c", "samples")


def test_a_local_cluster_without_workers_is_refused(tmp_path, capsys):
    ctx = make_context(tmp_path / "data")
    with pytest.raises(ValueError, match="n_workers must be a whole number >= 0"):
        process_runs(ctx, ["w"], "samples", n_workers=-1, progress_bar=False)
    with pytest.raises(ValueError, match="no worker"):
        process_runs(ctx, ["w"], "samples", progress_bar=False,
                     cluster_kwargs=dict(n_workers=0))
    with pytest.raises(SystemExit) as exited:
        cli.main(["process", "w", "-t", "samples", "--storage", str(tmp_path / "data"),
                  "--plugins", "dask_toy_plugins", "--n-workers", "-1", "--no-progress"])
    assert exited.value.code == 2
    assert "--n-workers: must be 0 or more" in capsys.readouterr().err


def test_a_plugin_raising_system_exit_fails_its_run_only(client, tmp_path):
    ctx = make_context(tmp_path / "data", exit_runs=["e2"])
    workers = set(client.scheduler_info()["workers"])
    reports = process_runs(ctx, ["e1", "e2"], "exits", client, progress_bar=False)
    assert reports.done == ["e1"] and reports.failed == ["e2"], reports.table()
    report = reports.by_run()["e2"]
    assert report.error == "SystemExit: 3" and "raise SystemExit(3)" in report.traceback
    assert set(client.scheduler_info()["workers"]) == workers  # no worker died


def test_no_skip_reports_stored_runs_as_skipped(client, tmp_path):
    ctx = make_context(tmp_path / "data")
    assert process_runs(ctx, ["s1"], "sample_sums", client, progress_bar=False).done == ["s1"]
    folder = ctx.storage[0].folder(ctx.key_for("s1", "sample_sums"))
    mtime = os.path.getmtime(folder)
    again = process_runs(ctx, ["s1", "s2"], "sample_sums", client, progress_bar=False,
                         skip_stored=False)
    assert again.skipped == ["s1"] and again.done == ["s2"], again.table()
    assert again.by_run()["s1"].worker is not None  # submitted, read back on a worker
    assert os.path.getmtime(folder) == mtime


def _process_argv(storage, *extra):
    return ["process", "m1", "-t", "sample_sums", "--storage", str(storage),
            "--plugins", "dask_toy_plugins", "--no-progress", *extra]


def test_command_line_bad_scheduler_address(tmp_path, capsys):
    assert cli.main(_process_argv(tmp_path / "data", "--scheduler", "notanaddress")) == 2
    err = capsys.readouterr().err
    assert "invalid scheduler address 'notanaddress'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def silent_port():
    """A TCP port that accepts connections but never says a word (not a Dask scheduler)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def test_command_line_scheduler_that_is_not_dask(tmp_path, capsys, silent_port):
    t0 = time.monotonic()
    argv = _process_argv(tmp_path / "data", "--scheduler", silent_port, "--connect-timeout", "1")
    assert cli.main(argv) == 2
    assert time.monotonic() - t0 < 10
    assert f"no Dask scheduler answers at {silent_port}" in capsys.readouterr().err


def test_command_line_checks_targets_and_config_before_connecting(tmp_path, capsys,
                                                                   silent_port):
    t0 = time.monotonic()
    bad_target = ["process", "m1", "-t", "nosuch", "--storage", str(tmp_path / "data"),
                  "--plugins", "dask_toy_plugins", "--no-progress", "--scheduler", silent_port]
    assert cli.main(bad_target) == 2
    assert "no plugin provides 'nosuch'" in capsys.readouterr().err
    bad_config = _process_argv(tmp_path / "data", "--scheduler", silent_port, "--config",
                               "no_such_option=1")
    assert cli.main(bad_config) == 2
    assert "no_such_option" in capsys.readouterr().err
    assert time.monotonic() - t0 < 10  # no connection attempted (it would take 30 s)


def test_a_cluster_without_workers_yet_is_said_and_waited_for(tmp_path):
    # a cluster of one's own that has no worker when the call starts (an adaptive one scales
    # up later): a warning says why nothing moves, and the runs go once a worker joins
    ctx = make_context(tmp_path / "data")
    paths = [ROOT, HERE, os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    with distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                                  dashboard_address=":0",
                                  env=env) as cluster, distributed.Client(cluster) as client:
        result: dict = {}

        def call() -> None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result["reports"] = process_runs(ctx, ["s1"], "samples", client,
                                                 progress_bar=False)
            result["warnings"] = [str(w.message) for w in caught
                                  if issubclass(w.category, RuntimeWarning)]

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive()  # waiting for a worker
        cluster.scale(1)
        thread.join(120)
        assert not thread.is_alive()
    assert result["reports"].done == ["s1"]
    assert ctx.is_stored("s1", "samples")
    assert any("has no worker yet" in w for w in result["warnings"]), result["warnings"]
