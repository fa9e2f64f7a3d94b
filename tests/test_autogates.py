"""Automated gates on synthetic populations with known labels, and on real files with manual gates."""
from __future__ import annotations

import numpy as np
import pytest

from gating import ArraySource, Dimension
from gating.auto import (
    CD45SSCPopulations,
    CellsGate,
    DensityThreshold,
    LineageGate,
    PercentileThreshold,
    SingletGate,
    TimeCleanGate,
    ViabilityGate,
)
from gating.errors import GatingError
from gating.gates import BooleanGate, PolygonGate, RectangleGate


def _blob(rng, n, cx, cy, sx, sy):
    return np.c_[rng.normal(cx, sx, n), rng.normal(cy, sy, n)]


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = np.sum(pred & truth)
    return 2 * tp / (pred.sum() + truth.sum())


def _reapply(gate, X, names):
    """Evaluate an exported gate through a plain ArraySource, as a re-import would."""
    return gate.contains(ArraySource(X, names))


def test_density_valley_between_two_peaks_matches_hand_computed_minimum():
    rng = np.random.default_rng(3)
    x = np.r_[rng.normal(0.2, 0.05, 6000), rng.normal(0.7, 0.08, 3000)]
    est = DensityThreshold("CD7").fit(x)
    assert est.method_ == "valley"
    # Mixture density minimum (equal-variance-free) computed on a fine grid:
    g = np.linspace(0.25, 0.65, 4001)
    pdf = 6000 / 0.05 * np.exp(-0.5 * ((g - 0.2) / 0.05) ** 2) + 3000 / 0.08 * np.exp(-0.5 * ((g - 0.7) / 0.08) ** 2)
    assert est.threshold_ == pytest.approx(g[np.argmin(pdf)], abs=0.03)
    assert isinstance(est.gate_, RectangleGate) and est.gate_.mins == (est.threshold_,)
    assert np.array_equal(est.predict(x), x >= est.threshold_)


def test_density_threshold_single_peak_falls_back_to_tail_and_says_so():
    x = np.random.default_rng(0).normal(1.0, 0.1, 5000)
    est = DensityThreshold("X").fit(x)
    assert est.method_ == "tail"
    assert 1.2 < est.threshold_ < 1.5
    assert est.predict(x).mean() < 0.02


def test_percentile_threshold_is_the_reference_percentile_and_refuses_tiny_reference():
    ref = np.arange(1000, dtype=float)
    est = PercentileThreshold("CD7", percentile=99.5).fit(ref)
    assert est.threshold_ == pytest.approx(np.percentile(ref, 99.5))
    assert est.predict(np.array([994.0, 995.0, np.nan])).tolist() == [False, True, False]
    with pytest.raises(GatingError, match="at least 50"):
        PercentileThreshold("CD7").fit(np.arange(10.0))


def test_viability_gate_keeps_dye_low_events():
    rng = np.random.default_rng(5)
    live = rng.normal(0.25, 0.05, 8000)
    dead = rng.normal(0.75, 0.06, 1500)
    x = np.r_[live, dead]
    est = ViabilityGate("Viability").fit(x)
    m = est.predict(x)
    assert m[:8000].mean() > 0.99 and m[8000:].mean() < 0.01
    assert est.gate_.maxs == (est.threshold_,)


def test_cells_gate_excludes_debris_and_reapplies_identically():
    rng = np.random.default_rng(7)
    debris = np.abs(np.c_[rng.exponential(6000, 15000), rng.exponential(4000, 15000)])
    cells = np.r_[_blob(rng, 30000, 60000, 20000, 8000, 5000), _blob(rng, 10000, 110000, 90000, 12000, 15000)]
    X = np.r_[debris, cells]
    truth = np.r_[np.zeros(len(debris), bool), np.ones(len(cells), bool)]
    est = CellsGate(("FSC-A", "SSC-A"), random_state=0).fit(X)
    m = est.predict(X)
    assert _f1(m, truth) > 0.97
    assert isinstance(est.gate_, PolygonGate)
    assert np.array_equal(_reapply(est.gate_, X, ["FSC-A", "SSC-A"]), m)
    again = CellsGate(("FSC-A", "SSC-A"), random_state=0).fit(X)
    assert np.array_equal(again.gate_.vertices, est.gate_.vertices)


