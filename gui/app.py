"""``cd7flow-gui``: the desktop viewer for FCS files (PySide6 + pyqtgraph).

Usage: ``cd7flow-gui [FILE.fcs ...]``; files given on the command line are opened at start.
``cd7flow-gui PATH --screenshot OUT.png [--size WxH]`` opens PATH (file, folder or manifest),
auto-gates its first sample, writes the window as a PNG and exits (``gui/_qt/screenshot.py``).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence


def create_window(paths: Sequence[str] = ()):
    """Build the main window (a QApplication must exist) and open ``paths`` in it."""
    from ._qt.main_window import MainWindow

    window = MainWindow()
    if paths:  # [panels] files, folders or manifests go through the workspace browser
        window.workstation.open_paths(list(paths))
    return window


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: start Qt, show the window, run the event loop; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return 0
    try:  # PySide6 first: without it pyqtgraph fails with a message that names no package
        from PySide6 import QtWidgets
        import pyqtgraph as pg
    except ImportError as exc:  # the Qt stack is the optional "gui" extra
        package = (exc.name or "").split(".")[0]
        if isinstance(exc, ModuleNotFoundError) and package in ("PySide6", "shiboken6", "pyqtgraph"):
            problem = f"{package} is not installed; the viewer needs the gui extra: pip install 'cd7flow[gui]'"
        else:  # installed, but e.g. a system library Qt needs is missing
            problem = f"cannot load Qt: {exc}"
        print(f"cd7flow-gui: {problem}", file=sys.stderr)
        return 2
    if any(a == "--screenshot" or a.startswith("--screenshot=") for a in args):  # headless picture, then exit
        from ._qt.screenshot import main as screenshot
        return screenshot(args)
    pg.setConfigOptions(antialias=False, imageAxisOrder="col-major")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0], *[a for a in args if a.startswith("-")]])
    app.setApplicationName("cd7flow")
    window = create_window([a for a in args if not a.startswith("-")])
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
