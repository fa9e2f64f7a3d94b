"""One CAR (blood) or MRD (marrow) tube: populations, CAR+ threshold, per-uL values with intervals.

:func:`analyse_tube` gates a sample with the ``car`` protocol (time-clean -> beads out ->
cells -> singlets -> viable -> CD45/SSC -> lymphocytes -> CD3+ -> CD7+/-, CD56+, lineage
refined blasts; see ``cd7flow/protocols/car.toml``) and returns one flat record. CAR+ T
cells are CD3+ events above a CAR threshold taken from data: the patient's day-0 tube
(:func:`reference_threshold`, passed in) or this tube's CD3- lymphocytes. Counts are
events; ``*_per_ul`` are cells per microlitre of blood with ``_low`` / ``_high`` 95%
bounds (:mod:`.car_counts`); percentages are 0-100. Thresholds are in compensated linear
channel units.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ProtocolError
from ..protocol import Protocol
from ..sample import Sample
from . import car_counts as cc
from .protocol_gating import GatedSample, NotEvaluable, run_protocol_gates

MAD_TO_SD = 1.4826
PER_UL = ("car", "cd3", "cd3_cd7pos", "cd3_cd7neg", "nk", "blast")
"""Populations reported per uL (``<name>_per_ul``, ``_low``, ``_high``)."""

DEFAULTS: dict[str, dict[str, Any]] = {
    "threshold": {"max_reference_day": 0, "n_sd": 6.0, "min_reference_events": 100},
    "counting": {"min_bead_events": 100, "max_bead_cv_pct": 15.0, "confidence": 0.95},
    "limits": {"lod_events": 13, "lloq_events": 22},
    "kinetics": {"window_start_day": 0, "window_end_day": 28},
    "mrd": {"min_blast_events": 22, "negative_below_pct": 0.01, "min_cd45_events": 500000},
    "escape": {"positive_pct": 20.0, "min_blast_events": 22, "screening_protocol": "screening"},
    "response": {"rule_set": "cd7flow-response-1.0", "cr_blast_below_pct": 5.0, "pr_blast_max_pct": 25.0,
                 "pr_min_fall_pct": 50.0, "anc_min_per_ul": 1000.0, "platelets_min_per_ul": 100000.0},
}


def car_settings(protocol: Protocol) -> dict[str, dict[str, Any]]:
    """The protocol's [car.*] tables over :data:`DEFAULTS`; ProtocolError on an unknown key or bad value."""
    if protocol.assay != "car":
        raise ProtocolError(protocol.path, f"protocol {protocol.name!r} is a {protocol.assay} protocol, not car")
    given = protocol.section("car") or {}
    out: dict[str, dict[str, Any]] = {}
    for table, keys in DEFAULTS.items():
        sub = given.get(table, {})
        unknown = sorted(set(sub) - set(keys)) if isinstance(sub, dict) else ["(not a table)"]
        if unknown:
            raise ProtocolError(protocol.path, f"key 'car.{table}': unknown setting(s) {', '.join(unknown)}")
        merged = {**keys, **sub}
        for k, v in merged.items():
            default = keys[k]
            if isinstance(default, str) != isinstance(v, str) or isinstance(v, bool):
                raise ProtocolError(protocol.path, f"key 'car.{table}.{k}': expected a "
                                                   f"{'string' if isinstance(default, str) else 'number'}, got {v!r}")
            if not isinstance(v, str) and v < 0 and k != "max_reference_day":
                raise ProtocolError(protocol.path, f"key 'car.{table}.{k}': must be >= 0, got {v!r}")
        out[table] = merged
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ProtocolError(protocol.path, f"key 'car': unknown table(s) {', '.join(unknown)}")
    if not 0 < out["counting"]["confidence"] < 1:
        raise ProtocolError(protocol.path, "key 'car.counting.confidence': must be between 0 and 1")
    k = out["kinetics"]
    if k["window_end_day"] <= k["window_start_day"]:
        raise ProtocolError(protocol.path, "key 'car.kinetics': window_end_day must be after window_start_day")
    return out


