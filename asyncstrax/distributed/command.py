"""``asyncstrax process RUN... --target T --storage PATH --plugins MODULE``: the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import AsyncstraxError, InvalidConfiguration
from .dependencies import _require_distributed
from .runs import process_runs
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
                        help="address of a Dask scheduler (default: start a LocalCluster)")
    parser.add_argument("--n-workers", type=int, default=None,
                        help="workers of the LocalCluster (default: one per core)")
    parser.add_argument("--config", action="append", default=[], metavar="OPTION=VALUE",
                        help="plugin option (value as JSON, else a string); repeatable")
    parser.add_argument("--max-workers", type=int, default=None,
                        help="threads of each run's pipeline (default: the Context's)")
    parser.add_argument("--no-skip", action="store_true",
                        help="do not check for stored runs before submitting")
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
    """``asyncstrax process``: 0 if every run was made or skipped, 1 if any failed."""
    targets = [t.strip() for arg in args.target for t in arg.split(",") if t.strip()]
    context_config = {} if args.max_workers is None else {"max_workers": args.max_workers}
    try:
        spec = ContextSpec.from_plugins(args.plugins, storage=args.storage,
                                        config=_parse_config(args.config), **context_config)
        spec.build()  # fail here, with the plugin or option at fault, before any cluster
    except (AsyncstraxError, ImportError) as error:
        print(f"asyncstrax process: {error}", file=sys.stderr)
        return 2
    progress = False if args.no_progress else None
    try:
        distributed = _require_distributed()
        if args.scheduler:
            try:
                client = distributed.Client(args.scheduler)
            except OSError as error:
                print(f"asyncstrax process: cannot reach the scheduler {args.scheduler}: "
                      f"{error}", file=sys.stderr)
                return 2
            with client:
                reports = process_runs(spec, args.runs, targets, client,
                                       skip_stored=not args.no_skip, progress_bar=progress)
        else:
            reports = process_runs(spec, args.runs, targets, skip_stored=not args.no_skip,
                                   progress_bar=progress, n_workers=args.n_workers)
    except (AsyncstraxError, ImportError) as error:
        print(f"asyncstrax process: {error}", file=sys.stderr)
        return 2
    print(reports.table())
    for r in reports:
        if r.status == "failed" and r.traceback:
            print(f"\n--- {r.run_id} ---\n{r.traceback}", file=sys.stderr)
    return 1 if reports.failed else 0
