"""A batch's tables (pandas DataFrames) and their CSV and Excel files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..assays.qc_table import qc_rows
from ..outputs import atomic_output, write_csv

SCREENING_COLUMNS = ("file", "patient", "qc_status", "verdict", "cd7_pos_pct", "cd7_pos_ci_low", "cd7_pos_ci_high",
                     "blasts", "blast_pct", "intensity", "cd7_mfi_blasts", "rd_fmo", "fmo_file", "reason", "rule",
                     "protocol_version", "sha256")
ERROR_COLUMNS = ("file", "stage", "reason")


def _cell(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def screened(outcome):
    """(file result, its screening record, [CI low, CI high]) for every screened file, in file order."""
    for r in outcome.files:
        s = r.get("screening")
        if s is not None:
            yield r, s, (s.get("cd7_pos_ci95") or [None, None])


def batch_tables(outcome) -> dict[str, pd.DataFrame]:
    """{sheet name: table}: qc (failed first), screening, persistence samples and kinetics, errors."""
    from ..assays.persistence import KINETICS_COLUMNS, SAMPLE_COLUMNS

    screening = []
    for r, s, ci in screened(outcome):
        screening.append({"file": r["file"], "patient": r.get("patient"), "qc_status": r["qc"]["status"],
                          "cd7_pos_ci_low": ci[0], "cd7_pos_ci_high": ci[1],
                          **{k: s.get(k) for k in SCREENING_COLUMNS if k not in ("file", "patient", "qc_status",
                                                                                 "cd7_pos_ci_low", "cd7_pos_ci_high")}})
    samples = [{k: _cell(s.get(k)) for k in SAMPLE_COLUMNS} for p in outcome.patients for s in p["samples"]]
    kinetics = [{k: _cell(p["kinetics"].get(k)) for k in KINETICS_COLUMNS} for p in outcome.patients if p.get("kinetics")]
    problems = [{"file": q["file"], "stage": "persistence (skipped tube)", "reason": q["reason"]}
                for p in outcome.patients for q in p.get("problems", [])]
    return {
        "qc": _frame(qc_rows([r["qc"] for r in outcome.files]), None),
        "screening": _frame(screening, SCREENING_COLUMNS),
        "persistence_samples": _frame(samples, SAMPLE_COLUMNS),
        "persistence_kinetics": _frame(kinetics, KINETICS_COLUMNS),
        "errors": _frame(outcome.errors + problems, ERROR_COLUMNS),
    }


def _frame(rows: list[dict], columns) -> pd.DataFrame:
    """Values kept as given (object columns): a missing value must not turn a count into 3459.0."""
    return pd.DataFrame(rows, columns=None if columns is None else list(columns), dtype=object)


def write_tables(tables: dict[str, pd.DataFrame], provenance: dict[str, Any], out: Path) -> list[Path]:
    """One CSV per table and ``results.xlsx`` (one sheet per table plus provenance), atomically."""
    written = []
    for name, df in tables.items():
        written.append(write_csv(df, out / f"{name}.csv"))
    flat = [{"field": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v} for k, v in provenance.items()]
    with atomic_output(out / "results.xlsx") as fh:
        with pd.ExcelWriter(fh, engine="openpyxl") as xl:
            for name, df in tables.items():
                df.to_excel(xl, sheet_name=name[:31], index=False)
            pd.DataFrame(flat).to_excel(xl, sheet_name="provenance", index=False)
    written.append(out / "results.xlsx")
    return written
