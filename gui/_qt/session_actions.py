"""File menu: sessions (open / save) and the four exports (Gating-ML, plot PNG/SVG, statistics CSV,
population FCS), all in one "Export" submenu.

Sessions are :mod:`cd7flow.workstation.session`: checked completely before anything is shown,
so a moved or changed data file gives one message naming it and leaves the window as it was.
A session opens in this window when it is empty, else in a new window. Plot pictures come
from pyqtgraph's exporters and are written atomically like every other output.
"""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtGui, QtWidgets

from cd7flow.errors import CD7FlowError
from cd7flow.outputs import atomic_output
from cd7flow.workstation.session import capture_session, load_session, restore_session, save_session

SESSION_FILTER = "cd7flow session (*.cd7session.json *.json);;All files (*)"
SESSION_SUFFIX = ".cd7session.json"


def plot_widget(window):
    """The graphics view of the window's plot area (with every plot of its layout)."""
    import pyqtgraph as pg

    view = window.plot_view
    if isinstance(view, pg.GraphicsView):
        return view
    views = view.findChildren(pg.GraphicsView)
    if not views:
        raise CD7FlowError("there is no plot to export")
    return views[0]


def export_plot(view, path: str | Path) -> Path:
    """Write what a pyqtgraph GraphicsView shows as PNG or SVG (by suffix), atomically.

    PNG: pyqtgraph's ImageExporter of the view's scene. SVG: Qt's own SVG generator painting
    the view (lines and text as vectors, density images embedded): pyqtgraph 0.13's
    SVGExporter cannot read back the paths Qt 6 writes (pyqtgraph issue #3485).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        from PySide6 import QtCore, QtGui, QtSvg

        buf = QtCore.QBuffer()
        buf.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
        gen = QtSvg.QSvgGenerator()
        gen.setOutputDevice(buf)
        gen.setSize(view.size())
        gen.setViewBox(QtCore.QRect(QtCore.QPoint(0, 0), view.size()))
        gen.setTitle(path.stem)
        painter = QtGui.QPainter(gen)
        try:
            view.render(painter)
        finally:
            painter.end()
        data = bytes(buf.data())
    elif suffix == ".png":
        import pyqtgraph.exporters as exporters

        from .screenshot import png_bytes

        data = png_bytes(exporters.ImageExporter(view.scene()).export(toBytes=True))
    else:
        raise CD7FlowError(f"{path}: a plot is exported as .png or .svg")
    with atomic_output(path, "wb") as fh:
        fh.write(data)
    return path


class SessionActions:
    """The session and export actions of one main window (``window.session_actions``)."""

    def __init__(self, window):
        self.window = window
        self.path: Path | None = None
        menu = next((a.menu() for a in window.menuBar().actions() if a.text().replace("&", "") == "File"), None)
        menu = menu or window.menuBar().addMenu("&File")
        first = menu.actions()[0] if menu.actions() else None
        after_open = menu.actions()[1] if len(menu.actions()) > 1 else None
        self.act_open = self._action("Open &session...", self.open_dialog, QtGui.QKeySequence("Ctrl+Shift+O"))
        self.act_save = self._action("Save session", self.save, QtGui.QKeySequence.StandardKey.Save)
        self.act_save_as = self._action("Save session &as...", self.save_as_dialog, QtGui.QKeySequence("Ctrl+Shift+S"))
        for act in (self.act_open, self.act_save, self.act_save_as):
            menu.insertAction(after_open or first, act)
        export = QtWidgets.QMenu("&Export", window)
        self.act_export_gml = self._action("Gates as &Gating-ML 2.0...", lambda: window.save_gatingml_dialog())
        self.act_export_png = self._action("Plot as &PNG...", lambda: self.export_plot_dialog(".png"))
        self.act_export_svg = self._action("Plot as &SVG...", lambda: self.export_plot_dialog(".svg"))
        self.act_export_csv = self._action("&Statistics as CSV...", lambda: window.export_csv_dialog())
        self.act_export_fcs = self._action("Population as &FCS...", lambda: window.export_fcs_dialog())
        for act in (self.act_export_gml, self.act_export_png, self.act_export_svg, self.act_export_csv,
                    self.act_export_fcs):
            export.addAction(act)
        menu.insertMenu(after_open or first, export)
        self.export_menu = export
        for name in ("act_export_fcs", "act_export_csv"):  # the window's own items now live in Export
            act = getattr(window, name, None)
            if act is not None:
                act.setVisible(False)
        model = window.model
        for name in ("samples", "gates_changed", "sample_changed"):
            sig = getattr(model.events, name, None)
            if sig is not None:
                sig.connect(self.update_actions)
        self.update_actions()

    def _action(self, text, slot, shortcut=None) -> QtGui.QAction:
        act = QtGui.QAction(text, self.window)
        if shortcut is not None:
            act.setShortcut(shortcut)
        act.triggered.connect(lambda *_: self.window._run(slot))
        return act

    def update_actions(self, *_):
        m = self.window.model
        has_sample = m.sample is not None
        for act in (self.act_save, self.act_save_as, self.act_export_png, self.act_export_svg,
                    self.act_export_csv, self.act_export_fcs):
            act.setEnabled(has_sample)
        self.act_export_gml.setEnabled(m.n_gates > 0)

    # ---- sessions ---------------------------------------------------------
    def _capture(self):
        panel = getattr(self.window, "autogate", None)
        controller = panel.controller if panel is not None else None
        last = controller.last if controller is not None else None
        fitted_on = None
        if last is not None:
            fitted_on = next((i for i, s in enumerate(self.window.model.samples) if s is last.sample), None)
        session = capture_session(self.window.model, protocol=controller.protocol if controller else None,
                                  fitted_on=fitted_on, fit_protocol=last.provenance() if last else None)
        workspace = _workspace(self.window)
        if workspace is not None:  # the study the sample browser shows, and protocols picked there
            session.study = [str(Path(p).absolute()) for p in (workspace.manifest, workspace.folder) if p][:1]
            session.file_protocols = dict(workspace.protocol_override)
        return session

    def save_to(self, path: str | Path) -> Path:
        out = save_session(self._capture(), path)
        self.path = Path(out)
        model = self.window.model
        model.dirty = False  # the gates are in the session: nothing unsaved (the title loses its "*")
        model.events.history.emit()
        self.window.statusBar().showMessage(f"saved session {out}", 8000)
        return out

    def save(self):
        if self.path is None:
            return self.save_as_dialog()
        return self.save_to(self.path)

    def save_as_dialog(self):
        suggested = str(self.path) if self.path else "session" + SESSION_SUFFIX
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self.window, "Save session", suggested, SESSION_FILTER)
        return self.save_to(path) if path else None

    def open_dialog(self):
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self.window, "Open session", "", SESSION_FILTER)
        return self.open(path) if path else None

    def open(self, path: str | Path):
        """Load a session (checked first: a bad one raises and changes nothing); returns the window
        it opened in (this one when empty, else a new one)."""
        loaded = load_session(path)
        target = self.window
        if target.model.samples:
            from ..app import create_window

            target = create_window()
            target.show()
            self.window.session_windows = [*getattr(self.window, "session_windows", []), target]  # keep it alive
        workspace = _workspace(target)
        if workspace is not None and loaded.session.study:
            target.workstation.browser.open_paths(loaded.session.study)
        restore_session(target.model, loaded)
        if workspace is not None:
            for path, name in loaded.session.file_protocols.items():
                try:
                    workspace.set_protocol(path, name)
                except CD7FlowError as exc:  # e.g. a lab protocol file that is gone: say so, keep the rest
                    target.statusBar().showMessage(f"protocol of {path} not restored: {exc}", 15000)
        target.session_actions.path = Path(path)
        panel = getattr(target, "autogate", None)
        if panel is not None and loaded.session.protocol:
            i = panel.protocol.findData(loaded.session.protocol)
            if i >= 0:
                panel.protocol.setCurrentIndex(i)
        target.statusBar().showMessage(f"opened session {path} ({len(loaded.samples)} sample(s))", 8000)
        return target

    # ---- plots ------------------------------------------------------------
    def export_plot_dialog(self, suffix: str):
        s = self.window.model.sample
        stem = Path(s.name).stem if s is not None else "plot"
        kind = "PNG image (*.png)" if suffix == ".png" else "SVG drawing (*.svg)"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self.window, "Export plot", stem + suffix, kind)
        if path:
            if not path.lower().endswith(suffix):
                path += suffix
            out = export_plot(plot_widget(self.window), path)
            self.window.statusBar().showMessage(f"wrote {out}", 8000)


def _workspace(window):
    """The sample browser's workspace, when the window has one."""
    return getattr(getattr(getattr(window, "workstation", None), "browser", None), "workspace", None)


def install(window) -> SessionActions:
    actions = SessionActions(window)
    window.session_actions = actions
    return actions
