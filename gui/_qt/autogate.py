"""Auto-gate in the viewer: the protocol fit off the UI thread, and one small plot per gating step.

:class:`AutoGateController` runs :func:`cd7flow.workstation.autogate.run_autogate` on a
``QThreadPool`` worker (the fit takes about a second per 25,000 events) and, back on the UI
thread, hands the fitted tree to the model (``set_tree(..., automated=True)``); the population
tree then shows the gate sequence with counts. :class:`GateGrid` draws every gating step on its
own plot in the protocol's dimensions and transforms (pictures from
:func:`cd7flow.workstation.autogate.plot_density` / ``plot_histogram``), labels each gate with
its count and % of parent, and back-gates: the selected population's events are red inside
every plot of its ancestors. Clicking inside a gate selects its population; a double click
puts the step on the main plot (its channels and scales, its parent selected) for editing.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from cd7flow.errors import CD7FlowError
from cd7flow.viewer import TRANSFORM_KINDS
from cd7flow.workstation.autogate import (
    AutoGate, GatePlot, StepPicture, backgated, choose_protocol, gate_plots, protocol_choices, run_autogate,
    step_pictures,
)
from gating.gates import points_in_polygon

AUTO = "auto (the file's protocol)"
GATE_PEN = pg.mkPen((20, 90, 200), width=1.5)
SELECTED_PEN = pg.mkPen((255, 140, 0), width=2.5)
PLOT_WIDTH, PLOT_HEIGHT = 215, 220  # pixels per small plot; the grid has as many columns as fit


class _Signals(QtCore.QObject):
    finished = QtCore.Signal(object, object)  # (job id, AutoGate)
    failed = QtCore.Signal(object, str)  # (job id, message)


class _Job(QtCore.QRunnable):
    """One fit on a worker thread; the result travels back by a queued signal."""

    def __init__(self, job: int, sample, protocol, why: str):
        super().__init__()
        self.job, self.sample, self.protocol, self.why = job, sample, protocol, why
        self.signals = _Signals()

    def run(self) -> None:
        try:
            result = (run_autogate(self.sample, self.protocol, why=self.why) if self.protocol
                      else run_autogate(self.sample))
        except CD7FlowError as exc:
            self.signals.failed.emit(self.job, str(exc))
        except Exception as exc:  # noqa: BLE001 - a fit bug must reach the user, not kill the worker silently
            self.signals.failed.emit(self.job, f"{self.sample.name}: auto-gating failed: {type(exc).__name__}: {exc}")
        else:
            self.signals.finished.emit(self.job, result)


class AutoGateController(QtCore.QObject):
    """Runs auto-gating of the current sample and puts the fitted tree into the model.

    ``protocol`` None = chosen per tube (:func:`~cd7flow.workstation.autogate.choose_protocol`).
    A fit whose sample is no longer current when it ends is dropped (the user moved on).
    """

    sigStarted = QtCore.Signal(str)  # what is being fitted
    sigFinished = QtCore.Signal(object)  # AutoGate, after the model holds its tree
    sigFailed = QtCore.Signal(str)
    sigDropped = QtCore.Signal(str)  # a fit ended after its sample stopped being shown

    def __init__(self, model, parent=None):
        super().__init__(parent)
        self.model = model
        self.protocol: str | None = None  # the user's choice here; None: the browser's, else by tube
        self.protocol_hint = None  # callable(sample) -> protocol name or None (the sample browser's choice)
        self.last: AutoGate | None = None
        self._pool = QtCore.QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._job = 0
        self._running: dict[int, _Job] = {}

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def _target(self):
        """(sample, protocol to fit or None = by tube, why, name shown)."""
        sample = self.model.sample
        if sample is None:
            raise CD7FlowError("open a sample first")
        if self.protocol:
            return sample, self.protocol, "chosen by the user", self.protocol
        hinted = self.protocol_hint(sample) if self.protocol_hint is not None else None
        if hinted:
            return sample, hinted, "the sample browser's protocol for this file", hinted
        return sample, None, "", choose_protocol(sample)[0]

    def start(self) -> None:
        """Fit on a worker thread; sigFinished or sigFailed follows."""
        sample, protocol, why, name = self._target()
        self._job += 1
        job = _Job(self._job, sample, protocol, why)
        job.setAutoDelete(False)  # kept in _running until its signal is handled
        job.signals.finished.connect(self._finished, QtCore.Qt.ConnectionType.QueuedConnection)
        job.signals.failed.connect(self._failed, QtCore.Qt.ConnectionType.QueuedConnection)
        self._running[self._job] = job
        self.sigStarted.emit(f"auto-gating {sample.name} with protocol {name}...")
        self._pool.start(job)

    def run_now(self) -> AutoGate:
        """Fit on this thread and apply (headless screenshots, scripts); raises CD7FlowError."""
        sample, protocol, why, _ = self._target()
        result = run_autogate(sample, protocol, why=why) if protocol else run_autogate(sample)
        self._apply(result)
        return result

    def wait(self, msecs: int = 120_000) -> bool:
        return self._pool.waitForDone(msecs)

    def _finished(self, job: int, result: AutoGate) -> None:
        self._running.pop(job, None)
        if job != self._job:
            return  # a newer request is running
        if result.sample is not self.model.sample:
            self.sigDropped.emit(f"fit of {result.sample.name} dropped: another sample is shown now")
            return
        try:
            self._apply(result)
        except CD7FlowError as exc:
            self.sigFailed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - the busy indicator must stop and the user must know
            self.sigFailed.emit(f"{result.sample.name}: the fitted gates could not be shown: {type(exc).__name__}: {exc}")
            raise

    def _failed(self, job: int, message: str) -> None:
        self._running.pop(job, None)
        if job == self._job:
            self.sigFailed.emit(message)

    def _apply(self, result: AutoGate) -> None:
        p, strategy = result.protocol, result.strategy
        self.model.set_tree(strategy.tree, automated=True, source=f"{p.name} v{p.version}",
                            transforms=strategy.transforms, compensations=strategy.compensations)
        self.last = result
        self.sigFinished.emit(result)


# ---------------------------------------------------------------- the plots
class _PictureSignals(QtCore.QObject):
    done = QtCore.Signal(object, object)  # (generation, list[StepPicture] or an error message)


class _PictureJob(QtCore.QRunnable):
    """The grid's pictures on a worker thread (a million events take about half a second)."""

    def __init__(self, generation: int, steps, result, source, selected):
        super().__init__()
        self.generation, self.steps, self.result, self.source, self.selected = generation, steps, result, source, selected
        self.signals = _PictureSignals()

    def run(self) -> None:
        try:
            pictures = step_pictures(self.steps, self.result, self.source, self.selected)
        except Exception as exc:  # noqa: BLE001 - shown in the status line, never lost on the worker
            pictures = f"gate plots: {type(exc).__name__}: {exc}"
        self.signals.done.emit(self.generation, pictures)


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
        self._jobs: dict[int, _PictureJob] = {}
        self._pool = QtCore.QThreadPool(self)
        self._pool.setMaxThreadCount(1)
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
        job = _PictureJob(self._generation, [i.step for i in self.plots], result, source, tuple(m.selected))
        job.setAutoDelete(False)  # kept in _jobs until its signal is handled
        job.signals.done.connect(self._pictures_done, QtCore.Qt.ConnectionType.QueuedConnection)
        self._jobs[self._generation] = job
        self._pool.start(job)

    @property
    def busy(self) -> bool:
        """Pictures are being computed (on the worker thread)."""
        return bool(self._jobs)

    def wait(self, msecs: int = 60_000) -> None:
        """Block until the pictures are drawn (headless screenshots)."""
        self._pool.waitForDone(msecs)
        QtCore.QCoreApplication.sendPostedEvents()
        QtWidgets.QApplication.processEvents()

    def _pictures_done(self, generation: int, pictures) -> None:
        self._jobs.pop(generation, None)
        if generation != self._generation:
            return  # a newer refresh is on its way
        if isinstance(pictures, str):
            self.sigError.emit(pictures)
            return
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


