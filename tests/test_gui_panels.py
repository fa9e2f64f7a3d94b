"""Offscreen tests of the workstation's sample browser and assay panels in the main window.

References: `cd7flow qc --json`, `cd7flow screen` (screen_file) and the persistence course
computed by the library, on the demo study.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed (the gui extra)")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (the test extra)")

from PySide6 import QtGui  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from cd7flow.assays.screening import RESULT_KEYS, screen_file  # noqa: E402
from cd7flow.cli import app  # noqa: E402

from conftest import SAMPLE_FCS  # noqa: E402
from test_gui import window as gui_window  # noqa: E402,F401 - the same window fixture as the viewer's tests


@pytest.fixture
def window(gui_window):
    """The viewer's window (test_gui's fixture: message boxes recorded, not shown); the
    workstation's queued QC and panel jobs are dropped at the end (the next test opens anew)."""
    yield gui_window
    ws = gui_window.workstation
    for background in (ws.browser.background, ws.persistence.background):
        background.cancel()
    ws.screening.cancel()


@pytest.fixture(scope="module")
def cli_qc(sample_fcs_dir):
    out = CliRunner().invoke(app, ["qc", str(sample_fcs_dir), "--json"])
    assert out.exit_code == 0, out.output
    return {r["file"]: r["status"] for r in json.loads(out.output[out.output.index("["):])}


def _tree_items(tree: QtWidgets.QTreeWidget):
    out = {}
    for i in range(tree.topLevelItemCount()):
        top = tree.topLevelItem(i)
        for j in range(top.childCount()):
            tube = top.child(j)
            out[(top.text(0), tube.text(0).split(" (")[0])] = [tube.child(k) for k in range(tube.childCount())]
    return out


def _icon_colour(item) -> str:
    image = item.icon(2).pixmap(14, 14).toImage()
    return QtGui.QColor(image.pixel(7, 7)).name()


def test_welcome_page_opens_the_demo_study_with_qc_icons(window, cli_qc):
    from gui._qt.browser import STATUS_COLOURS

    ws = window.workstation
    assert ws.browser.stack.currentWidget() is ws.browser.welcome  # no modal prompt: a page with a button
    ws.browser.welcome.demo.click()
    assert ws.browser.stack.currentWidget() is ws.browser.tree
    items = _tree_items(ws.browser.tree)
    counts = {k: len(v) for k, v in items.items()}
    assert sum(counts.values()) == 41
    assert counts[("P01", "car")] == 10 and counts[("P01", "fmo")] == 1 and counts[("P07", "screening")] == 1
    assert [i.text(1) for i in items[("P03", "car")]] == ["0", "4", "7", "10", "14", "21", "28", "60", "90", "180"]
    # the first file is shown at once, the rest opens on demand
    assert window.model.sample.name == "P01_screening_BM.fcs" and len(window.model.samples) == 1
    assert ws.browser.background.wait()
    for group in items.values():
        for item in group:
            name = item.text(0)
            assert item.text(2) == cli_qc[name], name
            assert _icon_colour(item) == QtGui.QColor(STATUS_COLOURS[cli_qc[name]]).name(), name
    clogged = items[("P02", "mrd")][0]
    assert clogged.text(2) == "FAIL" and "time_anomalies" in clogged.toolTip(2)
    # a patient and a tube show the worst status below them
    assert clogged.parent().text(2) == "FAIL" and clogged.parent().parent().text(2) == "FAIL"
    assert items[("P01", "car")][0].parent().parent().text(2) == "PASS"
    assert window.errors_shown == []


