"""The screening assay end to end (``screen_file``) on tubes of the third independent generator.

tests/gen_screening3.py shares no code with cd7flow.simulate: other detectors, spreads,
autofluorescence and spillover, truth = which generated blasts express CD7 (drawn per
cell), not a threshold on any value. Acceptance (issue 9): the verdict's % within 2 points
of that truth for bright, partial and dim blasts alike; verdict right whenever the truth is
more than 5 points from the cut-off; borderline flagged exactly when the 95% interval
straddles it. The conventional threshold % is kept in the record and shown low on dim.
Blast-gate precision and recall are measured against the per-event population labels.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cd7flow.assays.protocol_gating import run_protocol_gates
from cd7flow.assays.screening import screen_file
from cd7flow.io.fcs_read import read_fcs
from cd7flow.protocol import load_protocol
from gen_screening3 import CASES, make_tube

SEED0 = 900  # seeds the estimator work of tests/test_expressing.py never used (300+, 700+)


def _kind(spec) -> str:
    if spec.cd7_mode == "dim":
        return "dim"
    return "bright" if spec.cd7_frac > 0.9 else "partial"


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("screening")


@pytest.fixture(scope="module")
def screened(protocol, tmp_path_factory):
    """Per case: truth, the record, and the file (written once)."""
    d = tmp_path_factory.mktemp("gen3")
    out = {}
    for i, spec in enumerate(CASES):
        tube = make_tube(spec, SEED0 + i)
        path = tube.write(d / f"{spec.name}.fcs")
        rec = screen_file(path, protocol)
        print(f"{spec.name:24s} {_kind(spec):7s} truth {tube.expressing_pct:5.1f} verdict % {rec['cd7_pos_pct']:5.1f} "
              f"({rec['cd7_method']}) threshold % {rec['cd7_pos_pct_threshold']:5.1f} CI {rec['cd7_pos_ci95']} "
              f"{rec['verdict']}{' BORDERLINE' if rec['borderline'] else ''}")
        out[spec.name] = {"spec": spec, "tube": tube, "truth": tube.expressing_pct, "rec": rec, "path": path}
    return out


def test_verdict_percent_within_2_points_bright_partial_dim(screened):
    assert {_kind(r["spec"]) for r in screened.values()} == {"bright", "partial", "dim"}
    for name, r in screened.items():
        rec = r["rec"]
        assert rec["verdict"] in ("positive", "negative"), (name, rec["reason"])
        assert rec["cd7_method"] == "mixture" and rec["cd7_pos_pct"] == rec["cd7_pos_pct_expressing"]
        assert rec["cd7_pos_ci95"] == rec["cd7_pos_ci95_expressing"]
        assert abs(rec["cd7_pos_pct"] - r["truth"]) < 2.0, (name, rec["cd7_pos_pct"], r["truth"])


def test_threshold_percent_kept_and_low_on_dim(screened):
    """cd7_pos_pct_threshold is the count above the 99.5th percentile (its Wilson CI beside it);
    on dim blasts it reads low, by more than 10 points on at least one tube."""
    under = {}
    for name, r in screened.items():
        rec = r["rec"]
        assert rec["cd7_pos_pct_threshold"] == pytest.approx(100 * rec["cd7_pos"] / rec["blasts"], abs=1e-4)
        lo, hi = rec["cd7_pos_ci95_threshold"]
        assert lo <= rec["cd7_pos_pct_threshold"] <= hi
        if _kind(r["spec"]) == "dim":
            under[name] = r["truth"] - rec["cd7_pos_pct_threshold"]
            assert abs(rec["cd7_pos_pct"] - r["truth"]) < abs(under[name]) + 0.5, name
    assert min(under.values()) > -1.0 and max(under.values()) > 10.0, under


def test_verdict_right_away_from_the_cut_and_borderline_said(screened, protocol):
    cut = protocol.rule.value
    flagged = []
    for name, r in screened.items():
        rec = r["rec"]
        lo, hi = rec["cd7_pos_ci95"]
        assert rec["borderline"] == (lo <= cut < hi), name  # rule "> 30"
        assert ("borderline" in rec["reason"]) == rec["borderline"]
        truth_call = "positive" if protocol.rule.passes(r["truth"]) else "negative"
        if abs(r["truth"] - cut) > 5:
            assert rec["verdict"] == truth_call, (name, rec["reason"])
            assert not rec["borderline"], name
        if rec["borderline"]:
            flagged.append(name)
    # aml_dim_31 (truth ~31%): the threshold % (~27) would fail the patient; the verdict's % is
    # within 2 points and the call is flagged whenever its interval reaches 30.
    assert abs(screened["aml_dim_31"]["truth"] - cut) < 3
    print("borderline:", flagged)


def test_fmo_reference_on_dim_tubes(screened, protocol):
    """With --fmo the expressing fraction's reference is the FMO tube's blasts (same instrument
    and cells, CD7 reagent left out); the threshold % keeps the in-tube reference."""
    for name in ("aml_dim_99", "tall_dim_85", "aml_dim_31"):
        r = screened[name]
        i = [s.name for s in CASES].index(name)
        fmo = make_tube(replace(r["spec"], fmo=True), SEED0 + 400 + i, instrument_seed=SEED0 + i)
        fmo_path = fmo.write(r["path"].with_name(f"{name}_fmo.fcs"))
        rec = screen_file(r["path"], protocol, fmo_path=fmo_path)
        assert rec["expressing_reference"].startswith("FMO blasts")
        assert rec["cd7_pos_pct_threshold"] == r["rec"]["cd7_pos_pct_threshold"]
        assert abs(rec["cd7_pos_pct"] - r["truth"]) < 2.0, (name, rec["cd7_pos_pct"], r["truth"])


def test_blast_gate_precision_and_recall_on_t_all_tubes(screened, protocol):
    """T-ALL blasts share CD3/CD5/CD7 with normal mature T cells (CD45-bright, CD3-bright,
    SSC-low); tall_tcells_bright_34 holds 45% T cells among the normal leukocytes. The blast
    population must keep them out: precision >= 0.99 (measured 1.000 on every tube) and
    recall >= 0.97 (measured 0.988-0.994) against the generator's per-event labels."""
    for name, r in screened.items():
        if r["spec"].lineage != "T-ALL":
            continue
        g = run_protocol_gates(read_fcs(r["path"]), protocol)
        gated, truth = g.masks["blasts_refined"], r["tube"].is_("blast")
        tp = np.count_nonzero(gated & truth)
        precision, recall = tp / gated.sum(), tp / truth.sum()
        t_cells_in = np.count_nonzero(gated & r["tube"].is_("T"))
        print(f"{name}: blast precision {precision:.4f} recall {recall:.4f}, normal T cells in the gate {t_cells_in}")
        assert precision >= 0.99 and recall >= 0.97, (name, precision, recall)
        assert t_cells_in <= 0.005 * r["tube"].is_("T").sum()


@pytest.mark.parametrize("name", ["P01_screening_BM.fcs", "P02_screening_BM.fcs", "P07_screening_BM.fcs"])
def test_demo_t_all_blast_gate_precision_and_recall(protocol, name):
    """The demo simulator's per-event labels (EventLabels) on its T-ALL tubes: measured precision
    1.000 and recall 0.990-0.992, no normal T cell in the blast population."""
    from cd7flow.simulate import simulate_tube, study_tubes
    from cd7flow.simulate.study import tube_seed

    st = next(t for t in study_tubes() if t.file == name)
    sample, _, labels = simulate_tube(st.spec, tube_seed(7, st.file))
    gated = run_protocol_gates(sample, protocol).masks["blasts_refined"]
    truth = labels.mask("blast")
    tp = np.count_nonzero(gated & truth)
    print(f"{name}: blast precision {tp / gated.sum():.4f} recall {tp / truth.sum():.4f}")
    assert tp / gated.sum() >= 0.99 and tp / truth.sum() >= 0.98
    assert np.count_nonzero(gated & labels.mask("T")) == 0
