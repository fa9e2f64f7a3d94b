"""``cd7flow gate``: membership CSV vs the Gating-ML compliance truths, a FlowJo workspace,
stats table, and clean one-line errors with exit code 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cd7flow.cli import app
from cd7flow.errors import CD7FlowError
from cd7flow.membership import write_membership_csv

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "cd7flow.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def _truth(gate_ref: Path, gate_id: str) -> np.ndarray:
    return np.loadtxt(gate_ref / "truth" / f"Results_{gate_id}.txt", dtype=np.int64)


def test_membership_matches_compliance_truth(shared_data: Path, tmp_path: Path):
    gate_ref = shared_data / "flowkit" / "data" / "gate_ref"
    out = tmp_path / "members.csv"
    stats = tmp_path / "stats.csv"
    res = runner.invoke(app, ["gate", str(gate_ref / "data1.fcs"), "--gates", str(gate_ref / "gml" / "gml_all_gates.xml"),
                              "--membership", str(out), "--stats", str(stats)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert len(table) == 13367
    assert set(np.unique(table.values)) <= {0, 1}
    # 40 gates + 9 quadrants are populations (the 2 quadrant gates and 5 dividers are not);
    # every column has a truth file (ParRectangle1's is named ParQuadRect)
    assert len(table.columns) == 49
    for col in table.columns:
        truth_id = "ParQuadRect" if col == "ParRectangle1" else col
        assert np.array_equal(table[col].to_numpy(), _truth(gate_ref, truth_id)), col
    assert {"FL2N-FL4N", "FL2P-FL4P", "FSCN-SSCN"} <= set(table.columns)  # quadrants by quadrant id
    s = pd.read_csv(stats, keep_default_na=False)
    assert list(s.columns) == ["sample", "population", "statistic", "channel", "value"]
    counts = s[s.statistic == "count"].set_index("population")["value"]
    assert counts["/"] == 13367
    assert counts["/Range1"] == _truth(gate_ref, "Range1").sum()
    par = s[(s.statistic == "percent_of_parent") & (s.population == "/Range1/ParAnd3")]["value"].item()
    assert par == pytest.approx(100 * _truth(gate_ref, "ParAnd3").sum() / _truth(gate_ref, "Range1").sum())
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_single_gate_file_and_channel_stats(shared_data: Path, tmp_path: Path):
    gate_ref = shared_data / "flowkit" / "data" / "gate_ref"
    out, stats = tmp_path / "m.csv", tmp_path / "s.csv"
    res = runner.invoke(app, ["gate", str(gate_ref / "data1.fcs"), "-g", str(gate_ref / "gml" / "gml_quadrant1_gate.xml"),
                              "--membership", str(out), "--stats", str(stats), "-c", "FL2-H"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert sorted(table.columns) == ["FL2N-FL4N", "FL2N-FL4P", "FL2P-FL4N", "FL2P-FL4P"]
    for col in table.columns:
        assert np.array_equal(table[col].to_numpy(), _truth(gate_ref, col))
    s = pd.read_csv(stats, keep_default_na=False)
    from cd7flow.io.fcs_read import read_fcs

    fl2 = read_fcs(gate_ref / "data1.fcs").values("FL2-H")
    m = _truth(gate_ref, "FL2P-FL4P").astype(bool)
    med = s[(s.population == "/FL2P-FL4P") & (s.statistic == "median") & (s.channel == "FL2-H")]["value"].item()
    assert med == pytest.approx(float(np.median(fl2[m])))


def test_gate_with_flowjo_workspace(shared_data: Path, tmp_path: Path):
    folder = shared_data / "flowkit" / "data" / "simple_diamond_example"
    out, stats = tmp_path / "m.csv", tmp_path / "s.csv"
    res = runner.invoke(app, ["gate", str(folder / "test_data_diamond_01.fcs"),
                              "--gates", str(folder / "simple_diamond_example_quad_gate.wsp"),
                              "--membership", str(out), "--stats", str(stats)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    # FlowJo's own counts stored in the workspace
    expected = {"Q1: channel_A- , channel_B+": 49671, "Q2: channel_A+ , channel_B+": 50596,
                "Q3: channel_A+ , channel_B-": 50330, "Q4: channel_A- , channel_B-": 49403}
    assert table.sum().to_dict() == expected
    assert table.sum(axis=1).max() == 1  # quadrants do not overlap
    s = pd.read_csv(stats, keep_default_na=False)
    assert s[s.statistic == "count"].set_index("population")["value"]["/Q2: channel_A+ , channel_B+"] == 50596


def test_sample_option_and_printed_table(shared_data: Path):
    folder = shared_data / "flowkit" / "data" / "simple_line_example"
    res = runner.invoke(app, ["gate", str(folder / "data_set_simple_line_100.fcs"),
                              "--gates", str(folder / "single_ellipse_51_events.wsp"),
                              "--sample", "data_set_simple_line_100.fcs"])
    assert res.exit_code == 0, res.output
    assert "/ellipse1" in res.output and "51" in res.output


def test_help_explains_outputs():
    res = runner.invoke(app, ["gate", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for word in ("--gates", "--sample", "--stats", "--membership", "quadrant", "exit", "percent_of_parent"):
        assert word in text


@pytest.mark.parametrize("case", ["missing_fcs", "missing_gates", "bad_xml", "unknown_channel", "unknown_sample",
                                  "sample_with_gatingml"])
def test_bad_input_is_one_line_exit_2(shared_data: Path, tmp_path: Path, case: str):
    gate_ref = shared_data / "flowkit" / "data" / "gate_ref"
    data1 = str(gate_ref / "data1.fcs")
    rect = str(gate_ref / "gml" / "gml_rect1_gate.xml")
    diamond = shared_data / "flowkit" / "data" / "simple_diamond_example"
    bad = tmp_path / "bad.xml"
    bad.write_text("<Gating-ML><unclosed></Gating-ML>", encoding="utf-8")
    unknown = tmp_path / "unknown_channel.xml"
    unknown.write_text((gate_ref / "gml" / "gml_rect1_gate.xml").read_text(encoding="utf-8").replace('"SSC-H"', '"CD7-PE"'),
                       encoding="utf-8")
    args, expect = {
        "missing_fcs": ([str(tmp_path / "none.fcs"), "--gates", rect], "none.fcs: FCS file not found"),
        "missing_gates": ([data1, "--gates", str(tmp_path / "none.xml")], "none.xml: gates file not found"),
        "bad_xml": ([data1, "--gates", str(bad)], "bad.xml: not well-formed XML"),
        "unknown_channel": ([data1, "--gates", str(unknown)], "uses channel 'CD7-PE', which data1.fcs does not have"),
        "unknown_sample": ([str(diamond / "test_data_diamond_01.fcs"), "--gates",
                            str(diamond / "test_data_diamond_biex_rect.wsp"), "--sample", "other"], "no sample 'other'"),
        "sample_with_gatingml": ([data1, "--gates", rect, "--sample", "x"], "--sample only applies"),
    }[case]
    out = tmp_path / "m.csv"
    proc = _cli("gate", *args, "--membership", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], proc.stderr
    assert not out.exists()


# ------------------------------------------------------- membership writer ---
def test_write_membership_csv_values_and_quoting(tmp_path: Path):
    rng = np.random.default_rng(3)
    a = rng.random(200_001) < 0.3  # more rows than one write block
    b = ~a
    path = tmp_path / "m.csv"
    write_membership_csv(path, {"A": a, 'odd, "name"': b})
    table = pd.read_csv(path)
    assert list(table.columns) == ["A", 'odd, "name"']
    assert np.array_equal(table["A"].to_numpy(), a.astype(int))
    assert np.array_equal(table['odd, "name"'].to_numpy(), b.astype(int))
    raw = path.read_bytes()
    assert raw.count(b"\n") == 200_002 and raw.endswith(b"\n")


def test_write_membership_csv_refuses_bad_columns(tmp_path: Path):
    path = tmp_path / "m.csv"
    with pytest.raises(CD7FlowError, match="equal length"):
        write_membership_csv(path, {"A": np.ones(3, bool), "B": np.ones(4, bool)})
    with pytest.raises(CD7FlowError, match="no gate columns"):
        write_membership_csv(path, {})
    with pytest.raises(CD7FlowError, match="cannot write"):
        write_membership_csv(tmp_path / "no_such_dir" / "m.csv", {"A": np.ones(3, bool)})
    assert not path.exists()
