"""CAR-T kinetics of one patient from per-visit CAR+ cells/uL (days from infusion).

Definitions (domain brief section 2; the window is a protocol setting):

* Cmax: the highest CAR+ cells/uL on or after day 0; Tmax: its day (the first when tied).
* AUC over [start, end] days by the linear trapezoid (cells/uL x days). Every measured
  value enters as measured, including those below the LOD/LLOQ (flagged, never zeroed or
  imputed). A window edge between two visits is linearly interpolated between them; a window
  end after the last visit truncates the AUC there (``auc_complete`` false), and a window
  start before the first visit starts it at that visit.
* Tlast: the last day whose CAR+ events reach the LLOQ (quantifiable).
* persistence: whether the last visit is still detectable (events >= LOD), with that day;
  ``persistence_day`` is the last detectable day.
* fold expansion: Cmax / the first value after day 0 (None when that value is 0).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def auc_window(days: np.ndarray, values: np.ndarray, start: float, end: float) -> tuple[float | None, bool]:
    """Linear-trapezoid AUC of (days, values) over [start, end]: (auc, complete). Days sorted, unique."""
    if days.size == 0 or days[-1] < start or days[0] > end:
        return None, False
    lo, hi = max(start, days[0]), min(end, days[-1])
    inner = (days > lo) & (days < hi)
    x = np.concatenate([[lo], days[inner], [hi]])
    y = np.interp(x, days, values)
    auc = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2)) if hi > lo else 0.0
    return auc, bool(days[0] <= start and days[-1] >= end)


def patient_kinetics(visits: list[dict[str, Any]], settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Kinetic parameters from a patient's car-tube records (keys ``day``, ``car_per_ul``, ``car_events``).

    Visits without a per-uL value are left out of Cmax/AUC (listed in ``visits_without_count``).
    """
    k, lim = settings["kinetics"], settings["limits"]
    usable = sorted((v for v in visits if v.get("car_per_ul") is not None and v["day"] >= 0), key=lambda v: v["day"])
    out: dict[str, Any] = {"n_visits": len(usable), "window_start_day": k["window_start_day"],
                           "window_end_day": k["window_end_day"],
                           "visits_without_count": sorted(v["day"] for v in visits if v.get("car_per_ul") is None)}
    if not usable:
        return {**out, "cmax_per_ul": None, "tmax_day": None, "auc": None, "auc_complete": False, "tlast_day": None,
                "persistence": None, "persistence_day": None, "last_visit_day": None, "fold_expansion": None}
    days = np.array([v["day"] for v in usable], float)
    vals = np.array([v["car_per_ul"] for v in usable], float)
    i = int(np.argmax(vals))
    auc, complete = auc_window(days, vals, k["window_start_day"], k["window_end_day"])
    quant = [v["day"] for v in usable if v["car_events"] >= lim["lloq_events"]]
    detect = [v["day"] for v in usable if v["car_events"] >= lim["lod_events"]]
    post = [v for v in usable if v["day"] > 0]
    first = post[0]["car_per_ul"] if post else None
    return {
        **out,
        "cmax_per_ul": round(float(vals[i]), 6), "tmax_day": usable[i]["day"],
        "auc": None if auc is None else round(auc, 4), "auc_complete": complete,
        "tlast_day": quant[-1] if quant else None,
        "persistence": bool(usable[-1]["car_events"] >= lim["lod_events"]),
        "persistence_day": detect[-1] if detect else None, "last_visit_day": usable[-1]["day"],
        "fold_expansion": None if not first else round(float(vals[i]) / first, 4),
    }
