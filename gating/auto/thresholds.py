"""1-D thresholds: the density valley between peaks, and a percentile of a reference.

Values are in the units of the dimension after its transform (e.g. logicle
units for a fluorescence channel); every threshold is returned in those units.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks
from sklearn.utils._param_validation import Interval, StrOptions

from ..dimensions import Dimension
from ..errors import GatingError
from ..gates import RectangleGate
from ._base import AutoGate, ParameterError

SIDES = ("above", "below")


@dataclass(frozen=True)
class Density1D:
    """A binned Gaussian kernel density estimate: ``grid`` (bin centres) and ``density`` (integrates to 1)."""

    grid: np.ndarray
    density: np.ndarray
    bandwidth: float


def density_1d(x: np.ndarray, n_bins: int = 512, adjust: float = 1.0, lo: float | None = None,
               hi: float | None = None) -> Density1D:
    """Binned KDE: histogram on ``n_bins`` bins then Gaussian smoothing (O(n), no per-event loop).

    Bandwidth: Silverman's rule on the robust spread (min(sd, IQR/1.34)), times ``adjust``
    (openCyto's ``adjust``). The grid covers the 0.1-99.9th percentiles widened by 3
    bandwidths, so a peak piled against the lower edge of the scale still shows as a peak.
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.all():  # (no copy of what may be most of a file unless there is a NaN)
        x = x[finite]
    if x.size < 2:
        raise GatingError(f"a density needs at least 2 finite values, got {x.size}")
    q1, q3 = np.percentile(x, [25, 75])
    spread = min(np.std(x), (q3 - q1) / 1.34) or np.std(x) or 1.0
    bw = 0.9 * spread * x.size ** (-0.2) * adjust
    p_lo, p_hi = np.percentile(x, [0.1, 99.9])
    lo = p_lo - 3 * bw if lo is None else lo
    hi = p_hi + 3 * bw if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(x, bins=n_bins, range=(lo, hi))
    width = edges[1] - edges[0]
    smooth = gaussian_filter1d(counts.astype(np.float64), sigma=max(bw / width, 0.5), mode="constant")
    total = smooth.sum() * width
    return Density1D((edges[:-1] + edges[1:]) / 2, smooth / total if total > 0 else smooth, float(bw))


def find_density_peaks(d: Density1D, min_height: float = 0.05, min_prominence: float = 0.02) -> np.ndarray:
    """Indices of peaks at least ``min_height`` x and ``min_prominence`` x the highest peak.

    The density is padded with zeros so a mode at either end of the grid counts.
    """
    padded = np.concatenate([[0.0], d.density, [0.0]])
    top = padded.max()
    idx, _ = find_peaks(padded, height=min_height * top, prominence=min_prominence * top)
    return idx - 1


def valley_between(d: Density1D, left: int, right: int) -> float:
    """Grid value of the density minimum between two peak indices (the middle of a flat floor)."""
    seg = d.density[left:right + 1]
    lows = np.flatnonzero(seg <= seg.min() * (1 + 1e-9))
    return float(d.grid[left + int(round(lows.mean()))])


def tail_point(d: Density1D, peak: int, fraction: float, direction: str) -> float:
    """Where the density first falls below ``fraction`` x the peak height, walking away from the peak."""
    height = d.density[peak] * fraction
    if direction == "right":
        below = np.flatnonzero(d.density[peak:] < height)
        return float(d.grid[peak + below[0]] if below.size else d.grid[-1])
    below = np.flatnonzero(d.density[:peak + 1][::-1] < height)
    return float(d.grid[peak - below[0]] if below.size else d.grid[0])


class _Threshold1D(AutoGate):
    n_dims = 1
    _parameter_constraints = {
        "dimension": [str, Dimension, "array-like"],
        "gate_id": [str, None],
        "side": [StrOptions(set(SIDES))],
    }

    def __init__(self, dimension, side: str = "above", gate_id: str | None = None):
        self.dimension = dimension
        self.side = side
        self.gate_id = gate_id

    def _dimension_param(self):
        return self.dimension

    def _build_gate(self) -> RectangleGate:
        # Gating-ML ranges are min-inclusive, max-exclusive: "above" keeps x >= t, "below" keeps x < t.
        if self.side == "above":
            return RectangleGate(self._id(), self.dimensions_, [self.threshold_], [None])
        return RectangleGate(self._id(), self.dimensions_, [None], [self.threshold_])


class DensityThreshold(_Threshold1D):
    """The density minimum between the two most prominent peaks (like openCyto's mindensity).

    Parameters
    ----------
    dimension : the channel (Dimension or name) the threshold cuts.
    side : "above" keeps events >= threshold, "below" keeps events < threshold.
    search : optional (low, high) range, in the dimension's units, where peaks and the
        valley are looked for (e.g. to skip an off-scale pile-up).
    adjust : bandwidth multiplier (1 = Silverman's rule).
    min_peak_height : a peak must reach this fraction of the highest peak.
    fallback_fraction : with only one peak there is no valley; the threshold is then put
        where the density falls below this fraction of the peak, on the ``fallback_direction``
        side of it (the recorded ``method_`` says so).

    Attributes after fit: ``threshold_``, ``peaks_`` (grid values), ``method_`` ("valley" or
    "tail"), ``density_`` (the :class:`Density1D` used), ``gate_``.
    """

    gate_id_default = "density_threshold"
    _parameter_constraints = {
        **_Threshold1D._parameter_constraints,
        "search": ["array-like", None],
        "adjust": [Interval(Real, 0, None, closed="neither")],
        "min_peak_height": [Interval(Real, 0, 1, closed="both")],
        "fallback_fraction": [Interval(Real, 0, 1, closed="neither")],
        "fallback_direction": [StrOptions({"left", "right"})],
        "n_bins": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(self, dimension, side: str = "above", search: tuple[float, float] | None = None,
                 adjust: float = 1.0, min_peak_height: float = 0.05, fallback_fraction: float = 0.01,
                 fallback_direction: str = "right", n_bins: int = 512, gate_id: str | None = None):
        self.dimension = dimension
        self.side = side
        self.gate_id = gate_id
        self.search = search
        self.adjust = adjust
        self.min_peak_height = min_peak_height
        self.fallback_fraction = fallback_fraction
        self.fallback_direction = fallback_direction
        self.n_bins = n_bins

    def _check_params(self) -> None:
        if self.search is not None and (len(self.search) != 2 or not self.search[0] < self.search[1]):
            raise ParameterError("search", f"{type(self).__name__}: search must be (low, high) with low < high, "
                                           f"got {self.search!r}")

    def _fit(self, X: np.ndarray) -> None:
        x = X[:, 0]
        if self.search is not None:
            lo, hi = self.search
            x = x[(x >= lo) & (x <= hi)]
            if x.size < self.min_fit_events:
                raise GatingError(
                    f"DensityThreshold ({self._id()}): only {x.size} events inside search range {self.search}"
                )
        d = density_1d(x, n_bins=self.n_bins, adjust=self.adjust)
        peaks = find_density_peaks(d, min_height=self.min_peak_height)
        self.density_ = d
        if peaks.size >= 2:
            # The two most prominent peaks, in grid order; the valley lies between them.
            top2 = np.sort(peaks[np.argsort(d.density[peaks])[-2:]])
            self.peaks_ = d.grid[top2]
            self.threshold_ = valley_between(d, int(top2[0]), int(top2[1]))
            self.method_ = "valley"
        else:
            peak = int(peaks[0]) if peaks.size else int(np.argmax(d.density))
            self.peaks_ = d.grid[[peak]]
            self.threshold_ = tail_point(d, peak, self.fallback_fraction, self.fallback_direction)
            self.method_ = "tail"


class _ReferenceThreshold(_Threshold1D):
    """A threshold from a reference population's values (``fit`` takes the reference only)."""

    _parameter_constraints = {
        **_Threshold1D._parameter_constraints,
        "min_reference_events": [Interval(Integral, 1, None, closed="left")],
    }

    def _min_events(self) -> int:
        return int(self.min_reference_events)

    def _fit(self, X: np.ndarray) -> None:
        self.threshold_ = self._threshold(X[:, 0])
        self.n_reference_ = int(X.shape[0])

    def _threshold(self, x: np.ndarray) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


class PercentileThreshold(_ReferenceThreshold):
    """A percentile of a reference population (e.g. the 99.5th of CD7 on B cells + granulocytes,
    or of the same channel in an FMO tube): ``fit`` takes the reference values only.

    A high percentile moves as soon as more than (100 - percentile)% of the reference is
    contaminated by positive events; see :class:`RobustReferenceThreshold` when the
    reference cannot be kept that clean.

    Attributes after fit: ``threshold_`` (dimension units), ``n_reference_`` (events used).
    """

    gate_id_default = "percentile_threshold"
    _parameter_constraints = {
        **_ReferenceThreshold._parameter_constraints,
        "percentile": [Interval(Real, 0, 100, closed="neither")],
    }

    def __init__(self, dimension, percentile: float = 99.5, side: str = "above", min_reference_events: int = 50,
                 gate_id: str | None = None):
        self.dimension = dimension
        self.percentile = percentile
        self.side = side
        self.min_reference_events = min_reference_events
        self.gate_id = gate_id

    def _threshold(self, x: np.ndarray) -> float:
        return float(np.percentile(x, self.percentile))


class RobustReferenceThreshold(_ReferenceThreshold):
    """Median + ``n_sd`` robust SDs of a negative reference population (``fit`` takes it).

    The robust SD is half the 15.87th-84.13th percentile range, so up to ~15% of positive
    contaminants in the reference (a few NK cells in a granulocyte gate, doublets) barely
    move the threshold, unlike a 99.5th percentile. Give transformed values (on a logicle
    scale negatives are close to symmetric); the default 4 SDs is ~99.997% of a normal.

    Attributes after fit: ``threshold_``, ``median_``, ``robust_sd_``, ``n_reference_``.
    """

    gate_id_default = "robust_threshold"
    _parameter_constraints = {
        **_ReferenceThreshold._parameter_constraints,
        "n_sd": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, dimension, n_sd: float = 4.0, side: str = "above", min_reference_events: int = 50,
                 gate_id: str | None = None):
        self.dimension = dimension
        self.n_sd = n_sd
        self.side = side
        self.min_reference_events = min_reference_events
        self.gate_id = gate_id

    def _threshold(self, x: np.ndarray) -> float:
        lo, med, hi = np.percentile(x, [15.865525393145708, 50.0, 84.13447460685429])
        self.median_ = float(med)
        self.robust_sd_ = float(hi - lo) / 2
        return self.median_ + self.n_sd * self.robust_sd_
