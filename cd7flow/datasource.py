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

Lean mode (``lean=True``, the protocol pipeline's): no compensated block is kept. Each
column is computed on its own, a block of :data:`CHUNK_ROWS` rows at a time, with the very
arithmetic of the default mode (the block of stored detectors in float64 times inv(S), one
BLAS thread, then the transform), so the values are the same to the last bit; computed
columns live in a least-recently-used cache of at most ``cache_bytes`` and are recomputed
when asked for again; :meth:`SampleSource.rows_values` computes a column for some events
only. Peak memory is the event matrix plus a few columns, at the cost of recomputing.

Compensation references (Gating-ML): ``None`` or ``"uncompensated"`` = values as
stored; ``"FCS"`` = the sample's own spillover matrix (no matrix = as stored, as the
Gating-ML compliance suite expects); any other id = an entry of ``compensations``,
either a :class:`~cd7flow.compensation.SpilloverMatrix` (detector-named, square)
or a :class:`~cd7flow.compensation.spectrum.SpectrumMatrix` (Gating-ML ``spectrumMatrix``: fluorochrome-named
outputs, possibly more detectors than fluorochromes). A channel that a matrix
does not cover (FSC, SSC, Time) is returned as stored.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gating.dimensions import FCS_COMPENSATION, Dimension, RatioDimension, is_uncompensated

