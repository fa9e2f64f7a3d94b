"""Study manifests: one CSV row per tube, naming its file, patient, tube type and dates.

Required columns: ``file, patient, tube, collection_date``. Optional: ``infusion_date,
study_day, specimen, beads_per_test, sample_volume_ul, lymphocytes_per_ul, wbc_per_ul,
anc_per_ul, platelets_per_ul, morphology_blast_pct`` (other columns are kept as given).
Tube values: screening, fmo, car, mrd (case-insensitive). File names carry no meaning:
a relative ``file`` is resolved against the manifest's folder. ``study_day`` (days from
infusion) is computed from the dates when absent. Dates: ISO ``YYYY-MM-DD`` (or
``DD-MON-YYYY`` as in FCS $DATE). Blood counts are per uL.

:func:`read_manifest` never stops at a bad row: it returns the good rows and one
:class:`RowProblem` per bad one (row = line number in the file, header = 1). A file
that cannot be read or lacks a required column raises :class:`ManifestError`.
"""
from __future__ import annotations

import csv
import datetime as dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FileProblem

REQUIRED = ("file", "patient", "tube", "collection_date")
NUMERIC = ("beads_per_test", "sample_volume_ul", "lymphocytes_per_ul", "wbc_per_ul", "anc_per_ul",
           "platelets_per_ul", "morphology_blast_pct")
OPTIONAL = ("infusion_date", "study_day", "specimen") + NUMERIC
TUBES = ("screening", "fmo", "car", "mrd")
_DATE_FORMATS = ("%Y-%m-%d", "%d-%b-%Y")


class ManifestError(FileProblem):
    """The manifest as a whole cannot be used (unreadable, not CSV, a required column missing)."""


@dataclass(frozen=True)
class RowProblem:
    """A manifest row that was skipped: its line number (header = 1), its file and why."""

    row: int
    file: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} ({self.file or 'no file'}): {self.reason}"


@dataclass
class ManifestRow:
    """One usable tube. ``path`` is absolute; ``study_day`` None only for tubes before any infusion date."""

    row: int
    file: str
    path: Path
    patient: str
    tube: str
    collection_date: dt.date
    infusion_date: dt.date | None = None
    study_day: int | None = None
    specimen: str = ""
    beads_per_test: float | None = None
    sample_volume_ul: float | None = None
    lymphocytes_per_ul: float | None = None
    wbc_per_ul: float | None = None
    anc_per_ul: float | None = None
    platelets_per_ul: float | None = None
    morphology_blast_pct: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def single_platform(self) -> bool:
        return self.beads_per_test is not None and self.sample_volume_ul is not None

    @property
    def dual_platform(self) -> bool:
        return self.lymphocytes_per_ul is not None or self.wbc_per_ul is not None


def parse_date(text: str) -> dt.date:
    """ISO date or DD-MON-YYYY; ValueError naming the text otherwise."""
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            continue
    raise ValueError(f"unparseable date {text!r} (use YYYY-MM-DD)")


def _number(text: str, name: str) -> float | None:
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and name in ("beads_per_test", "sample_volume_ul")):
        raise ValueError(f"{name} must be a {'positive' if name in ('beads_per_test', 'sample_volume_ul') else 'non-negative'} number, got {text!r}")
    if name == "morphology_blast_pct" and value > 100:
        raise ValueError(f"morphology_blast_pct must be 0-100, got {text!r}")
    return value


def _parse_row(line: int, rec: dict[str, str], folder: Path) -> ManifestRow:
    missing = [c for c in REQUIRED if not rec.get(c, "").strip()]
    if missing:
        raise ValueError(f"empty {', '.join(missing)}")
    tube = rec["tube"].strip().lower()
    if tube not in TUBES:
        raise ValueError(f"unknown tube {rec['tube']!r} (known: {', '.join(TUBES)})")
    collection = parse_date(rec["collection_date"])
    infusion = parse_date(rec["infusion_date"]) if rec.get("infusion_date", "").strip() else None
    day_text = rec.get("study_day", "").strip()
    if day_text:
        try:
            day = int(float(day_text))
        except ValueError:
            raise ValueError(f"study_day {day_text!r} is not a whole number of days") from None
        if float(day_text) != day:
            raise ValueError(f"study_day {day_text!r} is not a whole number of days")
    else:
        day = None if infusion is None else (collection - infusion).days
    if tube in ("car", "mrd") and day is None:
        raise ValueError("no study_day and no infusion_date to compute it from")
    numbers = {name: _number(rec.get(name, "") or "", name) for name in NUMERIC}
    path = Path(rec["file"].strip())
    row = ManifestRow(line, rec["file"].strip(), path if path.is_absolute() else folder / path,
                      rec["patient"].strip(), tube, collection, infusion, day, rec.get("specimen", "").strip(),
                      **numbers, extra={k: v for k, v in rec.items() if k not in REQUIRED + OPTIONAL and k})
    if (row.beads_per_test is None) != (row.sample_volume_ul is None):
        raise ValueError("beads_per_test and sample_volume_ul go together (one is missing)")
    if tube == "car" and not row.single_platform and not row.dual_platform:
        raise ValueError("car tube without beads (beads_per_test, sample_volume_ul) and without "
                         "lymphocytes_per_ul / wbc_per_ul for a dual-platform count")
    if not row.path.is_file():
        raise ValueError(f"file {row.path} does not exist")
    return row


def read_manifest(path: str | os.PathLike) -> tuple[list[ManifestRow], list[RowProblem]]:
    """Read a manifest CSV: (usable rows, skipped rows with reasons). See the module doc."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ManifestError(path, "empty manifest (needs a header row)")
    reader = csv.DictReader(lines)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    absent = [c for c in REQUIRED if c not in header]
    if absent:
        raise ManifestError(path, f"missing required column(s) {', '.join(absent)} (header: {', '.join(header)})")
    if len(set(header)) != len(header):
        raise ManifestError(path, f"duplicate column names in the header ({', '.join(header)})")
    reader.fieldnames = header
    rows: list[ManifestRow] = []
    problems: list[RowProblem] = []
    seen_file: dict[Path, int] = {}
    seen_visit: dict[tuple, int] = {}
    for k, rec in enumerate(reader, start=2):
        rec = {key: (val or "") for key, val in rec.items() if key is not None}
        if not any(v.strip() for v in rec.values()):
            continue  # blank line
        try:
            row = _parse_row(k, rec, path.parent)
        except ValueError as exc:
            problems.append(RowProblem(k, rec.get("file", "").strip(), str(exc)))
            continue
        key = row.path.resolve()
        visit = (row.patient, row.tube, row.collection_date, row.specimen.lower())
        if key in seen_file:
            problems.append(RowProblem(k, row.file, f"duplicate of row {seen_file[key]} (same file)"))
            continue
        if row.tube in ("car", "mrd") and visit in seen_visit:
            problems.append(RowProblem(k, row.file, f"duplicate of row {seen_visit[visit]} "
                                                    f"(same patient, tube, specimen and collection date)"))
            continue
        seen_file[key] = k
        seen_visit[visit] = k
        rows.append(row)
    return rows, problems
