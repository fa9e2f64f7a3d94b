"""``cd7flow batch`` (a study folder: QC, screening, persistence, reports) and ``cd7flow demo``."""
from __future__ import annotations

import sys
from pathlib import Path

import typer


def batch(
    folder: Path = typer.Argument(..., help="Study folder (searched recursively for FCS files by content)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (results, tables, report.html/.pdf, audit.jsonl)."),
    manifest: Path = typer.Option(None, "--manifest", "-m", help="Study manifest CSV (file, patient, tube, collection_date, ...)."),
    jobs: int = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes (default: the number of cores)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask distributed scheduler address, e.g. tcp://host:8786."),
    protocol_dir: Path = typer.Option(None, "--protocol-dir", help="Folder with qc.toml / screening.toml / car.toml to use instead of the shipped ones."),
) -> None:
    """QC every file, screen the screening tubes, follow each patient's CAR-T timeline; write a report.

    Without a manifest, patient / tube / dates are inferred from keywords and shown. Running the
    same command again reuses finished results (same input, protocol and tool version) and redoes
    the rest. Exit code 1: completed, but some files or steps had errors (listed in the report).
    """
    run_and_report(folder, out, manifest, jobs, scheduler, protocol_dir)


def run_and_report(folder, out, manifest=None, jobs=None, scheduler=None, protocol_dir=None) -> None:
    from .batch import run_batch

    outcome = run_batch(folder, out, manifest=manifest, jobs=jobs, scheduler=scheduler, protocol_dir=protocol_dir,
                        argv=sys.argv[1:], say=lambda text: typer.echo(text, err=True))
    statuses = [r["qc"]["status"] for r in outcome.files]
    typer.echo(f"{len(outcome.files)} file(s): QC " + ", ".join(f"{statuses.count(s)} {s}" for s in ("PASS", "WARN", "FAIL", "ERROR")
                                                                  if statuses.count(s)))
    for e in outcome.errors:
        typer.echo(f"error: {e['file']} ({e['stage']}): {e['reason']}", err=True)
    typer.echo(f"report: {(outcome.out / 'report.html').resolve()}")
    typer.echo(f"        {(outcome.out / 'report.pdf').resolve()}")
    if outcome.errors:
        typer.echo(f"completed with errors: {len(outcome.errors)} (see the report)", err=True)
        raise typer.Exit(1)


def demo(
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Output folder."),
    jobs: int = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes (default: the number of cores)."),
) -> None:
    """The demo study: exactly `cd7flow batch sample_fcs --manifest sample_fcs/manifest.csv --out results`."""
    from .errors import CD7FlowError

    folder = Path("sample_fcs")
    if not (folder / "manifest.csv").is_file():
        raise CD7FlowError("sample_fcs/manifest.csv not found: run `cd7flow demo` from the cd7flow source folder "
                           "(or `cd7flow simulate sample_fcs` first)")
    run_and_report(folder, out, folder / "manifest.csv", jobs)


def register(app: typer.Typer) -> None:
    """Attach ``batch`` and ``demo`` to the cd7flow CLI."""
    app.command("batch")(batch)
    app.command("demo")(demo)