from .compensation.matrix import CHUNK_ROWS, _blas_threads
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
    lean : compute each column on its own, a block of rows at a time, and keep at most
        ``cache_bytes`` of them (default :meth:`lean_cache_bytes`); see the module docstring.
        Otherwise every computed column is kept.
    """

    def __init__(
        self,
        sample: Sample,
        compensations: Mapping[str, Any] | None = None,
        transforms: Mapping[str, Any] | None = None,
        derived: Mapping[str, RatioDimension] | None = None,
        *,
        lean: bool = False,
        cache_bytes: int | None = None,
    ):
        self.sample = sample
        self.compensations = dict(compensations or {})
        self.transforms = dict(transforms or {})
        self.derived = dict(derived or {})
        self.lean = bool(lean)
        self.cache_limit = (cache_bytes if cache_bytes is not None else self.lean_cache_bytes(sample)) \
            if self.lean else None
        self._cache: OrderedDict[Dimension, np.ndarray] = OrderedDict()
        self._compensated: dict[str, tuple[np.ndarray, dict[str, int]]] = {}

    @staticmethod
    def lean_cache_bytes(sample: Sample) -> int:
        """Default lean cache: a quarter of the float32 event matrix, at least 64 MiB, so small
        tubes keep every column and a large one keeps a few."""
        return max(int(sample.n_events) * len(sample.channels), 1 << 26)

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
        self._cache = OrderedDict((d, v) for d, v in self._cache.items() if d in keep)
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
        if self.lean:
            return self.values(Dimension(channel, compensation))
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
            if self.lean:
                self._cache.move_to_end(dimension)
            return cached
        if self.lean:
            return self._lean_values(dimension)
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

    # ---- lean mode ------------------------------------------------------------
    def _lean_values(self, dimension: Dimension) -> np.ndarray:
        """A dimension's values (float64), computed a block of rows at a time (lean mode)."""
        how, transform = self._lean_plan(dimension)
        events = self.sample.events
        if transform is None and how[0] == "stored" and events.dtype == np.float64:
            return events[:, how[1]]  # a free view: nothing computed, nothing cached
        out = np.empty(self.n_events, dtype=np.float64)
        for start, stop, block in self._lean_blocks([dimension], None):
            out[start:stop] = block[:, 0]
        out.setflags(write=False)
        self._lean_keep(dimension, out)
        return out

    def rows_values(self, dimension: Dimension, rows: np.ndarray | slice) -> np.ndarray:
        """``values(dimension)[rows]``: see :meth:`rows_table`."""
        return self.rows_table([dimension], rows)[:, 0]

    def rows_table(self, dimensions: Sequence[Dimension], rows: np.ndarray | slice) -> np.ndarray:
        """(selected events x dimensions) float64: ``values(d)[rows]`` for each d, stacked (rows: a
        bool mask, a slice or increasing event numbers).

        In lean mode the columns that are not cached are computed together a block of rows at a
        time (one compensation product per block for all of them) and only the rows asked for
        are kept: a fit on part of the events never holds whole columns. Same values as
        ``values`` (each block is computed exactly as for the whole column)."""
        dimensions = list(dimensions)
        if not self.lean or self._keeps_whole_columns():
            return np.column_stack([self.values(d)[rows] for d in dimensions]) if dimensions else \
                np.empty((np.arange(self.n_events)[rows].size, 0))
        mask = self._rows_mask(rows)
        if mask is None:  # unordered or repeated event numbers: whole columns, then the rows
            return np.column_stack([self.values(d)[rows] for d in dimensions])
        out = np.empty((int(np.count_nonzero(mask)), len(dimensions)), dtype=np.float64)
        todo = []
        for j, d in enumerate(dimensions):
            cached = self._cache.get(d)
            if cached is not None:
                out[:, j] = cached[mask]
            else:
                todo.append(j)
        if todo:
            filled = 0
            for start, stop, block in self._lean_blocks([dimensions[j] for j in todo], mask):
                keep = mask[start:stop]
                k = int(np.count_nonzero(keep))
                out[filled:filled + k, todo] = block[keep]
                filled += k
        return out

    def blocks(self, dimensions: Sequence[Dimension]):
        """(start, stop, values of rows start:stop x dimensions, float64) over all events, a block
        of :data:`CHUNK_ROWS` rows at a time: one pass over the events for several columns."""
        dimensions = list(dimensions)
        if self.lean and not self._keeps_whole_columns():
            yield from self._lean_blocks(dimensions, None)
            return
        columns = [self.values(d) for d in dimensions]
        for start in range(0, self.n_events, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, self.n_events)
            yield start, stop, np.column_stack([c[start:stop] for c in columns]) if columns else \
                np.empty((stop - start, 0))

    def _keeps_whole_columns(self) -> bool:
        """Lean mode on a tube small next to the cache (16 float64 columns fit: every column a
        protocol uses): whole columns, computed once and cached, are cheaper than blocks of rows
        computed again for each fit. Larger tubes stream blocks: one compensation product per
        block serves all the columns a fit needs (on a 40-detector file a whole column costs a
        product of all 40 detectors)."""
        return self.n_events * 8 * 16 <= self.cache_limit

    def _rows_mask(self, rows) -> np.ndarray | None:
        """``rows`` as a bool mask over the events, or None for unordered / repeated numbers."""
        if isinstance(rows, slice):
            mask = np.zeros(self.n_events, dtype=bool)
            mask[rows] = True
            return mask
        rows = np.asarray(rows)
        if rows.dtype == bool:
            return rows
        index = rows.astype(np.intp, copy=False)
        if index.size > 1 and not np.all(np.diff(index) > 0):
            return None
        mask = np.zeros(self.n_events, dtype=bool)
        mask[index] = True
        return mask

    def _lean_blocks(self, dimensions: list[Dimension], mask: np.ndarray | None):
        """(start, stop, block rows x dimensions float64) for each block of CHUNK_ROWS rows (the
        blocks without an event of ``mask`` are skipped). Dimensions under the same compensation
        share one product per block."""
        plans = [self._lean_plan(d) for d in dimensions]
        for start in range(0, self.n_events, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, self.n_events)
            if mask is not None and not mask[start:stop].any():
                continue
            products: dict[Any, np.ndarray] = {}
            block = np.empty((stop - start, len(dimensions)), dtype=np.float64)
            for j, (how, transform) in enumerate(plans):
                block[:, j] = self._lean_chunk(how, transform, start, stop, products)
            yield start, stop, block

    def _lean_plan(self, dimension: Dimension) -> tuple[tuple, Any]:
        """(how to compute the linear values, the transform or None)."""
        transform = None
        if dimension.transform is not None:
            try:
                transform = self.transforms[dimension.transform]
            except KeyError:
                raise GatingError(f"{self.sample.name}: unknown transform {dimension.transform!r}") from None
        return self._lean_inputs(dimension), transform

    def _lean_chunk(self, how: tuple, transform, start: int, stop: int, products: dict) -> np.ndarray:
        """Rows start:stop (a block boundary: a multiple of CHUNK_ROWS) of a dimension, float64;
        ``products`` keeps this block's compensation products for the other dimensions."""
        block = self._lean_block(how, start, stop, products)
        if transform is not None:
            fn = getattr(transform, "apply", transform)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                block = np.asarray(fn(np.array(block, dtype=np.float64)), dtype=np.float64)
        return block

    def _lean_inputs(self, dimension: Dimension) -> tuple:
        """How to compute a dimension's linear values: ("stored", column), ("product", detector
        columns, inverse, output column) for a spillover-compensated channel, ("ratio", ratio,
        numerator inputs, denominator inputs), or ("exact", values) for spectrum unmixing (the
        float64 mode's block, kept)."""
        comp = dimension.compensation
        ratio = self.derived.get(dimension.channel)
        if ratio is not None:
            return ("ratio", ratio, self._lean_inputs(Dimension(ratio.numerator, comp)),
                    self._lean_inputs(Dimension(ratio.denominator, comp)))
        if is_uncompensated(comp):
            return ("stored", self._column_index(dimension.channel))
        matrix = self._matrix_for(comp)
        if matrix is None:
            return ("stored", self._column_index(dimension.channel))
        if isinstance(matrix, SpectrumMatrix):
            return ("exact", self._channel(dimension.channel, comp)[0])
        col = self._column_index(dimension.channel)
        detectors = []
        for name in matrix.channels:
            try:
                detectors.append(self.sample.channel(name))
            except ChannelNotFound:
                raise GatingError(f"{self.sample.name}: compensation {comp!r} failed: spillover channel "
                                  f"{name} is missing from the data") from None
        if col not in detectors:
            return ("stored", col)  # not covered by the matrix (scatter, time)
        # the float64 mode's product, block for block: the same numbers to the last bit
        inverse = np.ascontiguousarray(matrix.inverse, dtype=np.float64)
        return ("product", np.array(detectors, dtype=np.intp), inverse, detectors.index(col), comp)

    def _column_index(self, channel: str) -> int:
        try:
            return self.sample.channel(channel)
        except ChannelNotFound as exc:
            raise GatingError(str(exc)) from None

    def _lean_block(self, how: tuple, start: int, stop: int, products: dict) -> np.ndarray:
        """Rows start:stop of a dimension's linear values, float64."""
        kind = how[0]
        if kind == "stored":
            return self.sample.events[start:stop, how[1]].astype(np.float64)
        if kind == "product":
            product = products.get(how[4])
            if product is None:
                # as SpillOverMatrix.compensate does it on the whole block (apply_inverse): the
                # block of detectors in float64 times inv(S), one BLAS thread
                block = np.ascontiguousarray(self.sample.events[start:stop][:, how[1]], dtype=np.float64)
                with _blas_threads().limit(limits=1, user_api="blas"):
                    product = products[how[4]] = np.matmul(block, how[2])
            return product[:, how[3]]
        if kind == "ratio":
            return np.asarray(how[1].compute(self._lean_block(how[2], start, stop, products),
                                             self._lean_block(how[3], start, stop, products)), dtype=np.float64)
        return np.asarray(how[1][start:stop], dtype=np.float64)

    def _lean_keep(self, dimension: Dimension, values: np.ndarray) -> None:
        """Cache a computed column; over ``cache_limit`` the least recently used go first."""
        self._cache[dimension] = values
        while len(self._cache) > 1 and sum(v.nbytes for v in self._cache.values()) > self.cache_limit:
            self._cache.popitem(last=False)

    def dimensions_table(self, dimensions: Sequence[Dimension]) -> np.ndarray:
        """(n_events, len(dimensions)) float64 array of several dimensions (for plotting)."""
        return np.column_stack([self.values(d) for d in dimensions])
