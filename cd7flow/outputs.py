"""The one atomic writer for every output file (FCS, CSV, JSON, XML, PNG), and output folders.

:func:`atomic_output` writes under a hidden temporary name (``.NAME.XXXXXXXX.tmp``) in
the target folder, fsyncs it, renames it over the target and fsyncs the folder, so a
reader (or a crash, or a power cut) never sees a half-written file and an existing
file is replaced only once the new one is complete. Files get the permissions an
ordinary ``open(path, "w")`` would give (0666 minus the umask: 0644 under the usual
umask 022). On any failure, KeyboardInterrupt included, the temporary file is removed;
a SIGTERM does the same inside :func:`cleanup_on_sigterm` (the CLI runs under it).
Folder scans skip hidden files, so the temporary file of a killed process (SIGKILL,
power cut) is never taken for an input.

``gating`` returns tables and never writes files: :func:`write_csv` writes them.
"""
from __future__ import annotations

import os
import secrets
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import FileProblem, OutputError

__all__ = ["OutputError", "atomic_output", "write_csv", "ensure_output_dir", "check_distinct_outputs",
           "cleanup_on_sigterm"]

_FILE_MODE = 0o666  # what open() asks for; the kernel takes the process umask away
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


@contextmanager
def atomic_output(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    error_class: type[FileProblem] = OutputError,
) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched; an
    OSError becomes ``error_class(path, ...)`` so the CLI shows one clear line.
    """
    path = Path(path)
    folder = path.absolute().parent
    if not folder.is_dir():
        raise error_class(path, f"cannot write: folder {folder} does not exist")
    tmp, fd = _create_temp(path, folder, error_class)
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise error_class(path, f"cannot write: {exc.strerror or exc}") from exc
        raise
    _fsync_folder(folder)


def _create_temp(path: Path, folder: Path, error_class: type[FileProblem]) -> tuple[Path, int]:
    """A new hidden temporary file in ``folder`` (mode 0666 & ~umask), as (path, fd)."""
    for _ in range(100):
        tmp = folder / f".{path.name[:200]}.{secrets.token_hex(4)}.tmp"  # stays under NAME_MAX (255)
        try:
            return tmp, os.open(tmp, _TEMP_FLAGS, _FILE_MODE)
        except FileExistsError:
            continue
        except OSError as exc:
            raise error_class(path, f"cannot write in {folder}: {exc.strerror or exc}") from None
    raise error_class(path, f"cannot create a temporary file in {folder}")  # pragma: no cover


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable. Best effort: some systems cannot open or fsync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_csv(table, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame as UTF-8 CSV without its index, atomically; returns the path."""
    with atomic_output(path, "w", encoding="utf-8", newline="") as fh:
        table.to_csv(fh, index=False)
    return Path(path)


def ensure_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (and its parents) if needed; return it.

    Raises OutputError naming the folder when ``path`` is an existing file, when one of
    its parents is a file, or when it cannot be created (no permission, read-only disk).
    """
    folder = Path(path)
    if folder.is_dir():
        return folder
    if folder.exists() or folder.is_symlink():
        raise OutputError(folder, "exists and is not a folder; give a folder for the output files")
    for parent in folder.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(folder, f"cannot create the folder: {parent} is a file")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create the folder: {exc.strerror or exc}") from None
    return folder


def check_distinct_outputs(outputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Raise OutputError when two outputs (option name -> path; None = not asked for) are one file.

    Paths are compared after resolving ``..`` and links, so ``out.csv`` and ``./x/../out.csv``
    clash; the second write would silently replace the first.
    """
    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        key = Path(path).resolve()
        if key in seen:
            raise OutputError(path, f"{seen[key]} and {option} name the same file; give each its own path")
        seen[key] = option


@contextmanager
def cleanup_on_sigterm() -> Iterator[None]:
    """Within this block SIGTERM raises SystemExit(143), so temporary files are removed.

    Python's default SIGTERM action ends the process without running ``except`` or
    ``finally`` blocks, which would leave :func:`atomic_output`'s temporary file behind.
    The previous handler is restored on exit. Only an application entry point (the CLI)
    should use this: a signal handler is process-wide. Outside the main thread it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
