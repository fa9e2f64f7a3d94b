"""Offscreen tests of the desktop viewer (gui/) and its Qt-free model (cd7flow/viewer/).

References are independent of the code under test: event values come back through
flowio, transforms through flowutils, gate membership through plain numpy or
matplotlib's Path, compliance counts from the Gating-ML truth files.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed (the gui extra)")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (the test extra)")

from cd7flow.errors import CD7FlowError  # noqa: E402
from cd7flow.io.fcs_write import write_fcs  # noqa: E402
from cd7flow.viewer import MAX_DISPLAY_DOTS, ViewerModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHANNELS = ["FSC-A", "SSC-A", "FL1-A", "FL2-A", "Time"]
MARKERS = ["", "", "CD7", "CD3", ""]
SPILL = np.array([[1.0, 0.12], [0.03, 1.0]])  # FL1-A -> FL2-A spills 12%, FL2-A -> FL1-A 3%


def _events(n: int, seed: int = 1) -> np.ndarray:
    """Two scatter clusters with CD7+/- populations; continuous values so no event sits on a gate edge."""
    rng = np.random.default_rng(seed)
    half = n // 2
    fsc = np.concatenate([rng.normal(60e3, 8e3, half), rng.normal(120e3, 15e3, n - half)])
    ssc = np.concatenate([rng.normal(20e3, 4e3, half), rng.normal(80e3, 20e3, n - half)])
    fl1 = np.concatenate([rng.lognormal(8, 0.5, half), rng.normal(200, 150, n - half)])
    fl2 = rng.lognormal(7, 1.0, n)
    time = np.sort(rng.uniform(0, 1000, n))
    return np.column_stack([fsc, ssc, fl1, fl2, time]).astype(np.float32)


@pytest.fixture(scope="module")
def fcs_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gui") / "synthetic_cd7.fcs"
    write_fcs(out, _events(30_000), channels=CHANNELS, markers=MARKERS,
              ranges=[262144] * 5, spillover=(["FL1-A", "FL2-A"], SPILL))
    return out


@pytest.fixture(scope="module")
def raw_events(fcs_file) -> np.ndarray:
    """The file's events as flowio reads them (independent of cd7flow's reader)."""
    import flowio

    fd = flowio.FlowData(str(fcs_file))
    return np.reshape(np.asarray(fd.events, dtype=np.float64), (-1, fd.channel_count))


@pytest.fixture
def window(qtbot, monkeypatch):
    from gui.app import create_window

    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QtWidgets.QMessageBox, "critical",
                        staticmethod(lambda parent, title, text, *a, **k: shown.append((title, text))))
    w = create_window()
    w.errors_shown = shown
    w.confirm = lambda *a, **k: True  # delete/clear confirmations answer yes
    w.ask_unsaved = lambda doing: True  # closing at teardown discards the test's gates
    qtbot.addWidget(w)
    w.show()
    return w


def _protocol_w(values: np.ndarray, t: float = 262144, m: float = 4.5) -> float:
    """Logicle W as the protocols estimate it (Parks 2006 eq. 12), recomputed by hand:
    W = (M - log10(T / |r|)) / 2, r = 5th percentile of the negative values; 0.5 with < 1% negatives."""
    v = np.asarray(values, np.float64)
    neg = v[v < 0]
    if neg.size < max(10, 0.01 * v.size):
        return 0.5
    return float(np.clip((m - np.log10(t / abs(np.percentile(neg, 5)))) / 2, 0, m / 2))


def _logicle(x: np.ndarray, t: float, w: float | None = None) -> np.ndarray:
    """flowutils' logicle with the viewer's W (the protocols' estimate from the same values)."""
    import flowutils.transforms as fu

    w = _protocol_w(x, t) if w is None else w
    return fu.logicle(np.asarray(x, np.float64).reshape(-1, 1), [0], t=t, m=4.5, w=w, a=0).ravel()


# ---------------------------------------------------------------- opening and axes
def test_open_sample_lists_it_and_shows_channel_labels(window, fcs_file, raw_events):
    assert window.open_paths([fcs_file]) == 1
    assert window.samples.count() == 1
    assert "30,000 events" in window.samples.item(0).text()
    labels = [window.controls.x_channel.itemText(i) for i in range(window.controls.x_channel.count())]
    assert labels == ["FSC-A", "SSC-A", "FL1-A (CD7)", "FL2-A (CD3)", "Time"]
    m = window.model
    assert (m.x_channel, m.y_channel) == ("FSC-A", "SSC-A")
    assert window.errors_shown == []
    np.testing.assert_array_equal(m.sample.events, raw_events)


def test_axes_resolve_markers_like_the_cli(window, fcs_file):
    window.open_paths([fcs_file])
    m = window.model
    m.set_axes(x="cd7", y="CD3")  # $PnS, case-insensitive, as Sample.channel resolves it
    assert (m.x_channel, m.y_channel) == ("FL1-A", "FL2-A")
    with pytest.raises(CD7FlowError, match="no channel or marker named 'CD45'"):
        m.set_axes(x="CD45")
    assert m.x_channel == "FL1-A"


def test_switching_channels_and_transforms_through_the_widgets(window, fcs_file, raw_events):
    window.open_paths([fcs_file])
    c = window.controls
    c.compensate.setChecked(False)
    c.x_channel.setCurrentIndex(c.x_channel.findData("FL1-A"))
    c.y_channel.setCurrentIndex(c.y_channel.findData("FL2-A"))
    m = window.model
    assert (m.x_channel, m.y_channel) == ("FL1-A", "FL2-A")
    assert "FL1-A (CD7)" in window.plot_view.plot.getPlotItem().getAxis("bottom").labelText
    assert (m.x_transform, m.y_transform) == ("logicle", "logicle")  # fluorescence default
    assert m.axis_transform("x").params()["w"] == pytest.approx(_protocol_w(raw_events[:, 2]), abs=1e-12)
    np.testing.assert_allclose(m.values("x"), _logicle(raw_events[:, 2], 262144), atol=1e-6)
    c.x_transform.setCurrentText("linear")
    assert m.x_transform == "linear"
    np.testing.assert_array_equal(m.values("x"), raw_events[:, 2])
    c.y_transform.setCurrentText("asinh")
    import flowutils.transforms as fu

    ref = fu.asinh(raw_events[:, [3]], [0], t=262144, m=4.5, a=0).ravel()
    np.testing.assert_allclose(m.values("y"), ref, atol=1e-6)
    # dots mode draws the display subset: all 30,000 here (below MAX_DISPLAY_DOTS)
    c.mode.setCurrentText("dots")
    xs, ys = window.plot_view.dots.getData()
    assert len(xs) == min(30_000, MAX_DISPLAY_DOTS)
    np.testing.assert_array_equal(xs, raw_events[:, 2])


def test_display_subset_is_capped_but_counts_use_all_events(monkeypatch):
    import cd7flow.viewer.model as vm
    from cd7flow.sample import CaseInsensitiveDict, Sample

    monkeypatch.setattr(vm, "MAX_DISPLAY_DOTS", 1000)
    ev = _events(5000)
    s = Sample(ev, tuple(CHANNELS), tuple(MARKERS), CaseInsensitiveDict({}), np.full(5, 262144.0))
    m = ViewerModel()
    m.add_sample(s)
    idx = m.display_index()
    assert idx.size == 1000 and np.all(np.diff(idx) > 0)
    m.set_axes(x_transform="linear", y_transform="linear")
    path = m.add_rectangle_gate(50e3, 200e3, 0, 60e3)
    x, y = ev[:, 0].astype(np.float64), ev[:, 1].astype(np.float64)
    assert m.populations()[1].count == int(((x >= 50e3) & (x < 200e3) & (y >= 0) & (y < 60e3)).sum())
    m.select(path)
    h, xr, yr = m.density(bins=64)
    gated = (x >= 50e3) & (x < 200e3) & (y >= 0) & (y < 60e3)
    in_view = (x >= xr[0]) & (x <= xr[1]) & (y >= yr[0]) & (y <= yr[1])
    assert h.sum() == int((gated & in_view).sum()) > 1000  # every gated event in view, not the subset


# ---------------------------------------------------------------- gates
def test_rectangle_gate_count_shown_equals_gating_engine(window, fcs_file, raw_events):
    from cd7flow.io.fcs_read import read_fcs
    from gating.dimensions import Dimension
    from gating.gates import RectangleGate
    from gating.tree import GatingTree
    from cd7flow.datasource import SampleSource

    window.open_paths([fcs_file])
    m = window.model
    m.set_compensated(False)
    m.set_axes(x="FSC-A", y="SSC-A", x_transform="linear", y_transform="linear")
    path = m.add_rectangle_gate(40e3, 90e3, 5e3, 40e3, name="Lymphs")
    shown = int(window.populations.count_text(path))
    # the gating engine on an independently built tree and source
    tree = GatingTree()
    tree.add(RectangleGate("Lymphs", [Dimension("FSC-A"), Dimension("SSC-A")], [40e3, 5e3], [90e3, 40e3]))
    engine = tree.apply(SampleSource(read_fcs(fcs_file))).count("Lymphs")
    x, y = raw_events[:, 0], raw_events[:, 1]
    by_hand = int(((x >= 40e3) & (x < 90e3) & (y >= 5e3) & (y < 40e3)).sum())
    assert shown == engine == by_hand
    assert 10_000 < shown < 20_000
    pct = float(window.populations.items[path].text(2))
    assert pct == pytest.approx(100 * by_hand / 30_000, abs=0.006)

    # a child gate on logicle axes, drawn inside the selected population
    window.populations.setCurrentItem(window.populations.items[path])
    assert m.selected == path
    m.set_axes(x="FL1-A", y="FL2-A", x_transform="logicle", y_transform="logicle")
    child = m.add_rectangle_gate(0.6, 1.0, 0.0, 1.0, name="CD7+")
    assert child == ("Lymphs", "CD7+")
    lx, ly = _logicle(raw_events[:, 2], 262144), _logicle(raw_events[:, 3], 262144)
    inside = (x >= 40e3) & (x < 90e3) & (y >= 5e3) & (y < 40e3)
    ref = int((inside & (lx >= 0.6) & (lx < 1.0) & (ly >= 0.0) & (ly < 1.0)).sum())
    assert int(window.populations.count_text(child)) == ref
    assert float(window.populations.items[child].text(2)) == pytest.approx(100 * ref / by_hand, abs=0.006)

    # selecting the child shows only its events
    m.select(child)
    assert f"({ref:,} events)" in window.plot_view.title.text()
    h, _, _ = m.density()
    assert h.sum() <= ref  # events outside the plot range are not binned
    m.set_plot_mode("dots")
    xs, _ = window.plot_view.dots.getData()
    assert len(xs) == ref


def test_polygon_gate_matches_matplotlib_path(window, fcs_file, raw_events):
    from matplotlib.path import Path as MplPath

    window.open_paths([fcs_file])
    m = window.model
    m.set_axes(x="FSC-A", y="SSC-A", x_transform="linear", y_transform="linear")
    verts = np.array([[30e3, 5e3], [100e3, 2e3], [140e3, 60e3], [70e3, 45e3]])
    path = m.add_polygon_gate(verts)
    ref = int(MplPath(verts).contains_points(raw_events[:, :2]).sum())
    assert int(window.populations.count_text(path)) == ref
    assert path in window.plot_view.outlines and path not in window.plot_view.rois  # drawn, inert
    window.controls.tool_buttons["edit"].setChecked(True)
    assert path in window.plot_view.rois  # the edit tool makes every gate draggable


def test_gate_drawn_with_the_mouse_tools(window, qtbot, fcs_file, raw_events):
    window.open_paths([fcs_file])
    m = window.model
    m.set_axes(x="FSC-A", y="SSC-A", x_transform="linear", y_transform="linear")
    vb = window.plot_view.viewbox
    window.controls.tool_buttons["rectangle"].setChecked(True)
    assert vb.tool == "rectangle"
    vb.sigRectangleDrawn.emit(50e3, 100e3, 10e3, 30e3)
    assert vb.tool is None and not window.controls.tool_buttons["rectangle"].isChecked()
    (gate_path,) = [r.path for r in m.populations() if r.path]
    x, y = raw_events[:, 0], raw_events[:, 1]
    ref = int(((x >= 50e3) & (x < 100e3) & (y >= 10e3) & (y < 30e3)).sum())
    assert int(window.populations.count_text(gate_path)) == ref

    # dragging the ROI edits the gate and the counts follow
    roi = window.plot_view.rois[gate_path]
    roi.setPos((60e3, 10e3))  # emits sigRegionChangeFinished
    ref2 = int(((x >= 60e3) & (x < 110e3) & (y >= 10e3) & (y < 30e3)).sum())
    assert ref2 != ref
    qtbot.waitUntil(lambda: m.populations()[1].count == ref2, timeout=2000)
    assert int(window.populations.count_text(gate_path)) == ref2


def test_histogram_mode_and_range_gate(window, fcs_file, raw_events):
    window.open_paths([fcs_file])
    m = window.model
    m.set_compensated(False)
    m.set_axes(x="FL1-A", x_transform="logicle")
    window.controls.mode.setCurrentText("histogram")
    assert m.plot_mode == "histogram"
    assert window.controls.tool_buttons["range"].isEnabled()
    xs, counts = window.plot_view.hist_curve.getData()
    lx = _logicle(raw_events[:, 2], 262144)
    lo, hi = m.axis_range("x")
    assert counts.sum() == int(((lx >= lo) & (lx <= hi)).sum())
    window.plot_view.viewbox.sigRangeDrawn.emit(0.55, 0.95)
    (row,) = [r for r in m.populations() if r.path]
    assert len(row.gate.dimensions) == 1
    assert row.count == int(((lx >= 0.55) & (lx < 0.95)).sum())
    assert row.path in window.plot_view.rois


def test_remove_gate_removes_children(window, fcs_file):
    window.open_paths([fcs_file])
    m = window.model
    a = m.add_rectangle_gate(0.1, 0.9, 0.1, 0.9, name="A")
    m.select(a)
    m.add_rectangle_gate(0.2, 0.8, 0.2, 0.8, name="B")
    assert set(window.populations.items) == {(), ("A",), ("A", "B")}
    window.populations.setCurrentItem(window.populations.items[a])
    window.populations.remove_selected()
    assert set(window.populations.items) == {()}
    assert m.selected == ()


# ---------------------------------------------------------------- compensation
def test_compensation_toggle_uses_the_files_matrix(window, fcs_file, raw_events):
    window.open_paths([fcs_file])
    m = window.model
    assert window.controls.compensate.isEnabled()
    assert m.compensated and window.controls.compensate.isChecked()  # on by default: the file has a matrix
    m.set_axes(x="FL1-A", y="FL2-A", x_transform="linear", y_transform="linear")
    window.controls.compensate.setChecked(False)
    np.testing.assert_array_equal(m.values("x"), raw_events[:, 2])
    window.controls.compensate.setChecked(True)
    assert m.compensated
    ref = raw_events[:, [2, 3]] @ np.linalg.inv(SPILL)
    np.testing.assert_allclose(m.values("x"), ref[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m.values("y"), ref[:, 1], rtol=1e-6, atol=1e-6)
    stats = {r["channel"]: r for r in m.statistics()}
    assert stats["FL2-A"]["median"] == pytest.approx(np.median(ref[:, 1]), rel=1e-9)
    assert stats["FSC-A"]["median"] == pytest.approx(np.median(raw_events[:, 0]), rel=1e-9)
    assert "comp" in window.plot_view.plot.getPlotItem().getAxis("bottom").labelText


def test_compensation_disabled_without_spillover(window, tmp_path):
    out = tmp_path / "nospill.fcs"
    write_fcs(out, _events(500)[:, :4], channels=CHANNELS[:4], ranges=[262144] * 4)
    window.open_paths([out])
    assert not window.controls.compensate.isEnabled()
    assert not window.model.can_compensate


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("content", [b"", b"FCS3.1    not really an fcs file" + b"\0" * 40, b"hello world\n" * 20])
def test_bad_file_shows_a_message_naming_it(window, tmp_path, content):
    bad = tmp_path / "broken_tube.fcs"
    bad.write_bytes(content)
    assert window.open_paths([bad]) == 0
    assert len(window.errors_shown) == 1
    title, text = window.errors_shown[0]
    assert "broken_tube.fcs" in text
    assert window.model.samples == []
    assert window.samples.count() == 0


def test_missing_file_and_good_file_together(window, tmp_path, fcs_file):
    assert window.open_paths([tmp_path / "nope.fcs", fcs_file]) == 1
    assert len(window.errors_shown) == 1 and "nope.fcs" in window.errors_shown[0][1]
    assert window.samples.count() == 1


def test_export_to_unwritable_place_shows_error(window, fcs_file, monkeypatch, tmp_path):
    window.open_paths([fcs_file])
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(tmp_path / "no_such_dir" / "out.fcs"), "")))
    window.act_export_fcs.trigger()
    assert len(window.errors_shown) == 1 and "out.fcs" in window.errors_shown[0][1]


