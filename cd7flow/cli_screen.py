"""``cd7flow screen`` (CD7 screening assay) and ``cd7flow autogate`` (a protocol's automated gates)."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def screen(
    files: list[Path] = typer.Argument(..., help="Screening FCS file(s) (or folders, searched for .fcs/.lmd)."),
    fmo: Path = typer.Option(None, "--fmo", help="FMO tube (CD7 left out) for the separation index RD."),
    protocol: str = typer.Option("screening", "--protocol", "-p", help="Shipped protocol name or path to a .toml."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: one object per file (an array for several)."),
    plots: Path = typer.Option(None, "--plots", help="Folder for PNG gating plots (CD45/SSC, CD7 histogram)."),
) -> None:
    """Screen blasts for CD7: % CD7+ of blasts (95% CI), intensity and verdict under the protocol's rule.

    The % is the estimate the protocol's verdict uses ([positivity].estimate: by default the
    fraction of blasts that express CD7); the conventional % above the reference percentile is
    shown beside it. A verdict whose 95% CI straddles the rule's cut-off is marked BORDERLINE.
    "not_evaluable" (too few blasts, failed QC, marker missing) is an answer, with its reason.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .assays.screening import FMOTube, screen_file, unreadable_record
    from .cli import find_fcs_files
    from .errors import CD7FlowError
    from .io.fcs_read import read_fcs
    from .protocol import load_protocol

    proto = load_protocol(protocol)
    if proto.assay != "screening":
        raise CD7FlowError(f"protocol {proto.name} is a {proto.assay!r} protocol, not a screening one")
    paths = find_fcs_files(files)
    if not paths:
        raise CD7FlowError(f"no .fcs or .lmd files found in {', '.join(map(str, files))}")
    # The FMO tube is read once for the whole batch (and gated once): a bad FMO spoils every
    # file, so its read error stops here, before any file is screened.
    fmo_tube = FMOTube(read_fcs(fmo), proto) if fmo is not None else None
    if len(paths) == 1:  # one file: an unreadable file is simply the error (exit 2)
        records = [screen_file(paths[0], proto, plots_dir=plots, fmo=fmo_tube)]
    else:  # a batch goes on past a bad file, lists it as not evaluable, and exits 1 at the end
        records = []
        for p in paths:
            try:
                records.append(screen_file(p, proto, plots_dir=plots, fmo=fmo_tube))
            except CD7FlowError as exc:
                typer.echo(f"error: {exc}", err=True)
                records.append(unreadable_record(p, proto, exc))
    failed = sum(1 for r in records if r.get("error"))
    if as_json:
        payload = records[0] if len(records) == 1 else records
        typer.echo(json.dumps(payload, indent=2, allow_nan=False))
        if failed:
            typer.echo(f"{failed} of {len(records)} file(s) could not be read", err=True)
            raise typer.Exit(1)
        return
    marker = proto.settings["positivity"]["marker"]
    m = marker.lower()  # record keys follow the screened marker (cd7_pos_pct for CD7)
    k_pct, k_ci, k_mfi = f"{m}_pos_pct", f"{m}_pos_ci95", f"{m}_mfi_blasts"
    table = Table(title=f"{marker} screening — protocol {proto.name} v{proto.version} "
                        f"(rule: {marker}+ blasts {proto.rule.text})")
    for col in ("file", "events", "viable singlets", "blasts", "blast %", f"{marker}+ % of blasts (95% CI), estimate",
                f"{marker} MFI blasts", "vs neg ref", "vs pos ref", "RD (FMO)", "intensity", "verdict"):
        table.add_column(col, justify="left" if col in ("file", "intensity", "verdict") else "right")

    def num(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    for r in records:
        ci = r[k_ci]
        verdict = {"positive": "[green]positive[/green]", "negative": "[yellow]negative[/yellow]"}.get(
            r["verdict"], f"[red]not evaluable[/red]: {escape(str(r['reason']))}")
        if r.get("borderline"):  # the 95% CI straddles the rule's cut-off: say it out loud
            verdict += " [bold magenta]BORDERLINE[/bold magenta]"
        if r.get("error"):
            verdict = "[red]unreadable[/red] (error above)"
        table.add_row(
            r["file"], num(r["events"], "{:,}"), num(r["viable_singlets"], "{:,}"), num(r["blasts"], "{:,}"),
            num(r["blast_pct"]),
            "-" if r[k_pct] is None else f"{r[k_pct]:.1f} ({ci[0]:.1f}-{ci[1]:.1f}) {r[f'{m}_method']}"
            + ("" if r.get(f"{m}_pos_pct_threshold") is None or r[f"{m}_method"] == "threshold"
               else f"; threshold {r[f'{m}_pos_pct_threshold']:.1f}"),
            num(r[k_mfi], "{:.0f}"),
            "-" if r["neg_ref_ratio"] is None else f"{r['neg_ref_ratio']:.1f}x (n={r['neg_ref_events']:,})",
            "-" if r["pos_ref_ratio"] is None else f"{r['pos_ref_ratio']:.2f}x (n={r['pos_ref_events']:,})",
            num(r["rd_fmo"], "{:.2f}"), r["intensity"] or "-", verdict,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped output: keep one row per file
    console.print(table)
    for r in records:
        for note in r.get("notes") or []:
            console.print(f"[dim]{escape(r['file'])}: {escape(note)}[/dim]")
        for p in r.get("plots") or []:
            console.print(f"[dim]wrote {p}[/dim]")
    if failed:
        typer.echo(f"{failed} of {len(records)} file(s) could not be read", err=True)
        raise typer.Exit(1)


def autogate(
    file: Path = typer.Argument(..., help="FCS file to gate."),
    protocol: str = typer.Option("screening", "--protocol", "-p", help="Shipped protocol name or path to a .toml."),
    membership: Path = typer.Option(None, "--membership", help="Write per-event 0/1 membership here (CSV)."),
    gatingml: Path = typer.Option(None, "--gatingml", help="Write the fitted gates as Gating-ML 2.0 here."),
) -> None:
    """Fit the protocol's automated gates on one file; print counts, optionally write per-event membership.

    The CSV has one 0/1 column per population (header = gate or population id, parents
    included), one row per event in file order, written atomically. Optional gates that
    could not be fitted are left out and named. ``--gatingml`` writes the fitted geometry
    (with its compensation and transforms) so it can be re-applied or edited elsewhere.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .assays.protocol_gating import run_protocol_gates, sample_notes
    from .errors import CD7FlowError, NotEvaluable
    from .io.fcs_read import read_fcs
    from .membership import write_membership_csv
    from .protocol import load_protocol

    proto = load_protocol(protocol)
    sample = read_fcs(file)
    try:
        g = run_protocol_gates(sample, proto)
    except NotEvaluable as exc:
        raise CD7FlowError(f"{file}: {exc}") from None
    columns = {k: m for k, m in g.masks.items() if k != "root" and k not in g.skipped}
    table = Table(title=f"{sample.name}: protocol {proto.name} v{proto.version}")
    for col in ("population", "events", "% of total"):
        table.add_column(col, justify="left" if col == "population" else "right")
    for k, m in columns.items():
        n = int(m.sum())
        table.add_row(k, f"{n:,}", f"{100 * n / max(sample.n_events, 1):.2f}")
    console = Console()
    console.print(table)
    for k, why in g.skipped.items():
        console.print(f"[dim]gate {escape(k)} skipped: {escape(why)}[/dim]")
    for note in sample_notes(sample, proto):
        console.print(f"[dim]{escape(note)}[/dim]")
    if membership is not None:
        write_membership_csv(membership, columns)
        console.print(f"wrote {membership} ({sample.n_events:,} rows, {len(columns)} columns)")
    if gatingml is not None:
        from .io.gatingml import write_gatingml

        write_gatingml(g.strategy, gatingml)  # the very tree the counts above come from
        console.print(f"wrote {gatingml}")


def register(app: typer.Typer) -> None:
    """Attach ``screen`` and ``autogate`` to the cd7flow CLI."""
    app.command("screen")(screen)
    app.command("autogate")(autogate)
