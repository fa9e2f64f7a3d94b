"""HEADER and TEXT segments of an FCS data set (FCS 2.0, 3.0, 3.1, 3.2).

All offsets here are byte offsets relative to the start of the data set (the
position of its ``FCS`` magic), inclusive at both ends, exactly as the standard
writes them. Parsing works on a read-only uint8 buffer (a memmap of the file or
a view of bytes in memory) and never lets a low-level error escape: every
problem becomes an :class:`~cd7flow.errors.FCSHeaderError` or
:class:`~cd7flow.errors.FCSTextError` naming the file.

Repairs made while parsing (a missing final delimiter, a value that is not
UTF-8...) are appended as plain sentences to the ``warnings`` list passed in.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import FCSHeaderError, FCSTextError, FCSUnsupportedError

HEADER_SIZE = 58
SUPPORTED_VERSIONS = ("FCS2.0", "FCS3.0", "FCS3.1", "FCS3.2")
_VERSION_RE = re.compile(rb"FCS\d\.\d")


def is_uint(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts '²' and other Unicode digits int() rejects)."""
    return text.isascii() and text.isdigit()


@dataclass(frozen=True)
class Header:
    """The 58-byte HEADER: version and segment offsets (bytes, relative to the data set start).

    A blank or zero field is 0; FCS 3.x writes 0 for DATA/ANALYSIS offsets beyond
    99,999,999 bytes, so callers must then use the TEXT keywords.
    """

    version: str
    text_start: int
    text_end: int
    data_start: int
    data_end: int
    analysis_start: int
    analysis_end: int


def _header_field(raw: bytes, lo: int, name: str, where: str | None, base: int) -> int:
    field = raw[lo : lo + 8]
    text = field.decode("latin-1").strip()
    if not text:
        return 0
    if not is_uint(text):
        raise FCSHeaderError(
            where, f"HEADER at byte {base} has a non-numeric {name} offset {field!r} (bytes {lo}-{lo + 7})"
        )
    return int(text)


def parse_header(buf: np.ndarray, base: int, where: str | None) -> Header:
    """Parse the HEADER of the data set starting at byte ``base`` of ``buf``."""
    size = int(buf.shape[0])
    if base < 0 or base + HEADER_SIZE > size:
        raise FCSHeaderError(
            where,
            f"too short for an FCS HEADER at byte {base}: needs {HEADER_SIZE} bytes, file has {size - max(base, 0)}",
        )
    raw = bytes(buf[base : base + HEADER_SIZE])
    if not _VERSION_RE.fullmatch(raw[:6]):
        raise FCSHeaderError(where, f"not an FCS file: HEADER at byte {base} starts with {raw[:6]!r}, not 'FCSn.n'")
    version = raw[:6].decode("ascii")
    if version not in SUPPORTED_VERSIONS:
        raise FCSUnsupportedError(where, f"FCS version {version} is not supported (reads {', '.join(SUPPORTED_VERSIONS)})")
    names = ("TEXT start", "TEXT end", "DATA start", "DATA end", "ANALYSIS start", "ANALYSIS end")
    values = []
    for i, name in enumerate(names):
        if name.startswith("ANALYSIS"):
            # Optional; some writers leave garbage here, and nothing depends on it.
            try:
                values.append(_header_field(raw, 10 + 8 * i, name, where, base))
            except FCSHeaderError:
                values.append(0)
        else:
            values.append(_header_field(raw, 10 + 8 * i, name, where, base))
    return Header(version, *values)


def _decode(token: bytes, what: str, warnings: list[str], seen_latin1: list[bool]) -> str:
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        if not seen_latin1[0]:
            warnings.append(f"TEXT is not valid UTF-8 ({what}); decoded such values as latin-1")
            seen_latin1[0] = True
        return token.decode("latin-1")


