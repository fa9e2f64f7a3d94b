"""Assay panels: the screening call of the current tube and a patient's CAR-T course.

Both compute on a worker thread (screening: the viewer's newest-wins worker,
:class:`.workers.LatestWins`; persistence: :class:`.browser.Background`) and only draw here; the
numbers come from :mod:`cd7flow.workstation.screening_panel` and
:mod:`cd7flow.workstation.persistence_panel`, i.e. the same functions as ``cd7flow screen``
and ``cd7flow persistence``.

The screening panel fits the protocol's gates on a screening tube once, then recomputes
its record whenever the viewer's gates change: when the viewer's tree holds the protocol's
populations (after "Auto-gate"), the record is read through that tree, so dragging the
blast gate moves the blast count, the % CD7+ and the verdict, and the panel says
"manually adjusted" with the gates' paths.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from cd7flow.errors import CD7FlowError
from cd7flow.assays.screening import FMOTube
from cd7flow.io.fcs_read import read_fcs
from cd7flow.protocol import load_protocol
from cd7flow.workstation.persistence_panel import VISIT_COLUMNS, PatientCourse, patient_course
from cd7flow.workstation.workspace import Workspace, describe
from cd7flow.workstation.screening_panel import ScreeningPanelData, panel_from_sample, screening_panel, with_tree

from .browser import Background, SampleBrowser
from .workers import LatestWins

SERIES_COLOURS = {"blasts": "#d62728", "negative_reference": "#1f77b4", "positive_reference": "#2ca02c"}
VERDICT_COLOURS = {"positive": "#1a7f2e", "negative": "#b22222", "not_evaluable": "#666666"}
LOG_FLOOR = 0.05  # cells/uL: a zero is drawn here on the log axis (the value itself is in the table)


def _fill_table(table: QtWidgets.QTableWidget, rows: list[tuple[str, str]]) -> None:
    table.setRowCount(len(rows))
    for i, (label, text) in enumerate(rows):
        for j, value in enumerate((label, text)):
            item = QtWidgets.QTableWidgetItem(value)
            item.setToolTip(value)
            item.setFlags(QtCore.Qt.ItemFlag.ItemIsEnabled | QtCore.Qt.ItemFlag.ItemIsSelectable)
            table.setItem(i, j, item)
    table.resizeRowsToContents()


def _key_value_table() -> QtWidgets.QTableWidget:
    table = QtWidgets.QTableWidget(0, 2)
    table.setHorizontalHeaderLabels(["", "value"])
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    table.setWordWrap(True)
    return table


def _panel_widgets(panel: QtWidgets.QWidget, title: str, plot_first: bool, more: dict | None = None):
    """(title label, key/value table, plot) of an assay panel, laid out: title over a splitter.
    ``more``: {tab name: widget} shown as tabs beside the table."""
    label = QtWidgets.QLabel(title)
    label.setWordWrap(True)
    table = _key_value_table()
    plot = pg.PlotWidget()
    plot.setBackground("w")
    plot.setMinimumHeight(180)
    panel.setMinimumWidth(380)
    tables: QtWidgets.QWidget = table
    if more:
        tables = QtWidgets.QTabWidget()
        tables.addTab(table, "Summary")
        for name, widget in more.items():
            tables.addTab(widget, name)
    split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
    for widget in ((plot, tables) if plot_first else (tables, plot)):
        split.addWidget(widget)
    lay = QtWidgets.QVBoxLayout(panel)
    lay.setContentsMargins(4, 4, 4, 4)
    lay.addWidget(label)
    lay.addWidget(split, 1)
    return label, table, plot


class ScreeningPanel(QtWidgets.QWidget):
    """Blasts, % CD7+ (95% CI, method), references, verdict, rule, borderline; CD7 histogram."""

    sigComputed = QtCore.Signal(object)  # ScreeningPanelData

    def __init__(self, model=None, parent=None):
        super().__init__(parent)
        self.model = model
        self.worker = LatestWins(self)  # the newest fit or recomputation wins (a drag emits many)
        self.worker.sigPart.connect(self._part)
        self.worker.sigError.connect(lambda tag, msg: self._failed(tag[1], msg))
        self.sample = None
        self.gated = None
        self.protocol = None
        self.fmo = None
        self.data: ScreeningPanelData | None = None
        self._generation = 0  # bumped when the tube changes: results of an older tube are dropped
        self.title, self.table, self.plot = _panel_widgets(self, "Screening: no screening tube shown", plot_first=False)
        self.plot.addLegend(offset=(-5, 5), labelTextSize="8pt", labelTextColor="k")
        self.plot.setLabel("left", "density")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)  # logicle 0-1: no "x0.001" scaling
        if model is not None:
            signal = getattr(model.events, "gates_changed", None) or model.events.gates
            signal.connect(self._gates_changed)

    # ---- inputs -------------------------------------------------------------
    def show_sample(self, sample, protocol, fmo=None) -> None:
        """Fit ``protocol`` on ``sample`` (worker thread), then show its screening panel.
        ``fmo``: the FMO tube (a Sample, or a path read on the worker thread), or None."""
        self._generation += 1
        gen = self._generation
        self.sample, self.gated, self.protocol, self.fmo = sample, None, protocol, None
        self.title.setText(f"Screening {sample.name}: gating ({protocol.name} v{protocol.version})...")
        self.title.setStyleSheet("")

        def work():
            tube = FMOTube(read_fcs(fmo), protocol) if isinstance(fmo, (str, Path)) else fmo
            yield tube, panel_from_sample(sample, protocol, tube)

        self.worker.submit(("fit", gen), work)

    def set_gated(self, gated, protocol=None, fmo=None) -> None:
        """Show the panel of an already gated tube (e.g. the viewer's auto-gate result)."""
        self._generation += 1
        self.sample, self.gated, self.protocol, self.fmo = gated.sample, gated, protocol or gated.protocol, fmo
        self.recompute()

    def clear(self, why: str = "no screening tube shown") -> None:
        self._generation += 1
        self.sample = self.gated = self.data = None
        self.title.setText(f"Screening: {why}")
        self.table.setRowCount(0)
        self.plot.clear()

    def _current_tree(self):
        """The viewer's tree when it holds the protocol's populations (auto-gated, maybe edited), else None."""
        model = self.model
        if model is None or self.gated is None or getattr(model, "sample", None) is not self.sample:
            return None
        tree = model.tree() if callable(getattr(model, "tree", None)) else getattr(model, "tree", None)
        if tree is None:
            return None
        paths = [p for p in self.gated.locations.values() if p]
        return tree if paths and all(p in tree for p in paths) else None

    def _adjusted(self) -> list[str]:
        """Protocol populations the viewer says were adjusted by hand (its edit log)."""
        check = getattr(self.model, "is_manually_adjusted", None)
        if check is None or self._current_tree() is None:
            return []
        paths = {p for p in self.gated.locations.values() if p}
        return sorted("/" + "/".join(p) for p in paths if check(p))

    def recompute(self) -> None:
        """Recompute the record from the current gates on the worker thread. While one runs,
        newer requests (a gate being dragged) replace each other: the numbers follow a drag at
        the speed they can be computed, and the last state of the gates is always computed."""
        if self.gated is None:
            return
        tree = self._current_tree()
        gated = with_tree(self.gated, tree) if tree is not None else self.gated
        protocol, fmo, adjusted = self.protocol, self.fmo, self._adjusted()
        self.worker.submit(("record", self._generation), lambda: iter([screening_panel(gated, protocol, fmo, adjusted)]))

    def _part(self, tag, _index: int, value) -> None:
        kind, gen = tag
        if kind == "fit":
            self._fitted(gen, value)
        else:
            self._show(gen, value)

    def _gates_changed(self, *_):
        if self.gated is not None:
            self.recompute()

    def wait(self, msecs: int = 120_000) -> bool:
        """Wait until no fit or recomputation is running or queued and its result is shown."""
        deadline = QtCore.QDeadlineTimer(msecs)
        while self.worker.busy:
            if deadline.hasExpired() or not self.worker.wait(max(int(deadline.remainingTime()), 1)):
                return False
            QtCore.QCoreApplication.sendPostedEvents()
            QtCore.QCoreApplication.processEvents()
        return True

    def cancel(self) -> None:
        """Forget the tube (results still running are dropped when they arrive)."""
        self._generation += 1
        self.worker.wait()

    # ---- results ------------------------------------------------------------
    def _fitted(self, gen: int, out) -> None:
        if gen != self._generation:
            return
        self.fmo, (gated, data) = out
        self.gated = gated
        if gated is not None and self._current_tree() is not None:
            self.recompute()  # the viewer already holds (edited) gates of this tube: read them
            return
        self._show(gen, data)

    def _failed(self, gen: int, message: str) -> None:
        if gen == self._generation:
            self.title.setText(f"Screening: cannot compute ({message})")

    def _show(self, gen: int, data: ScreeningPanelData) -> None:
        if gen != self._generation:
            return  # an older computation (the gates moved again meanwhile)
        self.data = data
        rec = data.record
        verdict = rec.get("verdict") or "-"
        words = f"{rec.get('file')}: {verdict.upper().replace('_', ' ')}"
        if rec.get("borderline"):
            words += " (BORDERLINE)"
        if rec.get("manually_adjusted"):
            words += " - manually adjusted gates"
        self.title.setText(words)
        self.title.setStyleSheet(f"font-weight: bold; color: {VERDICT_COLOURS.get(verdict, 'black')}")
        _fill_table(self.table, data.rows)
        self._draw_histogram(data)
        self.sigComputed.emit(data)

    def _draw_histogram(self, data: ScreeningPanelData) -> None:
        self.plot.clear()
        h = data.histogram
        if h is None:
            return
        for s in h.series:
            if s.events:
                self.plot.plot(h.edges, s.density, stepMode="center", name=s.label,
                               pen=pg.mkPen(SERIES_COLOURS.get(s.population, "k"), width=2))
        if h.threshold is not None and math.isfinite(h.threshold):
            line = pg.InfiniteLine(h.threshold, angle=90, pen=pg.mkPen("k", style=QtCore.Qt.PenStyle.DashLine),
                                   label="threshold", labelOpts={"position": 0.9, "color": "k"})
            self.plot.addItem(line)
        self.plot.setLabel("bottom", h.x_label)


class PersistencePanel(QtWidgets.QWidget):
    """A patient's CAR+ cells/uL over days (log axis, 95% bars, LLOQ), CD7+/CD7- T cells, kinetics, escape."""

    sigComputed = QtCore.Signal(object)  # PatientCourse

    def __init__(self, parent=None):
        super().__init__(parent)
        self.background = Background(self)
        self.course: PatientCourse | None = None
        self._generation = 0
        self.visits = QtWidgets.QTableWidget(0, len(VISIT_COLUMNS))
        self.visits.setHorizontalHeaderLabels(list(VISIT_COLUMNS))
        self.visits.verticalHeader().setVisible(False)
        self.visits.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.title, self.table, self.plot = _panel_widgets(
            self, "Persistence: double-click a patient in the workspace", plot_first=True, more={"Visits": self.visits})
        self._cache: dict[tuple, PatientCourse] = {}
        self.plot.setLogMode(x=False, y=True)
        self.plot.setLabel("bottom", "days from infusion")
        self.plot.setLabel("left", "cells / uL blood")
        self.plot.addLegend(offset=(-5, -5), labelTextSize="8pt", labelTextColor="k")

    def show_patient(self, patient: str, manifest=None, files=(), protocol="car") -> None:
        """Compute the patient's course on the worker thread (every car/mrd tube is read), once
        per patient, manifest and set of files."""
        self._generation += 1
        gen = self._generation
        files = list(files)
        key = (patient, str(manifest), protocol, tuple(sorted(f.path for f in files if f.patient == patient)))
        if key in self._cache:
            self._show(gen, self._cache[key])
            return
        self.title.setText(f"Persistence {patient}: analysing the patient's tubes...")
        self.title.setStyleSheet("")

        def done(course: PatientCourse) -> None:
            self._cache[key] = course
            self._show(gen, course)

        self.background.submit(lambda: patient_course(patient, manifest, files, protocol), done,
                               lambda msg: self._failed(gen, patient, msg))

    def wait(self, msecs: int = 300_000) -> bool:
        return self.background.wait(msecs)

    def _failed(self, gen: int, patient: str, message: str) -> None:
        if gen == self._generation:
            self.title.setText(f"Persistence {patient}: cannot compute ({message})")

    def _show(self, gen: int, course: PatientCourse) -> None:
        if gen != self._generation:
            return
        self.course = course
        k = course.kinetics or {}
        text = f"{course.patient}: Cmax {k.get('cmax_per_ul') or 0:,.4g} /uL at day {k.get('tmax_day')}"
        if course.antigen_escape:
            text += " - ANTIGEN ESCAPE"
        if course.problems:
            text += f" ({len(course.problems)} tube(s) skipped: see tooltip)"
        self.title.setText(text)
        self.title.setToolTip("\n".join(course.problems + course.notes))
        self.title.setStyleSheet("font-weight: bold; color: #b22222" if course.antigen_escape else "font-weight: bold")
        _fill_table(self.table, course.table_rows())
        rows = course.visit_rows()
        self.visits.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                self.visits.setItem(i, j, QtWidgets.QTableWidgetItem(text))
        self.visits.resizeColumnsToContents()
        self._draw(course)
        self.sigComputed.emit(course)

    def _draw(self, course: PatientCourse) -> None:
        """pyqtgraph's log mode maps curves to log10; the error bars and lines are placed in log10 here."""
        plot = self.plot
        plot.clear()
        pts = [c for c in course.course if c.get("car_per_ul") is not None]
        if pts:
            days = np.array([c["day"] for c in pts], float)
            val = np.maximum([c["car_per_ul"] for c in pts], LOG_FLOOR)
            lo = np.maximum([c["car_per_ul_low"] for c in pts], LOG_FLOOR)
            hi = np.maximum([c["car_per_ul_high"] for c in pts], LOG_FLOOR)
            red = pg.mkPen("#d62728", width=2)
            plot.plot(days, val, pen=red, symbol="o", symbolBrush="#d62728", symbolPen=red, name="CAR+ T cells/uL (95% CI)")
            plot.addItem(pg.ErrorBarItem(x=days, y=np.log10(val), top=np.log10(hi) - np.log10(val),
                                         bottom=np.log10(val) - np.log10(lo), beam=1.5, pen=red))
            flagged = [i for i, c in enumerate(pts) if c.get("flags")]
            if flagged:
                plot.plot(days[flagged], val[flagged], pen=None, symbol="o", symbolBrush="w", symbolPen=red,
                          name="flagged (below LOD/LLOQ)")
            for key, colour, label in (("cd3_cd7pos_per_ul", "#1f77b4", "CD3+CD7+ T/uL"),
                                       ("cd3_cd7neg_per_ul", "#2ca02c", "CD3+CD7- T/uL (incl. CAR+)")):
                ys = [(c["day"], c[key]) for c in pts if c.get(key)]
                if ys:
                    plot.plot([d for d, _ in ys], [v for _, v in ys], symbol="s", symbolSize=6,
                              pen=pg.mkPen(colour, style=QtCore.Qt.PenStyle.DashLine), symbolBrush=colour, name=label)
        if course.lloq_per_ul:
            plot.addItem(pg.InfiniteLine(math.log10(course.lloq_per_ul), angle=0,
                                         pen=pg.mkPen("#888888", style=QtCore.Qt.PenStyle.DotLine),
                                         label=f"LLOQ ~{course.lloq_per_ul:.2g}/uL", labelOpts={"position": 0.95}))
        k = course.kinetics or {}
        if k.get("antigen_escape"):
            for ev in k.get("escape_evidence") or []:
                if ev.get("cd7_negative"):
                    plot.addItem(pg.InfiniteLine(ev["day"], angle=90, pen=pg.mkPen("k", style=QtCore.Qt.PenStyle.DashDotLine),
                                                 label=f"CD7- blasts ({ev['blast_events']})",
                                                 labelOpts={"position": 0.08}))

    def curve_data(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(legend name, x, y in cells/uL) of every curve drawn (for tests and exports)."""
        out = []
        for item in self.plot.getPlotItem().listDataItems():
            x, y = item.getOriginalDataset()
            if x is not None:
                out.append((item.name(), np.asarray(x), np.asarray(y)))
        return out


class Workstation(QtCore.QObject):
    """The sample browser and the assay panels, docked in the main window and wired to its model.

    A file chosen in the browser is opened in (or brought back to) the viewer; a screening
    tube made current gets its screening panel (with the patient's FMO tube when the
    workspace has one, as ``cd7flow batch`` does); a patient row, or a car/mrd tube of
    another patient, gets the persistence panel.
    """

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.model = window.model
        self.browser = SampleBrowser()
        self.screening = ScreeningPanel(self.model)
        self.persistence = PersistencePanel()
        area = QtCore.Qt.DockWidgetArea
        self.browser_dock = self._dock("Workspace", self.browser, area.LeftDockWidgetArea)
        self.screening_dock = self._dock("Screening", self.screening, area.RightDockWidgetArea)
        self.persistence_dock = self._dock("Persistence", self.persistence, area.RightDockWidgetArea)
        window.tabifyDockWidget(self.screening_dock, self.persistence_dock)
        self.screening_dock.raise_()
        window.resizeDocks([self.screening_dock], [440], QtCore.Qt.Orientation.Horizontal)
        self.browser.sigFile.connect(self.show_file)
        self.browser.sigPatient.connect(self.show_patient)
        self.browser.sigProtocol.connect(self._protocol_changed)
        self.browser.sigError.connect(lambda msg: window.statusBar().showMessage(msg, 15000))
        self.model.events.current.connect(self._sample_changed)
        self.model.events.samples.connect(self._samples_changed)
        self._patient_shown: str | None = None

    def _dock(self, title: str, widget, area) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self.window)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.window.addDockWidget(area, dock)
        return dock

    # ---- opening ------------------------------------------------------------
    def open_paths(self, paths) -> int:
        """Folders and manifests go into the browser (their first file is shown); FCS files are
        opened in the viewer and join the browser from their keywords. Returns how many files
        the workspace gained (errors are shown, naming the path)."""
        paths = [str(p) for p in paths]
        studies = [p for p in paths if Path(p).is_dir() or Path(p).suffix.lower() == ".csv"]
        files = [p for p in paths if p not in studies]
        before = len(self.browser.workspace.files)
        if studies:
            try:
                self.browser.open_paths(studies)
            except CD7FlowError as exc:
                self.window.show_error(str(exc), "Cannot open")
        if files:  # read once, by the viewer (_samples_changed describes them from their keywords)
            self.window.open_paths(files)
        elif studies and self.browser.first_file() is not None:
            first = self.browser.first_file()
            self.browser.select_file(first)
            self.show_file(first)
        return len(self.browser.workspace.files) - before

    def show_file(self, path: str) -> None:
        """Make ``path`` the viewer's current sample (reading it the first time)."""
        target = Path(path).resolve()
        for i, s in enumerate(self.model.samples):
            if s.path and Path(s.path).resolve() == target:
                if i != self.model.current_index:
                    self.model.set_current(i)
                return
        self.window.open_paths([path])

    def show_patient(self, patient: str) -> None:
        ws = self.browser.workspace
        self._patient_shown = patient
        self.persistence.show_patient(patient, manifest=ws.manifest, files=ws.files)
        self.persistence_dock.raise_()

    # ---- following the viewer ----------------------------------------------
    def _meta(self):
        s = self.model.sample
        if s is None or not s.path:
            return None
        try:
            return self.browser.workspace.meta(s.path)
        except CD7FlowError:
            return None  # a file opened outside the workspace

    def _samples_changed(self, *_):
        """Files opened in the viewer directly (File > Open, drag and drop) join the workspace,
        described from the keywords already read."""
        ws = self.browser.workspace
        have = set(ws.paths())
        new = [describe(s.path, s.metadata) for s in self.model.samples
               if s.path and str(Path(s.path).resolve()) not in have]
        if new:
            ws.extend(Workspace(files=new))
            self.browser.refresh()
            self.browser.start_qc()

    def _sample_changed(self, *_):
        meta = self._meta()
        sample = self.model.sample
        if meta is not None:
            self.browser.select_file(meta.path)
        ws = self.browser.workspace
        protocol_name = ws.protocol_for(meta.path) if meta is not None else None
        if sample is None or protocol_name is None:
            self.screening.clear("the current file is not in the workspace")
            return
        protocol = load_protocol(protocol_name)
        if protocol.assay == "screening" and meta.tube in ("screening", None):
            fmo = next((f.path for f in ws.files if f.patient == meta.patient and f.tube == "fmo"), None)
            self.screening.show_sample(sample, protocol, fmo)
            self.screening_dock.raise_()
        else:
            self.screening.clear(f"{sample.name} is a {meta.tube or 'unknown'} tube")
        if meta.tube in ("car", "mrd") and meta.patient and meta.patient != self._patient_shown:
            self.show_patient(meta.patient)

    def _protocol_changed(self, path: str, _name: str) -> None:
        meta = self._meta()
        if meta is not None and meta.path == path:
            self._sample_changed()


def install_workstation(window) -> Workstation:
    """Dock the sample browser and the assay panels in ``window`` (a MainWindow with a ``model``)."""
    return Workstation(window)


__all__ = ["ScreeningPanel", "PersistencePanel", "Workstation", "install_workstation"]
