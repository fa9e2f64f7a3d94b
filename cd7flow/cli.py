"""The ``cd7flow`` command line.

Every command calls the same library functions the GUI uses. A user error
(a ``CD7FlowError``: bad file, bad protocol, missing marker) prints one line on
stderr and exits with code 2; only a bug shows a traceback.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from gating.errors import GatingError as _AnyGatingError

from . import __version__, cli_batch, cli_core, cli_gate, cli_persistence, cli_qc, cli_screen
from .errors import CD7FlowError
from .outputs import cleanup_on_sigterm

app = typer.Typer(
    name="cd7flow",
    help="Flow cytometry for a CD7 CAR-T trial: read FCS files, compensate, gate, screen blasts for CD7.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

FCS_SUFFIXES = {".fcs", ".lmd"}


def _console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr), made when needed: piped output (CI logs, batch
    runs) gets a wide fixed width so tables are not folded."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def _version_callback(value: bool) -> None:
    if value:
        _console().print(f"cd7flow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """cd7flow command line."""


def _has_fcs_magic(path: Path) -> bool:
    """True when the file's first bytes say "FCSn.n" (OSError if it cannot be read)."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    return re.fullmatch(rb"FCS\d\.\d", head) is not None


def _scan_folder(folder: Path, skipped: list[str]) -> list[Path]:
    """FCS files below ``folder``, sorted: .fcs/.lmd files, and any file whose first bytes say
    "FCS" (instruments such as the FACSCalibur name files 0877408774.B08 or 060909.001).

    Hidden entries (names starting with ".") are left out: the temporary file of an
    interrupted write (``.NAME.XXXXXXXX.tmp``) holds the FCS magic but is no input.
    Folders that cannot be listed, broken links and files that cannot be opened are
    added to ``skipped``; links to folders are not followed.
    """
    found: list[Path] = []

    def unreadable_folder(exc: OSError) -> None:
        skipped.append(f"{exc.filename}: cannot read folder ({exc.strerror or exc})")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable_folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            f = Path(dirpath, name)
            if not f.is_file():
                if f.is_symlink() and not f.exists():
                    skipped.append(f"{f}: broken link")
                continue  # a FIFO, socket or device is no FCS file
            if f.suffix.lower() in FCS_SUFFIXES:
                found.append(f)
                continue
            try:
                if _has_fcs_magic(f):
                    found.append(f)
            except OSError as exc:
                skipped.append(f"{f}: cannot read ({exc.strerror or exc})")
    return sorted(found)


def find_fcs_files(paths: list[Path]) -> list[Path]:
    """Expand folders into the FCS files they hold (recursively, sorted); keep files as given.

    A named file that does not exist stays in the list, so a multi-file command reports it
    as unreadable beside the others and goes on; only when nothing given exists is it an
    error (exit 2). What a folder scan skips (see :func:`_scan_folder`) is named on stderr,
    one warning line each.
    """
    if paths and not any(p.exists() for p in paths):
        raise CD7FlowError(f"{paths[0]}: no such file or folder")
    found: list[Path] = []
    skipped: list[str] = []
    for p in paths:
        if p.is_dir():
            found.extend(_scan_folder(p, skipped))
        else:
            found.append(p)
    if skipped:
        err = _console(stderr=True)
        for line in skipped:
            err.print(f"[yellow]warning:[/yellow] skipped {line}", highlight=False, soft_wrap=True)
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

    console, err_console = _console(), _console(stderr=True)
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


for _commands in (cli_batch, cli_core, cli_gate, cli_persistence, cli_qc, cli_screen):  # the commands that live in their own modules
    _commands.register(app)


def main() -> None:
    """Console entry point: user errors become one line and exit code 2.

    Click's standalone mode already turns usage errors (unknown option or command,
    bad value) into a usage message and exit code 2, and ``typer.Exit`` into its code;
    it lets every other exception through, so a CD7FlowError, or a
    ``gating.errors.GatingError`` (``gating`` cannot subclass CD7FlowError), is caught
    here and a bug keeps its traceback. A SIGTERM ends the command with exit code 143
    after removing the temporary file of an output being written.
    """
    try:
        with cleanup_on_sigterm():
            app()
    except (CD7FlowError, _AnyGatingError) as exc:
        _console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
