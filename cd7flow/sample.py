"""The in-memory model of one FCS data set: events plus what TEXT said about them."""
from __future__ import annotations

import copy
import hashlib
import mmap
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
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


@dataclass(frozen=True)
class ChannelInfo:
    """What the FCS file says about one column of the events.

    index : column in ``Sample.events``.
    name : $PnN (made unique when the file repeats a name); ``file_name`` is the name as written.
    marker : $PnS ('' when absent).
    range : $PnR (channel units).
    details : the other per-channel keywords the reader decoded (``datatype``, ``bits``,
        ``amplification`` ($PnE), ``gain`` ($PnG), ``detector_voltage_v`` ...; see
        :func:`cd7flow.io.fcs_channels.channel_info`), read-only; empty for a Sample built in memory.
    is_time : the acquisition-time channel.
    """

    index: int
    name: str
    marker: str
    range: float
    file_name: str
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    is_time: bool = False

    @property
    def label(self) -> str:
        """'PnN (PnS)' when the channel has a marker, else just PnN."""
        return f"{self.name} ({self.marker})" if self.marker and self.marker != self.name else self.name


@dataclass(eq=False)
class Sample:
    """One data set of an FCS file.

    ``==`` is identity (two reads of one file are two samples); :meth:`equals` compares
    content. Nothing here changes the arrays it is given: ``ranges`` is kept as a
    read-only copy and :meth:`subset` makes new arrays.

    Attributes
    ----------
    events : (n_events, n_channels) float array
        float32 for $DATATYPE F files, float64 otherwise (so integer and log-decoded
        values are exact). With ``preprocess=True`` $PnE log decoding and $PnG gain
        division are applied (flowCore's "linearize-with-PnG-scaling").
    channels : $PnN of each column, in file order (duplicates made unique with a suffix).
    markers : $PnS of each column, '' where absent.
    metadata : every TEXT keyword, case-insensitive lookup.
    ranges : $PnR of each column (float, read-only).
    spillover : the matrix the file carries, or None.
    path, sha256 : where the events came from and the sha256 (hex) of the file's bytes,
        computed by the reader from the bytes it decoded (never by reading the file again);
        None for a sample made in memory unless :meth:`compute_sha256` was given the bytes.

    :attr:`channel_info` gives the per-channel facts as one :class:`ChannelInfo` record
    per column; ``channels``, ``markers`` and ``ranges`` are the same facts as tuples/arrays.
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

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.markers = tuple(self.markers)
        ranges = np.array(self.ranges, dtype=np.float64)  # a copy: the caller's array stays as it was
        ranges.setflags(write=False)
        self.ranges = ranges

    @property
    def n_events(self) -> int:
        return int(self.events.shape[0])

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if self.path else "<memory>"

    @property
    def channel_info(self) -> tuple[ChannelInfo, ...]:
        """One :class:`ChannelInfo` per column, in column order."""
        details = self.extra.get("channel_info") or ()
        file_names = self.extra.get("original_channels") or self.channels
        time = self.extra.get("time_channel")
        return tuple(
            ChannelInfo(
                index=i, name=name, marker=self.markers[i] if i < len(self.markers) else "",
                range=float(self.ranges[i]) if i < len(self.ranges) else float("nan"),
                file_name=file_names[i] if i < len(file_names) else name,
                details=MappingProxyType(dict(details[i])) if i < len(details) else MappingProxyType({}),
                is_time=time == i,
            )
            for i, name in enumerate(self.channels)
        )

    def equals(self, other: object) -> bool:
        """Same content: events (NaN equal to NaN), channels, markers, ranges, TEXT keywords and matrix."""
        if not isinstance(other, Sample):
            return False
        return (
            self.channels == other.channels
            and self.markers == other.markers
            and self.events.shape == other.events.shape
            and np.array_equal(self.events, other.events, equal_nan=True)
            and np.array_equal(self.ranges, other.ranges, equal_nan=True)
            and dict(self.metadata.items()) == dict(other.metadata.items())
            and self.spillover == other.spillover
        )

    def compute_sha256(self, data: bytes | memoryview | None = None) -> str:
        """Set and return ``sha256`` from ``data`` (the file's bytes) or, given none, by reading ``path`` once.

        Explicit on purpose: nothing else re-reads the file behind the caller's back.
        """
        if data is None:
            if not self.path:
                raise CD7FlowError(f"{self.name}: no file to hash (the sample was made in memory)")
            h = hashlib.sha256()
            try:
                with open(self.path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            except OSError as exc:
                raise CD7FlowError(f"{self.path}: cannot read to compute sha256: {exc.strerror or exc}") from None
            self.sha256 = h.hexdigest()
        else:
            self.sha256 = _hash_bytes(data)
        return self.sha256

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
        return self.with_events(self.events[np.asarray(mask)])

    def with_events(self, events: np.ndarray) -> "Sample":
        """A new Sample sharing everything but the events (and a copy of ``extra``).

        A shallow copy, so no constructor runs again: ``sha256`` is carried as it is.
        """
        new = copy.copy(self)
        new.events = events
        new.extra = dict(self.extra)
        return new

    def to_anndata(self):
        """This sample as an ``anndata.AnnData`` (events x channels); see :func:`cd7flow.interchange.to_anndata`."""
        from .interchange import to_anndata

        return to_anndata(self)


_HASH_BLOCK = 1 << 23  # bytes hashed at a time (a multiple of every page size)


def _hash_bytes(data) -> str:
    """sha256 of ``data``; a memory-mapped file is hashed block by block and each block's pages
    are handed back to the kernel after hashing (``MADV_DONTNEED``), so hashing a mapped file
    does not keep the whole file resident beside the decoded events (peak RSS would be the
    event matrix plus the file)."""
    mapped = getattr(data, "_mmap", None)
    if (mapped is None or not hasattr(mapped, "madvise") or not hasattr(mmap, "MADV_DONTNEED")
            or len(mapped) != getattr(data, "nbytes", -1)):  # a map with an offset: hash as given
        return hashlib.sha256(data).hexdigest()
    view = memoryview(mapped)
    h = hashlib.sha256()
    try:
        for start in range(0, len(view), _HASH_BLOCK):
            stop = min(start + _HASH_BLOCK, len(view))
            h.update(view[start:stop])
            mapped.madvise(mmap.MADV_DONTNEED, start, stop - start)
    finally:
        view.release()
    return h.hexdigest()
