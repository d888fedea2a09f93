"""``asyncstrax digitizer`` and ``asyncstrax live``: a simulated DAQ and a live processor.

``asyncstrax digitizer`` serves the raw_records of the synthetic TPC (``tpc.sim``) as a stream,
paced in real time (a chunk goes out once the detector time it covers has passed), for
``--seconds`` of detector time or until Ctrl-C; either way the run ends with an END frame.

``asyncstrax live`` subscribes to such a stream, runs the reference TPC chain on it (records,
peaks, peak_basics, events, event_basics) as data arrives, saves everything (raw_records
included) in a FileStore, and prints a live line every ``--interval`` seconds::

    live run0: 41.2 MB raw (10.1 MB/s), data t=4.10 s, lag 0.21 s, 183 events

(``lag``: how far the processed events trail the received raw data, in detector time). It stops
at the end of the run, or on Ctrl-C: the subscription ends at a chunk boundary and what arrived
is processed and saved completely (a second Ctrl-C aborts; unfinished data is then marked
incomplete). With ``--policy drop`` (a monitor that skips chunks when behind) nothing is saved
unless ``--save-dropping`` asks for it; such data has its own lineage (``subscriber_plugin``).
Both use uvloop when installed.

    asyncstrax digitizer --rate 10 --seconds 30 --port 5555
    asyncstrax live --address tcp://127.0.0.1:5555 --storage ./strax_data
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any

from asyncstrax.cli import int_at_least, non_negative_number, port_number, positive_number

__all__ = ["add_digitizer_arguments", "run_digitizer", "add_live_arguments", "run_live",
           "serve_digitizer", "process_live"]

DEFAULT_PORT = 5555
TOKEN_ENV = "ASYNCSTRAX_STREAM_TOKEN"
#: after Ctrl-C, seconds the digitizer's subscribers get to take the END frame
STOP_GRACE_SECONDS = 2.0


def _runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        return asyncio.Runner()


def _run_with_sigint(main: Any, on_sigint: Any) -> int:
    from asyncstrax.errors import AsyncstraxError

    """Run ``main(stop_event)``; the first Ctrl-C sets the event (and calls ``on_sigint``), the
    second cancels ``main``."""
    with _runner() as runner:
        loop = runner.get_loop()
        box: dict[str, Any] = {}

        async def wrapper() -> int:
            stop = asyncio.Event()
            task = asyncio.current_task()
            presses = [0]

            def handler() -> None:
                presses[0] += 1
                if presses[0] == 1:
                    print("\nstopping (Ctrl-C again to abort)...", file=sys.stderr, flush=True)
                    stop.set()
                    on_sigint(box)
                else:
                    task.cancel()  # type: ignore[union-attr]

            try:
                loop.add_signal_handler(signal.SIGINT, handler)
                loop.add_signal_handler(signal.SIGTERM, handler)
            # not the main thread: asyncio says RuntimeError, uvloop ValueError
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
                pass
            return await main(stop, box)

        try:
            return int(runner.run(wrapper()) or 0)
        except asyncio.CancelledError:
            print("aborted", file=sys.stderr)
            return 130
        except AsyncstraxError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1


# ---------------------------------------------------------------------- digitizer
#: smallest --chunk-mb: smaller chunks are mostly empty (a record is hundreds of bytes) and
#: the stream would carry tens of thousands of frames per second of detector time
MIN_CHUNK_MB = 0.01


def _chunk_mb(text: str) -> float:
    value = positive_number(text)
    if value < MIN_CHUNK_MB:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_CHUNK_MB:g} (MB per chunk), "
                                         f"got {text}")
    return value


_chunk_mb.__name__ = "chunk size"


def _checked_by(name: str, check: Any) -> Any:
    """An argparse ``type`` that passes the text through ``check(text)``, whose ValueError or
    asyncstrax error becomes a usage error (exit code 2); ``name`` is argparse's word for the
    value in its message."""
    def parse(text: str) -> str:
        from asyncstrax.errors import AsyncstraxError

        try:
            check(text)
        except (ValueError, AsyncstraxError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return text

    parse.__name__ = name
    return parse


def _check_run_id(text: str) -> None:
    from asyncstrax.storage.metadata import check_run_id

    check_run_id(text)


def _check_stream_address(text: str) -> None:
    from asyncstrax.streams.protocol import parse_address

    parse_address(text)


_run_id = _checked_by("run id", _check_run_id)
#: an address ``parse_address`` can read (checked here: a usage error, exit code 2)
_stream_address = _checked_by("stream address", _check_stream_address)


def add_digitizer_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``asyncstrax digitizer``."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1: this host only)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--rate", type=positive_number, default=10.0,
                        help="raw_records data rate [MB/s] (default 10)")
    parser.add_argument("--event-rate", type=non_negative_number, default=None,
                        help="event rate [Hz] instead of --rate (starts faster: no pilot run)")
    parser.add_argument("--seconds", type=non_negative_number, default=10.0,
                        help="detector seconds in the run; 0 = until Ctrl-C (default 10)")
    parser.add_argument("--chunk-mb", type=_chunk_mb, default=2.0,
                        help=f"size of the chunks [MB], at least {MIN_CHUNK_MB:g} (default 2)")
    parser.add_argument("--speed", type=positive_number, default=1.0,
                        help="detector seconds per wall-clock second (default 1: real time)")
    parser.add_argument("--seed", type=int_at_least(0), default=0,
                        help="random seed, 0 or more (default 0)")
    parser.add_argument("--n-channels", type=int_at_least(2), default=248,
                        help="PMT channels, 2 or more (default 248)")
    parser.add_argument("--run-id", type=_run_id, default=None,
                        help="run id, a name without '/' or '-' (default: live_<unix time>)")
    parser.add_argument("--transport", choices=("tcp", "sharedmem"), default="tcp",
                        help="payload transport (sharedmem: for subscribers on this host)")
    parser.add_argument("--compress", action="store_true", help="lz4-compress TCP payloads")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"shared secret subscribers must present (default ${TOKEN_ENV})")
    parser.add_argument("--wait-subscribers", type=int_at_least(0), default=1,
                        help="wait for this many subscribers before the run starts (default 1)")
    parser.add_argument("--buffer-mb", type=positive_number, default=256.0,
                        help="buffer per subscriber [MB] before a lossless one blocks the run "
                             "(default 256)")


async def serve_digitizer(args: argparse.Namespace, stop: asyncio.Event,
                          box: dict | None = None, ready: Any = None) -> int:
    """The digitizer server (``ready(publisher)`` is called once it listens)."""
    from asyncstrax.chunk import Chunk
    from asyncstrax.streams import Publisher
    from asyncstrax.tpc.plugins import make_simulator

    run_id = args.run_id or f"live_{int(time.time())}"
    if args.event_rate is not None:
        sim_config = dict(event_rate_hz=float(args.event_rate), raw_data_rate_mb_s=None,
                          chunk_duration_ns=int(args.chunk_mb / max(args.rate, 1e-3) * 1e9))
    else:
        sim_config = dict(raw_data_rate_mb_s=float(args.rate), chunk_mb=float(args.chunk_mb))
    try:
        sim = await asyncio.to_thread(make_simulator,
                                      dict(seed=args.seed, n_channels=args.n_channels,
                                           **sim_config),
                                      keep_truth=False)  # it may serve for hours
    except ValueError as error:  # e.g. a --rate below what dark counts alone give
        what = ("--event-rate" if args.event_rate is not None
                else f"--rate {args.rate:g} MB/s")
        print(f"asyncstrax digitizer: cannot simulate {what}: {error}", file=sys.stderr,
              flush=True)
        return 2
    pub = Publisher("raw_records", host=args.host, port=args.port, transport=args.transport,
                    compress=args.compress, token=args.token, dtype=sim.dtype,
                    data_kind="raw_records", run_id=run_id,
                    buffer_bytes=int(args.buffer_mb * 1024**2),
                    # the simulator makes a new array per chunk and nothing here modifies it
                    copy=False)
    async with pub:
        rate = (f"{args.event_rate:g} events/s" if args.event_rate is not None
                else f"{args.rate:g} MB/s")
        print(f"digitizer: run {run_id}, raw_records at {rate}, serving "
              f"{pub.address} ({args.transport})", flush=True)
        if ready is not None:
            ready(pub)
        if args.wait_subscribers > 0:
            print(f"waiting for {args.wait_subscribers} subscriber(s)...", flush=True)
            waiter = asyncio.ensure_future(pub.wait_for_subscribers(args.wait_subscribers))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for t in (waiter, stopper):
                t.cancel()
        duration = int(args.seconds * 1e9) if args.seconds > 0 else None
        chunks = sim.iter_chunks(duration_ns=duration)
        t_wall0 = time.monotonic()
        t_data0 = None
        n = nbytes = 0
        while not stop.is_set():
            item = await asyncio.to_thread(next, chunks, None)
            if item is None:
                break
            start, end, data = item
            if t_data0 is None:
                t_data0 = start
            delay = t_wall0 + (end - t_data0) / 1e9 / args.speed - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)  # pacing, or Ctrl-C
                    break
                except asyncio.TimeoutError:
                    pass
            chunk = Chunk(data_type="raw_records", data_kind="raw_records", dtype=sim.dtype,
                          run_id=run_id, start=start, end=end, data=data)
            # a stalled lossless subscriber must not make Ctrl-C useless
            if not await _unless_stopped(pub.publish(chunk), stop):
                break
            n += 1
            nbytes += data.nbytes
        ending = asyncio.ensure_future(pub.end())
        if not await _unless_stopped(asyncio.shield(ending), stop):
            # Ctrl-C while subscribers take the rest of the run: a short grace for the END
            # frames, then leaving the block disconnects whoever has not taken theirs
            await asyncio.wait({ending}, timeout=STOP_GRACE_SECONDS)
            ending.cancel()
        print(f"digitizer: end of run {run_id} after {n} chunks, {nbytes / 1e6:.1f} MB"
              + (" (stopped)" if stop.is_set() else ""), flush=True)
    s = pub.statistics()
    for sub in s.subscriptions:
        extra = f", dropped {sub.dropped_chunks} chunks" if sub.dropped_chunks else ""
        print(f"  subscriber {sub.peer} ({sub.policy}, {sub.transport}): sent {sub.sent_chunks} "
              f"chunks, buffer max {sub.max_buffered_bytes / 1e6:.1f} MB{extra}", flush=True)
    return 0


async def _unless_stopped(aw: Any, stop: asyncio.Event) -> bool:
    """Await ``aw`` unless ``stop`` is set first (then it is cancelled): whether it finished."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():  # we were cancelled ourselves
            raise
        return False
    return True


