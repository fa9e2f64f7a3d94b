"""The ``cd7flow`` command line.

Every command calls the same library functions the GUI uses. A user error
(a ``CD7FlowError``: bad file, bad protocol, missing marker) prints one line on
stderr and exits with code 2; only a bug shows a traceback.
"""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import CD7FlowError

app = typer.Typer(
    name="cd7flow",
    help="Flow cytometry for a CD7 CAR-T trial: read FCS files, compensate, gate, screen blasts for CD7.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, batch runs) gets a wide fixed width so tables are not folded.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

FCS_SUFFIXES = {".fcs", ".lmd"}


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"cd7flow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """cd7flow command line."""


def _looks_like_fcs(path: Path) -> bool:
    """True for .fcs/.lmd files and for any file whose first bytes say "FCS" (instruments
    such as the FACSCalibur name files 0877408774.B08 or 060909.001)."""
    if path.suffix.lower() in FCS_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
        return re.fullmatch(rb"FCS\d\.\d", head) is not None
    except OSError:
        return False


def find_fcs_files(paths: list[Path]) -> list[Path]:
    """Expand folders into the FCS files they hold (recursively, sorted); keep files as given."""
    found: list[Path] = []
    for p in paths:
        if not p.exists():
            raise CD7FlowError(f"{p}: no such file or folder")
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and _looks_like_fcs(f)))
        else:
            found.append(p)
    return found


@app.command()
def summary(
    paths: list[Path] = typer.Argument(..., help="FCS files or folders (searched recursively for .fcs/.lmd)."),
) -> None:
    """Read every FCS file given and print one summary row per data set.

    A file that cannot be read is reported in its row and the rest go on;
    the exit code is 1 when any file failed.
    """
    from .io.fcs_read import list_datasets, read_fcs

    files = find_fcs_files(paths)
    if not files:
        raise CD7FlowError(f"no .fcs or .lmd files found in {', '.join(map(str, paths))}")
    table = Table(title=f"{len(files)} FCS file(s)")
    for col in ("file", "set", "FCS", "type", "events", "channels", "markers", "spillover", "cytometer", "notes"):
        table.add_column(col, justify="right" if col in ("events", "channels", "set") else "left")
    failures: list[str] = []
    for f in files:
        try:
            n_sets = len(list_datasets(f))
            for k in range(n_sets):
                # Repairs and ignored matrices are reported in the table, not as Python warnings.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    s = read_fcs(f, dataset=k)
                notes = list(s.extra.get("warnings", []))
                notes += [str(w.message) for w in caught if str(w.message) not in notes]
                md = s.metadata
                n_markers = sum(1 for m in s.markers if m)
                table.add_row(
                    f.name, str(k), s.extra.get("version", "?"), md.get("$DATATYPE", "?"),
                    f"{s.n_events:,}", str(len(s.channels)), str(n_markers),
                    f"{len(s.spillover.channels)}x{len(s.spillover.channels)}" if s.spillover is not None else "-",
                    md.get("$CYT", ""),
                    "; ".join(notes),
                )
        except CD7FlowError as exc:
            failures.append(str(exc))
            table.add_row(f.name, "", "", "", "", "", "", "", "", "[red]unreadable (see below)[/red]")
    console.print(table)
    for message in failures:
        err_console.print(f"[red]error:[/red] {message}", highlight=False)
    if failures:
        err_console.print(f"{len(failures)} of {len(files)} file(s) could not be read")
        raise typer.Exit(1)


def _register_commands() -> None:
    """Attach the commands that live in their own modules (one per area)."""
    import importlib

    for module in ("cd7flow.cli_core", "cd7flow.cli_gate", "cd7flow.cli_screen", "cd7flow.cli_persistence"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(app)


_register_commands()


def main() -> None:
    """Console entry point: user errors become one line and exit code 2.

    Click's standalone mode already turns usage errors (unknown option or command,
    bad value) into a usage message and exit code 2, and ``typer.Exit`` into its code;
    it lets every other exception through, so a CD7FlowError is caught here and a bug
    keeps its traceback.
    """
    try:
        app()
    except CD7FlowError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
