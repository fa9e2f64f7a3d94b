"""The spillover matrix and the act of compensating events with it.

Convention (the same as FCS 3.1 $SPILLOVER, FlowJo, FlowKit and flowCore): a
spillover matrix S has one row per fluorochrome (named after its primary
detector) and one column per detector, both in ``channels`` order, with a unit
diagonal. S[i, j] is the fraction of fluorochrome i's primary-detector signal that
also lands in detector j. Observed = true @ S, so true = observed @ inv(S).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import functools
from functools import cached_property

import numpy as np
from threadpoolctl import ThreadpoolController

from ..errors import CompensationError

DIAGONAL_TOLERANCE = 1e-4
"""Largest accepted |S[i, i] - 1|; exported matrices print 1, 1.0 or 1.0000."""

MAX_CONDITION = 1e10
"""Condition number above which a spillover matrix counts as singular."""

CHUNK_ROWS = 65_536
"""Events compensated per block: keeps the float64 temporary near 8 MB at 15 channels."""


@dataclass(frozen=True, eq=False)
class SpilloverMatrix:
    """A validated spillover matrix (unitless fractions, rows = source, columns = detector).

    channels : $PnN of the detectors, the order of both rows and columns.
    matrix : (n, n) float64, unit diagonal; stored read-only.
    source : where it came from (keyword and file, or a matrix file path), used in errors.
    """

    channels: tuple[str, ...]
    matrix: np.ndarray
    source: str = "<memory>"

    def __post_init__(self) -> None:
        channels = tuple(str(c) for c in self.channels)
        try:
            matrix = np.array(self.matrix, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CompensationError(self.source, f"spillover values are not numbers ({exc})") from None
        object.__setattr__(self, "channels", channels)
        _validate(channels, matrix, self.source)
        matrix.setflags(write=False)
        object.__setattr__(self, "matrix", matrix)

    @property
    def n(self) -> int:
        return len(self.channels)

    @cached_property
    def inverse(self) -> np.ndarray:
        """inv(matrix), float64, read-only; computed once per matrix."""
        inv = np.linalg.inv(self.matrix)
        inv.setflags(write=False)
        return inv

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpilloverMatrix):
            return NotImplemented
        return self.channels == other.channels and np.array_equal(self.matrix, other.matrix)

    __hash__ = None  # mutable-looking ndarray inside; equality is by value

    def __repr__(self) -> str:
        return f"SpilloverMatrix({self.n} channels from {self.source})"

    def allclose(self, other: "SpilloverMatrix", atol: float = 1e-9) -> bool:
        """Same channels (same order) and entries within ``atol``."""
        return self.channels == other.channels and bool(np.allclose(self.matrix, other.matrix, rtol=0, atol=atol))

    def index(self, name: str) -> int:
        try:
            return self.channels.index(name)
        except ValueError:
            raise CompensationError(self.source, f"channel {name!r} is not in the spillover matrix "
                                    f"(it has: {', '.join(self.channels)})") from None

    def subset(self, channels: Sequence[str]) -> "SpilloverMatrix":
        """The sub-matrix for ``channels`` (in the order given): compensate only these.

        Dropping a fluorochrome means assuming it is absent from the tube, which is what
        FlowJo and FlowKit do for matrix channels a sample lacks.
        """
        wanted = tuple(channels)
        missing = [c for c in wanted if c not in self.channels]
        if missing:
            raise CompensationError(self.source, f"channels not in the spillover matrix: {', '.join(missing)} "
                                    f"(it has: {', '.join(self.channels)})")
        idx = [self.channels.index(c) for c in wanted]
        return SpilloverMatrix(wanted, self.matrix[np.ix_(idx, idx)], self.source)

    def reorder(self, channels: Sequence[str]) -> "SpilloverMatrix":
        """The same matrix with rows and columns permuted to ``channels`` (all of them)."""
        if sorted(channels) != sorted(self.channels):
            raise CompensationError(self.source, "reorder needs exactly the matrix channels: "
                                    f"got {', '.join(channels)}; have {', '.join(self.channels)}")
        return self.subset(channels)

    def to_text(self) -> str:
        """The FCS $SPILLOVER keyword value: ``n,ch1,...,chn,s11,s12,...,snn`` (row-major).

        ``repr`` of a float round-trips exactly, so parsing the text gives the same matrix.
        """
        for name in self.channels:
            if "," in name:
                raise CompensationError(self.source, f"channel name {name!r} contains a comma and "
                                        "cannot be written into $SPILLOVER")
        values = ",".join(repr(float(v)) for v in self.matrix.ravel())
        return f"{self.n},{','.join(self.channels)},{values}"

    def compensate(self, events: np.ndarray, channels: Sequence[str], *,
                   out: np.ndarray | None = None) -> np.ndarray:
        """Compensate the matrix's channels in ``events`` (columns named by ``channels``).

        events : (n_events, n_columns) float32 or float64 array (linear intensities).
        channels : name of every column of ``events``; all matrix channels must be among them.
        out : where to write; may be ``events`` itself (in place). Default: a new array of
            the input dtype (float64 for integer input). Columns not in the matrix are
            copied unchanged.

        Blocks of :data:`CHUNK_ROWS` rows are gathered, multiplied by inv(S) in float64
        and written back in the output dtype, so a float32 input stays float32 and the
        extra memory is one block, whatever the number of events.
        """
        events = np.asarray(events)
        if events.ndim != 2 or events.shape[1] != len(channels):
            raise CompensationError(self.source, f"events of shape {events.shape} do not match "
                                    f"{len(channels)} channel names")
        idx = column_indices(self, channels)
        if out is None:
            dtype = events.dtype if events.dtype.kind == "f" else np.float64
            out = events.astype(dtype, copy=True)
        elif out is not events:
            if out.shape != events.shape:
                raise CompensationError(self.source, f"out has shape {out.shape}, events {events.shape}")
            out[...] = events
        apply_inverse(out, idx, self.inverse)
        return out


def column_indices(spill: SpilloverMatrix, channels: Sequence[str]) -> np.ndarray:
    """Column of each matrix channel in ``channels``; error naming the missing ones."""
    position = {}
    for i, name in enumerate(channels):
        position.setdefault(name, i)
    missing = [c for c in spill.channels if c not in position]
    if missing:
        raise CompensationError(spill.source, f"spillover channels missing from the data: {', '.join(missing)}")
    return np.array([position[c] for c in spill.channels], dtype=np.intp)


def apply_inverse(out: np.ndarray, idx: np.ndarray, inverse: np.ndarray) -> None:
    """out[:, idx] = out[:, idx] @ inverse, block by block, in place.

    Permuting the matrix channels (rows and columns of inverse together) permutes the
    result the same way, so the columns are visited in file order as runs of adjacent
    columns: slices are copied at memory speed where fancy indexing would be 3x slower.
    """
    if idx.size == 0 or out.shape[0] == 0:
        return
    order = np.argsort(idx, kind="stable")
    idx = idx[order]
    inverse = np.ascontiguousarray(inverse[np.ix_(order, order)])
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [idx.size]))
    runs = [(int(a), int(b), int(idx[a])) for a, b in zip(starts, stops)]
    rows = min(CHUNK_ROWS, out.shape[0])
    buf = np.empty((rows, idx.size), dtype=np.float64)
    res = np.empty_like(buf)
    for start in range(0, out.shape[0], CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, out.shape[0])
        block = buf[: stop - start]
        for a, b, col in runs:
            block[:, a:b] = out[start:stop, col : col + b - a]
        # One BLAS thread for the product only (the limit is restored on exit): these products
        # are tiny (rows x 15 @ 15 x 15) and OpenBLAS's extra threads spin between calls, which
        # made compensation 2.5-5x slower on a busy 2-core machine (benchmarks/bench_core.py).
        with _blas_threads().limit(limits=1, user_api="blas"):
            product = np.matmul(block, inverse, out=res[: stop - start])
        for a, b, col in runs:
            out[start:stop, col : col + b - a] = product[:, a:b]


@functools.cache
def _blas_threads() -> ThreadpoolController:
    """The BLAS libraries numpy loaded, found once (finding them costs ~2 ms; limiting, ~10 us)."""
    return ThreadpoolController()


def _validate(channels: tuple[str, ...], matrix: np.ndarray, source: str) -> None:
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise CompensationError(source, f"spillover matrix is not square (shape {matrix.shape})")
    n = matrix.shape[0]
    if n == 0:
        raise CompensationError(source, "spillover matrix is empty")
    if len(channels) != n:
        raise CompensationError(source, f"{len(channels)} channel names for a {n}x{n} spillover matrix")
    seen: set[str] = set()
    dups = [c for c in channels if c in seen or seen.add(c)]
    if dups:
        raise CompensationError(source, f"duplicate channel names in spillover matrix: {', '.join(sorted(set(dups)))}")
    bad = np.argwhere(~np.isfinite(matrix))
    if bad.size:
        i, j = bad[0]
        raise CompensationError(source, f"spillover entry [{channels[i]}, {channels[j]}] is not finite "
                                f"({float(matrix[i, j])}); {len(bad)} such entries")
    off = np.abs(np.diag(matrix) - 1.0)
    worst = int(np.argmax(off))
    if off[worst] > DIAGONAL_TOLERANCE:
        raise CompensationError(source, f"spillover diagonal must be 1: entry [{channels[worst]}, "
                                f"{channels[worst]}] is {float(matrix[worst, worst])!r}")
    cond = np.linalg.cond(matrix)
    if not np.isfinite(cond) or cond > MAX_CONDITION:
        raise CompensationError(source, f"spillover matrix is singular or nearly so "
                                f"(condition number {cond:.3g} > {MAX_CONDITION:.0e})")
