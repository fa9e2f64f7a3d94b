"""Batch reports: tables (CSV, Excel), ``batch.json``, a self-contained HTML report and its PDF.

:func:`write_outputs` writes everything a finished batch leaves for the lab (see
:mod:`cd7flow.batch`) and returns {output name: sha256}. The HTML embeds its images
(base64) and styles, so it opens offline; the PDF is drawn with fpdf2 (pure Python).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..batch_store import now, write_json

__all__ = ["write_outputs"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_outputs(outcome, plan) -> dict[str, str]:
    from .html import render_html
    from .model import report_model
    from .pdf import render_pdf
    from .tables import batch_tables, write_tables

    out: Path = outcome.out
    outcome.provenance["finished"] = now()
    tables = batch_tables(outcome)
    written = write_tables(tables, outcome.provenance, out)
    summary: dict[str, Any] = {"provenance": outcome.provenance, "errors": outcome.errors,
                               "files": outcome.files, "patients": outcome.patients}
    write_json(out / "batch.json", summary)
    written.append(out / "batch.json")
    model = report_model(outcome, tables)
    html = render_html(model)
    from ..outputs import atomic_output

    with atomic_output(out / "report.html", "w", encoding="utf-8") as fh:
        fh.write(html)
    written.append(out / "report.html")
    pdf = render_pdf(model)
    with atomic_output(out / "report.pdf") as fh:
        fh.write(pdf)
    written.append(out / "report.pdf")
    return {p.name: _digest(p) for p in written}
