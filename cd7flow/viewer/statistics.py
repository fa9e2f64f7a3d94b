"""Per-channel statistics of populations, for the table and the CSV export.

Values are in channel units (no display transform), compensated when compensation
is on, so a change of axis or transform never changes (nor recomputes) them.
The geometric mean is defined only on positive values: it is computed over the
events > 0 and ``geometric_mean_n`` says how many that was (compensated and
baseline-restored data put many events at or below 0; dropping them silently made
the number look like it described the whole population).
"""
from __future__ import annotations

import math

import numpy as np

from gating.stats import channel_statistics

STAT_COLUMNS = ("median", "mean", "sd", "geometric_mean", "geometric_mean_n", "cv", "robust_cv")


def column_statistics(values: np.ndarray) -> dict[str, float]:
    """gating.stats.channel_statistics of the finite values, with the geometric mean over the
    values > 0 and their number (``geometric_mean_n``)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    out = channel_statistics(v)
    positive = v[v > 0]
    out["geometric_mean"] = float(np.exp(np.mean(np.log(positive)))) if positive.size else float("nan")
    out["geometric_mean_n"] = float(positive.size)
    return out


def format_number(value: float) -> str:
    """The one number format of the viewer's tables: 4 significant digits, thousands separated."""
    if isinstance(value, str):
        return value
    if value is None or not math.isfinite(value):
        return "-"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