def test_singlet_gate_ratio_band_drops_doublets():
    rng = np.random.default_rng(11)
    h = rng.normal(60000, 10000, 40000)
    ratio = rng.normal(1.15, 0.02, 40000)
    doublet = np.zeros(40000, bool)
    doublet[:4000] = True
    ratio[doublet] *= 1.6
    X = np.c_[h * ratio, h]
    est = SingletGate().fit(X)
    assert est.ratio_median_ == pytest.approx(1.15, abs=0.01)
    m = est.predict(X)
    assert m[~doublet].mean() > 0.99 and m[doublet].mean() < 0.01
    assert np.array_equal(_reapply(est.gate_, X, ["FSC-A", "FSC-H"]), m)


def test_time_clean_drops_a_burst_and_keeps_steady_flow():
    rng = np.random.default_rng(2)
    t = np.r_[np.sort(rng.uniform(0, 100, 50000)), rng.uniform(60, 61, 4000)]
    est = TimeCleanGate("Time", n_bins=100).fit(t)
    assert len(est.intervals_) == 2 and 2 <= np.count_nonzero(~est.good_bins_) <= 4
    m = est.predict(t)
    assert m[50000:].mean() < 0.05  # the burst bin is dropped (a few burst events share the next bin)
    assert m[(t < 58.9) | (t > 62.1)].all()  # the burst bin and one guard bin on each side go
    assert m[:50000].mean() > 0.96
    flat = np.sort(rng.uniform(0, 100, 50000))
    steady = TimeCleanGate().fit(flat)
    assert len(steady.intervals_) == 1 and steady.predict(flat).all()


def _leukocytes(rng, n_blasts=20000):
    parts = [
        (n_blasts, 0.45, 0.30, 0.04, 0.05),  # blasts: CD45-dim, SSC-low
        (5000, 0.78, 0.25, 0.035, 0.04),  # lymphocytes: CD45-bright, SSC-low
        (2000, 0.74, 0.45, 0.035, 0.04),  # monocytes
        (8000, 0.60, 0.72, 0.04, 0.05),  # granulocytes
        (1000, 0.08, 0.20, 0.04, 0.05),  # CD45-negative (erythroid)
    ]
    X = np.concatenate([_blob(rng, n, cx, cy, sx, sy) for n, cx, cy, sx, sy in parts])
    labels = np.repeat(np.arange(len(parts)), [p[0] for p in parts])
    return X, labels


@pytest.mark.parametrize("n_blasts", [400, 3000, 20000, 60000])
def test_cd45_ssc_populations_found_relative_to_each_other(n_blasts):
    rng = np.random.default_rng(n_blasts)
    X, labels = _leukocytes(rng, n_blasts)
    # A shifted, rescaled copy of the same biology must be gated the same way.
    for shift, scale in ((0.0, 1.0), (3.0, 250.0)):
        Xs = X * scale + shift
        est = CD45SSCPopulations(("CD45", "SSC-A"), random_state=0).fit(Xs)
        masks = est.predict_populations(Xs)
        assert _f1(masks["blasts"], labels == 0) > 0.9
        assert _f1(masks["lymphocytes"], labels == 1) > 0.9
        assert _f1(masks["granulocytes"], labels == 3) > 0.9
        assert not (masks["blasts"] & (labels == 4)).any()
        assert np.array_equal(est.predict(Xs), masks["blasts"])
        assert np.array_equal(_reapply(est.gate_, Xs, ["CD45", "SSC-A"]), masks["blasts"])