class _GridScroll(QtWidgets.QScrollArea):
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


class AutoGatePanel(QtWidgets.QWidget):
    """Protocol choice, the Auto-gate button with a busy indicator, and the gate grid."""

    def __init__(self, model, parent=None):
        super().__init__(parent)
        self.model = model
        self.controller = AutoGateController(model, self)
        self.protocol = QtWidgets.QComboBox()
        self.protocol.addItem(AUTO, None)  # the sample browser's protocol when it has the file
        for name in protocol_choices():
            self.protocol.addItem(name, name)
        self.protocol.setToolTip("Protocol whose automated gates are fitted; 'auto': the sample browser's "
                                 "protocol for the file, else by tube (screening/FMO: screening, CAR/MRD: car, "
                                 "else leukocytes)")
        self.run_button = QtWidgets.QPushButton("Auto-gate")
        self.run_button.setToolTip("Fit the protocol's gates on the current sample (Ctrl+G)")
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 0)  # busy: the fit reports no fractions
        self.progress.setMaximumWidth(120)
        self.progress.hide()
        self.status = QtWidgets.QLabel()
        self.status.setWordWrap(True)
        self._busy_text = ""
        self._clock = QtCore.QElapsedTimer()
        self._ticker = QtCore.QTimer(self)
        self._ticker.setInterval(200)
        self._ticker.timeout.connect(self._tick)
        self.grid = GateGrid(model)
        self.scroll = _GridScroll(self.grid)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(QtWidgets.QLabel("Protocol"))
        top.addWidget(self.protocol)
        top.addWidget(self.run_button)
        top.addWidget(self.progress)
        top.addStretch(1)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.status)
        lay.addWidget(self.scroll, 1)
        self.protocol.currentIndexChanged.connect(self._protocol_changed)
        self.run_button.clicked.connect(self.start)
        self.grid.sigError.connect(lambda text: self.status.setText(f"<span style='color:#b00'>{text}</span>"))
        c = self.controller
        c.sigStarted.connect(self._started)
        c.sigFinished.connect(self._finished)
        c.sigFailed.connect(self._failed)
        c.sigDropped.connect(lambda text: (self._done(), self.status.setText(text)))
        model.events.sample_changed.connect(self._sample_changed)

    def _sample_changed(self) -> None:
        """Say when the gates shown were fitted on another sample (the tree is shared)."""
        last, sample = self.controller.last, self.model.sample
        if last is not None and sample is not None and last.sample is not sample and not self.controller.busy:
            self.status.setText(f"gates fitted on {last.sample.name} (protocol {last.protocol.name}); "
                                f"Auto-gate fits {sample.name} itself")

    def size_dock(self) -> None:
        """Give the dock about 60% of the bottom width and two rows of plots' height."""
        window = self.window()
        dock, other = getattr(self, "dock", None), getattr(self, "neighbour", None)
        if dock is None:
            return
        if other is not None:
            width = max(window.width(), 1)
            window.resizeDocks([dock, other], [int(width * 0.6), int(width * 0.4)], QtCore.Qt.Orientation.Horizontal)
        window.resizeDocks([dock], [min(PLOT_HEIGHT + 90, window.height() // 3)], QtCore.Qt.Orientation.Vertical)

    def _protocol_changed(self, *_):
        self.controller.protocol = self.protocol.currentData()

    def start(self) -> None:
        try:
            self.controller.start()
        except CD7FlowError as exc:
            self._failed(str(exc))

    def _started(self, text: str) -> None:
        self.run_button.setEnabled(False)
        self.progress.show()
        self._busy_text = text
        self._clock.start()
        self._ticker.start()
        self.status.setText(text)

    def _tick(self) -> None:
        """The fit reports no fractions: the busy bar moves and the seconds count up."""
        self.status.setText(f"{self._busy_text} {self._clock.elapsed() / 1000:.1f} s")

    def _done(self) -> None:
        self._ticker.stop()
        self.run_button.setEnabled(True)
        self.progress.hide()

    def _finished(self, result: AutoGate) -> None:
        self._done()
        p = result.protocol
        notes = result.notes()
        self.status.setText(f"{result.sample.name}: protocol {p.name} v{p.version} ({result.why}); "
                            f"{len(result.tree)} populations in {result.seconds:.1f} s"
                            + (f"; {len(notes)} note(s): " + "; ".join(notes) if notes else ""))
        self.grid.refresh()

    def _failed(self, message: str) -> None:
        self._done()
        self.status.setText(f"<span style='color:#b00'>{message}</span>")
        window = self.window()
        if hasattr(window, "show_error"):
            window.show_error(message, "Auto-gate")


def install(window) -> AutoGatePanel:
    """Add the "Automated gates" dock and Gates > Auto-gate (Ctrl+G) to the main window."""
    panel = AutoGatePanel(window.model)
    dock = QtWidgets.QDockWidget("Automated gates", window)
    dock.setObjectName("Automated gates")
    dock.setWidget(panel)
    # along the bottom, left of the statistics: the gate sequence reads left to right, as many
    # plots a row as the width allows
    window.addDockWidget(QtCore.Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    stats = next((d for d in window.findChildren(QtWidgets.QDockWidget)
                  if d is not dock and window.dockWidgetArea(d) == QtCore.Qt.DockWidgetArea.BottomDockWidgetArea), None)
    if stats is not None:
        window.splitDockWidget(dock, stats, QtCore.Qt.Orientation.Horizontal)
    panel.dock, panel.neighbour = dock, stats
    # sizes apply once the window has its own (before that Qt ignores them)
    QtCore.QTimer.singleShot(0, window, panel.size_dock)
    menu = next((a.menu() for a in window.menuBar().actions() if a.text().replace("&", "") == "Gates"), None)
    menu = menu or window.menuBar().addMenu("&Gates")
    act = QtGui.QAction("&Auto-gate current sample", window)
    act.setShortcut(QtGui.QKeySequence("Ctrl+G"))
    act.triggered.connect(lambda *_: panel.start())
    menu.insertAction(menu.actions()[0] if menu.actions() else None, act)
    panel.controller.protocol_hint = lambda sample: _browser_protocol(window, sample)
    window.autogate = panel
    window.act_autogate = act
    return panel


def _browser_protocol(window, sample) -> str | None:
    """The protocol the sample browser shows for ``sample`` (its tube's, or the user's pick there),
    when the window has a browser and the file is in its workspace."""
    workstation = getattr(window, "workstation", None)
    workspace = getattr(getattr(workstation, "browser", None), "workspace", None)
    if workspace is None or not sample.path:
        return None
    try:
        return workspace.protocol_for(sample.path)
    except CD7FlowError:
        return None  # opened outside the workspace
