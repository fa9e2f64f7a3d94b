"""Soak test: drive the viewer through a few hundred ordinary interactions.

The viewer once aborted the process (``Fatal Python error: none_dealloc``) after about
100 clicks: a Qt binding release dropped a reference to None on every void call. This
test does what a user does for a while (open the demo tubes, switch samples, change
axes, transforms and plot types, toggle compensation, draw, select, drag, undo, redo and delete gates)
through the widgets, and checks that the window still answers, that no error box came
up, and that every gate's count and % of parent equal an independent recomputation:
events read by flowio, the file's own $SPILLOVER inverted with numpy, logicle/asinh
from flowutils, rectangles by comparison, polygons by matplotlib's Path.

With PySide6 6.12.0 this run aborts the interpreter (none_dealloc). None's reference
count is not asserted here: pyqtgraph holds 5 references to None per drawn dot, so
it swings by tens of thousands with the plot type; tests/test_qt_refcount.py measures
it in isolation.
"""
from __future__ import annotations

import numpy as np
import pytest

QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed (the gui extra)")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (the test extra)")
flowio = pytest.importorskip("flowio", reason="flowio is not installed (the test extra)")
fu = pytest.importorskip("flowutils.transforms", reason="flowutils is not installed (the test extra)")

import pyqtgraph as pg  # noqa: E402
from PySide6 import QtCore  # noqa: E402

from conftest import SAMPLE_FCS  # noqa: E402

TUBES = ["P01_screening_BM.fcs", "P02_screening_BM.fcs", "P01_FMO-CD7_BM.fcs",
         "P03_MRD_BM_D028.fcs", "P01_CAR_PB_D007.fcs"]
STEPS = 300
CHECK_EVERY = 25
# The viewer's display transforms (cd7flow.viewer): the protocols' logicle (M=4.5, A=0, W
# estimated from the values shown, Parks 2006 eq. 12) and asinh M=4.5, A=0, with T = the
# channel's $PnR (262144 in every demo tube).
LOGICLE = dict(m=4.5, a=0.0)
ASINH = dict(m=4.5, a=0.0)


def protocol_w(values: np.ndarray, t: float, m: float = 4.5) -> float:
    """W = (M - log10(T / |r|)) / 2, r = 5th percentile of the negatives; 0.5 with < 1% negatives."""
    neg = values[values < 0]
    if neg.size < max(10, 0.01 * values.size):
        return 0.5
    return float(np.clip((m - np.log10(t / abs(np.percentile(neg, 5)))) / 2, 0, m / 2))


class Tube:
    """One demo file as an independent reader sees it, with cached reference columns."""

    def __init__(self, path):
        fd = flowio.FlowData(str(path))
        self.events = np.reshape(np.asarray(fd.events, dtype=np.float64), (-1, fd.channel_count))
        self.channels = list(fd.pnn_labels)
        self.ranges = {c: float(fd.channels[i + 1]["pnr"]) for i, c in enumerate(self.channels)}
        text = fd.text["spillover"].split(",")
        n = int(text[0])
        self.spill_channels = [t.strip() for t in text[1:n + 1]]
        matrix = np.array(text[n + 1:], dtype=np.float64).reshape(n, n)
        idx = [self.channels.index(c) for c in self.spill_channels]
        self.compensated = self.events.copy()
        self.compensated[:, idx] = self.events[:, idx] @ np.linalg.inv(matrix)
        self._cache: dict[tuple, np.ndarray] = {}

    def linear(self, channel: str, comp: bool) -> np.ndarray:
        comp = comp and channel in self.spill_channels
        return (self.compensated if comp else self.events)[:, self.channels.index(channel)]

    def values(self, channel: str, comp: bool, kind: str, w: float | None = None) -> np.ndarray:
        """A channel on a display scale; a logicle gate keeps the W of the tube it was drawn on."""
        key = (channel, comp and channel in self.spill_channels, kind, w)
        if key not in self._cache:
            col = self.linear(channel, comp)[:, None]
            t = self.ranges[channel]
            if kind == "logicle":
                col = fu.logicle(col, [0], t=t, w=w, **LOGICLE)
            elif kind == "asinh":
                col = fu.asinh(col, [0], t=t, **ASINH)
            self._cache[key] = col.ravel()
        return self._cache[key]


class Recorded:
    """A gate as the user drew it: axes as shown in the widgets, and its geometry."""

    def __init__(self, path, parent, dims, geometry):
        self.path, self.parent, self.dims, self.geometry = path, parent, dims, geometry

    def inside(self, tube: Tube) -> np.ndarray:
        cols = [tube.values(*d) for d in self.dims]
        kind, geo = self.geometry
        if kind == "polygon":
            from matplotlib.path import Path as MplPath

            return MplPath(geo).contains_points(np.column_stack(cols))
        lows, highs = geo
        keep = np.ones(cols[0].size, dtype=bool)
        for col, lo, hi in zip(cols, lows, highs):
            keep &= (col >= lo) & (col < hi)
        return keep