def test_cd45_ssc_population_missing_is_a_gating_error():
    rng = np.random.default_rng(1)
    X = _blob(rng, 5000, 0.78, 0.25, 0.035, 0.04)
    with pytest.raises(GatingError, match="no blasts population"):
        CD45SSCPopulations(n_components=2).fit(X)


def test_lineage_gate_any_uses_reference_percentiles():
    rng = np.random.default_rng(4)
    blasts = np.c_[np.r_[rng.normal(0.7, 0.05, 900), rng.normal(0.2, 0.05, 100)], rng.normal(0.2, 0.05, 1000)]
    ref = rng.normal(0.2, 0.05, (2000, 2))
    est = LineageGate(["CD34", "CD117"], mode="any", percentile=99).fit(blasts, reference=ref)
    assert est.thresholds_ == pytest.approx(np.percentile(ref, 99, axis=0))
    m = est.predict(blasts)
    assert m[:900].mean() > 0.99 and m[900:].mean() < 0.05
    assert isinstance(est.gate_, BooleanGate) and len(est.gates_) == 2


def test_lineage_gate_groups_pick_the_lineage_covering_the_blasts():
    # Columns: CD3, CD5 (T group), CD34, CD33 (myeloid group). 800 T-ALL blasts (CD3+CD5+),
    # 200 CD33-dim granulocytes inside the blast gate: "any marker" keeps both; the T group
    # covers 80% of the events and the myeloid group 20%, so only CD3/CD5 refine.
    rng = np.random.default_rng(5)
    neg = lambda k: rng.normal(0.2, 0.04, k)  # noqa: E731
    blasts = np.c_[rng.normal(0.6, 0.05, 800), rng.normal(0.6, 0.05, 800), neg(800), neg(800)]
    gran = np.c_[neg(200), neg(200), neg(200), rng.normal(0.45, 0.04, 200)]
    X = np.r_[blasts, gran]
    ref = rng.normal(0.2, 0.04, (2000, 4))
    plain = LineageGate(["CD3", "CD5", "CD34", "CD33"], percentile=99).fit(X, reference=ref)
    assert plain.predict(X)[800:].mean() > 0.95
    est = LineageGate(["CD3", "CD5", "CD34", "CD33"], percentile=99, groups=[[0, 1], [2, 3]]).fit(X, reference=ref)
    assert est.group_fractions_[0] > 0.75 and est.group_fractions_[1] == pytest.approx(0.2, abs=0.02)
    assert est.selected_ == [0, 1] and len(est.gates_) == 2
    m = est.predict(X)
    assert m[:800].mean() > 0.99 and m[800:].mean() < 0.05  # ~1% per marker by chance


def test_lineage_gate_against_raises_a_marker_the_granulocytes_carry():
    # AML blasts CD34+ (70%) or CD33-bright; granulocytes CD33-dim. With ``against`` the CD33
    # threshold moves to the granulocytes' 99th percentile: CD33-bright CD34- blasts stay.
    rng = np.random.default_rng(6)
    k = 1000
    cd34 = np.where(rng.random(k) < 0.7, rng.normal(0.6, 0.05, k), rng.normal(0.2, 0.04, k))
    blasts = np.c_[cd34, rng.normal(0.7, 0.04, k)]
    gran = np.c_[rng.normal(0.2, 0.04, 300), rng.normal(0.45, 0.04, 300)]
    X = np.r_[blasts, gran]
    ref = rng.normal(0.2, 0.04, (2000, 2))
    est = LineageGate(["CD34", "CD33"], groups=[[0, 1]]).fit(X, reference=ref, against=gran)
    assert est.thresholds_[1] == pytest.approx(np.percentile(gran[:, 1], 99))
    m = est.predict(X)
    assert m[:k].mean() > 0.99 and m[k:].mean() < 0.05  # ~1% per marker by chance


