"""The assay panels' numbers (Qt-free): screening recomputed from the current gates, persistence per patient.

References: `cd7flow screen` (screen_file) and `cd7flow persistence` (the CLI, on a one-patient
manifest) on the same tubes; after a gate edit, the blast count from matplotlib's Path on the
edited polygon and the % above threshold from numpy on the reference events.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from typer.testing import CliRunner

from cd7flow.assays.car_tube import car_settings
from cd7flow.assays.protocol_gating import run_protocol_gates
from cd7flow.assays.screening import RESULT_KEYS, adjusted_gates, screen_file, screening_record
from cd7flow.cli import app
from cd7flow.io.fcs_read import read_fcs
from cd7flow.protocol import load_protocol
from cd7flow.workstation.persistence_panel import patient_course
from cd7flow.workstation.screening_panel import panel_from_sample, screening_panel, with_tree
from cd7flow.workstation.workspace import open_workspace
from gating.gates import PolygonGate
from gating.tree import GatingTree

from conftest import SAMPLE_FCS

PROTOCOL = load_protocol("screening")


def _edited_tree(tree: GatingTree, path: tuple[str, ...], new_gate) -> GatingTree:
    """A copy of ``tree`` with the gate at ``path`` replaced (what the viewer's replace_gate makes)."""
    out = GatingTree()
    for pop in tree.populations():
        out.add(new_gate if pop.path == path else pop.gate, pop.parent_path or None)
    return out


def _shrunk(gate: PolygonGate, factor: float) -> PolygonGate:
    v = gate.vertices
    centre = v.mean(axis=0)
    return PolygonGate(gate.id, gate.dimensions, centre + factor * (v - centre))


@pytest.fixture(scope="module")
def p02():
    sample = read_fcs(SAMPLE_FCS / "P02_screening_BM.fcs")
    return sample, run_protocol_gates(sample, PROTOCOL)


@pytest.mark.parametrize("name", ["P02_screening_BM.fcs", "P05_screening_BM.fcs"])
def test_panel_equals_screen_command_on_unedited_gates(name):
    cli = screen_file(SAMPLE_FCS / name, PROTOCOL)
    gated, data = panel_from_sample(read_fcs(SAMPLE_FCS / name), PROTOCOL)
    rec = data.record
    for key in RESULT_KEYS:
        assert rec[key] == cli[key], key
    assert rec["gates"] == cli["gates"] and rec["notes"] == cli["notes"]
    assert rec["manually_adjusted"] is False and rec["adjusted_gates"] == []
    rows = dict(data.rows)
    assert rows["Verdict"] == cli["verdict"].upper()
    assert rows["Blasts"].startswith(f"{cli['blasts']:,} ")
    assert f"{cli['cd7_pos_pct']:.1f}% (95% CI {cli['cd7_pos_ci95'][0]:.1f}-{cli['cd7_pos_ci95'][1]:.1f})" \
        in rows["% CD7+ of blasts"]
    h = data.histogram
    assert h.threshold == pytest.approx(cli["cd7_threshold_scale"])
    widths = np.diff(h.edges)
    blasts = next(s for s in h.series if s.population == "blasts")
    assert blasts.events == cli["blasts"] and np.sum(blasts.density * widths) == pytest.approx(1.0)


def test_panel_with_the_patients_fmo_equals_screen_with_fmo():
    cli = screen_file(SAMPLE_FCS / "P01_screening_BM.fcs", PROTOCOL, fmo_path=SAMPLE_FCS / "P01_FMO-CD7_BM.fcs")
    _gated, data = panel_from_sample(read_fcs(SAMPLE_FCS / "P01_screening_BM.fcs"), PROTOCOL,
                                     read_fcs(SAMPLE_FCS / "P01_FMO-CD7_BM.fcs"))
    for key in RESULT_KEYS:
        assert data.record[key] == cli[key], key
    assert cli["rd_fmo"] is not None and dict(data.rows)["FMO"].startswith("P01_FMO-CD7_BM.fcs, RD ")


def test_shrinking_the_blast_gate_moves_the_numbers(p02):
    sample, gated = p02
    before = screening_record(gated, PROTOCOL)
    blast_path = gated.locations["blasts"]
    old = gated.tree.find(blast_path).gate
    new = _shrunk(old, 0.55)
    edited = with_tree(gated, _edited_tree(gated.tree, blast_path, new))
    data = screening_panel(edited, PROTOCOL)
    rec = data.record

    # independent: the refined blasts are the old ones inside the shrunk (convex) polygon
    x, y = (gated.values(k) for k in ("CD45", "ssc_a"))
    assert [d.channel for d in old.dimensions] == [gated.channels["CD45"], gated.channels["ssc_a"]]
    inside = MplPath(new.vertices).contains_points(np.column_stack([x, y]))
    blasts = gated.masks["blasts_refined"] & inside
    assert rec["blasts"] == int(blasts.sum()) < before["blasts"]
    # the threshold's reference does not involve the blast gate: same cut, new share of blasts above it
    neg = np.logical_or.reduce([gated.masks[p] for p in ("b_cells", "monocytes", "granulocytes")])
    neg &= ~gated.marker_positive["t_nk_cells"] & ~blasts
    cd7 = gated.values("CD7")
    thr = float(np.percentile(cd7[neg], 99.5))
    assert rec["cd7_threshold_scale"] == pytest.approx(thr, rel=1e-5)
    assert rec["cd7_pos_pct_threshold"] == pytest.approx(100 * np.mean(cd7[blasts] >= thr), rel=1e-5)
    assert rec["cd7_pos_pct_threshold"] != before["cd7_pos_pct_threshold"]

    # the same numbers as screening_record on a freshly built tree with the same edit
    fresh = run_protocol_gates(sample, PROTOCOL)
    fresh.tree.find(blast_path).gate = new
    fresh.invalidate()
    independent = screening_record(fresh, PROTOCOL)
    for key in RESULT_KEYS + ("manually_adjusted", "adjusted_gates"):
        assert rec[key] == independent[key], key
    assert rec["manually_adjusted"] is True and rec["adjusted_gates"] == ["/" + "/".join(blast_path)]
    assert rec["reason"].endswith("manually adjusted gates: /" + "/".join(blast_path))
    assert dict(data.rows)["Manually adjusted"] == "yes: /" + "/".join(blast_path)
    assert next(s for s in data.histogram.series if s.population == "blasts").events == rec["blasts"]
    # the unedited gated sample is untouched by the edited copy
    assert screening_record(gated, PROTOCOL)["blasts"] == before["blasts"]


def test_edit_in_place_invalidates_cached_masks_and_undo_clears_the_flag():
    sample = read_fcs(SAMPLE_FCS / "P05_screening_BM.fcs")
    gated = run_protocol_gates(sample, PROTOCOL)
    before = screening_record(gated, PROTOCOL)
    pop = gated.tree.find(gated.locations["blasts"])
    original = pop.gate
    pop.gate = _shrunk(original, 0.5)  # the tree edited in place, its masks cached from before
    edited = screening_record(gated, PROTOCOL)
    assert edited["blasts"] < before["blasts"] and edited["manually_adjusted"]
    assert adjusted_gates(gated) == [pop.path_str]
    pop.gate = original  # undo
    again = screening_record(gated, PROTOCOL)
    assert again["blasts"] == before["blasts"] and again["cd7_pos_pct"] == before["cd7_pos_pct"]
    assert again["manually_adjusted"] is False and adjusted_gates(gated) == []
    # the caller's edit log counts too
    assert screening_record(gated, PROTOCOL, adjusted=["/x"])["adjusted_gates"] == ["/x"]


def test_removed_protocol_gate_is_not_evaluable_with_the_reason(p02):
    _sample, gated = p02
    pruned = GatingTree()
    gone = gated.locations["granulocytes"]
    for pop in gated.tree.populations():
        if pop.path[: len(gone)] != gone and pop.gate.id != "cd45_ssc":  # cd45_ssc refers to granulocytes
            pruned.add(pop.gate, pop.parent_path or None)
    rec = screening_record(with_tree(gated, pruned), PROTOCOL)
    assert rec["verdict"] == "not_evaluable"
    assert "granulocytes" in rec["reason"] and rec["reason"].startswith("gates edited: ")


@pytest.fixture(scope="module")
def p01_cli(tmp_path_factory):
    """`cd7flow persistence` on a manifest holding only P01's rows, beside links to its files
    (so the records name the files as the demo manifest does)."""
    tmp = tmp_path_factory.mktemp("persist")
    with open(SAMPLE_FCS / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["patient"] == "P01"]
    for r in rows:
        (tmp / r["file"]).symlink_to(SAMPLE_FCS / r["file"])
    manifest = tmp / "P01.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = CliRunner().invoke(app, ["persistence", str(manifest), "--out", str(tmp / "out"), "--no-plots"])
    assert out.exit_code == 0, out.output
    return json.loads((tmp / "out" / "persistence.json").read_text())


def _json(v):
    return json.loads(json.dumps(v))


def test_persistence_panel_equals_the_persistence_command(p01_cli):
    course = patient_course("P01", manifest=SAMPLE_FCS / "manifest.csv")
    kin = p01_cli["kinetics"][0]
    assert kin["patient"] == "P01"
    assert _json(course.kinetics) == kin
    assert _json(course.course) == p01_cli["courses"]["P01"]
    assert _json(course.samples) == p01_cli["samples"]
    assert course.problems == [] and len(course.course) == 10
    assert course.antigen_escape is True  # P01's blasts lost CD7 at days 90 and 180
    # the LLOQ line: the protocol's LLOQ events at the median bead ratio (cells/uL per event)
    lloq_events = car_settings(load_protocol("car"))["limits"]["lloq_events"]
    ratios = sorted(s["car_per_ul"] / s["car_events"] for s in p01_cli["samples"]
                    if s["counting"] == "single_platform" and s["car_events"])
    assert course.lloq_per_ul == pytest.approx(lloq_events * ratios[len(ratios) // 2])
    rows = dict(course.table_rows())
    assert rows["Cmax"] == f"{kin['cmax_per_ul']:,.1f} cells/uL" and rows["Tmax"] == f"day {kin['tmax_day']}"
    assert rows["Antigen escape"].startswith("YES: day 90 car: ")


def test_persistence_panel_from_workspace_files_without_the_manifest(p01_cli):
    ws = open_workspace([SAMPLE_FCS / "manifest.csv"])
    course = patient_course("P01", files=ws.files)
    assert _json(course.kinetics) == p01_cli["kinetics"][0]
    assert _json(course.course) == p01_cli["courses"]["P01"]
    assert _json(course.samples) == p01_cli["samples"]


def test_visit_rows_list_every_tube_by_day(p01_cli):
    course = patient_course("P01", manifest=SAMPLE_FCS / "manifest.csv")
    rows = course.visit_rows()
    assert [(r[0], r[1]) for r in rows] == [(str(s["day"]), s["tube"]) for s in
                                          sorted(p01_cli["samples"], key=lambda s: (s["day"], s["tube"]))]
    d14 = next(r for r in rows if r[:2] == ("14", "car"))
    s14 = next(s for s in p01_cli["samples"] if s["day"] == 14 and s["tube"] == "car")
    assert d14[2] == f"{s14['car_per_ul']:,.1f} ({s14['car_per_ul_low']:,.1f}-{s14['car_per_ul_high']:,.1f})"
    mrd = next(r for r in rows if r[1] == "mrd")
    assert mrd[6] == next(s for s in p01_cli["samples"] if s["tube"] == "mrd")["mrd_status"] == "indeterminate"


def test_persistence_without_a_manifest_names_what_is_missing(tmp_path):
    """Keywords give patient, tube and day but no bead or blood counts: every car tube is reported
    by file name with the reason, the marrow tube is still analysed."""
    for f in SAMPLE_FCS.glob("P02_*"):
        (tmp_path / f.name).symlink_to(f)
    ws = open_workspace([tmp_path])
    assert ws.manifest is None and ws.patients_with_course() == ["P02"]
    course = patient_course("P02", files=ws.files)
    assert len(course.problems) == 10
    assert course.problems[0].startswith("P02_CAR_PB_D000.fcs: car tube without beads")
    assert course.kinetics["cmax_per_ul"] is None and course.course == []
    assert [r[:2] for r in course.visit_rows()] == [("28", "mrd")]
    assert course.visit_rows()[0][6] == "positive"  # P02's marrow: 491 blasts
