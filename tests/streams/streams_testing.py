"""Helpers for the stream tests: deterministic chunks, and a publisher in a separate process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import asyncstrax as ax
from asyncstrax.streams import protocol as P

ROOT = Path(__file__).resolve().parents[2]
DT = np.dtype([("time", "<i8"), ("endtime", "<i8"), ("channel", "<i2"), ("value", "<f8", (4,))])
WIDTH = 10_000
RUN = "run0"


def connected_pair() -> tuple[socket.socket, socket.socket]:
    """A loopback connection: (sender, receiver configured as the streams configure theirs)."""
    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiver, _ = server.accept()
    server.close()
    P.configure_socket(receiver)
    return sender, receiver


def make_data(i: int, n: int = 100) -> np.ndarray:
    rng = np.random.default_rng(i)
    d = np.zeros(n, DT)
    d["time"] = i * WIDTH + np.sort(rng.integers(0, WIDTH - 10, n))
    d["endtime"] = d["time"] + rng.integers(1, 10, n)
    d["channel"] = rng.integers(0, 100, n)
    d["value"] = rng.normal(size=(n, 4))
    return d


def make_chunk(i: int, n: int = 100, data_type: str = "records", run_id: str = RUN) -> ax.Chunk:
    return ax.Chunk(data_type=data_type, data_kind=data_type, dtype=DT, run_id=run_id,
                    start=i * WIDTH, end=(i + 1) * WIDTH, data=make_data(i, n))


def same_chunk(a: ax.Chunk, b: ax.Chunk) -> bool:
    return (a.start, a.end, a.data_type, a.run_id) == (b.start, b.end, b.data_type, b.run_id) \
        and a.data.dtype == b.data.dtype and a.data.tobytes() == b.data.tobytes()


PUBLISHER_SCRIPT = r"""
import asyncio, json, os, sys, time
from streams_testing import make_chunk, DT, RUN
from asyncstrax.streams import Publisher

p = json.loads(sys.argv[1])

async def main():
    pub = Publisher("records", transport=p.get("transport", "tcp"),
                    compress=p.get("compress", False),
                    token=p.get("token"), buffer_bytes=p.get("buffer_bytes", 64 * 1024**2),
                    dtype=DT, data_kind="records", run_id=RUN)
    await pub.start()
    print("ADDRESS", pub.address, flush=True)
    await pub.wait_for_subscribers(p.get("wait", 1))
    try:
        for i in range(p.get("n_chunks", 10)):
            if i == p.get("fail_at"):
                raise RuntimeError("the digitizer caught fire")
            if i == p.get("hang_at"):
                print("HANGING", flush=True)
                await asyncio.sleep(3600)
            await pub.publish(make_chunk(i, p.get("n_items", 100)))
            if p.get("delay"):
                await asyncio.sleep(p["delay"])
    except Exception as error:
        await pub.abort(error)
        await pub.aclose()
        print("ABORTED", flush=True)
        return
    await pub.end()
    await pub.aclose()
    s = pub.statistics()
    print("STATS", json.dumps(dict(max_buffered=s.max_buffered_bytes, published=s.published_chunks,
          live=s.shm_segments_live)), flush=True)

asyncio.run(main())
"""


class PublisherProcess:
    """A Publisher of ``records`` (chunks from ``make_chunk``) in a separate interpreter."""

    def __init__(self, **params) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(Path(__file__).parent),
                                             env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER_SCRIPT, json.dumps(params)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.address: str | None = None

    async def start(self) -> str:
        line = await self.line("ADDRESS")
        self.address = line.split()[1]
        return self.address

    async def line(self, prefix: str) -> str:
        while True:
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 10)
            if not line:
                raise RuntimeError(f"publisher exited: {self.proc.stderr.read()}")
            if line.startswith(prefix):
                return line.strip()

    async def stats(self) -> dict:
        return json.loads((await self.line("STATS")).split(" ", 1)[1])

    def kill(self) -> None:
        self.proc.kill()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()
