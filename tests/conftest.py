"""Shared fixtures: where the read-only reference corpus lives, and offscreen Qt."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CD7FLOW_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_FCS = REPO / "sample_fcs"


def _need_shared() -> Path:
    if not (SHARED_DATA / "MANIFEST.tsv").is_file():
        pytest.skip(f"reference corpus not found at {SHARED_DATA} (set CD7FLOW_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data; tests using it skip with a reason when it is absent."""
    return _need_shared()


def manifest_rows() -> list[dict[str, str]]:
    """Rows of MANIFEST.tsv (empty list when the corpus is absent)."""
    path = SHARED_DATA / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def manifest_fcs_paths() -> list[str]:
    """Relative paths of every FCS/LMD file listed in the manifest."""
    return [r["path"] for r in manifest_rows() if r.get("fcs_version")]


@pytest.fixture(scope="session")
def sample_fcs_dir() -> Path:
    if not (SAMPLE_FCS / "manifest.csv").is_file():
        pytest.skip("sample_fcs/ demo study not generated")
    return SAMPLE_FCS


@pytest.fixture
def make_window(qtbot, monkeypatch):
    """Factory of shown main windows (offscreen). An error box goes to its window's
    ``errors_shown`` list as (title, text) instead of blocking."""
    QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed (the gui extra)")
    pytest.importorskip("pytestqt", reason="pytest-qt is not installed (the test extra)")
    from gui.app import create_window

    orphans: list[tuple[str, str]] = []

    def record(parent, title, text, *args, **kwargs):
        owner = parent.window() if parent is not None else None
        getattr(owner, "errors_shown", orphans).append((title, text))

    monkeypatch.setattr(QtWidgets.QMessageBox, "critical", staticmethod(record))

    from PySide6 import QtCore

    made = []

    def make():
        w = create_window()
        w.errors_shown = []
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        return w

    yield make
    for w in made:  # no worker thread may outlive its window (queued jobs dropped, running ones finish)
        for pool in w.findChildren(QtCore.QThreadPool):
            pool.clear()
            pool.waitForDone()


@pytest.fixture(autouse=True)
def _automatic_gc_between_tests():
    """A viewer window moves cyclic GC to the UI thread (gui/_qt/main_window.py); the tests that
    follow in the same process, without an event loop to run that timer, get automatic
    collection back."""
    yield
    import gc

    gc.enable()
