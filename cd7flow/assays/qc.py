"""Per-file quality control: one PASS / WARN / FAIL verdict per check, the file's status the worst.

Checks (limits in ``cd7flow/protocols/qc.toml``, see :mod:`.qc_protocol`):

- ``events`` (total) and ``viable_singlets`` (what is left after the QC gates);
- ``time_anomalies`` (% of events in anomalous Time bins, the time-clean estimator
  :class:`gating.auto.TimeCleanGate`), ``time_gap`` (longest pause, s), ``rate_drift`` (%);
- ``margin`` (% of events at $PnR - 1 or piled at the floor; worst channel, all in ``margin_by_channel``);
- ``doublets`` (% outside the FSC-A/FSC-H singlet band), ``viability`` (% viable of singlets);
- ``signal_drift`` (spread of per-segment medians over acquisition time, arcsinh units; worst channel);
- ``compensation`` (matrix present, square/finite/unit-diagonal, applicable to this file, condition number);
- ``sample_age`` (collection to acquisition, days) when a collection date is given.

The events in anomalous Time bins form the QC gate ``qc_time``: its keep-intervals on the
Time channel are in the record (``qc_gate``), with the protocol's choice (``action``:
remove or keep) and whether it was applied; :func:`qc_keep_mask` rebuilds the mask for
any later step. Doublet and viability gates are measured inside that gate.
"""
from __future__ import annotations

import datetime as dt
import os
from typing import Any

import numpy as np

from gating.auto import BeadGate, SingletGate, TimeCleanGate, ViabilityGate
from gating.errors import GatingError

from .. import __version__
from ..sample import Sample
from .qc_checks import (check, find_column, grade, jsonable, margin_pct, max_gap_units, rate_drift_pct,
                        segment_shift_drift, worst)
from .qc_protocol import QCProtocol, load_qc_protocol

DEFAULT_TIMESTEP_S = 0.01  # BD instruments' usual $TIMESTEP, used when the file has none
SPILL_KEYWORDS = ("$SPILLOVER", "SPILL", "SPILLOVER", "$COMP", "COMP")


def _timestep(sample: Sample) -> tuple[float, bool]:
    """(seconds per unit of the Time column as read, whether the file said so).

    The reader multiplies Time by a valid $TIMESTEP, so such a column is already in seconds.
    """
    try:
        if float(sample.metadata.get("$TIMESTEP", "")) > 0:
            return 1.0, True
    except ValueError:
        pass
    return DEFAULT_TIMESTEP_S, False


def acquisition_date(sample: Sample) -> dt.date | None:
    """$DATE as a date (DD-MON-YYYY or ISO), None when absent or unreadable."""
    from ..io.manifest import parse_date

    text = sample.metadata.get("$DATE", "").strip()
    try:
        return parse_date(text) if text else None
    except ValueError:
        return None