def test_lineage_gate_primary_marker_splits_the_group_only_when_it_covers_most_positives():
    # Columns CD34 (primary), CD33. 900 CD34+ blasts, 100 CD33+CD34- events: CD34 covers 90% of
    # the myeloid-positive events, so the gate reports CD34 as primary and CD33 as secondary
    # (the caller then keeps CD33-only events only where they resemble the CD34+ blasts).
    rng = np.random.default_rng(7)
    X = np.r_[np.c_[rng.normal(0.6, 0.05, 900), rng.normal(0.5, 0.05, 900)],
              np.c_[rng.normal(0.2, 0.04, 100), rng.normal(0.6, 0.05, 100)]]
    ref = rng.normal(0.2, 0.04, (2000, 2))
    est = LineageGate(["CD34", "CD33"], groups=[[0, 1]], primary=[0], primary_fraction=0.5).fit(X, reference=ref)
    assert est.primary_share_ == pytest.approx(0.9, abs=0.01)
    assert est.primary_ == [0] and est.secondary_ == [1]
    assert est.predict(X).mean() > 0.99  # the gate itself still keeps any marker of the group
    # CD34 on only 30% of the positives: no split, the group refines as before.
    Y = np.r_[X[:300], np.c_[rng.normal(0.2, 0.04, 700), rng.normal(0.6, 0.05, 700)]]
    est = LineageGate(["CD34", "CD33"], groups=[[0, 1]], primary=[0], primary_fraction=0.5).fit(Y, reference=ref)
    assert est.primary_share_ == pytest.approx(0.3, abs=0.02) and est.primary_ == [] and est.secondary_ == []


def test_predict_before_fit_and_bad_shapes_are_gating_errors():
    with pytest.raises(GatingError, match="not fitted"):
        SingletGate().predict(np.zeros((3, 2)))
    with pytest.raises(GatingError, match="events x 2"):
        SingletGate().fit(np.zeros((30, 3)))
    with pytest.raises(GatingError, match="needs 2 dimension"):
        CellsGate(("FSC-A",)).fit(np.zeros((100, 2)))  # scikit-learn contract: checked by fit


def test_dimensions_with_transforms_are_kept_on_the_gate():
    d = Dimension("CD7", compensation="FCS", transform="logicle")
    est = PercentileThreshold(d).fit(np.arange(100.0))
    assert est.gate_.dimensions == (d,)


# ---------------------------------------------------------------------------------------------
# Real files with manual gates (read-only corpus): agreement of the automated gates, as F1.
# The manual gates come from our own workspace importers (cd7flow.io.flowjo / .diva), which
# are checked against the counts FlowJo and DiVa stored before any F1 is computed: an F1
# against a misread gate would measure the reader, not the automated gate.
# No workspace in the corpus whose FCS file is present has a lymphocyte gate (A2004Analysis:
# Live, APC, B Cell, mDC, pDC, Monocytes, CD14-MHC2-, cytokines; PE_2.xml: P1-P5, Q1-Q4 on
# scatter widths, viability, CD3, CD8/CD44), so the CD45/SSC populations have no F1 here.
# ---------------------------------------------------------------------------------------------
EXTDATA = ("flowworkspacedata", "inst", "extdata")


def _report_f1(record_property, population: str, reference: str, f1: float) -> None:
    """Print (visible with -s or -rP) and record (junit XML) one measured F1."""
    print(f"F1 {population} vs {reference}: {f1:.4f}")
    record_property(f"f1_{population}", round(float(f1), 4))  # xdist ships plain floats only


def _assert_reads_stored_counts(masks: dict[str, np.ndarray], stored: dict[tuple[str, ...], int], paths,
                                tolerance: float) -> None:
    for path in paths:
        ours, theirs = int(masks[path[-1]].sum()), stored[path]
        assert abs(ours - theirs) / theirs < tolerance, (path, ours, theirs)


