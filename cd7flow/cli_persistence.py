"""``cd7flow persistence``: CAR-T expansion and persistence, MRD and antigen escape over a study manifest."""
from __future__ import annotations

import csv
import io
import json
import math
import shlex
from pathlib import Path

import typer


def persistence(
    manifest: Path = typer.Argument(..., help="Manifest CSV (file, patient, tube, collection_date, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created if missing)."),
    protocol: str = typer.Option("car", "--protocol", "-p", help="Shipped protocol name or path to a .toml."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="One PNG per patient."),
) -> None:
    """Absolute CAR+ counts (95% CI), kinetics (Cmax, Tmax, AUC, Tlast, persistence), MRD, escape, response.

    Writes samples.csv, kinetics.csv, persistence.json (with provenance) and <patient>.png.
    A bad manifest row is reported with its row number and skipped; the exit code is then 1.
    """
    from .assays.persistence import KINETICS_COLUMNS, SAMPLE_COLUMNS, lloq_per_ul, run_persistence
    from .assays.persistence_plots import patient_figure, write_patient_png
    from .errors import CD7FlowError
    from .outputs import atomic_output

    if out.exists() and not out.is_dir():
        raise CD7FlowError(f"{out}: --out must be a folder")
    res = run_persistence(manifest, protocol, progress=lambda m: typer.echo(m, err=True))
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        # The command as parsed (sys.argv is the host's when called in-process, e.g. by a test runner).
        "provenance": {**res.provenance(), "command_line": shlex.join(
            ["cd7flow", "persistence", str(manifest), "--out", str(out), "--protocol", protocol,
             "--plots" if plots else "--no-plots"])},
        "samples": res.samples, "kinetics": res.kinetics, "courses": res.courses,
        "skipped_rows": [{"row": p.row, "file": p.file, "reason": p.reason} for p in res.problems],
        "notes": res.notes,
    }
    files = {"samples.csv": _csv(res.samples, SAMPLE_COLUMNS), "kinetics.csv": _csv(res.kinetics, KINETICS_COLUMNS),
             "persistence.json": json.dumps(_clean(payload), indent=1, allow_nan=False) + "\n"}
    for name, text in files.items():
        with atomic_output(out / name, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    if plots:
        lloq = lloq_per_ul(res)
        for kin in res.kinetics:
            if res.courses.get(kin["patient"]):
                fig = patient_figure(kin["patient"], res.courses[kin["patient"]], kin, lloq)
                write_patient_png(out / f"{_safe(kin['patient'])}.png", fig)
    for p in res.problems:
        typer.echo(f"skipped {p}", err=True)
    for k in res.kinetics:
        typer.echo(f"{k['patient']}: Cmax {k['cmax_per_ul']} /uL day {k['tmax_day']}, AUC{k['auc_window']} {k['auc']}, "
                   f"Tlast {k['tlast_day']}, escape {k['antigen_escape']}, response {k['response']}")
    typer.echo(f"wrote {len(res.samples)} tube(s), {len(res.kinetics)} patient(s) to {out}")
    if res.problems:
        typer.echo(f"{len(res.problems)} row(s) skipped", err=True)
        raise typer.Exit(1)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "patient"


def _cell(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v


def _csv(records: list[dict], columns) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({c: _cell(r.get(c)) for c in columns})
    return buf.getvalue()


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def register(app: typer.Typer) -> None:
    """Attach ``persistence`` to the cd7flow CLI."""
    app.command("persistence")(persistence)