# ---------------------------------------------------------------- export
def test_export_population_writes_a_readable_fcs(window, fcs_file, raw_events, tmp_path, monkeypatch):
    import flowio

    window.open_paths([fcs_file])
    m = window.model
    m.set_axes(x="FSC-A", y="SSC-A", x_transform="linear", y_transform="linear")
    path = m.add_rectangle_gate(40e3, 90e3, 5e3, 40e3, name="Lymphs")
    m.select(path)
    out = tmp_path / "lymphs.fcs"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(out), "")))
    window.act_export_fcs.trigger()
    assert window.errors_shown == []
    fd = flowio.FlowData(str(out))
    got = np.reshape(np.asarray(fd.events, dtype=np.float64), (-1, fd.channel_count))
    x, y = raw_events[:, 0], raw_events[:, 1]
    keep = (x >= 40e3) & (x < 90e3) & (y >= 5e3) & (y < 40e3)
    np.testing.assert_array_equal(got, raw_events[keep])
    assert fd.text["cd7flow_subset"].startswith("/Lymphs")
    assert list(fd.pnn_labels) == CHANNELS


def test_export_statistics_csv(window, qtbot, fcs_file, raw_events, tmp_path, monkeypatch):
    import pandas as pd

    window.open_paths([fcs_file])
    m = window.model
    m.set_compensated(False)
    m.set_axes(x="FSC-A", y="SSC-A", x_transform="linear", y_transform="linear")
    m.add_rectangle_gate(40e3, 90e3, 5e3, 40e3, name="Lymphs")
    out = tmp_path / "stats.csv"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(out), "")))
    window.act_export_csv.trigger()
    table = pd.read_csv(out)
    x, y = raw_events[:, 0], raw_events[:, 1]
    keep = (x >= 40e3) & (x < 90e3) & (y >= 5e3) & (y < 40e3)
    lymph = table[table.population == "/Lymphs"]
    assert lymph[lymph.statistic == "count"].value.item() == keep.sum()
    med = lymph[(lymph.statistic == "median") & (lymph.channel == "CD7 (FL1-A)")].value.item()
    assert med == pytest.approx(np.median(raw_events[keep, 2]), rel=1e-6)
    # the table widget shows the same median for the selected population
    m.select(("Lymphs",))
    # computed off the UI thread
    qtbot.waitUntil(lambda: "/Lymphs</b>" in window.stats.caption.text() and " events" in window.stats.caption.text(), timeout=5000)
    row = [r for r in range(window.stats.rowCount()) if window.stats.item(r, 0).text() == "FL1-A"][0]
    assert float(window.stats.item(row, 2).text().replace(",", "")) == pytest.approx(med, rel=1e-3)


