"""Write events as an FCS 3.1 file (float32, little-endian), atomically.

Layout of what we write::

    HEADER (58 bytes) | TEXT (keywords) | DATA (n_events x n_channels float32, $BYTEORD 1,2,3,4)

No ANALYSIS and no supplemental TEXT. HEADER offsets are byte positions, the end
offset being the last byte (inclusive), as the standard says. When DATA ends past
byte 99,999,999 its HEADER fields are 0 and only $BEGINDATA/$ENDDATA in TEXT carry
the offsets (FCS 3.1, section 3.1).

TEXT rules we follow: a delimiter inside a value is doubled; a value never starts
with the delimiter (a reader could not tell it from a doubled one) and is never
empty (an empty value would look like a doubled delimiter), so an empty marker
($PnS) is left out and other empty values become one space.

The output goes to a temporary file in the destination folder and is renamed over
the destination only once complete, so a failure never leaves a partial file.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..outputs import atomic_output
from ..errors import FCSError
from ..sample import Sample

DEFAULT_DELIMITER = "\x0c"
"""Form feed: never found in names or values, so doubling is hardly ever needed."""

HEADER_LEN = 58
_MAX_HEADER_OFFSET = 99_999_999

# Keywords the writer derives from the events itself; a caller may not set them.
_LAYOUT_KEYWORDS = {
    "$BEGINANALYSIS", "$ENDANALYSIS", "$BEGINDATA", "$ENDDATA", "$BEGINSTEXT", "$ENDSTEXT",
    "$BYTEORD", "$DATATYPE", "$MODE", "$NEXTDATA", "$PAR", "$TOT",
}
# Spillover spellings seen in the wild: dropped from copied metadata, we write $SPILLOVER.
_SPILL_KEYWORDS = {"$SPILLOVER", "SPILLOVER", "SPILL", "$SPILL", "$COMP", "$COMPENSATION"}
_PARAM_KEY = re.compile(r"^\$P(\d+)([A-Z]+)$", re.IGNORECASE)
_DROP_SOURCE_KEY = re.compile(r"^(\$DFC\d+TO\d+|\$CS.*|\$PK\d+|\$PKN\d+|CD7FLOW_.*)$", re.IGNORECASE)
# Per-parameter keywords we always write ourselves; $PnG is dropped too when the reader
# already divided the gain out (Sample.extra["preprocessed"]). FCS 3.2 $PnDATATYPE is
# layout: copied from a mixed-type source it would tell a reader our float32 columns are
# integers.
_PARAM_OWN = {"B", "E", "N", "R", "S", "G", "DATATYPE"}


def write_fcs(
    path: str | os.PathLike,
    sample_or_events: Sample | np.ndarray,
    *,
    channels: Sequence[str] | None = None,
    markers: Sequence[str] | None = None,
    ranges: Sequence[float] | None = None,
    spillover: Any = None,
    metadata: Mapping[str, Any] | None = None,
    mask: np.ndarray | None = None,
    delimiter: str = DEFAULT_DELIMITER,
) -> Path:
    """Write an FCS 3.1 file of float32 events and return its path.

    Parameters
    ----------
    path : destination file; its folder must exist. Replaced atomically if present.
    sample_or_events : a :class:`~cd7flow.sample.Sample`, or an (events x channels) array
        of values in channel units (whatever the instrument reports; written as float32).
    channels : for a Sample, the channels to keep, by $PnN or marker, in output order
        (default: all). For an array, the $PnN of every column (default ``P1..Pn``).
    markers : $PnS per written channel ('' for none); default the Sample's markers.
    ranges : $PnR per written channel, in channel units; default the Sample's $PnR, or
        for an array the column maximum rounded up (at least 1).
    spillover : a ``SpilloverMatrix`` (anything with ``.channels`` and ``.matrix``) or a
        ``(channels, matrix)`` pair; default the Sample's. Rows/columns of channels not
        written are dropped, which is exact only when the dropped channels do not spill
        into the kept ones, so export every spillover channel when compensation matters.
    metadata : extra TEXT keywords (values converted with ``str``); they override keywords
        copied from the Sample. Layout keywords ($TOT, $PAR, $BEGINDATA...) are refused.
        ``CD7FLOW_SUBSET`` names the population when exporting a gate.
    mask : 1-D bool array, one per event; only events where it is true are written.
    delimiter : one TEXT delimiter character (ASCII 1-126).

    Provenance keywords written for a Sample: ``CD7FLOW_SOURCE`` (file name),
    ``CD7FLOW_SOURCE_SHA256``, ``CD7FLOW_VERSION`` and, with a mask,
    ``CD7FLOW_SUBSET`` (default "N of M events") plus ``$ORIGINALITY``.
    """
    from .. import __version__

    out = Path(path)
    if len(delimiter) != 1 or not (1 <= ord(delimiter) <= 126):
        raise FCSError(out, f"TEXT delimiter must be one ASCII character 1-126, got {delimiter!r}")

    events, names, pns, pnr, spill, text = _collect(out, sample_or_events, channels, markers, ranges, spillover)
    n_total = events.shape[0]
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.ndim != 1 or mask.shape[0] != n_total:
            raise FCSError(
                out, f"mask must be a 1-D bool array of {n_total} values, got {mask.dtype} of shape {mask.shape}"
            )
        events = events[mask]

    data = np.ascontiguousarray(events, dtype="<f4")
    n_events, n_par = data.shape
    if isinstance(sample_or_events, Sample):
        src = sample_or_events
        if src.path:
            text["CD7FLOW_SOURCE"] = os.path.basename(src.path)
        if src.sha256:
            text["CD7FLOW_SOURCE_SHA256"] = src.sha256
        changed = mask is not None or tuple(names) != tuple(src.channels)
        text["$ORIGINALITY"] = "DataModified" if changed else "NonDataModified"
        if mask is not None:
            text["CD7FLOW_SUBSET"] = f"{n_events} of {n_total} events"
    text["CD7FLOW_VERSION"] = __version__

    for key, value in (metadata or {}).items():
        key = str(key)
        upper = key.upper()
        if upper in _LAYOUT_KEYWORDS or _PARAM_KEY.match(upper) and _PARAM_KEY.match(upper).group(2) in _PARAM_OWN:
            raise FCSError(out, f"keyword {key} is set by the writer from the events and cannot be given")
        if upper in _SPILL_KEYWORDS:
            raise FCSError(out, f"give the spillover matrix with spillover=, not as keyword {key}")
        _drop_key(text, upper)
        text[key] = "" if value is None else str(value)

    keywords = _layout_keywords(names, pns, pnr, n_events, spill)
    for key, value in text.items():
        keywords[key] = value
    text_bytes, data_begin, data_end = _assemble_text(out, keywords, delimiter, n_events * n_par * 4)
    header = _header(len(text_bytes), data_begin, data_end)

    _atomic_write(out, (header, text_bytes, data.reshape(-1).view(np.uint8)))
    return out


def spillover_text(channels: Sequence[str], matrix: np.ndarray) -> str:
    """$SPILLOVER value: ``n,name1,...,namen,m11,m12,...`` (row-major, row = spilling channel)."""
    m = np.asarray(matrix, dtype=float)
    values = ",".join(_num(v) for v in m.ravel())
    return f"{len(channels)},{','.join(channels)},{values}"


def _collect(out, src, channels, markers, ranges, spillover):
    """Resolve events, names, markers, ranges, spillover and copied keywords for the output."""
    text: dict[str, str] = {}
    if isinstance(src, Sample):
        if channels is None:
            idx = list(range(len(src.channels)))
        else:
            try:
                idx = [src.channel(c) for c in channels]
            except KeyError as exc:  # ChannelNotFound names the sample and the channel
                raise FCSError(out, str(exc)) from None
        if len(set(idx)) != len(idx):
            raise FCSError(out, f"a channel is asked for twice: {list(channels or [])}")
        events = src.events[:, idx] if channels is not None else src.events
        names = [src.channels[i] for i in idx]
        pns = list(markers) if markers is not None else [src.markers[i] for i in idx]
        pnr = list(ranges) if ranges is not None else [float(src.ranges[i]) for i in idx]
        spill = spillover if spillover is not None else src.spillover
        text = _copied_keywords(src, idx)
        if src.extra.get("preprocessed"):
            _undo_time_step(src, names, pnr, text, ranges is not None)
        else:
            _check_raw_sample(out, src, idx)
    else:
        events = np.asarray(src)
        if events.ndim != 2:
            raise FCSError(out, f"events must be a 2-D array (events x channels), got shape {events.shape}")
        if not np.issubdtype(events.dtype, np.number) or np.issubdtype(events.dtype, np.complexfloating):
            raise FCSError(out, f"events must be real numbers, got dtype {events.dtype}")
        n_par = events.shape[1]
        names = list(channels) if channels is not None else [f"P{i + 1}" for i in range(n_par)]
        pns = list(markers) if markers is not None else [""] * n_par
        if ranges is not None:
            pnr = list(ranges)
        elif events.shape[0]:
            top = np.nanmax(np.where(np.isfinite(events), events, np.nan), axis=0) if events.size else []
            pnr = [max(1.0, float(math.ceil(t))) if np.isfinite(t) else 1.0 for t in top]
        else:
            pnr = [1.0] * n_par
        spill = spillover

    n_par = events.shape[1]
    for label, seq in (("channels", names), ("markers", pns), ("ranges", pnr)):
        if len(seq) != n_par:
            raise FCSError(out, f"{len(seq)} {label} given for {n_par} columns of events")
    if n_par == 0:
        raise FCSError(out, "no channels to write")
    for name in names:
        if not str(name).strip():
            raise FCSError(out, "a channel name ($PnN) is empty")
        if "," in str(name):
            # $SPILLOVER is comma separated, so a comma in $PnN would make it unreadable.
            raise FCSError(out, f"channel name {name!r} contains a comma (FCS 3.1 forbids it in $PnN)")
    if len({str(n) for n in names}) != len(names):
        raise FCSError(out, f"channel names are not unique: {names}")
    for r in pnr:
        if not (np.isfinite(float(r)) and float(r) > 0):
            raise FCSError(out, f"$PnR must be a positive number, got {r!r}")
    return events, [str(n) for n in names], [str(m or "") for m in pns], pnr, _spill_for(out, spill, names), text


def _spill_for(out, spill, names):
    """The spillover restricted to written channels, as (names, matrix), or None."""
    if spill is None:
        return None
    if isinstance(spill, tuple) and len(spill) == 2:
        sp_channels, matrix = spill
    else:
        sp_channels, matrix = getattr(spill, "channels", None), getattr(spill, "matrix", None)
    if sp_channels is None or matrix is None:
        raise FCSError(out, f"spillover must have .channels and .matrix, got {type(spill).__name__}")
    sp_channels = [str(c) for c in sp_channels]
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (len(sp_channels), len(sp_channels)):
        raise FCSError(out, f"spillover matrix is {matrix.shape} for {len(sp_channels)} channels")
    if not np.all(np.isfinite(matrix)):
        raise FCSError(out, "spillover matrix holds NaN or infinite values")
    keep = [i for i, c in enumerate(sp_channels) if c in names]
    if not keep:
        return None
    return [sp_channels[i] for i in keep], matrix[np.ix_(keep, keep)]


def _undo_time_step(src: Sample, names, pnr, text, ranges_given: bool) -> None:
    """A preprocessed Time column is in seconds (ticks x $TIMESTEP): say so with $TIMESTEP 1.

    Writing the seconds as read keeps export lossless; dividing back to ticks would
    round twice in float32.
    """
    step = _float(src.metadata.get("$TIMESTEP"))
    times = [j for j, n in enumerate(names) if n.strip().lower() == "time"]
    if not times or step in (None, 0.0, 1.0):
        return
    _drop_key(text, "$TIMESTEP")
    text["$TIMESTEP"] = "1"
    if not ranges_given:
        pnr[times[0]] = pnr[times[0]] * step


def _check_raw_sample(out: Path, src: Sample, idx: list[int]) -> None:
    """Raw (not preprocessed) values of log-scaled channels cannot be stored as float with $PnE 0,0."""
    for j in idx:
        value = src.metadata.get(f"$P{j + 1}E", "0,0")
        first = _float(value.split(",")[0]) if value else None
        if first:
            raise FCSError(out, f"channel {src.channels[j]} is log-encoded ($P{j + 1}E {value}); "
                                "read the file with preprocess=True before writing it as float")


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _copied_keywords(src: Sample, idx: list[int]) -> dict[str, str]:
    """Source keywords worth keeping ($CYT, $DATE, $PnV...), per-parameter ones renumbered."""
    new_index = {old + 1: new + 1 for new, old in enumerate(idx)}
    own = _PARAM_OWN if src.extra.get("preprocessed") else _PARAM_OWN - {"G"}
    kept: dict[str, str] = {}
    for key in src.metadata:
        upper = key.upper()
        if upper in _LAYOUT_KEYWORDS or upper in _SPILL_KEYWORDS or _DROP_SOURCE_KEY.match(upper):
            continue
        value = src.metadata[key]
        m = _PARAM_KEY.match(upper)
        if m:
            n, what = int(m.group(1)), m.group(2)
            if what in own or n not in new_index:
                continue
            kept[f"$P{new_index[n]}{what}"] = value
        else:
            kept[key] = value
    return kept


def _drop_key(text: dict[str, str], upper: str) -> None:
    for existing in [k for k in text if k.upper() == upper]:
        del text[existing]


def _layout_keywords(names, pns, pnr, n_events, spill) -> dict[str, str]:
    kw: dict[str, str] = {
        # Offsets are filled in by _assemble_text once the TEXT length is known.
        "$BEGINANALYSIS": "0", "$ENDANALYSIS": "0", "$BEGINSTEXT": "0", "$ENDSTEXT": "0",
        "$BEGINDATA": "0", "$ENDDATA": "0",
        "$BYTEORD": "1,2,3,4", "$DATATYPE": "F", "$MODE": "L", "$NEXTDATA": "0",
        "$PAR": str(len(names)), "$TOT": str(n_events),
    }
    for i, (name, marker, rng) in enumerate(zip(names, pns, pnr), start=1):
        kw[f"$P{i}N"] = name
        if marker:
            kw[f"$P{i}S"] = marker
        kw[f"$P{i}B"] = "32"
        kw[f"$P{i}E"] = "0,0"
        kw[f"$P{i}R"] = _num(rng)
    if spill is not None:
        kw["$SPILLOVER"] = spillover_text(*spill)
    return kw


def _num(v: float) -> str:
    """Shortest text that reads back as the same float; integers without '.0'."""
    f = float(v)
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return repr(f)


def _escape(out: Path, key: str, value: str, delimiter: str) -> tuple[str, str]:
    if not key or not key.isascii() or key.startswith(delimiter) or delimiter in key:
        raise FCSError(out, f"keyword {key!r} is empty, not ASCII or holds the delimiter")
    if value == "":
        value = " "
    if value.startswith(delimiter):
        raise FCSError(out, f"value of {key} starts with the TEXT delimiter {delimiter!r}; choose another delimiter")
    return key, value.replace(delimiter, delimiter * 2)


def _assemble_text(out: Path, keywords: dict[str, str], delimiter: str, data_len: int):
    """Encode TEXT with $BEGINDATA/$ENDDATA consistent with its own length.

    The offsets are digits inside TEXT, so TEXT length depends on them; iterate until
    stable (two or three rounds: the digit count only grows).
    """
    pairs = [_escape(out, k, v, delimiter) for k, v in keywords.items()]
    if data_len == 0:
        return _encode(pairs, delimiter), 0, 0
    at = {k: i for i, (k, _) in enumerate(pairs)}
    length = -1
    for _ in range(10):
        encoded = _encode(pairs, delimiter)
        if len(encoded) == length:
            begin = HEADER_LEN + length
            return encoded, begin, begin + data_len - 1
        length = len(encoded)
        begin = HEADER_LEN + length
        pairs[at["$BEGINDATA"]] = ("$BEGINDATA", str(begin))
        pairs[at["$ENDDATA"]] = ("$ENDDATA", str(begin + data_len - 1))
    raise FCSError(out, "could not settle TEXT offsets")  # pragma: no cover - digit count is bounded


def _encode(pairs, delimiter: str) -> bytes:
    body = delimiter + "".join(f"{k}{delimiter}{v}{delimiter}" for k, v in pairs)
    return body.encode("utf-8")


def _header(text_len: int, data_begin: int, data_end: int) -> bytes:
    text_begin, text_end = HEADER_LEN, HEADER_LEN + text_len - 1
    if text_end > _MAX_HEADER_OFFSET:
        raise FCSError(None, f"TEXT segment of {text_len} bytes is too long for the FCS HEADER")
    if data_end > _MAX_HEADER_OFFSET:
        data_begin = data_end = 0  # the standard's signal: read $BEGINDATA/$ENDDATA from TEXT
    fields = (text_begin, text_end, data_begin, data_end, 0, 0)
    header = b"FCS3.1    " + b"".join(str(v).rjust(8).encode("ascii") for v in fields)
    assert len(header) == HEADER_LEN
    return header


def _atomic_write(out: Path, chunks) -> None:
    with atomic_output(out, "wb", error_class=FCSError) as fh:
        for chunk in chunks:
            fh.write(chunk)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
