"""A parallel plugin keeps ``max_workers`` steps in flight even when its input channel holds
only one chunk at a time (chunks bigger than the channel's capacity)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import asyncstrax as ax

DT = np.dtype([("time", np.int64), ("endtime", np.int64), ("v", np.float64)])
N_CHUNKS = 6


class Source(ax.Plugin):
    provides = "x"
    depends_on = ()
    data_kind = "x"
    dtype = DT
    save_when = ax.SaveWhen.NEVER

    async def iterate(self):
        for i in range(N_CHUNKS):
            d = np.zeros(1000, DT)
            d["time"] = i * 1000 + np.arange(1000)
            d["endtime"] = d["time"] + 1
            d["v"] = i
            yield self.chunk(start=i * 1000, end=(i + 1) * 1000, data=d)


class Slow(ax.Plugin):
    """Records how many of its computes overlap (each sleeps, releasing the GIL)."""

    provides = "y"
    depends_on = "x"
    data_kind = "x"
    parallel = True
    dtype = DT
    lock = threading.Lock()
    running = 0
    most = 0

    def compute(self, x):
        cls = type(self)
        with cls.lock:
            cls.running += 1
            cls.most = max(cls.most, cls.running)
        time.sleep(0.1)
        with cls.lock:
            cls.running -= 1
        out = x.copy()
        out["v"] *= 2
        return out


@pytest.mark.parametrize("workers", [2, 3])
def test_steps_overlap_when_the_input_channel_holds_one_chunk(workers):
    Slow.most = 0
    one_chunk = 1000 * DT.itemsize
    with ax.Context(register=[Source, Slow], max_workers=workers,
                    channel_capacity_bytes=one_chunk // 2) as ctx:
        y = ctx.get_array("r", "y")
    np.testing.assert_array_equal(y["v"], 2 * np.repeat(np.arange(N_CHUNKS), 1000))
    assert Slow.most == workers


def test_one_worker_still_computes_one_step_at_a_time():
    Slow.most = 0
    with ax.Context(register=[Source, Slow], max_workers=1,
                    channel_capacity_bytes=1000) as ctx:
        ctx.get_array("r", "y")
    assert Slow.most == 1