@pytest.fixture(scope="module")
def diva_124500(shared_data):
    """124500.fcs, DiVa's gates on it (PE_2.xml tube _001) and the counts DiVa stored."""
    from cd7flow.io.diva import manual_gate_masks, read_diva_xml
    from cd7flow.io.fcs_read import read_fcs

    d = shared_data.joinpath(*EXTDATA, "diva")
    fcs, xml = d / "124500.fcs", d / "PE_2.xml"
    tube = read_diva_xml(xml).sample_for_file(fcs)
    assert tube.tube == "_001"
    return read_fcs(fcs), manual_gate_masks(xml, fcs), tube.flowjo_counts


def test_cells_gate_agrees_with_flowjo_live_gate_on_a2004(shared_data, record_property):
    """FlowJo 9 'Live' is a polygon on FSC-A/SSC-A drawn on all events: our cells gate on all
    events, like for like. Measured: Live 34,431 events (FlowJo stored 34,469), auto 34,519, F1 0.9946."""
    from cd7flow.io.fcs_read import read_fcs
    from cd7flow.io.flowjo import read_flowjo_workspace

    d = shared_data.joinpath(*EXTDATA)
    fcs = d / "a2004_O1T2pb05i_A2_A02.fcs"
    wsample = read_flowjo_workspace(d / "A2004Analysis.xml").sample_for_file(fcs)
    s = read_fcs(fcs)
    live = wsample.apply(s).mask("Live")
    _assert_reads_stored_counts({"Live": live}, wsample.flowjo_counts, [("Live",)], 0.005)
    X = np.c_[s.values("FSC-A"), s.values("SSC-A")]
    auto = CellsGate(("FSC-A", "SSC-A"), random_state=0).fit(X).predict(X)
    f1 = _f1(auto, live)
    _report_f1(record_property, "cells", "FlowJo 9 Live (A2004Analysis.xml)", f1)
    assert f1 >= 0.99


def test_singlet_gate_agrees_with_diva_singlet_gates(diva_124500, record_property):
    """DiVa gates singlets on all events: P1 on FSC-W x FSC-H, then P2 on SSC-W x SSC-H. Ours: the
    FSC A/H band (fitted on all events like P1: F1 0.9899), and in the ``leukocytes`` protocol the
    FSC band then the SSC A/H band (1.1.0) inside the cells gate. Measured on the cells gate's events:
    F1 0.9899 vs P1 and 0.9931 vs P1/P2; the FSC band alone was 0.9838 vs P1/P2."""
    from cd7flow.assays.protocol_gating import run_protocol_gates
    from cd7flow.protocol import load_protocol

    s, manual, stored = diva_124500
    _assert_reads_stored_counts(manual, stored, [("P1",), ("P1", "P2")], 0.005)
    X = np.c_[s.values("FSC-A"), s.values("FSC-H")]
    alone = SingletGate(("FSC-A", "FSC-H")).fit(X).predict(X)
    f1_alone = _f1(alone, manual["P1"])
    _report_f1(record_property, "singlets_fsc_alone", "DiVa P1 (PE_2.xml _001)", f1_alone)
    assert f1_alone >= 0.985
    g = run_protocol_gates(s, load_protocol("leukocytes"))
    cells = g.masks["cells"]  # the manual singlet gates are drawn on all events: compare like for like
    f1_p1 = _f1(g.masks["singlets"], manual["P1"] & cells)
    f1_p2 = _f1(g.masks["singlets_ssc"], manual["P2"] & cells)
    _report_f1(record_property, "singlets_fsc", "DiVa P1 (PE_2.xml _001), cells", f1_p1)
    _report_f1(record_property, "singlets", "DiVa P1/P2 (PE_2.xml _001), cells", f1_p2)
    assert f1_p1 >= 0.985
    assert f1_p2 >= 0.99
    assert _f1(g.masks["singlets"], manual["P2"] & cells) < f1_p2  # the SSC band finds doublets FSC misses