def run_digitizer(args: argparse.Namespace) -> int:
    """``asyncstrax digitizer``: serve simulated raw_records until done or Ctrl-C."""
    return _run_with_sigint(lambda stop, box: serve_digitizer(args, stop, box), lambda box: None)


# ---------------------------------------------------------------------- live
def live_chain_plugins(source: type) -> list[type]:
    """The TPC chain as ``asyncstrax live`` runs it, raw_records from ``source``: every plugin
    saves its output chunk by chunk as it is made (no merging to a target size first), so what
    is saved trails the detector by a chunk, not by a whole run. Same class names and versions:
    the lineage, and so the stored data's key, is unchanged."""
    from asyncstrax.tpc.plugins import TPC_PLUGINS, RawRecords

    return [_saved_as_made(p) for p in TPC_PLUGINS if p is not RawRecords] + [source]


def _saved_as_made(plugin_class: type) -> type:
    """The same plugin, its outputs saved chunk by chunk (``rechunk_on_save = False``)."""
    return type(plugin_class.__name__, (plugin_class,),
                {"rechunk_on_save": False, "__module__": plugin_class.__module__,
                 "__doc__": plugin_class.__doc__})



def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``asyncstrax live``."""
    parser.add_argument("--address", type=_stream_address,
                        default=f"tcp://127.0.0.1:{DEFAULT_PORT}",
                        help=f"stream to subscribe to (default tcp://127.0.0.1:{DEFAULT_PORT})")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"the stream's shared secret (default ${TOKEN_ENV})")
    parser.add_argument("--storage", default="./strax_data",
                        help="FileStore folder for the results (default ./strax_data)")
    parser.add_argument("--no-storage", action="store_true", help="do not save anything")
    parser.add_argument("--target", default="event_basics",
                        help="data type to make (default event_basics)")
    parser.add_argument("--policy", choices=("block", "drop"), default="block",
                        help="block: lossless, the digitizer waits for us; drop: skip chunks "
                             "when behind (monitoring)")
    parser.add_argument("--save-dropping", action="store_true",
                        help="with --policy drop, save anyway (data with holes, under a "
                             "lineage of its own); by default nothing is saved then")
    parser.add_argument("--no-sharedmem", action="store_true",
                        help="take the bytes over TCP even from a shared-memory digitizer")
    parser.add_argument("--n-channels", type=int_at_least(2), default=248,
                        help="PMT channels, 2 or more (default 248)")
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1,
                        help="worker threads for parallel plugins (default: CPU count)")
    parser.add_argument("--interval", type=positive_number, default=1.0,
                        help="seconds between live lines, more than 0 (default 1)")
    parser.add_argument("--wait", action="store_true",
                        help="if the stream is not up yet, keep trying (until Ctrl-C)")


async def process_live(args: argparse.Namespace, stop: asyncio.Event, box: dict) -> int:
    """Subscribe, process the TPC chain and save as data arrives, until the run ends or
    ``stop`` is set (Ctrl-C); returns the exit code."""
    from asyncstrax import Context
    from asyncstrax.errors import StreamError
    from asyncstrax.streams import Subscriber, stream_info, subscriber_plugin

    # every wait for the peer is raced against Ctrl-C: a silent peer must not make it useless
    while True:
        asking = asyncio.ensure_future(stream_info(
            args.address, token=args.token, data_type="raw_records",
            sharedmem=not args.no_sharedmem))
        try:
            if not await _unless_stopped(asking, stop):
                return 0
            info = asking.result()
            break
        except StreamError as error:
            not_up = "cannot connect" in str(error)
            if not_up and not args.wait:
                raise StreamError(f"{error} (start `asyncstrax digitizer` first, or give "
                                  f"--wait to keep trying until the stream is up)") from None
            if not args.wait or not not_up or stop.is_set():
                raise
            await asyncio.sleep(0.5)  # the digitizer is not up yet: try again until Ctrl-C
    first = None
    if info.dtype is None or info.run_id is None:
        # the publisher learns its dtype and run from its first chunk, which may wait for a
        # data subscriber: become that subscriber now, and hand it to the source plugin
        print(f"live: {args.address} has not started its run yet; waiting for it", flush=True)
        first = Subscriber(args.address, "raw_records", token=args.token, policy=args.policy,
                           sharedmem=not args.no_sharedmem)
        connecting = asyncio.ensure_future(first.connect())
        try:
            started = await _unless_stopped(connecting, stop)
        except BaseException:
            await first.aclose()
            raise
        if not started:
            await first.aclose()
            return 0
        info = connecting.result()
    storage = []
    save = not args.no_storage
    if save and args.policy == "drop" and not getattr(args, "save_dropping", False):
        # dropped chunks become empty time ranges: the data would look complete, with holes
        print("live: --policy drop skips chunks when behind, so nothing is saved "
              "(--save-dropping saves it anyway, under a lineage of its own)",
              file=sys.stderr, flush=True)
        save = False
    if save:
        try:
            from asyncstrax.storage import FileStore
        except ImportError:  # pragma: no cover - storage is part of the package
            print("live: no FileStore available, nothing will be saved", file=sys.stderr)
        else:
            storage = [FileStore(args.storage)]
    assert info.dtype is not None and info.run_id is not None
    source = subscriber_plugin("raw_records", args.address, info.dtype, "raw_records",
                               token=args.token, policy=args.policy,
                               sharedmem=not args.no_sharedmem, subscriber=first)
    plugins = live_chain_plugins(source)
    ctx = Context(storage=storage, register=plugins, config=dict(n_channels=args.n_channels))
    pipeline = ctx.pipeline(info.run_id, args.target, max_workers=args.max_workers)
    box["pipeline"] = pipeline
    if stop.is_set():
        if first is not None:
            await first.aclose()
        return 0
    print(f"live: run {info.run_id} from {args.address} ({info.transport}), making "
          f"{args.target}" + (f", saving to {args.storage}" if storage else ", not saving"),
          flush=True)
    t0 = time.monotonic()
    state: dict[str, Any] = dict(items=0, processed_end=None)

    def line() -> str:
        sub = _subscriber(pipeline)
        s = sub.statistics() if sub is not None else None
        mb = s.bytes / 1e6 if s else 0.0
        wall = max(time.monotonic() - t0, 1e-9)
        first = sub.first_start if sub is not None else None
        raw_end = sub.last_end if sub is not None else None
        t_data = (raw_end - first) / 1e9 if raw_end is not None and first is not None else 0.0
        lag = 0.0
        if raw_end is not None and state["processed_end"] is not None:
            lag = max(0, raw_end - state["processed_end"]) / 1e9
        text = (f"live {info.run_id}: {mb:.1f} MB raw ({mb / wall:.1f} MB/s), data "
                f"t={t_data:.2f} s, lag {lag:.2f} s, {state['items']} {args.target}")
        if s is not None and s.dropped_chunks:
            text += f", dropped {s.dropped_chunks} chunks"
        return text

    async def report() -> None:
        # --interval is > 0 on the command line; a floor for callers passing their own args
        # (0 would print a line per turn of the event loop)
        interval = max(float(args.interval), 0.01)
        while True:
            await asyncio.sleep(interval)
            print(line(), flush=True)

    async def stop_when_asked() -> None:
        await stop.wait()
        while (sub := _subscriber(pipeline)) is None:
            await asyncio.sleep(0.05)
        sub.stop()

    reporter = asyncio.create_task(report())
    stopper = asyncio.create_task(stop_when_asked())
    try:
        async for chunk in pipeline:
            state["items"] += len(chunk)
            state["processed_end"] = chunk.end
    finally:
        reporter.cancel()
        stopper.cancel()
        await pipeline.aclose()
    print(line(), flush=True)
    sub = _subscriber(pipeline)
    how = "stopped by the user" if stop.is_set() else "end of run"
    if sub is not None and sub.statistics().ended_cleanly:
        how = "end of run"
    print(f"live: {how}; {pipeline.summary.wall_seconds:.1f} s"
          + (f", saved in {args.storage}" if storage else ""), flush=True)
    return 0


def _subscriber(pipeline: Any) -> Any:
    for plugin in pipeline.plugins:
        if "raw_records" in plugin.provides:
            return getattr(plugin, "subscriber", None)
    return None


def run_live(args: argparse.Namespace) -> int:
    """``asyncstrax live``: process a live stream until its run ends or Ctrl-C."""
    return _run_with_sigint(lambda stop, box: process_live(args, stop, box), lambda box: None)
