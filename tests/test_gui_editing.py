"""Editing gates in the viewer: real mouse drags, undo/redo, drawing never edits, live counts.

References are independent of the code under test: events come back through flowio,
polygon membership through matplotlib's Path, rectangles and ellipses by numpy.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed (the gui extra)")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (the test extra)")

from matplotlib.path import Path as MplPath  # noqa: E402
from PySide6 import QtCore, QtGui, QtTest  # noqa: E402

from cd7flow.viewer import ViewerModel  # noqa: E402
from test_gui import CHANNELS, MARKERS, _events, fcs_file, raw_events, window  # noqa: E402,F401

NO_MOD = QtCore.Qt.KeyboardModifier.NoModifier
LEFT = QtCore.Qt.MouseButton.LeftButton


def _linear_scatter(window, fcs_file):
    window.open_paths([fcs_file])
    m = window.model
    m.set_compensated(False)
    m.set_axes(x="FSC-A", y="SSC-A", x_transform="linear", y_transform="linear")
    return m


def _drag(view, a: QtCore.QPointF, b: QtCore.QPointF, steps: int = 12) -> None:
    """Press at a, move in steps, release at b: real mouse events through the plot's viewport.

    The steps are 15 ms apart: pyqtgraph drops mouse moves faster than its mouseRateLimit (100 Hz)."""
    vp = view.viewport()
    QtTest.QTest.mousePress(vp, LEFT, NO_MOD, a.toPoint())
    for i in range(1, steps + 1):
        QtTest.QTest.qWait(15)
        p = QtCore.QPointF(a + (b - a) * (i / steps))
        QtWidgets.QApplication.sendEvent(vp, QtGui.QMouseEvent(
            QtCore.QEvent.Type.MouseMove, p, QtCore.QPointF(vp.mapToGlobal(p.toPoint())),
            QtCore.Qt.MouseButton.NoButton, LEFT, NO_MOD))
    QtTest.QTest.mouseRelease(vp, LEFT, NO_MOD, b.toPoint())


def _screen(plot_view, x: float, y: float) -> QtCore.QPointF:
    """Viewport pixel position of a point in plot coordinates (after pending layout changes)."""
    QtTest.QTest.qWait(20)
    view, vb = plot_view.plot, plot_view.viewbox
    return QtCore.QPointF(view.mapFromScene(vb.mapViewToScene(QtCore.QPointF(x, y))))


def _plot_point(plot_view, p: QtCore.QPointF) -> tuple[float, float]:
    q = plot_view.viewbox.mapSceneToView(plot_view.plot.mapToScene(p.toPoint()))
    return q.x(), q.y()


def test_dragging_a_polygon_vertex_updates_counts_and_undo_redo(window, qtbot, fcs_file, raw_events):
    m = _linear_scatter(window, fcs_file)
    verts = np.array([[30e3, 5e3], [100e3, 2e3], [140e3, 60e3], [70e3, 45e3]])
    path = m.add_polygon_gate(verts, name="Blasts")
    m.select(path)  # the statistics table shows the gate being dragged
    old = int(MplPath(verts).contains_points(raw_events[:, :2]).sum())
    assert int(window.populations.count_text(path)) == old
    window.controls.tool_buttons["edit"].setChecked(True)
    pv = window.plot_view
    roi = pv.rois[path]
    assert len(roi.getHandles()) == 4
    start = _screen(pv, 140e3, 60e3)  # on the third vertex's handle
    end = _screen(pv, 200e3, 150e3)
    _drag(pv.plot, start, end)
    qtbot.waitUntil(lambda: not np.allclose(m.gate_at(path).vertices, verts), timeout=3000)
    new = np.asarray(m.gate_at(path).vertices)
    np.testing.assert_allclose(new[[0, 1, 3]], verts[[0, 1, 3]])  # only the dragged vertex moved
    ex, ey = _plot_point(pv, end)
    assert new[2] == pytest.approx([ex, ey], rel=0.02)
    ref = int(MplPath(new).contains_points(raw_events[:, :2]).sum())
    assert ref > old
    qtbot.waitUntil(lambda: window.populations.count_text(path) == str(ref), timeout=3000)
    stats = {r["channel"]: r for r in m.statistics(path)}
    assert stats["FSC-A"]["count"] == ref
    inside = MplPath(new).contains_points(raw_events[:, :2])
    assert stats["FL1-A"]["median"] == pytest.approx(np.median(raw_events[inside, 2]), rel=1e-9)
    qtbot.waitUntil(lambda: window.stats.caption.text().startswith(f"<b>/Blasts</b>: {ref:,} events"), timeout=5000)

    # Ctrl+Z restores the old polygon and count; Ctrl+Shift+Z re-applies the drag
    window.activateWindow()
    QtTest.QTest.keyClick(window.plot_view.plot, QtCore.Qt.Key.Key_Z, QtCore.Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.populations.count_text(path) == str(old), timeout=3000)
    np.testing.assert_allclose(m.gate_at(path).vertices, verts)
    QtTest.QTest.keyClick(window.plot_view.plot, QtCore.Qt.Key.Key_Z,
                          QtCore.Qt.KeyboardModifier.ControlModifier | QtCore.Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.populations.count_text(path) == str(ref), timeout=3000)
    np.testing.assert_allclose(m.gate_at(path).vertices, new)


def test_live_counts_while_dragging_come_from_the_worker(window, qtbot, fcs_file, raw_events):
    m = _linear_scatter(window, fcs_file)
    path = m.add_rectangle_gate(40e3, 90e3, 5e3, 40e3, name="Lymphs")
    m.select(path)
    pv = window.plot_view
    x, y = raw_events[:, 0], raw_events[:, 1]
    # several drag steps faster than the worker: the latest one wins, nothing is committed yet
    for x0 in (45e3, 50e3, 55e3, 60e3):
        pv.preview.submit(path, m.edited_gate(path, mins=[x0, 5e3], maxs=[x0 + 50e3, 40e3]))
    qtbot.waitUntil(lambda: not pv.preview.busy, timeout=5000)
    ref = int(((x >= 60e3) & (x < 110e3) & (y >= 5e3) & (y < 40e3)).sum())
    qtbot.waitUntil(lambda: window.populations.count_text(path) == str(ref), timeout=3000)
    assert pv.labels[path].toPlainText().splitlines()[1].startswith(f"{ref:,} (")
    qtbot.waitUntil(lambda: window.stats.caption.text().startswith(f"<b>/Lymphs</b>: {ref:,} events"), timeout=5000)
    assert m.gate_at(path).mins[0] == 40e3 and not m.history.redo_label()  # preview only


def test_drawing_a_child_on_the_parents_plot_never_moves_the_parent(window, qtbot, fcs_file, raw_events):
    m = _linear_scatter(window, fcs_file)
    parent = m.add_rectangle_gate(40e3, 140e3, 5e3, 90e3, name="Cells")
    window.populations.setCurrentItem(window.populations.items[parent])
    assert m.selected == parent  # the plot shows the parent's events, with the parent's own gate
    parent_count = int(window.populations.count_text(parent))
    pv = window.plot_view
    assert parent in pv.rois  # the selected population's gate is draggable with no tool...
    window.controls.tool_buttons["rectangle"].setChecked(True)
    assert parent not in pv.rois  # ...but inert while drawing
    # the drag starts on the parent's edge and ends inside it
    _drag(pv.plot, _screen(pv, 40e3, 30e3), _screen(pv, 80e3, 60e3))
    qtbot.waitUntil(lambda: len(m.populations()) == 3, timeout=3000)
    g = m.gate_at(parent)
    assert (g.mins, g.maxs) == ((40e3, 5e3), (140e3, 90e3))
    assert int(window.populations.count_text(parent)) == parent_count
    (child,) = [r for r in m.populations() if len(r.path) == 2]
    assert child.path[0] == "Cells"
    c = child.gate
    x, y = raw_events[:, 0], raw_events[:, 1]
    in_parent = (x >= 40e3) & (x < 140e3) & (y >= 5e3) & (y < 90e3)
    in_child = (x >= c.mins[0]) & (x < c.maxs[0]) & (y >= c.mins[1]) & (y < c.maxs[1])
    assert child.count == int((in_parent & in_child).sum()) > 0
    assert c.mins[0] == pytest.approx(40e3, rel=0.03) and c.maxs[1] == pytest.approx(60e3, rel=0.03)


def test_ellipse_and_quadrant_tools(window, qtbot, fcs_file, raw_events):
    m = _linear_scatter(window, fcs_file)
    pv = window.plot_view
    window.controls.tool_buttons["ellipse"].setChecked(True)
    _drag(pv.plot, _screen(pv, 40e3, 10e3), _screen(pv, 100e3, 40e3))
    qtbot.waitUntil(lambda: m.n_gates == 1, timeout=3000)
    (row,) = [r for r in m.populations() if r.path]
    e = row.gate
    d = raw_events[:, :2] - e.mean
    inside = np.einsum("ni,ij,nj->n", d, np.linalg.inv(e.covariance), d) <= e.distance_square
    assert row.count == int(inside.sum()) > 0
    assert e.mean == pytest.approx([70e3, 25e3], rel=0.03)
    window.controls.tool_buttons["quadrant"].setChecked(True)
    QtTest.QTest.mouseClick(pv.plot.viewport(), LEFT, NO_MOD, _screen(pv, 80e3, 30e3).toPoint())
    qtbot.waitUntil(lambda: m.n_gates == 2, timeout=3000)
    quads = {r.name: r.count for r in m.populations() if r.path and r.path[0] != row.path[0]}
    qx, qy = m.entry_at(("Quadrant 2",)).gate.dividers[0].values[0], m.entry_at(("Quadrant 2",)).gate.dividers[1].values[0]
    x, y = raw_events[:, 0], raw_events[:, 1]
    assert quads == {"FSC-A- SSC-A+": int(((x < qx) & (y >= qy)).sum()), "FSC-A+ SSC-A+": int(((x >= qx) & (y >= qy)).sum()),
                     "FSC-A- SSC-A-": int(((x < qx) & (y < qy)).sum()), "FSC-A+ SSC-A-": int(((x >= qx) & (y < qy)).sum())}
    assert sum(quads.values()) == raw_events.shape[0]
    # the quadrant's labels carry count and % and sit in their cells, not at (0, 0)
    label = pv.labels[("FSC-A+ SSC-A+",)]
    assert label.pos().x() > qx and label.pos().y() > qy
    assert f"{quads['FSC-A+ SSC-A+']:,}" in label.toPlainText()


def test_rename_undo_and_labels(window, qtbot, fcs_file, raw_events):
    m = _linear_scatter(window, fcs_file)
    parent = m.add_rectangle_gate(40e3, 140e3, 5e3, 90e3, name="Rectangle 1")
    child = m.add_polygon_gate([[50e3, 10e3], [120e3, 10e3], [90e3, 80e3]], name="Polygon 2", parent=parent)
    tree = window.populations
    item = tree.items[parent]
    item.setText(0, "Lymphocytes with a long descriptive name")  # what the inline editor does
    assert ("Lymphocytes with a long descriptive name", "Polygon 2") in tree.items
    assert tree.textElideMode() == QtCore.Qt.TextElideMode.ElideMiddle
    assert "Lymphocytes with a long descriptive name" in tree.items[("Lymphocytes with a long descriptive name",)].toolTip(0)
    m.undo()
    assert child in tree.items and m.selected == ()
    m.redo()
    new_child = ("Lymphocytes with a long descriptive name", "Polygon 2")
    assert int(tree.count_text(new_child)) == int(tree.count_text(new_child))  # evaluated after redo
    # the label of a gate sits at the gate (its top-left corner for a rectangle) with count and %
    label = window.plot_view.labels[("Lymphocytes with a long descriptive name",)]
    assert (label.pos().x(), label.pos().y()) == pytest.approx((40e3, 90e3))
    x, y = raw_events[:, 0], raw_events[:, 1]
    n = int(((x >= 40e3) & (x < 140e3) & (y >= 5e3) & (y < 90e3)).sum())
    assert label.toPlainText() == f"Lymphocytes with a long descriptive name\n{n:,} ({100 * n / x.size:.1f}%)"
    # removing asks first (the fixture answers yes) and can be undone
    tree.setCurrentItem(tree.items[new_child])
    window.remove_selected()
    assert new_child not in tree.items
    m.undo()
    assert new_child in tree.items


def _sample(n=4000, channels=CHANNELS, markers=MARKERS):
    from cd7flow.sample import CaseInsensitiveDict, Sample

    ev = _events(n)[:, : len(channels)]
    return Sample(ev, tuple(channels), tuple(markers), CaseInsensitiveDict({}), np.full(len(channels), 262144.0))


def test_a_gate_on_a_missing_channel_blanks_only_itself():
    from gating.dimensions import Dimension
    from gating.gates import RectangleGate

    m = ViewerModel()
    m.add_sample(_sample())
    m.set_axes(x="FSC-A", y="SSC-A", x_transform="linear", y_transform="linear")
    good = m.add_rectangle_gate(40e3, 90e3, 5e3, 40e3, name="Lymphs")
    bad = m.add_gate(RectangleGate("CD99+", [Dimension("BV999-A")], [100.0], [None]), parent=())
    under_bad = m.add_rectangle_gate(0.0, 1e6, 0.0, 1e6, name="below", parent=bad)
    rows = {r.path: r for r in m.populations()}
    ev = _events(4000)
    x, y = ev[:, 0], ev[:, 1]
    assert rows[()].count == 4000
    assert rows[good].count == int(((x >= 40e3) & (x < 90e3) & (y >= 5e3) & (y < 40e3)).sum())
    assert rows[bad].count is None and "BV999-A" in rows[bad].blank_reason
    assert rows[under_bad].count is None
    assert m.statistics(bad) == [] and m.statistics(good)[0]["count"] == rows[good].count
    table = m.statistics_table()
    assert set(table.population) == {"/", "/Lymphs"}


def test_automated_gate_adjustment_is_logged_and_view_state_round_trips(tmp_path):
    import getpass

    from gating.dimensions import Dimension
    from gating.gates import RectangleGate
    from gating.tree import GatingTree

    m = ViewerModel()
    m.add_sample(_sample())
    tree = GatingTree()
    tree.add(RectangleGate("cells", [Dimension("FSC-A"), Dimension("SSC-A")], [40e3, 5e3], [90e3, 40e3]))
    m.set_tree(tree, automated=True, source="screening 1.0")
    assert m.is_automated(("cells",)) and not m.is_manually_adjusted(("cells",))
    m.edit_gate(("cells",), mins=[45e3, 5e3], maxs=[90e3, 40e3])
    assert m.is_manually_adjusted(("cells",))
    (entry,) = m.edit_log
    assert entry["who"] == getpass.getuser() and entry["path"] == "/cells" and entry["when"].endswith("+00:00")
    assert entry["old"]["mins"] == (40e3, 5e3) and entry["new"]["mins"] == (45e3, 5e3)
    row = [r for r in m.populations() if r.path][0]
    assert row.automated and row.adjusted
    m.undo()
    assert not m.is_manually_adjusted(("cells",)) and m.edit_log[-1]["action"] == "undo"

    m.set_layout(2)
    m.set_axes(x="FL1-A", y="FL2-A", plot=1)
    m.set_zoom((0.2, 0.9), (0.1, 0.8), plot=1)
    state = json.loads(json.dumps(m.view_state()))
    other = ViewerModel()
    other.add_sample(m.sample)
    other.restore_view_state(state)
    assert other.view_state() == state
    assert other.axis_range("x", 1) == (0.2, 0.9)


def test_several_plots_each_with_its_own_axes_and_persistent_zoom(window, qtbot, fcs_file, raw_events):
    m = _linear_scatter(window, fcs_file)
    window.controls.layout_box.setCurrentIndex(window.controls.layout_box.findData(2))
    assert len(window.plots.views) == 2 and len(m.plots) == 2
    second = window.plots.views[1]
    assert (m.plots[1].x_channel, m.plots[1].y_channel) == ("FL1-A", "FL2-A")
    assert (m.plots[1].x_transform, m.plots[1].y_transform) == ("logicle", "logicle")
    assert (m.plots[0].x_channel, m.plots[0].x_transform) == ("FSC-A", "linear")
    assert "FL1-A (CD7)" in second.plot.getPlotItem().getAxis("bottom").labelText
    # a gate drawn on the second plot uses that plot's axes
    path = m.add_rectangle_gate(0.5, 1.0, 0.0, 1.0, name="CD7 high", plot=1)
    assert [d.channel for d in m.gate_at(path).dimensions] == ["FL1-A", "FL2-A"]
    assert path in second.outlines and path not in window.plot_view.outlines
    # zoom: kept by the model across refreshes, and the density is re-binned on it
    m.set_zoom((60e3, 120e3), (10e3, 60e3), plot=0)
    m.add_rectangle_gate(70e3, 80e3, 20e3, 30e3, name="small", plot=0)  # a refresh
    (x0, x1), (y0, y1) = window.plot_view.viewbox.viewRange()
    assert (x0, x1) == pytest.approx((60e3, 120e3)) and (y0, y1) == pytest.approx((10e3, 60e3))
    h, xr, yr = m.density(bins=64, plot=0)
    x, y = raw_events[:, 0], raw_events[:, 1]
    assert h.sum() == int(((x >= 60e3) & (x < 120e3) & (y >= 10e3) & (y < 60e3)).sum())
    ref, _, _ = np.histogram2d(x, y, bins=64, range=((60e3, 120e3), (10e3, 60e3)))
    np.testing.assert_array_equal(h, ref)
    window.controls.full_scale.click()
    assert m.axis_range("x", 0) == (-0.01 * 262144, 262144)


def test_statistics_csv_covers_every_open_sample_with_marker_names(window, fcs_file, raw_events, tmp_path):
    import pandas as pd

    window.open_paths([fcs_file, fcs_file])
    m = window.model
    m.set_axes(x="FSC-A", y="SSC-A", x_transform="linear", y_transform="linear")
    m.add_rectangle_gate(40e3, 90e3, 5e3, 40e3, name="Lymphs")
    out = m.export_statistics_csv(tmp_path / "stats.csv")
    table = pd.read_csv(out)
    assert len(set(zip(table["sample"], table.index // 1))) >= 2 and table["sample"].nunique() == 1
    assert len(table[(table.statistic == "count") & (table.population == "/Lymphs")]) == 2  # both samples
    assert "CD7 (FL1-A), comp=FCS" in set(table.channel) and "FSC-A" in set(table.channel)
    comp = raw_events[:, [2, 3]] @ np.linalg.inv(np.array([[1.0, 0.12], [0.03, 1.0]]))
    root = table[(table.population == "/") & (table.channel == "CD7 (FL1-A), comp=FCS")]
    positive = comp[:, 0][comp[:, 0] > 0]
    gm = root[root.statistic == "geometric_mean"].value.iloc[0]
    assert gm == pytest.approx(np.exp(np.mean(np.log(positive))), rel=1e-9)
    assert root[root.statistic == "geometric_mean_n"].value.iloc[0] == positive.size < comp.shape[0]


def test_gates_stay_visible_across_compensation_and_transform_changes(window, fcs_file, raw_events):
    m = window.model
    window.open_paths([fcs_file])
    assert m.compensated  # the file has a matrix: on by default
    m.set_axes(x="FL1-A", y="FL2-A")  # compensated logicle, the protocols' W
    path = m.add_rectangle_gate(0.55, 0.95, 0.3, 0.9, name="CD7+")
    pv = window.plot_view
    assert path in pv.outlines and m.overlay(path).exact
    window.controls.compensate.setChecked(False)
    ov = m.overlay(path)
    assert path in pv.outlines and "compensated (FCS) in the gate but uncompensated on the plot" in ov.note
    assert pv.outlines[path][0].opts["pen"].style() == QtCore.Qt.PenStyle.DashLine  # marked
    window.controls.compensate.setChecked(True)
    window.controls.x_transform.setCurrentText("linear")
    ov = m.overlay(path)
    (x0, y0), (x1, y1) = ov.plot_bounds()
    # re-projected exactly: the rectangle's x edges in channel units
    gx = m.axis_transform("y")  # y is still the gate's own logicle
    assert (y0, y1) == pytest.approx((0.3, 0.9))
    tx = m._transforms[m.gate_at(path).dimensions[0].transform]
    assert (x0, x1) == pytest.approx(tuple(tx.inverse(np.array([0.55, 0.95]))), rel=1e-9)
    assert gx is not None and "re-projected" in ov.note


def test_a_transform_is_estimated_once_per_channel_not_per_redraw(window, fcs_file, monkeypatch):
    import cd7flow.assays.protocol_gating as pg_mod

    calls = []
    real = pg_mod.logicle_width
    monkeypatch.setattr(pg_mod, "logicle_width", lambda *a, **k: calls.append(1) or real(*a, **k))
    window.open_paths([fcs_file])
    m = window.model
    for _ in range(3):
        m.set_axes(x="FL1-A", y="FL2-A")
        m.set_axes(x="FSC-A", y="SSC-A")
    assert len(calls) == 2  # FL1-A and FL2-A, compensated: estimated once each
    stats_before = m.cached_statistics(())
    m.set_axes(x="FL1-A", x_transform="asinh")
    assert m.cached_statistics(()) is stats_before  # axes never touch statistics


def test_a_drawn_gate_is_named_as_it_is_made(window, qtbot, fcs_file, raw_events):
    m = _linear_scatter(window, fcs_file)
    window.controls.tool_buttons["rectangle"].setChecked(True)
    window.plot_view.viewbox.sigRectangleDrawn.emit(40e3, 90e3, 5e3, 40e3)
    tree = window.populations
    assert tree.state() == tree.State.EditingState  # the new gate's name is open for typing
    editor = QtWidgets.QApplication.focusWidget()
    assert isinstance(editor, QtWidgets.QLineEdit) and editor.text() == "Rectangle 1"
    editor.selectAll()
    QtTest.QTest.keyClicks(editor, "Lymphocytes")
    QtTest.QTest.keyClick(editor, QtCore.Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: [r.name for r in m.populations()] == ["All events", "Lymphocytes"], timeout=3000)
    x, y = raw_events[:, 0], raw_events[:, 1]
    assert m.population_count(("Lymphocytes",))[0] == int(((x >= 40e3) & (x < 90e3) & (y >= 5e3) & (y < 40e3)).sum())
    m.undo()  # undo the rename, then the gate
    assert [r.name for r in m.populations()] == ["All events", "Rectangle 1"]


def test_dragging_a_quadrant_divider_past_a_location_keeps_every_quadrant_on_its_side(window, fcs_file, raw_events):
    m = _linear_scatter(window, fcs_file)
    path = m.add_quadrant_gate(80e3, 30e3, name="Q")
    window.controls.tool_buttons["edit"].setChecked(True)
    lines = window.plot_view.rois[path]
    vertical = next(line for line in lines if line._quadrant_axis == "x")
    vertical.setValue(160e3)  # far past the old locations (81e3 / 79e3)
    m.edit_gate_on_plot(path, 0, dividers={"x": 160e3, "y": 30e3})
    x, y = raw_events[:, 0], raw_events[:, 1]
    counts = {r.name: r.count for r in m.populations() if r.path}
    assert counts["FSC-A+ SSC-A+"] == int(((x >= 160e3) & (y >= 30e3)).sum())
    assert counts["FSC-A- SSC-A-"] == int(((x < 160e3) & (y < 30e3)).sum())
    assert sum(counts.values()) == x.size


def test_protocol_gates_draw_on_the_viewers_own_logicle():
    """One logicle scale per channel: a protocol's fitted gates land exactly on the viewer's axes."""
    from conftest import SAMPLE_FCS

    from cd7flow.assays.protocol_gating import fitted_strategy, run_protocol_gates
    from cd7flow.protocol import load_protocol

    tube = SAMPLE_FCS / "P01_screening_BM.fcs"
    if not tube.is_file():
        pytest.skip("sample_fcs/ demo study not generated")
    m = ViewerModel()
    m.open_files([tube])
    protocol = load_protocol("screening")
    strategy = fitted_strategy(run_protocol_gates(m.sample, protocol), protocol)
    m.set_tree(strategy.tree, automated=True, source="screening", transforms=strategy.transforms,
               compensations=strategy.compensations)
    reference = strategy.apply(m.sample)
    rows = [r for r in m.populations() if r.path]
    assert len(rows) > 10 and all(r.count == reference.count(r.path) for r in rows)
    drawn = 0
    for entry in m._gates:
        dims = list(getattr(entry.gate, "dimensions", ()))
        if len(dims) != 2 or entry.gate.__class__.__name__ == "BooleanGate":
            continue
        m.set_axes(x=dims[0].channel, y=dims[1].channel,
                   x_transform="linear" if dims[0].transform is None else "logicle",
                   y_transform="linear" if dims[1].transform is None else "logicle")
        assert m.overlay(entry.path).exact, entry.path  # the viewer's W is the protocol's W
        drawn += 1
    assert drawn >= 4


def test_moving_and_scaling_an_ellipse_and_a_range_edge(window, qtbot, fcs_file, raw_events):
    m = _linear_scatter(window, fcs_file)
    path = m.add_ellipse_gate((70e3, 25e3), (30e3, 15e3), name="E")
    window.controls.tool_buttons["edit"].setChecked(True)
    roi = window.plot_view.rois[path]
    roi.setPos(roi.pos() + QtCore.QPointF(10e3, 5e3))  # drag the whole ellipse
    qtbot.waitUntil(lambda: m.gate_at(path).mean[0] != 70e3, timeout=3000)
    g = m.gate_at(path)
    assert g.mean == pytest.approx([80e3, 30e3], rel=1e-6)
    d = raw_events[:, :2] - [80e3, 30e3]
    inside = (d[:, 0] / 30e3) ** 2 + (d[:, 1] / 15e3) ** 2 <= 1
    assert m.population_count(path)[0] == int(inside.sum())
    m.edit_gate_on_plot(path, 0, scale=(2.0, 1.0))  # what the scale handle hands over
    d = raw_events[:, :2] - [80e3, 30e3]
    inside = (d[:, 0] / 60e3) ** 2 + (d[:, 1] / 15e3) ** 2 <= 1
    assert m.population_count(path)[0] == int(inside.sum())
    m.undo()
    m.undo()
    assert m.gate_at(path).mean == pytest.approx([70e3, 25e3])

    m.set_plot_mode("histogram")
    rng = m.add_rectangle_gate(50e3, 90e3, name="R")
    region = window.plot_view.rois[rng]
    region.setRegion((50e3, 120e3))  # drag the right edge
    qtbot.waitUntil(lambda: m.gate_at(rng).maxs[0] != 90e3, timeout=3000)
    x = raw_events[:, 0]
    assert m.gate_at(rng).mins[0] == pytest.approx(50e3)
    assert m.population_count(rng)[0] == int(((x >= 50e3) & (x < 120e3)).sum())
