"""The 2-D / 1-D plot: density image or dots, gates as editable ROIs, gate drawing tools.

Draws what the :class:`~cd7flow.viewer.ViewerModel` says; a finished drawing or
an edited ROI is handed back to the model (which builds the gate), never evaluated
here.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from cd7flow.errors import CD7FlowError
from cd7flow.viewer import ViewerModel, path_str
from gating.gates import PolygonGate, RectangleGate

GATE_PEN = pg.mkPen((220, 30, 30), width=2)
SELECTED_GATE_PEN = pg.mkPen((255, 140, 0), width=3)
DRAW_PEN = pg.mkPen((30, 30, 220), width=2, style=QtCore.Qt.PenStyle.DashLine)


class GateDrawingViewBox(pg.ViewBox):
    """A ViewBox that, while a tool is active, turns mouse input into a gate outline.

    rectangle / range: press-drag-release. polygon: click each vertex, double-click
    or right-click to close (at least 3 vertices). Esc cancels (handled by the view).
    """

    sigRectangleDrawn = QtCore.Signal(float, float, float, float)  # x0, x1, y0, y1 (view units)
    sigRangeDrawn = QtCore.Signal(float, float)
    sigPolygonDrawn = QtCore.Signal(object)  # (n, 2) float array

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tool: str | None = None
        self._vertices: list[tuple[float, float]] = []
        self._preview = pg.PlotCurveItem(pen=DRAW_PEN)
        self._preview.setZValue(100)
        self._preview.hide()
        self.addItem(self._preview, ignoreBounds=True)

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
        if self.tool not in ("rectangle", "range") or ev.button() != QtCore.Qt.MouseButton.LeftButton:
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
                else:
                    self.sigRectangleDrawn.emit(x0, x1, y0, y1)
        else:
            self._show_preview([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])

    def mouseClickEvent(self, ev):
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
            return
        if self._vertices:
            xs, ys = zip(*(self._vertices + self._vertices[:1]))
            self._show_preview(xs, ys)


class PlotView(QtWidgets.QWidget):
    """pyqtgraph plot of the current sample's selected population, observing the model."""

    sigError = QtCore.Signal(str)
    sigStatus = QtCore.Signal(str)  # a note for the status bar (e.g. which gates are not drawn, why)
    sigToolFinished = QtCore.Signal()

    def __init__(self, model: ViewerModel, parent=None):
        super().__init__(parent)
        self.model = model
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
        self.rois: dict[tuple[str, ...], pg.GraphicsObject] = {}
        self.overlays: dict[tuple[str, ...], list[pg.GraphicsObject]] = {}  # quadrant/ellipse items by gate path
        self.not_drawn: list[str] = []  # "gate: reason" for gates the current axes cannot show
        self.title = QtWidgets.QLabel()
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.plot)

        self.viewbox.sigRectangleDrawn.connect(self._rectangle_drawn)
        self.viewbox.sigRangeDrawn.connect(self._range_drawn)
        self.viewbox.sigPolygonDrawn.connect(self._polygon_drawn)
        for signal in (model.events.current, model.events.view, model.events.gates, model.events.selection):
            signal.connect(self.refresh)

    # ---- drawing tools ---------------------------------------------------
    def set_tool(self, tool: str | None) -> None:
        self.viewbox.set_tool(tool)
        cursor = QtCore.Qt.CursorShape.CrossCursor if tool else QtCore.Qt.CursorShape.ArrowCursor
        self.plot.setCursor(QtGui.QCursor(cursor))

    def keyPressEvent(self, ev):
        if ev.key() == QtCore.Qt.Key.Key_Escape:
            self.viewbox.cancel_drawing()
            self.set_tool(None)
            self.sigToolFinished.emit()
        else:
            super().keyPressEvent(ev)

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))
        finally:
            self.set_tool(None)
            self.sigToolFinished.emit()

    def _rectangle_drawn(self, x0, x1, y0, y1):
        self._guarded(self.model.add_rectangle_gate, x0, x1, y0, y1)

    def _range_drawn(self, x0, x1):
        self._guarded(self.model.add_rectangle_gate, x0, x1)

    def _polygon_drawn(self, vertices):
        self._guarded(self.model.add_polygon_gate, vertices)

    # ---- rendering -------------------------------------------------------
    def refresh(self, *_):
        try:
            self._refresh()
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))

    def _refresh(self) -> None:
        m = self.model
        self.image.hide()
        self.dots.hide()
        self.hist_curve.hide()
        self._clear_rois()
        if m.sample is None:
            self.title.setText("Open an FCS file (File > Open, or drop files here)")
            return
        n_sel = int(np.count_nonzero(m.population_mask(m.selected)))
        self.title.setText(f"<b>{m.sample.name}</b> &mdash; {path_str(m.selected) if m.selected else 'All events'}"
                           f" ({n_sel:,} events)")
        xr = m.axis_range("x")
        self._label_axis("bottom", "x")
        if m.plot_mode == "histogram":
            counts, edges = m.histogram()
            self.hist_curve.setData(edges, counts.astype(float), stepMode="center")
            self.hist_curve.show()
            self.plot.getPlotItem().getAxis("left").setTicks(None)
            self.plot.setLabel("left", "events")
            self.viewbox.setRange(xRange=xr, yRange=(0, max(1.0, float(counts.max()) * 1.05)), padding=0)
        else:
            yr = m.axis_range("y")
            self._label_axis("left", "y")
            if m.plot_mode == "density":
                h, xr, yr = m.density()
                # log scale so that rare populations stay visible; empty bins transparent
                img = np.where(h > 0, np.log10(np.maximum(h, 1)) + 1.0, np.nan)
                self.image.setImage(img, autoLevels=False, levels=(0.0, float(np.nanmax(img, initial=1.0))))
                self.image.setRect(QtCore.QRectF(xr[0], yr[0], xr[1] - xr[0], yr[1] - yr[0]))
                self.image.show()
            else:
                x, y = m.display_points()
                self.dots.setData(x, y)
                self.dots.show()
            self.viewbox.setRange(xRange=xr, yRange=yr, padding=0)
        self._draw_gates()

    def _label_axis(self, side: str, axis: str) -> None:
        m = self.model
        channel = m.x_channel if axis == "x" else m.y_channel
        kind = m.x_transform if axis == "x" else m.y_transform
        label = dict(m.channel_choices()).get(channel, channel)
        comp = " comp" if m.dimension(axis).compensation else ""
        self.plot.setLabel(side, f"{label} [{kind}{comp}]")
        ticks = m.axis_ticks(axis)
        self.plot.getPlotItem().getAxis(side).setTicks(None if ticks is None else [ticks, []])

    def _clear_rois(self) -> None:
        for roi in self.rois.values():
            self.plot.removeItem(roi)
        self.rois.clear()
        for items in self.overlays.values():
            for item in items:
                self.plot.removeItem(item)
        self.overlays.clear()

    def _draw_gates(self) -> None:
        m = self.model
        xr = self.viewbox.viewRange()[0]
        yr = self.viewbox.viewRange()[1]
        overlays, reasons = m.gate_overlays()
        self.not_drawn = reasons
        self.sigStatus.emit("not drawn: " + "; ".join(reasons) if reasons else "")
        for ov in overlays:
            pen = SELECTED_GATE_PEN if m.selected[: len(ov.path)] == ov.path else GATE_PEN
            if ov.kind == "ellipse":
                curve = pg.PlotCurveItem(ov.outline[:, 0], ov.outline[:, 1], pen=pen)
                label = pg.TextItem(ov.path[-1], color=pen.color(), anchor=(0.5, 1))
                top = int(np.argmax(ov.outline[:, 1]))
                label.setPos(float(ov.outline[top, 0]), float(ov.outline[top, 1]))
                self._add_overlay(ov.path, curve, label)
            elif ov.kind == "quadrant":
                self._draw_quadrant(ov, xr, yr)
        for ov in (o for o in overlays if o.kind == "roi"):
            path, gate = ov.path, ov.gate
            pen = SELECTED_GATE_PEN if m.selected[: len(path)] == path else GATE_PEN
            if isinstance(gate, PolygonGate):
                roi = pg.PolyLineROI([tuple(v) for v in ov.plot_vertices()], closed=True, pen=pen, movable=True)
            elif isinstance(gate, RectangleGate) and len(gate.dimensions) == 1:
                mins, maxs = ov.plot_bounds()
                lo = xr[0] if mins[0] is None else mins[0]
                hi = xr[1] if maxs[0] is None else maxs[0]
                roi = pg.LinearRegionItem((lo, hi), pen=pen, brush=(255, 140, 0, 40))
            else:
                mins, maxs = ov.plot_bounds()
                lo = [r[0] if v is None else v for v, r in zip(mins, (xr, yr))]
                hi = [r[1] if v is None else v for v, r in zip(maxs, (xr, yr))]
                roi = pg.RectROI(lo, [hi[0] - lo[0], hi[1] - lo[1]], pen=pen, movable=True)
            roi.setZValue(50)
            label = pg.TextItem(path[-1], color=pen.color(), anchor=(0, 1))
            label.setParentItem(roi)
            # deferred: the edit rebuilds every ROI, which must not happen inside the ROI's own drag handler
            roi.sigRegionChangeFinished.connect(
                lambda r, p=path: QtCore.QTimer.singleShot(0, lambda: self._roi_edited(p, r)))
            self.plot.addItem(roi)
            self.rois[path] = roi

    def _add_overlay(self, path, *items) -> None:
        for item in items:
            item.setZValue(50)
            self.plot.addItem(item, ignoreBounds=True)
        self.overlays.setdefault(path, []).extend(items)

    def _draw_quadrant(self, ov, xr, yr) -> None:
        """Divider lines across the plot and, in each visible cell, its name, count and % of parent."""
        m = self.model
        items = [pg.InfiniteLine(pos=v, angle=90 if axis == "x" else 0, pen=GATE_PEN, movable=False)
                 for axis, v in ov.lines]
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
            text = pg.TextItem(f"{path[-1]}\n{count:,} ({pct:.1f}%)", anchor=(0.5, 0.5),
                               color=SELECTED_GATE_PEN.color() if selected else GATE_PEN.color(),
                               fill=pg.mkBrush(255, 255, 255, 170))
            text.setPos((x0 + x1) / 2, (y0 + y1) / 2)
            items.append(text)
        self._add_overlay(ov.path, *items)

    def _roi_edited(self, path, roi) -> None:
        try:
            if isinstance(roi, pg.LinearRegionItem):
                lo, hi = roi.getRegion()
                self.model.edit_gate_on_plot(path, mins=[lo], maxs=[hi])
            elif isinstance(roi, pg.PolyLineROI):
                pts = [roi.mapToParent(h.pos()) for h in roi.getHandles()]
                self.model.edit_gate_on_plot(path, vertices=np.array([(p.x(), p.y()) for p in pts]))
            else:
                pos, size = roi.pos(), roi.size()
                self.model.edit_gate_on_plot(path, mins=[pos.x(), pos.y()], maxs=[pos.x() + size.x(), pos.y() + size.y()])
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))
