"""``cd7flow batch``: QC on every file of a study folder, screening on screening tubes, persistence per patient.

:func:`run_batch` plans (:mod:`.batch_plan`: files by content, manifest or keywords),
reuses finished results (:mod:`.batch_store`: keyed by input sha256, protocol sha256 and
tool version), runs the rest (:mod:`.batch_run`: here, a process pool or a Dask cluster;
:mod:`.batch_tasks`), then writes the tables (CSV, Excel), ``batch.json`` with provenance,
the HTML and PDF reports (:mod:`cd7flow.report`) and an audit log line. Inputs are only
read. A file that cannot be read is reported (file, stage, reason) and the rest complete.

Output folder::

    results/files/*.json, results/patients/*.json   one finished task each (resume state)
    plots/*.png                                      screening and kinetics plots
    qc.csv, screening.csv, persistence_samples.csv, persistence_kinetics.csv, errors.csv
    results.xlsx, batch.json, report.html, report.pdf, audit.jsonl (append-only)
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .batch_plan import BatchPlan, FileMeta, make_plan
from .batch_store import audit, code_sha256, load_result, run_context, safe_name, write_json
from .errors import CD7FlowError
from .outputs import atomic_output, ensure_output_dir

PROTOCOL_NAMES = {"qc": "qc", "screening": "screening", "car": "car"}


@dataclass
class BatchOutcome:
    """What a finished batch produced; ``errors`` lists (file or patient, stage, reason)."""

    out: Path
    files: list[dict[str, Any]] = field(default_factory=list)
    patients: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    reused: int = 0
    ran: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


def resolve_protocols(protocol_dir: str | os.PathLike | None) -> dict[str, dict[str, str]]:
    """Path and provenance of the QC, screening and car protocols (``protocol_dir/NAME.toml`` first)."""
    from .assays.qc_protocol import load_qc_protocol, qc_protocol_path
    from .protocol import PROTOCOL_DIR, load_protocol

    if protocol_dir is not None and not Path(protocol_dir).is_dir():
        raise CD7FlowError(f"{protocol_dir}: --protocol-dir is not a folder")
    out = {}
    for role, name in PROTOCOL_NAMES.items():
        if role == "qc":
            path = qc_protocol_path(name, protocol_dir)
            prov = load_qc_protocol(path).provenance()
        else:
            local = Path(protocol_dir, f"{name}.toml") if protocol_dir else None
            path = local if local is not None and local.is_file() else PROTOCOL_DIR / f"{name}.toml"
            prov = load_protocol(path).provenance()
        out[role] = {"path": str(path), **{k: v for k, v in prov.items() if k != "protocol_path"}}
    return out


def _sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _link_fmo(files: list[FileMeta]) -> dict[str, FileMeta]:
    """Each screening tube's FMO tube: the same patient's fmo tube of the same date."""
    fmo = {(f.patient, f.collection_date or f.acquisition_date): f for f in files if f.tube == "fmo" and f.patient}
    return {f.rel: fmo[key] for f in files if f.tube == "screening"
            and (key := (f.patient, f.collection_date or f.acquisition_date)) in fmo}


def run_batch(folder: str | os.PathLike, out: str | os.PathLike, *, manifest: str | os.PathLike | None = None,
              jobs: int | None = None, scheduler: str | None = None, protocol_dir: str | os.PathLike | None = None,
              argv: list[str] | None = None, show_progress: bool = True, say=None) -> BatchOutcome:
    """Run a batch (see the module doc); ``say(text)`` receives the plan and notes for the user."""
    from .batch_run import default_jobs, run_tasks
    from .batch_tasks import file_task, patient_task

    say = say or (lambda _text: None)
    protocols = resolve_protocols(protocol_dir)
    plan = make_plan(folder, manifest)
    if not plan.files:
        raise CD7FlowError(f"no FCS files found in {folder}")
    out = ensure_output_dir(out)  # only once the inputs make sense: a typo leaves no empty folder
    context = run_context(argv)
    audit(out, {"event": "start", **context, "folder": str(Path(folder).resolve()),
                "protocols": {k: {x: v[x] for x in ("protocol", "protocol_version", "protocol_sha256")} for k, v in protocols.items()}})
    _tell_plan(plan, say)
    if any(f.source == "keywords" for f in plan.files):
        from .batch_plan import manifest_csv

        with atomic_output(out / "manifest_inferred.csv", "w", encoding="utf-8", newline="") as fh:
            fh.write(manifest_csv([f for f in plan.files if f.source == "keywords"]))
    for f in plan.files:
        f.sha256 = _sha256(f.path)
    fmo = _link_fmo(plan.files)
    config = {role: p["path"] for role, p in protocols.items()}
    shas = {role: p["protocol_sha256"] for role, p in protocols.items()}
    outcome = BatchOutcome(out)
    results_dir = out / "results"
    (results_dir / "files").mkdir(parents=True, exist_ok=True)
    (results_dir / "patients").mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)

    tasks, keys, file_results, patient_results = [], {}, {}, {}
    for f in plan.files:
        meta = {k: v for k, v in f.as_dict().items() if k not in ("inferred_from",)}
        if f.rel in fmo:
            meta.update(fmo_path=fmo[f.rel].path, fmo_rel=fmo[f.rel].rel)
        key = {"task": "file", "input_sha256": f.sha256, "fmo_sha256": fmo[f.rel].sha256 if f.rel in fmo else None,
               "protocols": {"qc": shas["qc"], **({"screening": shas["screening"]} if f.tube == "screening" else {})},
               "tool_version": __version__, "code_sha256": code_sha256(), "tube": f.tube, "patient": f.patient, "collection_date": f.collection_date}
        path = results_dir / "files" / f"{safe_name(f.rel)}.json"
        keys[f"file:{f.rel}"] = (key, path)
        saved = load_result(path, key) if f.sha256 else None
        if saved is not None:
            file_results[f.rel] = saved
        else:
            tasks.append((f"file:{f.rel}", file_task, (meta, config)))
    for patient, files in sorted(plan.patients().items()):
        rows = [{k: v for k, v in f.as_dict().items() if k not in ("inferred_from",)} for f in files]
        key = {"task": "patient", "tool_version": __version__, "code_sha256": code_sha256(), "protocols": {"car": shas["car"], "screening": shas["screening"]},
               "rows": [{k: v for k, v in r.items() if k != "path"} for r in rows]}
        path = results_dir / "patients" / f"{safe_name(patient)}.json"
        keys[f"patient:{patient}"] = (key, path)
        saved = load_result(path, key)
        if saved is not None:
            patient_results[patient] = saved
        else:
            tasks.append((f"patient:{patient}", patient_task, (patient, rows, config)))
    outcome.reused = len(file_results) + len(patient_results)
    outcome.ran = len(tasks)
    if outcome.reused:
        say(f"resuming: {outcome.reused} finished result(s) reused, {len(tasks)} task(s) to run")

    def on_done(label: str, result: dict) -> None:
        kind, name = label.split(":", 1)
        result.setdefault("errors", [])
        for png_name, data in (result.pop("png", None) or {}).items():
            with atomic_output(out / "plots" / png_name) as fh:
                fh.write(data)
        key, path = keys[label]
        if not result["errors"] or all(e["stage"] != "worker" for e in result["errors"]):
            write_json(path, {"key": key, "result": result})  # a lost worker is retried on the next run
        (file_results if kind == "file" else patient_results)[name] = _fill(kind, name, result)

    n_jobs = jobs if jobs is not None else default_jobs()
    try:
        run_tasks(tasks, on_done, jobs=n_jobs, scheduler=scheduler, show_progress=show_progress)
    except KeyboardInterrupt:
        audit(out, {"event": "interrupted", **context, "finished_tasks": len(file_results) + len(patient_results)})
        raise
    outcome.files = [_fill("file", f.rel, file_results[f.rel]) for f in plan.files]
    outcome.patients = [patient_results[p] for p in sorted(patient_results)]
    for r in outcome.files:
        outcome.errors += [{"file": r["file"], **e} for e in r["errors"]]
    for p in outcome.patients:
        outcome.errors += [{"file": f"patient {p['patient']}", **e} for e in p.get("errors", [])]
    outcome.provenance = {
        **context, "finished": None, "folder": str(Path(folder).resolve()), "jobs": n_jobs, "scheduler": scheduler,
        "manifest": None if plan.manifest is None else {"path": str(plan.manifest), "sha256": _sha256(str(plan.manifest))},
        "protocols": protocols, "inputs": {f.rel: f.sha256 for f in plan.files},
        "manifest_problems": plan.manifest_problems, "skipped": plan.skipped,
        "reused_results": outcome.reused, "ran_tasks": outcome.ran,
    }
    from .report import write_outputs

    outcome.outputs = write_outputs(outcome, plan)
    audit(out, {"event": "end", **context, "errors": len(outcome.errors), "files": len(outcome.files),
                "patients": len(outcome.patients), "inputs": outcome.provenance["inputs"], "outputs": outcome.outputs})
    return outcome


def _fill(kind: str, name: str, result: dict) -> dict:
    """A lost task's result with the fields the tables expect."""
    if kind == "file" and "qc" not in result:
        from .assays.qc_table import error_record

        reason = "; ".join(e["reason"] for e in result["errors"])
        return {"file": name, "sha256": None, "patient": None, "tube": None, "qc": error_record(name, reason),
                "screening": None, "plots": [], **result}
    if kind == "patient" and "samples" not in result:
        return {"patient": name, "samples": [], "kinetics": None, "course": [], "problems": [], "notes": [],
                "plots": [], **result}
    return result


def _tell_plan(plan: BatchPlan, say) -> None:
    inferred = [f for f in plan.files if f.source == "keywords"]
    say(f"{len(plan.files)} FCS file(s) in {plan.folder}" + (f", manifest {plan.manifest}" if plan.manifest else ""))
    for line in plan.skipped:
        say(f"skipped {line}")
    for line in plan.manifest_problems:
        say(f"manifest: {line}")
    if inferred:
        say(f"inferred from keywords for {len(inferred)} file(s) (not in a manifest):")
        for f in inferred:
            src = ", ".join(f"{k} from {v}" for k, v in f.inferred_from.items()) or "nothing readable"
            say(f"  {f.rel}: patient {f.patient or '?'}, tube {f.tube or '?'}, date {f.acquisition_date or '?'}"
                + (f", day {f.study_day}" if f.study_day is not None else "") + f"  ({src})")
