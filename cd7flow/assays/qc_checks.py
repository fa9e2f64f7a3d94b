"""The measurements behind each QC check, on numpy columns (no per-event Python loops).

Each function measures; :func:`grade` turns a measured value and its two limits into
PASS / WARN / FAIL and a check record ``{check, channel, status, value, unit, limit, detail}``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

STATUS_ORDER = {"PASS": 0, "WARN": 1, "FAIL": 2}


def worst(statuses) -> str:
    """The worst of some statuses (PASS when there are none)."""
    return max(statuses, key=STATUS_ORDER.__getitem__, default="PASS")


def check(name: str, status: str, value, unit: str, limit: str, detail: str = "", channel: str | None = None) -> dict:
    if isinstance(value, float):
        value = float(f"{value:.6g}") if math.isfinite(value) else None
        if value is not None and unit in ("events", "days"):
            value = int(value)  # counts and whole days read as such in tables
    return {"check": name, "channel": channel, "status": status, "value": value, "unit": unit, "limit": limit,
            "detail": detail}


def grade(name: str, value: float | None, warn: float, fail: float, unit: str, *, above: bool = True,
          detail: str = "", channel: str | None = None) -> dict:
    """PASS / WARN / FAIL for ``value`` against limits: worse above them (``above``) or below them."""
    op = ">" if above else "<"
    limit = f"WARN {op} {warn:g}{unit and ' ' + unit}, FAIL {op} {fail:g}{unit and ' ' + unit}"
    if value is None:
        return check(name, "WARN", None, unit, limit, detail or "not measured", channel)
    bad = (lambda lim: value > lim) if above else (lambda lim: value < lim)
    status = "FAIL" if bad(fail) else "WARN" if bad(warn) else "PASS"
    return check(name, status, value, unit, limit, detail, channel)


def margin_pct(column: np.ndarray, channel_range: float) -> tuple[float, float]:
    """(% of events at or above $PnR - 1, % piled at the floor).

    The floor is the channel's smallest value when 2 or more events share it exactly (data
    clipped by the instrument or the ADC); a continuous low tail has one event at its minimum.
    """
    n = column.size
    if n == 0:
        return 0.0, 0.0
    high = np.count_nonzero(column >= channel_range - 1)
    low_value = column.min()
    at_floor = np.count_nonzero(column == low_value)
    return 100.0 * high / n, (100.0 * at_floor / n if at_floor >= 2 else 0.0)


def max_gap_units(time: np.ndarray) -> float:
    """Longest step between consecutive events in Time units (Time sorted first if it is not monotonic)."""
    if time.size < 2:
        return 0.0
    steps = np.diff(time)
    if np.any(steps < 0):
        steps = np.diff(np.sort(time))
    return float(steps.max())


def rate_drift_pct(counts: np.ndarray, good: np.ndarray) -> float | None:
    """% change of the median events per bin from the first to the last quarter of the good bins."""
    c = counts[good]
    q = c.size // 4
    if q < 2:
        return None
    first, last = float(np.median(c[:q])), float(np.median(c[-q:]))
    if first <= 0:
        return None
    return 100.0 * abs(last - first) / first


def segment_shift_drift(values: np.ndarray, time: np.ndarray, n_segments: int, min_events: int,
                        cofactor: float) -> tuple[float | None, list[float | None]]:
    """(largest minus smallest segment shift, the shifts) on arcsinh(x / cofactor) units.

    Segments split the time span into equal lengths. A segment's shift is the median,
    over the deciles 10..90, of (segment decile - whole-run decile): a drifting signal
    moves every decile, while a decile sitting in the valley between two populations
    jumps with chance changes of their proportions and is outvoted (a plain median
    would flag those). A segment with fewer than ``min_events`` events has no shift (None).
    """
    if values.size == 0:
        return None, []
    t0, t1 = float(time.min()), float(time.max())
    if t1 <= t0:
        return None, []
    seg = np.minimum(((time - t0) / (t1 - t0) * n_segments).astype(np.int64), n_segments - 1)
    order = np.argsort(seg, kind="stable")
    bounds = np.searchsorted(seg[order], np.arange(n_segments + 1))
    scaled = np.arcsinh(values[order].astype(np.float64) / cofactor)
    probs = np.linspace(0.1, 0.9, 9)
    whole = np.quantile(scaled, probs)
    shifts: list[float | None] = []
    for k in range(n_segments):  # n_segments (~8) quantile calls, not a per-event loop
        part = scaled[bounds[k]:bounds[k + 1]]
        shifts.append(float(np.median(np.quantile(part, probs) - whole)) if part.size >= min_events else None)
    present = [m for m in shifts if m is not None]
    if len(present) < 2:
        return None, shifts
    return max(present) - min(present), shifts


def find_column(channels, markers, names) -> int | None:
    """Index of the first channel whose $PnN or $PnS equals one of ``names`` (case-insensitive)."""
    wanted = [n.strip().lower() for n in names]
    for name in wanted:
        for i, (ch, mk) in enumerate(zip(channels, markers)):
            if ch.strip().lower() == name or (mk and mk.strip().lower() == name):
                return i
    return None


def jsonable(v: Any) -> Any:
    """Round floats to 6 significant digits (non-finite -> None), recursively, for stable JSON."""
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return float(f"{v:.6g}") if math.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return v
