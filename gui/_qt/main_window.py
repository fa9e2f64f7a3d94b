"""The main window: menus, axis controls, gate tools, and the panels around the plot."""
from __future__ import annotations

import gc
import importlib
import os
import threading
from pathlib import Path

from psygnal import EmitLoopError
from PySide6 import QtCore, QtGui, QtWidgets

from cd7flow.errors import CD7FlowError
from cd7flow.viewer import PLOT_MODES, TRANSFORM_KINDS, ViewerModel, path_str

from .panels import PopulationTree, SampleList, StatsTable

_UI_THREAD_GC = None


def collect_garbage_on_ui_thread() -> None:
    """While a viewer window lives, Python's cyclic GC runs only on the UI thread (a timer).

    A collection a worker thread starts (QC icons, fits, pictures) can free Qt objects there:
    shiboken then waits for the GIL while the UI thread holds Qt's mutex and waits for the
    worker, a deadlock seen in the test suite (PySide6 6.11). pyqtgraph's GarbageCollector
    disables automatic collection and collects on a QTimer in the UI thread instead.
    """
    global _UI_THREAD_GC
    from pyqtgraph.util.garbage_collector import GarbageCollector

    if _UI_THREAD_GC is None:
        _UI_THREAD_GC = GarbageCollector(interval=1.0)
    gc.disable()  # again, when something re-enabled it after an earlier window
from .plot_view import LivePreview, PlotView

FCS_FILTER = "FCS files (*.fcs *.FCS *.lmd *.LMD);;All files (*)"
GML_FILTER = "Gating-ML (*.xml);;All files (*)"
GATES_FILTER = "Gating files: Gating-ML, FlowJo, FACSDiva (*.xml *.wsp);;All files (*)"


