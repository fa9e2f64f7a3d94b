"""Shared machinery of the automated gates: input checks, subsampling, geometry helpers.

Every estimator here follows the scikit-learn pattern: parameters in the
constructor, ``fit(X)`` learns a geometry (attributes ending in ``_``),
``predict(X)`` returns a bool mask, and ``gate_`` is that geometry as an
ordinary :mod:`gating.gates` gate so it can be drawn, exported and re-applied.
``predict`` evaluates exactly the geometry the gate holds, so re-applying the
exported gate to the same values gives the same mask.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..dimensions import Dimension
from ..errors import GatingError


def as_dimensions(dimensions: Sequence[str | Dimension], n: int, who: str) -> tuple[Dimension, ...]:
    """Turn channel names (or Dimensions) into a tuple of exactly ``n`` Dimensions."""
    if isinstance(dimensions, (str, Dimension)):
        dimensions = [dimensions]
    dims = tuple(d if isinstance(d, Dimension) else Dimension(str(d)) for d in dimensions)
    if len(dims) != n:
        raise GatingError(f"{who} needs {n} dimension(s), got {len(dims)}: {[str(d) for d in dims]}")
    return dims


def check_array(X, n_cols: int, who: str, min_events: int = 1) -> np.ndarray:
    """Validate an events x dimensions array (a 1-D array is accepted when n_cols == 1).

    Non-finite rows are not allowed in ``fit``: a NaN would silently poison a density
    or a mixture fit, so the caller is told instead.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1 and n_cols == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[1] != n_cols:
        raise GatingError(f"{who}: expected an events x {n_cols} array, got shape {X.shape}")
    if X.shape[0] < min_events:
        raise GatingError(f"{who}: needs at least {min_events} events to fit, got {X.shape[0]}")
    return X


def finite_rows(X: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(X), axis=1)


def subsample(X: np.ndarray, max_events: int | None, random_state: int | None) -> np.ndarray:
    """At most ``max_events`` rows, chosen reproducibly (sorted, so event order is kept)."""
    if max_events is None or X.shape[0] <= max_events:
        return X
    rng = np.random.default_rng(random_state)
    idx = np.sort(rng.choice(X.shape[0], size=max_events, replace=False))
    return X[idx]


class ColumnSource:
    """A DataSource over an events x dimensions array whose columns ARE the gate's dimensions.

    The fitted gate is evaluated through this, so ``predict`` runs exactly the code
    (and boundary rules) that re-applying the exported gate runs.
    """

    def __init__(self, X: np.ndarray, dimensions: Sequence[Dimension]):
        self._X = X
        self._index = {d: i for i, d in enumerate(dimensions)}

    @property
    def n_events(self) -> int:
        return int(self._X.shape[0])

    def values(self, dimension: Dimension) -> np.ndarray:
        try:
            return self._X[:, self._index[dimension]]
        except KeyError:
            raise GatingError(f"no column for dimension {dimension}") from None


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of 2-D points, counter-clockwise."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.unique(points, axis=0)
    if pts.shape[0] < 3:
        raise GatingError(f"cannot build a polygon from {pts.shape[0]} distinct point(s)")
    try:
        hull = ConvexHull(pts)
    except QhullError as exc:
        raise GatingError(f"cannot build a polygon: the points are degenerate ({exc.args[0].splitlines()[0]})") from None
    return pts[hull.vertices]


def mahalanobis_sq(X: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    diff = X - mean
    inv = np.linalg.inv(cov)
    return np.einsum("ij,jk,ik->i", diff, inv, diff)


class AutoGate:
    """Base class: subclasses implement ``_fit(X)`` (which sets the geometry) and ``_build_gate()``.

    ``predict`` evaluates ``gate_`` on the columns given, so subclasses need no
    membership code of their own unless their result is not one gate.
    """

    n_dims: int = 1
    gate_id_default: str = "auto"
    min_fit_events: int = 10

    def __init__(self, dimensions, gate_id: str | None = None):
        self.dimensions = as_dimensions(dimensions, self.n_dims, type(self).__name__)
        self.gate_id = gate_id or self.gate_id_default

    # --- public API ---------------------------------------------------------
    def fit(self, X, y=None) -> "AutoGate":
        """Learn the gate geometry from an events x dimensions array (already transformed)."""
        X = check_array(X, self.n_dims, type(self).__name__)
        X = X[finite_rows(X)]
        if X.shape[0] < self.min_fit_events:
            raise GatingError(
                f"{type(self).__name__} ({self.gate_id}): needs at least {self.min_fit_events} "
                f"finite events to fit, got {X.shape[0]}"
            )
        self._fit(X)
        self.n_fit_events_ = int(X.shape[0])
        self._gate = self._build_gate()
        return self

    def predict(self, X) -> np.ndarray:
        """Bool mask: which events fall inside the fitted gate (NaN rows are outside)."""
        self._check_fitted()
        X = check_array(X, self.n_dims, type(self).__name__, min_events=0)
        ok = finite_rows(X)
        out = np.zeros(X.shape[0], dtype=bool)
        if ok.all():
            return self._predict(X)
        out[ok] = self._predict(X[ok])
        return out

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).predict(X)

    @property
    def gate_(self):
        """The fitted geometry as a :mod:`gating.gates` gate."""
        self._check_fitted()
        return self._gate

    # --- helpers ------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "n_fit_events_"):
            raise GatingError(f"{type(self).__name__} ({self.gate_id}) is not fitted yet; call fit() first")

    def _fit(self, X: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self._gate.contains(ColumnSource(X, self.dimensions)), dtype=bool)

    def _build_gate(self):  # pragma: no cover - abstract
        raise NotImplementedError
