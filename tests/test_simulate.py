"""Simulator: determinism, truth consistent with the files, realism checks, the committed sample_fcs/."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace

import flowio
import numpy as np
import pytest

from cd7flow.compensation import compensate
from cd7flow.errors import SimulationError
from cd7flow.io.fcs_read import read_fcs
from cd7flow.io.fcs_write import write_fcs
from cd7flow.simulate import ClogSpec, TubeSpec, simulate_study, simulate_tube, study_tubes
from cd7flow.simulate.study import tube_seed
from conftest import REPO


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    truth = simulate_study(out, seed=7)
    return out, truth


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    spec = TubeSpec(n_events=3000, blast_pct=30, clog=ClogSpec())
    for name, seed in (("a.fcs", 5), ("b.fcs", 5), ("c.fcs", 6)):
        write_fcs(tmp_path / name, simulate_tube(spec, seed)[0])
    assert (tmp_path / "a.fcs").read_bytes() == (tmp_path / "b.fcs").read_bytes()
    assert (tmp_path / "a.fcs").read_bytes() != (tmp_path / "c.fcs").read_bytes()


def test_committed_sample_fcs_is_the_seed_7_study(study, sample_fcs_dir):
    out, _ = study
    committed = sorted(p.name for p in sample_fcs_dir.iterdir() if not p.name.startswith("."))
    assert committed == sorted(p.name for p in out.iterdir())
    for name in committed:
        assert (sample_fcs_dir / name).read_bytes() == (out / name).read_bytes(), name
    assert sum((sample_fcs_dir / n).stat().st_size for n in committed) <= 25_000_000


def test_manifest_lists_every_file_with_study_fields(study):
    out, truth = study
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == list(truth["files"])
    tubes = {r["tube"] for r in rows}
    assert tubes == {"screening", "fmo", "car", "mrd"}
    car = [r for r in rows if r["tube"] == "car"]
    assert len({r["patient"] for r in car}) >= 3
    assert sorted({int(r["study_day"]) for r in car}) == [0, 4, 7, 10, 14, 21, 28, 60, 90, 180]
    assert all(r["beads_per_test"] == "50000" and r["sample_volume_ul"] == "50.0" and r["specimen"] == "PB" for r in car)
    assert len([r for r in rows if r["tube"] == "screening"]) >= 7
    # The screening-only patients come last, so adding them moved no earlier file.
    assert [r["file"] for r in rows][-3:] == ["P05_screening_BM.fcs", "P06_screening_BM.fcs", "P07_screening_BM.fcs"]


def test_files_match_truth_and_read_everywhere(study):
    flowkit = pytest.importorskip("flowkit")
    out, truth = study
    for name, t in truth["files"].items():
        s = read_fcs(out / name)
        assert s.n_events == t["total_events"] <= 60_000
        assert list(s.channels) == t["channels"] and list(s.markers) == t["markers"]
        assert list(s.spillover.channels) == t["spillover"]["channels"]
        np.testing.assert_array_equal(np.asarray(s.spillover.matrix), np.array(t["spillover"]["matrix"]))
        c = t["counts"]
        assert c["viable_singlets"] == sum(c[k] for k in ("T", "NK", "B", "mono", "gran", "blasts"))
        assert c["T"] == c["T_cd7_positive"] + c["T_cd7_negative"] + c["car_t"]
        assert t["total_events"] == c["viable_singlets"] + c["debris"] + c["doublets"] + c["dead"] + c["beads"]
        fk = flowkit.Sample(str(out / name))
        assert fk.event_count == t["total_events"] and fk.pnn_labels == t["channels"]
        fd = flowio.FlowData(str(out / name))
        assert fd.text["date"] == _bd_date(t["collection_date"])


def _bd_date(iso: str) -> str:
    import datetime as dt

    return dt.date.fromisoformat(iso).strftime("%d-%b-%Y").upper()


def test_regenerated_tube_labels_match_file_and_truth(study):
    out, truth = study
    st = next(t for t in study_tubes() if t.file == "P03_screening_BM.fcs")
    sample, tube_truth, labels = simulate_tube(replace(st.spec), tube_seed(7, st.file))
    on_disk = read_fcs(out / st.file, preprocess=False).events
    np.testing.assert_array_equal(on_disk, sample.events)
    t = truth["files"][st.file]
    blasts = labels.mask("blast")
    assert blasts.sum() == t["counts"]["blasts"] == tube_truth["counts"]["blasts"]
    assert (blasts & labels.cd7_positive).sum() == t["blasts"]["cd7_positive"]
    assert (blasts & labels.cd7_above_threshold).sum() == t["blasts"]["cd7_above_threshold_true"]
    assert t["blasts"]["cd7_positive_pct_of_blasts"] == pytest.approx(100 * t["blasts"]["cd7_positive"] / t["counts"]["blasts"])


def test_cd7_truth_is_the_drawn_labels_not_a_threshold():
    """A faint CD7 population straddles the threshold: the labels, not the cut, are the truth."""
    spec = TubeSpec(n_events=20000, blast_pct=60, lineage="AML", cd7_fraction=0.5, cd7_intensity="faint")
    sample, truth, labels = simulate_tube(spec, 21)
    blasts = labels.mask("blast")
    from cd7flow.simulate import model as M

    expressing = labels.cd7_positive[blasts]
    assert truth["blasts"]["cd7_positive"] == int(expressing.sum())
    # Drawn per cell with p = 0.5: the realised share is within 4 binomial SDs of it.
    n = int(blasts.sum())
    assert abs(expressing.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    # Part of the expressing blasts sit below the true cut, so the threshold share undercounts.
    above = truth["blasts"]["cd7_above_threshold_true_pct_of_blasts"]
    assert above < truth["blasts"]["cd7_positive_pct_of_blasts"] - 0.5
    assert not np.any(labels.cd7_above_threshold[blasts] & ~expressing)  # non-expressing blasts stay below it
    # Normal T cells express CD7, CD7-negative T, B, monocytes, granulocytes do not.
    assert labels.cd7_positive[labels.mask("T", "NK")].all()
    assert not labels.cd7_positive[labels.mask("T_cd7neg", "B", "mono", "gran", "debris", "bead")].any()
    assert M.FAINT_CD7[0] < M.DIM_CD7[0] < M.BRIGHT_CD7[0]


def test_screening_cases_span_bright_partial_dim_negative(study):
    _, truth = study
    pct = {n: t["blasts"]["cd7_positive_pct_of_blasts"] for n, t in truth["files"].items() if t["tube"] == "screening"}
    assert pct["P01_screening_BM.fcs"] > 95
    assert 38 < pct["P02_screening_BM.fcs"] < 52
    assert 24 < pct["P03_screening_BM.fcs"] < 36
    assert pct["P04_screening_BM.fcs"] < 6
    assert truth["files"]["P03_screening_BM.fcs"]["blasts"]["cd7_intensity"] == "dim"
    # Added for issue 9: faint (dim) nearly all positive, faint partial next to a "> 30" cut, partial dim.
    extra = {n: truth["files"][n]["blasts"] for n in ("P05_screening_BM.fcs", "P06_screening_BM.fcs",
                                                       "P07_screening_BM.fcs")}
    assert [b["cd7_intensity"] for b in extra.values()] == ["faint", "faint", "dim"]
    assert pct["P05_screening_BM.fcs"] > 88
    assert abs(pct["P06_screening_BM.fcs"] - 30) < 3
    assert 50 < pct["P07_screening_BM.fcs"] < 70
    for b in extra.values():  # the threshold on the true values already undercounts faint CD7, never overcounts
        assert b["cd7_above_threshold_true"] <= b["cd7_positive"]
    assert extra["P05_screening_BM.fcs"]["cd7_above_threshold_true_pct_of_blasts"] < pct["P05_screening_BM.fcs"] - 1
    assert truth["schema_version"] == 2
    fmo = truth["files"]["P01_FMO-CD7_BM.fcs"]
    assert fmo["markers"][fmo["channels"].index("FITC-A")] == "" and fmo["blasts"]["cd7_positive"] == 0


def test_compensation_recovers_separation_and_negatives_spread_around_zero(study):
    out, truth = study
    s = read_fcs(out / "P03_screening_BM.fcs")
    st = next(t for t in study_tubes() if t.file == "P03_screening_BM.fcs")
    _, _, labels = simulate_tube(st.spec, tube_seed(7, st.file))
    comp = compensate(s).events
    cd7 = comp[:, s.channel("CD7")]
    neg_ref = cd7[labels.mask("B", "mono", "gran")]
    dim_pos = cd7[labels.mask("blast") & labels.cd7_positive]
    t_bright = cd7[labels.mask("T") & labels.cd7_positive]
    assert np.percentile(dim_pos, 5) > np.percentile(neg_ref, 99.5)  # dim, but above the negatives
    assert np.median(t_bright) > 5 * np.median(dim_pos)  # and well below normal T cells
    assert (neg_ref < 0).mean() > 0.05 and abs(np.median(neg_ref)) < 150
    # Raw (uncompensated) CD7 of CD3-bright T cells carries BV421/PE spill: compensation must change it.
    raw = s.events[:, s.channel("CD7")]
    assert not np.allclose(raw, cd7)


def test_debris_doublets_dead_where_a_gate_expects_them():
    sample, _, labels = simulate_tube(TubeSpec(n_events=20000, blast_pct=20), 3)
    fsc_a, fsc_h = sample.values("FSC-A"), sample.values("FSC-H")
    ratio = fsc_a / np.maximum(fsc_h, 1)
    singles = labels.mask("T", "B", "NK", "mono", "gran", "blast")
    assert np.median(ratio[labels.mask("doublet")]) > 1.5 * np.median(ratio[singles])
    assert np.median(fsc_a[labels.mask("debris")]) < 0.2 * np.median(fsc_a[singles])
    comp = compensate(sample).events
    via = comp[:, sample.channel("Viability")]
    assert np.percentile(via[labels.mask("dead")], 5) > np.percentile(via[singles], 99.5)


def test_bead_formula_and_car_kinetics(study):
    _, truth = study
    p1 = {t["study_day"]: t for t in truth["files"].values() if t["patient"] == "P01" and t["tube"] == "car"}
    for t in p1.values():
        car = t["car"]
        expected = t["counts"]["car_t"] / t["counts"]["beads"] * 50000 / 50.0
        assert car["car_t_per_ul"] == pytest.approx(expected)
    per_ul = {d: t["car"]["car_t_per_ul"] for d, t in p1.items()}
    assert per_ul[0] == 0 and max(per_ul, key=per_ul.get) in (10, 14)
    assert per_ul[180] < per_ul[14] / 10
    assert p1[28]["counts"]["T_cd7_negative"] > p1[0]["counts"]["T_cd7_negative"]
    # Antigen escape: CD7-negative blasts back in the blood by day 90.
    assert p1[90]["counts"]["blasts"] > 50 and p1[90]["blasts"]["cd7_positive_pct_of_blasts"] < 2
    assert p1[60]["counts"]["blasts"] == 0


def test_mrd_levels_and_clog_in_time(study):
    out, truth = study
    mrd = {t["patient"]: t for t in truth["files"].values() if t["tube"] == "mrd"}
    assert sorted(t["blasts"]["requested_pct_of_viable_cd45"] for t in mrd.values()) == [0.05, 1.5, 12.0]
    clogged = [t for t in mrd.values() if t["clog"]]
    assert len(clogged) == 1
    t = clogged[0]
    time = read_fcs(out / t["file"], preprocess=False).values("Time")  # ticks, like truth
    assert np.all(np.diff(time) >= 0)
    c = t["clog"]
    assert not np.any((time > c["gap_start_time"] + 0.05) & (time < c["gap_end_time"] - 0.05))
    in_burst = (time >= c["gap_end_time"]) & (time <= c["burst_end_time"])
    steady_rate = t["total_events"] / (time[-1] - (c["gap_end_time"] - c["gap_start_time"]))
    burst_rate = in_burst.sum() / (c["burst_end_time"] - c["gap_end_time"])
    assert burst_rate > 5 * steady_rate


@pytest.mark.parametrize("scale", [1_048_576.0, 4096.0])
def test_other_scales_channel_orders_and_fluorochromes(scale):
    panel = (("Time", ""), ("SSC-A", ""), ("FSC-A", ""), ("FSC-H", ""), ("BV786-A", "CD7"),
             ("PE-A", "CD3"), ("APC-A", "CD45"), ("BV421-A", "CD19"), ("PE-Cy5-A", "CD33"))
    spec = TubeSpec(n_events=8000, panel=panel, scale_range=scale, blast_pct=10,
                    composition={"T": 0.5, "B": 0.2, "mono": 0.3})
    sample, truth, labels = simulate_tube(spec, 11)
    assert sample.channels[0] == "Time" and sample.markers[4] == "CD7"
    assert np.all(sample.ranges[1:] == scale)
    assert sample.events[:, 1:].max() <= scale - 1
    assert truth["counts"]["NK"] == truth["counts"]["gran"] == 0
    cd7 = compensate(sample).events[:, sample.channel("CD7")]
    t = labels.mask("T") & labels.cd7_positive
    assert np.median(cd7[t]) == pytest.approx(9000 * scale / 262144, rel=0.1)
    assert list(sample.spillover.channels) == ["BV786-A", "PE-A", "APC-A", "BV421-A", "PE-Cy5-A"]


@pytest.mark.parametrize("kwargs, message", [
    ({"blast_pct": 120}, "blast_pct"),
    ({"lineage": "CLL"}, "lineage"),
    ({"panel": (("FITC-A", "CD999"), ("Time", ""))}, "unknown marker"),
    ({"panel": (("FITC-A", "CD7"),)}, "Time"),
    ({"composition": {"X": 1.0}}, "composition"),
    ({"debris_fraction": 0.7, "dead_fraction": 0.4}, "fractions"),
])
def test_impossible_specs_raise_simulation_error(kwargs, message):
    with pytest.raises(SimulationError, match=message):
        simulate_tube(TubeSpec(**kwargs), 1)


def test_cli_simulate_and_export_errors_are_one_line(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "cd7flow.cli", "export", str(tmp_path / "none.fcs"), str(tmp_path / "o.fcs")],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "none.fcs" in bad.stderr and "Traceback" not in bad.stderr
    sample, _, _ = simulate_tube(TubeSpec(n_events=500), 2)
    src = write_fcs(tmp_path / "in.fcs", sample)
    ok = subprocess.run([sys.executable, "-m", "cd7flow.cli", "export", str(src), str(tmp_path / "o.fcs"),
                         "-c", "CD7", "-c", "Time"], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    back = read_fcs(tmp_path / "o.fcs")
    assert back.channels == ("FITC-A", "Time")
    np.testing.assert_array_equal(back.events[:, 0], sample.values("CD7"))
    # Exported as read (Time in seconds, $TIMESTEP 1), so it reads back in seconds.
    np.testing.assert_allclose(back.events[:, 1], sample.values("Time") * np.float32(0.01), rtol=1e-6)
    assert back.metadata["CD7FLOW_SOURCE"] == "in.fcs"


def test_truth_json_is_plain_json(study):
    out, truth = study
    assert json.loads((out / "truth.json").read_text()) == json.loads(json.dumps(truth))


@pytest.mark.parametrize("seed", [-1, 2.5, True, "7"])
def test_a_bad_seed_is_a_simulation_error(seed):
    with pytest.raises(SimulationError, match="seed must be a whole number >= 0"):
        simulate_tube(TubeSpec(n_events=100), seed)


def test_cli_simulate_bad_seed_creates_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cd7flow.cli", "simulate", str(tmp_path / "study"), "--seed", "-1"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == ["error: seed must be a whole number >= 0, got -1"]
    assert not (tmp_path / "study").exists()


def test_cli_simulate_onto_a_file_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("x")
    out = subprocess.run([sys.executable, "-m", "cd7flow.cli", "simulate", str(tmp_path / "taken")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "taken: exists and is not a folder" in out.stderr and (tmp_path / "taken").read_text() == "x"
