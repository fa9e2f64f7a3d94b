"""Viewer redraw benchmark: a 1,000,000-event x 14-channel sample in the real window.

Not a test. Run from the repository root (offscreen Qt, no display needed):

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_viewer_redraw.py [--events 1000000] [--runs 5]

Writes benchmarks/_work/bench_viewer.fcs (FCS 3.1 float32, 14 channels: FSC-A/H,
SSC-A/H, 9 fluorescence channels with markers and a $SPILLOVER, Time; clustered
populations with compensation spread so the protocols' logicle W differs per
channel). Times, with the whole window (one density plot, population tree,
statistics table) and a polygon gate on the plot:

- axis channel: ``set_axes(x=another fluorescence channel)`` + the redraw (a channel
  not shown before: compensated column, the protocol's W estimate, logicle, binning);
- transform: logicle -> asinh on x + the redraw;
- compensation: toggle off or on + the redraw;
- drag step (UI thread): what the UI thread does per mouse move while a gate is
  dragged (the reshaped gate from the plot, the preview result set up, the job queued);
- drag step (labels): from the mouse move until the worker's counts and % reached the
  tree and the gate labels; (statistics): until the 14-channel statistics of the
  dragged population reached the table;
- drag release: the committed edit + the redraw of every panel.

Each action starts with the background workers idle; each figure is the median of
``--runs`` repetitions (min and max alongside). Prints
a markdown table and writes it to benchmarks/results_viewer.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
WORK = HERE / "_work"
RESULTS = HERE / "results_viewer.md"
SCATTER = ["FSC-A", "FSC-H", "SSC-A", "SSC-H"]
FLUOR = ["FITC-A", "PE-A", "PerCP-Cy5.5-A", "PE-Cy7-A", "APC-A", "APC-R700-A", "APC-Cy7-A", "BV421-A", "BV510-A"]
MARKERS = ["CD7", "CD3", "CD45", "CD5", "CD34", "CD19", "CD56", "CD4", "CD8"]


def make_file(path: Path, n: int, seed: int = 3) -> Path:
    """Write the benchmark sample (clustered scatter, log-normal fluorescence with spill-over)."""
    from cd7flow.io.fcs_write import write_fcs

    rng = np.random.default_rng(seed)
    k = rng.integers(0, 4, n)  # four cell types
    fsc = rng.normal([60e3, 90e3, 120e3, 150e3][0], 9e3, n) + k * 25e3
    ssc = rng.normal(20e3, 5e3, n) + k * 18e3
    fl = np.empty((n, len(FLUOR)))
    for j in range(len(FLUOR)):
        bright = rng.random(4) < 0.5
        fl[:, j] = np.where(bright[k], rng.lognormal(8.5, 0.6, n), rng.normal(0, 80, n))
    spill = np.eye(len(FLUOR))
    for j in range(len(FLUOR) - 1):
        spill[j, j + 1] = 0.08  # each dye spills 8% into the next detector
    observed = fl @ spill + rng.normal(0, 30, (n, len(FLUOR)))
    events = np.column_stack([fsc, fsc * 0.8, ssc, ssc * 0.9, observed, np.sort(rng.uniform(0, 600, n))])
    names = SCATTER + FLUOR + ["Time"]
    write_fcs(path, events.astype(np.float32), channels=names, markers=[""] * 4 + MARKERS + [""],
              ranges=[262144] * len(names), spillover=(FLUOR, spill))
    return path


def timed(fn, runs: int) -> list[float]:
    out = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    WORK.mkdir(exist_ok=True)
    path = WORK / "bench_viewer.fcs"
    if not path.is_file():
        make_file(path, args.events)

    import pyqtgraph as pg
    from PySide6 import QtWidgets

    pg.setConfigOptions(antialias=False, imageAxisOrder="col-major")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    from gui.app import create_window

    t0 = time.perf_counter()
    window = create_window([str(path)])
    window.resize(1400, 900)
    window.show()
    app.processEvents()
    open_ms = (time.perf_counter() - t0) * 1000
    m, pv = window.model, window.plot_view
    assert m.sample.n_events == args.events and m.compensated

    def settle():
        app.processEvents()

    def idle():
        """Let background work (statistics, drag previews) finish before the next timed action."""
        for _ in range(3):
            window.stats.worker.wait()
            pv.preview.wait()
            app.processEvents()

    m.set_axes(x="CD7", y="CD3")
    verts = np.array([[0.45, 0.40], [0.85, 0.38], [0.90, 0.80], [0.50, 0.85]])
    gate = m.add_polygon_gate(verts, name="Blasts")
    m.select(())
    settle()
    rows = {}
    channels = [c for c in FLUOR if c not in ("FITC-A", "PE-A")]

    def timed_idle(fn, runs):
        out = []
        for i in range(runs):
            idle()
            out += timed(lambda _, i=i: fn(i), 1)
        return out

    def change_axis(i):
        m.set_axes(x=channels[i % len(channels)])
        settle()

    rows["axis channel (new fluorescence channel)"] = timed_idle(change_axis, args.runs)
    m.set_axes(x="CD7")
    settle()

    def change_transform(i):
        m.set_axes(x_transform="asinh" if i % 2 == 0 else "logicle")
        settle()

    rows["transform (logicle <-> asinh on x)"] = timed_idle(change_transform, args.runs)
    m.set_axes(x_transform="logicle")

    def toggle_comp(i):
        m.set_compensated(not m.compensated)
        settle()

    rows["compensation (toggle)"] = timed_idle(toggle_comp, args.runs + (args.runs % 2))
    if not m.compensated:
        m.set_compensated(True)
    m.select(gate)  # the statistics table follows the dragged population
    window.controls.tool_buttons["edit"].setChecked(True)
    settle()
    roi = pv.rois[gate]

    ui_times, count_times, stats_times = [], [], []
    got: dict[str, float] = {}
    pv.preview.sigCounts.connect(lambda counts: got.setdefault("counts", time.perf_counter()))
    pv.preview.sigStatistics.connect(lambda rows: got.setdefault("stats", time.perf_counter()))
    for i in range(args.runs):
        idle()
        got.clear()
        roi.setPos(roi.pos().x() + 0.002, roi.pos().y(), update=False)
        t0 = time.perf_counter()
        pv._drag_step(gate)  # what one mouse move does
        ui_times.append((time.perf_counter() - t0) * 1000)
        while "stats" not in got:
            app.processEvents()
            time.sleep(0.0005)
        count_times.append((got["counts"] - t0) * 1000)
        stats_times.append((got["stats"] - t0) * 1000)
        pv._dragging = None
    rows["drag step, UI thread per mouse move"] = ui_times
    rows["drag step, count and % labels updated (worker)"] = count_times
    rows["drag step, 14-channel statistics updated (worker)"] = stats_times

    def release(i):
        pv._dragging = None
        m.edit_gate_on_plot(gate, 0, vertices=verts + [0.001 * (i + 1), 0])
        settle()

    rows["drag release (commit + redraw of every panel)"] = timed_idle(release, args.runs)

    lines = [
        f"# Viewer redraw, {args.events:,} events x {len(SCATTER) + len(FLUOR) + 1} channels",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"offscreen Qt; window opened with the file in {open_ms:,.0f} ms. Milliseconds per action "
        f"(median of {args.runs}; min-max).",
        "",
        "| action | median ms | min-max ms |",
        "|---|---:|---:|",
    ]
    for name, times in rows.items():
        lines.append(f"| {name} | {statistics.median(times):,.0f} | {min(times):,.0f}-{max(times):,.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text, encoding="utf-8")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
