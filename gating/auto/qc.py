"""Quality gates: viable cells (valley on a viability dye) and time-clean (anomalous Time bins)."""
from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval

from ..dimensions import Dimension
from ..errors import GatingError
from ..gates import BooleanGate, RectangleGate
from ._base import AutoGate
from .thresholds import DensityThreshold, tail_point


class ViabilityGate(DensityThreshold):
    """Viable cells: below the valley between the live (dye-low) and dead (dye-bright) peaks.

    Give the dye on a transformed scale (e.g. logicle units). With no dead peak there is
    no valley: the threshold goes where the live peak's density has fallen to
    ``fallback_fraction`` of its height on the bright side (``method_ == "tail"``).
    """

    gate_id_default = "viable"
    # Fixed for a viability dye (class attributes, not parameters): keep the dye-low side,
    # and with one peak put the threshold on its bright side.
    side = "below"
    fallback_direction = "right"
    n_bins = 512
    _parameter_constraints = {k: v for k, v in DensityThreshold._parameter_constraints.items()
                              if k not in ("side", "fallback_direction", "n_bins")}

    def __init__(self, dimension="Viability", adjust: float = 1.0, min_peak_height: float = 0.02,
                 fallback_fraction: float = 0.01, search: tuple[float, float] | None = None,
                 gate_id: str | None = None):
        self.dimension = dimension
        self.adjust = adjust
        self.min_peak_height = min_peak_height
        self.fallback_fraction = fallback_fraction
        self.search = search
        self.gate_id = gate_id

    def _fit(self, X: np.ndarray) -> None:
        super()._fit(X)
        if self.method_ == "valley":
            # Live cells are the majority in any sample worth analysing; if the upper peak
            # is the bigger one the valley separates two live subsets (or dye-bright is live),
            # so fall back to the tail of the biggest peak instead of discarding most cells.
            d = self.density_
            lo_peak, hi_peak = (int(np.argmin(np.abs(d.grid - p))) for p in self.peaks_)
            if d.density[hi_peak] > d.density[lo_peak] and np.mean(X[:, 0] < self.threshold_) < 0.5:
                self.threshold_ = tail_point(d, hi_peak, self.fallback_fraction, "right")
                self.method_ = "tail"


class TimeCleanGate(AutoGate):
    """Drop events acquired in anomalous Time bins (flowAI-style flow-rate check).

    Time (in the channel's units; $TIMESTEP converts them to seconds) is cut into
    ``n_bins`` equal bins between the first and last event. A bin is anomalous when its
    event count differs from the median bin count by more than ``n_mad`` robust SDs
    (1.4826 x MAD, floored at the Poisson SD sqrt(median)) AND by more than
    ``min_relative_change`` of the median (so a tiny jitter in a very steady run is kept).
    The ``guard_bins`` bins on each side of an anomalous bin are dropped too: a bin holding
    the end of a gap and the start of the burst after it can have a normal count.

    Attributes after fit: ``edges_`` (bin edges), ``counts_``, ``good_bins_`` (bool),
    ``intervals_`` ([start, end) of each run of good bins) and ``gate_``: the single
    interval (a RectangleGate), or, when anomalies sit inside the run, the union of every
    good interval (a BooleanGate 'or' over ``gates_``, one RectangleGate per interval).
    """

    n_dims = 1
    gate_id_default = "time_clean"
    min_fit_events = 100
    _parameter_constraints = {
        "dimension": [str, Dimension, "array-like"],
        "gate_id": [str, None],
        "n_bins": [Interval(Integral, 5, None, closed="left")],
        "n_mad": [Interval(Real, 0, None, closed="neither")],
        "min_relative_change": [Interval(Real, 0, None, closed="left")],
        "guard_bins": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, dimension="Time", n_bins: int = 100, n_mad: float = 5.0, min_relative_change: float = 0.3,
                 guard_bins: int = 1, gate_id: str | None = None):
        self.dimension = dimension
        self.n_bins = n_bins
        self.n_mad = n_mad
        self.min_relative_change = min_relative_change
        self.guard_bins = guard_bins
        self.gate_id = gate_id

    def _dimension_param(self):
        return self.dimension

    def _fit(self, X: np.ndarray) -> None:
        t = X[:, 0]
        t0, t1 = float(t.min()), float(t.max())
        if t1 <= t0:
            raise GatingError(f"TimeCleanGate ({self._id()}): Time is constant ({t0}); cannot bin it")
        edges = np.linspace(t0, t1, self.n_bins + 1)
        counts, _ = np.histogram(t, bins=edges)
        med = float(np.median(counts))
        rsd = max(1.4826 * float(np.median(np.abs(counts - med))), np.sqrt(max(med, 1.0)))
        dev = np.abs(counts - med)
        bad = (dev > self.n_mad * rsd) & (dev > self.min_relative_change * med)
        # A bin straddling a gap and the burst after it can look normal (the two cancel), so
        # the neighbours of an anomalous bin go too.
        for _ in range(self.guard_bins):
            bad = bad | np.r_[False, bad[:-1]] | np.r_[bad[1:], False]
        self.edges_ = edges
        self.counts_ = counts
        self.good_bins_ = ~bad
        intervals = []
        k = 0
        while k < self.n_bins:
            if bad[k]:
                k += 1
                continue
            j = k
            while j + 1 < self.n_bins and not bad[j + 1]:
                j += 1
            hi = None if j == self.n_bins - 1 else float(edges[j + 1])  # open end keeps the last event
            intervals.append((float(edges[k]), hi))
            k = j + 1
        if not intervals:
            raise GatingError(f"TimeCleanGate ({self._id()}): every Time bin looks anomalous")
        self.intervals_ = intervals

    def _build_gate(self):
        gates = [
            RectangleGate(self._id() if len(self.intervals_) == 1 else f"{self._id()}_{i + 1}",
                          self.dimensions_, [lo], [hi])
            for i, (lo, hi) in enumerate(self.intervals_)
        ]
        if len(gates) == 1:
            return gates[0]
        self.gates_ = gates
        return BooleanGate(self._id(), "or", [g.id for g in gates])
