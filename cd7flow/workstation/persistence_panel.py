"""What the viewer's persistence panel shows for one patient (Qt-free).

:func:`patient_course` runs exactly what ``cd7flow persistence`` runs
(:func:`cd7flow.assays.persistence.run_persistence` with the ``car`` protocol, limited to the
patient: each patient's result depends only on its own rows), so every value equals the
command's ``persistence.json`` for that patient. From a manifest it reads that manifest; from
files described by keywords it writes a one-patient manifest first, as ``cd7flow batch`` does.
It reads every car/mrd tube of the patient (and the screening tube, for antigen escape): run
it off the UI thread.

The result holds the car-tube course (day, CAR+ cells/uL with its 95% interval, CD3+CD7+ and
CD3+CD7- T cells/uL, flags), the LLOQ in cells/uL (the LLOQ events at the patient's median
bead ratio, the line the command's PNG draws), the kinetics (Cmax, Tmax, AUC, Tlast,
persistence, fold expansion), the antigen-escape flag with its evidence, and the rows of
the kinetics table.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..assays.persistence import lloq_per_ul, run_persistence
from ..batch_plan import FileMeta, manifest_csv
from ..errors import CD7FlowError
from ..protocol import Protocol


VISIT_COLUMNS = ("day", "tube", "CAR+ /uL (95% CI)", "CD3+CD7+ /uL", "CD3+CD7- /uL", "blasts (% CD7+)", "MRD",
                 "flags")


@dataclass
class PatientCourse:
    patient: str
    course: list[dict[str, Any]]  # car tubes by day (the command's ``courses[patient]``)
    samples: list[dict[str, Any]]  # car and mrd tube records (``samples.csv`` rows)
    kinetics: dict[str, Any] | None  # the patient's ``kinetics.csv`` row
    lloq_per_ul: float | None
    problems: list[str] = field(default_factory=list)  # rows skipped, with their reason
    notes: list[str] = field(default_factory=list)

    @property
    def antigen_escape(self) -> bool | None:
        return None if self.kinetics is None else self.kinetics.get("antigen_escape")

    def visit_rows(self) -> list[tuple[str, ...]]:
        """One line per car / mrd tube, by day (columns :data:`VISIT_COLUMNS`)."""

        def per_ul(r: dict, key: str) -> str:
            v = r.get(f"{key}_per_ul")
            return "-" if v is None else f"{v:,.1f}"

        out = []
        for r in sorted(self.samples, key=lambda r: (r["day"], r["tube"])):
            car = per_ul(r, "car")
            if r.get("car_per_ul") is not None:
                car += f" ({r['car_per_ul_low']:,.1f}-{r['car_per_ul_high']:,.1f})"
            blasts = f"{r.get('blast_events') or 0:,}"
            if r.get("blast_cd7_pos_pct") is not None:
                blasts += f" ({r['blast_cd7_pos_pct']:.1f}% CD7+)"
            out.append((str(r["day"]), r["tube"], car, per_ul(r, "cd3_cd7pos"), per_ul(r, "cd3_cd7neg"), blasts,
                        r.get("mrd_status") or "", r.get("flags") or ""))
        return out

    def table_rows(self) -> list[tuple[str, str]]:
        """(parameter, value) lines of the kinetics table."""
        k = self.kinetics
        if k is None:
            return [("Kinetics", "no car tube could be analysed")]

        def num(key: str, fmt: str = "{:,.1f}", unit: str = "") -> str:
            v = k.get(key)
            return "-" if v is None else fmt.format(v) + unit

        escape = k.get("antigen_escape")
        negative = [e for e in k.get("escape_evidence") or [] if e.get("cd7_negative")]
        escape_text = ("not assessable (no screening result)" if escape is None else
                       "YES: " + "; ".join(f"day {e['day']} {e['tube']}: {e['blast_events']} blasts, "
                                           f"{e['blast_cd7_pos_pct']:.1f}% CD7+ (upper 95% {e['blast_cd7_pos_high']:.1f}%)"
                                           for e in negative) if escape else "no")
        return [
            ("Cmax", num("cmax_per_ul", unit=" cells/uL")),
            ("Tmax", num("tmax_day", "day {:g}")),
            (f"AUC {k.get('auc_window')} d", num("auc", "{:,.0f}", " cells/uL x d") + ("" if k.get("auc_complete") else
                                                                               " (incomplete window)")),
            ("Tlast (>= LLOQ)", num("tlast_day", "day {:g}")),
            ("Persistence", "-" if k.get("persistence") is None else
             ("yes" if k["persistence"] else "no") + f" (last detectable day {num('persistence_day', '{:g}')})"),
            ("Last visit", num("last_visit_day", "day {:g}")),
            ("Fold expansion", num("fold_expansion", "{:,.3g}")),
            ("Screening % CD7+", num("screening_cd7_pos_pct", "{:.1f}%")),
            ("Antigen escape", escape_text),
            ("Response", f"{k.get('response')} ({k.get('response_rule_set')})"),
            ("CAR threshold", k.get("car_threshold_method") or "-"),
        ]


def patient_course(patient: str, manifest: str | os.PathLike | None = None, files: Sequence[FileMeta] = (),
                   protocol: Protocol | str = "car", progress: Callable[[str], None] | None = None) -> PatientCourse:
    """The patient's persistence (see the module doc): from ``manifest`` when given, else from
    ``files`` (the workspace's descriptions; only the patient's are used)."""
    rel_of: dict[str, str] = {}
    if manifest is not None:
        res = run_persistence(manifest, protocol, progress=progress, patients=[patient])
    else:
        mine = [f for f in files if f.patient == patient]
        if not mine:
            raise CD7FlowError(f"no file of patient {patient} is open")
        rel_of = {f.path: f.rel for f in mine}  # the temporary manifest names files by absolute path
        with tempfile.TemporaryDirectory(prefix="cd7flow-panel-") as tmp:
            path = Path(tmp, "manifest.csv")
            path.write_text(manifest_csv(mine), encoding="utf-8")
            res = run_persistence(path, protocol, progress=progress, patients=[patient])
    kinetics = next((k for k in res.kinetics if k["patient"] == patient), None)
    samples = [_named(r, rel_of) for r in res.samples if r["patient"] == patient]
    if kinetics is not None:
        kinetics = {**kinetics, "escape_evidence": [_named(e, rel_of) for e in kinetics.get("escape_evidence") or []]}
    # rows of a temporary manifest mean nothing to the user: name the file alone
    problems = [f"{rel_of.get(p.file, p.file)}: {p.reason}" if rel_of else str(p) for p in res.problems]
    return PatientCourse(patient, res.courses.get(patient, []), samples, kinetics, lloq_per_ul(res), problems,
                         list(res.notes))


def _named(record: dict[str, Any], rel_of: dict[str, str]) -> dict[str, Any]:
    """``record`` with its file names as the workspace shows them (relative to the study folder)."""
    return {k: rel_of.get(v, v) if k in ("file", "car_reference_file") and isinstance(v, str) else v
            for k, v in record.items()}