# ---------------------------------------------------------------- Gating-ML
def test_gatingml_save_and_load_round_trip(window, fcs_file, tmp_path):
    window.open_paths([fcs_file])
    m = window.model
    a = m.add_rectangle_gate(0.1, 0.8, 0.1, 0.9, name="Cells")
    m.select(a)
    m.set_axes(x="FL1-A", y="FL2-A")
    m.add_polygon_gate([[0.5, 0.1], [0.95, 0.2], [0.9, 0.9], [0.45, 0.7]], name="CD7pos")
    before = {r.path: r.count for r in m.populations()}
    out = tmp_path / "gates.xml"
    m.save_gatingml(out)
    m.clear_gates()
    assert len(m.populations()) == 1
    assert m.load_gatingml(out) == 2
    after = {r.path: r.count for r in m.populations()}
    assert after == before
    assert set(window.populations.items) == set(before)


def test_gatingml_compliance_gates_in_the_viewer(window, shared_data):
    """Counts shown for ISAC compliance gates equal the truth files (data1.fcs)."""
    ref = shared_data / "flowkit" / "data" / "gate_ref"
    window.open_paths([ref / "data1.fcs"])
    assert window.errors_shown == []
    for xml, truth in (("gml_rect1_gate.xml", "Rectangle1"), ("gml_poly1_gate.xml", "Polygon1"),
                       ("gml_transform_logicle_range4_gate.xml", "ScaleRange4")):
        window.model.load_gatingml(ref / "gml" / xml)
        expected = int(np.loadtxt(ref / "truth" / f"Results_{truth}.txt", dtype=int).sum())
        path = next(p for p in window.populations.items if p and p[-1] == truth)
        assert int(window.populations.count_text(path)) == expected, xml