class AxisControls(QtWidgets.QWidget):
    """X/Y channel pickers ('PnN (PnS)'), transforms, compensation, plot mode and gate tools."""

    sigTool = QtCore.Signal(object)  # "edit" | a drawing tool | None (pan and zoom)

    def __init__(self, model: ViewerModel, parent=None):
        super().__init__(parent)
        self.model = model
        self._updating = False
        self.x_channel = QtWidgets.QComboBox()
        self.y_channel = QtWidgets.QComboBox()
        self.x_transform = QtWidgets.QComboBox()
        self.y_transform = QtWidgets.QComboBox()
        for box in (self.x_transform, self.y_transform):
            box.addItems(TRANSFORM_KINDS)
        for box in (self.x_channel, self.y_channel):
            box.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
            box.setMinimumContentsLength(16)
        self.compensate = QtWidgets.QCheckBox("Compensate")
        self.mode = QtWidgets.QComboBox()
        self.mode.addItems(PLOT_MODES)
        self.tools = QtWidgets.QButtonGroup(self)
        self.tools.setExclusive(False)
        self.tool_buttons: dict[str, QtWidgets.QToolButton] = {}
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        for label, widget in (("X", self.x_channel), (None, self.x_transform), ("Y", self.y_channel),
                              (None, self.y_transform), (None, self.compensate), ("Plot", self.mode)):
            if label:
                layout.addWidget(QtWidgets.QLabel(label))
            layout.addWidget(widget)
        self.full_scale = QtWidgets.QToolButton()
        self.full_scale.setText("Full scale")
        self.full_scale.setToolTip("Show the whole scale of both axes ($PnR), undoing any zoom")
        self.full_scale.clicked.connect(lambda: model.sample is not None and model.set_zoom(None, None))
        layout.addWidget(self.full_scale)
        self.layout_box = QtWidgets.QComboBox()
        for n in (1, 2, 4):
            self.layout_box.addItem(f"{n} plot{'s' if n > 1 else ''}", n)
        self.layout_box.setToolTip("How many plots, each with its own axes; the controls edit the active one (click it)")
        self.layout_box.currentIndexChanged.connect(lambda _: model.set_layout(self.layout_box.currentData()))
        layout.addWidget(self.layout_box)
        layout.addSpacing(12)
        for tool, text, tip in (("edit", "Edit", "Drag gates: vertices, edges, whole gates (drawing never edits)"),
                                ("rectangle", "Rectangle", "Drag a rectangle on the plot"),
                                ("polygon", "Polygon", "Click vertices; double-click or right-click closes"),
                                ("ellipse", "Ellipse", "Drag the box the ellipse fills"),
                                ("quadrant", "Quadrant", "Click where the two dividers cross"),
                                ("range", "Range", "Histogram mode: drag an interval on x")):
            b = QtWidgets.QToolButton()
            b.setText(text)
            b.setToolTip(tip)
            b.setCheckable(True)
            self.tools.addButton(b)
            self.tool_buttons[tool] = b
            layout.addWidget(b)
            b.toggled.connect(lambda on, t=tool: self._tool_toggled(t, on))
        layout.addStretch(1)

        # a new channel brings its own scale (scatter linear, fluorescence logicle, or the one
        # chosen for it before); a transform choice applies to that axis only
        self.x_channel.currentIndexChanged.connect(lambda _: self._push(x=self.x_channel.currentData()))
        self.y_channel.currentIndexChanged.connect(lambda _: self._push(y=self.y_channel.currentData()))
        self.x_transform.currentTextChanged.connect(lambda t: self._push(x_transform=t))
        self.y_transform.currentTextChanged.connect(lambda t: self._push(y_transform=t))
        self.compensate.toggled.connect(self._comp_toggled)
        self.mode.currentTextChanged.connect(self._mode_changed)
        model.events.current.connect(self.refresh)
        model.events.view.connect(self.refresh)
        self.refresh()

    def refresh(self, *_):
        m = self.model
        self._updating = True
        try:
            choices = m.channel_choices()
            for box, current in ((self.x_channel, m.x_channel), (self.y_channel, m.y_channel)):
                if [box.itemData(i) for i in range(box.count())] != [c for c, _ in choices]:
                    box.clear()
                    for name, label in choices:
                        box.addItem(label, name)
                i = box.findData(current)
                if i >= 0:
                    box.setCurrentIndex(i)
            self.x_transform.setCurrentText(m.x_transform)
            self.y_transform.setCurrentText(m.y_transform)
            self.compensate.setEnabled(m.can_compensate)
            self.compensate.setChecked(m.compensated)
            self.compensate.setToolTip(
                "Apply the file's spillover matrix" if m.can_compensate else "This file carries no spillover matrix")
            self.mode.setCurrentText(m.plot_mode)
            histogram = m.plot_mode == "histogram"
            self.y_channel.setEnabled(not histogram)
            self.y_transform.setEnabled(not histogram)
            self.tool_buttons["range"].setEnabled(histogram)
            for tool in ("rectangle", "polygon", "ellipse", "quadrant"):
                self.tool_buttons[tool].setEnabled(not histogram)
            i = self.layout_box.findData(len(m.plots))
            if i >= 0:
                self.layout_box.setCurrentIndex(i)
        finally:
            self._updating = False

    def _push(self, **axes):
        if self._updating or self.model.sample is None:
            return
        self.model.set_axes(**axes)

    def _comp_toggled(self, on: bool):
        if not self._updating and self.model.sample is not None:
            self.model.set_compensated(on)

    def _mode_changed(self, mode: str):
        if not self._updating:
            self.release_tools()
            self.model.set_plot_mode(mode)

    @property
    def active_tool(self) -> str | None:
        return next((t for t, b in self.tool_buttons.items() if b.isChecked()), None)

    def _tool_toggled(self, tool: str, on: bool):
        if self._updating:
            return
        if on:
            self._updating = True
            for other, b in self.tool_buttons.items():
                if other != tool:
                    b.setChecked(False)
            self._updating = False
            self.sigTool.emit(tool)
        elif not any(b.isChecked() for b in self.tool_buttons.values()):
            self.sigTool.emit(None)

    def release_tools(self):
        self._updating = True
        for b in self.tool_buttons.values():
            b.setChecked(False)
        self._updating = False
        self.sigTool.emit(None)


