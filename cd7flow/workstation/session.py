"""A viewer session in one JSON file: which files, their gates, the edits, the view.

The file (schema :data:`SCHEMA`, version :data:`SCHEMA_VERSION`) lists every open sample by
absolute path and the sha256 of its bytes, with its gates as Gating-ML 2.0 text (the same
writer as Gates > Save, so the gates can also be cut out and used with ``cd7flow gate``),
whether they are a protocol's automated gates (protocol name, version and sha256), the log of
manual adjustments, and the view state (axes, transforms, compensation, zoom...). It is
written atomically (:func:`cd7flow.outputs.atomic_output`).

Reading is all or nothing: :func:`read_session` checks the schema, then :func:`load_session`
reads every data file, compares its sha256 with the one saved and parses every gate set
*before* anything is handed to the viewer; a file that moved, disappeared or changed raises a
:class:`~cd7flow.errors.SessionError` naming it and saying what is wrong.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CD7FlowError, SessionError
from ..outputs import atomic_output
from ..sample import Sample
from ..strategy import GatingStrategy

SCHEMA = "cd7flow-session"
SCHEMA_VERSION = 1
"""Version of the JSON layout; a reader refuses a newer one (it cannot know what it would drop)."""


@dataclass
class SampleEntry:
    """One sample of a session. ``gatingml`` is None when the sample has no gates."""

    path: str
    sha256: str
    dataset: int = 0
    gatingml: str | None = None
    automated: bool = False
    protocol: dict[str, str] | None = None  # name, version, sha256 of an automated fit
    edit_log: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Session:
    samples: list[SampleEntry]
    current: int = -1
    view: dict[str, Any] = field(default_factory=dict)
    protocol: str | None = None  # the protocol chosen in the workstation, if any
    saved_at: str = ""
    cd7flow_version: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "saved_at": self.saved_at,
                "cd7flow_version": self.cd7flow_version, "current": self.current, "protocol": self.protocol,
                "view": jsonable(self.view), "samples": [jsonable(asdict(s)) for s in self.samples]}


@dataclass
class LoadedSample:
    """A session sample read back and checked: the data and its gates (None: no gates)."""

    entry: SampleEntry
    sample: Sample
    strategy: GatingStrategy | None


# ---------------------------------------------------------------- Gating-ML as text
def strategy_to_gatingml(strategy: GatingStrategy) -> str:
    """Gating-ML 2.0 text of ``strategy`` (the writer of Gates > Save, through a private
    temporary folder: the writer's only form is an atomic file)."""
    from ..io.gatingml import write_gatingml

    with tempfile.TemporaryDirectory(prefix="cd7flow-session-") as tmp:
        out = Path(tmp) / "gates.xml"
        write_gatingml(strategy, out)
        return out.read_text(encoding="utf-8")


def gatingml_to_strategy(text: str, where: str) -> GatingStrategy:
    """Parse Gating-ML text; a problem is a SessionError naming ``where`` (session and sample)."""
    from ..io.gatingml import read_gatingml

    with tempfile.TemporaryDirectory(prefix="cd7flow-session-") as tmp:
        path = Path(tmp) / "gates.xml"
        path.write_text(text, encoding="utf-8")
        try:
            return read_gatingml(path)
        except CD7FlowError as exc:
            problem = str(exc).replace(str(path), "gates")
            raise SessionError(where, f"its saved gates cannot be read: {problem}") from None


# ---------------------------------------------------------------- writing
def jsonable(value: Any) -> Any:
    """``value`` as JSON types: dataclasses and mappings as objects, tuples/arrays as lists,
    numpy scalars as numbers, non-finite floats as None (JSON has no NaN), paths as text."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise CD7FlowError(f"cannot save {type(value).__name__} in a session")


def sample_entry(sample: Sample, strategy: GatingStrategy | None, *, automated: bool = False,
                 protocol: dict[str, str] | None = None, edit_log=()) -> SampleEntry:
    """The session record of one open sample; it must come from a file (path and sha256)."""
    if not sample.path:
        raise SessionError(None, f"{sample.name} was made in memory, not read from a file: a session cannot name it")
    sha = sample.sha256 or sample.compute_sha256()
    gml = strategy_to_gatingml(strategy) if strategy is not None and len(strategy.tree) else None
    return SampleEntry(str(Path(sample.path).absolute()), sha, int(sample.dataset), gml, bool(automated and gml),
                       dict(protocol) if protocol else None, [jsonable(e) for e in edit_log])


def save_session(session: Session, path: str | os.PathLike) -> Path:
    """Write ``session`` as indented JSON, atomically; returns the path."""
    from .. import __version__

    session.saved_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    session.cd7flow_version = __version__
    text = json.dumps(session.to_json(), indent=1, allow_nan=False)
    with atomic_output(path, "w", encoding="utf-8", newline="\n", error_class=SessionError) as fh:
        fh.write(text + "\n")
    return Path(path)


# ---------------------------------------------------------------- reading
def read_session(path: str | os.PathLike) -> Session:
    """Read and check a session file's layout (not yet the data files it names)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SessionError(path, "no such session file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SessionError(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    except json.JSONDecodeError as exc:
        raise SessionError(path, f"not a session file: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SessionError(path, f"not a cd7flow session (its \"schema\" is not {SCHEMA!r})")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SessionError(path, f"bad schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise SessionError(path, f"written by a newer cd7flow (session schema {version}; this one reads up to "
                                 f"{SCHEMA_VERSION})")
    rows = data.get("samples")
    if not isinstance(rows, list):
        raise SessionError(path, "\"samples\" must be a list")
    samples = []
    for k, row in enumerate(rows, start=1):
        samples.append(_entry(path, k, row))
    current = data.get("current", -1)
    if not isinstance(current, int) or not -1 <= current < max(len(samples), 1) or (samples and current < 0):
        raise SessionError(path, f"\"current\" is {current!r}, not a sample number 0..{len(samples) - 1}")
    view = data.get("view") or {}
    if not isinstance(view, dict):
        raise SessionError(path, "\"view\" must be an object")
    protocol = data.get("protocol")
    if protocol is not None and not isinstance(protocol, str):
        raise SessionError(path, "\"protocol\" must be a protocol name or null")
    return Session(samples, current, view, protocol, str(data.get("saved_at", "")), str(data.get("cd7flow_version", "")))


def _entry(path: Path, k: int, row: Any) -> SampleEntry:
    where = f"sample {k}"
    if not isinstance(row, dict):
        raise SessionError(path, f"{where} is not an object")
    for key, kind in (("path", str), ("sha256", str)):
        if not isinstance(row.get(key), kind) or not row[key]:
            raise SessionError(path, f"{where} has no {key!r}")
    if not os.path.isabs(row["path"]):
        raise SessionError(path, f"{where}: path {row['path']!r} is not absolute")
    sha = row["sha256"].lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise SessionError(path, f"{where}: sha256 {row['sha256']!r} is not 64 hex digits")
    gml = row.get("gatingml")
    if gml is not None and not isinstance(gml, str):
        raise SessionError(path, f"{where}: \"gatingml\" must be text")
    log = row.get("edit_log") or []
    if not isinstance(log, list) or not all(isinstance(e, dict) for e in log):
        raise SessionError(path, f"{where}: \"edit_log\" must be a list of objects")
    protocol = row.get("protocol")
    if protocol is not None and not isinstance(protocol, dict):
        raise SessionError(path, f"{where}: \"protocol\" must be an object")
    dataset = row.get("dataset", 0)
    if not isinstance(dataset, int) or dataset < 0:
        raise SessionError(path, f"{where}: bad dataset {dataset!r}")
    return SampleEntry(row["path"], sha, dataset, gml, bool(row.get("automated")), protocol, log)


def load_session(path: str | os.PathLike) -> tuple[Session, list[LoadedSample]]:
    """Read a session and every file and gate set it names, checked; nothing is half-loaded.

    Raises :class:`SessionError`: for one bad data file it names that file ("moved or
    deleted", "changed since the session was saved", unreadable); for several, the session
    file, with one clause per data file.
    """
    from ..io.fcs_read import read_fcs

    path = Path(path)
    session = read_session(path)
    loaded: list[LoadedSample] = []
    problems: list[tuple[str, str]] = []
    for entry in session.samples:
        data = Path(entry.path)
        if not data.is_file():
            why = "is not a file" if data.exists() else "is missing (moved or deleted)"
            problems.append((entry.path, f"{why}; the session {path} needs it"))
            continue
        try:
            sample = read_fcs(data, dataset=entry.dataset)
        except CD7FlowError as exc:
            problems.append((entry.path, f"cannot be read ({exc}); the session {path} needs it"))
            continue
        if sample.sha256 != entry.sha256:
            problems.append((entry.path, f"has changed since the session {path} was saved "
                                         f"(sha256 {sample.sha256[:12]}..., saved {entry.sha256[:12]}...)"))
            continue
        strategy = None
        if entry.gatingml is not None:
            strategy = gatingml_to_strategy(entry.gatingml, f"{path} ({data.name})")
        loaded.append(LoadedSample(entry, sample, strategy))
    if len(problems) == 1:
        raise SessionError(*problems[0])
    if problems:
        raise SessionError(path, f"{len(problems)} data files cannot be restored: "
                                 + "; ".join(f"{p}: {why.split(';')[0]}" for p, why in problems))
    return session, loaded
