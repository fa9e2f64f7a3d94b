"""Batch reports: the HTML is self-contained (opens offline), the PDF renders with content and status
colours, and the Excel workbook holds the same tables as the CSV files."""
from __future__ import annotations

import csv
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cd7flow.batch import run_batch

from conftest import SAMPLE_FCS


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    study = root / "study"
    study.mkdir()
    for name in ("P04_screening_BM.fcs", "P02_MRD_BM_D028.fcs", "P03_CAR_PB_D000.fcs"):
        shutil.copy(SAMPLE_FCS / name, study / name)
    (study / "broken.fcs").write_bytes(b"FCS3.1" + b" " * 40)
    outcome = run_batch(study, root / "out", jobs=2, show_progress=False)  # no manifest: keywords
    return root / "out", outcome


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags, self.status_cells = [], [], []
        self._row = self._table = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "table":
            self._table = a.get("id")
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag == "tr":
            self._row = a.get("class")
        if tag == "td" and self._table == "qc" and a.get("class") == "status" and self._row in ("PASS", "WARN", "FAIL", "ERROR"):
            self.status_cells.append(self._row)


def test_html_is_self_contained(report):
    out, outcome = report
    html = (out / "report.html").read_text(encoding="utf-8")
    p = _Refs()
    p.feed(html)
    assert p.refs and all(r.startswith("data:image/png;base64,") for r in p.refs)
    assert "script" not in p.tags and "link" not in p.tags and "http://" not in html and "https://" not in html
    pngs = sorted(x.name for x in (out / "plots").iterdir())
    assert len(p.refs) == len(pngs) == 2  # CD45/SSC and CD7 plots of P04 (no kinetics: no bead counts without a manifest)
    assert "car tube without beads" in html  # ...and the report says so
    # QC rows: unreadable first, then failed, then passed; colours come from the inline style
    assert p.status_cells[:2] == ["ERROR", "FAIL"] and set(p.status_cells[2:]) == {"PASS"}
    assert "tr.FAIL td.status" in html and "#f8c9c4" in html
    for name in ("broken.fcs", "P02_MRD_BM_D028.fcs", "P04_screening_BM.fcs", "Patient P02", "sha256"):
        assert name in html
    verdict = next(r["screening"]["verdict"] for r in outcome.files if r["file"] == "P04_screening_BM.fcs")
    assert f"verdict <b>{verdict}</b>" in html


def test_pdf_renders_with_content(report):
    import pypdfium2 as pdfium

    out, _ = report
    pdf = pdfium.PdfDocument(str(out / "report.pdf"))
    assert len(pdf) >= 4
    page = pdf[0]
    image = np.asarray(page.render(scale=1.5).to_pil().convert("RGB")).astype(int)
    ink = np.any(image < 200, axis=2).mean()
    assert ink > 0.005, "first page is blank"
    fail_fill = np.all(np.abs(image - (248, 201, 196)) <= 3, axis=2).sum()
    pass_fill = np.all(np.abs(image - (217, 242, 217)) <= 3, axis=2).sum()
    assert fail_fill > 200 and pass_fill > 200  # coloured status cells
    text = page.get_textpage().get_text_range()
    assert "broken.fcs" in text and "P02_MRD_BM_D028.fcs" in text
    images = sum(1 for k in range(len(pdf)) for obj in pdf[k].get_objects() if obj.type == pdfium.raw.FPDF_PAGEOBJ_IMAGE)
    assert images == len(list((out / "plots").iterdir()))


def test_excel_matches_csv(report):
    import openpyxl

    out, _ = report
    wb = openpyxl.load_workbook(out / "results.xlsx", read_only=True)
    assert wb.sheetnames == ["qc", "screening", "persistence_samples", "persistence_kinetics", "errors", "provenance"]
    for sheet in ("qc", "screening", "errors"):
        rows = [[("" if v is None else str(v)) for v in r] for r in wb[sheet].iter_rows(values_only=True)]
        with open(out / f"{sheet}.csv", newline="") as fh:
            expected = list(csv.reader(fh))
        assert len(rows) == len(expected) and rows[0] == expected[0]
        for got, want in zip(rows[1:], expected[1:]):
            assert [g if not _num(g) else float(g) for g in got] == [w if not _num(w) else float(w) for w in want]
    prov = {r[0]: r[1] for r in wb["provenance"].iter_rows(min_row=2, values_only=True)}
    assert {"tool_version", "command_line", "user", "host", "protocols", "inputs"} <= set(prov)


def _num(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
