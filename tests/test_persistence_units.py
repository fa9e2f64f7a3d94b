"""Persistence building blocks: counting intervals, kinetics, response rules, manifest problems, CLI exits."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from cd7flow.assays import car_counts as cc
from cd7flow.assays.car_tube import DEFAULTS, car_settings
from cd7flow.assays.kinetics import auc_window, patient_kinetics
from cd7flow.assays.persistence import classify_response
from cd7flow.cli import app
from cd7flow.errors import ProtocolError
from cd7flow.io.manifest import ManifestError, read_manifest
from cd7flow.protocol import load_protocol

from conftest import SAMPLE_FCS

S = {k: dict(v) for k, v in DEFAULTS.items()}


@pytest.mark.parametrize("c,b", [(0, 900), (3, 4600), (22, 1500), (1105, 1418)])
def test_single_platform_interval_is_the_exact_conditional_binomial(c, b):
    value, lo, hi = cc.single_platform(c, b, 50000, 50.0)
    assert value == pytest.approx(c / b * 1000)
    ci = binomtest(c, c + b).proportion_ci(0.95, method="exact")
    assert lo == pytest.approx(ci.low / (1 - ci.low) * 1000, rel=1e-9)
    assert hi == pytest.approx(ci.high / (1 - ci.high) * 1000, rel=1e-9)
    assert lo <= value <= hi and (lo == 0) == (c == 0)


def test_dual_platform_and_limits():
    v, lo, hi = cc.dual_platform(50, 1000, 1200.0)
    ci = binomtest(50, 1000).proportion_ci(0.95, method="exact")
    assert (v, lo, hi) == pytest.approx((60.0, ci.low * 1200, ci.high * 1200))
    assert [cc.limit_flags(n, 13, 22) for n in (0, 12, 13, 21, 22)] == [
        ["BELOW_LOD"], ["BELOW_LOD"], ["BELOW_LLOQ"], ["BELOW_LLOQ"], []]


def test_auc_interpolates_a_window_end_between_visits():
    days, vals = np.array([0, 7, 14, 30.0]), np.array([0, 70, 140, 300.0])
    # at day 28: 140 + 14/16 x 160 = 280; 7x70/2 + 7x(70+140)/2 + 14x(140+280)/2 = 3920
    assert auc_window(days, vals, 0, 28) == (pytest.approx(3920.0), True)
    auc, complete = auc_window(days, vals, 0, 40)  # after the last visit: truncated there
    assert auc == pytest.approx(245 + 735 + 8 * (140 + 300) + 0.0) and not complete


def test_patient_kinetics_definitions():
    visits = [{"day": d, "car_per_ul": v, "car_events": n} for d, v, n in
              [(0, 0.0, 0), (4, 2.0, 5), (10, 400.0, 900), (28, 50.0, 100), (90, 8.0, 20), (180, 2.0, 5)]]
    k = patient_kinetics(visits, S)
    assert (k["cmax_per_ul"], k["tmax_day"], k["fold_expansion"]) == (400.0, 10, 200.0)
    assert k["tlast_day"] == 28  # 20 events at day 90: detectable (>= LOD 13), not quantifiable (< LLOQ 22)
    assert k["persistence_day"] == 90 and k["persistence"] is False and k["last_visit_day"] == 180


class _Row:
    def __init__(self, day, blasts=None, anc=None, plt=None):
        self.study_day, self.morphology_blast_pct, self.anc_per_ul, self.platelets_per_ul, self.row = (
            day, blasts, anc, plt, day)


@pytest.mark.parametrize("base,blasts,anc,plt,expected", [
    (60.0, 2.0, 1500, 150000, "CR"), (60.0, 2.0, 500, 150000, "CRi"), (60.0, 2.0, 500, 20000, "MLFS"),
    (60.0, 20.0, 1500, 150000, "PR"), (30.0, 20.0, 1500, 150000, "no_response"),
    (60.0, 40.0, 1500, 150000, "no_response"), (60.0, 2.0, None, 150000, "not_assessable"),
])
def test_response_rules(base, blasts, anc, plt, expected):
    rows = [_Row(-21, base), _Row(28, blasts, anc, plt)]  # PR: 5-25% blasts and >= 50% below baseline
    out = classify_response(rows, [], S)
    assert out["response"] == expected and out["response_rule_set"].startswith("cd7flow-response")


def test_car_settings_reject_unknown_keys(tmp_path):
    text = (SAMPLE_FCS.parent / "cd7flow" / "protocols" / "car.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("lod_events = 13", "lod_events = 13\nlod_event = 9"))
    with pytest.raises(ProtocolError, match="car.limits"):
        car_settings(load_protocol(bad))
    assert car_settings(load_protocol("car"))["limits"] == {"lod_events": 13, "lloq_events": 22}


def _manifest(path, rows, header="file,patient,tube,collection_date,infusion_date,beads_per_test,"
                                 "sample_volume_ul,lymphocytes_per_ul"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_bad_rows_are_reported_and_the_rest_completes(tmp_path):
    d = SAMPLE_FCS
    m = _manifest(tmp_path / "m.csv", [
        f"{d}/P02_CAR_PB_D000.fcs,P02,CAR,2024-04-15,2024-04-15,50000,50,",  # row 2 ok (reference)
        f"{d}/P02_CAR_PB_D007.fcs,P02,Car,2024-04-22,2024-04-15,50000,50,",  # row 3 ok
        f"{d}/P02_CAR_PB_D010.fcs,P02,blood,2024-04-25,2024-04-15,50000,50,",  # row 4 unknown tube
        f"{d}/P02_CAR_PB_D014.fcs,P02,car,29/04/2024,2024-04-15,50000,50,",  # row 5 bad date
        f"{d}/nothere.fcs,P02,car,2024-05-06,2024-04-15,50000,50,",  # row 6 missing file
        f"{d}/P02_CAR_PB_D028.fcs,P02,car,2024-05-13,2024-04-15,,,",  # row 7 no beads, no count
        f"{d}/P02_CAR_PB_D007.fcs,P02,car,2024-04-22,2024-04-15,50000,50,",  # row 8 duplicate of row 3
        f"{d}/P02_CAR_PB_D004.fcs,P02,car,2024-04-19,2024-04-15,,,1200",  # row 9 dual-platform
        f"{d}/P01_screening_BM.fcs,P01,car,2024-02-12,2024-03-04,50000,50,",  # row 10: no beads in the data
    ])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["persistence", str(m), "--out", str(out), "--no-plots"])
    assert result.exit_code == 1
    text = result.output
    for row, why in [(4, "unknown tube 'blood'"), (5, "unparseable date"), (6, "does not exist"),
                     (7, "without beads"), (8, "duplicate of row 3"), (10, "0 counting beads found")]:
        assert f"row {row} " in text and why in text, (row, text)
    with open(out / "samples.csv", newline="") as fh:
        got = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(fh)}
    assert set(got) == {"P02_CAR_PB_D000.fcs", "P02_CAR_PB_D007.fcs", "P02_CAR_PB_D004.fcs", "P01_screening_BM.fcs"}
    dual = got["P02_CAR_PB_D004.fcs"]
    assert dual["counting"] == "dual_platform_lymphocytes"
    assert float(dual["cd3_per_ul"]) == pytest.approx(
        int(dual["cd3_events"]) / int(dual["lymphocytes_events"]) * 1200, rel=1e-6)
    nobeads = got["P01_screening_BM.fcs"]
    assert nobeads["counting"] == "none" and nobeads["car_per_ul"] == "" and "FEW_BEADS" in nobeads["flags"]
    assert json.loads((out / "persistence.json").read_text())["skipped_rows"][0]["row"] == 4
    assert not list(out.glob("*.png")) and not list(out.glob(".*tmp"))


def test_manifest_problems_that_stop_everything(tmp_path):
    m = _manifest(tmp_path / "m.csv", ["a.fcs,P1,car,2024-01-01"], header="file,patient,tube,date")
    with pytest.raises(ManifestError, match="collection_date"):
        read_manifest(m)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["persistence", str(m), "--out", str(out)])
    assert result.exit_code != 0 and not out.exists()
    proc = subprocess.run([sys.executable, "-c", "from cd7flow.cli import main; main()", "persistence", str(m),
                           "--out", str(out)], capture_output=True, text=True)  # the console entry point
    assert proc.returncode == 2 and "collection_date" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_study_day_from_dates_and_case_insensitive_columns(tmp_path):
    m = _manifest(tmp_path / "m.csv", [f"{SAMPLE_FCS}/P01_CAR_PB_D007.fcs,P01,CAR,2024-03-11,2024-03-04,50000,50,"],
                  header="File,Patient,Tube,Collection_Date,Infusion_Date,Beads_per_test,Sample_Volume_uL,"
                         "lymphocytes_per_ul")
    rows, problems = read_manifest(m)
    assert not problems and rows[0].study_day == 7 and rows[0].tube == "car" and rows[0].single_platform


def test_bead_gate_finds_the_beads_and_exports_as_gatingml(tmp_path):
    from cd7flow.assays.protocol_gating import fitted_strategy, run_protocol_gates
    from cd7flow.io.fcs_read import read_fcs
    from cd7flow.io.gatingml import read_gatingml, write_gatingml

    sample = read_fcs(SAMPLE_FCS / "P01_CAR_PB_D010.fcs")
    protocol = load_protocol("car")
    g = run_protocol_gates(sample, protocol)
    truth = json.loads((SAMPLE_FCS / "truth.json").read_text())["files"]["P01_CAR_PB_D010.fcs"]
    assert g.count("time_clean") - g.count("no_beads") == truth["counts"]["beads"] == 1982
    write_gatingml(fitted_strategy(g, protocol), tmp_path / "car.xml")
    result = read_gatingml(tmp_path / "car.xml").apply(sample)
    for name in ("no_beads", "cells", "lymphocytes", "t_cells", "t_cd7_pos"):
        assert np.array_equal(result.mask(name), g.masks[name]), name
    mrd = run_protocol_gates(read_fcs(SAMPLE_FCS / "P03_MRD_BM_D028.fcs"), protocol)  # no beads: all pass
    assert mrd.count("no_beads") == mrd.count("time_clean") and not mrd.estimators["no_beads"].found_
