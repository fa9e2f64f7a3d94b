"""Core file commands: ``simulate`` (the demo study) and ``export`` (re-write an FCS file)."""
from __future__ import annotations

from pathlib import Path

import typer


def simulate(
    outdir: Path = typer.Argument(..., help="Folder to write the study into (created if missing)."),
    seed: int = typer.Option(7, "--seed", help="Random seed; the same seed gives byte-identical files."),
) -> None:
    """Write the simulated demo study: FCS files, manifest.csv and truth.json."""
    from rich.console import Console

    from .simulate import simulate_study

    truth = simulate_study(outdir, seed)
    size = sum((outdir / f).stat().st_size for f in truth["files"])
    Console().print(f"wrote {len(truth['files'])} FCS files ({size / 1e6:.1f} MB), manifest.csv and truth.json to {outdir}")


def export(
    source: Path = typer.Argument(..., help="FCS file to read."),
    target: Path = typer.Argument(..., help="FCS 3.1 file to write (float32)."),
    channels: list[str] = typer.Option(None, "--channels", "-c", help="Channel ($PnN or marker) to keep; repeat. Default: all."),
    dataset: int = typer.Option(0, "--dataset", help="Data set number for files with several ($NEXTDATA)."),
) -> None:
    """Re-write an FCS file as FCS 3.1 float32 with provenance keywords, optionally fewer channels."""
    from rich.console import Console

    from .errors import FCSError
    from .io.fcs_read import read_fcs
    from .io.fcs_write import write_fcs

    if source.resolve() == target.resolve():
        raise FCSError(target, "refusing to overwrite the input file; choose another output name")
    sample = read_fcs(source, dataset=dataset)
    out = write_fcs(target, sample, channels=channels or None)
    Console().print(f"wrote {out} ({sample.n_events:,} events, {len(channels) if channels else len(sample.channels)} channels)")


def register(app: typer.Typer) -> None:
    """Attach ``simulate`` and ``export`` to the cd7flow CLI."""
    app.command("simulate")(simulate)
    app.command("export")(export)
