"""The DataSource that gates read a Sample through: compensation, derived ratios, transforms.

``SampleSource(sample, compensations, transforms, derived)`` answers
``values(Dimension)`` for the gating tree. Each distinct dimension is computed once
and cached; each compensation is applied once to the whole event matrix.

Compensation references (Gating-ML): ``None`` or ``"uncompensated"`` = values as
stored; ``"FCS"`` = the sample's own spillover matrix (no matrix = as stored, as the
Gating-ML compliance suite expects); any other id = an entry of ``compensations``,
either a :class:`~cd7flow.compensation.SpilloverMatrix` (detector-named, square)
or a :class:`SpectrumMatrix` (Gating-ML ``spectrumMatrix``: fluorochrome-named
outputs, possibly more detectors than fluorochromes). A channel that a matrix
does not cover (FSC, SSC, Time) is returned as stored.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gating.dimensions import Dimension, RatioDimension
from gating.tree import GatingResult, GatingTree

from .errors import GatingError
from .sample import ChannelNotFound, Sample

__all__ = ["SampleSource", "SpectrumMatrix", "GatingStrategy"]

UNCOMPENSATED_IDS = (None, "", "uncompensated")


@dataclass(frozen=True, eq=False)
class SpectrumMatrix:
    """A Gating-ML ``spectrumMatrix``: one spectrum (row) per fluorochrome over the detectors.

    ``matrix`` is (n_fluorochromes, n_detectors): observed detectors = true @ matrix.
    Unmixing is ordinary least squares, true = observed @ pinv(matrix), which is
    inv(matrix) when it is square. With ``inverted_already`` the file gave the
    unmixing matrix itself, (n_detectors, n_fluorochromes), used as is.
    """

    id: str
    fluorochromes: tuple[str, ...]
    detectors: tuple[str, ...]
    matrix: np.ndarray
    inverted_already: bool = False

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        f, d = len(self.fluorochromes), len(self.detectors)
        want = (d, f) if self.inverted_already else (f, d)
        if m.shape != want:
            raise GatingError(
                f"spectrum matrix {self.id!r}: expected {want[0]}x{want[1]} coefficients "
                f"for {f} fluorochromes and {d} detectors, got {m.shape}"
            )
        if not np.all(np.isfinite(m)):
            raise GatingError(f"spectrum matrix {self.id!r} has non-finite coefficients")
        if f > d:
            raise GatingError(f"spectrum matrix {self.id!r}: more fluorochromes ({f}) than detectors ({d})")
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    @property
    def unmixing(self) -> np.ndarray:
        """(n_detectors, n_fluorochromes) matrix U with true = observed @ U."""
        if self.inverted_already:
            return self.matrix
        if self.matrix.shape[0] == self.matrix.shape[1]:
            try:
                return np.linalg.inv(self.matrix)
            except np.linalg.LinAlgError:
                raise GatingError(f"spectrum matrix {self.id!r} is singular") from None
        return np.linalg.pinv(self.matrix)

    def unmix(self, detector_values: np.ndarray) -> np.ndarray:
        """(n_events, n_detectors) observed values -> (n_events, n_fluorochromes), float64."""
        return np.asarray(detector_values, dtype=np.float64) @ self.unmixing


class SampleSource:
    """A :class:`gating.dimensions.DataSource` over one Sample.

    sample : the Sample (events in stored, preprocessed units).
    compensations : id -> SpilloverMatrix or SpectrumMatrix ("FCS" is implicit).
    transforms : id -> object with ``apply(x) -> y`` (a cd7flow transform) or a callable.
    derived : id -> RatioDimension (Gating-ML fratio), used as a Dimension's channel.
    """

    def __init__(
        self,
        sample: Sample,
        compensations: Mapping[str, Any] | None = None,
        transforms: Mapping[str, Any] | None = None,
        derived: Mapping[str, RatioDimension] | None = None,
    ):
        self.sample = sample
        self.compensations = dict(compensations or {})
        self.transforms = dict(transforms or {})
        self.derived = dict(derived or {})
        self._cache: dict[Dimension, np.ndarray] = {}
        self._compensated: dict[str, tuple[np.ndarray, dict[str, int]]] = {}

    @property
    def n_events(self) -> int:
        return self.sample.n_events

    # ---- channels under a compensation ---------------------------------
    def _raw(self, channel: str) -> np.ndarray:
        try:
            return np.asarray(self.sample.values(channel), dtype=np.float64)
        except ChannelNotFound as exc:
            raise GatingError(str(exc)) from None

    def _matrix_for(self, comp_id: str):
        if comp_id == "FCS":
            return self.sample.spillover
        try:
            return self.compensations[comp_id]
        except KeyError:
            known = ", ".join(sorted(self.compensations)) or "none"
            raise GatingError(
                f"{self.sample.name}: unknown compensation {comp_id!r} (known: FCS, uncompensated, {known})"
            ) from None

    def _compensate(self, comp_id: str) -> tuple[np.ndarray, dict[str, int]]:
        """Compensated columns (float64) and a name -> column index map, computed once per id."""
        done = self._compensated.get(comp_id)
        if done is not None:
            return done
        matrix = self._matrix_for(comp_id)
        if matrix is None:  # "FCS" on a file without a spillover keyword
            done = (np.empty((self.n_events, 0)), {})
        elif isinstance(matrix, SpectrumMatrix):
            observed = np.column_stack([self._raw(d) for d in matrix.detectors])
            done = (matrix.unmix(observed), {f: i for i, f in enumerate(matrix.fluorochromes)})
        else:
            channels = list(matrix.channels)
            idx = [self.sample.channel(c) for c in channels]
            block = np.ascontiguousarray(self.sample.events[:, idx], dtype=np.float64)
            try:
                comp = matrix.compensate(block, channels)
            except Exception as exc:  # CompensationError names the matrix source
                raise GatingError(f"{self.sample.name}: compensation {comp_id!r} failed: {exc}") from exc
            done = (np.asarray(comp, dtype=np.float64), {c: i for i, c in enumerate(channels)})
        self._compensated[comp_id] = done
        return done

    def channel_values(self, channel: str, compensation: str | None) -> np.ndarray:
        """One channel after the named compensation (before any transform), float64."""
        if compensation in UNCOMPENSATED_IDS:
            return self._raw(channel)
        block, index = self._compensate(compensation)
        i = index.get(channel)
        if i is None:
            # the matrix may name detectors by $PnS while the gate uses $PnN (or vice versa)
            try:
                col = self.sample.channel(channel)
            except ChannelNotFound as exc:
                raise GatingError(str(exc)) from None
            for name, j in index.items():
                try:
                    if self.sample.channel(name) == col:
                        i = j
                        break
                except ChannelNotFound:
                    continue
        if i is None:
            return self._raw(channel)  # not covered by the matrix (scatter, time)
        return block[:, i]

    # ---- DataSource --------------------------------------------------------
    def values(self, dimension: Dimension) -> np.ndarray:
        cached = self._cache.get(dimension)
        if cached is not None:
            return cached
        ratio = self.derived.get(dimension.channel)
        if ratio is not None:
            values = ratio.compute(
                self.channel_values(ratio.numerator, dimension.compensation),
                self.channel_values(ratio.denominator, dimension.compensation),
            )
        else:
            values = self.channel_values(dimension.channel, dimension.compensation)
        if dimension.transform is not None:
            values = self._transform(dimension.transform, values)
        values = np.asarray(values, dtype=np.float64)
        values.setflags(write=False)
        self._cache[dimension] = values
        return values

    def _transform(self, transform_id: str, values: np.ndarray) -> np.ndarray:
        try:
            transform = self.transforms[transform_id]
        except KeyError:
            raise GatingError(f"{self.sample.name}: unknown transform {transform_id!r}") from None
        fn = getattr(transform, "apply", transform)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.asarray(fn(np.array(values, dtype=np.float64)), dtype=np.float64)

    def dimensions_table(self, dimensions: Sequence[Dimension]) -> np.ndarray:
        """(n_events, len(dimensions)) float64 array of several dimensions (for plotting)."""
        return np.column_stack([self.values(d) for d in dimensions])


@dataclass
class GatingStrategy:
    """Gates (as a tree) plus everything needed to compute their dimensions.

    transforms : id -> transform (``apply(x)``), e.g. :class:`GmlTransform`.
    compensations : id -> SpilloverMatrix or SpectrumMatrix ("FCS"/"uncompensated" are implicit).
    derived : id -> RatioDimension (Gating-ML fratio).
    """

    tree: GatingTree = field(default_factory=GatingTree)
    transforms: dict[str, Any] = field(default_factory=dict)
    compensations: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, RatioDimension] = field(default_factory=dict)
    source_path: str | None = None

    def source(self, sample: Sample) -> "SampleSource":
        return SampleSource(sample, self.compensations, self.transforms, self.derived)

    def apply(self, sample: Sample) -> GatingResult:
        return self.tree.apply(self.source(sample))
