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
from collections.abc import Callable

import numpy as np

from gating.dimensions import FCS_COMPENSATION, Dimension
from gating.stats import channel_statistics
from gating.tree import GatingResult

from ..sample import Sample
from .results import ViewerResult
from .state import PopulationPath, path_str

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


class PopulationStatistics:
    """Mixin of :class:`~cd7flow.viewer.ViewerModel`: per-channel statistics of a population,
    cached per sample, population, compensation and gate version."""

    def _stat_dimensions(self, sample: Sample | None = None, compensated: bool | None = None) -> list[Dimension]:
        """Every channel in channel units (no transform), compensated when compensation is on."""
        s = self._need_sample() if sample is None else sample
        on = self.compensated if compensated is None else compensated
        comp = set(s.spillover.channels) if (on and s.spillover is not None) else set()
        return [Dimension(ch, FCS_COMPENSATION if ch in comp else None, None) for ch in s.channels]

    def statistics(self, path: PopulationPath | None = None) -> list[dict[str, object]]:
        """One row per channel for a population: count, % of parent, % of total (percent) and
        median, mean, sd, geometric mean (over the values > 0; ``geometric_mean_n`` of them),
        cv, robust_cv (percent) in channel units, compensated when compensation is on.

        Cached per sample, population, compensation and gate version: a change of axis or
        transform does not recompute them."""
        path = self.selected if path is None else tuple(path)
        s = self._need_sample()
        key = (id(s), path, self.compensated, self._gates_version)
        hit = self._stats_cache.get(key)
        if hit is not None:
            return hit
        rows = self.statistics_for(self.result(), path)
        self._stats_cache[key] = rows
        return rows

    def statistics_key(self, path: PopulationPath | None = None) -> tuple:
        """What :meth:`statistics` of ``path`` depends on (the table compares it to know when to ask again)."""
        path = self.selected if path is None else tuple(path)
        return (id(self._need_sample()), path, self.compensated, self._gates_version)

    def cached_statistics(self, path: PopulationPath | None = None) -> list[dict] | None:
        """:meth:`statistics` when already computed, else None (nothing is computed)."""
        return self._stats_cache.get(self.statistics_key(path))

    def store_statistics(self, key: tuple, rows: list[dict]) -> None:
        """Keep rows computed elsewhere (a worker thread) under the key they were computed for."""
        if key[3] == self._gates_version:
            self._stats_cache[key] = rows

    def stat_columns(self, compensated: bool | None = None) -> Callable[[], list[np.ndarray]]:
        """A callable returning the current sample's columns the statistics describe (channel
        units, compensated when on), kept for the next request; made for a worker thread.

        The callable reads the sample through a data source of its own (compensation done
        once more, off the UI thread) so no worker writes into the viewer's source cache
        while the UI thread trims it; the UI thread only looks the cache up."""
        from ..datasource import SampleSource

        s = self._need_sample()
        on = self.compensated if compensated is None else compensated
        key = (id(s), on)
        cols = self._stat_columns.get(key)
        if cols is not None:
            return lambda: cols
        dims = self._stat_dimensions(s, on)

        def build() -> list[np.ndarray]:
            own = SampleSource(s)
            built = [np.asarray(own.values(d)) for d in dims]
            self._stat_columns = {key: built}  # one attribute store: atomic for the UI thread
            return built

        return build

    def statistics_for(self, result: GatingResult, path: PopulationPath, compensated: bool | None = None,
                       columns: list[np.ndarray] | None = None) -> list[dict[str, object]]:
        """:meth:`statistics` of ``path`` in a given result. Off the UI thread (the table, the drag
        preview) pass ``columns`` from :meth:`stat_columns`' callable: then only ``result`` is read."""
        s = result.source.sample
        compensated = self.compensated if compensated is None else compensated
        path = tuple(path)
        if path and isinstance(result, ViewerResult) and result.is_blank(path):
            return []
        mask = result.mask(path) if path else None
        n = s.n_events if mask is None else int(np.count_nonzero(mask))
        parent = result.parent_count(path) if path else n
        pct_parent = float("nan") if parent == 0 else 100.0 * n / parent
        pct_total = float("nan") if s.n_events == 0 else 100.0 * n / s.n_events
        src = result.source
        out = []
        for i, dim in enumerate(self._stat_dimensions(s, compensated)):
            v = np.asarray(src.values(dim)) if columns is None else columns[i]
            out.append({
                "population": path_str(path), "channel": dim.channel, "marker": s.markers[i],
                "count": n, "percent_of_parent": pct_parent, "percent_of_total": pct_total,
                **column_statistics(v if mask is None else v[mask]),
            })
        return out
