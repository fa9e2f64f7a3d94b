"""``cd7flow gate``: apply a Gating-ML file or a FlowJo workspace to one FCS file."""
from __future__ import annotations

from pathlib import Path

import typer

GATE_HELP = """Gate one FCS file with a Gating-ML 2.0 file (.xml), a FlowJo workspace (10 .wsp, or 7-9 XML; told apart from Gating-ML by the root element <Workspace>) or a BD FACSDiva experiment export (XML, root element <bdfacs>; --sample may name a tube such as _001).

The gates, their transforms and compensation come from --gates; cd7flow evaluates them itself, parents first (FlowJo rectangle and polygon coordinates are mapped onto the display scale the gate was drawn on). For a workspace, --sample picks the sample whose gates are used; the default is the sample whose FCS file name is FILE's name.

--stats OUT.csv writes the tidy statistics table, columns sample, population (path "/A/B"; "/" = all events), statistic, channel, value. Each population has count, percent_of_parent and percent_of_total (percent, 0-100); with --channel also median, mean, sd, geometric_mean, cv and robust_cv (percent) of that channel in its stored units.

--membership OUT.csv writes one 0/1 column per population (header = the gate id; for a quadrant gate, each quadrant's id; the path "/A/B" when a name is used twice) and one row per event in file order; 1 = the event is in the population, its parents included.

Both files are written under a temporary name and renamed, so they are never half-written. Without either option a table of counts is printed. Bad input (a missing or unreadable file, bad XML, a gate naming a channel the file lacks, a sample not in the workspace) prints one error line and exits with code 2.
"""


def gate(
    fcs: Path = typer.Argument(..., help="FCS file to gate.", metavar="FILE"),
    gates: Path = typer.Option(..., "--gates", "-g", help="Gating-ML 2.0 file (.xml), FlowJo workspace (10 .wsp or 9 .xml) or FACSDiva XML export."),
    sample: str = typer.Option(None, "--sample", "-s",
                               help="Workspace sample whose gates to use (default: the one named like FILE)."),
    stats: Path = typer.Option(None, "--stats", help="Write the tidy statistics table here (CSV)."),
    membership: Path = typer.Option(None, "--membership", help="Write per-event 0/1 membership here (CSV)."),
    channels: list[str] = typer.Option(None, "--channel", "-c",
                                       help="Channel ($PnN or marker) to describe in --stats; repeat."),
    dataset: int = typer.Option(0, "--dataset", help="Data set number for files with several ($NEXTDATA)."),
) -> None:
    from rich.console import Console
    from rich.table import Table

    from gating.stats import population_table

    from .errors import CD7FlowError, FCSError
    from .io import open_gating
    from .io.fcs_read import read_fcs
    from .membership import membership_columns, write_membership_csv
    from .outputs import check_distinct_outputs, write_csv

    check_distinct_outputs({"--stats": stats, "--membership": membership})

    for out in (stats, membership):
        if out is not None and out.exists() and out.resolve() in (fcs.resolve(), gates.resolve()):
            raise CD7FlowError(f"{out}: refusing to overwrite an input file; choose another output name")
    if not fcs.is_file():
        raise FCSError(fcs, "FCS file not found" if not fcs.exists() else "is not a file")
    strategy = open_gating(gates, sample=sample, fcs=fcs)
    label = strategy.sample_name
    data = read_fcs(fcs, dataset=dataset)
    strategy.check_channels(data)
    result = strategy.apply(data)
    if stats is not None:
        if channels:
            for ch in channels:
                data.channel(ch)  # ChannelNotFound is a CD7FlowError naming the file
        table = population_table(result, channels=[data.channels[data.channel(c)] for c in channels or []],
                                 sample=fcs.name)
        write_csv(table, stats)
    if membership is not None:
        write_membership_csv(membership, membership_columns(result))
    console = Console()
    if stats is None and membership is None:
        t = Table(title=f"{fcs.name}: {result.n_events:,} events" + (f" (workspace sample {label})" if label else ""))
        for col in ("population", "count", "% of parent", "% of total"):
            t.add_column(col, justify="left" if col == "population" else "right")
        for pop in result.tree.populations():
            t.add_row(pop.path_str, f"{result.count(pop.path):,}", f"{result.percent_of_parent(pop.path):.2f}",
                      f"{result.percent_of_total(pop.path):.2f}")
        console.print(t)
    else:
        wrote = [str(p) for p in (stats, membership) if p is not None]
        console.print(f"gated {result.n_events:,} events with {len(result.tree)} populations; wrote {', '.join(wrote)}")


gate.__doc__ = GATE_HELP


def register(app: typer.Typer) -> None:
    """Attach ``gate`` to the cd7flow CLI."""
    app.command("gate", help=GATE_HELP)(gate)
