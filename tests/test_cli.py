"""The top-level CLI: --version, summary over folders, and clean errors for user mistakes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

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
