"""What a batch report shows, as plain data the HTML and PDF renderers share."""
from __future__ import annotations

import math
from typing import Any

from .tables import screened

QC_COLUMNS = (("file", "file"), ("status", "status"), ("events", "events"), ("time_anomalies", "time removed %"),
              ("time_gap", "max gap s"), ("margin", "margin %"), ("doublets", "doublets %"),
              ("viability", "viable %"), ("signal_drift", "drift"), ("problems", "problems"))
COURSE_COLUMNS = (("day", "day"), ("tube", "tube"), ("car_per_ul", "CAR+/uL"), ("car_per_ul_low", "low"),
                  ("car_per_ul_high", "high"), ("car_pct_of_cd3", "CAR % CD3"), ("blast_pct_of_cd45", "blast %"),
                  ("mrd_status", "MRD"), ("flags", "flags"))
KINETIC_FIELDS = (("cmax_per_ul", "Cmax /uL"), ("tmax_day", "Tmax day"), ("auc", "AUC"), ("auc_window", "AUC window"),
                  ("tlast_day", "Tlast day"), ("persistence", "persistence"), ("antigen_escape", "antigen escape"),
                  ("screening_cd7_pos_pct", "screening CD7+ %"), ("response", "response"))


def fmt(v: Any) -> str:
    """A value as table text: numbers to 4 significant digits, nothing as '-'."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.0f}" if v.is_integer() or abs(v) >= 1e4 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def report_model(outcome, tables) -> dict[str, Any]:
    prov = outcome.provenance
    qc = tables["qc"]
    counts = qc["status"].value_counts().to_dict()
    plots = outcome.out / "plots"
    screening = []
    for r, s, ci in screened(outcome):
        screening.append({
            "file": r["file"], "patient": r.get("patient") or "-", "qc_status": r["qc"]["status"],
            "verdict": s.get("verdict") or "-", "estimate": fmt(s.get("cd7_pos_pct")),
            "interval": "-" if ci[0] is None else f"{fmt(ci[0])} - {fmt(ci[1])}",
            "blasts": fmt(s.get("blasts")), "blast_pct": fmt(s.get("blast_pct")), "intensity": s.get("intensity") or "-",
            "rule": s.get("rule") or "", "reason": s.get("reason") or "",
            "plots": [plots / p for p in r.get("plots", []) if (plots / p).is_file()],
        })
    patients = []
    for p in outcome.patients:
        kin = p.get("kinetics") or {}
        rows = [[fmt(s.get(k)) for k, _ in COURSE_COLUMNS] for s in p["samples"]]
        patients.append({"patient": p["patient"], "plots": [plots / x for x in p.get("plots", []) if (plots / x).is_file()],
                         "columns": [label for _, label in COURSE_COLUMNS], "rows": rows,
                         "kinetics": [(label, fmt(kin.get(k))) for k, label in KINETIC_FIELDS],
                         "problems": [f"{q['file']}: {q['reason']}" for q in p.get("problems", [])] + p.get("notes", []),
                         "errors": [e["reason"] for e in p.get("errors", [])]})
    protos = prov["protocols"]
    summary = [("files", fmt(len(outcome.files))),
               ("QC", ", ".join(f"{counts.get(s, 0)} {s}" for s in ("FAIL", "WARN", "PASS", "ERROR") if counts.get(s))),
               ("screening tubes", fmt(len(screening))), ("patients (persistence)", fmt(len(patients))),
               ("files with errors", fmt(len({e['file'] for e in outcome.errors}))),
               ("results reused from an earlier run", fmt(outcome.reused)), ("tasks run", fmt(outcome.ran))]
    provenance = [("tool", f"cd7flow {prov['tool_version']}"), ("command line", prov["command_line"]),
                  ("user", prov["user"]), ("host", prov["host"]), ("started", prov["time"]),
                  ("finished", prov["finished"] or "-"), ("study folder", prov["folder"]),
                  ("manifest", "-" if not prov["manifest"] else f"{prov['manifest']['path']} (sha256 {prov['manifest']['sha256']})")]
    provenance += [(f"{role} protocol", f"{p['protocol']} v{p['protocol_version']} sha256 {p['protocol_sha256']}")
                   for role, p in protos.items()]
    return {
        "title": f"cd7flow batch report: {prov['folder']}",
        "summary": summary,
        "qc_columns": [label for _, label in QC_COLUMNS],
        "qc_rows": [{"status": row["status"], "cells": [fmt(row[k]) for k, _ in QC_COLUMNS]} for row in qc.to_dict("records")],
        "screening": screening, "patients": patients,
        "errors": [(e["file"], e["stage"], e["reason"]) for e in tables["errors"].to_dict("records")],
        "provenance": provenance,
        "inputs": sorted(prov["inputs"].items()),
    }