def test_screening_panel_follows_the_current_tube(window, qtbot):
    ws = window.workstation
    ws.open_paths([str(SAMPLE_FCS / "manifest.csv")])
    assert ws.screening.wait()
    # P01 has an FMO tube in the study: the panel uses it, as the batch does
    cli = screen_file(SAMPLE_FCS / "P01_screening_BM.fcs", "screening", fmo_path=SAMPLE_FCS / "P01_FMO-CD7_BM.fcs")
    rec = ws.screening.data.record
    for key in RESULT_KEYS:
        assert rec[key] == cli[key], key
    assert ws.screening.title.text().startswith("P01_screening_BM.fcs: POSITIVE")

    p02 = ws.browser._items[str((SAMPLE_FCS / "P02_screening_BM.fcs").resolve())]
    ws.browser.tree.itemActivated.emit(p02, 0)  # what a double-click does
    assert window.model.sample.name == "P02_screening_BM.fcs"
    assert ws.screening.wait()
    cli = screen_file(SAMPLE_FCS / "P02_screening_BM.fcs")
    rec = ws.screening.data.record
    for key in RESULT_KEYS:
        assert rec[key] == cli[key], key
    table = {ws.screening.table.item(i, 0).text(): ws.screening.table.item(i, 1).text()
             for i in range(ws.screening.table.rowCount())}
    assert table["Verdict"] == cli["verdict"].upper() and table["Blasts"].startswith(f"{cli['blasts']:,} ")
    curves = ws.screening.plot.getPlotItem().listDataItems()
    assert len(curves) == 3 and curves[0].name() == f"blasts (n={cli['blasts']})"

    # switching the protocol of the shown tube recomputes with it
    ws.browser.select_file(str((SAMPLE_FCS / "P02_CAR_PB_D007.fcs").resolve()))
    assert ws.browser.protocol.currentData() == "car"  # the protocol shown follows the tube
    ws.browser.select_file(str((SAMPLE_FCS / "P02_screening_BM.fcs").resolve()))
    assert ws.browser.protocol.currentData() == "screening"
    i = ws.browser.protocol.findData("screening_tall")
    ws.browser.protocol.setCurrentIndex(i)
    ws.browser.protocol.activated.emit(i)
    assert ws.screening.wait()
    tall = screen_file(SAMPLE_FCS / "P02_screening_BM.fcs", "screening_tall")
    assert ws.screening.data.record["protocol"] == "screening_tall"
    assert ws.screening.data.record["cd7_pos_pct"] == tall["cd7_pos_pct"]

    # a car tube is no screening tube: the panel says so instead of showing stale numbers
    ws.show_file(str(SAMPLE_FCS / "P02_CAR_PB_D007.fcs"))
    assert ws.screening.data is None and "car tube" in ws.screening.title.text()


def test_persistence_panel_draws_the_patients_course(window):
    from cd7flow.workstation.persistence_panel import patient_course

    ws = window.workstation
    ws.browser.open_paths([str(SAMPLE_FCS / "manifest.csv")])
    top = ws.browser.tree.topLevelItem(0)
    assert top.text(0) == "P01"
    ws.browser.tree.itemActivated.emit(top, 0)
    assert ws.persistence.wait()
    ref = patient_course("P01", manifest=SAMPLE_FCS / "manifest.csv")
    drawn = {name: (x, y) for name, x, y in ws.persistence.curve_data()}
    x, y = drawn["CAR+ T cells/uL (95% CI)"]
    assert list(x) == [c["day"] for c in ref.course]
    assert np.allclose(y, np.maximum([c["car_per_ul"] for c in ref.course], 0.05))
    x7, y7 = drawn["CD3+CD7+ T/uL"]
    assert np.allclose(y7, [c["cd3_cd7pos_per_ul"] for c in ref.course if c["cd3_cd7pos_per_ul"]])
    assert "ANTIGEN ESCAPE" in ws.persistence.title.text()
    table = {ws.persistence.table.item(i, 0).text(): ws.persistence.table.item(i, 1).text()
             for i in range(ws.persistence.table.rowCount())}
    assert table == dict(ref.table_rows())
    lines = [i for i in ws.persistence.plot.getPlotItem().items if type(i).__name__ == "InfiniteLine"]
    assert any(line.angle == 0 and np.isclose(line.value(), np.log10(ref.lloq_per_ul)) for line in lines)
    assert sorted(line.value() for line in lines if line.angle == 90) == [90, 180]  # escape: CD7- blasts
    assert ws.persistence.visits.rowCount() == len(ref.samples) == 11
    shown = ws.persistence.course
    ws.show_patient("P01")  # shown again from the cache: no tube is read twice
    assert ws.persistence.background.pending() == 0 and ws.persistence.course is shown


def test_command_line_folder_opens_its_manifest(qtbot, sample_fcs_dir):
    from gui.app import create_window

    w = create_window([str(sample_fcs_dir)])
    qtbot.addWidget(w)
    ws = w.workstation
    assert ws.browser.workspace.manifest == (sample_fcs_dir / "manifest.csv").resolve()
    assert len(ws.browser.workspace.files) == 41 and w.model.sample.name == "P01_screening_BM.fcs"
    assert ws.screening.wait() and ws.screening.data.record["file"] == "P01_screening_BM.fcs"
    for background in (ws.browser.background, ws.persistence.background):
        background.cancel()


