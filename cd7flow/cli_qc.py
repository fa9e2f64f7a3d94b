"""``cd7flow qc``: per-file quality control (PASS / WARN / FAIL per check, the file's status the worst)."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def qc(
    paths: list[Path] = typer.Argument(..., help="FCS files or folders (searched recursively)."),
    protocol: str = typer.Option("qc", "--protocol", "-p", help="QC protocol: shipped name or path to a .toml."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: one object per file (an array for several)."),
    out: Path = typer.Option(None, "--out", help="Folder for qc.csv and one FILE.qc.json per file."),
) -> None:
    """Check every file: events, time anomalies, margins, doublets, viability, signal drift, compensation.

    Each check is PASS / WARN / FAIL with its measured value and the protocol's limit. A file
    that cannot be read is listed as ERROR and the others go on; the exit code is then 1.
    """
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from .assays.qc import qc_file
    from .assays.qc_protocol import load_qc_protocol
    from .assays.qc_table import error_record, qc_rows
    from .cli import find_fcs_files
    from .errors import CD7FlowError
    from .outputs import atomic_output, ensure_output_dir, write_csv

    proto = load_qc_protocol(protocol)
    files = find_fcs_files(paths)
    if not files:
        raise CD7FlowError(f"no .fcs or .lmd files found in {', '.join(map(str, paths))}")
    records = []
    for f in files:
        try:
            records.append(qc_file(f, proto))
        except (CD7FlowError, OSError) as exc:
            if len(files) == 1:
                raise
            typer.echo(f"error: {exc}", err=True)
            records.append(error_record(f.name, str(exc)))
    errors = sum(1 for r in records if r["status"] == "ERROR")
    rows = qc_rows(records)
    if out is not None:
        ensure_output_dir(out)
        write_csv(pd.DataFrame(rows), out / "qc.csv")
        for f, r in zip(files, records):
            with atomic_output(out / f"{f.name}.qc.json", "w", encoding="utf-8") as fh:
                json.dump(r, fh, indent=2, allow_nan=False)
    if as_json:
        typer.echo(json.dumps(records[0] if len(records) == 1 else records, indent=2, allow_nan=False))
    else:
        colour = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "ERROR": "red"}
        table = Table(title=f"QC — protocol {proto.name} v{proto.version}")
        for col in ("file", "status", "events", "time removed %", "max gap s", "margin %", "doublets %",
                    "viable %", "drift", "problems"):
            table.add_column(col, justify="left" if col in ("file", "status", "problems") else "right")

        def num(v, fmt="{:.2f}"):
            return "-" if v is None else fmt.format(v)

        for r in rows:
            table.add_row(r["file"], f"[{colour[r['status']]}]{r['status']}[/]", num(r["events"], "{:,.0f}"),
                          num(r["time_anomalies"]), num(r["time_gap"]), num(r["margin"]), num(r["doublets"]),
                          num(r["viability"], "{:.1f}"), num(r["signal_drift"]), r["problems"])
        console = Console()
        if not console.is_terminal:
            console = Console(width=220)
        console.print(table)
        if out is not None:
            console.print(f"wrote {out / 'qc.csv'} and {len(records)} JSON file(s) in {out}")
    if errors:
        typer.echo(f"{errors} of {len(records)} file(s) could not be read", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach ``qc`` to the cd7flow CLI."""
    app.command("qc")(qc)
