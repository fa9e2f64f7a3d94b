"""CD7 screening assay: accuracy against the simulator's truth, robustness, statistics, CLI."""
from __future__ import annotations

import json
import math
import subprocess
import sys

from unittest import mock

import numpy as np
import pytest
from scipy import stats

from cd7flow.assays.screening import (
    RESULT_KEYS,
    intensity_word,
    logicle_width,
    robust_sd,
    screen_file,
    screen_sample,
    separation_index,
    wilson_interval,
)
from cd7flow.protocol import load_protocol
from cd7flow.simulate import model as M
from cd7flow.simulate.tube import TubeSpec, simulate_tube

JSON_KEYS = ("file", "sha256", "protocol", "protocol_version", "events", "viable_singlets", "blasts", "blast_pct",
             "cd7_pos_pct", "cd7_pos_ci95", "cd7_mfi_blasts", "neg_ref_ratio", "pos_ref_ratio", "rd_fmo", "intensity",
             "rule", "verdict", "reason")


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("screening")


@pytest.fixture(scope="module")
def demo(sample_fcs_dir):
    truth = json.loads((sample_fcs_dir / "truth.json").read_text())["files"]
    return sample_fcs_dir, truth


# ---------------------------------------------------------------------------------------------
# statistics against independent references
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (297, 1000), (13480, 13758)])
def test_wilson_interval_matches_scipy(k, n):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(100 * ci.low, abs=1e-9) and hi == pytest.approx(100 * ci.high, abs=1e-9)


def test_wilson_interval_hand_case():
    z2 = stats.norm.ppf(0.975) ** 2
    assert wilson_interval(0, 10) == pytest.approx((0.0, 100 * z2 / (10 + z2)))


def test_robust_sd_and_separation_index_by_hand():
    n = 200_000
    x = stats.norm.ppf((np.arange(n) + 0.5) / n, loc=1000, scale=100)  # exact normal quantiles
    assert robust_sd(x) == pytest.approx(100, rel=1e-3)
    fmo = x - 700  # same spread, median 300
    assert separation_index(x, fmo) == pytest.approx((1000 - 300) / (100 + 100), rel=1e-3)


def test_logicle_width_follows_parks_formula():
    rng = np.random.default_rng(0)
    v = np.r_[rng.normal(0, 100, 50000), rng.lognormal(8, 1, 50000)]
    r = abs(np.percentile(v[v < 0], 5))
    assert logicle_width(v, 262144, 4.5) == pytest.approx((4.5 - math.log10(262144 / r)) / 2)
    assert logicle_width(np.abs(v) + 1, 262144, 4.5) == 0.5  # no negatives: the default


def test_intensity_words_follow_the_protocol_rules(protocol):
    rules = protocol.settings["intensity"]
    assert intensity_word(10, 5000, 9000, rules) == "negative"
    assert intensity_word(10, 500, 9000, rules) == "negative"
    assert intensity_word(50, 5000, 9000, rules) == "partial"
    assert intensity_word(30, 1000, 9000, rules) == "dim"  # dim on part of the blasts: the AML demo case
    assert intensity_word(95, 1000, 9000, rules) == "dim"
    assert intensity_word(95, 4000, 9000, rules) == "positive"
    assert intensity_word(95, 9000, 9000, rules) == "bright"  # like normal T cells: the T-ALL demo case
    assert intensity_word(95, 20000, None, rules) == "positive"
    assert intensity_word(50, 20000, None, rules) == "partial"


# ---------------------------------------------------------------------------------------------
# the demo study
# ---------------------------------------------------------------------------------------------
def _truth_verdict(truth_pct, protocol):
    return "positive" if protocol.rule.passes(truth_pct) else "negative"


