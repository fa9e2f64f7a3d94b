"""Per-file QC: the demo's clogged MRD tube fails on the measured clog, clean tubes pass, and each
check's value is checked against the simulator's truth or a hand-built case."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from cd7flow import read_fcs
from cd7flow.assays.qc import qc_file, qc_keep_mask, qc_sample
from cd7flow.assays.qc_protocol import load_qc_protocol
from cd7flow.errors import ProtocolError
from cd7flow.simulate.tube import TubeSpec, simulate_tube

from conftest import REPO, SAMPLE_FCS

TRUTH = json.loads((SAMPLE_FCS / "truth.json").read_text())["files"]


def by_check(rec):
    return {c["check"]: c for c in rec["checks"]}


def test_clogged_mrd_tube_fails_on_the_clog():
    truth = TRUTH["P02_MRD_BM_D028.fcs"]["clog"]
    rec = qc_file(SAMPLE_FCS / "P02_MRD_BM_D028.fcs")
    c = by_check(rec)
    assert rec["status"] == "FAIL"
    # the pause: truth gap_end - gap_start seconds
    assert c["time_gap"]["status"] == "FAIL"
    assert c["time_gap"]["value"] == pytest.approx(truth["gap_end_s"] - truth["gap_start_s"], abs=0.02)
    # the burst's events are among the removed ones, and the removed share is the FAIL
    assert c["time_anomalies"]["status"] == "FAIL"
    removed = rec["qc_gate"]["events_removed"]
    assert truth["burst_events"] <= removed <= 2 * truth["burst_events"]
    assert c["time_anomalies"]["value"] == pytest.approx(100 * removed / 40000, rel=1e-5)
    sample = read_fcs(SAMPLE_FCS / "P02_MRD_BM_D028.fcs")
    keep = qc_keep_mask(sample, rec)
    t = sample.values("Time")
    burst = (t > truth["gap_end_s"]) & (t < truth["burst_end_s"])
    assert burst.sum() > 0.9 * truth["burst_events"] and not keep[burst].any()
    assert keep.sum() == 40000 - removed and rec["qc_gate"]["applied"]
    # the rest of the tube is fine
    for name in ("events", "margin", "doublets", "viability", "compensation", "signal_drift"):
        assert c[name]["status"] == "PASS", c[name]


@pytest.mark.parametrize("name", ["P01_MRD_BM_D028.fcs", "P01_screening_BM.fcs", "P03_CAR_PB_D014.fcs",
                                  "P05_screening_BM.fcs"])
def test_clean_tubes_pass_with_values_near_truth(name):
    t = TRUTH[name]
    n = t["total_events"]
    rec = qc_file(SAMPLE_FCS / name)
    c = by_check(rec)
    assert rec["status"] == "PASS", [x for x in rec["checks"] if x["status"] != "PASS"]
    assert c["events"]["value"] == n and rec["qc_gate"]["events_removed"] == 0
    # doublets: truth doublets among the events that are no counting beads (no time loss), within 0.6 point
    assert rec["bead_events"] == pytest.approx(t["counts"]["beads"], abs=0.02 * n)
    assert c["doublets"]["value"] == pytest.approx(100 * t["counts"]["doublets"] / (n - t["counts"]["beads"]), abs=0.6)
    # viability of singlets lies between "all debris dead" and "all debris live" by the truth counts
    singlets = n - t["counts"]["doublets"] - t["counts"]["beads"]
    low = 100 * t["counts"]["viable_singlets"] / singlets
    high = 100 * (singlets - t["counts"]["dead"]) / singlets
    assert low - 0.5 <= c["viability"]["value"] <= high + 0.5
    # the compensation check reports the truth matrix's condition number
    cond = np.linalg.cond(np.array(t["spillover"]["matrix"]))
    assert c["compensation"]["value"] == pytest.approx(cond, rel=1e-5)
    assert c["time_gap"]["value"] < 0.05


def test_sample_age_from_collection_date():
    import datetime as dt

    sample = read_fcs(SAMPLE_FCS / "P04_screening_BM.fcs")  # $DATE 10-JUN-2024
    assert by_check(qc_sample(sample, collection_date=dt.date(2024, 6, 10)))["sample_age"]["status"] == "PASS"
    old = by_check(qc_sample(sample, collection_date=dt.date(2024, 6, 6)))["sample_age"]
    assert (old["value"], old["status"]) == (4, "FAIL")
    assert by_check(qc_sample(sample, collection_date=dt.date(2024, 6, 7)))["sample_age"]["status"] == "WARN"  # 3 days
    assert by_check(qc_sample(sample, collection_date=dt.date(2024, 6, 12)))["sample_age"]["status"] == "FAIL"
    assert "sample_age" not in by_check(qc_sample(sample))


def _tube(n=6000, seed=3):
    sample, _, _ = simulate_tube(TubeSpec(n_events=n), seed)
    return sample


def test_margin_events_hand_built():
    sample = _tube()
    ssc = sample.channel("SSC-A")
    rng = np.random.default_rng(0)
    ev = sample.events.copy()
    hit = rng.choice(sample.n_events, size=360, replace=False)  # 6 % saturated
    ev[hit, ssc] = sample.ranges[ssc] - 1
    c = by_check(qc_sample(dataclasses.replace(sample, events=ev)))["margin"]
    assert (c["channel"], c["status"]) == ("SSC-A", "WARN")
    assert c["value"] == pytest.approx(100 * np.count_nonzero(ev[:, ssc] >= sample.ranges[ssc] - 1) / sample.n_events)
    fsc = sample.channel("FSC-A")
    ev[: 720, fsc] = ev[:, fsc].min() - 5  # 12 % piled at one floor value
    c = by_check(qc_sample(dataclasses.replace(sample, events=ev)))["margin"]
    assert (c["channel"], c["status"], c["value"]) == ("FSC-A", "FAIL", 12.0)


def test_signal_drift_and_missing_matrix_hand_built():
    sample = _tube()
    ev = sample.events.copy()
    cd45 = sample.channel("CD45")
    t = ev[:, sample.channel("Time")]
    late = t > np.median(t)
    ev[late, cd45] *= 3.0  # the second half of the run 3x brighter: arcsinh shift ~ ln 3 on bright events
    rec = qc_sample(dataclasses.replace(sample, events=ev, spillover=None))
    c = by_check(rec)
    assert c["signal_drift"]["channel"] == sample.channels[cd45] and c["signal_drift"]["status"] == "FAIL"
    assert 0.7 < c["signal_drift"]["value"] < 1.2
    assert c["compensation"]["status"] == "WARN" and not rec["compensation"]["present"]
    clean = by_check(qc_sample(sample))["signal_drift"]
    assert clean["status"] == "PASS" and clean["value"] < 0.15


def test_protocol_limits_are_checked(tmp_path):
    p = load_qc_protocol()
    assert (p.name, p.version) == ("qc", "1.0.0") and p.limits["time"]["removed_fail_above_pct"] == 5.0
    bad = tmp_path / "qc.toml"
    text = (REPO / "cd7flow" / "protocols" / "qc.toml").read_text()
    bad.write_text(text.replace("fail_above_pct = 10.0", "fail_above_pct = 110.0"))
    with pytest.raises(ProtocolError, match=r"margin.fail_above_pct = 110.0"):
        load_qc_protocol(bad)
    bad.write_text(text.replace('action = "remove"', 'action = "drop"'))
    with pytest.raises(ProtocolError, match="time.action"):
        load_qc_protocol(bad)
    keep = tmp_path / "keep.toml"
    keep.write_text(text.replace('action = "remove"', 'action = "keep"'))
    rec = qc_file(SAMPLE_FCS / "P02_MRD_BM_D028.fcs", load_qc_protocol(keep))
    assert rec["qc_gate"]["applied"] is False and rec["qc_gate"]["events_flagged"] > 2400
    assert rec["protocol_sha256"] != p.sha256


def test_qc_command(tmp_path):
    garbage = tmp_path / "garbage.fcs"
    garbage.write_bytes(b"not an FCS file at all" * 20)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "cd7flow.cli", "qc", str(SAMPLE_FCS / "P02_MRD_BM_D028.fcs"),
                           str(SAMPLE_FCS / "P04_screening_BM.fcs"), str(garbage), "--json", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    records = json.loads(proc.stdout)
    assert [r["status"] for r in records] == ["FAIL", "PASS", "ERROR"]
    assert "garbage.fcs" in proc.stderr and "Traceback" not in proc.stderr
    rows = (out / "qc.csv").read_text().splitlines()
    assert rows[1].startswith("garbage.fcs,ERROR") and rows[2].startswith("P02_MRD_BM_D028.fcs,FAIL")
    assert json.loads((out / "P04_screening_BM.fcs.qc.json").read_text()) == records[1]
