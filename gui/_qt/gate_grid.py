"""The automated gates' plots: one small plot per gating step, with back-gating.

:class:`GateGrid` draws every gating step of the model's tree on its own plot in the gates' own
dimensions and transforms (the protocol's fitted logicle), with the pictures of
:func:`cd7flow.workstation.autogate.step_pictures` binned on a worker thread from columns and masks
read on the UI thread (a million events take about half a second to bin). Each gate is labelled with its count and % of parent; the
selected population's events are red in every plot of its ancestors (back-gating). Clicking inside
a gate selects its population; a double click puts the step on the main plot (its channels and
scales, its parent selected) for editing.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from cd7flow.errors import CD7FlowError
from cd7flow.viewer import TRANSFORM_KINDS
from cd7flow.workstation.autogate import (
    GatePlot, StepPicture, backgated, gate_plots, picture_inputs, step_pictures,
)
from gating.gates import points_in_polygon

from .workers import LatestWins

GATE_PEN = pg.mkPen((20, 90, 200), width=1.5)
SELECTED_PEN = pg.mkPen((255, 140, 0), width=2.5)
PLOT_WIDTH, PLOT_HEIGHT = 215, 220  # pixels per small plot; the grid has as many columns as fit


class _StepPlot(pg.PlotItem):
    """One gating step; a left click inside one of its gates selects that population."""

    def __init__(self, grid: "GateGrid", step: GatePlot):
        super().__init__()
        self.grid, self.step = grid, step
        self.setMenuEnabled(False)
        self.hideButtons()
        self.getViewBox().setMouseEnabled(x=False, y=False)
        for side in ("left", "bottom"):
            self.getAxis(side).enableAutoSIPrefix(False)
            self.getAxis(side).setStyle(tickFont=QtGui.QFont("Sans", 7))

    def mouseClickEvent(self, ev):
        if ev.button() != QtCore.Qt.MouseButton.LeftButton:
            return
        if ev.double():  # the main plot takes this step's dimensions and shows its parent's events
            ev.accept()
            self.grid.show_on_main_plot(self.step)
            return
        p = self.getViewBox().mapSceneToView(ev.scenePos())
        path = self.step.parent
        for g in self.step.gates:
            if g.interval is not None:
                inside = g.interval[0] <= p.x() < g.interval[1]
            else:
                inside = bool(points_in_polygon(np.array([p.x()]), np.array([p.y()]), g.outline[:-1])[0])
            if inside:
                path = g.path
                break
        ev.accept()
        self.grid.select(path)


class GateGrid(pg.GraphicsLayoutWidget):
    """Every drawable gating step of the current sample's tree, as many plots a row as fit
    (it sits in a scroll area: its height grows with the number of rows).

    Redraws (coalesced: at most once per event-loop pass after a burst of changes) when the
    gates, the sample or the selection change. ``plots`` holds the shown steps.
    """

    sigError = QtCore.Signal(str)

    def __init__(self, model, parent=None):
        super().__init__(parent)
        self.model = model
        self.setBackground("w")
        self.plots: list[_StepPlot] = []
        self.columns = 2
        self.not_drawn: dict = {}
        self._steps_key = None
        self._limits: dict[int, dict] = {}
        self._generation = 0
        self.worker = LatestWins(self)  # the pictures: a million events take about half a second
        self.worker.sigPart.connect(self._pictures_done)
        self.worker.sigError.connect(self._pictures_failed)
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self.refresh)
        for signal in (model.events.gates_changed, model.events.sample_changed, model.events.selection):
            signal.connect(self.schedule)

    def schedule(self, *_):
        self._timer.start()

    def select(self, path) -> None:
        try:
            self.model.select(tuple(path))
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))

    def show_on_main_plot(self, step: GatePlot) -> None:
        """The main (active) plot takes ``step``'s channels, compensation and kind of scale, and
        the step's parent population is selected, so its gates are drawn there to be edited."""
        m = self.model
        transforms = m.strategy().transforms

        def kind(d) -> str:
            k = "linear" if d.transform is None else getattr(transforms.get(d.transform), "kind", "logicle")
            return k if k in TRANSFORM_KINDS else "logicle"

        try:
            if any(d.compensation is not None for d in step.dimensions) and not m.compensated and m.can_compensate:
                m.set_compensated(True)
            if len(step.dimensions) == 2:
                if m.plot_mode == "histogram":
                    m.set_plot_mode("density")
                m.set_axes(x=step.dimensions[0].channel, y=step.dimensions[1].channel,
                           x_transform=kind(step.dimensions[0]), y_transform=kind(step.dimensions[1]))
            else:
                m.set_plot_mode("histogram")
                m.set_axes(x=step.dimensions[0].channel, x_transform=kind(step.dimensions[0]))
            m.select(step.parent)
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))

    def refresh(self, *_):
        """Rebuild the plots (when the tree's steps changed) and redraw their pictures."""
        self._timer.stop()
        m = self.model
        try:
            tree = m.tree() if m.sample is not None else None
            if tree is None or not len(tree):
                self._rebuild(None)
                return
            source, result = m.source(), m.result()
            limits = self._limits.setdefault(id(m.sample), {})
            if len(self._limits) > 1:  # only the current sample's limits are kept
                self._limits = {id(m.sample): limits}
            steps = gate_plots(tree, source, limits)
            # columns and masks are read here, on the UI thread (the worker touches no model cache)
            inputs = picture_inputs(steps.plots, result, source, tuple(m.selected))
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))
            self._rebuild(None)
            return
        self.not_drawn = steps.not_drawn
        key = (id(m.sample), [(s.parent, s.dimensions, s.ranges, tuple(s.paths)) for s in steps.plots])
        if key != self._steps_key:
            self._rebuild(steps.plots)
            self._steps_key = key
        else:  # same steps: keep the items, new geometry and counts
            for item, step in zip(self.plots, steps.plots):
                item.step = step
        for item in self.plots:  # axes now (a click maps through them); pictures when computed
            item.setXRange(*item.step.ranges[0], padding=0)
            if len(item.step.dimensions) == 2:
                item.setYRange(*item.step.ranges[1], padding=0)
        self._generation += 1
        plotted = [i.step for i in self.plots]
        self.worker.submit(self._generation, lambda: iter([step_pictures(plotted, inputs)]))

    @property
    def busy(self) -> bool:
        """Pictures are being computed (on the worker thread)."""
        return self.worker.busy

    def wait(self, msecs: int = 60_000) -> None:
        """Block until the pictures are drawn (headless screenshots)."""
        deadline = QtCore.QDeadlineTimer(msecs)
        while self.worker.busy and not deadline.hasExpired():
            self.worker.wait(max(int(deadline.remainingTime()), 1))
            QtCore.QCoreApplication.sendPostedEvents()
            QtWidgets.QApplication.processEvents()

    def _pictures_failed(self, generation: int, message: str) -> None:
        if generation == self._generation:
            self.sigError.emit(f"gate plots: {message}")

    def _pictures_done(self, generation: int, _index: int, pictures) -> None:
        if generation != self._generation:
            return  # a newer refresh is on its way, or the plots are gone
        transforms = self.model.strategy().transforms
        selected = tuple(self.model.selected)
        for item, picture in zip(self.plots, pictures):
            self._draw(item, picture, transforms, selected)

    def _rebuild(self, steps) -> None:
        self._generation += 1  # pictures still being computed are for plots that are gone
        self.clear()
        self.plots = [_StepPlot(self, step) for step in steps or []]
        self._steps_key = None
        self._place()

    def _place(self) -> None:
        """Lay the plots out in rows of ``columns``; the widget is as tall as its rows."""
        for item in self.plots:
            if item.scene() is not None:
                self.ci.removeItem(item)
        for k, item in enumerate(self.plots):
            self.addItem(item, row=k // self.columns, col=k % self.columns)
        rows = -(-len(self.plots) // self.columns)
        self.setMinimumHeight(max(rows, 1) * PLOT_HEIGHT)

    def fit_columns(self, width: int) -> None:
        """Columns for a viewport ``width`` pixels wide (called by the scroll area on resize)."""
        columns = max(1, width // PLOT_WIDTH)
        if columns != self.columns:
            self.columns = columns
            self._place()

    def _draw(self, item: _StepPlot, picture: StepPicture, transforms, selected) -> None:
        step = item.step
        item.clear()
        peak = 0.0
        if picture.rgba is not None:
            image = pg.ImageItem(picture.rgba)
            (x0, x1), (y0, y1) = step.ranges
            image.setRect(QtCore.QRectF(x0, y0, x1 - x0, y1 - y0))
            item.addItem(image)
            item.setLabel("left", step.axis_label(1, transforms), **{"font-size": "7pt"})
        else:
            edges, base, high = picture.edges, picture.base, picture.high
            peak = float(max(base.max(), 1))
            item.addItem(pg.PlotCurveItem(edges, base, stepMode="center", fillLevel=0,
                                          brush=(150, 150, 150, 120), pen=pg.mkPen((90, 90, 90))))
            if high.any():
                item.addItem(pg.PlotCurveItem(edges, high, stepMode="center", fillLevel=0,
                                              brush=(225, 40, 20, 150), pen=pg.mkPen((225, 40, 20))))
            item.setLabel("left", "events", **{"font-size": "7pt"})
        item.setLabel("bottom", step.axis_label(0, transforms), **{"font-size": "7pt"})
        parent_name = step.parent[-1] if step.parent else "All events"
        item.setTitle(f"<span style='font-size:8pt'>{parent_name}"
                      + (" <span style='color:#e12814'>(back-gated)</span>" if backgated(step, selected) else "")
                      + "</span>")
        for g in step.gates:
            pen = SELECTED_PEN if g.path == selected else GATE_PEN
            n, pct = picture.counts[g.path]
            label = pg.TextItem(f"{g.name}\n{n:,} ({pct:.1f}%)" if math.isfinite(pct) else f"{g.name}\n{n:,}",
                                color=(20, 60, 160))
            label.setFont(QtGui.QFont("Sans", 7))
            if g.interval is not None:
                lo, hi = g.interval
                for v in (lo, hi):
                    item.addItem(pg.InfiniteLine(v, angle=90, pen=pen))
                label.setAnchor((0.5, 0.0))  # hangs below the histogram's peak, inside the plot
                item.addItem(label, ignoreBounds=True)
                label.setPos((max(lo, step.ranges[0][0]) + min(hi, step.ranges[0][1])) / 2, peak)
            else:
                item.addItem(pg.PlotCurveItem(g.outline[:, 0], g.outline[:, 1], pen=pen))
                label.setAnchor((0.5, 0.5))  # inside the gate, at the middle of its (visible) outline
                item.addItem(label, ignoreBounds=True)
                centre = g.outline[:-1].mean(axis=0)
                label.setPos(float(np.clip(centre[0], *step.ranges[0])), float(np.clip(centre[1], *step.ranges[1])))
        item.setXRange(*step.ranges[0], padding=0)
        if len(step.dimensions) == 2:
            item.setYRange(*step.ranges[1], padding=0)
        else:
            item.enableAutoRange(axis="y")


class GridScroll(QtWidgets.QScrollArea):
    """Vertical scrolling for the grid; its width decides the number of columns."""

    def __init__(self, grid: GateGrid):
        super().__init__()
        self.grid = grid
        self.setWidget(grid)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def resizeEvent(self, ev):
        self.grid.fit_columns(self.viewport().width())
        super().resizeEvent(ev)