@pytest.mark.parametrize("name", [f"P0{i}_screening_BM.fcs" for i in range(1, 8)])
def test_demo_screening_tubes_within_2_points_of_truth(demo, protocol, name):
    """P01-P04 bright/partial, P05-P07 faint/dim/partial CD7 (P06 next to the 30% cut); truth
    is the realised share of CD7-expressing blasts. The verdict's % is the expressing fraction."""
    folder, truth = demo
    rec = screen_file(folder / name, protocol)
    t = truth[name]["blasts"]
    assert rec["cd7_method"] == "mixture"
    assert rec["cd7_pos_pct"] == rec["cd7_pos_pct_expressing"]
    assert abs(rec["cd7_pos_pct"] - t["cd7_positive_pct_of_blasts"]) < 2.0
    assert rec["cd7_pos_ci95"][0] <= rec["cd7_pos_pct"] <= rec["cd7_pos_ci95"][1]
    lo, hi = rec["cd7_pos_ci95"]
    assert rec["borderline"] == (lo <= 30 < hi)
    if abs(t["cd7_positive_pct_of_blasts"] - 30) > 5 or not rec["borderline"]:
        assert rec["verdict"] == _truth_verdict(t["cd7_positive_pct_of_blasts"], protocol)
    assert ("borderline" in rec["reason"]) == rec["borderline"]
    assert abs(rec["blast_pct"] - t["pct_of_viable_cd45"]) < 1.0
    assert abs(rec["viable_singlets"] - truth[name]["counts"]["viable_singlets"]) / rec["viable_singlets"] < 0.02
    assert rec["sha256"] == truth_sha(folder / name)
    assert rec["rule"] == "CD7+ blasts > 30% (screening v1.5.0)"
    # the demo cases are named for their intensity: bright, partial, dim, negative
    expected_word = {"P01": "bright", "P02": "partial", "P03": "dim", "P04": "negative"}.get(name[:3])
    if expected_word is not None:  # P05-P07 are defined by their expressing fraction, not a word
        assert rec["intensity"] == expected_word


def truth_sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fmo_gives_a_separation_index_and_the_fmo_alone_is_not_evaluable(demo, protocol):
    folder, truth = demo
    rec = screen_file(folder / "P01_screening_BM.fcs", protocol, fmo_path=folder / "P01_FMO-CD7_BM.fcs")
    assert rec["fmo_file"] == "P01_FMO-CD7_BM.fcs" and rec["fmo_sha256"] == truth_sha(folder / "P01_FMO-CD7_BM.fcs")
    assert rec["rd_fmo"] > 1.5  # bright CD7 (~25x the negative cut) is far from the FMO
    alone = screen_file(folder / "P01_FMO-CD7_BM.fcs", protocol)
    assert alone["verdict"] == "not_evaluable" and alone["reason"].startswith("marker missing: CD7")
    assert alone["cd7_pos_pct"] is None and alone["rd_fmo"] is None


def test_rd_matches_the_value_computed_on_true_blasts(protocol):
    spec = TubeSpec(name="rd", n_events=20000, composition={"T": .2, "NK": .05, "B": .1, "mono": .1, "gran": .55},
                    blast_pct=50, lineage="AML", cd7_fraction=0.9, cd7_intensity="dim")
    stained, _, lab = simulate_tube(spec, seed=11)
    fmo, _, lab_f = simulate_tube(TubeSpec(**{**spec.__dict__, "unstained": ("CD7",)}), seed=12)
    for s, n in ((stained, "s.fcs"), (fmo, "f.fcs")):
        s.path = n
    from cd7flow.compensation import compensate

    markers_before = fmo.markers
    rec = screen_sample(stained, protocol, fmo)  # the FMO's empty CD7 $PnS borrows the stained tube's channel
    assert fmo.markers == markers_before  # inputs are never modified
    cd7 = lambda s: compensate(s).values("FITC-A")  # noqa: E731
    expected = separation_index(cd7(stained)[lab.mask("blast")], cd7(fmo)[lab_f.mask("blast")])
    assert rec["rd_fmo"] == pytest.approx(expected, rel=0.05)


def test_repeated_runs_give_identical_json(demo, protocol):
    folder, _ = demo
    a = screen_file(folder / "P03_screening_BM.fcs", protocol)
    b = screen_file(folder / "P03_screening_BM.fcs", load_protocol("screening"))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# robustness: other channel orders, fluorochromes, scale ranges and proportions
# ---------------------------------------------------------------------------------------------
def _panel(detectors, order):
    markers = ["CD7", "CD5", "CD34", "CD33", "CD19", "Viability", "CD3", "CD45", "CD56"]
    panel = [("FSC-A", ""), ("FSC-H", ""), ("SSC-A", "")] + list(zip(detectors, markers)) + [("Time", "")]
    return tuple(panel[i] for i in order)