class PlotGrid(QtWidgets.QWidget):
    """The layout of 1-4 plots (``model.plots``), two per row; one LivePreview shared by all."""

    sigError = QtCore.Signal(str)
    sigStatus = QtCore.Signal(str)
    sigToolFinished = QtCore.Signal()
    sigGateDrawn = QtCore.Signal(object)

    def __init__(self, model: ViewerModel, parent=None):
        super().__init__(parent)
        self.model = model
        self.preview = LivePreview(model, self)
        self.grid = QtWidgets.QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(4)
        self.views: list[PlotView] = []
        self.tool: str | None = None
        model.events.view.connect(self.sync)
        self.sync()

    def sync(self, *_):
        """Add or remove plot widgets to match the model's layout."""
        while len(self.views) < len(self.model.plots):
            view = PlotView(self.model, len(self.views), self.preview)
            view.sigError.connect(self.sigError)
            view.sigStatus.connect(self.sigStatus)
            view.sigToolFinished.connect(self.sigToolFinished)
            view.sigGateDrawn.connect(self.sigGateDrawn)
            view.sigActivated.connect(self._activate)
            view.set_tool(self.tool)
            self.views.append(view)
            view.refresh()
        while len(self.views) > len(self.model.plots):
            view = self.views.pop()
            self.grid.removeWidget(view)
            view.deleteLater()
        for i, view in enumerate(self.views):
            self.grid.addWidget(view, i // 2, i % 2)

    def _activate(self, index: int) -> None:
        if index < len(self.model.plots):
            self.model.set_active_plot(index)

    def set_tool(self, tool: str | None) -> None:
        self.tool = tool
        for view in self.views:
            view.set_tool(tool)


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, model: ViewerModel | None = None):
        collect_garbage_on_ui_thread()
        super().__init__()
        self.model = model or ViewerModel()
        self.setWindowTitle("cd7flow viewer")
        self.setAcceptDrops(True)
        self.resize(1280, 820)

        self.plots = PlotGrid(self.model)
        self.plot_view = self.plots.views[0]
        self.controls = AxisControls(self.model)
        self.samples = SampleList(self.model)
        self.populations = PopulationTree(self.model)
        self.stats = StatsTable(self.model)

        center = QtWidgets.QWidget()
        v = QtWidgets.QVBoxLayout(center)
        v.setContentsMargins(0, 0, 0, 0)
        v.addWidget(self.controls)
        v.addWidget(self.plots, 1)
        self.setCentralWidget(center)

        left = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        left.addWidget(self._titled("Samples", self.samples))
        pop_box = self._titled("Populations", self.populations)
        buttons = QtWidgets.QHBoxLayout()
        for text, slot, tip in (("Rename...", self.rename_dialog, "Rename the selected population (F2)"),
                                ("Remove", self.remove_selected, "Remove the selected gate and its children (Del)")):
            b = QtWidgets.QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(lambda *_, f=slot: self._run(f))
            buttons.addWidget(b)
        pop_box.layout().addLayout(buttons)
        left.addWidget(pop_box)
        left.setSizes([200, 500])
        left.setMinimumWidth(380)
        left_dock = self._dock("Samples and gates", left, QtCore.Qt.DockWidgetArea.LeftDockWidgetArea)
        self.resizeDocks([left_dock], [420], QtCore.Qt.Orientation.Horizontal)
        stats_box = QtWidgets.QWidget()
        sv = QtWidgets.QVBoxLayout(stats_box)
        sv.setContentsMargins(4, 4, 4, 4)
        sv.addWidget(self.stats.caption)
        sv.addWidget(self.stats)
        self._dock("Statistics", stats_box, QtCore.Qt.DockWidgetArea.BottomDockWidgetArea)

        self.controls.sigTool.connect(self.plots.set_tool)
        self.plots.sigToolFinished.connect(self.controls.release_tools)
        for widget in (self.plots, self.populations):
            widget.sigError.connect(self.show_error)
        self.populations.remove_requested = self.remove_selected  # Del in the tree asks first
        self.plots.preview.sigError.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self.plots.preview.sigCounts.connect(self.populations.show_counts)
        self.plots.preview.sigStatistics.connect(self.stats.show_preview)
        self.plots.sigStatus.connect(self._plot_note)
        self.plots.sigGateDrawn.connect(self.populations.start_naming)
        self._build_menus()
        # [panels] workspace browser + assay panels (issue 11 items 1, 4): docks wired to self.model
        from .assay_panels import install_workstation
        self.workstation = install_workstation(self)
        self.model.events.sample_changed.connect(self._update_actions)
        self.model.events.gates_changed.connect(self._update_actions)
        self.model.events.history.connect(self._update_actions)
        from . import autogate, session_actions  # [autogate] auto-gate dock, sessions, exports (issue 11)
        autogate.install(self)
        session_actions.install(self)
        self._update_actions()
        self.plot_view.refresh()
        self.statusBar().showMessage("Open FCS files with File > Open or drop them on the window")
        # the protocols' logicle lives with the protocol pipeline (scikit-learn and all): import it
        # while the user picks a file, not on the first fluorescence axis
        threading.Thread(target=importlib.import_module, args=("cd7flow.assays.protocol_gating",),
                         name="cd7flow-preload", daemon=True).start()

    # ---- layout helpers ---------------------------------------------------
    def _titled(self, title: str, widget: QtWidgets.QWidget) -> QtWidgets.QWidget:
        box = QtWidgets.QGroupBox(title)
        lay = QtWidgets.QVBoxLayout(box)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(widget)
        return box

    def _dock(self, title: str, widget: QtWidgets.QWidget, area) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    def _build_menus(self):
        file_menu = self.menuBar().addMenu("&File")
        self.act_open = self._action(file_menu, "&Open FCS files...", self.open_dialog, QtGui.QKeySequence.StandardKey.Open)
        file_menu.addSeparator()
        self.act_export_fcs = self._action(file_menu, "Export population as &FCS...", self.export_fcs_dialog)
        self.act_export_csv = self._action(file_menu, "Export statistics as &CSV...", self.export_csv_dialog)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit)
        gate_menu = self.menuBar().addMenu("&Gates")
        self.act_load_gml = self._action(gate_menu, "&Load gates (Gating-ML, FlowJo, DiVa)...", self.load_gatingml_dialog)
        self.act_save_gml = self._action(gate_menu, "&Save Gating-ML...", self.save_gatingml_dialog)
        gate_menu.addSeparator()
        self.act_rename = self._action(gate_menu, "&Rename population...", self.rename_dialog, QtGui.QKeySequence(QtCore.Qt.Key.Key_F2))
        self.act_remove = self._action(gate_menu, "Re&move gate...", self.remove_selected)
        self.act_clear = self._action(gate_menu, "&Clear all gates...", self.clear_gates)
        edit_menu = self.menuBar().addMenu("&Edit")
        self.act_undo = self._action(edit_menu, "&Undo", self.model.undo, QtGui.QKeySequence.StandardKey.Undo)
        self.act_redo = self._action(edit_menu, "&Redo", self.model.redo)
        self.act_redo.setShortcuts([QtGui.QKeySequence("Ctrl+Shift+Z"), QtGui.QKeySequence("Ctrl+Y")])
        for act in (self.act_undo, self.act_redo):  # work wherever the focus is (plot, tree, table)
            act.setShortcutContext(QtCore.Qt.ShortcutContext.ApplicationShortcut)
            self.addAction(act)

    def _action(self, menu, text, slot, shortcut=None) -> QtGui.QAction:
        act = QtGui.QAction(text, self)
        if shortcut is not None:
            act.setShortcut(shortcut)
        act.triggered.connect(lambda *_: self._run(slot))
        menu.addAction(act)
        return act

    def _update_actions(self, *_):
        has_sample = self.model.sample is not None
        has_gates = self.model.n_gates > 0
        for act in (self.act_export_fcs, self.act_export_csv):
            act.setEnabled(has_sample)
        self.act_save_gml.setEnabled(has_gates)
        self.act_clear.setEnabled(has_gates)
        self.act_rename.setEnabled(has_gates)
        self.act_remove.setEnabled(has_gates)
        h = self.model.history
        self.act_undo.setEnabled(h.can_undo)
        self.act_redo.setEnabled(h.can_redo)
        self.act_undo.setText(f"&Undo {h.undo_label()}".rstrip())
        self.act_redo.setText(f"&Redo {h.redo_label()}".rstrip())
        title = "cd7flow viewer"
        self.setWindowTitle(f"{self.model.sample.name}[*] - {title}" if has_sample else f"{title}[*]")
        self.setWindowModified(self.model.dirty)  # "*" after the name: gates not saved

    def _plot_note(self, note: str) -> None:
        """Show which gates the plot cannot draw; clear an earlier such note once all are drawn."""
        if note:
            self.statusBar().showMessage(note, 20000)
        elif self.statusBar().currentMessage().startswith("not drawn:"):
            self.statusBar().clearMessage()

    # ---- errors -----------------------------------------------------------
    def show_error(self, message: str, title: str = "cd7flow") -> None:
        self.statusBar().showMessage(message.splitlines()[0] if message else "", 10000)
        QtWidgets.QMessageBox.critical(self, title, message)

    def _run(self, fn, *args):
        """Run a user action; a cd7flow error (or an OS error writing a file) becomes a message box."""
        try:
            return fn(*args)
        except EmitLoopError as exc:  # an observer of the model failed: show what it said
            cause = exc.__cause__
            if not isinstance(cause, (CD7FlowError, OSError)):
                raise
            self.show_error(str(cause))
        except CD7FlowError as exc:
            self.show_error(str(exc))
        except OSError as exc:
            self.show_error(f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}")
        return None

    # ---- confirmations ----------------------------------------------------
    @staticmethod
    def headless() -> bool:
        """No one can answer a dialog on the offscreen platform (tests, --screenshot)."""
        return QtWidgets.QApplication.platformName() in ("offscreen", "minimal")

    def confirm(self, text: str, title: str = "cd7flow") -> bool:
        """Ask yes/no before something that loses work (yes when headless)."""
        if self.headless():
            return True
        answer = QtWidgets.QMessageBox.question(self, title, text)
        return answer == QtWidgets.QMessageBox.StandardButton.Yes

    def ask_unsaved(self, doing: str) -> bool:
        """Before ``doing`` replaces unsaved gates: save them, discard them, or cancel (False)."""
        if not self.model.dirty or self.model.n_gates == 0 or self.headless():
            return True
        box = QtWidgets.QMessageBox(self)
        box.setWindowTitle("Unsaved gates")
        box.setText(f"The gates have changed since they were last saved. Save them before {doing}?")
        box.setStandardButtons(QtWidgets.QMessageBox.StandardButton.Save | QtWidgets.QMessageBox.StandardButton.Discard
                               | QtWidgets.QMessageBox.StandardButton.Cancel)
        answer = box.exec()
        if answer == QtWidgets.QMessageBox.StandardButton.Save:
            self.save_gatingml_dialog()
            return not self.model.dirty
        return answer == QtWidgets.QMessageBox.StandardButton.Discard

    def closeEvent(self, ev: QtGui.QCloseEvent):
        if self.ask_unsaved("closing"):
            self.plots.preview.wait()
            self.stats.worker.wait()
            ev.accept()
        else:
            ev.ignore()

    # ---- gates ------------------------------------------------------------
    def remove_selected(self):
        path = self.model.selected
        if not path:
            return
        below = sum(1 for e in self.model._gates if e.path[: len(path)] == path) - 1
        more = f" and the {below} population(s) under it" if below > 0 else ""
        if self.confirm(f"Remove {path_str(path)}{more}? (Edit > Undo brings it back)"):
            self.model.remove_population(path)

    def clear_gates(self):
        if self.model.n_gates and self.confirm(f"Remove all {self.model.n_gates} gates? (Edit > Undo brings them back)"):
            self.model.clear_gates()

    def rename_dialog(self):
        path = self.model.selected
        if not path:
            self.statusBar().showMessage("select a population to rename", 5000)
            return
        name, ok = QtWidgets.QInputDialog.getText(self, "Rename population", f"New name for {path_str(path)}:",
                                                  text=path[-1])
        if ok and name.strip() and name.strip() != path[-1]:
            self.model.rename_gate(path, name)

    # ---- files ------------------------------------------------------------
    def open_paths(self, paths) -> int:
        """Open FCS files; each unreadable file gets one message box naming it. Returns how many opened."""
        before = len(self.model.samples)
        errors = self.model.open_files([str(p) for p in paths])
        for exc in errors:
            self.show_error(str(exc), "Cannot open FCS file")
        opened = len(self.model.samples) - before
        if opened:
            self.statusBar().showMessage(f"opened {opened} file(s)", 5000)
        return opened

    def open_dialog(self):
        paths, _ = QtWidgets.QFileDialog.getOpenFileNames(self, "Open FCS files", "", FCS_FILTER)
        if paths:
            self.open_paths(paths)

    def _save_name(self, caption: str, suggested: str, filt: str) -> str | None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, caption, suggested, filt)
        return path or None

    def _population_stem(self) -> str:
        s = self.model.sample
        stem = Path(s.name).stem if s else "sample"
        pop = self.model.selected[-1] if self.model.selected else "all"
        return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{stem}_{pop}")

    def export_fcs_dialog(self):
        path = self._save_name("Export population as FCS", self._population_stem() + ".fcs", FCS_FILTER)
        if path:
            out = self.model.export_population_fcs(path)
            self.statusBar().showMessage(f"wrote {out} ({path_str(self.model.selected)})", 8000)

    def export_csv_dialog(self):
        path = self._save_name("Export statistics as CSV", self._population_stem() + "_stats.csv", "CSV (*.csv)")
        if path:
            out = self.model.export_statistics_csv(path)
            self.statusBar().showMessage(f"wrote {out}", 8000)

    def load_gatingml_dialog(self):
        if not self.ask_unsaved("loading other gates"):
            return
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Load gates", "", GATES_FILTER)
        if path:
            n = self.model.load_gating(path)
            self.statusBar().showMessage(f"loaded {n} gate(s) from {os.path.basename(path)}", 8000)

    def save_gatingml_dialog(self):
        path = self._save_name("Save gates as Gating-ML", "gates.xml", GML_FILTER)
        if path:
            out = self.model.save_gatingml(path)
            self.statusBar().showMessage(f"wrote {out}", 8000)

    # ---- drag and drop ----------------------------------------------------
    def dragEnterEvent(self, ev: QtGui.QDragEnterEvent):
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev: QtGui.QDropEvent):
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            ev.acceptProposedAction()
            self.open_paths(paths)
