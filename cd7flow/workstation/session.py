"""A viewer session in one JSON file: which files, their gates, the edits, the view.

The file (schema :data:`SCHEMA`, version :data:`SCHEMA_VERSION`) lists every open sample by
absolute path and the sha256 of its bytes; the gates as Gating-ML 2.0 text (the writer of
Gates > Save, so they can be cut out and used with ``cd7flow gate``), twice when some are
automated: as they are now and as the protocol fitted them, with per gate whether it is
automated and its source, the protocol's name, version and sha256, and the sample it was fitted
on (the viewer applies one tree to every open sample, like a FlowJo group); the log of manual
adjustments (who, when, old -> new); the view state (plots, axes, scales, zoom, compensation,
selection); and the study the sample browser showed. It is written atomically
(:func:`cd7flow.outputs.atomic_output`).

Reading is all or nothing: :func:`read_session` checks the layout, then :func:`load_session`
reads every data file, compares its sha256 with the one saved and parses the gates *before*
anything is handed to the viewer; a file that moved, disappeared or changed raises a
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
    """One open sample: its file by absolute path, the sha256 of its bytes, the data set number."""

    path: str
    sha256: str
    dataset: int = 0


@dataclass
class GateSet:
    """The viewer's gates. The viewer applies one tree to every open sample (like a FlowJo
    group), so a session holds one set, with the sample it was fitted on (``fitted_on``).

    ``gatingml``: the gates as they are now; ``fitted_gatingml``: the automated gates as the
    protocol fitted them (None when none is automated), so a manual adjustment stays one after
    reloading; ``entries``: per gate path "/a/b", whether it is automated and its source (e.g.
    "screening v1.5.0"); ``protocol``: name, version and sha256 of the fit.
    """

    gatingml: str
    entries: list[dict[str, Any]]
    fitted_gatingml: str | None = None
    fitted_on: int | None = None
    protocol: dict[str, str] | None = None


@dataclass
class Session:
    samples: list[SampleEntry]
    current: int = -1
    gates: GateSet | None = None
    edit_log: list[dict[str, Any]] = field(default_factory=list)
    view: dict[str, Any] = field(default_factory=dict)
    protocol: str | None = None  # the protocol chosen in the auto-gate panel (None: by tube)
    saved_at: str = ""
    cd7flow_version: str = ""
    study: list[str] = field(default_factory=list)  # manifest / folder the sample browser opened (absolute)
    file_protocols: dict[str, str] = field(default_factory=dict)  # file path -> protocol picked in the browser

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "saved_at": self.saved_at,
                "cd7flow_version": self.cd7flow_version, "current": self.current, "protocol": self.protocol,
                "study": list(self.study), "file_protocols": dict(self.file_protocols),
                "samples": [jsonable(s) for s in self.samples],
                "gates": None if self.gates is None else jsonable(self.gates),
                "edit_log": jsonable(self.edit_log), "view": jsonable(self.view)}


@dataclass
class LoadedSession:
    """A session read back and checked: the samples (in session order) and the parsed gates."""

    session: Session
    samples: list[Sample]
    gates: GatingStrategy | None = None
    fitted: GatingStrategy | None = None


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


def sample_entry(sample: Sample) -> SampleEntry:
    """The session record of one open sample; it must come from a file (path and sha256)."""
    if not sample.path:
        raise SessionError(None, f"{sample.name} was made in memory, not read from a file: a session cannot name it")
    sha = sample.sha256 or sample.compute_sha256()
    return SampleEntry(str(Path(sample.path).absolute()), sha, int(sample.dataset))


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
    log = data.get("edit_log") or []
    if not isinstance(log, list) or not all(isinstance(e, dict) for e in log):
        raise SessionError(path, "\"edit_log\" must be a list of objects")
    gates = _gate_set(path, data.get("gates"), len(samples))
    study = data.get("study") or []
    if not isinstance(study, list) or not all(isinstance(p, str) and os.path.isabs(p) for p in study):
        raise SessionError(path, "\"study\" must be a list of absolute paths")
    chosen = data.get("file_protocols") or {}
    if not isinstance(chosen, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in chosen.items()):
        raise SessionError(path, "\"file_protocols\" must map file paths to protocol names")
    return Session(samples, current, gates, log, view, protocol, str(data.get("saved_at", "")),
                   str(data.get("cd7flow_version", "")), study, chosen)


def _entry(path: Path, k: int, row: Any) -> SampleEntry:
    where = f"sample {k}"
    if not isinstance(row, dict):
        raise SessionError(path, f"{where} is not an object")
    for key in ("path", "sha256"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise SessionError(path, f"{where} has no {key!r}")
    if not os.path.isabs(row["path"]):
        raise SessionError(path, f"{where}: path {row['path']!r} is not absolute")
    sha = row["sha256"].lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise SessionError(path, f"{where}: sha256 {row['sha256']!r} is not 64 hex digits")
    dataset = row.get("dataset", 0)
    if not isinstance(dataset, int) or isinstance(dataset, bool) or dataset < 0:
        raise SessionError(path, f"{where}: bad dataset {dataset!r}")
    return SampleEntry(row["path"], sha, dataset)


def _gate_set(path: Path, data: Any, n_samples: int) -> GateSet | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("gatingml"), str):
        raise SessionError(path, "\"gates\" must be an object with the Gating-ML text under \"gatingml\"")
    entries = data.get("entries") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in entries):
        raise SessionError(path, "\"gates\".\"entries\" must be a list of objects with a \"path\"")
    fitted = data.get("fitted_gatingml")
    if fitted is not None and not isinstance(fitted, str):
        raise SessionError(path, "\"gates\".\"fitted_gatingml\" must be text or null")
    on = data.get("fitted_on")
    if on is not None and (not isinstance(on, int) or not 0 <= on < n_samples):
        raise SessionError(path, f"\"gates\".\"fitted_on\" is {on!r}, not a sample number")
    protocol = data.get("protocol")
    if protocol is not None and not isinstance(protocol, dict):
        raise SessionError(path, "\"gates\".\"protocol\" must be an object or null")
    return GateSet(data["gatingml"], entries, fitted, on, protocol)


def load_session(path: str | os.PathLike) -> LoadedSession:
    """Read a session and every file and gate set it names, checked; nothing is half-loaded.

    Raises :class:`SessionError`: for one bad data file it names that file ("missing (moved
    or deleted)", "has changed since the session was saved", unreadable); for several, the
    session file, with one clause per data file.
    """
    from ..io.fcs_read import read_fcs

    path = Path(path)
    session = read_session(path)
    samples: list[Sample] = []
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
                                         f"(sha256 now {sample.sha256[:12]}..., saved {entry.sha256[:12]}...)"))
            continue
        samples.append(sample)
    for where in session.study:
        if not Path(where).exists():
            problems.append((where, f"is missing (moved or deleted); the session {path} opened this study"))
    if len(problems) == 1:
        raise SessionError(*problems[0])
    if problems:
        raise SessionError(path, f"{len(problems)} files cannot be restored: "
                                 + "; ".join(f"{p} {why.split(';')[0]}" for p, why in problems))
    loaded = LoadedSession(session, samples)
    if session.gates is not None:
        loaded.gates = gatingml_to_strategy(session.gates.gatingml, f"{path} (gates)")
        if session.gates.fitted_gatingml is not None:
            loaded.fitted = gatingml_to_strategy(session.gates.fitted_gatingml, f"{path} (fitted gates)")
        known = {"/" + "/".join(path) for path, _, _ in _gates(loaded.gates.tree)}
        unknown = [e["path"] for e in session.gates.entries if e["path"] not in known]
        if unknown:
            raise SessionError(path, f"gate entries name populations its gates do not have: {', '.join(unknown)}")
    return loaded


# ---------------------------------------------------------------- the viewer model <-> a session
def _gates(tree) -> list[tuple[tuple[str, ...], Any, tuple[str, ...]]]:
    """(gate path, gate, parent path) of every gate of ``tree`` once: a quadrant gate by its own
    id (parent + gate id), not by its quadrants' populations."""
    seen: set[int] = set()
    out = []
    for pop in tree.populations():
        if id(pop.gate) not in seen:
            seen.add(id(pop.gate))
            out.append((pop.parent_path + (pop.gate.id,), pop.gate, pop.parent_path))
    return out


