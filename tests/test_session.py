"""Viewer sessions (cd7flow/workstation/session.py and File > Open/Save session).

References: counts of the reloaded gates against the gates that were saved, re-applied by
``GatingStrategy.apply`` (the CLI's ``gate`` path); sha256 against hashlib over the file's bytes.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cd7flow.errors import CD7FlowError, SessionError
from cd7flow.io.fcs_read import read_fcs
from cd7flow.workstation.autogate import run_autogate
from cd7flow.workstation.session import (
    SCHEMA_VERSION, GateSet, Session, load_session, read_session, sample_entry, save_session, strategy_to_gatingml,
)

REPO = Path(__file__).resolve().parents[1]
SCREENING = REPO / "sample_fcs" / "P01_screening_BM.fcs"
CAR = REPO / "sample_fcs" / "P01_CAR_PB_D014.fcs"


@pytest.fixture
def study(tmp_path) -> dict[str, Path]:
    """Copies of two demo tubes (the tests move and change them; the demo study stays as it is)."""
    folder = tmp_path / "study"
    folder.mkdir()
    return {p.name: Path(shutil.copy(p, folder / p.name)) for p in (SCREENING, CAR)}


@pytest.fixture(scope="module")
def fitted():
    return run_autogate(read_fcs(SCREENING))


def _session(study, fitted) -> Session:
    samples = [sample_entry(read_fcs(p)) for p in study.values()]
    gml = strategy_to_gatingml(fitted.strategy)
    entries = [{"path": pop.path_str, "automated": True, "source": "screening"} for pop in fitted.tree.populations()]
    return Session(samples, 0, GateSet(gml, entries, gml, 0, fitted.provenance()), [], {"plots": []}, "screening")


def test_saved_session_reloads_files_and_the_same_gates(study, fitted, tmp_path):
    out = save_session(_session(study, fitted), tmp_path / "s.cd7session.json")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # atomic: no temporary left
    data = json.loads(out.read_text())
    assert data["schema"] == "cd7flow-session" and data["schema_version"] == SCHEMA_VERSION
    for row, path in zip(data["samples"], study.values()):
        assert row["path"] == str(path.absolute())
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_session(out)
    assert [s.path for s in loaded.samples] == [str(p) for p in study.values()]
    result = loaded.gates.apply(loaded.samples[0])
    expected = fitted.counts()
    assert {pop.path: result.count(pop.path) for pop in loaded.gates.tree.populations()} == expected
    assert expected[("time_clean", "cells", "singlets", "viable", "blasts")] == 13_795
    assert loaded.fitted is not None and loaded.session.gates.protocol["protocol"] == "screening"


def test_a_moved_file_is_named_and_nothing_loads(study, fitted, tmp_path):
    out = save_session(_session(study, fitted), tmp_path / "s.json")
    moved = study["P01_CAR_PB_D014.fcs"]
    moved.rename(tmp_path / "elsewhere.fcs")
    with pytest.raises(SessionError) as err:
        load_session(out)
    msg = str(err.value)
    assert msg.startswith(f"{moved}: is missing (moved or deleted)") and str(out) in msg
    assert err.value.path == str(moved)


def test_a_changed_file_is_named(study, fitted, tmp_path):
    out = save_session(_session(study, fitted), tmp_path / "s.json")
    changed = study["P01_screening_BM.fcs"]
    before = hashlib.sha256(changed.read_bytes()).hexdigest()
    with open(changed, "ab") as fh:  # trailing bytes: still a readable FCS file, but not the one saved
        fh.write(b"\0" * 16)
    assert read_fcs(changed).n_events == 25_000
    with pytest.raises(SessionError, match="has changed since the session") as err:
        load_session(out)
    assert err.value.path == str(changed)
    assert before[:12] in str(err.value)


def test_two_bad_files_are_both_named_by_the_session(study, fitted, tmp_path):
    out = save_session(_session(study, fitted), tmp_path / "s.json")
    for p in study.values():
        p.unlink()
    with pytest.raises(SessionError, match="2 files cannot be restored") as err:
        load_session(out)
    assert all(str(p) in str(err.value) for p in study.values())


@pytest.mark.parametrize("text, problem", [
    ("{not json", "invalid JSON at line 1"),
    ('{"schema": "something-else"}', "not a cd7flow session"),
    ('{"schema": "cd7flow-session", "schema_version": 99, "samples": []}', "written by a newer cd7flow"),
    ('{"schema": "cd7flow-session", "schema_version": 1, "samples": [{"path": "rel.fcs", "sha256": "00"}]}',
     "is not absolute"),
    ('{"schema": "cd7flow-session", "schema_version": 1, "samples": [], "gates": {"gatingml": 3}}',
     "Gating-ML text"),
])
def test_bad_session_files_say_what_is_wrong(tmp_path, text, problem):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(SessionError, match=problem) as err:
        read_session(bad)
    assert str(err.value).startswith(str(bad))


def test_corrupt_saved_gates_are_a_session_error(study, fitted, tmp_path):
    session = _session(study, fitted)
    session.gates.gatingml = session.gates.gatingml.replace("</gating:Gating-ML>", "")
    out = save_session(session, tmp_path / "s.json")
    with pytest.raises(SessionError, match=r"\(gates\): its saved gates cannot be read"):
        load_session(out)


def test_sample_made_in_memory_cannot_be_saved(fitted):
    s = fitted.sample
    from cd7flow.sample import Sample

    mem = Sample(np.asarray(s.events), s.channels, s.markers, s.metadata, s.ranges)
    with pytest.raises(CD7FlowError, match="made in memory"):
        sample_entry(mem)


# ---------------------------------------------------------------- through the window (pytest-qt)
BLASTS = ("time_clean", "cells", "singlets", "viable", "blasts")


def _worked_window(make_window, study):
    """Two tubes open, the screening tube auto-gated, its blast gate dragged, a view chosen."""
    from gating.gates import PolygonGate

    w = make_window()
    w.open_paths([str(p) for p in study.values()])
    m = w.model
    m.set_current(0)
    w.autogate.controller.run_now()
    fitted_blasts = m.population_count(BLASTS)[0]
    g = m.gate_at(BLASTS)
    m.replace_gate(BLASTS, PolygonGate(g.id, g.dimensions, np.asarray(g.vertices) + [0.03, 0.0]))
    assert m.is_manually_adjusted(BLASTS) and len(m.edit_log) == 1
    assert m.population_count(BLASTS)[0] != fitted_blasts
    m.set_axes(x="CD7", y="CD3")
    m.set_compensated(True)
    m.select(BLASTS)
    return w


def test_session_reopens_in_a_fresh_window_with_gates_edits_and_view(make_window, monkeypatch, study, tmp_path):
    from cd7flow.viewer.history import gate_geometry

    w = _worked_window(make_window, study)
    m = w.model
    assert m.dirty and w.isWindowModified()
    out = w.session_actions.save_to(tmp_path / "work.cd7session.json")
    assert not m.dirty and not w.isWindowModified()
    fresh = make_window()
    assert fresh.session_actions.open(out) is fresh
    r = fresh.model
    assert [s.path for s in r.samples] == [s.path for s in m.samples]
    assert r.current_index == m.current_index == 0
    before = {row.path: row.count for row in m.populations()}
    after = {row.path: row.count for row in r.populations()}
    # independent reference: the saved window's gates applied afresh by the engine (`cd7flow gate`'s path)
    engine = m.strategy().apply(m.sample)
    assert after == {(): 25_000, **{pop.path: engine.count(pop.path) for pop in engine.tree.populations()}}
    assert after == before and after[BLASTS] == m.population_count(BLASTS)[0]
    for pop in m.tree().populations():
        path = pop.parent_path + (pop.gate.id,)
        assert gate_geometry(r.gate_at(path)) == gate_geometry(m.gate_at(path))
        assert r.is_automated(path) == m.is_automated(path)
        assert r.is_manually_adjusted(path) == m.is_manually_adjusted(path)
    assert r.is_manually_adjusted(BLASTS) and not r.is_manually_adjusted(BLASTS[:-1])
    assert r.edit_log == m.edit_log
    assert not r.dirty and not fresh.isWindowModified() and not r.history.can_undo
    assert r.view_state() == m.view_state()
    assert r.selected == BLASTS and (r.x_channel, r.y_channel) == (m.x_channel, m.y_channel)
    # the population tree widget of the new window shows the reloaded counts
    assert fresh.populations.count_text(BLASTS) == str(before[BLASTS])
    # opened from a window that has samples, a session gets a window of its own
    other = w.session_actions.open(out)
    try:
        assert other is not w and [s.path for s in other.model.samples] == [s.path for s in m.samples]
        assert {row.path: row.count for row in other.model.populations()} == before
        assert len(m.samples) == 2 and m.population_count(BLASTS)[0] == before[BLASTS]
    finally:
        other.close()
    assert w.errors_shown == [] and fresh.errors_shown == []


@pytest.mark.parametrize("problem", ["moved", "changed"])
def test_opening_a_session_whose_file_moved_or_changed_names_it_and_loads_nothing(make_window, study, tmp_path,
                                                                                  problem):
    w = _worked_window(make_window, study)
    out = w.session_actions.save_to(tmp_path / "work.json")
    bad = study["P01_CAR_PB_D014.fcs"]
    if problem == "moved":
        bad.rename(tmp_path / "moved.fcs")
        expected = f"{bad}: is missing (moved or deleted); the session {out} needs it"
    else:
        bad.write_bytes(bad.read_bytes() + b"\0")
        expected = f"{bad}: has changed since the session {out} was saved"
    fresh = make_window()
    fresh._run(fresh.session_actions.open, out)
    assert len(fresh.errors_shown) == 1 and fresh.errors_shown[0][1].startswith(expected)
    assert fresh.model.samples == [] and fresh.model.n_gates == 0


def test_all_four_exports_are_in_the_file_menu(make_window, monkeypatch, study, tmp_path):
    from PySide6 import QtWidgets

    w = _worked_window(make_window, study)
    texts = [a.text().replace("&", "") for a in w.session_actions.export_menu.actions()]
    assert texts == ["Gates as Gating-ML 2.0...", "Plot as PNG...", "Plot as SVG...", "Statistics as CSV...",
                     "Population as FCS..."]
    assert all(a.isEnabled() for a in w.session_actions.export_menu.actions())
    names = iter([str(tmp_path / n) for n in ("gates.xml", "plot.png", "plot.svg", "stats.csv", "blasts.fcs")])
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (next(names), "")))
    for act in w.session_actions.export_menu.actions():
        act.trigger()
    assert w.errors_shown == []
    assert read_fcs(tmp_path / "blasts.fcs").n_events == w.model.population_count(BLASTS)[0]
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:2000]
    from cd7flow.io.gatingml import read_gatingml

    assert BLASTS in {p.path for p in read_gatingml(tmp_path / "gates.xml").tree.populations()}
    assert (tmp_path / "stats.csv").stat().st_size > 0


def test_model_session_keeps_drawn_quadrant_and_ellipse_gates(tmp_path, study):
    """Qt-free: a session of the viewer model with hand-drawn gates (a quadrant gate makes four
    populations from one gate) comes back with the same gates and counts."""
    from cd7flow.viewer import ViewerModel
    from cd7flow.workstation.session import capture_session, restore_session

    m = ViewerModel()
    assert m.open_files([study["P01_screening_BM.fcs"]]) == []
    m.set_axes(x="CD7", y="CD3", x_transform="logicle", y_transform="logicle")
    quad = m.add_quadrant_gate(0.4, 0.4, name="Q")
    m.select(())
    m.add_ellipse_gate((0.6, 0.6), (0.1, 0.15), name="E")
    out = save_session(capture_session(m), tmp_path / "drawn.json")
    r = ViewerModel()
    restore_session(r, load_session(out))
    before = {row.path: row.count for row in m.populations()}
    after = {row.path: row.count for row in r.populations()}
    assert after == before
    quadrants = [p for p in before if p and p[:-1] == quad[:-1] and p != ("E",)]
    assert len(quadrants) == 4 and sum(before[p] for p in quadrants) == 25_000
    assert not r.is_automated(quad) and r.edit_log == []


def test_a_missing_study_manifest_is_named(study, fitted, tmp_path):
    manifest = tmp_path / "study" / "manifest.csv"
    manifest.write_text("file,patient,tube,collection_date\nP01_screening_BM.fcs,P01,screening,2024-02-12\n")
    session = _session(study, fitted)
    session.study = [str(manifest)]
    out = save_session(session, tmp_path / "s.json")
    assert load_session(out).session.study == [str(manifest)]
    manifest.unlink()
    with pytest.raises(SessionError) as err:
        load_session(out)
    assert err.value.path == str(manifest) and "opened this study" in str(err.value)


def test_session_reopens_the_sample_browsers_study(make_window, tmp_path):
    """With the sample browser (the panels' workstation), the study it showed comes back too."""
    w = make_window()
    if getattr(w, "workstation", None) is None:
        pytest.skip("this window has no sample browser")
    folder = tmp_path / "demo"
    shutil.copytree(REPO / "sample_fcs", folder)
    w.workstation.open_paths([str(folder / "manifest.csv")])
    w.autogate.controller.run_now()
    ws = w.workstation.browser.workspace
    screening = str((folder / "P01_screening_BM.fcs").resolve())
    ws.set_protocol(screening, "screening_tall")
    out = w.session_actions.save_to(tmp_path / "s.json")
    fresh = make_window()
    fresh.session_actions.open(out)
    ws2 = fresh.workstation.browser.workspace
    assert ws2.manifest == ws.manifest and ws2.paths() == ws.paths()
    assert ws2.protocol_for(screening) == "screening_tall"
    assert {r.path: r.count for r in fresh.model.populations()} == {r.path: r.count for r in w.model.populations()}