def test_singlet_lower_spread_is_not_widened_by_a_heavy_doublet_tail():
    """20% doublets with A/H spread from 1.15 to 1.6x a singlet's: the symmetric MAD grows with them
    and the +5 band keeps more of them; the singlets' lower spread does not grow."""
    rng = np.random.default_rng(4)
    h = rng.uniform(20000, 150000, 10000)
    single = np.c_[h[:8000] * rng.normal(1.2, 0.03, 8000), h[:8000]]
    double = np.c_[h[8000:] * 1.2 * rng.uniform(1.15, 1.6, 2000), h[8000:]]
    X = np.r_[single, double]
    truth = np.r_[np.ones(8000, bool), np.zeros(2000, bool)]
    mad = SingletGate(n_mad_high=5.0).fit(X).predict(X)
    lower = SingletGate(n_mad_high=5.0, spread="lower").fit(X).predict(X)
    # measured: the MAD band keeps 6.2% of the doublets, the lower-spread band 1.2%; both every singlet
    assert mad[8000:].mean() > 0.04
    assert lower[8000:].mean() < 0.02 and lower[:8000].mean() > 0.99
    assert _f1(lower, truth) > _f1(mad, truth) + 0.005


def test_viable_cells_agree_with_diva_live_gate(diva_124500, record_property):
    """DiVa P3 (inside the singlet gates P1, P2) keeps viable cells on FSC-A x viability dye
    (scaled-log y axis, read by the importer as CytoML does: 12,315 events, DiVa stored 12,334).
    Ours is the whole chain of the ``leukocytes`` protocol (time-clean, cells, singlets,
    viable), found by $PnS 'Viab'. Measured F1 0.9824."""
    from cd7flow.assays.protocol_gating import run_protocol_gates
    from cd7flow.protocol import load_protocol

    s, manual, stored = diva_124500
    _assert_reads_stored_counts(manual, stored, [("P1", "P2", "P3")], 0.005)
    g = run_protocol_gates(s, load_protocol("leukocytes"))
    assert g.channels["Viability"] == "APC-Cy7-A"
    assert "viable" not in g.skipped
    f1 = _f1(g.masks["viable"], manual["P3"])
    _report_f1(record_property, "viable", "DiVa P3 (PE_2.xml _001)", f1)
    assert f1 >= 0.975


def test_cells_gate_keeps_lymphocytes_in_a_granulocyte_rich_marrow():
    """Lymphocytes (about half a granulocyte's FSC) are a small low-FSC peak: not debris."""
    rng = np.random.default_rng(21)
    debris = np.abs(np.c_[rng.lognormal(np.log(9000), 0.7, 2000), rng.lognormal(np.log(6000), 0.8, 2000)])
    lymph = _blob(rng, 4000, 62000, 14000, 7000, 3000)
    gran = _blob(rng, 30000, 112000, 125000, 14000, 22000)
    X = np.r_[debris, lymph, gran]
    est = CellsGate(random_state=0).fit(X)
    m = est.predict(X)
    assert est.debris_threshold_ is not None and est.debris_threshold_ < 40000
    assert m[2000:6000].mean() > 0.97 and m[6000:].mean() > 0.97 and m[:2000].mean() < 0.1
    no_debris = CellsGate(random_state=0).fit(np.r_[lymph, gran])
    assert no_debris.debris_threshold_ is None


