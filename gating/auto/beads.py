"""Counting beads found from the data: bright in every fluorescence detector, tight, their own scatter.

:class:`BeadGate` keeps everything that is *not* a counting bead (its ``predict``), so it
can sit in a gate sequence before the cells gate; ``beads(X)`` gives the beads
themselves. Nothing is at a fixed position: the brightness score is each event's
dimmest fluorescence value, the bead cluster is the high mode of that score, and its
extent is robust (median / MAD) in every dimension.
"""
from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval

from ..errors import GatingError
from ..gates import BooleanGate, RectangleGate
from ._base import AutoGate, ParameterError, check_array, finite_rows
from .thresholds import density_1d, find_density_peaks, valley_between

MAD_TO_SD = 1.4826


class BeadGate(AutoGate):
    """Everything but counting beads, on (FSC, SSC, fluorescence...) in gating-scale units.

    Columns: the first ``n_scatter`` are scatter, the rest fluorescence (at least one).

    1. score = min over the fluorescence columns (a cell is bright in a few markers at
       most; a bead is bright in all of them);
    2. the score's density must have a high-side peak separated from the bulk by a
       valley; events above the valley are bead candidates (none: no beads, the gate
       keeps every event and ``n_beads_`` is 0);
    3. beads = candidates within ``n_mad`` robust SDs (1.4826 x MAD) of the candidates'
       median in *every* column (their own scatter, a tight intensity);
    4. fewer than ``min_beads`` such events: no beads.

    Attributes after fit: ``score_threshold_``, ``center_``, ``half_width_`` (per column,
    gating units), ``n_beads_`` (beads among the fitted events), ``found_``; ``gates_`` holds
    the bead box and ``gate_`` is 'not' that box when beads were found. Without beads
    there is no geometry: ``tree_gates`` is empty and the population is its parent's.
    """

    n_dims = None
    gate_id_default = "no_beads"
    min_fit_events = 20
    _parameter_constraints = {
        **AutoGate._parameter_constraints,
        "n_scatter": [Interval(Integral, 0, None, closed="left")],
        "n_mad": [Interval(Real, 0, None, closed="neither")],
        "min_beads": [Interval(Integral, 1, None, closed="left")],
        "min_peak_height": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(self, dimensions, n_scatter: int = 2, n_mad: float = 6.0, min_beads: int = 20,
                 min_peak_height: float = 0.02, gate_id: str | None = None):
        self.dimensions = dimensions
        self.n_scatter = n_scatter
        self.n_mad = n_mad
        self.min_beads = min_beads
        self.min_peak_height = min_peak_height
        self.gate_id = gate_id

    def _check_params(self) -> None:
        if not self.n_scatter < self._n_columns():
            raise ParameterError("n_scatter", f"BeadGate: needs at least one fluorescence column after "
                                              f"{self.n_scatter} scatter columns")

    def fit(self, X, y=None) -> "BeadGate":
        """As AutoGate.fit, without copying X when every row is finite (1e6 events x 6 columns = 48 MB)."""
        X = self._start_fit(X)
        ok = finite_rows(X)
        if not ok.all():
            X = X[ok]
        if X.shape[0] < self._min_events():
            raise GatingError(f"BeadGate ({self._id()}): needs at least {self._min_events()} finite events "
                              f"to fit, got {X.shape[0]}")
        self._fit(X)
        self._finish_fit(X.shape[0])
        return self

    def _fit(self, X: np.ndarray) -> None:
        self.found_ = False
        self.n_beads_ = 0
        self.score_threshold_ = None
        self.center_ = self.half_width_ = None
        score = np.min(X[:, self.n_scatter:], axis=1)
        d = density_1d(score)
        peaks = find_density_peaks(d, min_height=self.min_peak_height)
        if peaks.size < 2:
            return
        # The bead mode is the brightest peak; the bulk of the cells is the highest peak below it.
        bright = int(peaks.max())
        below = peaks[peaks < bright]
        bulk = int(below[np.argmax(d.density[below])])
        self.score_threshold_ = valley_between(d, bulk, bright)
        cand = X[score >= self.score_threshold_]
        if cand.shape[0] < self.min_beads:
            return
        center = np.median(cand, axis=0)
        spread = MAD_TO_SD * np.median(np.abs(cand - center), axis=0)
        spread = np.maximum(spread, 1e-9 * np.maximum(np.abs(center), 1.0))
        half = self.n_mad * spread
        inside = np.all(np.abs(cand - center) <= half, axis=1)
        if np.count_nonzero(inside) < self.min_beads:
            return
        self.center_, self.half_width_ = center, half
        self.n_beads_ = int(np.count_nonzero(inside))
        self.found_ = True

    def _build_gate(self) -> BooleanGate | None:
        """'not' the bead box (None when no beads were found); the box itself is ``gates_[0]``."""
        if not self.found_:
            self.gates_ = []
            return None
        box = RectangleGate(f"{self._id()}_beads", self.dimensions_, list(self.center_ - self.half_width_),
                            list(self.center_ + self.half_width_))
        self.gates_ = [box]
        return BooleanGate(self._id(), "not", [box.id])

    def tree_gates(self, gate_id: str | None = None) -> list:
        """The bead box and 'not' it; nothing when no beads were found (the parent passes through)."""
        self._check_fitted()
        if not self.found_:
            return []
        return super().tree_gates(gate_id)

    def beads(self, X) -> np.ndarray:
        """Bool mask of the counting beads among the rows of X (same columns as fit; NaN is no bead)."""
        self._check_fitted()
        X = check_array(X, len(self.dimensions_), type(self).__name__, min_events=0)
        out = np.zeros(X.shape[0], dtype=bool)
        if not self.found_:
            return out
        out[:] = True
        for j in range(X.shape[1]):  # column by column: temporaries of one column, not of X
            out &= np.abs(X[:, j] - self.center_[j]) <= self.half_width_[j]
        return out

    def predict(self, X) -> np.ndarray:
        """Bool mask of events that are not beads (rows with NaN are kept: they are no bead)."""
        return ~self.beads(X)