@pytest.fixture(scope="module")
def tubes():
    paths = [SAMPLE_FCS / name for name in TUBES]
    if not all(p.is_file() for p in paths):
        pytest.skip("sample_fcs/ demo study not generated")
    return [Tube(p) for p in paths]


def _reference_mask(gate: Recorded, gates: dict, tube: Tube) -> np.ndarray:
    mask = gate.inside(tube)
    parent = gate.parent
    while parent:
        mask &= gates[parent].inside(tube)
        parent = gates[parent].parent
    return mask


def _check_counts(window, gates: dict, tube: Tube, step: int) -> int:
    tree = window.populations
    shown = {p for p in tree.items if p}
    assert shown == set(gates), f"step {step}: tree shows {sorted(shown)}, drawn {sorted(gates)}"
    for path, gate in gates.items():
        ref = int(_reference_mask(gate, gates, tube).sum())
        parent_n = int(_reference_mask(gates[gate.parent], gates, tube).sum()) if gate.parent else tube.events.shape[0]
        assert int(tree.count_text(path)) == ref, f"step {step}: {path} count"
        if parent_n:
            assert float(tree.items[path].text(2)) == pytest.approx(100 * ref / parent_n, abs=0.006), \
                f"step {step}: {path} % of parent"
    return len(gates)


