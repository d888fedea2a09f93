"""The command line's user errors: one line naming the argument and the rule, exit code 2, no
traceback (and never a command that starts and then hangs or misreports what it does)."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import pytest

from asyncstrax import cli
from asyncstrax.cli import main


def main_within(argv: list[str], seconds: float = 20.0) -> Any:
    """``main(argv)`` in a thread: its return value, or the exception it raised; fails the test
    instead of hanging if the command does not end in time."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = main(argv)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            box["result"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"asyncstrax {' '.join(argv)} did not end"
    return box["result"]


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# ---------------------------------------------------------------------- refused by argparse
BAD_VALUES = [
    # (command line, argument named, rule said)
    (["demo", "--chunk-mb", "0"], "--chunk-mb", "must be more than 0, got 0"),
    (["demo", "--chunk-mb", "abc"], "--chunk-mb", "must be a number, got 'abc'"),
    (["demo", "--seconds", "nan"], "--seconds", "must be a finite number"),
    (["demo", "--seed", "-1"], "--seed", "must be 0 or more, got -1"),
    (["digitizer", "--chunk-mb", "0"], "--chunk-mb", "must be more than 0, got 0"),
    (["digitizer", "--rate", "-5"], "--rate", "must be more than 0, got -5"),
    (["digitizer", "--rate", "0"], "--rate", "must be more than 0, got 0"),
    (["digitizer", "--speed", "0"], "--speed", "must be more than 0, got 0"),
    (["digitizer", "--speed", "-1"], "--speed", "must be more than 0, got -1"),
    (["digitizer", "--port", "99999"], "--port", "from 0 to 65535, got 99999"),
    (["digitizer", "--port", "-1"], "--port", "from 0 to 65535, got -1"),
    (["digitizer", "--n-channels", "0"], "--n-channels", "must be 2 or more, got 0"),
    (["digitizer", "--event-rate", "-3"], "--event-rate", "must be 0 or more, got -3"),
    (["digitizer", "--buffer-mb", "-1"], "--buffer-mb", "must be more than 0, got -1"),
    (["digitizer", "--seed", "-1"], "--seed", "must be 0 or more, got -1"),
    (["digitizer", "--seconds", "-1"], "--seconds", "must be 0 or more, got -1"),
    (["digitizer", "--chunk-mb", "0.00001"], "--chunk-mb", "must be at least 0.01"),
    (["digitizer", "--run-id", "../escaped_run"], "--run-id", "contains a path separator"),
    (["digitizer", "--run-id", "a\\b"], "--run-id", "contains a path separator"),
    (["digitizer", "--run-id", "run-1"], "--run-id", "contains '-'"),
    (["live", "--interval", "0"], "--interval", "must be more than 0, got 0"),
    (["live", "--n-channels", "1"], "--n-channels", "must be 2 or more, got 1"),
    (["live", "--address", "garbage"], "--address", "is not 'tcp://host:port'"),
]


@pytest.mark.parametrize("argv, argument, rule", BAD_VALUES,
                         ids=[" ".join(a) for a, _, _ in BAD_VALUES])
def test_bad_values_are_refused_before_anything_runs(argv, argument, rule, capsys, monkeypatch):
    import asyncstrax.streams.live as live
    import asyncstrax.tpc.demo as demo

    def must_not_run(args: Any) -> int:
        raise AssertionError(f"asyncstrax {' '.join(argv)} was accepted: {args}")

    for module, name in ((demo, "run"), (live, "run_digitizer"), (live, "run_live")):
        monkeypatch.setattr(module, name, must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert f"error: argument {argument}: " in last and rule in last, err


def test_argument_types_have_names_argparse_can_print():
    # argparse says "invalid <__name__> value: ..." if a type raises a plain ValueError
    assert cli.positive_number.__name__ == "positive number"
    assert cli.non_negative_number.__name__ == "non-negative number"
    assert cli.port_number.__name__ == "port number"
    assert cli.int_at_least(2).__name__ == "whole number >= 2"
    assert cli.positive_number("0.5") == 0.5 and cli.port_number("0") == 0


# ---------------------------------------------------------------------- refused when running
def test_demo_output_that_cannot_be_a_folder(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    common = ["--seconds", "0.2", "--no-progress", "--no-plot"]
    assert main_within(["demo", "--output", str(afile), *common]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--output" in line and "a file of that name exists" in line
    # a folder under a regular file: NotADirectoryError (like /proc/nope: FileNotFoundError)
    assert main_within(["demo", "--output", str(afile / "sub"), *common]) == 2
    assert "cannot make the --output folder" in one_line(capsys.readouterr().err)
    assert main_within(["demo", "--output", str(tmp_path / "out"), "--storage", str(afile),
                        *common]) == 2
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)


def test_demo_rate_below_the_dark_counts(tmp_path, capsys):
    code = main_within(["demo", "--rate", "0.01", "--seconds", "0.2", "--no-progress",
                        "--no-plot", "--no-storage", "--output", str(tmp_path)])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "--rate 0.01" in line and "Dark counts alone" in line


def test_digitizer_rate_below_the_dark_counts(capsys):
    code = main_within(["digitizer", "--rate", "0.01", "--seconds", "0.2", "--port", "0",
                        "--wait-subscribers", "0"])
    assert code == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert "--rate 0.01" in line and "Dark counts alone" in line
    assert "serving" not in captured.out  # it says so before it serves anything


def test_live_without_a_digitizer_says_how_to_start_one(capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main_within(["live", "--address", f"tcp://127.0.0.1:{port}", "--no-storage"])
    assert code == 1
    line = one_line(capsys.readouterr().err)
    assert "cannot connect" in line and "--wait" in line and "asyncstrax digitizer" in line


def test_process_config_without_equals_is_a_usage_error(tmp_path, capsys):
    code = main_within(["process", "r1", "--storage", str(tmp_path), "--target", "records",
                        "--plugins", "asyncstrax.tpc.plugins", "--config", "noequals"])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert line == "asyncstrax process: --config wants OPTION=VALUE, got 'noequals'"


# ---------------------------------------------------------------------- what is said
def test_top_level_help_is_plain_text(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and "asyncstrax" in out and "COMMAND" in out


def test_ls_of_a_run_not_stored_names_the_runs_that_are(tmp_path, capsys):
    for run_id in ("run_b", "run_a"):
        os.makedirs(tmp_path / f"{run_id}-records-abcdefghij")
    assert main(["ls", str(tmp_path), "--run", "nope"]) == 0
    out = capsys.readouterr().out
    assert "nothing stored in" not in out.split("run nope")[0]
    assert out.startswith(f"run nope has nothing stored in {tmp_path}")
    assert "run_a, run_b" in out
    assert main(["ls", str(tmp_path / "run_a-records-abcdefghij")]) == 0
    assert capsys.readouterr().out.startswith("nothing stored in")
