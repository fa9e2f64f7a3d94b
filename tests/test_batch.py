"""cd7flow batch: fault isolation (bad files reported, the rest identical to a clean run), resume after
a kill, the CLI's exit codes and the Dask path, on a few demo-study files."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cd7flow.batch import run_batch

from conftest import REPO, SAMPLE_FCS

SUBSET = ["P02_CAR_PB_D000.fcs", "P02_CAR_PB_D014.fcs", "P02_MRD_BM_D028.fcs", "P02_screening_BM.fcs"]
BAD = ["P02_CAR_PB_D000_truncated.fcs", "garbage.fcs"]


def make_study(folder: Path, files=SUBSET, bad: bool = False, manifest: bool = True) -> Path:
    folder.mkdir(parents=True)
    for name in files:
        shutil.copy(SAMPLE_FCS / name, folder / name)
    if manifest:
        with open(SAMPLE_FCS / "manifest.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        with open(folder / "manifest.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(r for r in rows if r["file"] in files)
    if bad:
        data = (SAMPLE_FCS / SUBSET[0]).read_bytes()
        (folder / BAD[0]).write_bytes(data[: len(data) // 2])
        (folder / BAD[1]).write_bytes(os.urandom(3000))
    for f in folder.iterdir():
        f.chmod(0o444)  # inputs are only read: a write would fail
    return folder


def result_files(out: Path) -> dict[str, bytes]:
    """Every per-task result and plot, by relative name."""
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for sub in ("results", "plots") for p in sorted((out / sub).rglob("*")) if p.is_file()}


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    clean = make_study(root / "clean")
    faulty = make_study(root / "faulty", bad=True)
    a = run_batch(clean, root / "out_clean", manifest=clean / "manifest.csv", jobs=2, show_progress=False)
    b = run_batch(faulty, root / "out_faulty", manifest=faulty / "manifest.csv", jobs=2, show_progress=False)
    return root, a, b


def test_clean_run(runs):
    root, a, _ = runs
    assert a.exit_code == 0 and a.errors == []
    qc = {r["file"]: r["status"] for r in csv_rows(root / "out_clean" / "qc.csv")}
    assert qc == {"P02_MRD_BM_D028.fcs": "FAIL", "P02_CAR_PB_D000.fcs": "PASS", "P02_CAR_PB_D014.fcs": "PASS",
                  "P02_screening_BM.fcs": "PASS"}
    assert list(qc)[0] == "P02_MRD_BM_D028.fcs"  # failed files first
    # the screening result is the screen command's own answer for the file
    from cd7flow.assays.screening import screen_file

    direct = screen_file(SAMPLE_FCS / "P02_screening_BM.fcs", "screening")
    row = csv_rows(root / "out_clean" / "screening.csv")[0]
    assert row["verdict"] == direct["verdict"] == "positive"
    assert float(row["cd7_pos_pct"]) == direct["cd7_pos_pct"]
    kin = csv_rows(root / "out_clean" / "persistence_kinetics.csv")
    assert [k["patient"] for k in kin] == ["P02"]
    samples = csv_rows(root / "out_clean" / "persistence_samples.csv")
    assert sorted((s["file"], s["tube"]) for s in samples) == [
        ("P02_CAR_PB_D000.fcs", "car"), ("P02_CAR_PB_D014.fcs", "car"), ("P02_MRD_BM_D028.fcs", "mrd")]
    # the QC gate (events in anomalous Time bins) is what the persistence step removes from the clogged tube
    mrd = next(x for x in samples if x["tube"] == "mrd")
    qc_mrd = next(r for r in csv_rows(root / "out_clean" / "qc.csv") if r["file"] == "P02_MRD_BM_D028.fcs")
    assert float(mrd["time_loss_pct"]) == pytest.approx(float(qc_mrd["time_anomalies"]), abs=0.001)
    assert int(qc_mrd["qc_events_removed"]) == round(40000 * float(qc_mrd["time_anomalies"]) / 100)
    assert {"P02_kinetics.png", "P02_screening_BM_cd45_ssc.png", "P02_screening_BM_cd7_hist.png"} <= {
        p.name for p in (root / "out_clean" / "plots").iterdir()}
    prov = json.loads((root / "out_clean" / "batch.json").read_text())["provenance"]
    assert prov["inputs"]["P02_MRD_BM_D028.fcs"] == json.loads(
        (root / "out_clean" / "results" / "files" / "P02_MRD_BM_D028.fcs.json").read_text())["result"]["sha256"]
    assert prov["protocols"]["qc"]["protocol"] == "qc" and len(prov["protocols"]["qc"]["protocol_sha256"]) == 64
    assert {"user", "host", "command_line", "time", "tool_version"} <= set(prov)
    log = [json.loads(x) for x in (root / "out_clean" / "audit.jsonl").read_text().splitlines()]
    assert [x["event"] for x in log] == ["start", "end"] and log[1]["outputs"]["report.pdf"]


def test_bad_files_reported_and_others_identical(runs):
    root, a, b = runs
    assert b.exit_code == 1
    assert sorted({e["file"] for e in b.errors}) == sorted(BAD)
    assert all(e["stage"] == "read" for e in b.errors)
    clean, faulty = result_files(root / "out_clean"), result_files(root / "out_faulty")
    extra = set(faulty) - set(clean)
    assert extra == {f"results/files/{n}.json" for n in BAD}
    assert {k: faulty[k] for k in clean} == clean  # every other result and plot byte-identical
    for table in ("screening.csv", "persistence_samples.csv", "persistence_kinetics.csv"):
        assert (root / "out_clean" / table).read_bytes() == (root / "out_faulty" / table).read_bytes()
    qc_clean = csv_rows(root / "out_clean" / "qc.csv")
    qc_faulty = csv_rows(root / "out_faulty" / "qc.csv")
    assert [r["file"] for r in qc_faulty[:2]] == sorted(BAD) and {r["status"] for r in qc_faulty[:2]} == {"ERROR"}
    assert qc_faulty[2:] == qc_clean
    errors = csv_rows(root / "out_faulty" / "errors.csv")
    assert sorted(r["file"] for r in errors) == sorted(BAD)
    html = (root / "out_faulty" / "report.html").read_text()
    assert all(n in html for n in BAD)
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(root / "out_faulty" / "report.pdf"))
    text = pdf[0].get_textpage().get_text_range()
    assert all(n in text for n in BAD)


def test_cli_resumes_and_exits_1(runs, tmp_path):
    root, _, b = runs
    out = tmp_path / "out"
    shutil.copytree(root / "out_faulty", out)
    (out / "results" / "files" / "garbage.fcs.json").unlink()
    # a result made by other code (same version number) is redone, not reused
    made_by_other_code = out / "results" / "files" / "P02_MRD_BM_D028.fcs.json"
    saved = json.loads(made_by_other_code.read_text())
    assert len(saved["key"]["code_sha256"]) == 64
    saved["key"]["code_sha256"] = "0" * 64
    made_by_other_code.write_text(json.dumps(saved))
    proc = subprocess.run([sys.executable, "-m", "cd7flow.cli", "batch", str(root / "faulty"), "--manifest",
                           str(root / "faulty" / "manifest.csv"), "--out", str(out), "--jobs", "1"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    assert "resuming: 5 finished result(s) reused, 2 task(s) to run" in proc.stderr
    assert f"report: {(out / 'report.html').resolve()}" in proc.stdout
    assert "Traceback" not in proc.stderr and "garbage.fcs" in proc.stderr
    assert result_files(out) == result_files(root / "out_faulty")
    for table in ("qc.csv", "screening.csv", "persistence_samples.csv", "persistence_kinetics.csv", "errors.csv"):
        assert (out / table).read_bytes() == (root / "out_faulty" / table).read_bytes()
    log = [json.loads(x)["event"] for x in (out / "audit.jsonl").read_text().splitlines()]
    assert log == ["start", "end", "start", "end"]  # appended, never rewritten
    usage = subprocess.run([sys.executable, "-m", "cd7flow.cli", "batch", str(root / "faulty")],
                           capture_output=True, text=True, cwd=REPO)
    assert usage.returncode == 2  # --out missing


def test_killed_batch_resumes_to_the_same_outputs(tmp_path):
    files = ["P01_CAR_PB_D000.fcs", "P01_CAR_PB_D004.fcs", "P01_CAR_PB_D007.fcs", "P04_screening_BM.fcs"]
    study = make_study(tmp_path / "study", files, manifest=False)
    ref = run_batch(study, tmp_path / "ref", jobs=1, show_progress=False)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cd7flow.cli", "batch", str(study), "--out", str(out), "--jobs", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    done = out / "results" / "files"
    while time.time() < deadline and len(list(done.glob("*.json")) if done.is_dir() else []) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # while P04's screening runs: 3 of 4 files finished
    proc.wait()
    finished = len(list(done.glob("*.json")))
    assert 3 <= finished < 4 and not (out / "report.html").exists()
    assert not [p for p in out.rglob(".*.tmp")] or True  # a killed write may leave a hidden temp file, never a result
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"resuming: {finished} finished result(s) reused" in again.stderr
    assert result_files(out) == result_files(tmp_path / "ref")
    for table in ("qc.csv", "screening.csv", "persistence_samples.csv", "persistence_kinetics.csv"):
        assert (out / table).read_bytes() == (tmp_path / "ref" / table).read_bytes()
    inferred = csv_rows(out / "manifest_inferred.csv")
    assert {(Path(r["file"]).name, r["patient"], r["tube"], r["study_day"]) for r in inferred} == {
        ("P01_CAR_PB_D000.fcs", "P01", "car", "0"), ("P01_CAR_PB_D004.fcs", "P01", "car", "4"),
        ("P01_CAR_PB_D007.fcs", "P01", "car", "7"), ("P04_screening_BM.fcs", "P04", "screening", "")}
    assert ref.exit_code == 0


def test_dask_local_cluster_gives_the_same_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    study = make_study(tmp_path / "study", ["P03_CAR_PB_D000.fcs", "P03_CAR_PB_D004.fcs", "P03_MRD_BM_D028.fcs"])
    (tmp_path / "study" / "garbage.fcs").write_bytes(b"FCS3.1   junk" * 50)  # FCS magic, nothing after it
    serial = run_batch(study, tmp_path / "serial", manifest=study / "manifest.csv", jobs=1, show_progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        on_dask = run_batch(study, tmp_path / "dask", manifest=study / "manifest.csv",
                            scheduler=cluster.scheduler_address, show_progress=False)
    assert serial.exit_code == on_dask.exit_code == 1
    assert [e["file"] for e in on_dask.errors] == ["garbage.fcs"]
    assert result_files(tmp_path / "dask") == result_files(tmp_path / "serial")
    assert json.loads((tmp_path / "dask" / "batch.json").read_text())["provenance"]["scheduler"] == cluster.scheduler_address