def robust_threshold(values: np.ndarray, n_sd: float) -> float:
    """median + n_sd x 1.4826 x MAD of finite values (linear units)."""
    v = values[np.isfinite(values)]
    med = float(np.median(v))
    return med + n_sd * MAD_TO_SD * float(np.median(np.abs(v - med)))


def reference_threshold(sample: Sample, protocol: Protocol) -> tuple[float, int]:
    """CAR threshold from a CAR-negative (day-0) tube: (threshold, reference events).

    The reference is the tube's lymphocytes (CD3+ and CD3-); NotEvaluable when too few.
    """
    return _reference_from(run_protocol_gates(sample, protocol), car_settings(protocol)["threshold"])


def _reference_from(g: GatedSample, s: dict[str, Any]) -> tuple[float, int]:
    ref = g.masks["lymphocytes"]
    n = int(np.count_nonzero(ref))
    if n < s["min_reference_events"]:
        raise NotEvaluable(f"day-0 reference has {n} lymphocytes (< {s['min_reference_events']})")
    return robust_threshold(g.linear("CAR")[ref], s["n_sd"]), n


def _mask(g: GatedSample, name: str) -> np.ndarray | None:
    return None if name in g.skipped or name not in g.masks else g.masks[name]


def _bead_cv(g: GatedSample, beads: np.ndarray) -> float | None:
    """Largest robust CV (%) of the beads over the bead gate's fluorescence markers."""
    if np.count_nonzero(beads) < 3:
        return None
    cvs = []
    for key in ("CD45", "CD3", "CD7", "CAR"):
        v = g.linear(key)[beads]
        med = float(np.median(v))
        if med > 0:
            cvs.append(100 * MAD_TO_SD * float(np.median(np.abs(v - med))) / med)
    return round(max(cvs), 3) if cvs else None


