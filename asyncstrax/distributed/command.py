"""``asyncstrax process RUN... --target T --storage PATH --plugins MODULE``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from ..cli import int_at_least, positive_number
from ..errors import AsyncstraxError, InvalidConfiguration
from .dependencies import _require_distributed
from .runs import _Batch, _check_n_workers, _run_blocking
from .spec import ContextSpec

__all__ = ["add_process_arguments", "run_process"]


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``asyncstrax process``."""
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run ids to process")
    parser.add_argument("--target", "-t", action="append", required=True,
                        help="data type to make and save (repeat or comma-separate for more)")
    parser.add_argument("--storage", required=True, metavar="PATH",
                        help="storage folder every worker can read and write")
    parser.add_argument("--plugins", action="append", required=True,
                        metavar="MODULE[:Class,...]",
                        help="plugins: a module (its PLUGINS list or register_all) or "
                             "module:Class,Class; e.g. asyncstrax.tpc.plugins")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="address of a Dask scheduler, e.g. tcp://host:8786 (default: "
                             "start a LocalCluster)")
    parser.add_argument("--connect-timeout", type=positive_number, default=30.0,
                        metavar="SECONDS",
                        help="give up if no Dask scheduler answers at --scheduler within "
                             "this time (default: 30)")
    parser.add_argument("--n-workers", type=int_at_least(0), default=None,
                        help="workers of the LocalCluster (default, or 0: one per core)")
    parser.add_argument("--config", action="append", default=[], metavar="OPTION=VALUE",
                        help="plugin option (value as JSON, else a string); repeatable")
    parser.add_argument("--max-workers", type=int, default=None,
                        help="threads of each run's pipeline (default: the Context's)")
    parser.add_argument("--retries", type=int_at_least(0), default=0, metavar="N",
                        help="try a failing run up to N more times (default: 0)")
    parser.add_argument("--no-skip", action="store_true",
                        help="submit runs already stored too: a worker reads their data back "
                             "(it is never remade nor rewritten) and they are reported skipped")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_config(items: Sequence[str]) -> dict[str, Any]:
    config = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            # a usage error: run_process prints it in one line, exit code 2
            raise InvalidConfiguration(f"--config wants OPTION=VALUE, got {item!r}")
        try:
            config[name.strip()] = json.loads(text)
        except ValueError:
            config[name.strip()] = text
    return config


def run_process(args: argparse.Namespace) -> int:
    """``asyncstrax process``: 0 if every run was made or skipped, 1 if any failed, 2 for a
    usage error (plugins, options, targets, scheduler address) found before any run."""
    targets = [t.strip() for arg in args.target for t in arg.split(",") if t.strip()]
    context_config = {} if args.max_workers is None else {"max_workers": args.max_workers}
    progress = False if args.no_progress else None
    try:
        _check_n_workers(args.n_workers)
        spec = ContextSpec.from_plugins(args.plugins, storage=args.storage,
                                        config=_parse_config(args.config), **context_config)
        spec.build()  # fail here, with the plugin or option at fault, before any cluster
        # targets, their kinds, stored runs: all checked before connecting to a scheduler
        batch = _Batch(spec, args.runs, targets, skip_stored=not args.no_skip,
                       progress_bar=False, retries=getattr(args, "retries", 0))
    except (AsyncstraxError, ImportError, ValueError) as error:
        print(f"asyncstrax process: {error}", file=sys.stderr)
        return 2
    try:
        distributed = _require_distributed()
        if not batch.todo:  # nothing to submit: no cluster needed
            reports = _run_blocking(batch, None, None, None)
        elif args.scheduler:
            problem = _probe_scheduler(args.scheduler, args.connect_timeout)
            if problem:
                print(f"asyncstrax process: {problem}", file=sys.stderr)
                return 2
            try:
                client = distributed.Client(args.scheduler, timeout=args.connect_timeout)
            except (OSError, ValueError, TypeError) as error:
                print(f"asyncstrax process: cannot reach the scheduler {args.scheduler}: "
                      f"{error}", file=sys.stderr)
                return 2
            with client:
                batch.bar = _bar(batch, progress)
                reports = _run_blocking(batch, client, None, None)
        else:
            batch.bar = _bar(batch, progress)
            reports = _run_blocking(batch, None, args.n_workers, None)
    except (AsyncstraxError, ImportError) as error:
        print(f"asyncstrax process: {error}", file=sys.stderr)
        return 2
    finally:
        batch.close()
    print(reports.table())
    for r in reports:
        if r.status == "failed" and r.traceback:
            print(f"\n--- {r.run_id} ---\n{r.traceback}", file=sys.stderr)
    return 1 if reports.failed else 0


def _bar(batch: _Batch, progress: bool | None) -> Any:
    from .runs import _progress

    return _progress(progress, len(batch.run_ids), len(batch.reports), batch.targets)


def _probe_scheduler(address: str, seconds: float) -> str | None:
    """None if a Dask scheduler answers at ``address`` within ``seconds``, else what is wrong.

    ``distributed.Client(address, timeout=...)`` waits forever on a port that accepts
    connections but does not speak Dask (an HTTP server, the dashboard's port): its timeout
    covers connecting, not the handshake. Here one deadline covers it all."""

    async def identity() -> Any:
        from distributed.core import rpc

        remote = rpc(address, timeout=seconds)
        try:
            return await remote.identity()
        finally:
            await remote.close_rpc()

    try:
        info = asyncio.run(asyncio.wait_for(identity(), seconds))
    except (ValueError, TypeError) as error:
        return f"invalid scheduler address {address!r}: {error}"
    except (asyncio.TimeoutError, TimeoutError):
        return (f"no Dask scheduler answers at {address} (nothing within {seconds:g} s; is it "
                f"the scheduler's address, e.g. tcp://host:8786, not the dashboard's?)")
    except Exception as error:  # noqa: BLE001 - anything else speaking on that port
        return f"no Dask scheduler answers at {address} ({type(error).__name__}: {error})"
    if not isinstance(info, dict) or info.get("type") != "Scheduler":
        what = info.get("type") if isinstance(info, dict) else type(info).__name__
        return f"no Dask scheduler answers at {address} (a {what} does)"
    return None
