"""Atomic output files: write under a temporary name in the target folder, then rename.

A reader (or a crash) never sees a half-written FCS, CSV, JSON, XML or PNG file, and
an existing file is replaced only once the new one is complete.
(``gating.stats`` keeps its own copy of this because ``gating`` may not import ``cd7flow``.)
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import FileProblem


class OutputError(FileProblem):
    """An output file cannot be written (missing folder, no permission, disk full)."""


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise error_class(path, f"cannot write in {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise error_class(path, f"cannot write: {exc.strerror or exc}") from exc
        raise
