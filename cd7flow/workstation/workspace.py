"""The technician's workspace: which files are open, what each one is, and its QC status.

A workspace is opened from FCS files, a study folder or a manifest (:func:`open_workspace`).
Files are found and described exactly as ``cd7flow batch`` does (:mod:`cd7flow.batch_plan`):
folders are searched recursively by content (``FCSn.n`` magic, hidden files skipped); each
file's patient, tube, dates come from the manifest when it lists the file, otherwise from
TEXT keywords (``inferred_from`` says which). A folder holding a ``manifest.csv`` is opened
with it. :meth:`Workspace.groups` orders the files by patient, then tube (screening, fmo,
car, mrd, then anything unrecognised), then study day.

QC (:func:`cd7flow.assays.qc.qc_sample`, limits in ``protocols/qc.toml``) is computed per
file on demand, with the manifest's collection date as the batch does (the sample-age
check), and cached: :meth:`Workspace.qc` is safe to call from a worker thread (no shared
state but the cache dict, written once per file).

The protocol of each tube is the one its assay uses (screening / fmo -> ``screening``,
car / mrd -> ``car``, others -> ``leukocytes``) unless the user picks another
(:meth:`Workspace.set_protocol`); :func:`protocol_choices` lists the shipped ones.
Nothing here imports Qt.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batch_plan import FileMeta, infer_from_keywords, make_plan
from ..errors import CD7FlowError

TUBE_ORDER = ("screening", "fmo", "car", "mrd")
UNKNOWN = "(unknown)"
"""Group name of files whose patient or tube could not be found."""

TUBE_PROTOCOLS = {"screening": "screening", "fmo": "screening", "car": "car", "mrd": "car"}
"""Protocol per tube kind (the tube words of :data:`cd7flow.batch_plan.TUBE_WORDS`)."""
GENERIC_PROTOCOL = "leukocytes"
"""Protocol of a tube whose kind is not known: gates every leukocyte tube has."""
GATING_ASSAYS = ("screening", "car", "autogate")
MANIFEST_NAME = "manifest.csv"


def demo_manifest() -> Path | None:
    """The bundled demo study's manifest (``sample_fcs/manifest.csv`` beside the package), if present."""
    path = Path(__file__).resolve().parents[2] / "sample_fcs" / MANIFEST_NAME
    return path if path.is_file() else None


@dataclass(frozen=True)
class ProtocolChoice:
    name: str
    assay: str
    version: str


def protocol_choices() -> list[ProtocolChoice]:
    """The shipped protocols that fit gates (the QC limits file is not one), by name."""
    from ..protocol import list_protocols, load_protocol

    out = []
    for name in list_protocols():
        try:
            p = load_protocol(name)
        except CD7FlowError:  # a shipped file that is not a gating protocol is just not offered
            continue
        if p.assay in GATING_ASSAYS:
            out.append(ProtocolChoice(p.name, p.assay, p.version))
    return out


def qc_status_text(record: dict[str, Any]) -> str:
    """One line for a tooltip: the status and the checks that did not pass (or the read error)."""
    from ..assays.qc_table import problems_text

    problems = problems_text(record)
    return f"QC {record['status']}" + (f": {problems}" if problems else ": every check passed")