def test_viewer_survives_hundreds_of_interactions(qtbot, monkeypatch, tubes):
    from gui.app import create_window

    errors: list[str] = []
    monkeypatch.setattr(QtWidgets.QMessageBox, "critical",
                        staticmethod(lambda parent, title, text, *a, **k: errors.append(text)))
    window = create_window()
    window.confirm = lambda *a, **k: True
    window.ask_unsaved = lambda doing: True
    qtbot.addWidget(window)
    window.show()
    c, tree, vb = window.controls, window.populations, window.plot_view.viewbox
    assert window.open_paths([SAMPLE_FCS / name for name in TUBES]) == len(TUBES)
    gate_channels = [ch for ch in tubes[0].channels if ch != "Time" and all(ch in t.channels for t in tubes)]

    rng = np.random.default_rng(20240212)
    gates: dict[tuple[str, ...], Recorded] = {}
    checked = drawn = deleted = edited = undone = 0
    done: list[dict] = []  # the test's own undo stack: the gates before each change
    redo: list[dict] = []

    def changed() -> None:
        done.append(dict(gates))
        redo.clear()

    def current_tube() -> Tube:
        return tubes[window.model.current_index]

    def draw(kind: str) -> None:
        nonlocal drawn
        x, y = c.x_channel.currentData(), c.y_channel.currentData()
        histogram = c.mode.currentText() == "histogram"
        if x not in gate_channels or (not histogram and y not in gate_channels):
            return
        comp = c.compensate.isChecked()
        tube = current_tube()

        def dim(channel, kind):
            w = protocol_w(tube.linear(channel, comp), tube.ranges[channel]) if kind == "logicle" else None
            return (channel, comp, kind, w)

        dims = [dim(x, c.x_transform.currentText())]
        (x0, x1), (y0, y1) = vb.viewRange()
        fx = np.sort(rng.uniform(0.05, 0.95, 2))
        fy = np.sort(rng.uniform(0.05, 0.95, 2))
        xs, ys = x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)
        before = set(tree.items)
        parent = window.model.selected
        if histogram:
            c.tool_buttons["range"].setChecked(True)
            vb.sigRangeDrawn.emit(float(xs[0]), float(xs[1]))
            geometry = ("rectangle", ([xs[0]], [xs[1]]))
        else:
            dims.append(dim(y, c.y_transform.currentText()))
            if kind == "rectangle":
                c.tool_buttons["rectangle"].setChecked(True)
                vb.sigRectangleDrawn.emit(float(xs[0]), float(xs[1]), float(ys[0]), float(ys[1]))
                geometry = ("rectangle", ([xs[0], ys[0]], [xs[1], ys[1]]))
            else:
                angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 7)))
                cx, cy = x0 + 0.5 * (x1 - x0), y0 + 0.5 * (y1 - y0)
                radius = rng.uniform(0.1, 0.45)
                vertices = np.column_stack([cx + radius * (x1 - x0) * np.cos(angles),
                                            cy + radius * (y1 - y0) * np.sin(angles)])
                c.tool_buttons["polygon"].setChecked(True)
                vb.sigPolygonDrawn.emit(vertices)
                geometry = ("polygon", vertices)
        assert vb.tool is None  # the tool is released after each gate, as after a mouse drawing
        (path,) = set(tree.items) - before
        assert path[:-1] == parent
        changed()
        gates[path] = Recorded(path, parent, dims, geometry)
        drawn += 1

    def delete() -> None:
        nonlocal deleted
        if not gates:
            return
        path = list(gates)[rng.integers(len(gates))]
        tree.setCurrentItem(tree.items[path])
        tree.remove_selected()
        changed()
        for p in [p for p in gates if p[: len(path)] == path]:
            del gates[p]
        deleted += 1

    def edit() -> None:
        """Drag a gate drawn on its own scale by a random step, with the edit tool."""
        nonlocal edited
        c.tool_buttons["edit"].setChecked(True)
        view, m = window.plot_view, window.model
        movable = [p for p in view.rois if p in gates and m.overlay(p).exact and m.overlay(p).axes in (("x",), ("x", "y"))]
        if movable:
            path = movable[rng.integers(len(movable))]
            roi = view.rois[path]
            (x0, x1), (y0, y1) = vb.viewRange()
            dx, dy = rng.uniform(-0.05, 0.05) * (x1 - x0), rng.uniform(-0.05, 0.05) * (y1 - y0)
            rec = gates[path]
            kind, geo = rec.geometry
            if isinstance(roi, pg.LinearRegionItem):
                lo, hi = roi.getRegion()
                roi.setRegion((lo + dx, hi + dx))
                new = ("rectangle", ([geo[0][0] + dx], [geo[1][0] + dx]))
            else:
                roi.setPos(roi.pos() + QtCore.QPointF(dx, dy))
                new = (("polygon", np.asarray(geo) + [dx, dy]) if kind == "polygon" else
                       ("rectangle", ([geo[0][0] + dx, geo[0][1] + dy], [geo[1][0] + dx, geo[1][1] + dy])))
            qtbot.waitUntil(lambda: not view.preview.busy and view._dragging is None, timeout=5000)
            QtWidgets.QApplication.processEvents()
            changed()
            gates[path] = Recorded(path, rec.parent, rec.dims, new)
            edited += 1
        c.release_tools()

    def undo() -> None:
        nonlocal undone, gates
        if done and window.act_undo.isEnabled():
            window.act_undo.trigger()
            redo.append(dict(gates))
            gates = done.pop()
            undone += 1

    def redo_() -> None:
        nonlocal gates
        if redo and window.act_redo.isEnabled():
            window.act_redo.trigger()
            done.append(dict(gates))
            gates = redo.pop()

    actions = {
        "sample": lambda: window.samples.setCurrentRow(int(rng.integers(len(TUBES)))),
        "x": lambda: c.x_channel.setCurrentIndex(int(rng.integers(c.x_channel.count()))),
        "y": lambda: c.y_channel.setCurrentIndex(int(rng.integers(c.y_channel.count()))),
        "x_transform": lambda: c.x_transform.setCurrentText(str(rng.choice(["linear", "logicle", "asinh"]))),
        "y_transform": lambda: c.y_transform.setCurrentText(str(rng.choice(["linear", "logicle", "asinh"]))),
        "mode": lambda: c.mode.setCurrentText(str(rng.choice(["density", "dots", "histogram"], p=[0.5, 0.3, 0.2]))),
        "compensate": lambda: c.compensate.setChecked(not c.compensate.isChecked()),
        "rectangle": lambda: draw("rectangle"),
        "polygon": lambda: draw("polygon"),
        "select": lambda: tree.setCurrentItem(tree.items[list(tree.items)[rng.integers(len(tree.items))]]),
        "delete": delete,
        "edit": edit,
        "undo": undo,
        "redo": redo_,
    }
    names = list(actions)
    weights = np.array([1.0, 2, 2, 1, 1, 1, 1, 2.5, 2, 1.5, 0.5, 3.5, 0.7, 0.3])
    for step in range(STEPS):
        name = names[rng.choice(len(names), p=weights / weights.sum())]
        actions[name]()
        QtWidgets.QApplication.processEvents()
        assert errors == [], f"step {step} ({name}): error box {errors}"
        if step % CHECK_EVERY == CHECK_EVERY - 1:
            checked += _check_counts(window, gates, current_tube(), step)
    checked += _check_counts(window, gates, current_tube(), STEPS)

    # the run exercised what it claims to
    assert drawn >= 30 and deleted >= 5 and checked >= 30 and edited >= 10 and undone >= 5, \
        (drawn, deleted, checked, edited, undone)
    # still answering: the event loop runs a queued call, and the widgets still act
    ticked = []
    QtCore.QTimer.singleShot(0, lambda: ticked.append(True))
    qtbot.waitUntil(lambda: ticked == [True], timeout=2000)
    window.samples.setCurrentRow(0)
    assert window.model.current_index == 0 and window.windowTitle().startswith(TUBES[0])
    _check_counts(window, gates, tubes[0], STEPS + 1)
