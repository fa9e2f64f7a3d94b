"""``cd7flow-gui PATH --screenshot OUT.png [--size WxH]``: the main window, auto-gated, as a PNG.

Headless (Qt's offscreen platform unless a display platform was chosen): opens PATH (an FCS
file, a folder or a study manifest), makes its first file current, fits that sample's automated
gates synchronously (the protocol its tube calls for), renders the window at the asked size and
writes the PNG atomically. Bad arguments print one line and exit 2; so does a user error while
opening or gating (a :class:`~cd7flow.errors.CD7FlowError`).
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SIZE = (1600, 1000)
MIN_SIDE, MAX_SIDE = 320, 8192
USAGE = "usage: cd7flow-gui PATH --screenshot OUT.png [--size WxH]"


class UsageError(Exception):
    """A bad command line (the message is the one line printed)."""


@dataclass(frozen=True)
class ScreenshotArgs:
    path: Path
    out: Path
    size: tuple[int, int]


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m:
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1600x1000")
    w, h = int(m.group(1)), int(m.group(2))
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise UsageError(f"--size {text}: each side must be {MIN_SIDE}-{MAX_SIDE} pixels")
    return w, h


def parse_args(args: Sequence[str]) -> ScreenshotArgs:
    """``PATH --screenshot OUT.png [--size WxH]`` (options also as ``--opt=value``)."""
    opts: dict[str, str] = {}
    paths: list[str] = []
    it = iter(args)
    for a in it:
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            if name not in ("--screenshot", "--size"):
                raise UsageError(f"unknown option {name} ({USAGE})")
            if not eq:
                value = next(it, None)
                if value is None or value.startswith("--"):
                    raise UsageError(f"{name} needs a value ({USAGE})")
            if name in opts:
                raise UsageError(f"{name} given twice")
            opts[name] = value
        else:
            paths.append(a)
    if len(paths) != 1:
        raise UsageError(f"--screenshot needs exactly one PATH (a file, folder or manifest), got {len(paths)} ({USAGE})")
    out = Path(opts["--screenshot"])
    if out.suffix.lower() != ".png":
        raise UsageError(f"--screenshot {out}: the output must be a .png file")
    if not out.absolute().parent.is_dir():
        raise UsageError(f"--screenshot {out}: folder {out.absolute().parent} does not exist")
    path = Path(paths[0])
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    if path.resolve() == out.resolve():
        raise UsageError(f"--screenshot {out}: refusing to overwrite the input")
    size = parse_size(opts["--size"]) if "--size" in opts else DEFAULT_SIZE
    return ScreenshotArgs(path, out, size)


def render_window(window, size: tuple[int, int]):
    """The window drawn at ``size`` (pixels) as a QImage of exactly that size."""
    from PySide6 import QtCore, QtGui, QtWidgets

    app = QtWidgets.QApplication.instance()
    window.setFixedSize(*size)  # docks' minimum widths must not make the picture larger than asked
    window.show()
    for _ in range(5):  # layouts, coalesced redraws (zero-delay timers), pyqtgraph's deferred painting
        app.processEvents()
        QtCore.QThread.msleep(20)
    panel = getattr(window, "autogate", None)
    grid = getattr(panel, "grid", None)
    if grid is not None:  # the gate plots' pictures are computed on a worker thread
        panel.size_dock()
        app.processEvents()
        grid.refresh()
        grid.wait()
        for _ in range(3):
            app.processEvents()
            QtCore.QThread.msleep(20)
    image = window.grab().toImage()
    if (image.width(), image.height()) != size:  # a high-dpi platform: device pixels != logical pixels
        image = image.scaled(*size, QtCore.Qt.AspectRatioMode.IgnoreAspectRatio,
                             QtCore.Qt.TransformationMode.SmoothTransformation)
    return image.convertToFormat(QtGui.QImage.Format.Format_RGB32)


def png_bytes(image) -> bytes:
    from PySide6 import QtCore

    buf = QtCore.QBuffer()
    buf.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buf, "PNG"):
        raise OSError("Qt could not encode the PNG")
    return bytes(buf.data())


def take_screenshot(args: ScreenshotArgs):
    """Open, auto-gate, render and write; returns (window, AutoGate). A QApplication must exist."""
    from cd7flow.errors import CD7FlowError
    from cd7flow.outputs import atomic_output

    from ..app import create_window

    window = create_window()
    window.show_error = _warn  # headless: an unreadable file is a warning line, not a dialog
    window.workstation.open_paths([str(args.path)])  # the sample browser: patient > tube > file
    if window.model.sample is None:
        raise CD7FlowError(f"{args.path}: no FCS file could be opened")
    if window.model.current_index != 0:
        window.model.set_current(0)
    result = window.autogate.controller.run_now()
    # the assay panel recomputes from the auto-gated tree in the background: show its numbers
    window.workstation.screening.wait()
    image = render_window(window, args.size)
    data = png_bytes(image)
    with atomic_output(args.out, "wb") as fh:
        fh.write(data)
    return window, result


def _warn(message: str, title: str = "cd7flow") -> None:
    print(f"cd7flow-gui: warning: {message.splitlines()[0] if message else title}", file=sys.stderr)


def main(args: Sequence[str]) -> int:
    """Entry point for ``--screenshot``: 0 on success, 2 with one line on stderr otherwise."""
    from cd7flow.errors import CD7FlowError

    try:
        parsed = parse_args(args)
    except UsageError as exc:
        print(f"cd7flow-gui: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # this process is the app: no display needed
    from PySide6 import QtWidgets
    import pyqtgraph as pg

    from PySide6 import QtCore

    before = {k: pg.getConfigOption(k) for k in ("antialias", "imageAxisOrder")}
    pg.setConfigOptions(antialias=True, imageAxisOrder="col-major")  # smooth lines in the picture
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
    app.setApplicationName("cd7flow")
    try:
        window, result = take_screenshot(parsed)
    except CD7FlowError as exc:
        print(f"cd7flow-gui: {exc}", file=sys.stderr)
        return 2
    finally:
        pg.setConfigOptions(**before)  # an embedding process (tests) keeps its own settings
    for pool in window.findChildren(QtCore.QThreadPool):  # background work (e.g. QC icons) stops here
        pool.clear()
        pool.waitForDone()
    p = result.protocol
    print(f"wrote {parsed.out} ({parsed.size[0]}x{parsed.size[1]}): {result.sample.name} auto-gated with "
          f"protocol {p.name} v{p.version}, {len(result.tree)} populations")
    window.close()
    return 0
