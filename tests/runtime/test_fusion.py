"""Chains of parallel plugins run fused: same output, one component, errors name the inner
plugin; data types someone else needs stay separate."""

from __future__ import annotations

import numpy as np
import pytest
from toy_plugins import PulseBasics, Pulses

import asyncstrax as ax

BOUNDS = {"chunk_bounds": (10_000, 25_000, 60_000, 65_000, 90_000)}


class ParallelBasics(PulseBasics):
    parallel = True


class Scaled(ax.Plugin):
    provides = "scaled"
    depends_on = "pulse_basics"
    parallel = True
    dtype = [("time", np.int64), ("endtime", np.int64), ("twice", np.float64)]

    def compute(self, pulses):
        out = np.zeros(len(pulses), self.dtype)
        out["time"], out["endtime"] = pulses["time"], pulses["endtime"]
        out["twice"] = 2 * pulses["area_per_sample"]
        return out


class ProcessBasics(ParallelBasics):
    parallel = "process"


class ProcessScaled(Scaled):
    parallel = "process"


class FailingScaled(Scaled):
    def compute(self, pulses, chunk_i):
        if chunk_i == 3:
            raise ZeroDivisionError("bad scale")
        return super().compute(pulses)


def run(plugins, fuse=True, **kwargs):
    ctx = ax.Context(register=[Pulses, *plugins], config=BOUNDS, fuse_parallel=fuse, **kwargs)
    try:
        return ctx.get_array("r", "scaled"), ctx
    finally:
        ctx.close()


def test_fused_chain_gives_the_same_output_as_separate_plugins():
    fused, ctx = run([ParallelBasics, Scaled], max_workers=2)
    separate, ctx2 = run([ParallelBasics, Scaled], fuse=False, max_workers=2)
    np.testing.assert_array_equal(fused, separate)
    assert [c.name for c in ctx.last_summary.components] == ["Pulses", "ParallelBasics+Scaled"]
    assert [c.name for c in ctx2.last_summary.components] == ["Pulses", "ParallelBasics",
                                                              "Scaled"]
    one_worker, ctx3 = run([ParallelBasics, Scaled])  # one worker: plugins stay separate
    np.testing.assert_array_equal(one_worker, separate)
    assert len(ctx3.last_summary.components) == 3


def test_thread_plugins_are_not_fused_into_worker_processes():
    class LocalScaled(Scaled):  # defined here: it cannot be pickled for a worker process
        pass

    reference, _ = run([ParallelBasics, Scaled], fuse=False)
    got, ctx = run([ProcessBasics, LocalScaled], max_workers=2)
    np.testing.assert_array_equal(got, reference)
    assert [c.name for c in ctx.last_summary.components] == ["Pulses", "ProcessBasics",
                                                             "LocalScaled"]


def test_fused_chain_in_worker_processes():
    separate, _ = run([ParallelBasics, Scaled], fuse=False)
    fused, ctx = run([ProcessBasics, ProcessScaled], max_workers=2)
    np.testing.assert_array_equal(fused, separate)
    (chain,) = [c for c in ctx.last_summary.components if "+" in c.name]
    assert chain.name == "ProcessBasics+ProcessScaled"


def test_an_error_inside_a_fused_chain_names_the_inner_plugin():
    with pytest.raises(ax.PluginError) as info:
        run([ParallelBasics, FailingScaled], max_workers=2)
    message = str(info.value)
    assert "plugin FailingScaled" in message and "chunk 3" in message
    assert "ZeroDivisionError: bad scale" in message


class Halved(Scaled):
    provides = "halved"
    dtype = [("time", np.int64), ("endtime", np.int64), ("half", np.float64)]

    def compute(self, pulses):
        out = np.zeros(len(pulses), self.dtype)
        out["time"], out["endtime"] = pulses["time"], pulses["endtime"]
        out["half"] = pulses["area_per_sample"] / 2
        return out


def test_data_types_others_need_are_not_fused():
    ctx = ax.Context(register=[Pulses, ParallelBasics, Scaled, Halved], config=BOUNDS,
                     max_workers=2)

    def names(targets):
        return sorted(p.name for p in ctx.pipeline("r", targets).plugins)

    assert names("scaled") == ["ParallelBasics+Scaled", "Pulses"]
    assert names("pulse_basics") == ["ParallelBasics", "Pulses"]  # a target stays visible
    # read by two plugins in one request: pulse_basics must reach both
    assert names(["scaled", "halved"]) == ["Halved", "ParallelBasics", "Pulses", "Scaled"]
    both = ctx.get_array("r", ["scaled", "halved"])
    np.testing.assert_allclose(both["twice"], 4 * both["half"])


# ---------------------------------------------------------------------- saving inside a chain
class SavedBasics(ParallelBasics):
    """Saved, not rechunked on save: the chain that makes it may write it itself."""

    rechunk_on_save = False


class ProcessSavedBasics(SavedBasics):
    parallel = "process"


class RechunkedBasics(ParallelBasics):
    rechunk_on_save = True