@dataclass
class Workspace:
    """Open files and what each is (see the module doc). ``files`` keeps the order they were found in."""

    files: list[FileMeta] = field(default_factory=list)
    manifest: Path | None = None
    folder: Path | None = None
    problems: list[str] = field(default_factory=list)  # manifest rows that could not be used
    skipped: list[str] = field(default_factory=list)  # unreadable folders, broken links
    protocol_override: dict[str, str] = field(default_factory=dict)  # path -> protocol name
    _qc: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    # ---- what is open -------------------------------------------------------
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def meta(self, path: str | os.PathLike) -> FileMeta:
        key = str(Path(path).resolve())
        for f in self.files:
            if f.path == key:
                return f
        raise CD7FlowError(f"{path}: not in the workspace")

    def extend(self, other: "Workspace") -> int:
        """Add ``other``'s files not already open (a manifest already set is kept); returns how many."""
        have = set(self.paths())
        new = [f for f in other.files if f.path not in have]
        self.files.extend(new)
        self.manifest = self.manifest or other.manifest
        self.folder = self.folder or other.folder
        self.problems += other.problems
        self.skipped += other.skipped
        return len(new)

    def groups(self) -> dict[str, dict[str, list[FileMeta]]]:
        """patient -> tube -> files, patients sorted (unknown last), tubes in :data:`TUBE_ORDER`,
        files by study day then name."""
        out: dict[str, dict[str, list[FileMeta]]] = {}
        for f in self.files:
            out.setdefault(f.patient or UNKNOWN, {}).setdefault(f.tube or UNKNOWN, []).append(f)

        def tube_rank(tube: str) -> tuple[int, str]:
            return (TUBE_ORDER.index(tube) if tube in TUBE_ORDER else len(TUBE_ORDER), tube)

        ordered = {}
        for patient in sorted(out, key=lambda p: (p == UNKNOWN, p)):
            tubes = out[patient]
            ordered[patient] = {t: sorted(tubes[t], key=lambda f: (f.study_day is None, f.study_day or 0, f.rel))
                                for t in sorted(tubes, key=tube_rank)}
        return ordered

    def patients_with_course(self) -> list[str]:
        """Patients with car or mrd tubes on a study day: those a persistence panel can show."""
        return sorted({f.patient for f in self.files
                       if f.patient and f.tube in ("car", "mrd") and f.study_day is not None})

    # ---- protocols ----------------------------------------------------------
    def protocol_for(self, path: str | os.PathLike) -> str:
        meta = self.meta(path)
        return self.protocol_override.get(meta.path) or TUBE_PROTOCOLS.get(meta.tube or "", GENERIC_PROTOCOL)

    def set_protocol(self, path: str | os.PathLike, name: str | None) -> None:
        """Use protocol ``name`` (shipped name or .toml path; checked by loading it) for one file; None resets."""
        meta = self.meta(path)
        if name is None:
            self.protocol_override.pop(meta.path, None)
            return
        from ..protocol import load_protocol

        load_protocol(name)  # a bad name or file is a ProtocolError now, not at the next auto-gate
        self.protocol_override[meta.path] = name

    # ---- QC -----------------------------------------------------------------
    def qc_cached(self, path: str | os.PathLike) -> dict[str, Any] | None:
        return self._qc.get(str(Path(path).resolve()))

    def qc(self, path: str | os.PathLike, protocol: str = "qc") -> dict[str, Any]:
        """The QC record of one file (cached); a file that cannot be read gets an ERROR record."""
        from ..assays.qc import qc_sample
        from ..assays.qc_table import error_record
        from ..io.fcs_read import read_fcs

        meta = self.meta(path)
        found = self._qc.get(meta.path)
        if found is not None:
            return found
        collected = dt.date.fromisoformat(meta.collection_date) if meta.collection_date else None
        try:
            rec = qc_sample(read_fcs(meta.path), protocol, collected)
        except (CD7FlowError, OSError, ValueError) as exc:
            rec = error_record(meta.rel, str(exc), meta.sha256)
        rec["file"] = meta.rel
        self._qc[meta.path] = rec
        return rec


def describe(path: str | os.PathLike, keywords: dict[str, str] | None) -> FileMeta:
    """A file opened on its own, described from its TEXT keywords (None: left undescribed)."""
    path = Path(path)
    meta = FileMeta(path=str(path.resolve()), rel=path.name)
    if keywords is not None:
        infer_from_keywords(meta, keywords)
    return meta


def _file_meta(path: Path) -> FileMeta:
    from ..io.fcs_read import read_fcs

    try:
        keywords = read_fcs(path).metadata
    except (CD7FlowError, OSError):
        keywords = None  # QC reports why it cannot be read
    return describe(path, keywords)


def open_workspace(paths: list[str | os.PathLike]) -> Workspace:
    """A workspace from FCS files, folders (with their ``manifest.csv`` if they hold one) and
    manifests (.csv), in the order given. A path that does not exist is a :class:`CD7FlowError`."""
    ws = Workspace()
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CD7FlowError(f"{p}: no such file or folder")
        if p.is_dir():
            manifest = p / MANIFEST_NAME
            ws.extend(_from_plan(p, manifest if manifest.is_file() else None))
        elif p.suffix.lower() == ".csv":
            ws.extend(_from_plan(p.parent, p))
        else:
            ws.extend(Workspace(files=[_file_meta(p)]))
    return ws


def _from_plan(folder: Path, manifest: Path | None) -> Workspace:
    plan = make_plan(folder, manifest)
    return Workspace(files=plan.files, manifest=plan.manifest.resolve() if plan.manifest else None,
                     folder=plan.folder.resolve(), problems=plan.manifest_problems, skipped=plan.skipped)