ROBUST = [
    # AML, dim CD7 on half the blasts, 10-bit scale, many NK cells, panel shuffled
    dict(panel=_panel(["PE-A", "BV421-A", "PerCP-Cy5.5-A", "PE-Cy7-A", "APC-A", "BV605-A", "BV510-A", "APC-R700-A",
                       "APC-Cy7-A"], [5, 0, 12, 1, 3, 7, 4, 9, 2, 6, 11, 8, 10]),
         composition={"T": 0.47, "NK": 0.48, "B": 0.46, "mono": 0.37, "gran": 0.55}, blast_pct=48, lineage="AML",
         cd7_fraction=0.5, cd7_intensity="dim", scale_range=1024.0),
    # T-ALL, bright CD7 on a third of few blasts, 22-bit scale, reversed panel
    dict(panel=tuple(reversed(_panel(["APC-A", "FITC-A", "BV605-A", "PE-A", "BV421-A", "APC-Cy7-A", "PE-Cy7-A",
                                      "BV510-A", "APC-R700-A"], range(13)))),
         composition={"T": 0.3, "NK": 0.05, "B": 0.1, "mono": 0.1, "gran": 0.45}, blast_pct=15, lineage="T-ALL",
         cd7_fraction=0.35, cd7_intensity="bright", scale_range=4194304.0),
    # AML, CD7-negative blasts dominating, 16-bit scale
    dict(panel=_panel(list(M.DETECTORS[:9]), [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
         composition={"T": 0.2, "NK": 0.1, "B": 0.05, "mono": 0.2, "gran": 0.45}, blast_pct=85, lineage="AML",
         cd7_fraction=0.02, cd7_intensity="bright", scale_range=65536.0),
    # NK-rich, granulocyte-poor marrow: a few NK cells fall in the granulocyte gate (regression)
    dict(panel=_panel(["APC-R700-A", "BV510-A", "APC-A", "PerCP-Cy5.5-A", "APC-Cy7-A", "PE-A", "FITC-A", "BV421-A",
                       "BV605-A"], [1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
         composition={"T": 0.56, "NK": 0.11, "B": 0.36, "mono": 0.42, "gran": 0.10}, blast_pct=66, lineage="AML",
         cd7_fraction=0.25, cd7_intensity="bright", scale_range=4194304.0),
    # 84% blasts: few, scattered granulocytes must still be found as negative reference (regression)
    dict(panel=_panel(list(M.DETECTORS[1:10]), [3, 1, 2, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
         composition={"T": 0.3, "NK": 0.3, "B": 0.3, "mono": 0.05, "gran": 0.2}, blast_pct=84, lineage="AML",
         cd7_fraction=0.1, cd7_intensity="dim", scale_range=1024.0),
]


@pytest.mark.parametrize("i", range(len(ROBUST)))
def test_simulated_tubes_with_other_layouts_within_2_points(protocol, i):
    spec = TubeSpec(name=f"robust{i}", n_events=20000, **ROBUST[i])
    sample, truth, _ = simulate_tube(spec, seed=100 + i)
    sample.path = f"robust{i}.fcs"
    rec = screen_sample(sample, protocol)
    t = truth["blasts"]["cd7_positive_pct_of_blasts"]
    assert rec["verdict"] == _truth_verdict(t, protocol), rec["reason"]
    assert abs(rec["cd7_pos_pct"] - t) < 2.0


def test_not_evaluable_answers_carry_reasons(protocol):
    few = TubeSpec(name="few", n_events=8000, blast_pct=0.5, lineage="AML", cd7_fraction=0.5)
    s, _, _ = simulate_tube(few, seed=3)
    s.path = "few.fcs"
    rec = screen_sample(s, protocol)
    assert rec["verdict"] == "not_evaluable" and rec["reason"].startswith("too few blasts")
    assert rec["blasts"] is not None and rec["cd7_pos_pct"] is None
    no45 = TubeSpec(name="no45", n_events=8000, blast_pct=40, unstained=("CD45",))
    s, _, _ = simulate_tube(no45, seed=4)
    s.path = "no45.fcs"
    rec = screen_sample(s, protocol)
    assert rec["verdict"] == "not_evaluable" and rec["reason"].startswith("marker missing: CD45")


def test_rule_comes_from_the_protocol(tmp_path, demo):
    folder, truth = demo
    p = tmp_path / "egil.toml"
    p.write_text('extends = "screening"\n[protocol]\nname = "egil"\nversion = "0.9"\nassay = "screening"\n'
                 '[verdict]\nrule = ">= 20"\n')
    rec = screen_file(folder / "P03_screening_BM.fcs", str(p))
    assert rec["verdict"] == "positive" and rec["rule"] == "CD7+ blasts >= 20% (egil v0.9)"
    assert rec["protocol"] == "egil" and rec["protocol_version"] == "0.9"


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cd7flow.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_json_for_several_files_and_plots(demo, tmp_path):
    folder, truth = demo
    files = [folder / "P02_screening_BM.fcs", folder / "P04_screening_BM.fcs"]
    out = _cli("screen", *files, "--json", "--plots", tmp_path / "plots")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert isinstance(records, list) and [r["file"] for r in records] == [f.name for f in files]
    for r in records:
        assert set(JSON_KEYS) <= set(r) and set(RESULT_KEYS) <= set(r)
        assert r["rd_fmo"] is None and len(r["cd7_pos_ci95"]) == 2
        assert r["verdict"] in ("positive", "negative", "not_evaluable")
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 4 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not [p.name for p in (tmp_path / "plots").iterdir() if p.name.startswith(".")]  # no temporaries
    single = _cli("screen", files[0], "--json")
    assert json.loads(single.stdout)["file"] == files[0].name  # one object for one file
    table = _cli("screen", files[0])
    assert table.returncode == 0 and "P02_screening_BM.fcs" in table.stdout and "positive" in table.stdout
    assert "mixture" in table.stdout and "BORDERLINE" not in table.stdout


def test_cli_table_and_plot_say_borderline(demo, tmp_path):
    """P03 (29.5% expressing, rule > 30): the 95% CI straddles 30, the call stays negative and
    the JSON, the table and the histogram's title say borderline."""
    folder, _ = demo
    rec = json.loads(_cli("screen", folder / "P03_screening_BM.fcs", "--json").stdout)
    lo, hi = rec["cd7_pos_ci95"]
    assert lo <= 30 < hi and rec["borderline"] is True and rec["verdict"] == "negative"
    assert "borderline: the 95% CI straddles the cut-off 30%" in rec["reason"]
    table = _cli("screen", folder / "P03_screening_BM.fcs", "--plots", tmp_path)
    assert table.returncode == 0 and "BORDERLINE" in table.stdout
    from cd7flow.assays.protocol_gating import run_protocol_gates
    from cd7flow.assays.screening_plots import write_plots
    from cd7flow.io.fcs_read import read_fcs
    from cd7flow.protocol import load_protocol
    import matplotlib.figure

    titles = []
    original = matplotlib.figure.Figure.savefig

    def keep_title(fig, *args, **kwargs):
        titles.extend(ax.get_title() for ax in fig.axes)
        return original(fig, *args, **kwargs)

    proto = load_protocol("screening")
    g = run_protocol_gates(read_fcs(folder / "P03_screening_BM.fcs"), proto)
    blasts = g.masks["blasts_refined"]
    with mock.patch.object(matplotlib.figure.Figure, "savefig", keep_title):
        write_plots(g, proto, rec, blasts, g.masks["granulocytes"], g.masks["t_nk_cells"], tmp_path / "again")
    assert any("BORDERLINE" in t and "mixture" in t for t in titles)


def test_cli_user_errors_are_one_line(demo, tmp_path):
    folder, _ = demo
    out = _cli("screen", folder / "P02_screening_BM.fcs", "--protocol", "nope")
    assert out.returncode == 2 and "unknown protocol" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.fcs"
    bad.write_bytes(b"not an fcs file at all")
    out = _cli("screen", bad)
    assert out.returncode == 2 and "bad.fcs" in out.stderr and "Traceback" not in out.stderr


def test_cli_batch_goes_on_past_an_unreadable_file(demo, tmp_path):
    folder, truth = demo
    bad = tmp_path / "bad.fcs"
    bad.write_bytes(b"FCS3.1    truncated")
    out = _cli("screen", bad, folder / "P04_screening_BM.fcs", "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "bad.fcs" in out.stderr and "1 of 2 file(s) could not be read" in out.stderr
    first, second = json.loads(out.stdout)
    assert set(JSON_KEYS) <= set(first)
    assert first["file"] == "bad.fcs" and first["verdict"] == "not_evaluable" and "could not be read" in first["reason"]
    assert second["verdict"] == "negative"
    assert abs(second["cd7_pos_pct"] - truth["P04_screening_BM.fcs"]["blasts"]["cd7_positive_pct_of_blasts"]) < 2.0


def test_cli_autogate_membership_csv(demo, tmp_path):
    folder, _ = demo
    csv_path = tmp_path / "m.csv"
    out = _cli("autogate", folder / "P02_screening_BM.fcs", "--protocol", "screening", "--membership", csv_path)
    assert out.returncode == 0, out.stderr
    header = csv_path.read_text().splitlines()[0].split(",")
    table = np.loadtxt(csv_path, delimiter=",", skiprows=1, dtype=np.uint8)
    assert header[:4] == ["time_clean", "cells", "singlets", "viable"] and "blasts_refined" in header
    assert table.shape == (25000, len(header)) and set(np.unique(table)) <= {0, 1}
    col = {h: table[:, i].astype(bool) for i, h in enumerate(header)}
    assert not (col["singlets"] & ~col["cells"]).any()  # parents included
    assert not (col["blasts"] & ~col["viable"]).any()
    rec = screen_file(folder / "P02_screening_BM.fcs", "screening")
    assert int(col["blasts_refined"].sum()) == rec["blasts"]
    assert not list(tmp_path.glob(".membership-*"))  # no temporary left behind


# P03 is AML with mostly CD34+ blasts: its lineage gate adds the CD34+-blast ellipsoid (1.4.0).
@pytest.mark.parametrize("name", ["P02_screening_BM.fcs", "P03_screening_BM.fcs"])
def test_fitted_gates_export_as_gatingml_and_reapply_identically(demo, tmp_path, name):
    from cd7flow.assays.protocol_gating import fitted_strategy, run_protocol_gates
    from cd7flow.io.fcs_read import read_fcs
    from cd7flow.io.gatingml import read_gatingml, write_gatingml

    folder, _ = demo
    sample = read_fcs(folder / name)
    protocol = load_protocol("screening")
    g = run_protocol_gates(sample, protocol)
    if name.startswith("P03"):
        assert g.estimators["blasts_refined"].shape_gate_ is not None
    write_gatingml(fitted_strategy(g, protocol), tmp_path / "fitted.xml")
    result = read_gatingml(tmp_path / "fitted.xml").apply(sample)
    names = [k for k in g.masks if k != "root" and k not in g.skipped and g.masks[k].any()]
    assert {"cells", "singlets", "viable", "blasts", "blasts_refined", "b_cells", "t_nk_cells"} <= set(names)
    for name in names:
        assert np.array_equal(result.mask(name), g.masks[name]), name


def test_fmo_percentile_positivity(demo, tmp_path):
    folder, truth = demo
    p = tmp_path / "fmo.toml"
    p.write_text('extends = "screening"\n[protocol]\nname = "fmo"\nversion = "0.1"\nassay = "screening"\n'
                 '[positivity]\nmethod = "fmo_percentile"\n')
    rec = screen_file(folder / "P01_screening_BM.fcs", str(p), fmo_path=folder / "P01_FMO-CD7_BM.fcs")
    assert rec["threshold_reference"].startswith("99.5th percentile of CD7 on FMO blasts")
    assert abs(rec["cd7_pos_pct"] - truth["P01_screening_BM.fcs"]["blasts"]["cd7_positive_pct_of_blasts"]) < 2.0
    without = screen_file(folder / "P01_screening_BM.fcs", str(p))
    assert without["verdict"] == "not_evaluable" and "--fmo" in without["reason"]