def parse_text_segment(
    raw: bytes, where: str | None, warnings: list[str], segment: str = "TEXT", delimiter: bytes | None = None
) -> list[tuple[str, str]]:
    """Split a TEXT (or supplemental TEXT) segment into (keyword, value) pairs, in file order.

    The first byte is the delimiter (unless ``delimiter`` is given and the segment
    does not start with it). A doubled delimiter inside a keyword or value stands
    for one literal delimiter; in a run of 2k+1 delimiters the literal ones belong
    to the preceding token and the last one separates. A missing final delimiter
    is tolerated. Each token is decoded as UTF-8, falling back to latin-1.
    """
    if len(raw) < 2:
        raise FCSTextError(where, f"{segment} segment is {len(raw)} byte(s) long; too short to hold any keyword")
    if delimiter is None or raw[:1] == delimiter:
        delimiter = raw[:1]
        body = raw[1:]
    else:
        body = raw
    if delimiter.isalnum():
        raise FCSTextError(where, f"{segment} segment delimiter {delimiter!r} is a letter or digit; TEXT looks corrupt")
    # Trailing NULs/blanks after the final delimiter are padding some writers add.
    body = body.rstrip(b"\x00 \r\n")
    parts = re.split(b"(" + re.escape(delimiter) + b"+)", body)
    tokens: list[bytes] = []
    current = b""
    for i in range(0, len(parts), 2):
        current += parts[i]
        if i + 1 == len(parts):
            break
        run = len(parts[i + 1])
        if run % 2 == 1:
            tokens.append(current + delimiter * (run // 2))
            current = b""
        elif len(tokens) % 2 == 0 and current:
            # An even run right after a keyword: keywords never hold the delimiter, so
            # this is an empty value (written by FCS 2.0 writers), not an escape.
            tokens.extend((current, b""))
            current = delimiter * ((run - 2) // 2)
        else:
            current += delimiter * (run // 2)
    if current:
        warnings.append(f"{segment} segment has no final delimiter; kept the last value as is")
        tokens.append(current)
    if len(tokens) % 2 == 1:
        warnings.append(
            f"{segment} segment has an odd number of fields; ignored the trailing keyword {tokens[-1][:40]!r}"
        )
        tokens.pop()
    latin1 = [False]
    pairs: list[tuple[str, str]] = []
    for k in range(0, len(tokens), 2):
        key = _decode(tokens[k], f"keyword #{k // 2 + 1}", warnings, latin1).strip()
        value = _decode(tokens[k + 1], f"value of {tokens[k][:40]!r}", warnings, latin1)
        if key:
            pairs.append((key, value))
    return pairs


def merge_pairs(
    pairs: list[tuple[str, str]], into: dict[str, str], upper_index: dict[str, str], warnings: list[str], segment: str
) -> None:
    """Add pairs to ``into`` (keys as spelled in the file); the first occurrence of a keyword wins."""
    duplicates = []
    for key, value in pairs:
        up = key.upper()
        if up in upper_index:
            if into[upper_index[up]] != value:
                duplicates.append(key)
            continue
        upper_index[up] = key
        into[key] = value
    if duplicates:
        shown = ", ".join(duplicates[:5]) + (" ..." if len(duplicates) > 5 else "")
        warnings.append(f"{segment} repeats keyword(s) {shown} with other values; kept the first value")


def parse_int_keyword(
    text: dict[str, str], upper_index: dict[str, str], name: str, where: str | None, *, required: bool = True
) -> int | None:
    """An integer keyword value (leading/trailing blanks allowed); None when absent and not required."""
    key = upper_index.get(name.upper())
    if key is None:
        if required:
            raise FCSTextError(where, f"required keyword {name} is missing from TEXT")
        return None
    raw = text[key].strip()
    if not is_uint(raw[1:] if raw[:1] in ("+", "-") else raw):
        raise FCSTextError(where, f"keyword {name} should be an integer but is {text[key][:40]!r}")
    return int(raw)


@dataclass
class ParsedDataSet:
    """One data set's HEADER and merged TEXT, with the repairs made so far (``warnings``)."""

    base: int
    header: Header
    text: dict[str, str]
    upper: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    offsets: dict[str, object] = field(default_factory=dict)

    def get(self, name: str, default: str | None = None) -> str | None:
        key = self.upper.get(name.upper())
        return default if key is None else self.text[key]


def float_or_none(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        x = float(value.strip())
    except ValueError:
        return None
    return x if math.isfinite(x) else None
