"""``asyncstrax digitizer`` and ``asyncstrax live`` as separate processes: a whole run processed
and saved as it arrives, and a Ctrl-C (SIGINT) that stops cleanly with everything saved."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.Popen:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.Popen([sys.executable, "-m", "asyncstrax.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def address_of(digitizer: subprocess.Popen) -> str:
    deadline = time.monotonic() + 8  # test guard
    while time.monotonic() < deadline:
        line = digitizer.stdout.readline()
        if "serving" in line:
            return line.split("serving ")[1].split()[0]
        if not line and digitizer.poll() is not None:
            break
    digitizer.kill()
    raise AssertionError(f"digitizer did not start: {digitizer.stderr.read()}")


def saved(path: Path) -> dict[str, dict]:
    out = {}
    for meta in glob.glob(str(path / "*" / "*-metadata.json")):
        folder = os.path.basename(os.path.dirname(meta))
        m = json.load(open(meta))
        out[m["data_type"]] = dict(m, folder=folder)
    return out


def finish(proc: subprocess.Popen, timeout: float = 10) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


@pytest.mark.slow
def test_live_processes_and_saves_a_whole_run(tmp_path):
    digitizer = cli("digitizer", "--port", "0", "--event-rate", "20", "--seconds", "1.2",
                    "--chunk-mb", "0.4", "--transport", "sharedmem", "--token", "t0k")
    try:
        address = address_of(digitizer)
        live = cli("live", "--address", address, "--token", "t0k", "--storage",
                   str(tmp_path), "--interval", "0.3", "--max-workers", "2")
        code, out, err = finish(live)
    finally:
        dcode, dout, derr = finish(digitizer)
    assert code == 0, err
    assert dcode == 0, derr
    assert "live " in out and "MB raw" in out and "end of run" in out
    data = saved(tmp_path)
    assert {"raw_records", "peaks", "peak_basics", "events", "event_basics"} <= set(data)
    for meta in data.values():
        assert not meta["folder"].endswith("_temp") and "exception" not in meta
    assert data["raw_records"]["end"] >= 1_200_000_000
    assert sum(c["n"] for c in data["event_basics"]["chunks"]) > 0


@pytest.mark.slow
def test_ctrl_c_stops_live_cleanly_with_everything_saved(tmp_path):
    digitizer = cli("digitizer", "--port", "0", "--event-rate", "20", "--seconds", "60",
                    "--chunk-mb", "0.4")
    try:
        address = address_of(digitizer)
        live = cli("live", "--address", address, "--storage", str(tmp_path),
                   "--interval", "0.2", "--max-workers", "2")
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # wait for data to flow
            line = live.stdout.readline()
            if "MB raw" in line and float(line.split(" MB raw")[0].split()[-1]) > 0:
                break
        live.send_signal(signal.SIGINT)
        code, out, err = finish(live)
        assert code == 0, err
        assert "stopped by the user" in out
        data = saved(tmp_path)
        assert {"raw_records", "event_basics"} <= set(data)
        for meta in data.values():
            assert not meta["folder"].endswith("_temp") and "exception" not in meta
        assert 0 < data["raw_records"]["end"] < 60_000_000_000
        # the digitizer saw its subscriber leave, and still ends its run cleanly on Ctrl-C
        digitizer.send_signal(signal.SIGINT)
        dcode, dout, derr = finish(digitizer)
        assert dcode == 0, derr
        assert "end of run" in dout and "(stopped)" in dout
    finally:
        if digitizer.poll() is None:
            digitizer.kill()
            digitizer.communicate()


# ---------------------------------------------------------------------- in one process (fast)
def parse(add, argv):
    import argparse

    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


@pytest.mark.asyncio
@pytest.mark.parametrize("stop_early", [False, True])
async def test_digitizer_and_live_in_one_loop(tmp_path, stop_early):
    import asyncio

    from asyncstrax.streams.live import (
        add_digitizer_arguments,
        add_live_arguments,
        process_live,
        serve_digitizer,
    )

    seconds = "30" if stop_early else "0.8"
    dargs = parse(add_digitizer_arguments, ["--port", "0", "--event-rate", "20", "--seconds",
                                            seconds, "--chunk-mb", "0.4", "--rate", "4",
                                            "--speed", "4", "--run-id", "r1"])
    d_stop, l_stop = asyncio.Event(), asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    digitizer = asyncio.create_task(
        serve_digitizer(dargs, d_stop, ready=lambda pub: ready.set_result(pub.address)))
    address = await asyncio.wait_for(ready, 4)
    largs = parse(add_live_arguments, ["--address", address, "--storage", str(tmp_path),
                                       "--interval", "0.1", "--max-workers", "2"])
    box: dict = {}
    live = asyncio.create_task(process_live(largs, l_stop, box))
    if stop_early:
        while "pipeline" not in box:
            await asyncio.sleep(0.02)
        from asyncstrax.streams.live import _subscriber

        while (sub := _subscriber(box["pipeline"])) is None or not sub.statistics().chunks:
            await asyncio.sleep(0.02)
        l_stop.set()  # what Ctrl-C does
    assert await asyncio.wait_for(live, 4.5) == 0
    d_stop.set()
    assert await asyncio.wait_for(digitizer, 4) == 0
    data = saved(tmp_path)
    assert {"raw_records", "peaks", "event_basics"} <= set(data)
    for meta in data.values():
        assert not meta["folder"].endswith("_temp") and "exception" not in meta
    if not stop_early:
        assert data["raw_records"]["end"] >= 800_000_000