def test_robust_reference_threshold_shrugs_off_contaminants_a_percentile_does_not():
    from gating.auto import RobustReferenceThreshold

    rng = np.random.default_rng(8)
    clean = rng.normal(0.2, 0.03, 5000)
    dirty = np.r_[clean, rng.normal(0.7, 0.05, 100)]  # 2% bright contaminants (e.g. NK cells)
    robust = RobustReferenceThreshold("CD56", n_sd=4).fit(dirty)
    lo, med, hi = np.percentile(dirty, [15.865525393145708, 50, 84.13447460685429])
    assert robust.threshold_ == pytest.approx(med + 4 * (hi - lo) / 2)
    assert 0.3 < robust.threshold_ < 0.36
    assert PercentileThreshold("CD56", 99.5).fit(dirty).threshold_ > 0.6  # moved into the contaminants


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_time_clean_drops_the_simulated_clog_burst(seed):
    """Simulator tubes with a clog (6 s without events, then 6% of events 12x faster)."""
    from cd7flow.simulate.tube import ClogSpec, TubeSpec, simulate_tube

    sample, truth, labels = simulate_tube(TubeSpec(n_events=25000, blast_pct=30, clog=ClogSpec()), seed=seed)
    t = sample.values("Time")
    m = TimeCleanGate("Time").fit(t).predict(t)
    assert m[labels.in_clog_burst].mean() < 0.05
    assert m[~labels.in_clog_burst].mean() > 0.95


def test_marker_positive_uses_a_robust_reference_or_the_density_valley():
    from gating.auto import MarkerPositive

    rng = np.random.default_rng(8)
    ref = rng.normal([0.2, 0.3], [0.04, 0.05], (3000, 2))
    X = np.r_[rng.normal([0.2, 0.3], [0.04, 0.05], (700, 2)), rng.normal([0.7, 0.3], [0.05, 0.05], (300, 2))]
    est = MarkerPositive(["CD3", "CD56"], mode="any", n_sd=4.0).fit(X, reference=ref)
    lo, med, hi = np.percentile(ref, [15.865525393145708, 50.0, 84.13447460685429], axis=0)
    assert est.thresholds_ == pytest.approx(med + 4.0 * (hi - lo) / 2)
    assert est.methods_ == ["reference", "reference"]
    assert isinstance(est.gate_, BooleanGate) and [g.id for g in est.gates_] == ["positive_CD3", "positive_CD56"]
    m = est.predict(X)
    assert m[700:].mean() > 0.99 and m[:700].mean() < 0.01
    # Too small a reference: the valley between the two CD3 peaks; CD56 has one peak, no valley.
    with pytest.raises(GatingError, match="no CD56-positive population"):
        MarkerPositive(["CD3", "CD56"], min_reference_events=5000).fit(X, reference=ref)
    one = MarkerPositive(["CD3"], gate_id="t_cells").fit(X[:, :1])
    assert one.methods_ == ["valley"] and 0.3 < one.thresholds_[0] < 0.6
    assert isinstance(one.gate_, RectangleGate) and one.gate_.id == "t_cells"


def test_lineage_gate_keeps_secondary_only_events_inside_the_primary_ellipsoid():
    # Columns CD34 (primary), CD33 (secondary), then the shape dimensions CD45 and SSC.
    # 900 CD34+ blasts, 100 CD33+CD34- blasts at the blasts' CD45/SSC, 200 CD33-bright
    # CD34- monocytes brighter on CD45 and higher on SSC: only the monocytes go.
    rng = np.random.default_rng(9)
    blasts = np.c_[rng.normal(0.6, 0.05, 900), rng.normal(0.5, 0.05, 900), rng.normal(0.45, 0.03, 900),
                   rng.normal(0.3, 0.03, 900)]
    cd34neg = np.c_[rng.normal(0.2, 0.04, 100), rng.normal(0.5, 0.05, 100), rng.normal(0.45, 0.03, 100),
                    rng.normal(0.3, 0.03, 100)]
    mono = np.c_[rng.normal(0.2, 0.04, 200), rng.normal(0.55, 0.05, 200), rng.normal(0.7, 0.03, 200),
                 rng.normal(0.55, 0.03, 200)]
    X = np.r_[blasts, cd34neg, mono]
    ref = rng.normal(0.2, 0.04, (2000, 4))
    est = LineageGate(["CD34", "CD33"], groups=[[0, 1]], primary=[0], shape_dimensions=["CD45", "SSC"])
    est.fit(X, reference=ref)
    assert est.primary_ == [0] and est.secondary_ == [1]
    assert est.shape_gate_.dimensions == (Dimension("CD45"), Dimension("SSC"), Dimension("CD33"))
    assert est.shape_mean_ == pytest.approx(X[X[:, 0] >= est.thresholds_[0]][:, [2, 3, 1]].mean(axis=0))
    m = est.predict(X)
    assert m[:900].mean() > 0.99 and m[900:1000].mean() > 0.9
    assert m[1000:].mean() < 0.05  # ~1% of monocytes pass the CD34 reference cut by chance
    plain = LineageGate(["CD34", "CD33"], groups=[[0, 1]], primary=[0]).fit(X[:, :2], reference=ref)
    assert plain.shape_gate_ is None and plain.predict(X[:, :2])[1000:].mean() > 0.95  # no shape: any marker


