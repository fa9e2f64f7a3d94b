"""The DataSource that gates read a Sample through: compensation, derived ratios, transforms.

``SampleSource(sample, compensations, transforms, derived)`` answers
``values(Dimension)`` for the gating tree, always as float64 (a float32 sample is
widened, so gate limits are compared at full precision).

Memory: only what costs work is kept. Each compensation is applied once, to the
channels its matrix covers, as one float64 block; compensated columns are views of
it. Transformed and ratio dimensions are computed once and cached (float64).
Stored, uncompensated, untransformed channels are not cached: a float64 sample
serves read-only views of its event matrix, a float32 one a fresh float64 copy per
call (cheap next to a transform, and it would double the matrix to keep). A
viewer calls :meth:`SampleSource.retain` / :meth:`SampleSource.clear_cache` to let
go of columns it no longer shows.

Compensation references (Gating-ML): ``None`` or ``"uncompensated"`` = values as
stored; ``"FCS"`` = the sample's own spillover matrix (no matrix = as stored, as the
Gating-ML compliance suite expects); any other id = an entry of ``compensations``,
either a :class:`~cd7flow.compensation.SpilloverMatrix` (detector-named, square)
or a :class:`~cd7flow.compensation.spectrum.SpectrumMatrix` (Gating-ML ``spectrumMatrix``: fluorochrome-named
outputs, possibly more detectors than fluorochromes). A channel that a matrix
does not cover (FSC, SSC, Time) is returned as stored.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gating.dimensions import FCS_COMPENSATION, Dimension, RatioDimension, is_uncompensated

from .compensation.spectrum import SpectrumMatrix
from .errors import GatingError
from .sample import ChannelNotFound, Sample

__all__ = ["SampleSource"]


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

    # ---- cache control -------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget every computed column and compensated block (they are recomputed on demand)."""
        self._cache.clear()
        self._compensated.clear()

    def retain(self, dimensions) -> None:
        """Keep cached columns only for ``dimensions`` (and the compensations they use)."""
        keep = set(dimensions)
        self._cache = {d: v for d, v in self._cache.items() if d in keep}
        used = {d.compensation for d in keep}
        self._compensated = {c: b for c, b in self._compensated.items() if c in used}

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the cache (compensated blocks counted once, views of them not again)."""
        owners: dict[int, int] = {}
        for arr in [*self._cache.values(), *(b for b, _ in self._compensated.values())]:
            base = arr
            while isinstance(base.base, np.ndarray):
                base = base.base
            if base is self.sample.events or (isinstance(self.sample.events, np.ndarray)
                                              and np.may_share_memory(base, self.sample.events)):
                continue  # a view of the sample's own matrix costs nothing
            owners[id(base)] = base.nbytes
        return sum(owners.values())

    # ---- channels under a compensation ---------------------------------
    def _raw(self, channel: str) -> np.ndarray:
        """A stored channel as float64: a view when the sample is float64, else a new array."""
        try:
            return np.asarray(self.sample.values(channel), dtype=np.float64)
        except ChannelNotFound as exc:
            raise GatingError(str(exc)) from None

    def _matrix_for(self, comp_id: str):
        if comp_id == FCS_COMPENSATION:
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
                # in place: the block is already our own float64 copy (a second one would be
                # 8 bytes x events x channels more at the peak, for the same values)
                comp = matrix.compensate(block, channels, out=block)
            except Exception as exc:  # CompensationError names the matrix source
                raise GatingError(f"{self.sample.name}: compensation {comp_id!r} failed: {exc}") from exc
            done = (np.asarray(comp, dtype=np.float64), {c: i for i, c in enumerate(channels)})
        self._compensated[comp_id] = done
        return done

    def channel_values(self, channel: str, compensation: str | None) -> np.ndarray:
        """One channel after the named compensation (before any transform), float64."""
        return self._channel(channel, compensation)[0]

    def _channel(self, channel: str, compensation: str | None) -> tuple[np.ndarray, bool]:
        """(values, is_compensated_column): False means the stored channel (see ``_raw``)."""
        if is_uncompensated(compensation):
            return self._raw(channel), False
        block, index = self._compensate(compensation)
        matrix = self._matrix_for(compensation)
        if isinstance(matrix, SpectrumMatrix):
            # outputs are fluorochromes, not FCS channels: no $PnN/$PnS aliasing applies
            i = matrix.output_index(channel)
            if i is not None:
                return block[:, i], True
            return self._raw(channel), False  # not unmixed by the matrix (scatter, time)
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
            return self._raw(channel), False  # not covered by the matrix (scatter, time)
        return block[:, i], True

    # ---- DataSource --------------------------------------------------------
    def values(self, dimension: Dimension) -> np.ndarray:
        cached = self._cache.get(dimension)
        if cached is not None:
            return cached
        ratio = self.derived.get(dimension.channel)
        stored = False
        if ratio is not None:
            values = ratio.compute(
                self.channel_values(ratio.numerator, dimension.compensation),
                self.channel_values(ratio.denominator, dimension.compensation),
            )
        else:
            values, compensated = self._channel(dimension.channel, dimension.compensation)
            stored = not compensated
        if dimension.transform is not None:
            values = self._transform(dimension.transform, values)
            stored = False
        values = np.asarray(values, dtype=np.float64)
        values.setflags(write=False)
        # a stored channel is cached only when it is a free view (float64 sample)
        if not stored or np.may_share_memory(values, self.sample.events):
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
