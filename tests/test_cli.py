"""The top-level CLI: --version, summary over folders, and clean errors for user mistakes."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cd7flow import __version__
from cd7flow.io.fcs_write import write_fcs


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cd7flow.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_version_and_help():
    out = run_cli("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("summary", "simulate", "gate", "screen"):
        assert command in out.stdout


def test_summary_goes_on_past_a_bad_file(tmp_path: Path):
    rng = np.random.default_rng(1)
    write_fcs(tmp_path / "good.fcs", rng.normal(size=(123, 3)).astype("f4"), channels=["FSC-A", "SSC-A", "FL1-A"])
    (tmp_path / "bad.fcs").write_bytes(b"FCS3.1    garbage")
    (tmp_path / "060909.001").write_bytes((tmp_path / "good.fcs").read_bytes())  # no extension, FCS magic
    (tmp_path / "notes.txt").write_text("FCS File,count\n")  # not FCS: ignored
    out = run_cli("summary", str(tmp_path))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "bad.fcs" in out.stderr and "1 of 3 file(s) could not be read" in out.stderr
    assert out.stdout.count("123") == 2  # both readable copies listed with their event count


def test_summary_of_missing_folder_is_one_clean_line(tmp_path: Path):
    out = run_cli("summary", str(tmp_path / "nowhere"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "no such file or folder" in out.stderr


def test_summary_reads_the_demo_study(sample_fcs_dir: Path):
    out = run_cli("summary", str(sample_fcs_dir))
    assert out.returncode == 0, out.stderr
    n_files = len(list(sample_fcs_dir.glob("*.fcs")))
    assert f"{n_files} FCS file(s)" in out.stdout


def test_usage_errors_are_a_message_not_a_traceback():
    for args in (["summary", "--bogus"], ["nosuchcmd"]):
        out = run_cli(*args)
        assert out.returncode == 2, args
        assert "Traceback" not in out.stderr
        assert "No such" in out.stderr


# ---------------------------------------------------------------- bad input, tried as a user would

def _one_clean_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _small_fcs(path: Path, n: int = 123) -> Path:
    rng = np.random.default_rng(1)
    return write_fcs(path, (rng.normal(size=(n, 3)) * 100 + 500).astype("f4"), channels=["FSC-A", "SSC-A", "FL1-A"])


def test_a_named_missing_file_is_listed_and_the_rest_go_on(tmp_path: Path):
    good = _small_fcs(tmp_path / "good.fcs")
    out = run_cli("summary", str(good), str(tmp_path / "missing.fcs"))
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert "123" in out.stdout and "missing.fcs" in out.stdout and "unreadable" in out.stdout
    assert "missing.fcs: cannot open: No such file" in out.stderr and "1 of 2 file(s) could not be read" in out.stderr


def test_screen_lists_a_named_missing_file_beside_the_good_one(tmp_path: Path, sample_fcs_dir: Path):
    out = run_cli("screen", str(sample_fcs_dir / "P01_screening_BM.fcs"), str(tmp_path / "missing.fcs"), "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    good, missing = json.loads(out.stdout)
    assert good["verdict"] == "positive" and not good.get("error")
    assert missing["verdict"] == "not_evaluable" and "No such file" in missing["error"]


def test_folder_scans_skip_hidden_files_and_partial_writes(tmp_path: Path):
    good = _small_fcs(tmp_path / "good.fcs")
    # what a killed atomic write leaves: hidden, named .NAME.XXXXXXXX.tmp, FCS magic inside
    (tmp_path / ".good.fcs.1a2b3c4d.tmp").write_bytes(good.read_bytes()[:300])
    (tmp_path / "._good.fcs").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / ".cache").mkdir()
    _small_fcs(tmp_path / ".cache" / "copy.fcs")
    out = run_cli("summary", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "1 FCS file(s)" in out.stdout and out.stderr == ""


def test_broken_links_are_named_and_the_rest_goes_on(tmp_path: Path):
    _small_fcs(tmp_path / "good.fcs")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "gone.fcs").symlink_to(tmp_path / "deleted.fcs")
    out = run_cli("summary", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "1 FCS file(s)" in out.stdout
    line = _one_clean_line(out.stderr)
    assert line.startswith("warning: skipped") and "gone.fcs: broken link" in line


def test_unreadable_subfolders_are_named_and_the_rest_goes_on(tmp_path: Path, monkeypatch, capsys):
    from cd7flow import cli

    good = _small_fcs(tmp_path / "good.fcs")
    locked = tmp_path / "locked"
    locked.mkdir()
    _small_fcs(locked / "hidden_from_us.fcs")
    real_scandir = os.scandir

    def scandir(path="."):  # what a chmod 000 folder does to a non-root user
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert cli.find_fcs_files([tmp_path]) == [good]
    err = capsys.readouterr().err
    assert _one_clean_line(err) == f"warning: skipped {locked}: cannot read folder (Permission denied)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_subfolder_through_the_cli(tmp_path: Path):
    _small_fcs(tmp_path / "good.fcs")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        out = run_cli("summary", str(tmp_path))
    finally:
        locked.chmod(0o755)
    assert out.returncode == 0 and "1 FCS file(s)" in out.stdout
    assert "locked: cannot read folder" in _one_clean_line(out.stderr)


GATES = """<?xml version="1.0" encoding="UTF-8"?>
<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"
 xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">
