"""Auto-gate in the viewer: the protocol fit off the UI thread, the "Automated gates" dock.

:class:`AutoGateController` runs :func:`cd7flow.workstation.autogate.run_autogate` on a
``QThreadPool`` worker (the fit takes about a second per 25,000 events, seven at a million) and,
back on the UI thread, hands the fitted tree to the model (``set_tree(..., automated=True)``);
the population tree then shows the gate sequence with counts, and the dock's
:class:`~gui._qt.gate_grid.GateGrid` one plot per gating step with back-gating.
"""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from cd7flow.errors import CD7FlowError
from cd7flow.workstation.autogate import AutoGate, choose_protocol, protocol_choices, run_autogate

from .gate_grid import PLOT_HEIGHT, GateGrid, GridScroll

AUTO = "auto (the file's protocol)"


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
        self.scroll = GridScroll(self.grid)
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
