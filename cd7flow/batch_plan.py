"""What a batch will do: the FCS files of a study folder and what each one is.

Files are found by content (:func:`cd7flow.cli.find_fcs_files`: .fcs/.lmd or the ``FCSn.n``
magic, hidden files skipped). Each file's patient, tube, dates come from the manifest
(:func:`cd7flow.io.manifest.read_manifest`) when it lists the file, otherwise they are
inferred from TEXT keywords and shown to the user:

- patient: first word of $SRC, else of $SMNO / $FIL (split at space, '-' or '_');
- tube: TUBE NAME, else $SMNO, else $FIL, searched for screening / fmo / car / mrd;
- collection date: $DATE (the acquisition date: no sample age can be checked), time $BTIM;
- study day: "D<n>" / "Day <n>" in TUBE NAME (infusion date = $DATE - n days); specimen:
  second word of $SRC (e.g. "P02 BM").
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CD7FlowError

TUBE_WORDS = (("screen", "screening"), ("fmo", "fmo"), ("car", "car"), ("mrd", "mrd"))
MANIFEST_COLUMNS = ("file", "patient", "tube", "specimen", "collection_date", "infusion_date", "study_day",
                    "beads_per_test", "sample_volume_ul", "lymphocytes_per_ul", "wbc_per_ul", "anc_per_ul",
                    "platelets_per_ul", "morphology_blast_pct")


@dataclass
class FileMeta:
    """One input file: where it is (``rel`` to the study folder, posix) and what it is."""

    path: str
    rel: str
    patient: str | None = None
    tube: str | None = None
    specimen: str = ""
    collection_date: str | None = None  # ISO; from the manifest only (a keyword date is the acquisition date)
    acquisition_date: str | None = None
    study_day: int | None = None
    infusion_date: str | None = None
    source: str = "keywords"  # "manifest" or "keywords"
    inferred_from: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, float | None] = field(default_factory=dict)
    sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BatchPlan:
    folder: Path
    files: list[FileMeta]
    manifest: Path | None
    manifest_problems: list[str]
    skipped: list[str]

    def patients(self) -> dict[str, list[FileMeta]]:
        """Files of each patient with car or mrd tubes (a persistence timeline), in file order."""
        out: dict[str, list[FileMeta]] = {}
        for f in self.files:
            if f.patient:
                out.setdefault(f.patient, []).append(f)
        return {p: fs for p, fs in out.items() if any(f.tube in ("car", "mrd") and f.study_day is not None for f in fs)}


def _first_word(text: str) -> str | None:
    words = [w for w in re.split(r"[\s\-_]+", text.strip()) if w]
    return words[0] if words else None


def _tube_from(text: str) -> str | None:
    low = text.lower()
    for word, tube in TUBE_WORDS:
        if re.search(rf"(^|[^a-z]){word}", low):
            return tube
    return None


def infer_from_keywords(meta: FileMeta, keywords) -> None:
    """Fill ``meta`` from TEXT keywords (see the module doc); ``inferred_from`` names the source of each field."""
    from .io.manifest import parse_date

    src, smno, fil = (keywords.get(k, "") or "" for k in ("$SRC", "$SMNO", "$FIL"))
    tube_name = keywords.get("TUBE NAME", "") or ""
    for key, text in (("$SRC", src), ("$SMNO", smno), ("$FIL", fil or Path(meta.rel).name)):
        if text.strip():
            meta.patient, meta.inferred_from["patient"] = _first_word(text), key
            break
    for key, text in (("TUBE NAME", tube_name), ("$SMNO", smno), ("$FIL", fil or Path(meta.rel).name)):
        tube = _tube_from(text) if text.strip() else None
        if tube:
            meta.tube, meta.inferred_from["tube"] = tube, key
            break
    words = src.split()
    if len(words) > 1:
        meta.specimen, meta.inferred_from["specimen"] = words[1], "$SRC"
    try:
        acquired = parse_date(keywords.get("$DATE", "")) if keywords.get("$DATE", "").strip() else None
    except ValueError:
        acquired = None
    if acquired is not None:
        meta.acquisition_date = acquired.isoformat()
        meta.inferred_from["date"] = "$DATE" + (" $BTIM " + keywords["$BTIM"] if keywords.get("$BTIM") else "")
    m = re.search(r"\bd(?:ay)?\s*(\d+)\b", tube_name.lower())
    if m and acquired is not None and meta.tube in ("car", "mrd"):
        meta.study_day = int(m.group(1))
        meta.infusion_date = (acquired - dt.timedelta(days=meta.study_day)).isoformat()
        meta.inferred_from["study_day"] = "TUBE NAME"


def _read_keywords(path: str):
    """TEXT keywords of a file (None when it cannot be read: its QC step reports why)."""
    from .io.fcs_read import read_fcs

    try:
        return read_fcs(path).metadata
    except (CD7FlowError, OSError):
        return None


def make_plan(folder: str | os.PathLike, manifest: str | os.PathLike | None = None) -> BatchPlan:
    """Find the study's FCS files and say what each is (manifest first, then keywords)."""
    from .cli import _scan_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise CD7FlowError(f"{folder}: not a folder (give the study folder)")
    skipped: list[str] = []
    paths = _scan_folder(folder, skipped)
    rows_by_path: dict[Path, Any] = {}
    problems: list[str] = []
    if manifest is not None:
        from .io.manifest import read_manifest

        rows, bad = read_manifest(manifest)
        problems = [str(p) for p in bad]
        rows_by_path = {r.path.resolve(): r for r in rows}
    files = []
    for p in paths:
        meta = FileMeta(path=str(p.resolve()), rel=p.relative_to(folder).as_posix())
        row = rows_by_path.pop(p.resolve(), None)
        if row is not None:
            meta.source = "manifest"
            meta.patient, meta.tube, meta.specimen = row.patient, row.tube, row.specimen
            meta.collection_date = row.collection_date.isoformat()
            meta.infusion_date = row.infusion_date.isoformat() if row.infusion_date else None
            meta.study_day = row.study_day
            meta.numbers = {k: getattr(row, k) for k in MANIFEST_COLUMNS[7:]}
        else:
            keywords = _read_keywords(str(p))
            if keywords is not None:
                infer_from_keywords(meta, keywords)
        files.append(meta)
    for path, row in rows_by_path.items():
        problems.append(f"row {row.row} ({row.file}): listed in the manifest but not found in {folder}")
    return BatchPlan(folder, files, Path(manifest) if manifest else None, problems, skipped)


def manifest_csv(files: list[FileMeta]) -> str:
    """A manifest (the columns :mod:`cd7flow.io.manifest` reads) for ``files``, absolute paths."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    w.writeheader()
    for f in files:
        date = f.collection_date or f.acquisition_date or ""
        row = {"file": f.path, "patient": f.patient or "", "tube": f.tube or "", "specimen": f.specimen,
               "collection_date": date, "infusion_date": f.infusion_date or "",
               "study_day": "" if f.study_day is None else f.study_day}
        row.update({k: ("" if v is None else v) for k, v in f.numbers.items()})
        w.writerow(row)
    return buf.getvalue()