def save_run(tmp_path, folder, plugins, **kwargs):
    store = ax.FileStore(tmp_path / folder)
    ctx = ax.Context(storage=store, register=[Pulses, *plugins], config=BOUNDS, **kwargs)
    try:
        scaled = ctx.get_array("r", "scaled")
        return ctx, scaled, ctx.last_summary
    finally:
        ctx.close()


def stored_basics(tmp_path, folder, plugins):
    """What a fresh reader finds on disk (read-only: it must not make anything)."""
    reader = ax.Context(storage=ax.FileStore(tmp_path / folder, readonly=True),
                        register=[Pulses, *plugins], config=BOUNDS)
    assert reader.is_stored("r", "pulse_basics")
    return reader.get_array("r", "pulse_basics"), reader.get_metadata("r", "pulse_basics")


@pytest.mark.parametrize("basics, scaled", [(SavedBasics, Scaled),
                                            (ProcessSavedBasics, ProcessScaled)])
def test_a_saved_intermediate_is_written_by_the_chain_that_makes_it(tmp_path, basics, scaled):
    _, ref_scaled, _ = save_run(tmp_path, "one", [SavedBasics, Scaled])
    _, fused_scaled, summary = save_run(tmp_path, "two", [basics, scaled], max_workers=2)
    np.testing.assert_array_equal(fused_scaled, ref_scaled)
    (chain,) = [c for c in summary.components if "+" in c.name]
    assert chain.name == f"{basics.__name__}+{scaled.__name__}"
    # only the chain's last output left it: pulse_basics went to disk from the worker
    assert chain.bytes_out == fused_scaled.nbytes
    ref, ref_md = stored_basics(tmp_path, "one", [SavedBasics, Scaled])
    got, md = stored_basics(tmp_path, "two", [basics, scaled])
    np.testing.assert_array_equal(got, ref)
    assert md["compressor"] == ref_md["compressor"]
    fields = ("chunk_i", "n", "start", "end", "first_time", "last_endtime", "nbytes")
    assert [{f: c.get(f) for f in fields} for c in md["chunks"]] == \
        [{f: c.get(f) for f in fields} for c in ref_md["chunks"]]
    for c in md["chunks"]:  # one file per chunk with items, named by its index, checksummed
        assert (c.get("filename", "").endswith(f"-{c['chunk_i']:06d}") and "xxh3_64" in c) == \
            bool(c["n"])
    assert "exception" not in md and md["writing_ended"]


def test_a_rechunking_saver_keeps_its_data_type_out_of_the_chain(tmp_path):
    ctx = ax.Context(storage=ax.FileStore(tmp_path), register=[Pulses, RechunkedBasics, Scaled],
                     config=BOUNDS, max_workers=2)
    assert sorted(p.name for p in ctx.pipeline("r", "scaled").plugins) == [
        "Pulses", "RechunkedBasics", "Scaled"]
    inline = ax.Context(storage=ax.FileStore(tmp_path), register=[Pulses, SavedBasics, Scaled],
                        config=BOUNDS, max_workers=2)
    assert sorted(p.name for p in inline.pipeline("r", "scaled").plugins) == [
        "Pulses", "SavedBasics+Scaled"]


class FailingSavedScaled(FailingScaled):
    parallel = "process"


def test_a_failure_in_a_saving_chain_leaves_the_written_part_marked_incomplete(tmp_path):
    with pytest.raises(ax.PluginError, match="FailingSavedScaled"):
        save_run(tmp_path, "bad", [ProcessSavedBasics, FailingSavedScaled], max_workers=2)
    store = ax.FileStore(tmp_path / "bad")
    ctx = ax.Context(storage=store, register=[Pulses, ProcessSavedBasics, FailingSavedScaled],
                     config=BOUNDS)
    assert not ctx.is_stored("r", "pulse_basics")
    from asyncstrax.storage import list_stored

    (row,) = [r for r in list_stored(tmp_path / "bad") if r["data_type"] == "pulse_basics"]
    assert row["temporary"] and not row["complete"]
    assert "bad scale" in row["problem"]  # the partial data says why it is incomplete
    from asyncstrax.runtime import shm

    assert shm.list_segments() == []


class KillerSavedScaled(ProcessScaled):
    """Kills its own worker process (SIGKILL) on chunk 2; never the test process."""

    def compute(self, pulses, chunk_i):
        import multiprocessing as mp
        import os
        import signal

        if chunk_i == 2 and mp.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().compute(pulses)


def test_a_worker_killed_while_its_chain_saves_leaves_nothing_behind(tmp_path):
    import multiprocessing as mp

    from asyncstrax.runtime import shm
    from asyncstrax.storage import list_stored

    before = {p.pid for p in mp.active_children()}
    from asyncstrax.runtime.process_pool import WorkerDied

    with pytest.raises(WorkerDied, match="ProcessSavedBasics"):
        save_run(tmp_path, "killed", [ProcessSavedBasics, KillerSavedScaled], max_workers=2)
    (row,) = [r for r in list_stored(tmp_path / "killed") if r["data_type"] == "pulse_basics"]
    assert row["temporary"] and not row["complete"]  # what the chain wrote stays incomplete
    assert shm.list_segments() == []
    assert {p.pid for p in mp.active_children()} - before == set()
