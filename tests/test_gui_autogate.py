"""Auto-gate in the viewer (gui/_qt/autogate.py, cd7flow/workstation/autogate.py), offscreen.

Reference: the CLI. ``cd7flow autogate FILE --gatingml G.xml --membership M.csv`` is run
in-process (typer's CliRunner); ``cd7flow gate FILE --gates G.xml --stats S.csv`` re-applies
those gates and gives every population's count; the membership CSV's column sums give the
protocol populations' counts. The viewer's tree must show exactly these numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed (the gui extra)")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (the test extra)")

from typer.testing import CliRunner  # noqa: E402

from cd7flow.cli import app as cli_app  # noqa: E402
from cd7flow.io.fcs_read import read_fcs  # noqa: E402
from cd7flow.workstation.autogate import (  # noqa: E402
    backgated, choose_protocol, picture_inputs, plot_density, plot_histogram,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "sample_fcs"
SCREENING = DEMO / "P01_screening_BM.fcs"
BLASTS = ("time_clean", "cells", "singlets", "viable", "blasts")


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory) -> dict[str, dict]:
    """Counts ``cd7flow autogate`` + ``cd7flow gate`` report for the screening tube."""
    out = tmp_path_factory.mktemp("cli")
    runner = CliRunner()
    gml, members, stats = out / "auto.xml", out / "members.csv", out / "stats.csv"
    r = runner.invoke(cli_app, ["autogate", str(SCREENING), "--gatingml", str(gml), "--membership", str(members)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_app, ["gate", str(SCREENING), "--gates", str(gml), "--stats", str(stats)])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(stats)
    counts = table[table.statistic == "count"]
    by_path = {tuple(p.strip("/").split("/")) if p != "/" else (): int(v) for p, v in zip(counts.population, counts.value)}
    membership = pd.read_csv(members)
    return {"paths": by_path, "populations": {c: int(membership[c].sum()) for c in membership.columns}}


@pytest.fixture
def window(make_window):
    return make_window()


def _autogate(window, qtbot, ticks: list | None = None):
    """Click Auto-gate and wait for the worker; returns the AutoGate result. ``ticks`` collects
    the beats of a 20 ms timer while the fit runs (the UI thread stays free)."""
    from PySide6 import QtCore

    panel = window.autogate
    timer = QtCore.QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(panel.controller.busy) if ticks is not None else None)
    with qtbot.waitSignal(panel.controller.sigFinished, timeout=120_000) as blocker:
        panel.run_button.click()
        assert panel.controller.busy and not panel.run_button.isEnabled() and panel.progress.isVisible()
        timer.start()
    timer.stop()
    assert panel.run_button.isEnabled() and not panel.progress.isVisible()
    return blocker.args[0]


# ---------------------------------------------------------------- protocol choice (Qt-free)
@pytest.mark.parametrize("name, protocol", [
    ("P01_screening_BM.fcs", "screening"), ("P01_FMO-CD7_BM.fcs", "screening"),
    ("P01_CAR_PB_D014.fcs", "car"), ("P01_MRD_BM_D028.fcs", "car"),
])
def test_protocol_follows_the_tube(name, protocol):
    assert choose_protocol(read_fcs(DEMO / name))[0] == protocol


def test_unknown_tube_gets_generic_gates():
    from cd7flow.sample import CaseInsensitiveDict, Sample

    t = read_fcs(SCREENING)
    words = {**dict(t.metadata.items()), "TUBE NAME": "specimen 12", "$SMNO": "specimen 12", "$FIL": "specimen 12"}
    s = Sample(t.events, t.channels, t.markers, CaseInsensitiveDict(words), t.ranges, t.spillover)
    assert choose_protocol(s) == ("leukocytes", "tube kind unknown: generic leukocyte gates")
    assert choose_protocol(s, tube="car")[0] == "car"  # a manifest's tube wins


# ---------------------------------------------------------------- the window
def test_autogate_tree_counts_equal_the_cli(window, qtbot, cli_reference):
    assert window.open_paths([SCREENING]) == 1
    ticks: list[bool] = []
    result = _autogate(window, qtbot, ticks)
    assert result.protocol.name == "screening"
    # the fit (about a second) ran off the UI thread: the event loop kept beating meanwhile
    assert ticks.count(True) >= 5, ticks
    rows = {r.path: r.count for r in window.model.populations()}
    # every population in the tree, the root included, has the count `cd7flow gate` gives for
    # the gates `cd7flow autogate` wrote
    assert rows == cli_reference["paths"]
    assert len(rows) == 17 and rows[BLASTS] == 13_795
    # the tree widget shows the same numbers
    for path, n in rows.items():
        assert window.populations.count_text(path) == str(n)
    # and the protocol's named populations match `cd7flow autogate --membership`
    by_name = {p[-1]: n for p, n in rows.items() if p}
    assert {k: by_name[k] for k in cli_reference["populations"]} == cli_reference["populations"]
    # every gate is marked automated, none adjusted
    assert all(window.model.is_automated(p) and not window.model.is_manually_adjusted(p)
               for p in rows if p and p[-1] in by_name and window.model.entry_at(p) is not None)
    assert window.errors_shown == []


def test_each_gating_step_has_its_own_plot_in_protocol_dimensions(window, qtbot):
    window.open_paths([SCREENING])
    _autogate(window, qtbot)
    grid = window.autogate.grid
    grid.refresh()
    steps = [item.step for item in grid.plots]
    names = [[g.name for g in s.gates] for s in steps]
    assert names[:5] == [["time_clean"], ["cells"], ["singlets"], ["viable"],
                         ["blasts", "lymphocytes", "monocytes", "granulocytes"]]
    cd45 = steps[4]
    assert [d.channel for d in cd45.dimensions] == ["BV510-A", "SSC-A"]  # CD45 x SSC, as the protocol gates it
    assert cd45.dimensions[0].transform == "logicle_BV510-A" and cd45.dimensions[1].transform is None
    # the protocol's own logicle (W fitted per channel) is the one the plot uses
    xf = window.model.strategy().transforms["logicle_BV510-A"]
    assert xf.params() == window.autogate.controller.last.strategy.transforms["logicle_BV510-A"].params()
    # boolean gates have no geometry: named, not drawn
    assert set(p[-1] for p in grid.not_drawn) == {"blasts_refined", "t_nk_cells", "cd45_ssc"}


def test_backgating_highlights_the_selected_population_in_its_ancestors(window, qtbot):
    window.open_paths([SCREENING])
    _autogate(window, qtbot)
    m = window.model
    m.select(BLASTS)
    grid = window.autogate.grid
    grid.refresh()
    result, source = m.result(), m.source()
    blasts = int(np.count_nonzero(result.mask(BLASTS)))
    assert blasts == 13_795
    seen = 0
    for item in grid.plots:
        step = item.step
        inputs = picture_inputs([step], result, source, BLASTS)
        if len(step.dimensions) == 2:
            rgba, base, high = plot_density(step, inputs)
        else:
            _, base, high = plot_histogram(step, inputs)
        if backgated(step, BLASTS):
            seen += 1
            # every blast inside the axis limits is painted; outside limits nothing is invented
            x = np.asarray(source.values(step.dimensions[0]))[result.mask(BLASTS)]
            inside = (x >= step.ranges[0][0]) & (x < step.ranges[0][1])
            if len(step.dimensions) == 2:
                y = np.asarray(source.values(step.dimensions[1]))[result.mask(BLASTS)]
                inside &= (y >= step.ranges[1][0]) & (y < step.ranges[1][1])
                rgb = rgba[..., :3].astype(int)
                red = (rgb[..., 0] - rgb[..., 1] > 40) & (rgb[..., 0] - rgb[..., 2] > 40)
                grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2]) & (rgba[..., 3] == 255)
                assert np.array_equal(red, high > 0)  # blasts' bins red, every one of them
                assert np.array_equal(grey, (base > 0) & (high == 0))  # the other parent events grey
            assert int(high.sum()) == int(inside.sum()) > 0.99 * blasts
        else:
            assert not high.any()
    # the plots of the blasts' ancestors: time_clean (all events), cells, singlets, viable, CD45/SSC;
    # the blasts' own refinement plots show only blasts, the lymphocytes' plots no blast at all
    assert seen == 5
    # the window draws those pictures (computed on the grid's worker thread)
    import pyqtgraph as pg

    grid.wait()
    cd45 = next(i for i in grid.plots if len(i.step.gates) == 4)
    images = [x for x in cd45.items if isinstance(x, pg.ImageItem)]
    assert len(images) == 1 and "back-gated" in cd45.titleLabel.text
    np.testing.assert_array_equal(images[0].image, plot_density(cd45.step, picture_inputs([cd45.step], result, source,
                                                                                          BLASTS))[0])
    labels = sorted(x.textItem.toPlainText() for x in cd45.items if isinstance(x, pg.TextItem))
    assert labels[0] == "blasts\n13,795 (61.6%)"
    lymph_steps = [i for i in grid.plots if i.step.parent == BLASTS[:-1] + ("lymphocytes",)]
    assert lymph_steps and not any(backgated(i.step, BLASTS) for i in lymph_steps)


def test_clicking_inside_a_gate_selects_its_population(window, qtbot):
    window.open_paths([SCREENING])
    _autogate(window, qtbot)
    grid = window.autogate.grid
    grid.refresh()
    item = next(i for i in grid.plots if [g.name for g in i.step.gates][:1] == ["blasts"])
    blast_gate = item.step.gates[0]
    centre = blast_gate.outline[:-1].mean(axis=0)
    from PySide6 import QtCore

    grid.wait()
    qtbot.wait(50)
    # a real mouse click at the blast gate's centre, through the widget
    scene_pos = item.getViewBox().mapViewToScene(QtCore.QPointF(*centre))
    widget_pos = grid.mapFromScene(scene_pos)
    qtbot.mouseClick(grid.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=widget_pos)
    assert window.model.selected == BLASTS
    # outside every gate of the step: its parent population
    from gating.gates import points_in_polygon

    (x0, x1), (y0, y1) = item.step.ranges
    corner = (x0 + 0.03 * (x1 - x0), y1 - 0.03 * (y1 - y0))
    assert not any(points_in_polygon(np.array([corner[0]]), np.array([corner[1]]), g.outline[:-1])[0]
                   for g in item.step.gates)
    widget_pos = grid.mapFromScene(item.getViewBox().mapViewToScene(QtCore.QPointF(*corner)))
    qtbot.mouseClick(grid.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=widget_pos)
    assert window.model.selected == BLASTS[:-1]


def test_switching_protocol_refits(window, qtbot):
    from cd7flow.assays.protocol_gating import run_protocol_gates
    from cd7flow.protocol import load_protocol

    window.open_paths([SCREENING])
    panel = window.autogate
    panel.protocol.setCurrentIndex(panel.protocol.findData("leukocytes"))
    result = _autogate(window, qtbot)
    assert result.protocol.name == "leukocytes" and result.why == "chosen by the user"
    ref = run_protocol_gates(read_fcs(SCREENING), load_protocol("leukocytes"))
    expected = {pop.path: ref.result.count(pop.path) for pop in ref.tree.populations()}
    got = {r.path: r.count for r in window.model.populations() if r.path}
    assert got == expected


def test_a_sample_the_protocol_cannot_gate_is_a_clear_message(window, qtbot, tmp_path):
    from cd7flow.io.fcs_write import write_fcs

    s = read_fcs(SCREENING)
    bad = tmp_path / "no_cd45_screening.fcs"  # the CD45 label left out of $PnS: the protocol cannot find it
    write_fcs(bad, s, markers=["" if m == "CD45" else m for m in s.markers])
    window.open_paths([bad])
    panel = window.autogate
    panel.protocol.setCurrentIndex(panel.protocol.findData("screening"))
    with qtbot.waitSignal(panel.controller.sigFailed, timeout=120_000) as blocker:
        panel.run_button.click()
    assert str(bad) in blocker.args[0] and "CD45" in blocker.args[0]
    assert window.errors_shown and window.errors_shown[-1][0] == "Auto-gate"
    assert window.model.n_gates == 0 and panel.run_button.isEnabled()


def test_double_click_puts_a_step_on_the_main_plot_with_its_gates(window, qtbot):
    window.open_paths([SCREENING])
    _autogate(window, qtbot)
    grid = window.autogate.grid
    grid.refresh()
    m = window.model
    cd45 = next(i for i in grid.plots if len(i.step.gates) == 4)
    grid.show_on_main_plot(cd45.step)
    assert (m.x_channel, m.y_channel, m.x_transform, m.y_transform) == ("BV510-A", "SSC-A", "logicle", "linear")
    assert m.selected == BLASTS[:-1] and m.compensated
    overlays, _ = m.gate_overlays()
    drawn = {o.path[-1] for o in overlays}
    assert {"blasts", "lymphocytes", "monocytes", "granulocytes"} <= drawn
    # drawn on the gates' own scale (the protocol's fitted logicle): exact, no re-projection note
    assert all(o.exact for o in overlays if o.path[-1] in drawn)
    viable = next(i for i in grid.plots if [g.name for g in i.step.gates] == ["viable"])
    grid.show_on_main_plot(viable.step)
    assert m.plot_mode == "histogram" and m.x_channel == "APC-Cy7-A" and m.selected == BLASTS[:-2]
    assert "viable" in {o.path[-1] for o in m.gate_overlays()[0]}


def test_another_sample_shows_where_the_gates_were_fitted(window, qtbot):
    window.open_paths([SCREENING, DEMO / "P02_screening_BM.fcs"])
    m = window.model
    m.set_current(0)
    _autogate(window, qtbot)
    m.set_current(1)
    status = window.autogate.status.text()
    assert "gates fitted on P01_screening_BM.fcs" in status and "Auto-gate fits P02_screening_BM.fcs" in status
    result = _autogate(window, qtbot)
    assert result.sample is m.sample and result.sample.name == "P02_screening_BM.fcs"
    assert "P02_screening_BM.fcs: protocol screening" in window.autogate.status.text()


def test_a_fit_for_a_sample_no_longer_shown_is_dropped(window, qtbot):
    window.open_paths([SCREENING, DEMO / "P02_screening_BM.fcs"])
    m = window.model
    m.set_current(0)
    finished = []
    window.autogate.controller.sigFinished.connect(finished.append)
    window.autogate.run_button.click()
    m.set_current(1)  # the user moves on while P01 is being fitted
    assert window.autogate.controller.wait()
    qtbot.waitUntil(lambda: not window.autogate.controller.busy, timeout=10_000)
    assert finished == [] and m.n_gates == 0
    panel = window.autogate
    qtbot.waitUntil(lambda: panel.run_button.isEnabled(), timeout=10_000)
    assert not panel.progress.isVisible() and "fit of P01_screening_BM.fcs dropped" in panel.status.text()


def test_the_sample_browsers_protocol_is_used_unless_the_user_picks_one(window, qtbot):
    window.open_paths([SCREENING])
    c = window.autogate.controller
    c.protocol_hint = lambda sample: "leukocytes" if sample.name == SCREENING.name else None
    result = _autogate(window, qtbot)
    assert result.protocol.name == "leukocytes" and result.why == "the sample browser's protocol for this file"
    panel = window.autogate
    panel.protocol.setCurrentIndex(panel.protocol.findData("screening"))
    assert _autogate(window, qtbot).protocol.name == "screening"
