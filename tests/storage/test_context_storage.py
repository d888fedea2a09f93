"""The FileStore behind a real Context and pipeline: save, find, load, and failures."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from storage_testing import THINGS_DTYPE, Doubled
from toy_plugins import TOY_PLUGINS

import asyncstrax as ax
from asyncstrax.storage import FileStore, list_stored

DTYPE = THINGS_DTYPE
N = 6


def data_for(chunk_i):
    rng = np.random.default_rng(chunk_i)
    d = np.zeros(20 if chunk_i != 3 else 0, DTYPE)
    d["time"] = np.sort(rng.integers(0, 900, len(d))) + chunk_i * 1000
    d["endtime"] = d["time"] + 50
    d["x"] = rng.normal(size=len(d))
    return d


class Things(ax.Plugin):
    provides = "things"
    data_kind = "things"
    dtype = DTYPE
    __version__ = "0.0.1"
    rechunk_on_save = False
    fail_at = ax.Config(default=-1, track=False, help="chunk index that raises")

    def is_ready(self, chunk_i):
        return chunk_i < N

    def source_finished(self):
        return True

    def compute(self, chunk_i):
        if chunk_i == self.config["fail_at"]:
            raise ValueError(f"broken at {chunk_i}")
        return self.chunk(start=chunk_i * 1000, end=(chunk_i + 1) * 1000, data=data_for(chunk_i))


class SlowThings(Things):
    """The same data, from an async source that takes its time (so chunks reach the saver
    before the failure)."""

    provides = "things"

    async def iterate(self):
        import asyncio

        for chunk_i in range(N):
            await asyncio.sleep(0.02)
            yield self.compute(chunk_i)


def expected():
    return np.concatenate([data_for(i) for i in range(N)])


def test_make_then_load_from_disk(tmp_path):
    ctx = ax.Context(storage=FileStore(tmp_path), register=[Things, Doubled])
    assert not ctx.is_stored("1", "doubled")
    computed = ctx.get_array("1", "doubled")
    assert ctx.is_stored("1", "things") and ctx.is_stored("1", "doubled")
    md = ctx.get_metadata("1", "things")
    assert md["lineage_hash"] == ctx.key_for("1", "things").lineage_hash
    assert len(md["chunks"]) == N and md["chunks"][3]["n"] == 0

    ctx2 = ax.Context(storage=FileStore(tmp_path, readonly=True), register=[Things, Doubled])
    loaded = ctx2.get_array("1", "doubled")
    np.testing.assert_array_equal(loaded, computed)
    assert [c.kind for c in ctx2.last_summary.components] == ["load"]
    np.testing.assert_array_equal(ctx2.get_array("1", "things"), expected())
    rows = list_stored(tmp_path)
    assert {(r["data_type"], r["complete"]) for r in rows} == {("things", True),
                                                               ("doubled", True)}


def test_a_failing_plugin_leaves_incomplete_data(tmp_path):
    ctx = ax.Context(storage=FileStore(tmp_path), register=[SlowThings],
                     config={"fail_at": 4})
    with pytest.raises(ax.PluginError, match="broken at 4"):
        ctx.make("1", "things")
    assert not ctx.is_stored("1", "things")
    (row,) = list_stored(tmp_path)
    assert row["temporary"] and not row["complete"]
    # The saver is cancelled when the plugin fails, but records the pipeline's first error:
    # the metadata says why the data is incomplete.
    assert "broken at 4" in row["problem"] and "SlowThings" in row["problem"]
    key = ctx.key_for("1", "things")
    md_file = os.path.join(row["folder"], f"things-{key.lineage_hash}-metadata.json")
    md = json.load(open(md_file))
    assert md["exception"] and "writing_ended" not in md
    # A rerun of the same lineage (fail_at is not tracked) completes it, replacing the leftovers.
    ctx.set_config({"fail_at": -1})
    assert ctx.key_for("1", "things") == key
    ctx.make("1", "things")
    assert ctx.is_stored("1", "things")
    assert [r["complete"] for r in list_stored(tmp_path)] == [True]
    np.testing.assert_array_equal(ctx.get_array("1", "things"), expected())


def test_time_range_with_several_targets_reads_and_saves_whole_runs(tmp_path):
    ctx = ax.Context(storage=FileStore(tmp_path), register=[Things, Doubled])
    ctx.make("1", "things")
    window = (2500, 4500)
    inside = expected()
    inside = inside[(inside["time"] >= window[0]) & (inside["endtime"] <= window[1])]
    # doubled is computed from things: it must see all of things, and is saved whole
    got = ctx.get_array("1", ["things", "doubled"], time_range=window)
    assert len(got) == len(inside) > 0
    np.testing.assert_array_equal(got["time"], inside["time"])
    md = ctx.get_metadata("1", "doubled")
    assert (md["start"], md["end"]) == (0, N * 1000)
    assert sum(c["n"] for c in md["chunks"]) == len(expected())
    # two stored targets with different chunkings (doubled was rechunked on save)
    got = ctx.get_array("1", ["things", "doubled"], time_range=window)
    np.testing.assert_array_equal(got["time"], inside["time"])
    np.testing.assert_array_equal(ctx.get_array("1", "doubled", time_range=window)["x"],
                                  2 * inside["x"])


def test_cancelled_while_finishing_the_folder_keeps_complete_data(tmp_path, monkeypatch):
    # Every chunk is written and the folder is being finished on its thread when the request
    # is cancelled: the abort waits for it, and the data is complete, not marked failed.
    import asyncio
    import threading
    import time

    from asyncstrax.storage import files

    finishing = threading.Event()
    finish = files.FileSaver._finalize_folder

    def slow_finish(self):
        finishing.set()
        time.sleep(0.3)  # an fsync on a slow disk
        return finish(self)

    monkeypatch.setattr(files.FileSaver, "_finalize_folder", slow_finish)
    ctx = ax.Context(storage=FileStore(tmp_path), register=[Things])

    async def main():
        task = asyncio.create_task(ctx.amake("1", "things"))
        while not finishing.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert ctx.is_stored("1", "things")
    md = ctx.get_metadata("1", "things")
    assert "exception" not in md and "writing_ended" in md
    assert sorted(os.listdir(tmp_path)) == [str(ctx.key_for("1", "things"))]
    np.testing.assert_array_equal(ctx.get_array("1", "things"), expected())


def test_cancelled_run_records_the_cancellation_as_its_failure(tmp_path):
    import asyncio
    import json

    ctx = ax.Context(storage=FileStore(tmp_path), register=[SlowThings])

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.aget_array("1", "things"), 0.05)

    asyncio.run(main())
    assert not ctx.is_stored("1", "things")
    (folder,) = os.listdir(tmp_path)
    (md_file,) = [f for f in os.listdir(tmp_path / folder) if f.endswith("metadata.json")]
    md = json.loads((tmp_path / folder / md_file).read_text())
    assert md["exception"].rstrip().splitlines()[-1].startswith("CancelledError: writing was")


def test_progress_bar_counts_run_time_with_a_percentage_when_the_extent_is_known(
        tmp_path, capsys):
    ctx = ax.Context(storage=ax.FileStore(tmp_path), register=TOY_PLUGINS, progress_bar=True,
                     config={"chunk_bounds": (30_000, 60_000)})
    ctx.make("r", "pulses", save="pulses")
    computed = capsys.readouterr().err
    assert "s of run" in computed and "%" not in computed  # the extent was not known
    ctx.get_array("r", "pulses")
    loaded = capsys.readouterr().err
    assert "100%" in loaded and "0.0001/0.0001 s of run" in loaded and "chunks" in loaded
