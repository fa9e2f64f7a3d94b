"""Marker positivity: events positive for any (or all) of a few markers (CD19; CD3 or CD56).

Each marker's threshold is median + ``n_sd`` robust SDs of a negative reference population
when one with enough events is given to ``fit`` (it works when the parent holds only
positive cells, and a few contaminants in the reference barely move it), else the density
valley on the events being gated. Values are on the markers' gating scale (transformed).
"""
from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ..errors import GatingError
from ..gates import BooleanGate, RectangleGate
from ._base import AutoGate, renamed
from .thresholds import DensityThreshold, RobustReferenceThreshold


class MarkerPositive(AutoGate):
    """Positive for any (``mode="any"``) or all of the markers (one column per dimension).

    ``fit(X, reference=None)``: with a reference of at least ``min_reference_events``
    events (events x markers), each threshold is a :class:`RobustReferenceThreshold` on it
    and X may even be empty; otherwise a :class:`DensityThreshold` on X, and a marker
    without a density valley (one peak: no positive population to separate) is a
    GatingError.

    Attributes after fit: ``thresholds_`` (one per marker, gating scale), ``methods_``
    ("reference" or "valley"), ``gate_`` (one marker's range gate, else a BooleanGate
    'or'/'and' over ``gates_``).
    """

    n_dims = None
    gate_id_default = "positive"
    _parameter_constraints = {
        **AutoGate._parameter_constraints,
        "mode": [StrOptions({"any", "all"})],
        "n_sd": [Interval(Real, 0, None, closed="neither")],
        "min_reference_events": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, dimensions, mode: str = "any", n_sd: float = 4.0, min_reference_events: int = 50,
                 gate_id: str | None = None):
        self.dimensions = dimensions
        self.mode = mode
        self.n_sd = n_sd
        self.min_reference_events = min_reference_events
        self.gate_id = gate_id

    def fit(self, X, y=None, reference=None) -> "MarkerPositive":
        use_reference = reference is not None and len(reference) >= self.min_reference_events
        # The per-marker thresholds check their own inputs (and say which is short of events).
        X = self._start_fit(X, min_events=0)
        if use_reference:
            # widened to float64 a column at a time (by the threshold's fit), not all at once
            reference = np.asarray(reference)
            reference = reference[:, None] if reference.ndim == 1 else reference
        thresholds, methods = [], []
        for j, d in enumerate(self.dimensions_):
            name = f"{self._id()}_{d.channel}"
            if use_reference:
                est = RobustReferenceThreshold(d, n_sd=self.n_sd, min_reference_events=self.min_reference_events,
                                               gate_id=name).fit(reference[:, j])
                methods.append("reference")
            else:
                est = DensityThreshold(d, gate_id=name).fit(X[:, j])
                if est.method_ != "valley":
                    raise GatingError(f"no {d.channel}-positive population (no density valley, no reference)")
                methods.append("valley")
            thresholds.append(est.threshold_)
        self.thresholds_ = np.array(thresholds)
        self.methods_ = methods
        self._finish_fit(X.shape[0])
        return self

    def _build_gate(self):
        gid = self._id()
        gates = [RectangleGate(f"{gid}_{d.channel}", [d], [t], [None]) for d, t in zip(self.dimensions_, self.thresholds_)]
        if len(gates) == 1:
            return renamed(gates[0], gid)
        self.gates_ = gates
        return BooleanGate(gid, "or" if self.mode == "any" else "and", [g.id for g in gates])