def test_bad_gatingml_shows_error(window, tmp_path, monkeypatch):
    bad = tmp_path / "gates_broken.xml"
    bad.write_text("<not-closed>")
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(bad), "")))
    window.act_load_gml.trigger()
    assert len(window.errors_shown) == 1 and "gates_broken.xml" in window.errors_shown[0][1]


# ---------------------------------------------------------------- app and layering
def test_main_opens_command_line_files(qtbot, fcs_file, monkeypatch):
    from gui import app

    seen = {}
    monkeypatch.setattr(QtWidgets.QApplication, "exec", lambda self: seen.setdefault("ran", 0))
    monkeypatch.setattr(app, "create_window", lambda paths: seen.setdefault("paths", paths) and _Shown())
    assert app.main([str(fcs_file)]) == 0
    assert seen["paths"] == [str(fcs_file)]


class _Shown:
    def show(self):
        pass


def test_core_packages_never_import_qt():
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        import cd7flow, gating
        for pkg in (cd7flow, gating):
            for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                importlib.import_module(info.name)
        import cd7flow.viewer, cd7flow.cli
        qt = sorted(m for m in sys.modules if m.split(".")[0] in
                    ("PySide6", "PySide2", "PyQt5", "PyQt6", "pyqtgraph", "shiboken6", "qtpy"))
        print("QT:" + ",".join(qt))
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "QT:"