def test_lineage_gate_excludes_events_like_the_normal_mature_t_cells():
    # Columns CD3, CD5 (T group), then the shape dimensions CD45 and SSC. In the blast gate: 1000
    # T-ALL blasts (CD45-dim, surface CD3 dim-positive, CD5+) and 150 normal T cells from the blast
    # gate's CD45-bright edge (CD45-bright, CD3-bright, SSC-low). The mature reference: 2000 normal
    # T cells of the lymphocyte gate plus 300 CD3-negative NK cells (dropped: CD3 below threshold).
    rng = np.random.default_rng(12)
    blasts = np.c_[rng.normal(0.45, 0.05, 1000), rng.normal(0.6, 0.05, 1000),
                   rng.normal(0.45, 0.04, 1000), rng.normal(0.25, 0.04, 1000)]
    t_in_gate = np.c_[rng.normal(0.75, 0.04, 150), rng.normal(0.6, 0.05, 150),
                      rng.normal(0.68, 0.04, 150), rng.normal(0.15, 0.03, 150)]
    mature = np.r_[np.c_[rng.normal(0.75, 0.04, 2000), rng.normal(0.6, 0.05, 2000),
                         rng.normal(0.68, 0.04, 2000), rng.normal(0.15, 0.03, 2000)],
                   np.c_[rng.normal(0.2, 0.04, 300), rng.normal(0.2, 0.04, 300),
                         rng.normal(0.62, 0.04, 300), rng.normal(0.15, 0.03, 300)]]
    X = np.r_[blasts, t_in_gate]
    ref = np.c_[rng.normal(0.2, 0.04, (2000, 2)), np.zeros((2000, 2))]
    kw = dict(percentile=99, groups=[[0, 1]], shape_dimensions=["CD45", "SSC"])
    plain = LineageGate(["CD3", "CD5"], **kw).fit(X, reference=ref, mature=mature)
    assert plain.mature_gate_ is None and plain.predict(X)[1000:].mean() > 0.95  # no mature_markers: kept
    est = LineageGate(["CD3", "CD5"], mature_markers=[0], **kw).fit(X, reference=ref, mature=mature)
    assert est.mature_gate_ is not None and est.mature_columns_ == [2, 3, 0]
    np.testing.assert_allclose(est.mature_mean_, [0.68, 0.15, 0.75], atol=0.01)  # the CD3+ cells only
    m = est.predict(X)
    assert m[:1000].mean() > 0.98 and m[1000:].mean() < 0.05
    assert [g.id for g in est.tree_gates()][-3:] == ["lineage_lineage", "lineage_mature_like", "lineage"]
    # A myeloid lineage choice (no mature marker in the chosen group) never uses the exclusion.
    aml = LineageGate(["CD3", "CD5"], mature_markers=[0], percentile=99, groups=[[1]],
                      shape_dimensions=["CD45", "SSC"]).fit(X, reference=ref, mature=mature)
    assert aml.mature_gate_ is None
