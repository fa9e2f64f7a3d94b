"""The one atomic writer: permissions, fsync, clean-up on failure and SIGTERM, output folders, clashes."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from cd7flow import outputs
from cd7flow.errors import CD7FlowError, OutputError
from cd7flow.outputs import atomic_output, check_distinct_outputs, ensure_output_dir, write_csv

REPO = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_to(value: int) -> None:
        os.umask(value)

    yield set_to
    os.umask(saved)


def test_output_error_is_a_cd7flow_error_and_still_importable_from_outputs():
    assert outputs.OutputError is OutputError and issubclass(OutputError, CD7FlowError)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_permissions_open_would_give(tmp_path, umask, mask, expected):
    umask(mask)
    with atomic_output(tmp_path / "a.bin") as fh:
        fh.write(b"x")
    write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")  # was 0600: gating.stats' own writer
    assert _mode(tmp_path / "a.bin") == expected and _mode(tmp_path / "t.csv") == expected


def test_file_and_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(outputs.os, "fsync", spy)
    with atomic_output(tmp_path / "a.bin") as fh:
        fh.write(b"x")
    assert synced == ["file", "folder"]


def test_write_csv_bytes(tmp_path):
    table = pd.DataFrame({"sample": ["s é", "t"], "value": [1.5, float("nan")]})
    out = write_csv(table, tmp_path / "t.csv")
    assert out == tmp_path / "t.csv"
    assert out.read_bytes() == "sample,value\ns é,1.5\nt,\n".encode("utf-8")
    assert os.listdir(tmp_path) == ["t.csv"]


@pytest.mark.parametrize("exc", [ValueError("boom"), KeyboardInterrupt()])
def test_a_failure_removes_the_temporary_file_and_keeps_the_old_one(tmp_path, exc):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(type(exc)):
        with atomic_output(target, "w") as fh:
            fh.write("new, half written")
            raise exc
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_missing_folder_is_an_output_error_naming_it(tmp_path):
    with pytest.raises(OutputError, match="nowhere"):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "nowhere" / "t.csv")


_SIGTERM_SCRIPT = """
import sys, time
from cd7flow.outputs import atomic_output, cleanup_on_sigterm
from contextlib import nullcontext
guard = cleanup_on_sigterm() if sys.argv[2] == "guarded" else nullcontext()
with guard:
    with atomic_output(sys.argv[1]) as fh:
        fh.write(b"FCS3.1    half written")
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)
"""


@pytest.mark.parametrize("guarded", [True, False])
def test_sigterm_removes_the_temporary_file_inside_cleanup_on_sigterm(tmp_path, guarded):
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_SCRIPT, str(tmp_path / "x.fcs"),
                             "guarded" if guarded else "bare"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.glob(".x.fcs.*.tmp"))) == 1
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    leftovers = list(tmp_path.glob(".x.fcs.*.tmp"))
    if guarded:
        assert rc == 128 + signal.SIGTERM and leftovers == []
    else:  # Python's default SIGTERM action: what the CLI suffered before
        assert rc == -signal.SIGTERM and len(leftovers) == 1
    assert not (tmp_path / "x.fcs").exists()


def test_the_cli_entry_point_cleans_up_on_sigterm(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        import cd7flow.cli as cli
        from cd7flow.outputs import atomic_output

        def fake_app():
            with atomic_output(sys.argv[1]) as fh:
                fh.write(b"FCS3.1")
                print("writing", flush=True)
                time.sleep(60)

        cli.app = fake_app
        cli.main()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "x.fcs")],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert os.listdir(tmp_path) == []


def test_cleanup_on_sigterm_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGTERM)
    with outputs.cleanup_on_sigterm():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_ensure_output_dir(tmp_path):
    made = ensure_output_dir(tmp_path / "a" / "b")
    assert made.is_dir() and made == tmp_path / "a" / "b"
    assert ensure_output_dir(made) == made  # existing folder: fine
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"file\.png: exists and is not a folder"):
        ensure_output_dir(tmp_path / "file.png")
    with pytest.raises(OutputError, match=r"plots: cannot create the folder: .*file\.png is a file"):
        ensure_output_dir(tmp_path / "file.png" / "deep" / "plots")
    assert (tmp_path / "file.png").read_bytes() == b"x"


def test_ensure_output_dir_that_cannot_be_created(tmp_path, monkeypatch):
    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(OutputError, match="new: cannot create the folder: Permission denied"):
        ensure_output_dir(tmp_path / "new")


def test_check_distinct_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_distinct_outputs({"--stats": Path("a.csv"), "--membership": Path("b.csv"), "--gatingml": None})
    with pytest.raises(OutputError, match="--stats and --membership name the same file"):
        check_distinct_outputs({"--stats": Path("a.csv"), "--membership": tmp_path / "x" / ".." / "a.csv"})


def test_a_long_file_name_still_gets_a_temporary_file(tmp_path):
    target = tmp_path / ("x" * 250 + ".fcs")
    with atomic_output(target) as fh:
        fh.write(b"FCS3.1")
    assert os.listdir(tmp_path) == [target.name]
