"""The plots: density image, dots or histogram, gates with count labels, drawing and editing tools.

Draws what the :class:`~cd7flow.viewer.ViewerModel` says; a finished drawing or an
edited gate is handed back to the model (which builds the gate and records it for
undo), never evaluated here.

Mouse modes (one per plot grid, chosen in the tool bar):
- no tool: pan and zoom (the zoom is kept by the model); only the selected
  population's gate can be dragged.
- a drawing tool (rectangle, polygon, range, ellipse, quadrant): every gate outline
  is inert, so drawing a child on a plot that shows its parent's gate never moves
  the parent; the new gate goes under the population the plot shows.
- "edit": every gate on the plot can be dragged: vertices, edges (rectangle sides,
  range ends, quadrant dividers) and whole gates.
While a gate is dragged, its count and % of parent, the population tree and the
statistics table follow, computed by :class:`LivePreview` off the UI thread.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from cd7flow.errors import CD7FlowError
from cd7flow.viewer import ViewerModel, path_str
from gating.gates import PolygonGate, RectangleGate

from .workers import LatestWins

GATE_PEN = pg.mkPen((220, 30, 30), width=2)
SELECTED_GATE_PEN = pg.mkPen((255, 140, 0), width=3)
REPROJECTED_PEN = pg.mkPen((150, 60, 160), width=2, style=QtCore.Qt.PenStyle.DashLine)
DRAW_PEN = pg.mkPen((30, 30, 220), width=2, style=QtCore.Qt.PenStyle.DashLine)
LABEL_FILL = pg.mkBrush(255, 255, 255, 190)
DRAW_TOOLS = ("rectangle", "polygon", "range", "ellipse", "quadrant")
ZOOM_DEBOUNCE_MS = 150


def count_text(name: str, count: int | None, pct: float) -> str:
    """A gate label: its name, events and % of parent ("-" when it cannot be evaluated)."""
    if count is None:
        return f"{name}\n\u2014"
    return f"{name}\n{count:,} ({pct:.1f}%)" if math.isfinite(pct) else f"{name}\n{count:,}"


# ---------------------------------------------------------------- off-thread counts
class LivePreview(QtCore.QObject):
    """Counts and statistics of a gate being dragged, computed on a worker thread
    (:class:`~.workers.LatestWins`: the newest drag step wins). Counts are sent first, so
    labels and the tree follow the mouse; statistics of the dragged population follow."""

    sigCounts = QtCore.Signal(object)  # {path: (count | None, % parent)}
    sigStatistics = QtCore.Signal(object)  # statistics rows of the selected population
    sigError = QtCore.Signal(str)

    def __init__(self, model: ViewerModel, parent=None):
        super().__init__(parent)
        self.model = model
        self.worker = LatestWins(self)
        self.worker.sigPart.connect(self._part)
        self.worker.sigError.connect(lambda _tag, text: self.sigError.emit(text))

    def submit(self, path, gate) -> None:
        m = self.model
        try:
            result = m.preview(path, gate)
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))
            return
        paths = [pop.path for pop in result.tree.populations()]
        sel, compensated = m.selected, m.compensated
        stats_path = sel if sel[: len(path)] == tuple(path) else None
        columns = m.stat_columns() if stats_path is not None else None

        def work():
            yield {p: ((None, float("nan")) if result.is_blank(p) else (result.count(p), result.percent_of_parent(p)))
                   for p in paths}
            if stats_path is not None:
                yield m.statistics_for(result, stats_path, compensated, columns())

        self.worker.submit(tuple(path), work)

    def _part(self, _tag, index: int, value) -> None:
        (self.sigCounts if index == 0 else self.sigStatistics).emit(value)

    def wait(self, msecs: int = 5000) -> bool:
        """Let running jobs finish (tests; closing the window)."""
        return self.worker.wait(msecs)

    @property
    def busy(self) -> bool:
        return self.worker.busy


# ---------------------------------------------------------------- one plot
class GateDrawingViewBox(pg.ViewBox):
    """A ViewBox that, while a drawing tool is active, turns mouse input into a gate outline.

    rectangle / range / ellipse: press-drag-release (the ellipse fills the dragged box).
    polygon: click each vertex, double-click or right-click to close (at least 3).
    quadrant: one click at the crossing. Esc cancels (handled by the view).
    """

    sigRectangleDrawn = QtCore.Signal(float, float, float, float)  # x0, x1, y0, y1 (view units)
    sigRangeDrawn = QtCore.Signal(float, float)
    sigPolygonDrawn = QtCore.Signal(object)  # (n, 2) float array
    sigEllipseDrawn = QtCore.Signal(float, float, float, float)  # centre x, y, half-width, half-height
    sigQuadrantDrawn = QtCore.Signal(float, float)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tool: str | None = None
        self._vertices: list[tuple[float, float]] = []
        self._preview = pg.PlotCurveItem(pen=DRAW_PEN)
        self._preview.setZValue(100)
        self._preview.hide()
        self.addItem(self._preview, ignoreBounds=True)

    @property
    def drawing(self) -> bool:
        return self.tool in DRAW_TOOLS

    def set_tool(self, tool: str | None) -> None:
        self.tool = tool
        self.cancel_drawing()

    def cancel_drawing(self) -> None:
        self._vertices = []
        self._preview.hide()

    def _show_preview(self, xs, ys) -> None:
        self._preview.setData(np.asarray(xs, float), np.asarray(ys, float))
        self._preview.show()

    def mouseDragEvent(self, ev, axis=None):
        if self.tool not in ("rectangle", "range", "ellipse") or ev.button() != QtCore.Qt.MouseButton.LeftButton:
            if self.drawing:
                ev.ignore()
                return None
            return super().mouseDragEvent(ev, axis)
        ev.accept()
        p0 = self.mapSceneToView(ev.buttonDownScenePos())
        p1 = self.mapSceneToView(ev.scenePos())
        x0, x1 = sorted((p0.x(), p1.x()))
        y0, y1 = sorted((p0.y(), p1.y()))
        if self.tool == "range":
            (y0, y1) = self.viewRange()[1]
        if ev.isFinish():
            self._preview.hide()
            if x1 > x0 and (self.tool == "range" or y1 > y0):
                if self.tool == "range":
                    self.sigRangeDrawn.emit(x0, x1)
                elif self.tool == "ellipse":
                    self.sigEllipseDrawn.emit((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2)
                else:
                    self.sigRectangleDrawn.emit(x0, x1, y0, y1)
        elif self.tool == "ellipse":
            t = np.linspace(0, 2 * np.pi, 121)
            self._show_preview((x0 + x1) / 2 + (x1 - x0) / 2 * np.cos(t), (y0 + y1) / 2 + (y1 - y0) / 2 * np.sin(t))
        else:
            self._show_preview([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])

    def mouseClickEvent(self, ev):
        if self.tool == "quadrant" and ev.button() == QtCore.Qt.MouseButton.LeftButton:
            ev.accept()
            p = self.mapSceneToView(ev.scenePos())
            self.sigQuadrantDrawn.emit(p.x(), p.y())
            return None
        if self.tool != "polygon":
            return super().mouseClickEvent(ev)
        ev.accept()
        finish = ev.double() or ev.button() == QtCore.Qt.MouseButton.RightButton
        if not finish and ev.button() == QtCore.Qt.MouseButton.LeftButton:
            p = self.mapSceneToView(ev.scenePos())
            self._vertices.append((p.x(), p.y()))
        if finish and len(self._vertices) >= 3:
            vertices = np.array(self._vertices, dtype=float)
            self.cancel_drawing()
            self.sigPolygonDrawn.emit(vertices)
            return None
        if self._vertices:
            xs, ys = zip(*(self._vertices + self._vertices[:1]))
            self._show_preview(xs, ys)
        return None


class PlotView(QtWidgets.QWidget):
    """One pyqtgraph plot of the layout (``index`` into ``model.plots``), observing the model."""

    sigError = QtCore.Signal(str)
    sigStatus = QtCore.Signal(str)  # a note for the status bar (e.g. which gates are not drawn, why)
    sigToolFinished = QtCore.Signal()
    sigActivated = QtCore.Signal(int)
    sigGateDrawn = QtCore.Signal(object)  # the path of a gate just drawn (the window offers to name it)

    def __init__(self, model: ViewerModel, index: int = 0, preview: LivePreview | None = None, parent=None):
        super().__init__(parent)
        self.model = model
        self.index = index
        self.preview = preview or LivePreview(model, self)
        self.viewbox = GateDrawingViewBox()
        self.plot = pg.PlotWidget(viewBox=self.viewbox, background="w")
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=False, y=False)
        for side in ("left", "bottom"):  # no "(x0.001)" SI rescaling of transformed units
            self.plot.getPlotItem().getAxis(side).enableAutoSIPrefix(False)
        self.image = pg.ImageItem(axisOrder="col-major")
        cmap = pg.colormap.get("turbo")
        self.image.setLookupTable(cmap.getLookupTable(nPts=256))
        self.dots = pg.ScatterPlotItem(pxMode=True, size=2, pen=None, brush=pg.mkBrush(20, 60, 160, 120))
        self.hist_curve = pg.PlotCurveItem(fillLevel=0, brush=(80, 120, 200, 150), pen=pg.mkPen((40, 60, 140)))
        for item in (self.image, self.dots, self.hist_curve):
            self.plot.addItem(item)
        self.rois: dict[tuple[str, ...], pg.GraphicsObject] = {}  # draggable gates by path
        self.outlines: dict[tuple[str, ...], list[pg.GraphicsObject]] = {}  # inert gate outlines by path
        self.overlays: dict[tuple[str, ...], list[pg.GraphicsObject]] = {}  # quadrant/ellipse items by gate path
        self.labels: dict[tuple[str, ...], pg.TextItem] = {}  # count labels by population path
        self.not_drawn: list[str] = []  # "gate: reason" for gates the current axes cannot show
        self.title = QtWidgets.QLabel()
        self.title.setTextFormat(QtCore.Qt.TextFormat.RichText)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.title)
        layout.addWidget(self.plot)
        self._drawn_data: tuple | None = None
        self.edit_target: tuple[str, ...] | None = None  # the gate picked for dragging (no tool active)
        self._dragging: tuple[str, ...] | None = None
        self._zoom_timer = QtCore.QTimer(self)
        self._zoom_timer.setSingleShot(True)
        self._zoom_timer.setInterval(ZOOM_DEBOUNCE_MS)
        self._zoom_timer.timeout.connect(self._push_zoom)

        self.viewbox.sigRectangleDrawn.connect(self._rectangle_drawn)
        self.viewbox.sigRangeDrawn.connect(self._range_drawn)
        self.viewbox.sigPolygonDrawn.connect(self._polygon_drawn)
        self.viewbox.sigEllipseDrawn.connect(self._ellipse_drawn)
        self.viewbox.sigQuadrantDrawn.connect(self._quadrant_drawn)
        self.viewbox.sigRangeChangedManually.connect(lambda *_: self._zoom_timer.start())
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        self.preview.sigCounts.connect(self._show_counts)
        for signal in (model.events.sample_changed, model.events.view, model.events.gates_changed,
                       model.events.selection):
            signal.connect(self.refresh)

    # ---- tools -------------------------------------------------------------
    @property
    def tool(self) -> str | None:
        return self.viewbox.tool

    def set_tool(self, tool: str | None) -> None:
        self.viewbox.set_tool(tool)
        cursor = QtCore.Qt.CursorShape.CrossCursor if tool in DRAW_TOOLS else QtCore.Qt.CursorShape.ArrowCursor
        self.plot.setCursor(QtGui.QCursor(cursor))
        if self.model.sample is not None and self.model.plot_exists(self.index):
            self._draw_gates()  # outlines inert while drawing, draggable in edit mode

    def keyPressEvent(self, ev):
        if ev.key() == QtCore.Qt.Key.Key_Escape:
            self.viewbox.cancel_drawing()
            self.set_tool(None)
            self.sigToolFinished.emit()
        else:
            super().keyPressEvent(ev)

    def _guarded(self, fn, *args, **kwargs) -> None:
        """Add a drawn gate; it becomes the gate picked for adjusting (drag it right away)."""
        try:
            self.edit_target = fn(*args, **kwargs)
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))
        finally:
            self.set_tool(None)
            self.sigToolFinished.emit()
        if self.edit_target is not None:
            self.sigGateDrawn.emit(self.edit_target)

    def _rectangle_drawn(self, x0, x1, y0, y1):
        self._guarded(self.model.add_rectangle_gate, x0, x1, y0, y1, plot=self.index)

    def _range_drawn(self, x0, x1):
        self._guarded(self.model.add_rectangle_gate, x0, x1, plot=self.index)

    def _polygon_drawn(self, vertices):
        self._guarded(self.model.add_polygon_gate, vertices, plot=self.index)

    def _ellipse_drawn(self, cx, cy, a, b):
        self._guarded(self.model.add_ellipse_gate, (cx, cy), (a, b), plot=self.index)

    def _quadrant_drawn(self, x, y):
        self._guarded(self.model.add_quadrant_gate, x, y, plot=self.index)

    def _clicked(self, ev) -> None:
        """A click makes this plot the active one and, with no tool, picks the gate under the mouse."""
        self.sigActivated.emit(self.index)
        if self.viewbox.tool is not None or self.model.sample is None or ev.button() != QtCore.Qt.MouseButton.LeftButton:
            return
        p = self.viewbox.mapSceneToView(ev.scenePos())
        target = self.gate_under(p.x(), p.y())
        if target != self.edit_target:
            self.edit_target = target
            self._draw_gates()

    def gate_under(self, x: float, y: float) -> tuple[str, ...] | None:
        """The deepest gate drawn on this plot that contains the point (plot coordinates)."""
        from matplotlib.path import Path as MplPath

        best = None
        for ov in self.model.gate_overlays(self.index)[0]:
            if ov.kind == "quadrant":
                continue
            if ov.kind == "ellipse":
                inside = MplPath(ov.outline).contains_point((x, y))
            elif isinstance(ov.gate, PolygonGate):
                inside = MplPath(ov.plot_vertices()).contains_point((x, y))
            else:
                mins, maxs = ov.plot_bounds()
                inside = all((lo is None or lo <= v) and (hi is None or v <= hi)
                             for v, lo, hi in zip((x, y), mins, maxs))
            if inside and (best is None or len(ov.path) > len(best)):
                best = ov.path
        return best

    def _push_zoom(self) -> None:
        m = self.model
        if m.sample is None or not m.plot_exists(self.index):
            return
        (x0, x1), (y0, y1) = self.viewbox.viewRange()
        histogram = m.plots[self.index].mode == "histogram"
        try:
            m.set_zoom((x0, x1), None if histogram else (y0, y1), plot=self.index)
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))

    # ---- rendering -------------------------------------------------------
    def refresh(self, *_):
        if self._dragging is not None:
            return  # the model changes under a drag only through the drag itself
        try:
            self._refresh()
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))

    def _refresh(self) -> None:
        m = self.model
        if m.sample is None or not m.plot_exists(self.index):
            self.image.hide()
            self.dots.hide()
            self.hist_curve.hide()
            self._clear_gates()
            self._drawn_data = None
            self.title.setText("Open an FCS file (File > Open, or drop files here)")
            return
        p = m.plots[self.index]
        shown = m.shown_population(self.index)
        count, _ = m.population_count(shown)
        active = "&#9679; " if m.active_plot == self.index and len(m.plots) > 1 else ""
        self.title.setText(f"{active}<b>{m.sample.name}</b> &mdash; {path_str(shown) if shown else 'All events'}"
                           + (f" ({count:,} events)" if count is not None else " (cannot be evaluated)"))
        key = (id(m.sample), repr(p.to_json()), m.compensated, shown,
               m.gates_version if shown else 0)
        if key != self._drawn_data:
            self._draw_data(p)
            self._drawn_data = key
        self._draw_gates()

    def _draw_data(self, p) -> None:
        m, i = self.model, self.index
        self.image.hide()
        self.dots.hide()
        self.hist_curve.hide()
        xr = m.axis_range("x", i)
        self._label_axis("bottom", "x")
        if p.mode == "histogram":
            counts, edges = m.histogram(plot=i)
            self.hist_curve.setData(edges, counts.astype(float), stepMode="center")
            self.hist_curve.show()
            self.plot.getPlotItem().getAxis("left").setTicks(None)
            self.plot.setLabel("left", "events")
            self.viewbox.setRange(xRange=xr, yRange=(0, max(1.0, float(counts.max(initial=0)) * 1.05)), padding=0)
            return
        self._label_axis("left", "y")
        if p.mode == "density":
            h, xr, yr = m.density(plot=i)
            # log scale so that rare populations stay visible; empty bins transparent
            img = np.where(h > 0, np.log10(np.maximum(h, 1)) + 1.0, np.nan)
            self.image.setImage(img, autoLevels=False, levels=(0.0, float(np.nanmax(img, initial=1.0))))
            self.image.setRect(QtCore.QRectF(xr[0], yr[0], xr[1] - xr[0], yr[1] - yr[0]))
            self.image.show()
        else:
            yr = m.axis_range("y", i)
            x, y = m.display_points(plot=i)
            self.dots.setData(x, y)
            self.dots.show()
        self.viewbox.setRange(xRange=xr, yRange=yr, padding=0)

    def _label_axis(self, side: str, axis: str) -> None:
        m, p = self.model, self.model.plots[self.index]
        channel = p.x_channel if axis == "x" else p.y_channel
        kind = p.x_transform if axis == "x" else p.y_transform
        label = dict(m.channel_choices()).get(channel, channel)
        comp = " comp" if m.dimension(axis, self.index).compensation else ""
        self.plot.setLabel(side, f"{label} [{kind}{comp}]")
        ticks = m.axis_ticks(axis, self.index)
        self.plot.getPlotItem().getAxis(side).setTicks(None if ticks is None else [ticks, []])

    # ---- gates -------------------------------------------------------------
    def _clear_gates(self) -> None:
        for items in (self.rois.values(), *self.outlines.values(), *self.overlays.values(), self.labels.values()):
            for item in list(items):
                self.plot.removeItem(item)
        self.rois.clear()
        self.outlines.clear()
        self.overlays.clear()
        self.labels.clear()

    def _editable(self, path) -> bool:
        tool = self.viewbox.tool
        if tool in DRAW_TOOLS:
            return False
        return tool == "edit" or self.model.selected == path or self.edit_target == path

    def _draw_gates(self) -> None:
        m = self.model
        self._clear_gates()
        xr, yr = self.viewbox.viewRange()
        overlays, reasons = m.gate_overlays(self.index)
        self.not_drawn = reasons
        if self.index == m.active_plot:  # the status bar speaks for the plot the controls edit
            self.sigStatus.emit("not drawn: " + "; ".join(reasons) if reasons else "")
        for ov in overlays:
            pen = (SELECTED_GATE_PEN if m.selected[: len(ov.path)] == ov.path
                   else GATE_PEN if ov.exact else REPROJECTED_PEN)
            if ov.kind == "quadrant":
                self._draw_quadrant(ov, xr, yr, pen)
            elif ov.kind == "ellipse":
                self._draw_ellipse(ov, pen)
            else:
                self._draw_roi(ov, pen, xr, yr)

    def _label(self, path, pos, anchor, pen, tip: str = "") -> pg.TextItem:
        count, pct = self.model.population_count(path)
        label = pg.TextItem(count_text(path[-1], count, pct), color=pen.color(), anchor=anchor, fill=LABEL_FILL)
        (x0, x1), (y0, y1) = self.viewbox.viewRange()
        # keep the label on the plot: a gate reaching past the view still shows its numbers
        label.setPos(min(max(pos[0], x0), x1), min(max(pos[1], y0), y1))
        label.setZValue(60)
        label.setAcceptedMouseButtons(QtCore.Qt.MouseButton.NoButton)  # labels never take a drag
        if tip:
            label.setToolTip(tip)
        self.plot.addItem(label, ignoreBounds=True)
        self.labels[path] = label
        return label

    def _draw_roi(self, ov, pen, xr, yr) -> None:
        path, gate = ov.path, ov.gate
        editable = self._editable(path)
        tip = f"{path_str(path)}" + (f" ({ov.note})" if ov.note else "")
        if isinstance(gate, PolygonGate):
            verts = ov.plot_vertices()
            if editable:
                item = pg.PolyLineROI([tuple(v) for v in verts], closed=True, pen=pen, movable=True)
            else:
                closed = np.vstack([verts, verts[:1]])
                item = pg.PlotCurveItem(closed[:, 0], closed[:, 1], pen=pen)
            top = int(np.argmax(verts[:, 1]))
            label_at, anchor = (float(verts[top, 0]), float(verts[top, 1])), (0.5, 1.5)  # clear of the vertex
        elif isinstance(gate, RectangleGate) and len(gate.dimensions) == 1:
            mins, maxs = ov.plot_bounds()
            lo = xr[0] if mins[0] is None else mins[0]
            hi = xr[1] if maxs[0] is None else maxs[0]
            item = pg.LinearRegionItem((lo, hi), pen=pen, brush=(255, 140, 0, 40), movable=editable)
            label_at, anchor = ((lo + hi) / 2, yr[1]), (0.5, 0.0)
        else:
            mins, maxs = ov.plot_bounds()
            lo = [r[0] if v is None else v for v, r in zip(mins, (xr, yr))]
            hi = [r[1] if v is None else v for v, r in zip(maxs, (xr, yr))]
            if editable:
                item = pg.RectROI(lo, [hi[0] - lo[0], hi[1] - lo[1]], pen=pen, movable=True)
                for corner in ((0, 0), (1, 0), (0, 1)):  # every corner resizes, not only the top-right
                    item.addScaleHandle(list(corner), [1 - corner[0], 1 - corner[1]])
            else:
                item = pg.PlotCurveItem([lo[0], hi[0], hi[0], lo[0], lo[0]], [lo[1], lo[1], hi[1], hi[1], lo[1]], pen=pen)
            label_at, anchor = (lo[0], hi[1]), (0.0, 1.3)  # above the top-left corner, clear of its handle
        item.setZValue(50)
        self.plot.addItem(item, ignoreBounds=True)
        label = self._label(path, label_at, anchor, pen, tip)
        if editable:
            self.rois[path] = item
            self._connect_drag(path, item)
        else:
            item.setToolTip(tip)
            self.outlines[path] = [item]
        del label

    def _draw_ellipse(self, ov, pen) -> None:
        out = ov.outline
        top = int(np.argmax(out[:, 1]))
        curve = pg.PlotCurveItem(out[:, 0], out[:, 1], pen=pen)
        self._add_overlay(ov.path, curve)
        if self._editable(ov.path) and ov.exact:
            # an invisible box around the outline carries the move/scale handles; the outline follows it
            lo, hi = out.min(axis=0), out.max(axis=0)
            roi = pg.ROI(lo, hi - lo, pen=pg.mkPen(None), movable=True)
            roi.addScaleHandle([1, 1], [0.5, 0.5])
            roi.addScaleHandle([0, 0], [0.5, 0.5])
            roi._ellipse = (lo.copy(), (hi - lo).copy(), out.copy(), curve)
            roi.setZValue(55)
            self.plot.addItem(roi, ignoreBounds=True)
            self.rois[ov.path] = roi
            self._connect_drag(ov.path, roi)
        self._label(ov.path, (float(out[top, 0]), float(out[top, 1])), (0.5, 1.3), pen, ov.note)

    def _add_overlay(self, path, *items) -> None:
        for item in items:
            item.setZValue(50)
            self.plot.addItem(item, ignoreBounds=True)
        self.overlays.setdefault(path, []).extend(items)

    def _draw_quadrant(self, ov, xr, yr, pen) -> None:
        """Divider lines across the plot and, in each visible cell, its name, count and % of parent."""
        m = self.model
        editable = self._editable(ov.path) or any(self._editable(cell[0]) for cell in ov.cells)
        items = []
        for axis, v in ov.lines:
            line = pg.InfiniteLine(pos=v, angle=90 if axis == "x" else 0, pen=pen, movable=editable)
            if editable:
                line.sigPositionChanged.connect(lambda _l, p=ov.path: self._drag_step(p))
                line.sigPositionChangeFinished.connect(
                    lambda _l, p=ov.path: QtCore.QTimer.singleShot(0, lambda: self._drag_finished(p)))
                line._quadrant_axis = axis
            items.append(line)
        if editable:
            self.rois[ov.path] = items
        for path, *cell in ov.cells:
            lo_hi = []
            for (lo, hi), (vlo, vhi) in zip(cell, (xr, yr)):
                lo, hi = max(lo, vlo), min(hi, vhi)
                lo_hi.append((lo, hi))
            (x0, x1), (y0, y1) = lo_hi
            if x1 <= x0 or y1 <= y0:
                continue  # the cell is outside the visible range
            count, pct = m.population_count(path)
            selected = m.selected == path
            text = pg.TextItem(count_text(path[-1], count, pct), anchor=(0.5, 0.5),
                               color=SELECTED_GATE_PEN.color() if selected else pen.color(), fill=LABEL_FILL)
            text.setPos((x0 + x1) / 2, (y0 + y1) / 2)
            self.labels[path] = text
            items.append(text)
        self._add_overlay(ov.path, *items)

    # ---- dragging ----------------------------------------------------------
    def _connect_drag(self, path, item) -> None:
        changed = item.sigRegionChanged if hasattr(item, "sigRegionChanged") else None
        if changed is not None:
            changed.connect(lambda *_: self._drag_step(path))
        # deferred: the edit rebuilds every item, which must not happen inside the item's own handler
        item.sigRegionChangeFinished.connect(
            lambda *_: QtCore.QTimer.singleShot(0, lambda: self._drag_finished(path)))

    def _geometry(self, path) -> dict:
        """The dragged item's geometry in plot coordinates, as ``gate_from_plot`` takes it."""
        item = self.rois[path]
        if isinstance(item, list):  # quadrant divider lines
            return {"dividers": {line._quadrant_axis: float(line.value()) for line in item
                                 if isinstance(line, pg.InfiniteLine)}}
        if isinstance(item, pg.LinearRegionItem):
            lo, hi = item.getRegion()
            return {"mins": [lo], "maxs": [hi]}
        if isinstance(item, pg.PolyLineROI):
            pts = [item.mapToParent(h.pos()) for h in item.getHandles()]
            return {"vertices": np.array([(p.x(), p.y()) for p in pts])}
        if hasattr(item, "_ellipse"):
            lo0, size0, outline, curve = item._ellipse
            pos, size = np.array([item.pos().x(), item.pos().y()]), np.array([item.size().x(), item.size().y()])
            scale = size / size0
            translate = (pos + size / 2) - (lo0 + size0 / 2)
            centre = lo0 + size0 / 2
            moved = (outline - centre) * scale + centre + translate
            curve.setData(moved[:, 0], moved[:, 1])
            return {"translate": tuple(translate), "scale": tuple(scale)}
        pos, size = item.pos(), item.size()
        return {"mins": [pos.x(), pos.y()], "maxs": [pos.x() + size.x(), pos.y() + size.y()]}

    def _drag_step(self, path) -> None:
        """A drag moved a gate: ask for its counts (and statistics) off the UI thread."""
        if path not in self.rois:
            return
        self._dragging = path
        try:
            gate = self.model.gate_from_plot(path, self.index, **self._geometry(path))
        except CD7FlowError:
            return  # e.g. a rectangle dragged through zero width: wait for a valid shape
        self.preview.submit(path, gate)

    def _drag_finished(self, path) -> None:
        self._dragging = None
        if path not in self.rois:
            return
        try:
            self.model.edit_gate_on_plot(path, self.index, **self._geometry(path))
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))
            self.refresh()

    def _show_counts(self, counts: dict) -> None:
        """Live labels while dragging (from the worker's counts)."""
        for path, (count, pct) in counts.items():
            label = self.labels.get(path)
            if label is not None:
                label.setText(count_text(path[-1], count, pct))