def test_dragging_the_blast_gate_in_the_viewer_updates_the_screening_panel(window):
    """The protocol's gates go into the viewer (as Auto-gate does); an edit there moves the panel's
    numbers to screening_record on the edited tree, flagged as manually adjusted; undo restores them."""
    from cd7flow.assays.protocol_gating import run_protocol_gates
    from cd7flow.assays.screening import screening_record
    from cd7flow.io.fcs_read import read_fcs
    from cd7flow.protocol import load_protocol
    from gating.gates import PolygonGate

    ws, model = window.workstation, window.model
    ws.open_paths([str(SAMPLE_FCS / "P02_screening_BM.fcs")])
    assert ws.screening.wait()
    before = ws.screening.data.record
    gated = ws.screening.gated
    model.set_tree(gated.tree, automated=True, source="screening 1.5.0", transforms=gated.source.transforms)
    assert ws.screening.wait()
    assert ws.screening.data.record["blasts"] == before["blasts"] and not ws.screening.data.record["manually_adjusted"]

    blast_path = gated.locations["blasts"]
    old = model.gate_at(blast_path)
    centre = old.vertices.mean(axis=0)
    model.edit_gate(blast_path, vertices=centre + 0.6 * (old.vertices - centre))
    assert model.is_manually_adjusted(blast_path)
    assert ws.screening.wait()
    rec = ws.screening.data.record

    protocol = load_protocol("screening")
    fresh = run_protocol_gates(read_fcs(SAMPLE_FCS / "P02_screening_BM.fcs"), protocol)
    fresh.tree.find(blast_path).gate = PolygonGate(old.id, old.dimensions, centre + 0.6 * (old.vertices - centre))
    fresh.invalidate()
    independent = screening_record(fresh, protocol)
    assert rec["blasts"] == independent["blasts"] < before["blasts"]
    for key in RESULT_KEYS:
        assert rec[key] == independent[key], key
    assert rec["manually_adjusted"] is True and rec["adjusted_gates"] == ["/" + "/".join(blast_path)]
    assert "manually adjusted" in ws.screening.title.text()
    curves = ws.screening.plot.getPlotItem().listDataItems()
    assert curves[0].name() == f"blasts (n={rec['blasts']})"

    model.undo()
    assert ws.screening.wait()
    again = ws.screening.data.record
    assert again["blasts"] == before["blasts"] and again["cd7_pos_pct"] == before["cd7_pos_pct"]
    assert again["manually_adjusted"] is False


def test_edits_during_a_recomputation_fold_into_one_more_run(window):
    """Dragging emits many changes: while one recomputation runs the others become one more run,
    and what is shown at the end is the last state of the gates."""
    ws, model = window.workstation, window.model
    ws.open_paths([str(SAMPLE_FCS / "P05_screening_BM.fcs")])
    assert ws.screening.wait()
    gated = ws.screening.gated
    model.set_tree(gated.tree, automated=True, source="screening", transforms=gated.source.transforms)
    assert ws.screening.wait()
    blast_path = gated.locations["blasts"]
    old = model.gate_at(blast_path)
    centre = old.vertices.mean(axis=0)
    runs = []
    ws.screening.sigComputed.connect(lambda data: runs.append(data.record["blasts"]))
    for factor in (0.95, 0.9, 0.85, 0.8, 0.75, 0.7):  # six drag steps without waiting
        model.edit_gate(blast_path, vertices=centre + factor * (old.vertices - centre))
    assert ws.screening.wait()
    assert 1 <= len(runs) <= 3
    from cd7flow.assays.screening import screening_record
    from cd7flow.workstation.screening_panel import with_tree

    fresh = with_tree(gated, model.tree())
    assert runs[-1] == screening_record(fresh, gated.protocol)["blasts"] == ws.screening.data.record["blasts"]
    assert ws.screening.data.record["manually_adjusted"]


def test_a_file_opened_in_the_viewer_joins_the_workspace(window):
    """File > Open (or a file on the command line) reads the file once; the browser files it under
    the patient and tube its keywords name, with its QC, and the screening panel follows."""
    ws = window.workstation
    assert ws.open_paths([str(SAMPLE_FCS / "P04_screening_BM.fcs"), str(SAMPLE_FCS / "P03_CAR_PB_D010.fcs")]) == 2
    meta = ws.browser.workspace.meta(SAMPLE_FCS / "P04_screening_BM.fcs")
    assert (meta.patient, meta.tube, meta.source) == ("P04", "screening", "keywords")
    items = _tree_items(ws.browser.tree)
    assert [i.text(0) for i in items[("P03", "car")]] == ["P03_CAR_PB_D010.fcs"]
    assert [i.text(1) for i in items[("P03", "car")]] == ["10"]  # study day from TUBE NAME
    ws.show_file(str(SAMPLE_FCS / "P04_screening_BM.fcs"))
    assert ws.screening.wait() and ws.browser.background.wait()
    cli = screen_file(SAMPLE_FCS / "P04_screening_BM.fcs")
    assert ws.screening.data.record["cd7_pos_pct"] == cli["cd7_pos_pct"]
    assert ws.screening.data.record["verdict"] == cli["verdict"]
    assert [ws.browser.qc_status(f.path) for f in ws.browser.workspace.files] == ["PASS", "PASS"]
    assert len(window.model.samples) == 2  # nothing read twice into the viewer
