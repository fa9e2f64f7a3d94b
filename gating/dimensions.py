"""How a gate names the data it looks at.

A gate dimension is the Gating-ML triple (channel, compensation, transform). The
gating tree never computes compensation or transforms itself: it asks a
:class:`DataSource` for the values of a dimension. ``cd7flow`` supplies a source
that compensates and transforms a Sample (once per dimension, cached);
:class:`ArraySource` serves plain arrays for tests and automated gates.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import GatingError

UNCOMPENSATED = None
"""Compensation reference meaning 'use the stored values as they are' (what gates carry)."""
UNCOMPENSATED_NAME = "uncompensated"
"""Gating-ML's spelling of :data:`UNCOMPENSATED` (``compensation-ref="uncompensated"``)."""
FCS_COMPENSATION = "FCS"
"""Compensation reference meaning 'the matrix the FCS file carries' (Gating-ML)."""
UNCOMPENSATED_IDS = (UNCOMPENSATED, "", UNCOMPENSATED_NAME)
"""Every compensation reference that means 'as stored'."""


def is_uncompensated(compensation: str | None) -> bool:
    """True when a dimension's compensation reference means 'the stored values'."""
    return compensation in UNCOMPENSATED_IDS


@dataclass(frozen=True)
class Dimension:
    """One axis of a gate.

    channel : $PnN of the channel, or the id of a derived dimension (e.g. a ratio).
    compensation : id of a compensation (None = uncompensated, "FCS" = the file's matrix).
    transform : id of a transform (None = linear/untransformed values).
    """

    channel: str
    compensation: str | None = None
    transform: str | None = None

    def __str__(self) -> str:
        parts = [self.channel]
        if self.compensation:
            parts.append(f"comp={self.compensation}")
        if self.transform:
            parts.append(f"xform={self.transform}")
        return "[" + ", ".join(parts) + "]"


@dataclass(frozen=True)
class RatioDimension:
    """A derived dimension: Gating-ML ``fratio`` of two channels.

    value = A * (numerator - B) / (denominator - C), in the units of the ratio
    (dimensionless when B and C are 0). Division follows IEEE 754 as flowCore's
    ``ratiotGml2`` does (the reference that produced the ISAC compliance results):
    a non-zero value over a zero denominator is +-inf, 0/0 is NaN (outside every
    gate). ``bound_min`` / ``bound_max`` clip the result (Gating-ML bounded
    transformation, max(min(f, boundMax), boundMin)), so an infinite ratio lands on
    the bound; NaN stays NaN. A gate uses it through a
    ``Dimension(channel=<this id>, compensation, transform)``: the compensation
    applies to both input channels, the transform to the ratio.
    """

    id: str
    numerator: str
    denominator: str
    A: float = 1.0
    B: float = 0.0
    C: float = 0.0
    bound_min: float | None = None
    bound_max: float | None = None

    def compute(self, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        num = np.asarray(numerator, dtype=np.float64)
        den = np.asarray(denominator, dtype=np.float64) - self.C
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = self.A * (num - self.B) / den
        if self.bound_min is not None or self.bound_max is not None:
            out = np.clip(out, self.bound_min, self.bound_max)
        return out


@runtime_checkable
class DataSource(Protocol):
    """Anything that can hand a gate the values of a dimension."""

    @property
    def n_events(self) -> int: ...

    def values(self, dimension: Dimension) -> np.ndarray:
        """1-D float array of length n_events for this dimension."""
        ...


class ArraySource:
    """A DataSource over an events x channels array with no compensation.

    ``transforms`` maps a transform id to a vectorised callable (e.g. a
    cd7flow transform's ``apply``); ``derived`` maps a derived-dimension id to a
    :class:`RatioDimension`; a dimension naming a compensation other than
    None is refused, because plain arrays carry no matrix.
    """

    def __init__(
        self,
        events: np.ndarray,
        channels: Sequence[str],
        transforms: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
        derived: Mapping[str, RatioDimension] | None = None,
    ):
        events = np.asarray(events)
        if events.ndim != 2 or events.shape[1] != len(channels):
            raise GatingError(
                f"events must be n x {len(channels)} for channels {list(channels)}, got shape {events.shape}"
            )
        self.events = events
        self.channels = list(channels)
        self._index = {c: i for i, c in enumerate(self.channels)}
        self._lower = {c.lower(): i for i, c in enumerate(self.channels)}
        self.transforms = dict(transforms or {})
        self.derived = dict(derived or {})
        self._cache: dict[Dimension, np.ndarray] = {}

    @property
    def n_events(self) -> int:
        return int(self.events.shape[0])

    def column(self, channel: str) -> np.ndarray:
        i = self._index.get(channel, self._lower.get(channel.lower()))
        if i is None:
            raise GatingError(f"no channel {channel!r} in {self.channels}")
        return self.events[:, i]

    def values(self, dimension: Dimension) -> np.ndarray:
        cached = self._cache.get(dimension)
        if cached is not None:
            return cached
        if not is_uncompensated(dimension.compensation):
            raise GatingError(
                f"dimension {dimension} asks for compensation {dimension.compensation!r}, "
                "but an ArraySource holds no compensation matrix"
            )
        ratio = self.derived.get(dimension.channel)
        if ratio is not None:
            values = ratio.compute(self.column(ratio.numerator), self.column(ratio.denominator))
        else:
            values = self.column(dimension.channel)
        if dimension.transform is not None:
            try:
                transform = self.transforms[dimension.transform]
            except KeyError:
                raise GatingError(f"dimension {dimension} names unknown transform {dimension.transform!r}") from None
            values = np.asarray(transform(values))
        self._cache[dimension] = values
        return values
