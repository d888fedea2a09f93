"""``asyncstrax demo``: runs end to end, prints its tables, writes its plot, reuses storage."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from asyncstrax.cli import main
from asyncstrax.tpc import demo


def _args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(
        ["--seconds", "0.6", "--rate", "10", "--chunk-mb", "2", "--output", str(tmp_path),
         "--no-progress", "--max-workers", "2", *extra]
    )


def test_demo_runs_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["demo", "--seconds", "0.6", "--rate", "10", "--chunk-mb", "2",
                 "--output", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for plugin in ("RawRecords", "Records", "Peaks", "PeakBasics", "Events", "EventBasics"):
        assert plugin in out
    assert "injected events" in out and "S2 area reco/true" in out
    png = tmp_path / "demo.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    stored = {p.name.split("-")[1] for p in (tmp_path / "strax_data").iterdir()}
    assert {"event_basics", "peaks", "truth"} <= stored
    assert "raw_records" not in stored  # reproducible from the options: saved only on request

    # Same options again: loaded, not recomputed, same summary
    assert demo.run(_args(tmp_path, "--no-plot")) == 0
    again = capsys.readouterr().out
    assert "loaded from storage: event_basics" in again
    summary = [line for line in out.splitlines() if "area reco/true" in line]
    assert summary == [line for line in again.splitlines() if "area reco/true" in line]


def test_demo_without_storage_or_plot(tmp_path, capsys):
    assert demo.run(_args(tmp_path, "--no-storage", "--no-plot")) == 0
    out = capsys.readouterr().out
    assert "storage: none" in out
    assert not (tmp_path / "strax_data").exists()
    assert not (tmp_path / "demo.png").exists()
    found = int(next(line for line in out.splitlines() if line.startswith("found")).split()[4])
    injected = int(next(line for line in out.splitlines()
                        if line.startswith("injected")).split()[2])
    assert injected > 5 and found >= 0.9 * injected


def test_reconstruction_summary():
    truth = np.zeros(3, [("s2_time", np.int64), ("s1_area", float), ("s2_area", float)])
    truth["s2_time"] = [150, 450, 900]
    truth["s1_area"] = [10, 20, 30]
    truth["s2_area"] = [1000, 2000, 3000]
    eb = np.zeros(2, [("time", np.int64), ("endtime", np.int64), ("s1_area", np.float32),
                      ("s2_area", np.float32)])
    eb["time"], eb["endtime"] = [100, 400], [200, 500]
    eb["s1_area"], eb["s2_area"] = [11, np.nan], [1000, 2200]
    r = demo.reconstruction_summary(eb, truth)
    assert (r["injected"], r["found"], r["reconstructed"]) == (3, 2, 2)
    assert r["s1_n"] == 1 and r["s1_ratio_median"] == pytest.approx(1.1)
    assert r["s2_ratio_median"] == pytest.approx(1.05)


def test_command_line_says_what_is_wrong(capsys, tmp_path):
    assert main(["bogus"]) == 2
    assert "'bogus' is not a command" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "COMMAND" in capsys.readouterr().out
    code = main(["process", "--storage", str(tmp_path), "--target", "records",
                 "--plugins", "asyncstrax.tpc.plugins:NoSuchClass", "r1"])
    assert code == 2
    assert "NoSuchClass" in capsys.readouterr().err


def test_ls_of_a_path_that_is_no_folder_is_an_error(capsys, tmp_path):
    assert main(["ls", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    assert main(["ls", str(tmp_path / "a_file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["ls", str(tmp_path)]) == 0