def test_real_mouse_drag_and_clicks_draw_gates(window, fcs_file, raw_events):
    """Mouse events through the Qt viewport (not signals): a dragged rectangle and a clicked polygon."""
    from matplotlib.path import Path as MplPath
    from PySide6 import QtCore, QtGui, QtTest

    window.open_paths([fcs_file])
    m = window.model
    m.set_axes(x="FSC-A", y="SSC-A", x_transform="linear", y_transform="linear")
    vb, view = window.plot_view.viewbox, window.plot_view.plot
    vp = view.viewport()
    (x0, x1), (y0, y1) = vb.viewRange()

    def at(fx, fy):
        return view.mapFromScene(vb.mapViewToScene(QtCore.QPointF(x0 + fx * (x1 - x0), y0 + fy * (y1 - y0))))

    window.controls.tool_buttons["rectangle"].setChecked(True)
    a, b = at(0.3, 0.2), at(0.6, 0.5)
    QtTest.QTest.mousePress(vp, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier, a)
    for i in range(1, 11):
        p = QtCore.QPointF(a + (b - a) * (i / 10))
        QtWidgets.QApplication.sendEvent(vp, QtGui.QMouseEvent(
            QtCore.QEvent.Type.MouseMove, p, QtCore.QPointF(vp.mapToGlobal(p.toPoint())),
            QtCore.Qt.MouseButton.NoButton, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier))
    QtTest.QTest.mouseRelease(vp, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier, b)
    rows = [r for r in m.populations() if r.path]
    assert len(rows) == 1
    g = rows[0].gate
    x, y = raw_events[:, 0], raw_events[:, 1]
    assert g.mins[0] == pytest.approx(x0 + 0.3 * (x1 - x0), rel=0.02)
    assert rows[0].count == int(((x >= g.mins[0]) & (x < g.maxs[0]) & (y >= g.mins[1]) & (y < g.maxs[1])).sum()) > 0

    window.controls.tool_buttons["polygon"].setChecked(True)
    for fx, fy in ((0.2, 0.2), (0.6, 0.25), (0.5, 0.7)):
        QtTest.QTest.mouseClick(vp, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier, at(fx, fy))
    QtTest.QTest.mouseClick(vp, QtCore.Qt.MouseButton.RightButton, QtCore.Qt.KeyboardModifier.NoModifier, at(0.5, 0.7))
    rows = [r for r in m.populations() if r.path]
    assert len(rows) == 2
    poly = rows[1].gate
    assert poly.vertices.shape == (3, 2)
    assert rows[1].count == int(MplPath(poly.vertices).contains_points(raw_events[:, :2]).sum()) > 0


