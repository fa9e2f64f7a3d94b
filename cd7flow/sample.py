"""The in-memory model of one FCS data set: events plus what TEXT said about them."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CD7FlowError

if TYPE_CHECKING:
    from .compensation import SpilloverMatrix


class CaseInsensitiveDict(Mapping[str, str]):
    """A read-only mapping of TEXT keywords with case-insensitive lookup.

    FCS keywords are case-insensitive by the standard ($P1N == $p1n); the keys keep
    the spelling found in the file so that a writer can reproduce them.
    """

    def __init__(self, data: Mapping[str, str] | None = None):
        self._data: dict[str, tuple[str, str]] = {}
        for key, value in (data or {}).items():
            self._data[key.upper()] = (key, value)

    def __getitem__(self, key: str) -> str:
        return self._data[key.upper()][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.upper() in self._data

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._data.values())

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"CaseInsensitiveDict({dict(self.items())!r})"


class ChannelNotFound(CD7FlowError, KeyError):
    """A channel or marker name matches nothing in the sample."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class Sample:
    """One data set of an FCS file.

    Attributes
    ----------
    events : (n_events, n_channels) float array
        float32 for $DATATYPE F files, float64 otherwise (so integer and log-decoded
        values are exact). With ``preprocess=True`` $PnE log decoding and $PnG gain
        division are applied (flowCore's "linearize-with-PnG-scaling").
    channels : $PnN of each column, in file order (duplicates made unique with a suffix).
    markers : $PnS of each column, '' where absent.
    metadata : every TEXT keyword, case-insensitive lookup.
    ranges : $PnR of each column (float).
    spillover : the matrix the file carries, or None.
    path, sha256 : where the events came from and the file's sha256 (hex).
    """

    events: np.ndarray
    channels: tuple[str, ...]
    markers: tuple[str, ...]
    metadata: CaseInsensitiveDict
    ranges: np.ndarray
    spillover: "SpilloverMatrix | None" = None
    path: str | None = None
    sha256: str | None = None
    dataset: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return int(self.events.shape[0])

    @property
    def name(self) -> str:
        import os

        return os.path.basename(self.path) if self.path else "<memory>"

    def channel(self, name: str) -> int:
        """Column index of a channel given by $PnN or $PnS, case-insensitively.

        $PnN wins over $PnS when a name matches both; a name matching several
        markers is an error rather than a silent first pick.
        """
        wanted = name.strip().lower()
        for i, ch in enumerate(self.channels):
            if ch.lower() == wanted:
                return i
        hits = [i for i, m in enumerate(self.markers) if m and m.strip().lower() == wanted]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ChannelNotFound(
                f"{self.name}: marker {name!r} labels several channels "
                f"({', '.join(self.channels[i] for i in hits)}); name the channel ($PnN) instead"
            )
        raise ChannelNotFound(
            f"{self.name}: no channel or marker named {name!r} "
            f"(channels: {', '.join(self.channels)})"
        )

    def values(self, name: str) -> np.ndarray:
        """The column of one channel ($PnN or $PnS), as a view."""
        return self.events[:, self.channel(name)]

    def subset(self, mask: np.ndarray) -> "Sample":
        """A new Sample holding only the events where ``mask`` is true (for export)."""
        mask = np.asarray(mask)
        return Sample(
            events=self.events[mask],
            channels=self.channels,
            markers=self.markers,
            metadata=self.metadata,
            ranges=self.ranges,
            spillover=self.spillover,
            path=self.path,
            sha256=self.sha256,
            dataset=self.dataset,
            extra=dict(self.extra),
        )

    def to_anndata(self):
        """This sample as an ``anndata.AnnData`` (events x channels); see :func:`cd7flow.interchange.to_anndata`."""
        from .interchange import to_anndata

        return to_anndata(self)
