"""QC records as flat rows (one per file) for tables, CSV and Excel: failed files first."""
from __future__ import annotations

from typing import Any

CHECKS = ("events", "time_anomalies", "time_gap", "rate_drift", "margin", "compensation", "doublets", "viability",
          "viable_singlets", "signal_drift", "sample_age")
_RANK = {"ERROR": 0, "FAIL": 1, "WARN": 2, "PASS": 3}


def problems_text(rec: dict[str, Any]) -> str:
    """The checks that did not pass, e.g. ``time_anomalies 8.65 % (WARN > 1 %, FAIL > 5 %): FAIL``."""
    if rec.get("error"):
        return rec["error"]
    out = []
    for c in rec.get("checks", []):
        if c["status"] != "PASS":
            where = f" [{c['channel']}]" if c.get("channel") and c["check"] in ("margin", "signal_drift") else ""
            value = "not measured" if c["value"] is None else f"{c['value']:g} {c['unit']}".rstrip()
            out.append(f"{c['check']}{where} {value} ({c['limit'] or c['detail']}): {c['status']}")
    return "; ".join(out)


def qc_row(rec: dict[str, Any]) -> dict[str, Any]:
    """One flat row: file, status, each check's value and status, the problems in words."""
    row: dict[str, Any] = {"file": rec["file"], "status": rec.get("status", "ERROR")}
    by_name = {c["check"]: c for c in rec.get("checks", [])}
    for name in CHECKS:
        c = by_name.get(name)
        row[name] = None if c is None else c["value"]
        row[f"{name}_status"] = None if c is None else c["status"]
    row["qc_events_removed"] = (rec.get("qc_gate") or {}).get("events_removed")
    row["problems"] = problems_text(rec)
    row["sha256"] = rec.get("sha256")
    return row


def qc_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted worst first (unreadable, FAIL, WARN, PASS), then by file name."""
    rows = [qc_row(r) for r in records]
    return sorted(rows, key=lambda r: (_RANK.get(r["status"], 0), r["file"]))


def error_record(file: str, error: str, sha256: str | None = None) -> dict[str, Any]:
    """The QC record of a file that could not be read or checked at all."""
    return {"file": file, "status": "ERROR", "error": error, "sha256": sha256, "checks": []}