# ---------------------------------------------------------------- quadrant and ellipse gates, memory
def test_quadrant_and_ellipse_gates_are_drawn_with_their_geometry(window, shared_data):
    import pyqtgraph as pg

    ref = shared_data / "flowkit" / "data" / "gate_ref"
    window.open_paths([ref / "data1.fcs"])
    m, view = window.model, window.plot_view
    m.set_axes(x="FL2-H", y="FL4-H", x_transform="linear", y_transform="linear")
    m.load_gatingml(ref / "gml" / "gml_quadrant1_gate.xml")
    items = view.overlays[("Quadrant1",)]
    lines = sorted((round(i.angle) % 180, i.value()) for i in items if isinstance(i, pg.InfiniteLine))
    assert lines == [(0, 14.22417), (90, 12.14748)]  # horizontal FL4 divider, vertical FL2 divider
    texts = {i.toPlainText().split("\n")[0]: i for i in items if isinstance(i, pg.TextItem)}
    truth = int(np.loadtxt(ref / "truth" / "Results_FL2P-FL4P.txt", dtype=int).sum())
    assert f"{truth:,}" in texts["FL2P-FL4P"].toPlainText()
    pos = texts["FL2P-FL4P"].pos()
    assert pos.x() > 12.14748 and pos.y() > 14.22417  # label sits in its own cell

    m.load_gatingml(ref / "gml" / "gml_ellipse1_gate.xml")
    assert ("Ellipse1",) not in view.overlays and any("Ellipse1" in r for r in view.not_drawn)
    assert "Ellipse1" in window.statusBar().currentMessage()
    m.set_axes(x="FL4-H", y="FL3-H", x_transform="linear", y_transform="linear")  # the gate lists FL3-H first: drawn swapped
    curve = next(i for i in view.overlays[("Ellipse1",)] if isinstance(i, pg.PlotCurveItem))
    x, y = curve.getData()
    d = np.column_stack([y, x]) - [12.99701, 16.22941]  # back to the gate's (FL3-H, FL4-H) order
    inv = np.linalg.inv([[62.5, 37.5], [37.5, 62.5]])
    np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, inv, d), 1.0, rtol=1e-9)
    assert np.ptp(d[:, 0]) == pytest.approx(2 * np.sqrt(62.5), rel=1e-3)  # spans the whole ellipse
    # on another scale the gate stays visible, re-projected through both transforms (marked as such)
    m.set_axes(x_transform="logicle")
    curve = next(i for i in view.overlays[("Ellipse1",)] if isinstance(i, pg.PlotCurveItem))
    x2, y2 = curve.getData()
    np.testing.assert_allclose(m.axis_transform("x").inverse(x2), x, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(y2, y)
    assert "re-projected" in m.overlay(("Ellipse1",)).note


def test_stored_float32_channels_are_not_cached_as_float64(fcs_file):
    from cd7flow.datasource import SampleSource
    from cd7flow.io.fcs_read import read_fcs
    from gating.dimensions import Dimension

    sample = read_fcs(fcs_file)
    assert sample.events.dtype == np.float32
    src = SampleSource(sample)
    raw = src.values(Dimension("FL1-A"))
    assert raw.dtype == np.float64 and np.array_equal(raw, sample.events[:, 2].astype(np.float64))
    assert src.cached_bytes == 0
    src.values(Dimension("FL1-A", "FCS"))
    src.values(Dimension("FL2-A", "FCS"))
    assert src.cached_bytes == sample.n_events * 2 * 8  # one compensated block for both channels
    src.clear_cache()
    assert src.cached_bytes == 0


def test_switching_sample_clears_the_previous_sources_cache(window, fcs_file):
    window.open_paths([fcs_file])
    first = window.model.source()
    window.model.set_axes(x="FL1-A")  # compensated logicle: a computed column
    window.model.values("x")
    assert first.cached_bytes > 0
    window.open_paths([fcs_file])
    assert first.cached_bytes == 0 and window.model.source() is not first