def capture_session(model, *, protocol: str | None = None, fitted_on: int | None = None,
                    fit_protocol: dict[str, str] | None = None) -> Session:
    """A :class:`Session` of a :class:`cd7flow.viewer.ViewerModel`: its samples, gates (now and
    as fitted), adjustment log and view. ``protocol``: the auto-gate panel's choice;
    ``fitted_on`` / ``fit_protocol``: the sample and protocol of the last automated fit."""
    import copy

    from gating.tree import GatingTree

    samples = [sample_entry(s) for s in model.samples]
    gates = None
    tree = model.tree()
    if len(tree):
        strategy = model.strategy()
        entries, fitted_tree, any_automated = [], GatingTree(), False
        for path, _gate, _parent in _gates(tree):
            e = model.entry_at(path)
            entries.append({"path": "/" + "/".join(path), "automated": bool(e.automated), "source": e.source})
            fitted = e.fitted if e.automated and e.fitted is not None else e.gate
            if fitted.id != e.gate.id:  # renamed since the fit: the fitted geometry under the new name
                fitted = copy.copy(fitted)
                fitted.id = e.gate.id
            fitted_tree.add(fitted, e.parent or None)
            any_automated |= bool(e.automated)
        fitted_gml = None
        if any_automated:
            fitted_gml = strategy_to_gatingml(GatingStrategy(fitted_tree, strategy.transforms, strategy.compensations,
                                                             strategy.derived))
        gates = GateSet(strategy_to_gatingml(strategy), entries, fitted_gml,
                        fitted_on if any_automated else None, fit_protocol if any_automated else None)
    return Session(samples, model.current_index, gates, list(model.edit_log), model.view_state(), protocol)


def restore_session(model, loaded: LoadedSession) -> None:
    """Put a checked session into an empty model: samples, gates (automated ones keep their
    fitted geometry, so a manual adjustment stays marked), adjustment log, view."""
    from gating.gates import Gate

    from ..viewer.history import GateEntry, gate_geometry

    if model.samples:
        raise CD7FlowError("a session opens in an empty viewer; close the open samples first")
    session = loaded.session
    for sample in loaded.samples:
        model.add_sample(sample, make_current=False)
    if loaded.samples:
        model.set_current(max(session.current, 0))
    if loaded.gates is not None:
        info = {e["path"]: e for e in session.gates.entries}
        as_fitted = {path: gate for path, gate, _ in _gates(loaded.fitted.tree)} if loaded.fitted is not None else {}
        entries = []
        for path, gate, parent in _gates(loaded.gates.tree):
            e = info.get("/" + "/".join(path), {})
            fitted: Gate | None = None
            if e.get("automated"):
                fitted = as_fitted.get(path, gate)
                if gate_geometry(fitted) == gate_geometry(gate):
                    fitted = gate  # unchanged since the fit (the model tells adjustments by identity)
            entries.append(GateEntry(gate, parent, bool(e.get("automated")), str(e.get("source", "")), fitted))
        model.restore_gates(tuple(entries), transforms=loaded.gates.transforms,
                            compensations=loaded.gates.compensations, edit_log=session.edit_log)
    model.restore_view_state(session.view)
