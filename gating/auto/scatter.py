"""Scatter gates: cells vs debris on FSC-A/SSC-A, singlets on FSC-A/FSC-H.

Scatter channels are normally linear; both estimators work in whatever units they
are given and return their polygons in those units.
"""
from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.stats import chi2
from sklearn.mixture import GaussianMixture

from sklearn.utils._param_validation import Interval, StrOptions

from ..errors import GatingError
from ..gates import PolygonGate
from ._base import AutoGate, convex_hull, mahalanobis_sq, subsample
from .thresholds import density_1d, find_density_peaks, valley_between


class CellsGate(AutoGate):
    """Cells (not debris) on FSC-A vs SSC-A, by a Gaussian mixture.

    The mixture (``n_components``) is fitted on robustly scaled (FSC, SSC). Components
    whose mean FSC lies below the debris valley (the density minimum between the
    lowest-FSC peak and the next one, when that lowest peak sits below ``debris_fraction``
    x the FSC of the highest peak) are debris; the rest are cells. The gate is the convex hull of cell events lying
    within the ``coverage`` Mahalanobis ellipse of their own component, and events
    at the top of the scale (saturated, >= ``saturation`` quantile when values pile up
    there) are left out of the fit.

    Attributes after fit: ``debris_threshold_`` (FSC units, None when no debris peak),
    ``mixture_``, ``cell_components_``, ``vertices_``, ``gate_`` (PolygonGate).
    """

    n_dims = 2
    gate_id_default = "cells"
    min_fit_events = 50
    _parameter_constraints = {
        **AutoGate._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "coverage": [Interval(Real, 0, 1, closed="neither")],
        "debris_fraction": [Interval(Real, 0, 1, closed="both")],
        "max_fit_events": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(self, dimensions=("FSC-A", "SSC-A"), n_components: int = 4, coverage: float = 0.99,
                 debris_fraction: float = 0.3, max_fit_events: int | None = 30_000, random_state: int = 0,
                 gate_id: str | None = None):
        self.dimensions = dimensions
        self.gate_id = gate_id
        self.n_components = n_components
        self.coverage = coverage
        self.debris_fraction = debris_fraction
        self.max_fit_events = max_fit_events
        self.random_state = random_state

    def _fit(self, X: np.ndarray) -> None:
        # Off-scale events pile up at the channel maximum and would drag a component there.
        top = X.max(axis=0)
        not_saturated = np.all(X < top, axis=1) if np.mean(np.any(X >= top, axis=1)) > 0.001 else None
        X = subsample(X, self.max_fit_events, self.random_state, rows=not_saturated)
        fsc = X[:, 0]
        self.debris_threshold_ = self._debris_valley(fsc)
        center = np.median(X, axis=0)
        scale = np.subtract(*np.percentile(X, [90, 10], axis=0))
        scale[scale <= 0] = 1.0
        Z = (X - center) / scale
        gmm = GaussianMixture(self.n_components, covariance_type="full", random_state=self.random_state,
                              n_init=1, reg_covar=1e-4).fit(Z)
        self.mixture_ = gmm
        means_fsc = gmm.means_[:, 0] * scale[0] + center[0]
        cells = np.ones(self.n_components, dtype=bool)
        if self.debris_threshold_ is not None:
            cells = means_fsc >= self.debris_threshold_
        if not cells.any():
            cells[np.argmax(means_fsc)] = True
        self.cell_components_ = np.flatnonzero(cells)
        labels = gmm.predict(Z)
        limit = chi2.ppf(self.coverage, 2)
        core = np.zeros(Z.shape[0], dtype=bool)
        for k in self.cell_components_:
            members = labels == k
            if members.sum() >= 3:
                core[members] = mahalanobis_sq(Z[members], gmm.means_[k], gmm.covariances_[k]) <= limit
        if self.debris_threshold_ is not None:
            core &= fsc >= self.debris_threshold_
        if core.sum() < 3:
            raise GatingError(f"CellsGate ({self._id()}): found no cell population on {self.dimensions_}")
        self.vertices_ = convex_hull(X[core])

    def _debris_valley(self, fsc: np.ndarray) -> float | None:
        """FSC valley after the debris peak, or None when the lowest FSC peak is not debris.

        The lowest-FSC density peak is debris only when it sits below ``debris_fraction`` x
        the FSC of the highest peak: lymphocytes (about half a granulocyte's FSC) are a
        small low peak in marrow too, and must not be cut away as debris.
        """
        d = density_1d(fsc)
        peaks = np.sort(find_density_peaks(d, min_height=0.02))
        if peaks.size < 2:
            return None
        main = peaks[np.argmax(d.density[peaks])]
        low = peaks[0]
        if low == main or d.grid[low] >= self.debris_fraction * d.grid[main]:
            return None
        return valley_between(d, int(low), int(peaks[1]))

    def _build_gate(self) -> PolygonGate:
        return PolygonGate(self._id(), self.dimensions_, self.vertices_)


class SingletGate(AutoGate):
    """Singlets on FSC-A vs FSC-H: a band of the area/height ratio fitted robustly.

    Doublets have a larger area for their height. The band is median(A/H) minus
    ``n_mad_low`` and plus ``n_mad_high`` robust SDs of the ratio, computed on events with
    positive A and H. ``spread`` picks the robust SD: "mad" (1.4826 x MAD, symmetric) or
    "lower" (median minus the 15.87th percentile: the singlets' own spread, which the doublet
    tail above the median cannot widen; with many doublets a symmetric MAD grows with them and
    the band keeps them). The gate is the wedge polygon between the two ratio lines from the
    origin to 5% past the largest A fitted. Works on FSC-A/FSC-H and on SSC-A/SSC-H alike.

    Attributes after fit: ``ratio_median_``, ``ratio_low_``, ``ratio_high_`` (A/H, unitless),
    ``vertices_`` and ``gate_`` (PolygonGate, same units as the input).
    """

    n_dims = 2
    gate_id_default = "singlets"
    min_fit_events = 20
    _parameter_constraints = {
        **AutoGate._parameter_constraints,
        "n_mad_low": [Interval(Real, 0, None, closed="neither")],
        "n_mad_high": [Interval(Real, 0, None, closed="neither")],
        "spread": [StrOptions({"mad", "lower"})],
    }

    def __init__(self, dimensions=("FSC-A", "FSC-H"), n_mad_low: float = 6.0, n_mad_high: float = 5.0,
                 spread: str = "mad", gate_id: str | None = None):
        self.dimensions = dimensions
        self.gate_id = gate_id
        self.n_mad_low = n_mad_low
        self.n_mad_high = n_mad_high
        self.spread = spread

    def _fit(self, X: np.ndarray) -> None:
        a, h = X[:, 0], X[:, 1]
        ok = (a > 0) & (h > 0)
        if ok.sum() < self.min_fit_events:
            raise GatingError(f"SingletGate ({self._id()}): fewer than {self.min_fit_events} events with A, H > 0")
        if not ok.all():  # (X may be most of a file: no copies of its columns unless needed)
            a, h = a[ok], h[ok]
        ratio = a / h
        # ratio and dev are ours: order statistics may reorder them in place (same values)
        med = float(np.median(ratio, overwrite_input=True))
        if self.spread == "lower":
            rsd = med - float(np.percentile(ratio, 15.865525393145708, overwrite_input=True))
        else:
            dev = np.subtract(ratio, med, out=ratio)
            rsd = 1.4826 * float(np.median(np.abs(dev, out=dev), overwrite_input=True))
        if rsd == 0:
            rsd = 0.01 * med  # all ratios identical (synthetic data): a 1% band
        self.ratio_median_ = med
        self.ratio_low_ = max(med - self.n_mad_low * rsd, 1e-6)
        self.ratio_high_ = med + self.n_mad_high * rsd
        a_end = float(a.max()) * 1.05
        # A = ratio * H, so the low-ratio line is the upper edge in (A, H).
        self.vertices_ = np.array([
            [0.0, 0.0],
            [a_end, a_end / self.ratio_high_],
            [a_end, a_end / self.ratio_low_],
        ])

    def _build_gate(self) -> PolygonGate:
        return PolygonGate(self._id(), self.dimensions_, self.vertices_)