def _time_checks(sample: Sample, L: dict, t_idx: int | None, rec: dict) -> np.ndarray:
    """Time checks; returns the keep mask of the QC gate (all True when it is not applied)."""
    n = sample.n_events
    keep = np.ones(n, dtype=bool)
    pct = "%"
    if t_idx is None:
        rec["checks"].append(check("time_anomalies", "WARN", None, pct, "", "no Time channel: flow-rate checks not possible"))
        rec["qc_gate"] = {"id": "qc_time", "dimension": None, "keep_intervals": None, "action": L["action"],
                          "applied": False, "events_removed": 0, "reason": "no Time channel"}
        return keep
    t = sample.events[:, t_idx]
    name = sample.channels[t_idx]
    step, known = _timestep(sample)
    est = TimeCleanGate(name, n_bins=int(L["n_bins"]), n_mad=L["n_mad"], min_relative_change=L["min_relative_change"],
                        guard_bins=int(L["guard_bins"]), gate_id="qc_time")
    try:
        good = est.fit_predict(t[:, None])
    except GatingError as exc:
        rec["checks"].append(check("time_anomalies", "WARN", None, pct, "", f"time-clean estimator: {exc}", name))
        rec["qc_gate"] = {"id": "qc_time", "dimension": name, "keep_intervals": None, "action": L["action"],
                          "applied": False, "events_removed": 0, "reason": str(exc)}
        return keep
    removed = int(n - np.count_nonzero(good))
    bad_bins = int(np.count_nonzero(~est.good_bins_))
    rec["checks"].append(grade("time_anomalies", 100.0 * removed / n, L["removed_warn_above_pct"],
                               L["removed_fail_above_pct"], pct, channel=name,
                               detail=f"{removed:,} events in {bad_bins} of {L['n_bins']} Time bins flagged"))
    gap_s = max_gap_units(t) * step
    rec["checks"].append(grade("time_gap", gap_s, L["gap_warn_above_s"], L["gap_fail_above_s"], "s", channel=name,
                               detail="" if known else f"no $TIMESTEP: {DEFAULT_TIMESTEP_S} s per Time unit assumed"))
    rec["checks"].append(grade("rate_drift", rate_drift_pct(est.counts_, est.good_bins_), L["rate_drift_warn_above_pct"],
                               L["rate_drift_fail_above_pct"], pct, channel=name,
                               detail="median events per bin, last vs first quarter of the good bins"))
    applied = L["action"] == "remove"
    rec["qc_gate"] = {"id": "qc_time", "dimension": name, "keep_intervals": [list(iv) for iv in est.intervals_],
                      "action": L["action"], "applied": applied, "events_removed": removed if applied else 0,
                      "events_flagged": removed, "estimator": "gating.auto.TimeCleanGate",
                      "params": {k: L[k] for k in ("n_bins", "n_mad", "min_relative_change", "guard_bins")}}
    return good if applied else keep


def qc_keep_mask(sample: Sample, record: dict[str, Any]) -> np.ndarray:
    """The QC gate's mask (True = kept) for ``sample``, rebuilt from a QC record's ``qc_gate``."""
    gate = record.get("qc_gate") or {}
    keep = np.ones(sample.n_events, dtype=bool)
    if not gate.get("applied") or not gate.get("keep_intervals"):
        return keep
    t = sample.values(gate["dimension"])
    inside = np.zeros(sample.n_events, dtype=bool)
    for lo, hi in gate["keep_intervals"]:
        inside |= (t >= lo) & (t < hi) if hi is not None else (t >= lo)
    return inside


def _compensation(sample: Sample, L: dict, fluor: list[int], rec: dict) -> np.ndarray | None:
    """The compensation check; returns the inverse spillover matrix when it can be applied."""
    spill = sample.spillover
    comp = {"present": spill is not None, "channels": None, "condition": None, "applied": False}
    rec["compensation"] = comp
    if spill is None:
        keyword = next((k for k in SPILL_KEYWORDS if k in sample.metadata), None)
        if keyword is not None:
            why = "; ".join(w for w in sample.extra.get("warnings", []) if "pill" in w or "omp" in w) or "unusable"
            rec["checks"].append(check("compensation", "FAIL", None, "", "square, finite, unit diagonal",
                                       f"{keyword} in the file could not be used: {why}"))
        elif len(fluor) >= 2:
            rec["checks"].append(check("compensation", L["missing_status"], None, "", "matrix present",
                                       f"no spillover matrix for {len(fluor)} fluorescence channels"))
        else:
            rec["checks"].append(check("compensation", "PASS", None, "", "matrix present",
                                       "fewer than 2 fluorescence channels: nothing to compensate"))
        return None
    comp["channels"] = list(spill.channels)
    absent = [c for c in spill.channels if c not in sample.channels]
    if absent:
        rec["checks"].append(check("compensation", "FAIL", None, "", "matrix channels in the file",
                                   f"matrix names channels the file lacks: {', '.join(absent)}"))
        return None
    cond = float(np.linalg.cond(spill.matrix))
    comp["condition"] = cond
    status = grade("compensation", cond, L["condition_warn_above"], L["condition_fail_above"], "",
                   detail=f"{spill.n}x{spill.n} matrix, finite, unit diagonal; condition number")
    rec["checks"].append(status)
    if status["status"] == "FAIL":
        return None
    comp["applied"] = True
    return np.linalg.inv(spill.matrix)


