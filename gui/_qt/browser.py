"""The sample browser: the workspace's files by patient and tube, with QC status icons.

The workspace (:mod:`cd7flow.workstation.workspace`) is opened from files, a folder or a
manifest; QC runs on a worker thread, one file at a time, and each icon turns from grey
(pending) to green / orange / red (PASS / WARN / FAIL; dark red: unreadable) as its result
arrives; the tooltip lists the checks that did not pass. Empty, the browser is a welcome
page offering the bundled demo study (never a modal dialog). A file activated in the tree
is opened in the viewer (:attr:`SampleBrowser.sigFile`); a patient row asks for its
persistence panel (:attr:`SampleBrowser.sigPatient`). The protocol of the current file is
shown and can be switched (``cd7flow/protocols``).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from cd7flow.errors import CD7FlowError
from cd7flow.workstation.workspace import UNKNOWN, Workspace, demo_manifest, open_workspace, protocol_choices, \
    qc_status_text

PATH_ROLE = QtCore.Qt.ItemDataRole.UserRole
KIND_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1  # "patient" | "tube" | "file"
STATUS_COLOURS = {"PASS": "#2e9d3a", "WARN": "#e69500", "FAIL": "#d62728", "ERROR": "#7f0000", None: "#b0b0b0"}


def status_icon(status: str | None) -> QtGui.QIcon:
    """A filled circle in the status colour (grey while QC is pending)."""
    pix = QtGui.QPixmap(14, 14)
    pix.fill(QtCore.Qt.GlobalColor.transparent)
    p = QtGui.QPainter(pix)
    p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    p.setBrush(QtGui.QColor(STATUS_COLOURS.get(status, STATUS_COLOURS[None])))
    p.setPen(QtCore.Qt.PenStyle.NoPen)
    p.drawEllipse(1, 1, 12, 12)
    p.end()
    return QtGui.QIcon(pix)


QC_RANK = ("ERROR", "FAIL", "WARN", "PASS")


def _worst(statuses: list[str]) -> str | None:
    known = [s for s in statuses if s in QC_RANK]
    return min(known, key=QC_RANK.index) if known else None


def _file_statuses(item: QtWidgets.QTreeWidgetItem) -> list[str]:
    """The QC statuses shown on the file rows below ``item``."""
    if item.data(0, KIND_ROLE) == "file":
        return [item.text(2)]
    return [s for i in range(item.childCount()) for s in _file_statuses(item.child(i))]


class _Relay(QtCore.QObject):
    done = QtCore.Signal(int, object)
    failed = QtCore.Signal(int, str)


class Background(QtCore.QObject):
    """Runs callables one at a time on a worker thread; the callbacks run on the UI thread.

    ``submit(fn, on_done, on_error)`` returns a ticket; :meth:`wait` blocks until the queue
    is empty (tests, closing). Errors a user can cause (CD7FlowError, OSError) reach
    ``on_error`` as text; anything else too, prefixed with its type, so a worker never dies
    silently.
    """

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._pool = QtCore.QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # a 2-core workstation: one analysis at a time beside the UI
        self._relay = _Relay()
        self._relay.done.connect(self._done)
        self._relay.failed.connect(self._failed)
        self._callbacks: dict[int, tuple[Callable, Callable | None]] = {}
        self._tickets = itertools.count(1)

    def submit(self, fn: Callable[[], object], on_done: Callable[[object], None],
               on_error: Callable[[str], None] | None = None) -> int:
        ticket = next(self._tickets)
        self._callbacks[ticket] = (on_done, on_error)
        relay = self._relay

        def run() -> None:
            try:
                result = fn()
            except (CD7FlowError, OSError) as exc:
                relay.failed.emit(ticket, str(exc))
            except Exception as exc:  # noqa: BLE001 - reported in the UI, not lost in a thread
                relay.failed.emit(ticket, f"{type(exc).__name__}: {exc}")
            else:
                relay.done.emit(ticket, result)

        self._pool.start(run)
        return ticket

    def cancel(self) -> None:
        """Drop the jobs not started yet and every pending callback (closing, a new workspace)."""
        self._pool.clear()
        self._callbacks.clear()
        self._pool.waitForDone()

    def pending(self) -> int:
        return len(self._callbacks)

    def wait(self, msecs: int = 120_000) -> bool:
        """Wait until every submitted job has run and its callback was called (here, on the UI
        thread), including jobs the callbacks submit; False on time-out."""
        deadline = QtCore.QDeadlineTimer(msecs)
        while self._callbacks:
            if not self._pool.waitForDone(max(int(deadline.remainingTime()), 0)):
                return False
            QtCore.QCoreApplication.sendPostedEvents()
            QtCore.QCoreApplication.processEvents()
            if deadline.hasExpired() and self._callbacks:
                return False
        return True

    def _done(self, ticket: int, result: object) -> None:
        on_done, _ = self._callbacks.pop(ticket, (None, None))
        if on_done is not None:
            on_done(result)

    def _failed(self, ticket: int, message: str) -> None:
        _, on_error = self._callbacks.pop(ticket, (None, None))
        if on_error is not None:
            on_error(message)


class WelcomePage(QtWidgets.QWidget):
    """Shown while nothing is open: open the demo study, a folder or a manifest."""

    def __init__(self, browser: "SampleBrowser"):
        super().__init__(browser)
        lay = QtWidgets.QVBoxLayout(self)
        text = QtWidgets.QLabel("<b>No study open.</b>")
        text.setToolTip("Open FCS files (File > Open, or drop them), a study folder (searched recursively) "
                        "or a manifest (CSV: file, patient, tube, collection_date, ...)")
        lay.addWidget(text)
        self.demo = QtWidgets.QPushButton("Open the demo study")
        manifest = demo_manifest()
        self.demo.setEnabled(manifest is not None)
        self.demo.setToolTip(str(manifest) if manifest else "the demo study (sample_fcs/) is not installed here")
        self.demo.clicked.connect(browser.open_demo)
        self.folder = QtWidgets.QPushButton("Open folder...")
        self.folder.clicked.connect(browser.open_folder_dialog)
        self.manifest = QtWidgets.QPushButton("Open manifest...")
        self.manifest.clicked.connect(browser.open_manifest_dialog)
        for b in (self.demo, self.folder, self.manifest):
            lay.addWidget(b)
        lay.addStretch(1)


class SampleBrowser(QtWidgets.QWidget):
    """The workspace tree (patient > tube > file) with QC icons, and the current file's protocol."""

    COLUMNS = ("Sample", "Day", "QC")
    sigFile = QtCore.Signal(str)  # a file was activated: open / show it
    sigPatient = QtCore.Signal(str)  # a patient was chosen: show its course
    sigProtocol = QtCore.Signal(str, str)  # (file path, protocol name) the user picked
    sigError = QtCore.Signal(str)
    sigQC = QtCore.Signal(str, object)  # (file path, QC record) as each result arrives

    def __init__(self, parent=None):
        super().__init__(parent)
        self.workspace = Workspace()
        self.background = Background(self)
        self._items: dict[str, QtWidgets.QTreeWidgetItem] = {}
        self._current_path: str | None = None
        self.welcome = WelcomePage(self)
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setHeaderLabels(list(self.COLUMNS))
        self.tree.setUniformRowHeights(True)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.tree.itemActivated.connect(self._activated)
        self.tree.currentItemChanged.connect(self._current_changed)
        self.protocol = QtWidgets.QComboBox()
        self.protocol.setToolTip("Protocol of the current file (cd7flow/protocols); its default follows the tube")
        self._choices = protocol_choices()
        for c in self._choices:
            self.protocol.addItem(f"{c.name} v{c.version} ({c.assay})", c.name)
        self.protocol.setEnabled(False)
        self.protocol.setCurrentIndex(-1)  # no file chosen yet: no protocol shown
        self.protocol.activated.connect(self._protocol_picked)
        self.stack = QtWidgets.QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.tree)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        tools = QtWidgets.QHBoxLayout()
        self.tool_buttons: dict[str, QtWidgets.QToolButton] = {}
        for key, text, tip, slot in (("folder", "Folder...", "Add a study folder (searched recursively)", self.open_folder_dialog),
                                     ("manifest", "Manifest...", "Add the files of a study manifest (CSV)", self.open_manifest_dialog),
                                     ("demo", "Demo", "Add the bundled demo study", self.open_demo)):
            b = QtWidgets.QToolButton()
            b.setText(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            tools.addWidget(b)
            self.tool_buttons[key] = b
        tools.addStretch(1)
        self.tool_buttons["demo"].setEnabled(demo_manifest() is not None)
        lay.addLayout(tools)
        lay.addWidget(self.stack, 1)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("Protocol"))
        row.addWidget(self.protocol, 1)
        lay.addLayout(row)

    # ---- opening ------------------------------------------------------------
    def open_paths(self, paths: list[str]) -> int:
        """Add files, folders or manifests to the workspace; returns how many new files."""
        added = self.workspace.extend(open_workspace(paths))
        self.refresh()
        self.start_qc()
        return added

    def open_demo(self) -> None:
        manifest = demo_manifest()
        if manifest is None:
            self.sigError.emit("the demo study (sample_fcs/manifest.csv) is not installed beside cd7flow")
            return
        self._open_and_show([str(manifest)])

    def open_folder_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open study folder")
        if folder:
            self._open_and_show([folder])

    def open_manifest_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open manifest", "", "Manifest (*.csv);;All files (*)")
        if path:
            self._open_and_show([path])

    def _open_and_show(self, paths: list[str]) -> None:
        try:
            self.open_paths(paths)
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))
            return
        first = self.first_file()
        if first is not None:
            self.select_file(first)
            self.sigFile.emit(first)

    def first_file(self) -> str | None:
        for tubes in self.workspace.groups().values():
            for files in tubes.values():
                return files[0].path
        return None

    # ---- the tree -----------------------------------------------------------
    def refresh(self) -> None:
        self.tree.clear()
        self._items.clear()
        groups = self.workspace.groups()
        for patient, tubes in groups.items():
            top = QtWidgets.QTreeWidgetItem([patient, "", ""])
            top.setData(0, KIND_ROLE, "patient")
            top.setData(0, PATH_ROLE, patient)
            n = sum(len(f) for f in tubes.values())
            with_course = patient in self.workspace.patients_with_course()
            top.setToolTip(0, f"{patient}: {n} file(s)" + ("; patient not found in the manifest or keywords"
                                                          if patient == UNKNOWN else "") +
                           ("\ndouble-click: the patient's CAR-T course (persistence panel)" if with_course else ""))
            self.tree.addTopLevelItem(top)
            for tube, files in tubes.items():
                node = QtWidgets.QTreeWidgetItem([f"{tube} ({len(files)})", "", ""])
                node.setData(0, KIND_ROLE, "tube")
                node.setData(0, PATH_ROLE, patient)
                top.addChild(node)
                for f in files:
                    item = QtWidgets.QTreeWidgetItem([f.rel, "" if f.study_day is None else str(f.study_day), ""])
                    item.setData(0, KIND_ROLE, "file")
                    item.setData(0, PATH_ROLE, f.path)
                    source = "manifest" if f.source == "manifest" else \
                        "keywords: " + ", ".join(f"{k} from {v}" for k, v in f.inferred_from.items())
                    item.setToolTip(0, f"{f.path}\n{f.patient or '?'} / {f.tube or '?'} ({source})")
                    node.addChild(item)
                    self._items[f.path] = item
                    self._show_qc(f.path)
            top.setExpanded(True)
            for i in range(top.childCount()):  # a small study opens fully; a large one by patient
                top.child(i).setExpanded(len(self.workspace.files) <= 100)
        self.stack.setCurrentWidget(self.tree if self.workspace.files else self.welcome)
        self.tree.resizeColumnToContents(1)

    def _show_qc(self, path: str) -> None:
        item = self._items.get(path)
        if item is None:
            return
        rec = self.workspace.qc_cached(path)
        status = None if rec is None else rec["status"]
        item.setIcon(2, status_icon(status))
        item.setText(2, status or "...")
        item.setToolTip(2, "QC pending" if rec is None else qc_status_text(rec))
        group = item.parent()
        while group is not None:  # a tube and a patient show the worst status found below them
            worst = _worst(_file_statuses(group))
            group.setIcon(2, status_icon(worst))
            group.setText(2, worst or "")
            group = group.parent()

    def qc_status(self, path: str) -> str | None:
        """The status shown for a file (None while pending)."""
        item = self._items.get(path)
        return None if item is None or item.text(2) == "..." else item.text(2)

    def start_qc(self) -> None:
        """Queue QC for every file without a result yet (worker thread, file by file)."""
        for path in self.workspace.paths():
            if self.workspace.qc_cached(path) is None:
                self.background.submit(lambda p=path: self.workspace.qc(p), lambda rec, p=path: self._qc_done(p, rec),
                                       lambda msg, p=path: self.sigError.emit(f"QC of {p}: {msg}"))

    def _qc_done(self, path: str, rec: dict) -> None:
        self._show_qc(path)
        self.sigQC.emit(path, rec)

    # ---- selection ----------------------------------------------------------
    def select_file(self, path: str) -> None:
        item = self._items.get(path)
        if item is not None and self.tree.currentItem() is not item:
            self.tree.setCurrentItem(item)

    def _activated(self, item: QtWidgets.QTreeWidgetItem, _column: int) -> None:
        kind = item.data(0, KIND_ROLE)
        if kind == "file":
            self.sigFile.emit(item.data(0, PATH_ROLE))
        elif item.data(0, PATH_ROLE) != UNKNOWN:
            self.sigPatient.emit(item.data(0, PATH_ROLE))

    def _current_changed(self, item, _previous) -> None:
        path = item.data(0, PATH_ROLE) if item is not None and item.data(0, KIND_ROLE) == "file" else None
        self._current_path = path
        self.protocol.setEnabled(path is not None)
        self.protocol.setCurrentIndex(-1 if path is None else self.protocol.findData(self.workspace.protocol_for(path)))

    def _protocol_picked(self, index: int) -> None:
        if self._current_path is None:
            return
        name = self.protocol.itemData(index)
        try:
            self.workspace.set_protocol(self._current_path, name)
        except CD7FlowError as exc:
            self.sigError.emit(str(exc))
            return
        self.sigProtocol.emit(self._current_path, name)
