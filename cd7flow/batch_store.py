"""A batch's saved state: one result JSON per finished task, provenance, and the append-only audit log.

A result is reused only when its ``key`` (input sha256s, protocol sha256s, tool version,
the sha256 of the code that computed it, and what the task was told about the file) equals the key of the task about to run, so
a re-run after an interruption redoes exactly the unfinished or changed work. Every file
is written with :func:`cd7flow.outputs.atomic_output`: a result exists whole or not at all.
"""
from __future__ import annotations

import datetime as dt
import functools
import getpass
import hashlib
import json
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .outputs import atomic_output

AUDIT_LOG = "audit.jsonl"


def safe_name(rel: str) -> str:
    """A flat file name for a path inside the study folder (``a/b.fcs`` -> ``a__b.fcs``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in rel.replace("/", "__")) or "_"


def write_json(path: Path, payload: Any) -> None:
    with atomic_output(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, allow_nan=False, sort_keys=True)
        fh.write("\n")


def load_result(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The saved result at ``path`` if it was made under ``key``, else None."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved.get("result") if saved.get("key") == key else None


def run_context(argv: list[str] | None = None) -> dict[str, Any]:
    """Who ran what, where and when (for provenance and the audit log)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return {"tool": "cd7flow", "tool_version": __version__, "code_sha256": code_sha256(), "command_line": " ".join(["cd7flow"] + (argv if argv is not None else sys.argv[1:])),
            "user": user, "host": socket.gethostname(), "python": platform.python_version(),
            "time": now()}


@functools.cache
def code_sha256() -> str:
    """sha256 over the installed cd7flow and gating sources (paths and bytes, in path order).

    Part of every resume key, so a result is recomputed after any code change, including one
    made without a version bump (a development checkout, a patched install).
    """
    import gating

    digest = hashlib.sha256()
    for package in (Path(__file__).parent, Path(gating.__file__).parent):
        for path in sorted(package.rglob("*")):
            if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
                digest.update(f"{package.name}/{path.relative_to(package).as_posix()}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def audit(out: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line to the output folder's audit log (never rewritten), flushed to disk."""
    line = json.dumps({"time": now(), **entry}, sort_keys=True, allow_nan=False) + "\n"
    fd = os.open(out / AUDIT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
