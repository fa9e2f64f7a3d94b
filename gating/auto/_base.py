"""Shared machinery of the automated gates: input checks, subsampling, geometry helpers.

Every estimator here follows scikit-learn's contract (it subclasses
:class:`sklearn.base.BaseEstimator`): ``__init__`` only stores its arguments, ``fit(X)``
validates them (``_parameter_constraints`` plus :meth:`AutoGate._check_params`) and learns
a geometry (attributes ending in ``_``), ``predict(X)`` returns a bool mask, and
``clone``/``get_params``/``set_params`` work. No training data stays on a fitted estimator.

``gate_`` is the fitted geometry as an ordinary :mod:`gating.gates` gate so it can be
drawn, exported and re-applied; when it is a union (a :class:`~gating.gates.BooleanGate`)
``gates_`` holds its operands, named by id. ``predict`` evaluates exactly ``gate_`` (its
operands included), so re-applying the exported gates to the same values gives the same
mask. :meth:`AutoGate.tree_gates` lists what goes into a gating tree under the parent.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

from ..dimensions import Dimension
from ..errors import GatingError
from ..gates import BooleanGate, Gate

__all__ = ["AutoGate", "ParameterError", "evaluate", "renamed"]


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


def subsample(X: np.ndarray, max_events: int | None, random_state: int | None,
              rows: np.ndarray | None = None) -> np.ndarray:
    """At most ``max_events`` rows, chosen reproducibly (sorted, so event order is kept).

    ``rows`` (bool mask) restricts the choice to those rows: the same rows as
    ``subsample(X[rows], ...)`` without copying ``X[rows]`` first.
    """
    n = X.shape[0] if rows is None else int(np.count_nonzero(rows))
    if max_events is None or n <= max_events:
        return X if rows is None else X[rows]
    rng = np.random.default_rng(random_state)
    idx = np.sort(rng.choice(n, size=max_events, replace=False))
    if rows is not None:
        idx = np.flatnonzero(rows)[idx]
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


class ParameterError(GatingError):
    """An estimator parameter is invalid; ``param`` names it (the protocol maps it to its key)."""

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(message)


def renamed(gate: Gate, new_id: str) -> Gate:
    """``gate`` under another id (a shallow copy; the geometry is shared)."""
    if gate.id == new_id:
        return gate
    out = copy.copy(gate)
    out.id = new_id
    return out


def evaluate(gate: Gate, operands: Sequence[Gate], source) -> np.ndarray:
    """Membership of ``gate`` on ``source``; a BooleanGate's operand ids resolve among ``operands``."""
    if not isinstance(gate, BooleanGate):
        return np.asarray(gate.contains(source), dtype=bool)
    by_id = {g.id: g for g in operands}

    def resolve(ref):
        if ref not in by_id:
            raise GatingError(f"boolean gate {gate.id!r}: operand {ref!r} is not one of its gates")
        return evaluate(by_id[ref], operands, source)

    return gate.contains(source, resolve=resolve)


class AutoGate(BaseEstimator):
    """Base class: subclasses implement ``_fit(X)`` (which sets the geometry) and ``_build_gate()``.

    ``_build_gate`` returns ``gate_``; a union sets ``gates_`` (its operands) too.
    ``predict`` evaluates ``gate_`` on the columns given, so subclasses need no
    membership code of their own.
    """

    n_dims: int | None = 1  # None: one column per dimension given
    gate_id_default: str = "auto"
    min_fit_events: int = 10
    _parameter_constraints: dict = {"dimensions": ["array-like", str, Dimension],
                                    "gate_id": [str, None]}

    def __init__(self, dimensions, gate_id: str | None = None):
        self.dimensions = dimensions
        self.gate_id = gate_id

    # --- parameters ---------------------------------------------------------
    def _dimension_param(self):
        """The constructor argument naming the dimension(s) (``dimension`` for 1-D gates)."""
        return self.dimensions

    def _n_columns(self) -> int:
        """Columns of X: ``n_dims``, or one per dimension for gates over any number of markers."""
        if self.n_dims is not None:
            return self.n_dims
        dims = self._dimension_param()
        return 1 if isinstance(dims, (str, Dimension)) else len(dims)

    def _id(self) -> str:
        return self.gate_id or self.gate_id_default

    def _check_params(self) -> None:
        """Checks that ``_parameter_constraints`` cannot express (raise ParameterError)."""

    def check_params(self) -> None:
        """Validate every parameter; a bad one raises :class:`ParameterError` naming it."""
        name = type(self).__name__
        params = self.get_params(deep=False)
        for key, constraints in self._parameter_constraints.items():
            if key not in params:
                continue
            try:
                validate_parameter_constraints({key: constraints}, {key: params[key]}, name)
            except InvalidParameterError as exc:
                raise ParameterError(key, str(exc)) from None
        self._check_params()

    # --- public API ---------------------------------------------------------
    def fit(self, X, y=None, **fit_params) -> "AutoGate":
        """Learn the gate geometry from an events x dimensions array (already transformed).

        ``fit_params`` (e.g. a reference population's events) go to ``_fit`` and are not kept.
        """
        X = self._start_fit(X)
        finite = finite_rows(X)
        if not finite.all():  # (a copy only when there is something to drop: X may be most of a file)
            X = X[finite]
        if X.shape[0] < self._min_events():
            raise GatingError(
                f"{type(self).__name__} ({self._id()}): needs at least {self._min_events()} "
                f"finite events to fit, got {X.shape[0]}"
            )
        self._fit(X, **fit_params)
        self._finish_fit(X.shape[0])
        return self

    def predict(self, X) -> np.ndarray:
        """Bool mask: which events fall inside the fitted gate (NaN rows are outside)."""
        self._check_fitted()
        X = check_array(X, len(self.dimensions_), type(self).__name__, min_events=0)
        ok = finite_rows(X)
        out = np.zeros(X.shape[0], dtype=bool)
        if ok.all():
            return self._predict(X)
        out[ok] = self._predict(X[ok])
        return out

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).predict(X)

    def tree_gates(self, gate_id: str | None = None) -> list[Gate]:
        """The fitted gates to add to a gating tree under the parent population, in order.

        The last one is this gate's own population, named ``gate_id`` (default: its own id);
        the ones before are the operands its boolean 'or'/'and' refers to by id.
        """
        self._check_fitted()
        return [*getattr(self, "gates_", []), renamed(self.gate_, gate_id or self.gate_.id)]

    # --- helpers ------------------------------------------------------------
    def _min_events(self) -> int:
        return self.min_fit_events

    def _start_fit(self, X, min_events: int = 1) -> np.ndarray:
        """Validate the parameters, set ``dimensions_`` and check the array's shape."""
        self.check_params()
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)  # a re-fit never keeps state from the previous one
        self.dimensions_ = as_dimensions(self._dimension_param(), self._n_columns(), type(self).__name__)
        return check_array(X, len(self.dimensions_), type(self).__name__, min_events=min_events)

    def _finish_fit(self, n_events: int) -> None:
        self.gate_ = self._build_gate()
        self.n_fit_events_ = int(n_events)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_fit_events_"):
            raise GatingError(f"{type(self).__name__} ({self._id()}) is not fitted yet; call fit() first")

    def _fit(self, X: np.ndarray, **fit_params) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return evaluate(self.gate_, getattr(self, "gates_", []), ColumnSource(X, self.dimensions_))

    def _build_gate(self):  # pragma: no cover - abstract
        raise NotImplementedError