def _without_beads(sample: Sample, rows: np.ndarray, cols: dict, fluor: list[int],
                   cofactor: float) -> tuple[np.ndarray, int]:
    """``rows`` without counting beads (:class:`gating.auto.BeadGate`: bright in every detector,
    own scatter), so a CAR tube's beads count neither as dead cells nor as cells; and how many."""
    if cols["fsc_a"] is None or cols["ssc_a"] is None or not fluor or rows.size < BeadGate.min_fit_events:
        return rows, 0
    ev = sample.events[rows]
    scatter = [ev[:, cols[k]] / float(sample.ranges[cols[k]]) for k in ("fsc_a", "ssc_a")]
    X = np.column_stack(scatter + [np.arcsinh(ev[:, i] / cofactor) for i in fluor])
    try:
        no_beads = BeadGate([f"d{k}" for k in range(X.shape[1])], n_scatter=2).fit_predict(X)
    except GatingError:
        return rows, 0
    return rows[no_beads], int(rows.size - np.count_nonzero(no_beads))


def _viability(sample: Sample, P: QCProtocol, v_idx: int | None, inv: np.ndarray | None,
               rows: np.ndarray) -> tuple[dict, np.ndarray | None]:
    """(check, viable mask over ``rows``) for the viability dye on logicle units of its compensated values."""
    from ..transforms import transform_from_spec
    from .protocol_gating import logicle_width

    L = P.limits["viability"]
    if v_idx is None:
        return grade("viability", None, L["warn_below_pct"], L["fail_below_pct"], "%", above=False,
                     detail="no viability dye in the panel: not measured"), None
    name = sample.channels[v_idx]
    spill = sample.spillover
    if inv is not None and name in spill.channels:
        idx = [sample.channels.index(c) for c in spill.channels]
        dye = sample.events[rows][:, idx].astype(np.float64) @ inv[:, spill.channels.index(name)]
    else:
        dye = sample.events[rows, v_idx].astype(np.float64)
    t = float(sample.ranges[v_idx])
    m = float(L["logicle_m"])
    w = min(logicle_width(dye, t, m), m / 2)
    scaled = transform_from_spec("logicle", t=t, w=w, m=m, a=0.0).apply(dye)
    try:
        viable = ViabilityGate(name).fit_predict(scaled[:, None])
    except GatingError as exc:
        return check("viability", "WARN", None, "%", "", f"viability gate: {exc}", name), None
    pct = 100.0 * np.count_nonzero(viable) / max(viable.size, 1)
    return grade("viability", pct, L["warn_below_pct"], L["fail_below_pct"], "%", above=False, channel=name,
                 detail=f"viable of {viable.size:,} singlets"), viable


