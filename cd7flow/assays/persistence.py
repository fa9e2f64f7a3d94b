"""CAR-T expansion and persistence over a study: manifest -> per-tube records -> per-patient kinetics.

:func:`run_persistence` reads the manifest (:mod:`cd7flow.io.manifest`), analyses every car
and mrd tube one file at a time (:mod:`.car_tube`; memory bounded by one file), and returns
a :class:`PersistenceResult` with tidy records (``samples``, ``kinetics``, also as pandas
DataFrames), the skipped rows with reasons, and the inputs' sha256. Per patient: CAR
threshold reference (day-0 tube, else in-tube), kinetics (:mod:`.kinetics`), antigen escape
(:func:`antigen_escape`) and the response helper (:func:`classify_response`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CD7FlowError
from ..io.fcs_write import file_sha256 as sha256_file
from ..io.manifest import ManifestRow, RowProblem, read_manifest
from ..protocol import Protocol, load_protocol
from .car_tube import analyse_tube, car_settings
from .kinetics import patient_kinetics
from .protocol_gating import NotEvaluable

SAMPLE_COLUMNS = (
    "file", "patient", "day", "tube", "specimen", "collection_date", "events", "bead_events", "bead_cv_pct",
    "leukocytes_events", "lymphocytes_events", "cd3_events", "car_events", "car_pct_of_cd3", "car_per_ul",
    "car_per_ul_low", "car_per_ul_high", "cd3_per_ul", "cd3_per_ul_low", "cd3_per_ul_high",
    "cd3_cd7pos_events", "cd3_cd7pos_per_ul", "cd3_cd7pos_per_ul_low", "cd3_cd7pos_per_ul_high",
    "cd3_cd7neg_events", "cd3_cd7neg_per_ul", "cd3_cd7neg_per_ul_low", "cd3_cd7neg_per_ul_high",
    "nk_events", "nk_per_ul", "nk_per_ul_low", "nk_per_ul_high", "blast_events", "blast_per_ul",
    "blast_pct_of_cd45", "blast_pct_low", "blast_pct_high", "blast_cd7_pos_pct", "blast_cd7_pos_low",
    "blast_cd7_pos_high", "mrd_status", "morphology_blast_pct", "counting", "car_threshold",
    "car_threshold_method", "car_reference_file", "time_loss_pct", "flags", "sha256",
)
KINETICS_COLUMNS = (
    "patient", "cmax_per_ul", "tmax_day", "auc_window", "auc", "auc_complete", "tlast_day", "persistence",
    "persistence_day", "last_visit_day", "fold_expansion", "antigen_escape", "escape_evidence",
    "screening_cd7_pos_pct", "response", "response_rule_set", "response_day", "car_threshold_method",
)


@dataclass
class PersistenceResult:
    """Everything :func:`run_persistence` found (records are plain dicts, JSON-ready)."""

    protocol: Protocol
    samples: list[dict[str, Any]] = field(default_factory=list)
    kinetics: list[dict[str, Any]] = field(default_factory=list)
    courses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    problems: list[RowProblem] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def samples_frame(self):
        import pandas as pd

        return pd.DataFrame(self.samples, columns=list(SAMPLE_COLUMNS))

    def kinetics_frame(self):
        import pandas as pd

        return pd.DataFrame(self.kinetics, columns=list(KINETICS_COLUMNS))

    def provenance(self) -> dict[str, Any]:
        return {"tool": "cd7flow", "tool_version": __version__, **self.protocol.provenance(), "inputs": self.inputs}


def _read(row: ManifestRow):
    from ..io.fcs_read import read_fcs

    return read_fcs(row.path)


def run_persistence(manifest: str | os.PathLike, protocol: Protocol | str = "car", progress=None,
                    patients=None) -> PersistenceResult:
    """Analyse a study manifest (see the module doc). ``progress(message)`` is called per file;
    ``patients`` (ids) limits the analysis to those patients (each patient's result depends only
    on its own rows)."""
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    S = car_settings(proto)
    rows, problems = read_manifest(manifest)
    res = PersistenceResult(proto, problems=list(problems))
    res.inputs[str(Path(manifest))] = sha256_file(manifest)
    say = progress or (lambda _msg: None)
    wanted = None if patients is None else set(patients)
    by_patient: dict[str, list[ManifestRow]] = {}
    for row in rows:
        if wanted is None or row.patient in wanted:
            by_patient.setdefault(row.patient, []).append(row)
    for pid, prow in by_patient.items():
        screening = _screening_cd7(pid, prow, S, res, say)
        records, todo = [], sorted((r for r in prow if r.tube in ("car", "mrd")), key=lambda r: (r.study_day, r.row))
        threshold = ref_events = ref_file = None
        ref = _reference_row(prow, S)
        if ref is not None:  # the day-0 tube first: its lymphocytes set the patient's CAR threshold
            say(f"{pid} day {ref.study_day} car (CAR reference): {ref.file}")
            rec = _analyse_row(ref, proto, S, res, None, None, ref.file, as_reference=True)
            if rec is not None:
                threshold, ref_events, ref_file = rec["car_threshold"], rec["car_reference_events"], ref.file
                records.append(rec)
                todo.remove(ref)
            else:  # analysed again below as an ordinary tube (and reported there if it fails again)
                res.notes.append(f"{pid}: day-0 reference {ref.file} unusable ({res.problems.pop().reason}); "
                                 "in-tube CAR thresholds used")
        for row in todo:
            say(f"{pid} day {row.study_day} {row.tube}: {row.file}")
            rec = _analyse_row(row, proto, S, res, threshold if row.tube == "car" else None, ref_events, ref_file)
            if rec is not None:
                records.append(rec)
        records.sort(key=lambda r: (r["day"], r["tube"]))
        res.samples.extend(records)
        res.courses[pid] = [{k: r[k] for k in ("day", "tube", "car_per_ul", "car_per_ul_low", "car_per_ul_high",
                                                "car_events", "cd3_cd7pos_per_ul", "cd3_cd7neg_per_ul", "flags")}
                            for r in records if r["tube"] == "car"]
        kin = patient_kinetics([r for r in records if r["tube"] == "car"], S)
        escape, evidence = antigen_escape(screening, records, S)
        resp = classify_response(prow, records, S)
        w = S["kinetics"]
        res.kinetics.append({
            "patient": pid, **kin, "auc_window": f"{w['window_start_day']}-{w['window_end_day']}",
            "antigen_escape": escape, "escape_evidence": evidence,
            "screening_cd7_pos_pct": None if screening is None else screening.get("cd7_pos_pct"),
            **resp, "car_threshold_method": "day0" if threshold is not None else "in_tube",
        })
    return res


def lloq_per_ul(res: PersistenceResult) -> float | None:
    """The LLOQ in cells/uL at the median single-platform bead ratio of ``res``'s tubes (for plots)."""
    lloq = car_settings(res.protocol)["limits"]["lloq_events"]
    ratios = sorted(r["car_per_ul"] / r["car_events"] for r in res.samples
                    if r.get("counting") == "single_platform" and r.get("car_events"))
    return lloq * ratios[len(ratios) // 2] if ratios else None


def _analyse_row(row: ManifestRow, proto, S, res: PersistenceResult, threshold, ref_events, ref_file,
                 as_reference: bool = False):
    try:
        res.inputs[str(row.path)] = sha256_file(row.path)
        sample = _read(row)
        rec = analyse_tube(sample, proto, car_threshold=threshold, reference_events=ref_events, as_reference=as_reference,
                           beads_per_test=row.beads_per_test, sample_volume_ul=row.sample_volume_ul,
                           lymphocytes_per_ul=row.lymphocytes_per_ul, wbc_per_ul=row.wbc_per_ul)
    except NotEvaluable as exc:
        res.problems.append(RowProblem(row.row, row.file, f"not evaluable: {exc}"))
        return None
    except (CD7FlowError, OSError) as exc:
        res.problems.append(RowProblem(row.row, row.file, f"unreadable: {exc}"))
        return None
    del sample  # one file in memory at a time
    if row.tube == "car" and rec["counting"] == "none":
        rec["flags"].append("NO_ABSOLUTE_COUNT")
        res.problems.append(RowProblem(row.row, row.file, f"car tube: {rec['bead_events']} counting beads found in "
                                       "the data and no lymphocytes_per_ul / wbc_per_ul: no per-uL values "
                                       "(its events are kept in samples.csv)"))
    rec.update(file=row.file, patient=row.patient, day=row.study_day, tube=row.tube, specimen=row.specimen,
               collection_date=row.collection_date.isoformat(), morphology_blast_pct=row.morphology_blast_pct,
               car_reference_file=ref_file if rec["car_threshold_method"] == "day0" else row.file,
               sha256=res.inputs[str(row.path)])
    rec["mrd_status"] = _mrd_status(rec, S) if row.tube == "mrd" else None
    rec["flags"] = ";".join(rec["flags"])
    return rec


def _reference_row(prow: list[ManifestRow], S: dict) -> ManifestRow | None:
    """The latest car tube on or before ``max_reference_day`` (the pre-infusion / day-0 tube)."""
    refs = [r for r in prow if r.tube == "car" and r.study_day <= S["threshold"]["max_reference_day"]]
    return max(refs, key=lambda r: (r.study_day, r.row)) if refs else None


def _screening_cd7(pid, prow, S, res, say) -> dict | None:
    """The patient's screening result (latest screening tube): % CD7+ of blasts and its verdict."""
    from .screening import screen_file

    rows = [r for r in prow if r.tube == "screening"]
    if not rows:
        return None
    row = max(rows, key=lambda r: (r.collection_date, r.row))
    say(f"{pid}: screening {row.file}")
    try:
        res.inputs[str(row.path)] = sha256_file(row.path)
        rec = screen_file(row.path, S["escape"]["screening_protocol"])
    except (CD7FlowError, OSError) as exc:
        res.problems.append(RowProblem(row.row, row.file, f"unreadable: {exc}"))
        return None
    return {"file": row.file, "cd7_pos_pct": rec.get("cd7_pos_pct"), "blasts": rec.get("blasts"),
            "verdict": rec.get("verdict"), "morphology_blast_pct": row.morphology_blast_pct}


def _mrd_status(rec: dict, S: dict) -> str:
    m = S["mrd"]
    if rec["blast_events"] >= m["min_blast_events"]:
        return "positive"
    if (rec["leukocytes_events"] or 0) >= m["min_cd45_events"] and (rec["blast_pct_high"] or 0) < m["negative_below_pct"]:
        return "negative"
    return "indeterminate"


def antigen_escape(screening: dict | None, records: list[dict], S: dict) -> tuple[bool | None, list[dict]]:
    """(flag, evidence): blasts after the infusion whose 95% upper bound of % CD7+ is below the
    positivity cut-off, with >= min_blast_events blasts, while screening blasts were CD7-positive.

    None when there is no screening result to compare with. Evidence lists every post-infusion
    tube with enough blasts (day, tube, blast events, % CD7+ and its bound, negative or not).
    """
    e = S["escape"]
    evidence = []
    for r in records:
        if r["day"] > 0 and r["blast_events"] >= e["min_blast_events"]:
            negative = r["blast_cd7_pos_high"] is not None and r["blast_cd7_pos_high"] < e["positive_pct"]
            evidence.append({"day": r["day"], "tube": r["tube"], "file": r["file"], "blast_events": r["blast_events"],
                             "blast_cd7_pos_pct": r["blast_cd7_pos_pct"], "blast_cd7_pos_high": r["blast_cd7_pos_high"],
                             "cd7_negative": negative})
    if screening is None or screening.get("cd7_pos_pct") is None:
        return None, evidence
    screened_pos = screening["cd7_pos_pct"] >= e["positive_pct"]
    return bool(screened_pos and any(x["cd7_negative"] for x in evidence)), evidence


def classify_response(prow: list[ManifestRow], records: list[dict], S: dict) -> dict[str, Any]:
    """Response from the latest post-infusion row with morphology blast %, ANC and platelets.

    CR: blasts < cr_blast_below_pct with ANC and platelets recovered; CRi: one recovered;
    MLFS: neither; PR: blasts within [cr, pr_max] and >= pr_min_fall_pct below the pre-treatment
    morphology value; otherwise no response. Missing inputs: ``not_assessable``.
    """
    r = S["response"]
    out = {"response": "not_assessable", "response_rule_set": r["rule_set"], "response_day": None}
    post = [x for x in prow if (x.study_day or 0) > 0 and x.morphology_blast_pct is not None]
    if not post:
        return out
    row = max(post, key=lambda x: (x.study_day, x.row))
    out["response_day"] = row.study_day
    if row.anc_per_ul is None or row.platelets_per_ul is None:
        return out
    blasts = row.morphology_blast_pct
    if blasts < r["cr_blast_below_pct"]:
        recovered = (row.anc_per_ul >= r["anc_min_per_ul"]) + (row.platelets_per_ul >= r["platelets_min_per_ul"])
        out["response"] = ("MLFS", "CRi", "CR")[recovered]
        return out
    base = [x.morphology_blast_pct for x in prow if (x.study_day is None or x.study_day <= 0)
            and x.morphology_blast_pct is not None]
    if blasts <= r["pr_blast_max_pct"]:
        if not base:
            return out
        fall = 100 * (1 - blasts / base[-1]) if base[-1] > 0 else 0.0
        out["response"] = "PR" if fall >= r["pr_min_fall_pct"] else "no_response"
        return out
    out["response"] = "no_response"
    return out


__all__ = ["run_persistence", "PersistenceResult", "lloq_per_ul", "antigen_escape", "classify_response", "SAMPLE_COLUMNS",
           "KINETICS_COLUMNS"]
