"""The ``asyncstrax`` command line: one subcommand per job, each in a module of its own.

Each subcommand names a module that provides ``add_arguments(parser)`` and ``run(args) -> int``;
the module is imported only when its subcommand runs, so ``asyncstrax --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence

__all__ = ["main", "positive_number", "non_negative_number", "int_at_least", "port_number"]

DESCRIPTION = ("asyncstrax: simulate, process, stream and list detector data "
               "(asyncstrax COMMAND --help for a command's options)")

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("asyncstrax.tpc.demo", "simulate, process and plot a few seconds of a TPC"),
    "ls": ("asyncstrax.storage.listing", "list what a storage folder holds"),
    "digitizer": ("asyncstrax.streams.live", "serve simulated raw_records as a live stream"),
    "live": ("asyncstrax.streams.live", "subscribe to a live stream, process and save it"),
    "process": ("asyncstrax.distributed", "process many runs on a Dask cluster"),
}


# ---------------------------------------------------------------------- argument types
# Each raises argparse.ArgumentTypeError, so a bad value ends as one line naming the argument
# and the rule ("argument --chunk-mb: must be more than 0, got 0"), with exit code 2.
def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def non_negative_number(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


positive_number.__name__ = "positive number"
non_negative_number.__name__ = "non-negative number"


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A whole number >= ``minimum``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    check.__name__ = f"whole number >= {minimum}"
    return check


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {value}")
    return value


port_number.__name__ = "port number"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``asyncstrax COMMAND ...``; returns the exit code (2: a usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="asyncstrax", description=DESCRIPTION)
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