def qc_sample(sample: Sample, protocol: QCProtocol | str = "qc", collection_date: dt.date | None = None) -> dict[str, Any]:
    """Run every QC check on one data set; returns the JSON-ready record (see the module doc)."""
    P = protocol if isinstance(protocol, QCProtocol) else load_qc_protocol(protocol)
    L = P.limits
    rec: dict[str, Any] = {"file": sample.name, "sha256": sample.sha256, "events": sample.n_events, "checks": [],
                           "tool": "cd7flow", "tool_version": __version__, **P.provenance()}
    del rec["protocol_path"]
    cols = {k: find_column(sample.channels, sample.markers, names) for k, names in P.channels.items()}
    n = sample.n_events
    E = L["events"]
    rec["checks"].append(grade("events", float(n), E["warn_below"], E["fail_below"], "events", above=False))
    if n == 0:
        rec["status"] = "FAIL"
        return jsonable(rec)
    keep = _time_checks(sample, L["time"], cols["time"], rec)

    signal = [i for i in range(len(sample.channels)) if i != cols["time"]]
    fluor = [i for i in signal if i not in (cols["fsc_a"], cols["fsc_h"], cols["ssc_a"])]
    by_channel = {}
    for i in signal:
        high, low = margin_pct(sample.events[:, i], float(sample.ranges[i]))
        by_channel[sample.channels[i]] = {"high_pct": high, "floor_pct": low}
    rec["margin_by_channel"] = by_channel
    if by_channel:
        ch, m = max(by_channel.items(), key=lambda kv: max(kv[1].values()))
        rec["checks"].append(grade("margin", max(m.values()), L["margin"]["warn_above_pct"], L["margin"]["fail_above_pct"],
                                   "%", channel=ch, detail=f"{m['high_pct']:.2f}% at $PnR-1, {m['floor_pct']:.2f}% at the floor "
                                   "(worst channel)"))

    inv = _compensation(sample, L["compensation"], fluor, rec)

    rows = np.flatnonzero(keep)
    rows, n_beads = _without_beads(sample, rows, cols, fluor, float(L["signal_drift"]["cofactor"]))
    rec["bead_events"] = n_beads
    D = L["doublets"]
    singlets = None
    if cols["fsc_a"] is None or cols["fsc_h"] is None:
        rec["checks"].append(grade("doublets", None, D["warn_above_pct"], D["fail_above_pct"], "%",
                                   detail="no FSC-A / FSC-H pair: not measured"))
    else:
        X = sample.events[rows][:, [cols["fsc_a"], cols["fsc_h"]]]
        try:
            singlets = SingletGate(("A", "H"), n_mad_low=D["n_mad_low"], n_mad_high=D["n_mad_high"]).fit_predict(X)
            pct = 100.0 * (1 - np.count_nonzero(singlets) / max(rows.size, 1))
            rec["checks"].append(grade("doublets", pct, D["warn_above_pct"], D["fail_above_pct"], "%",
                                       channel=sample.channels[cols["fsc_h"]], detail=f"outside the singlet band, of {rows.size:,} time-clean events"))
        except GatingError as exc:
            rec["checks"].append(check("doublets", "WARN", None, "%", "", f"singlet gate: {exc}"))
    if singlets is not None:
        rows = rows[singlets]
    v_check, viable = _viability(sample, P, cols["viability"], inv, rows)
    rec["checks"].append(v_check)
    if viable is not None:
        rows = rows[viable]
    rec["checks"].append(grade("viable_singlets", float(rows.size), E["viable_singlets_warn_below"],
                               E["viable_singlets_fail_below"], "events", above=False,
                               detail="events inside the QC gates (time, singlets, viable)"))
    rec["qc_events_kept"] = int(rows.size)

    S = L["signal_drift"]
    good_rows = np.flatnonzero(keep)
    drift = {}
    if cols["time"] is not None:
        t = sample.events[good_rows, cols["time"]]
        for i in signal:
            d, _ = segment_shift_drift(sample.events[good_rows, i], t, int(S["n_segments"]), int(S["min_segment_events"]),
                                        float(S["cofactor"]))
            drift[sample.channels[i]] = d
    rec["drift_by_channel"] = drift
    measured = {k: v for k, v in drift.items() if v is not None}
    if measured:
        ch = max(measured, key=measured.get)
        rec["checks"].append(grade("signal_drift", measured[ch], S["warn_above"], S["fail_above"], "asinh",
                                   channel=ch, detail=f"largest spread of the decile shifts of {int(S['n_segments'])} time segments (worst channel)"))
    else:
        rec["checks"].append(grade("signal_drift", None, S["warn_above"], S["fail_above"], "asinh",
                                   detail="no Time channel or too few events per segment: not measured"))

    acquired = acquisition_date(sample)
    rec["acquisition_date"] = acquired.isoformat() if acquired else None
    rec["collection_date"] = collection_date.isoformat() if collection_date else None
    if collection_date is not None:
        A = L["age"]
        if acquired is None:
            rec["checks"].append(check("sample_age", "WARN", None, "days", "", "no readable $DATE in the file"))
        else:
            days = (acquired - collection_date).days
            c = grade("sample_age", float(days), A["warn_above_days"], A["fail_above_days"], "days",
                      detail=f"collected {collection_date.isoformat()}, acquired {acquired.isoformat()}")
            if days < 0:
                c["status"], c["detail"] = "FAIL", c["detail"] + ": acquired before collection"
            rec["checks"].append(c)
    rec["status"] = worst(c["status"] for c in rec["checks"])
    return jsonable(rec)


def qc_file(path: str | os.PathLike, protocol: QCProtocol | str = "qc", collection_date: dt.date | None = None) -> dict[str, Any]:
    """Read one FCS file and QC it (its first data set). Unreadable files raise FCSError."""
    from ..io.fcs_read import read_fcs

    return qc_sample(read_fcs(path), protocol, collection_date)


__all__ = ["qc_sample", "qc_file", "qc_keep_mask", "acquisition_date", "load_qc_protocol", "QCProtocol"]
