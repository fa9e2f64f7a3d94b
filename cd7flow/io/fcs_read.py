"""Read FCS 2.0 / 3.0 / 3.1 / 3.2 files (and Beckman LMD) into :class:`cd7flow.sample.Sample`.

Public API: :func:`read_fcs`, :func:`list_datasets`, :class:`DatasetInfo`. The Sample's
``sha256`` is computed from the bytes the reader decodes (the file is read once).

A path is opened read-only and memory-mapped; bytes/bytearray/BytesIO are read
from memory (used by the fuzz tests). Every failure is an
:class:`~cd7flow.errors.FCSError` subclass naming the file; a file claiming
more events than it can hold is rejected before anything is allocated.

Where the DATA segment is (the rule for HEADER vs TEXT offsets)
------------------------------------------------------------------
Candidates are the TEXT pair ($BEGINDATA, $ENDDATA) and the HEADER pair, each
used only when its start is > 0 (HEADER offsets are 0 or blank above
99,999,999 bytes). The expected size is $TOT x bytes per event. Candidates are
ranked, best first:

1. span (end - start + 1) equals the expected size and the data fit in the file;
2. span is one byte more (the common "end offset one past" error) and the data fit;
3. the span disagrees but $TOT x bytes per event starting at ``start`` fit in the file.

Within a rank, TEXT wins for FCS 3.x and HEADER wins for FCS 2.0 (where the
TEXT keywords are optional extras). Ranks 2 and 3, and a disagreement between
HEADER and TEXT, are recorded in ``sample.extra["warnings"]``. If no candidate
fits, the file is rejected with the declared and available sizes.

When an integer $PnB is not a multiple of 8, the DATA span decides between
two layouts: each value in its own 8/16/32/64-bit word (Beckman FC500 writes
$PnB=10 in 16-bit words), or one continuous bit stream of $PnB-bit fields,
which is what FCS 2.0/3.0 describe ("a continuous bit stream with no
delimiters"; FCS 3.2 deprecates widths that are not multiples of 8). Packed
streams are unpacked with vectorised shifts (:func:`fcs_data.decode_packed`;
bit order follows $BYTEORD). ``sample.extra["layout"]`` says which was used.

Column types (FCS 3.2): $PnDATATYPE (I, F or D) overrides $DATATYPE per
column, so a data set may mix integer and float columns of different widths.
$DATATYPE A (ASCII, deprecated in FCS 3.1) is read in both forms: $PnB
characters per value, or $PnB * with values separated by blanks, tabs, commas,
CR or LF. Events are float32 only when every column is F, else float64 (exact for every
integer up to 2**53 and for float32). $MODE may be absent (FCS 3.2 removed it;
list mode is assumed), and $BEGINANALYSIS/$ENDANALYSIS are never read.
``sample.extra`` also carries ``column_types``, ``channel_info`` (one dict per
channel: $PnL wavelengths, $PnV, $PnTYPE, $PnDISPLAY...), ``time_channel``
(index or None) and, when present and valid, ``unstained_centers``
(FCS 3.2 $UNSTAINEDCENTERS as {$PnN: value}).

Preprocessing (``preprocess=True``: $PnE log decoding, $PnG gain, $TIMESTEP) is
described in :mod:`cd7flow.io.fcs_channels`. Modules: ``fcs_text`` (HEADER,
TEXT), ``fcs_offsets`` (this rule), ``fcs_data`` (DATA decoding),
``fcs_channels`` (per-channel keywords, masks, preprocessing).
"""
from __future__ import annotations

import io
import math
import os
import warnings as _warnings
from dataclasses import dataclass
from typing import Union

import numpy as np

from ..errors import CompensationError, FCSDataError, FCSError, FCSTextError, FCSUnsupportedError
from ..sample import CaseInsensitiveDict, Sample
from . import fcs_data
from .fcs_channels import (
    bit_mask, channel_info, channel_layout, column_types, preprocess_events, time_channel, unique_names,
    unstained_centers,
)
from .fcs_offsets import data_candidates, locate_data, odd_layout
from .fcs_text import ParsedDataSet, is_uint, merge_pairs, parse_header, parse_int_keyword, parse_text_segment

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, io.IOBase]


@dataclass(frozen=True)
class DatasetInfo:
    """One data set of a file: where it starts (bytes from file start) and what TEXT declares."""

    offset: int
    version: str
    tot: int | None
    par: int
    datatype: str


