"""Reading spillover matrices from FCS TEXT keywords and from matrix files.

Keyword forms (all found in real files; the first present wins, in this order):

* ``$SPILLOVER`` (FCS 3.1), ``SPILL`` (BD FACSDiva, FCS 3.0), ``$SPILL``, ``SPILLOVER``:
  ``n,name_1..name_n,s_11,s_12,...,s_nn``, row-major, rows = source fluorochrome.
  Some instruments write channel *numbers* instead of names (``2,3,4,...`` meaning
  $P3N and $P4N); numbers are mapped to channels when they do not match a name.
* ``$COMP`` (FCS 3.0): ``n,[names,]c_11..c_nn``. The FCS 3.0 standard defines this as
  the *compensation* matrix (the matrix that turns observed into compensated values),
  i.e. the inverse of the spillover matrix, so it is converted with S = inv(C). Without
  names it covers parameters 1..n. Identity $COMP (Beckman Gallios) gives identity S.
* ``$DFCiTOj`` (FCS 2.0, Beckman Coulter): one keyword per pair, value = percentage of
  fluorescence channel FLi's signal that spills into FLj (Beckman lists the pairs as
  "FLj - x% FLi"), so S[FLi, FLj] = value / 100. i and j are fluorescence numbers (FL1,
  FL2, ...), not $Pn indices: in the corpus FS and SS come first and the large values
  (2->3 = 44.8 %, 3->4 = 29.2 %) are the PE->ECD and ECD->PC5 overlaps. The diagonal is
  1 whatever the file says (Beckman writes 0). Entries for FL numbers the data set does
  not have are dropped when they are zero; a non-zero one is an error.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import CompensationError
from .matrix import SpilloverMatrix

SPILL_KEYWORDS = ("$SPILLOVER", "SPILL", "$SPILL", "SPILLOVER")
COMP_KEYWORDS = ("$COMP",)
_DFC = re.compile(r"^\$?DFC(\d+)TO(\d+)$", re.IGNORECASE)
_FL = re.compile(r"^FL(\d+)(?![0-9])", re.IGNORECASE)


def spillover_from_metadata(metadata: Mapping[str, str], channels: Sequence[str],
                            path: str | os.PathLike | None = None) -> SpilloverMatrix | None:
    """The spillover matrix a data set's TEXT carries, or None when it has none.

    metadata : TEXT keywords; a case-insensitive mapping (cd7flow.sample.CaseInsensitiveDict)
        or any mapping (keys are compared case-insensitively here anyway).
    channels : $PnN of the data set's parameters, in order (used for number-indexed forms).
    path : the file, for error messages and :attr:`SpilloverMatrix.source`.

    Raises CompensationError when a keyword is present but malformed (wrong count,
    non-numbers, bad diagonal, singular...).
    """
    upper = {str(k).upper(): (str(k), v) for k, v in metadata.items()}
    where = f"{os.fspath(path)} " if path is not None else ""
    channels = tuple(channels)
    for key in SPILL_KEYWORDS:
        if key in upper:
            original, value = upper[key]
            return _parse_matrix_keyword(value, channels, f"{where}{original}", invert=False)
    for key in COMP_KEYWORDS:
        if key in upper:
            original, value = upper[key]
            return _parse_matrix_keyword(value, channels, f"{where}{original}", invert=True)
    dfc = {}
    for key, (_, value) in upper.items():
        m = _DFC.match(key)
        if m:
            dfc[(int(m.group(1)), int(m.group(2)))] = value
    if dfc:
        return _parse_dfc(dfc, channels, f"{where}$DFCiTOj")
    return None


def _number(text: str, source: str, what: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise CompensationError(source, f"{what} {text.strip()!r} is not a number") from None
    return value


def _parse_matrix_keyword(value: str, channels: tuple[str, ...], source: str, *, invert: bool) -> SpilloverMatrix:
    tokens = [t.strip() for t in str(value).strip().strip(",").split(",")]
    try:
        n = int(float(tokens[0]))
    except ValueError:
        raise CompensationError(source, f"first field {tokens[0]!r} should be the channel count") from None
    if n <= 0:
        raise CompensationError(source, f"channel count is {n}")
    if len(tokens) == 1 + n + n * n:
        names = tokens[1 : 1 + n]
        values = tokens[1 + n :]
    elif invert and len(tokens) == 1 + n * n:
        if n > len(channels):
            raise CompensationError(source, f"{n}x{n} matrix without names but only {len(channels)} parameters")
        names = list(channels[:n])
        values = tokens[1:]
    else:
        raise CompensationError(source, f"declares {n} channels, so {1 + n + n * n} fields are needed "
                                f"(count, {n} names, {n * n} values); found {len(tokens)}")
    names = _resolve_numbered(names, channels, source)
    matrix = np.array([_number(v, source, "spillover value") for v in values]).reshape(n, n)
    if invert:
        matrix = _comp_to_spill(matrix, names, source)
    return SpilloverMatrix(tuple(names), matrix, source)


def _resolve_numbered(names: list[str], channels: tuple[str, ...], source: str) -> list[str]:
    """Map ``"3"`` to $P3N when the names are all integers and none is a channel name."""
    if not names or not all(re.fullmatch(r"\d+", n) for n in names):
        return names
    if any(n in channels for n in names):
        return names
    resolved = []
    for n in names:
        k = int(n)
        if not 1 <= k <= len(channels):
            raise CompensationError(source, f"channel number {k} is outside 1..{len(channels)} ($PAR)")
        resolved.append(channels[k - 1])
    return resolved


def _comp_to_spill(comp: np.ndarray, names: list[str], source: str) -> np.ndarray:
    if not np.all(np.isfinite(comp)):
        raise CompensationError(source, "compensation matrix has non-finite entries")
    cond = np.linalg.cond(comp)
    if not math.isfinite(cond) or cond > 1e10:
        raise CompensationError(source, f"compensation matrix is singular (condition number {cond:.3g})")
    return np.linalg.inv(comp)


def _parse_dfc(dfc: dict[tuple[int, int], str], channels: tuple[str, ...], source: str) -> SpilloverMatrix:
    fl_column: dict[int, str] = {}
    for name in channels:
        m = _FL.match(name.strip())
        if m:
            # Several parameters can show one detector (FL1 Log, FL1 Lin): the first wins.
            fl_column.setdefault(int(m.group(1)), name)
    if not fl_column:
        # No FLn names: fall back to reading i and j as $Pn indices.
        fl_column = {k + 1: name for k, name in enumerate(channels)}
    numbers = sorted({i for i, _ in dfc} | {j for _, j in dfc})
    present = [k for k in numbers if k in fl_column]
    values = {key: _number(v, source, f"$DFC{key[0]}TO{key[1]}") for key, v in dfc.items()}
    dropped = [(i, j) for (i, j), v in values.items()
               if i != j and v != 0 and (i not in fl_column or j not in fl_column)]
    if dropped:
        i, j = dropped[0]
        raise CompensationError(source, f"$DFC{i}TO{j} = {values[(i, j)]} refers to FL{i if i not in fl_column else j}, "
                                f"which this data set does not have (channels: {', '.join(channels)})")
    if not present:
        return None  # type: ignore[return-value]  # only zero entries for absent detectors
    pos = {k: p for p, k in enumerate(present)}
    matrix = np.eye(len(present))
    for (i, j), v in values.items():
        if i != j and i in pos and j in pos:
            matrix[pos[i], pos[j]] = v / 100.0
    return SpilloverMatrix(tuple(fl_column[k] for k in present), matrix, source)


# ---------------------------------------------------------------- matrix files

def read_matrix_file(path: str | os.PathLike, channels: Sequence[str] | None = None) -> SpilloverMatrix:
    """Read a spillover matrix file: CSV/TSV/space-separated text, old FlowJo text, FlowJo .mtx XML.

    Text layout: one header row of detector names (it may be a ``#`` comment line, as
    FlowKit's exports write it), optional leading row labels (rows are then reordered
    to the header order by label), optional comment and title lines, then n rows of n
    numbers. Values are spillover fractions (rows = source, columns = detector).

    channels : when given, every matrix channel must be one of these (the sample's $PnN).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CompensationError(path, f"cannot read matrix file ({exc.strerror or exc})") from None
    text = raw.decode("utf-8-sig", errors="replace")
    if text.lstrip().startswith("<"):
        spill = _read_mtx_xml(raw, path)
    else:
        spill = _read_text_matrix(text, path)
    if channels is not None:
        missing = [c for c in spill.channels if c not in set(channels)]
        if missing:
            raise CompensationError(path, f"matrix channels not in the sample: {', '.join(missing)}")
    return spill


def _split(line: str) -> list[str]:
    if "\t" in line:
        parts = line.split("\t")
    elif "," in line:
        parts = line.split(",")
    else:
        parts = re.findall(r'"[^"]*"|\S+', line)
    return [p.strip().strip('"').strip() for p in parts]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_text_matrix(text: str, path: str) -> SpilloverMatrix:
    rows: list[tuple[str | None, list[float]]] = []
    header_candidates: list[list[str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        commented = line.lstrip().startswith("#")
        tokens = _split(line.lstrip().lstrip("#") if commented else line)
        while tokens and tokens[-1] == "":
            tokens.pop()
        if not tokens:
            continue
        numeric = [_is_number(t) for t in tokens]
        if all(numeric) and not commented:
            rows.append((None, [float(t) for t in tokens]))
        elif not commented and len(tokens) > 1 and all(numeric[1:]) and not numeric[0]:
            rows.append((tokens[0], [float(t) for t in tokens[1:]]))
        elif rows:
            raise CompensationError(path, f"line {lineno}: expected numbers, found {line.strip()[:60]!r}")
        else:
            header_candidates.append([t for t in tokens if t != ""])
    if not rows:
        raise CompensationError(path, "no rows of numbers found")
    width = len(rows[0][1])
    for k, (_, vals) in enumerate(rows):
        if len(vals) != width:
            raise CompensationError(path, f"matrix row {k + 1} has {len(vals)} values, row 1 has {width}")
    header = next((h for h in reversed(header_candidates) if len(h) == width), None)
    if header is None:
        raise CompensationError(path, f"no header row with {width} detector names before the numbers")
    if len(rows) != width:
        raise CompensationError(path, f"{len(rows)} rows of values for {width} channels "
                                f"({', '.join(header)}): a row is missing or extra")
    matrix = np.array([vals for _, vals in rows])
    labels = [label for label, _ in rows]
    if all(label is not None for label in labels):
        if sorted(labels) != sorted(header):
            raise CompensationError(path, f"row labels ({', '.join(labels)}) differ from the header "
                                    f"({', '.join(header)})")
        order = [labels.index(h) for h in header]
        matrix = matrix[order]
    return SpilloverMatrix(tuple(header), matrix, path)


def _read_mtx_xml(raw: bytes, path: str) -> SpilloverMatrix:
    import defusedxml.ElementTree as ET

    try:
        root = ET.fromstring(raw)
    except Exception as exc:  # defusedxml raises several types for hostile or broken XML
        raise CompensationError(path, f"not a readable XML matrix ({exc})") from None
    rows = [el for el in root.iter() if el.tag.split("}")[-1] == "Channel"]
    if not rows:
        raise CompensationError(path, "XML has no <Channel> elements (expected a FlowJo CompensationMatrix)")
    names = [r.get("name", "") for r in rows]
    matrix = np.zeros((len(rows), len(rows)))
    for i, row in enumerate(rows):
        for cell in row:
            if cell.tag.split("}")[-1] != "ChannelValue":
                continue
            col = cell.get("name", "")
            if col not in names:
                raise CompensationError(path, f"<ChannelValue name={col!r}> in row {names[i]!r} is not a matrix channel")
            matrix[i, names.index(col)] = _number(cell.get("value", ""), path, "value")
    return SpilloverMatrix(tuple(names), matrix, path)
