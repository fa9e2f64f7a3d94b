"""Population statistics as a tidy table.

One row per (sample, population, statistic[, channel]) with columns
``sample, population, statistic, channel, value``; ``channel`` is empty for the
population-level rows (count, percent_of_parent, percent_of_total).

Definitions (values in the units of the dimension asked for: raw, compensated or
transformed, as the Dimension says; NaN values, i.e. undefined after a transform,
are left out of every channel statistic):

* ``median``, ``mean``; ``sd`` with ddof=1 (sample standard deviation).
* ``geometric_mean``: exp(mean(ln x)) over the *positive* values only (a log of
  zero or a negative value is undefined; compensated data has many of those), so it
  describes the positive part of the population; NaN when none is positive.
* ``cv``: 100 x sd / mean (percent).
* ``robust_cv``: FlowJo's rCV, 100 x 0.5 x (P84.13 - P15.87) / median (percent);
  for a normal distribution it equals the CV.
* ``p<q>``: percentiles by linear interpolation between order statistics (numpy's
  default), e.g. ``p5``, ``p95``.

Empty populations give count 0 and NaN channel statistics.

This module returns tables and writes no files (``cd7flow.outputs.write_csv`` does).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from .dimensions import Dimension
from .tree import GatingResult, PathLike

__all__ = [
    "CHANNEL_STATISTICS",
    "channel_statistics",
    "geometric_mean",
    "robust_cv",
    "cv",
    "population_table",
]

CHANNEL_STATISTICS = ("median", "mean", "sd", "geometric_mean", "cv", "robust_cv")
COLUMNS = ["sample", "population", "statistic", "channel", "value"]


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[~np.isnan(v)]


def geometric_mean(values: np.ndarray) -> float:
    """exp(mean(ln x)) over the positive values; NaN if there are none."""
    v = _finite(values)
    v = v[v > 0]
    return float(np.exp(np.mean(np.log(v)))) if v.size else float("nan")


def cv(values: np.ndarray) -> float:
    """100 x SD (ddof=1) / mean, in percent; NaN for fewer than 2 values or a zero mean."""
    v = _finite(values)
    if v.size < 2:
        return float("nan")
    mean = float(np.mean(v))
    return float("nan") if mean == 0 else float(100.0 * np.std(v, ddof=1) / mean)


def robust_cv(values: np.ndarray) -> float:
    """FlowJo rCV: 100 x 0.5 x (P84.13 - P15.87) / median, in percent; NaN if empty or median 0."""
    v = _finite(values)
    if v.size == 0:
        return float("nan")
    lo, med, hi = np.percentile(v, [15.87, 50.0, 84.13])
    return float("nan") if med == 0 else float(100.0 * 0.5 * (hi - lo) / med)


def channel_statistics(values: np.ndarray, percentiles: Sequence[float] = ()) -> dict[str, float]:
    """Every channel statistic (see module docstring) of one population's values."""
    v = _finite(values)
    out: dict[str, float] = {}
    if v.size == 0:
        for name in CHANNEL_STATISTICS:
            out[name] = float("nan")
        for q in percentiles:
            out[_pname(q)] = float("nan")
        return out
    out["median"] = float(np.median(v))
    out["mean"] = float(np.mean(v))
    out["sd"] = float(np.std(v, ddof=1)) if v.size > 1 else float("nan")
    out["geometric_mean"] = geometric_mean(v)
    out["cv"] = cv(v)
    out["robust_cv"] = robust_cv(v)
    if percentiles:
        for q, p in zip(percentiles, np.percentile(v, list(percentiles))):
            out[_pname(q)] = float(p)
    return out


def _pname(q: float) -> str:
    return f"p{q:g}"


def _dimension(d: Dimension | str) -> Dimension:
    return d if isinstance(d, Dimension) else Dimension(d)


def population_table(
    result: GatingResult,
    channels: Iterable[Dimension | str] = (),
    *,
    sample: str = "",
    populations: Iterable[PathLike] | None = None,
    percentiles: Sequence[float] = (),
    include_root: bool = True,
) -> pd.DataFrame:
    """Tidy statistics of populations of one gating result.

    channels : dimensions (or channel names = raw values) to describe per population.
    sample : label for the ``sample`` column (e.g. the FCS file name).
    populations : names/paths to include (default: every population in tree order).
    include_root : add a row set for all events (population "/").
    The ``population`` column holds the population's path ("/A/B").
    """
    dims = [_dimension(d) for d in channels]
    columns = {d: result.source.values(d) for d in dims}
    rows: list[tuple] = []

    def add(path: str, mask: np.ndarray, parent_count: int) -> None:
        n = int(np.count_nonzero(mask))
        total = result.n_events
        rows.append((sample, path, "count", "", float(n)))
        rows.append((sample, path, "percent_of_parent",
                     "", float("nan") if parent_count == 0 else 100.0 * n / parent_count))
        rows.append((sample, path, "percent_of_total", "", float("nan") if total == 0 else 100.0 * n / total))
        for d, col in columns.items():
            label = str(d) if (d.compensation or d.transform) else d.channel
            for stat, value in channel_statistics(col[mask], percentiles).items():
                rows.append((sample, path, stat, label, value))

    if include_root:
        add("/", np.ones(result.n_events, dtype=bool), result.n_events)
    if populations is None:
        pops = list(result.tree.populations())
    else:
        pops = [result.tree.find(p) for p in populations]
    for pop in pops:
        add(pop.path_str, result.mask(pop.path), result.parent_count(pop.path))
    return pd.DataFrame.from_records(rows, columns=COLUMNS)