def _open_buffer(source: Source, name: str | None) -> tuple[np.ndarray, str | None, object]:
    """(uint8 buffer, display name/path, object to keep alive)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            size = os.path.getsize(path)
            if size == 0:
                raise FCSError(path, "file is empty")
            with open(path, "rb") as fh:
                mm = np.memmap(fh, dtype=np.uint8, mode="r")
        except FCSError:
            raise
        except OSError as exc:
            raise FCSError(path, f"cannot open: {exc.strerror or exc}") from None
        return mm, path, mm
    if isinstance(source, io.IOBase):
        data = source.getvalue() if isinstance(source, io.BytesIO) else source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise FCSError(name, "file object did not give bytes (open it in binary mode)")
        name = name or getattr(source, "name", None)
        source = data
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = np.frombuffer(source, dtype=np.uint8)
        return buf, name, source
    raise TypeError(f"read_fcs needs a path, bytes or a binary file object, not {type(source).__name__}")


def _parse_dataset(buf: np.ndarray, base: int, where: str | None) -> ParsedDataSet:
    header = parse_header(buf, base, where)
    size = int(buf.shape[0])
    warnings: list[str] = []
    t0, t1 = header.text_start, header.text_end
    if t0 <= 0 or t1 <= t0:
        raise FCSTextError(where, f"HEADER gives an invalid TEXT segment {t0}-{t1}")
    if base + t1 >= size:
        if base + t0 < size:
            warnings.append(f"TEXT end offset {t1} is past the end of the file; read TEXT up to the last byte")
            t1 = size - 1 - base
        else:
            raise FCSTextError(where, f"TEXT segment {t0}-{t1} lies beyond the end of the file ({size:,} bytes)")
    raw = bytes(buf[base + t0 : base + t1 + 1])
    pairs = parse_text_segment(raw, where, warnings)
    text: dict[str, str] = {}
    upper: dict[str, str] = {}
    merge_pairs(pairs, text, upper, warnings, "TEXT")
    parsed = ParsedDataSet(base, header, text, upper, warnings)
    parsed.offsets = {"dataset": base, "text": (t0, t1)}
    _merge_supplemental(buf, parsed, raw[:1], where)
    return parsed


def _merge_supplemental(buf: np.ndarray, p: ParsedDataSet, delimiter: bytes, where: str | None) -> None:
    """FCS 3.x supplemental TEXT ($BEGINSTEXT/$ENDSTEXT): merged, primary TEXT wins on clashes."""
    try:
        s0 = parse_int_keyword(p.text, p.upper, "$BEGINSTEXT", where, required=False) or 0
        s1 = parse_int_keyword(p.text, p.upper, "$ENDSTEXT", where, required=False) or 0
    except FCSTextError as exc:
        p.warnings.append(f"ignored supplemental TEXT: {exc.problem}")
        return
    if s0 <= 0 or s1 <= s0:
        return
    size = int(buf.shape[0])
    if p.base + s1 >= size:
        p.warnings.append(f"supplemental TEXT {s0}-{s1} lies past the end of the file; ignored it")
        return
    raw = bytes(buf[p.base + s0 : p.base + s1 + 1])
    try:
        pairs = parse_text_segment(raw, where, p.warnings, "supplemental TEXT", delimiter)
    except FCSTextError as exc:
        p.warnings.append(f"ignored supplemental TEXT: {exc.problem}")
        return
    merge_pairs(pairs, p.text, p.upper, p.warnings, "supplemental TEXT")
    p.offsets["stext"] = (s0, s1)


def _next_offset(buf: np.ndarray, p: ParsedDataSet, seen: set[int], where: str | None) -> int | None:
    """Absolute offset of the next data set, or None (zero, garbage, loop or beyond the file)."""
    raw = p.get("$NEXTDATA")
    if raw is None or not raw.strip():
        return None
    value = raw.strip()
    if not is_uint(value):
        p.warnings.append(f"$NEXTDATA {raw[:20]!r} is not a number; ignored it")
        return None
    nxt = int(value)
    if nxt == 0:
        return None
    target = p.base + nxt
    if target in seen:
        p.warnings.append(f"$NEXTDATA {nxt} points back to an earlier data set; stopped there")
        return None
    if target + 58 > int(buf.shape[0]):
        p.warnings.append(f"$NEXTDATA {nxt} points beyond the end of the file; ignored it")
        return None
    return target


def _walk(buf: np.ndarray, where: str | None, stop_at: int | None) -> list[ParsedDataSet]:
    """Parse data sets along the $NEXTDATA chain (up to index ``stop_at`` when given)."""
    parsed = [_parse_dataset(buf, 0, where)]
    seen = {0}
    while stop_at is None or len(parsed) <= stop_at:
        nxt = _next_offset(buf, parsed[-1], seen, where)
        if nxt is None:
            break
        seen.add(nxt)
        if stop_at is None:
            try:
                parsed.append(_parse_dataset(buf, nxt, where))
            except FCSError as exc:
                parsed[-1].warnings.append(f"data set at byte {nxt} is unreadable ({exc.problem}); ignored it")
                break
        else:
            parsed.append(_parse_dataset(buf, nxt, where))
    return parsed


def list_datasets(path: Source, *, name: str | None = None) -> list[DatasetInfo]:
    """Every data set reachable through $NEXTDATA, with its offset (bytes), version, $TOT, $PAR and $DATATYPE.

    A broken later data set ends the list (the first one must parse).
    """
    buf, where, _keep = _open_buffer(path, name)
    infos = []
    for k, p in enumerate(_walk(buf, where, None)):
        try:
            tot = parse_int_keyword(p.text, p.upper, "$TOT", where, required=False)
            par = parse_int_keyword(p.text, p.upper, "$PAR", where)
        except FCSError:
            if k == 0:
                raise
            break  # a later data set with a broken TEXT is left out, like one that does not parse
        infos.append(DatasetInfo(p.base, p.header.version, tot, par, (p.get("$DATATYPE") or "").strip().upper()))
    return infos


def read_fcs(path: Source, *, dataset: int = 0, preprocess: bool = True, name: str | None = None) -> Sample:
    """Read data set ``dataset`` (0-based, along $NEXTDATA) of an FCS file into a Sample.

    ``path`` is a file path, or bytes/bytearray/memoryview/BytesIO (then ``name``,
    if given, is used as the path in messages and on the Sample). Events are
    float32 when every column is F ($DATATYPE or FCS 3.2 $PnDATATYPE), else float64; see the module docstring for
    ``preprocess``. Raises an FCSError subclass for anything unreadable.
    """
    buf, where, _keep = _open_buffer(path, name)
    if dataset < 0:
        raise FCSError(where, f"data set index must be >= 0, not {dataset}")
    chain = _walk(buf, where, dataset)
    if dataset >= len(chain):
        raise FCSError(where, f"has {len(chain)} data set(s); data set {dataset} does not exist")
    p = chain[dataset]
    _next_offset(buf, p, {q.base for q in chain}, where)  # records a broken $NEXTDATA in the warnings
    sample = _read_parsed(buf, p, where, preprocess)
    sample.dataset = dataset
    sample.compute_sha256(buf)  # from the bytes just decoded: the file is never read again for it
    return sample


def _read_parsed(buf: np.ndarray, p: ParsedDataSet, where: str | None, preprocess: bool) -> Sample:
    size = int(buf.shape[0])
    datatype = (p.get("$DATATYPE") or "").strip().upper()
    if not datatype:
        raise FCSTextError(where, "required keyword $DATATYPE is missing from TEXT")
    if datatype not in ("I", "F", "D", "A"):
        raise FCSTextError(where, f"$DATATYPE {datatype[:10]!r} is not one of I, F, D, A")
    mode = (p.get("$MODE") or "L").strip().upper()  # FCS 3.2 dropped $MODE: absent means list mode
    if mode not in ("L", ""):
        raise FCSUnsupportedError(where, f"$MODE {mode[:10]!r} (histogram data) is not supported; only list mode (L)")
    par = parse_int_keyword(p.text, p.upper, "$PAR", where)
    if par < 1 or par > len(p.text):
        raise FCSTextError(where, f"$PAR is {par}; TEXT holds {len(p.text)} keywords")
    tot = parse_int_keyword(p.text, p.upper, "$TOT", where, required=p.header.version != "FCS2.0")
    if tot is not None and tot < 0:
        raise FCSTextError(where, f"$TOT is {tot}")
    kinds = column_types(p, par, datatype, where)
    if "A" in kinds and len(set(kinds)) > 1:
        raise FCSUnsupportedError(where, "ASCII columns mixed with binary ones ($DATATYPE A + $PnDATATYPE) are not supported")
    order = fcs_data.parse_byteord(p.get("$BYTEORD") or "1,2,3,4", where)
    if p.get("$BYTEORD") is None:
        p.warnings.append("$BYTEORD is missing; assumed little-endian (1,2,3,4)")
    bits, ranges, names, markers, pne, png = channel_layout(p, par, kinds, where)

    if kinds[0] == "A":
        return _finish(p, *_read_ascii(buf, p, tot, par, bits, where), kinds, "ascii",
                       (bits, ranges, names, markers, pne, png), where, preprocess)
    widths = []
    for n, (kind, b) in enumerate(zip(kinds, bits), 1):
        if kind == "I":
            widths.append(b // 8)
            continue
        nbytes = 4 if kind == "F" else 8
        if b is not None and b != 8 * nbytes:
            p.warnings.append(f"$P{n}B is {b} for a type {kind} column; read {8 * nbytes}-bit values")
        widths.append(nbytes)
    layout = "bytes"
    if any(k == "I" and b % 8 for k, b in zip(kinds, bits)):
        layout, widths = odd_layout(p, bits, kinds, widths, tot)
    masks = [None] * par
    for j, (kind, b, r) in enumerate(zip(kinds, bits, ranges)):
        if kind == "I":
            field = b if layout == "packed" or b % 8 == 0 else 8 * widths[j]
            masks[j] = bit_mask(field, r)
            if masks[j] is None and field != b and not math.isfinite(r):
                masks[j] = (1 << b) - 1  # a $PnB-bit value in a wider word, and no $PnR to say more
    bits_per_event = sum(bits) if layout == "packed" else 8 * sum(widths)
    start, tot = locate_data(p, size, bits_per_event, tot, where)
    begin = p.base + start
    fcs_data.check_fits(size, begin, (tot * bits_per_event + 7) // 8, where, f"{tot:,} events x {bits_per_event} bits")

    if layout == "packed":
        events = fcs_data.decode_packed(buf, begin, tot, bits, masks, order, where)
    elif len(set(kinds)) > 1:
        events = fcs_data.decode_mixed(buf, begin, tot, kinds, widths, masks, order, where)
    elif kinds[0] == "I":
        events = fcs_data.decode_integers(buf, begin, tot, widths, masks, order, where)
    else:
        events = fcs_data.decode_floats(buf, begin, tot, par, widths[0], order, where)

    return _finish(p, events, tot, kinds, layout, (bits, ranges, names, markers, pne, png), where, preprocess)


def _read_ascii(buf: np.ndarray, p: ParsedDataSet, tot: int | None, par: int, bits, where) -> tuple[np.ndarray, int]:
    """$DATATYPE A (deprecated since FCS 3.1): fixed-width ($PnB characters) or free format ($PnB *)."""
    size = int(buf.shape[0])
    if all(b is not None for b in bits):
        if any(b < 1 for b in bits):
            raise FCSTextError(where, f"$PnB {bits} gives an ASCII field of no characters")
        start, tot = locate_data(p, size, 8 * sum(bits), tot, where)
        fcs_data.check_fits(size, p.base + start, tot * sum(bits), where, f"{tot:,} events x {sum(bits)} characters")
        return fcs_data.decode_ascii_fixed(buf, p.base + start, tot, list(bits), where), tot
    if any(b is not None for b in bits):
        raise FCSUnsupportedError(where, "ASCII DATA mixing fixed widths and $PnB * is not supported")
    room = size - p.base
    spans = [(s, e) for _, s, e in data_candidates(p, where) if e >= s and e < room]
    if not spans and tot == 0:
        p.offsets["data"] = None  # no events, no DATA segment (offsets 0)
        return np.empty((0, par), dtype=np.float64), 0
    if not spans:
        raise FCSDataError(where, "free-format ASCII DATA: no DATA offsets that lie inside the file")
    s0, e0 = spans[0]
    p.offsets["data"] = (s0, e0)
    events = fcs_data.decode_ascii_free(bytes(buf[p.base + s0 : p.base + e0 + 1]), tot, par, where)
    return events, events.shape[0]


def _finish(p: ParsedDataSet, events: np.ndarray, tot: int, kinds, layout: str, per_channel, where, preprocess):
    """Names, preprocessing, metadata and extras common to every layout."""
    bits, ranges, names, markers, pne, png = per_channel
    datatype = (p.get("$DATATYPE") or "").strip().upper()
    par = len(kinds)
    original_names = list(names)
    channels = unique_names(names, p)
    if preprocess:
        preprocess_events(events, p, kinds, channels, ranges, pne, png)

    metadata = CaseInsensitiveDict(p.text)
    extra: dict[str, object] = {
        "version": p.header.version,
        "offsets": dict(p.offsets),
        "datatype": datatype,
        "column_types": tuple(kinds),
        "layout": layout,
        "channel_info": channel_info(p, par, kinds, bits, ranges, pne, png),
        "time_channel": time_channel(p, channels),
        "byteord": p.get("$BYTEORD"),
        "warnings": p.warnings,
        "preprocessed": preprocess,
    }
    if original_names != channels:
        extra["original_channels"] = tuple(original_names)
    centers = unstained_centers(p, channels, where)
    if centers is not None:
        extra["unstained_centers"] = centers
    sample = Sample(
        events=events,
        channels=tuple(channels),
        markers=tuple(markers),
        metadata=metadata,
        ranges=ranges,
        spillover=None,
        path=where,
        extra=extra,
    )
    _attach_spillover(sample, where)
    return sample


def _attach_spillover(sample: Sample, where: str | None) -> None:
    from ..compensation import spillover_from_metadata

    try:
        sample.spillover = spillover_from_metadata(sample.metadata, sample.channels, where)
    except CompensationError as exc:
        _warnings.warn(f"{sample.name}: spillover matrix ignored: {exc.problem}", stacklevel=4)
        sample.spillover = None
        sample.extra["spillover_error"] = str(exc)
