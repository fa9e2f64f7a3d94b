"""The workstation's workspace (Qt-free): files by patient and tube, protocols, QC per file.

References: the demo manifest read by pandas, the `cd7flow qc` command's own JSON, and the
TEXT keywords of copied files for keyword inference.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cd7flow.cli import app
from cd7flow.errors import CD7FlowError
from cd7flow.workstation.workspace import (TUBE_ORDER, UNKNOWN, Workspace, demo_manifest, open_workspace,
                                           protocol_choices, qc_status_text)

from conftest import SAMPLE_FCS


@pytest.fixture(scope="module")
def demo(sample_fcs_dir) -> Workspace:
    return open_workspace([sample_fcs_dir / "manifest.csv"])


def test_demo_manifest_is_found_beside_the_package(sample_fcs_dir):
    assert demo_manifest() == (sample_fcs_dir / "manifest.csv").resolve()


def test_demo_manifest_grouped_by_patient_and_tube_as_pandas_reads_it(demo, sample_fcs_dir):
    table = pd.read_csv(sample_fcs_dir / "manifest.csv")
    assert len(table) == 41 and len(demo.files) == 41
    assert all(f.source == "manifest" for f in demo.files)
    groups = demo.groups()
    expected = table.groupby(["patient", "tube"]).size().to_dict()
    found = {(p, t): len(files) for p, tubes in groups.items() for t, files in tubes.items()}
    assert found == expected
    # every file sits under its own manifest row's patient and tube, study day included
    for row in table.itertuples():
        meta = demo.meta(sample_fcs_dir / row.file)
        assert (meta.patient, meta.tube) == (row.patient, row.tube)
        assert meta in groups[row.patient][row.tube]
        assert meta.study_day == (None if pd.isna(row.study_day) else int(row.study_day))
    # patients sorted, tubes in assay order, car tubes by day
    assert list(groups) == sorted(table.patient.unique())
    for tubes in groups.values():
        assert list(tubes) == [t for t in TUBE_ORDER if t in tubes]
    assert [f.study_day for f in groups["P02"]["car"]] == sorted(table.query("patient == 'P02' and tube == 'car'").study_day)
    assert demo.patients_with_course() == ["P01", "P02", "P03"]


def test_folder_without_manifest_infers_patient_and_tube_from_keywords(tmp_path):
    # names carry no meaning: a FACSCalibur-style name without .fcs is found by its FCS magic
    (tmp_path / "run1" / "deep").mkdir(parents=True)
    shutil.copy(SAMPLE_FCS / "P02_screening_BM.fcs", tmp_path / "run1" / "deep" / "060909.001")
    shutil.copy(SAMPLE_FCS / "P03_CAR_PB_D021.fcs", tmp_path / "run1" / "tube7.fcs")
    shutil.copy(SAMPLE_FCS / "P01_MRD_BM_D028.fcs", tmp_path / ".hidden.fcs")
    ws = open_workspace([tmp_path])
    assert ws.manifest is None
    by_name = {Path(f.path).name: f for f in ws.files}
    assert set(by_name) == {"060909.001", "tube7.fcs"}
    assert (by_name["060909.001"].patient, by_name["060909.001"].tube) == ("P02", "screening")
    car = by_name["tube7.fcs"]
    assert (car.patient, car.tube, car.study_day, car.source) == ("P03", "car", 21, "keywords")
    assert car.inferred_from["tube"] == "TUBE NAME"
    assert list(ws.groups()) == ["P02", "P03"]


def test_files_given_one_by_one_and_unknown_groups(tmp_path):
    bogus = tmp_path / "notes.fcs"
    bogus.write_bytes(b"FCS3.1 but not really an FCS file")
    ws = open_workspace([SAMPLE_FCS / "P05_screening_BM.fcs", bogus])
    assert [(f.patient, f.tube) for f in ws.files] == [("P05", "screening"), (None, None)]
    assert list(ws.groups()) == ["P05", UNKNOWN]
    rec = ws.qc(bogus)
    assert rec["status"] == "ERROR" and "notes.fcs" in rec["error"]
    assert qc_status_text(rec).startswith("QC ERROR: ")
    added = ws.extend(open_workspace([SAMPLE_FCS / "P05_screening_BM.fcs", SAMPLE_FCS / "P06_screening_BM.fcs"]))
    assert added == 1 and len(ws.files) == 3  # an open file is not added twice


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(CD7FlowError, match="no_such_folder: no such file or folder"):
        open_workspace([tmp_path / "no_such_folder"])


def test_protocol_follows_the_tube_and_can_be_switched(demo, sample_fcs_dir):
    names = {c.name: c.assay for c in protocol_choices()}
    assert names["screening"] == "screening" and names["car"] == "car" and "qc" not in names
    screening = sample_fcs_dir / "P04_screening_BM.fcs"
    assert demo.protocol_for(screening) == "screening"
    assert demo.protocol_for(sample_fcs_dir / "P01_FMO-CD7_BM.fcs") == "screening"
    assert demo.protocol_for(sample_fcs_dir / "P01_MRD_BM_D028.fcs") == "car"
    demo.set_protocol(screening, "screening_aml")
    assert demo.protocol_for(screening) == "screening_aml"
    with pytest.raises(CD7FlowError):
        demo.set_protocol(screening, "no_such_protocol")
    assert demo.protocol_for(screening) == "screening_aml"  # a bad choice changes nothing
    demo.set_protocol(screening, None)
    assert demo.protocol_for(screening) == "screening"


def test_qc_statuses_equal_the_qc_command(demo, sample_fcs_dir):
    out = CliRunner().invoke(app, ["qc", str(sample_fcs_dir), "--json"])
    assert out.exit_code == 0, out.output
    start = out.output.index("[")
    cli = {r["file"]: r for r in json.loads(out.output[start:])}
    assert len(cli) == 41
    for f in demo.files:
        rec = demo.qc(f.path)
        assert rec["status"] == cli[Path(f.path).name]["status"], f.rel
        assert [c["status"] for c in rec["checks"] if c["check"] != "sample_age"] == \
            [c["status"] for c in cli[Path(f.path).name]["checks"]]
    clogged = demo.qc(sample_fcs_dir / "P02_MRD_BM_D028.fcs")
    assert clogged["status"] == "FAIL"
    assert "time_anomalies" in qc_status_text(clogged) and "time_gap" in qc_status_text(clogged)
    assert demo.qc(sample_fcs_dir / "P02_MRD_BM_D028.fcs") is clogged  # cached, not recomputed
