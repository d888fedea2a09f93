"""A run still being written can be read by another context (allow_incomplete=True)."""

from __future__ import annotations

import asyncio
import warnings

import numpy as np
import pytest
from storage_testing import THINGS_DTYPE, Doubled

import asyncstrax as ax
from asyncstrax.errors import DataNotAvailable
from asyncstrax.storage import FileStore

DTYPE = THINGS_DTYPE
N = 4
GATES: list[asyncio.Event] = []


def data_for(chunk_i):
    rng = np.random.default_rng(chunk_i)
    d = np.zeros(10, DTYPE)
    d["time"] = np.sort(rng.integers(0, 900, len(d))) + chunk_i * 1000
    d["endtime"] = d["time"] + 50
    d["x"] = rng.normal(size=len(d))
    return d


class Gated(ax.Plugin):
    """A live source: yields chunk i, then waits for the test to open gate i."""

    provides = "things"
    data_kind = "things"
    dtype = DTYPE
    __version__ = "0.0.1"
    rechunk_on_save = False

    async def iterate(self):
        for chunk_i in range(N):
            yield self.chunk(start=chunk_i * 1000, end=(chunk_i + 1) * 1000,
                             data=data_for(chunk_i))
            if chunk_i < N - 1:
                await GATES[chunk_i].wait()


async def _wait_listed(ctx, n, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            if len(ctx.get_metadata("1", "things")["chunks"]) >= n:
                return
        except DataNotAvailable:
            pass
        assert loop.time() < deadline, f"chunk {n - 1} was never published"
        await asyncio.sleep(0.01)


def test_growing_run_read_by_another_context(tmp_path):
    GATES[:] = [asyncio.Event() for _ in range(N)]

    async def main():
        writer = ax.Context(storage=FileStore(tmp_path), register=[Gated])
        live = ax.Context(storage=FileStore(tmp_path), register=[Gated, Doubled],
                          allow_incomplete=True)
        default = ax.Context(storage=FileStore(tmp_path), register=[Gated, Doubled])
        task = asyncio.create_task(writer.amake("1", "things"))
        try:
            for k in (1, 2):
                await _wait_listed(live, k)
                assert live.is_stored("1", "things")
                md = live.get_metadata("1", "things")
                assert "writing_ended" not in md and md["end"] == k * 1000
                with pytest.warns(UserWarning, match=f"not finished.*up to time {k * 1000}"):
                    got = await asyncio.wait_for(live.aget_array("1", "things"), 10)
                np.testing.assert_array_equal(got, np.concatenate([data_for(i) for i in range(k)]))
                # made from part of the run: returned, never saved as if it were the whole
                with pytest.warns(UserWarning) as said:
                    doubled = await asyncio.wait_for(live.aget_array("1", "doubled"), 10)
                said = " ".join(str(w.message) for w in said)
                assert "not finished" in said and "nothing computed from ['things'] is saved" in said
                assert len(doubled) == len(got)
                assert not live.is_stored("1", "doubled")
                # a default context never sees incomplete data
                assert not default.is_stored("1", "things")
                with pytest.raises(DataNotAvailable):
                    default.get_metadata("1", "things")
                GATES[k - 1].set()
            GATES[2].set()
            await asyncio.wait_for(task, 10)
        finally:
            for gate in GATES:
                gate.set()
            if not task.done():
                task.cancel()
        return default, live

    default, live = asyncio.run(main())
    assert default.is_stored("1", "things")
    assert "writing_ended" in default.get_metadata("1", "things")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ctx in (default, live):  # complete data: no warning
            np.testing.assert_array_equal(ctx.get_array("1", "things"),
                                          np.concatenate([data_for(i) for i in range(N)]))
    assert len(default.get_array("1", "doubled")) == N * 10 and default.is_stored("1", "doubled")


def test_dead_writer_is_not_a_growing_run(tmp_path):
    """A temporary folder whose writer is gone (no lock held) is never read."""
    store = FileStore(tmp_path)
    ctx = ax.Context(storage=store, register=[Gated], allow_incomplete=True)
    key = ctx.key_for("1", "things")
    temp = tmp_path / (store.folder(key).rsplit("/", 1)[1] + "_temp")
    temp.mkdir()
    (temp / ".asyncstrax-writer.lock").write_text("")
    assert not store.find(key, allow_incomplete=True)
    assert not ctx.is_stored("1", "things")