<gating:RectangleGate gating:id="R"><gating:dimension gating:min="500">
 <data-type:fcs-dimension data-type:name="FSC-A"/></gating:dimension></gating:RectangleGate>
{extra}
</gating:Gating-ML>
"""
CYCLE = """
<gating:BooleanGate gating:id="A"><gating:and><gating:gateReference gating:ref="R"/>
 <gating:gateReference gating:ref="B"/></gating:and></gating:BooleanGate>
<gating:BooleanGate gating:id="B"><gating:and><gating:gateReference gating:ref="R"/>
 <gating:gateReference gating:ref="A"/></gating:and></gating:BooleanGate>
"""


def test_stats_and_membership_to_one_path_is_a_usage_error(tmp_path: Path):
    fcs = _small_fcs(tmp_path / "s.fcs")
    gates = tmp_path / "g.xml"
    gates.write_text(GATES.format(extra=""))
    out = run_cli("gate", str(fcs), "--gates", str(gates), "--stats", str(tmp_path / "o.csv"),
                  "--membership", str(tmp_path / "sub" / ".." / "o.csv"))
    assert out.returncode == 2
    assert "--stats and --membership name the same file" in _one_clean_line(out.stderr)
    assert not (tmp_path / "o.csv").exists()
    ok = run_cli("gate", str(fcs), "--gates", str(gates), "--stats", str(tmp_path / "st.csv"),
                 "--membership", str(tmp_path / "m.csv"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "st.csv").read_text().startswith("sample,population,statistic,channel,value\n")
    assert stat.S_IMODE((tmp_path / "st.csv").stat().st_mode) == stat.S_IMODE((tmp_path / "m.csv").stat().st_mode)


def test_a_gating_error_from_gating_itself_is_one_line(tmp_path: Path):
    # gating.errors.GatingError cannot subclass CD7FlowError; main() maps it to exit 2 all the same
    fcs = _small_fcs(tmp_path / "s.fcs")
    gates = tmp_path / "cyclic.xml"
    gates.write_text(GATES.format(extra=CYCLE))
    out = run_cli("gate", str(fcs), "--gates", str(gates))
    assert out.returncode == 2
    assert "boolean gates depend on themselves" in _one_clean_line(out.stderr)


def test_consoles_are_made_when_needed_not_at_import():
    from rich.console import Console

    from cd7flow import cli

    assert not [name for name, value in vars(cli).items() if isinstance(value, Console)]
