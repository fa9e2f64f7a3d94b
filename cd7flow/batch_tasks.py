"""The work of a batch, one task per file or per patient: plain functions of plain data.

They run in this process, in a process pool or on Dask workers alike: arguments and
results are dicts of JSON types (plus PNG bytes under ``"png"``), protocols are passed
as file paths, and nothing is written to the output folder here (the parent writes
every output atomically, so a killed worker leaves nothing half-written). A bad input
never raises: the result names the stage and the reason, so the other tasks go on.
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any

from gating.errors import GatingError

from .errors import CD7FlowError

USER_ERRORS = (CD7FlowError, GatingError, OSError)


@lru_cache(maxsize=8)
def _qc_protocol(path: str):
    from .assays.qc_protocol import load_qc_protocol

    return load_qc_protocol(path)


@lru_cache(maxsize=8)
def _protocol(path: str):
    from .protocol import load_protocol

    return load_protocol(path)


def _failure(stage: str, exc: BaseException) -> dict[str, str]:
    if isinstance(exc, USER_ERRORS):
        return {"stage": stage, "reason": str(exc)}
    # A bug on one file must not stop a study: report it with where it happened.
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return {"stage": stage, "reason": f"internal error {type(exc).__name__}: {exc} "
                                      f"({Path(where.filename).name}:{where.lineno})"}


def file_task(meta: dict[str, Any], config: dict[str, str]) -> dict[str, Any]:
    """QC of one file, and screening when it is a screening tube (with the patient's FMO if any)."""
    from .assays.qc import qc_sample
    from .assays.qc_table import error_record
    from .io.fcs_read import read_fcs

    rel = meta["rel"]
    out: dict[str, Any] = {"file": rel, "sha256": meta.get("sha256"), "patient": meta.get("patient"),
                           "tube": meta.get("tube"), "source": meta.get("source"), "qc": None, "screening": None,
                           "errors": [], "plots": [], "png": {}}
    try:
        sample = read_fcs(meta["path"])
    except Exception as exc:  # noqa: BLE001 - every failure is reported, see _failure
        out["errors"].append(_failure("read", exc))
        out["qc"] = error_record(rel, out["errors"][-1]["reason"], meta.get("sha256"))
        return out
    collected = dt.date.fromisoformat(meta["collection_date"]) if meta.get("collection_date") else None
    try:
        qc = qc_sample(sample, _qc_protocol(config["qc"]), collected)
        qc["file"] = rel
        out["qc"] = qc
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(_failure("qc", exc))
        out["qc"] = error_record(rel, out["errors"][-1]["reason"], sample.sha256)
    if meta.get("tube") == "screening":
        # the events QC read (QC never modifies them): the file is read and hashed once
        out["screening"] = _screen(meta, config, out, sample)
    return out


def _screen(meta: dict, config: dict, out: dict, sample) -> dict | None:
    from .assays.screening import FMOTube, screen_sample
    from .io.fcs_read import read_fcs

    try:
        with tempfile.TemporaryDirectory(prefix="cd7flow-plots-") as tmp:
            protocol = _protocol(config["screening"])
            fmo = FMOTube(read_fcs(meta["fmo_path"]), protocol) if meta.get("fmo_path") else None
            rec = screen_sample(sample, protocol, fmo, plots_dir=tmp)
            for p in rec.get("plots") or []:
                out["png"][os.path.basename(p)] = Path(p).read_bytes()
        rec["plots"] = sorted(out["png"])
        out["plots"] = rec["plots"]
        if meta.get("fmo_path"):
            rec["fmo_file"] = meta.get("fmo_rel")
        rec["file"] = meta["rel"]
        rec.pop("path", None)  # absolute paths would differ between copies of the same study
        return rec
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(_failure("screening", exc))
        return None


def patient_task(patient: str, files: list[dict[str, Any]], config: dict[str, str]) -> dict[str, Any]:
    """Persistence over one patient's timeline (the persist API on a one-patient manifest)."""
    from .assays.persistence import lloq_per_ul, run_persistence
    from .assays.persistence_plots import patient_figure
    from .batch_plan import FileMeta, manifest_csv

    rel_of = {f["path"]: f["rel"] for f in files}
    out: dict[str, Any] = {"patient": patient, "samples": [], "kinetics": None, "course": [], "problems": [],
                           "notes": [], "errors": [], "plots": [], "png": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="cd7flow-persist-") as tmp:
            manifest = Path(tmp, f"{patient}.csv")
            manifest.write_text(manifest_csv([FileMeta(**f) for f in files]), encoding="utf-8")
            res = run_persistence(manifest, _protocol(config["car"]))
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(_failure("persistence", exc))
        return out

    def rel(v):
        return rel_of.get(v, v) if isinstance(v, str) else v

    for r in res.samples:
        out["samples"].append({k: rel(v) if k in ("file", "car_reference_file") else v for k, v in r.items()})
    out["kinetics"] = next((k for k in res.kinetics if k["patient"] == patient), None)
    if out["kinetics"] is not None:
        out["kinetics"]["escape_evidence"] = [{**e, "file": rel(e.get("file"))} for e in out["kinetics"].get("escape_evidence") or []]
    out["course"] = res.courses.get(patient, [])
    out["problems"] = [{"file": rel(p.file) if os.path.isabs(p.file) else p.file,
                        "reason": p.reason.replace(os.path.dirname(files[0]["path"]) + os.sep, "")} for p in res.problems]
    out["notes"] = list(res.notes)
    if out["course"] and out["kinetics"] is not None:
        fig = patient_figure(patient, out["course"], out["kinetics"], lloq_per_ul(res))
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        name = f"{_safe(patient)}_kinetics.png"
        out["png"][name] = buf.getvalue()
        out["plots"] = [name]
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "x"
