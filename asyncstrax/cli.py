"""The ``asyncstrax`` command line: one subcommand per job, each in a module of its own.

Each subcommand names a module that provides ``add_arguments(parser)`` and ``run(args) -> int``;
the module is imported only when its subcommand runs, so ``asyncstrax --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("asyncstrax.tpc.demo", "simulate, process and plot a few seconds of a TPC"),
    "ls": ("asyncstrax.storage.listing", "list what a storage folder holds"),
    "digitizer": ("asyncstrax.streams.live", "serve simulated raw_records as a live stream"),
    "live": ("asyncstrax.streams.live", "subscribe to a live stream, process and save it"),
    "process": ("asyncstrax.distributed", "process many runs on a Dask cluster"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="asyncstrax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in SUBCOMMANDS:
        parser.print_usage(sys.stderr)
        print(f"asyncstrax: {argv[0]!r} is not a command; the commands are "
              f"{', '.join(SUBCOMMANDS)} (asyncstrax --help says what each does)",
              file=sys.stderr)
        return 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        print(f"asyncstrax {name}: not available ({error})", file=sys.stderr)
        return 2
    command = argparse.ArgumentParser(prog=f"asyncstrax {name}", description=help_text)
    add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
    run = getattr(module, f"run_{name}", None) or module.run
    add(command)
    args = command.parse_args(argv[1:])
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