def analyse_tube(sample: Sample, protocol: Protocol, *, car_threshold: float | None = None,
                 reference_events: int | None = None, beads_per_test: float | None = None,
                 sample_volume_ul: float | None = None, lymphocytes_per_ul: float | None = None,
                 wbc_per_ul: float | None = None, as_reference: bool = False) -> dict[str, Any]:
    """Analyse one tube (see the module doc). ``car_threshold`` from :func:`reference_threshold`
    (method "day0"); None: this tube's CD3- lymphocytes (method "in_tube"). ``as_reference``: this
    tube is the patient's day-0 tube, its own lymphocytes set the threshold (as
    :func:`reference_threshold`, without gating the file twice). Raises NotEvaluable when a
    required gate or marker is missing (or, with ``as_reference``, too few lymphocytes)."""
    S = car_settings(protocol)
    g = run_protocol_gates(sample, protocol)
    if as_reference:
        car_threshold, reference_events = _reference_from(g, S["threshold"])
    rec: dict[str, Any] = {"events": sample.n_events, "flags": []}
    beads = (g.masks["time_clean"] & ~g.masks["no_beads"]) if _mask(g, "no_beads") is not None else \
        np.zeros(sample.n_events, bool)
    lymph, t_cells = g.masks["lymphocytes"], g.masks["t_cells"]
    car_lin = g.linear("CAR")
    if car_threshold is None:
        ref = lymph & ~g.marker_positive["t_cells"]
        n_ref = int(np.count_nonzero(ref))
        if n_ref < S["threshold"]["min_reference_events"]:
            raise NotEvaluable(f"in-tube CAR reference (CD3- lymphocytes) has {n_ref} events "
                               f"(< {S['threshold']['min_reference_events']}) and no day-0 tube")
        car_threshold, reference_events, method = robust_threshold(car_lin[ref], S["threshold"]["n_sd"]), n_ref, "in_tube"
    else:
        method = "day0"
    car_pos = car_lin > car_threshold
    cd56 = _mask(g, "cd56_cells")
    nk = (cd56 & ~g.marker_positive["t_cells"]) if cd56 is not None else None
    blast_pop = "blasts_refined" if _mask(g, "blasts_refined") is not None else "blasts"
    not_mature = ~car_pos & (~g.marker_positive["cd56_cells"] if cd56 is not None else True)
    blasts = g.masks[blast_pop] & not_mature
    cd7_pos = g.marker_positive["t_cd7_pos"]
    events = {
        "bead": beads, "leukocytes": g.masks["cd45_ssc"], "lymphocytes": lymph, "cd3": t_cells,
        "car": t_cells & car_pos, "cd3_cd7pos": t_cells & cd7_pos, "cd3_cd7neg": t_cells & ~cd7_pos,
        "nk": nk, "blast": blasts, "blast_cd7pos": blasts & cd7_pos,
    }
    n = {k: (None if m is None else int(np.count_nonzero(m))) for k, m in events.items()}
    for k, v in n.items():
        rec[f"{k}_events"] = v
    rec["viable_events"] = g.count("viable")
    rec["time_loss_pct"] = round(100 * (1 - g.count("time_clean") / max(sample.n_events, 1)), 3)
    rec["car_threshold"] = round(float(car_threshold), 4)
    rec["car_threshold_method"] = method
    rec["car_reference_events"] = reference_events
    rec["car_pct_of_cd3"] = _pct(n["car"], n["cd3"])
    rec["blast_pct_of_cd45"] = _pct(n["blast"], n["leukocytes"])
    conf = S["counting"]["confidence"]
    lo, hi = cc.clopper_pearson(n["blast"], n["leukocytes"] or 0, conf)
    rec["blast_pct_low"], rec["blast_pct_high"] = (round(100 * lo, 6), round(100 * hi, 6)) if n["leukocytes"] else (None, None)
    rec["blast_cd7_pos_pct"] = _pct(n["blast_cd7pos"], n["blast"])
    lo, hi = cc.clopper_pearson(n["blast_cd7pos"], n["blast"], conf)
    rec["blast_cd7_pos_low"], rec["blast_cd7_pos_high"] = (round(100 * lo, 4), round(100 * hi, 4)) if n["blast"] else (None, None)
    rec["bead_cv_pct"] = _bead_cv(g, beads)
    rec["skipped_gates"] = "; ".join(f"{k}: {v}" for k, v in g.skipped.items())
    _per_ul(rec, n, S, beads_per_test, sample_volume_ul, lymphocytes_per_ul, wbc_per_ul)
    rec["flags"] += cc.limit_flags(n["car"], S["limits"]["lod_events"], S["limits"]["lloq_events"])
    if rec["bead_cv_pct"] is not None and rec["bead_cv_pct"] > S["counting"]["max_bead_cv_pct"]:
        rec["flags"].append("BEAD_CV_HIGH")
    return rec


def _pct(k: int | None, n: int | None) -> float | None:
    return None if not n or k is None else round(100.0 * k / n, 6)


def _per_ul(rec: dict, n: dict, S: dict, beads_per_test, volume, lymph_per_ul, wbc_per_ul) -> None:
    conf = S["counting"]["confidence"]
    enough_beads = n["bead"] >= S["counting"]["min_bead_events"]
    if beads_per_test is not None and volume is not None and enough_beads:
        rec["counting"] = "single_platform"
        fn = lambda c: cc.single_platform(c, n["bead"], beads_per_test, volume, conf)  # noqa: E731
    elif lymph_per_ul is not None and n["lymphocytes"]:
        rec["counting"] = "dual_platform_lymphocytes"
        fn = lambda c: cc.dual_platform(c, n["lymphocytes"], lymph_per_ul, conf)  # noqa: E731
    elif wbc_per_ul is not None and n["leukocytes"]:
        rec["counting"] = "dual_platform_wbc"
        fn = lambda c: cc.dual_platform(c, n["leukocytes"], wbc_per_ul, conf)  # noqa: E731
    else:
        rec["counting"] = "none"
        fn = None
        if beads_per_test is not None and not enough_beads:
            rec["flags"].append("FEW_BEADS")
    for pop in PER_UL:
        vals = (None, None, None) if fn is None or n[pop] is None else fn(n[pop])
        for suffix, v in zip(("", "_low", "_high"), vals):
            rec[f"{pop}_per_ul{suffix}"] = None if v is None else round(float(v), 6)
