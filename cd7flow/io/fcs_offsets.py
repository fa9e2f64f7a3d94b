"""Where the DATA segment of a data set is: HEADER vs TEXT offsets, $TOT, odd bit widths.

The rule is documented in :mod:`cd7flow.io.fcs_read` (module docstring). Offsets are
bytes relative to the data set start, inclusive, as in the file.
"""
from __future__ import annotations

from ..errors import FCSDataError, FCSTextError, FCSUnsupportedError
from .fcs_text import ParsedDataSet, parse_int_keyword


def data_candidates(p: ParsedDataSet, where: str | None) -> list[tuple[str, int, int]]:
    out = []
    try:
        b = parse_int_keyword(p.text, p.upper, "$BEGINDATA", where, required=False)
        e = parse_int_keyword(p.text, p.upper, "$ENDDATA", where, required=False)
    except FCSTextError as exc:
        p.warnings.append(f"ignored TEXT data offsets: {exc.problem}")
        b = e = None
    text = ("TEXT", b, e) if b and b > 0 and e is not None else None
    head = ("HEADER", p.header.data_start, p.header.data_end) if p.header.data_start > 0 else None
    order = [head, text] if p.header.version == "FCS2.0" else [text, head]
    out = [c for c in order if c is not None]
    if text and head and (text[1], text[2]) != (head[1], head[2]):
        p.warnings.append(
            f"HEADER DATA offsets {head[1]}-{head[2]} disagree with $BEGINDATA/$ENDDATA {text[1]}-{text[2]}"
        )
    return out


def locate_data(p: ParsedDataSet, size: int, bytes_per_event: int, tot: int | None, where: str | None):
    """(data start relative to the data set, $TOT) chosen by the rule in the module docstring."""
    cands = data_candidates(p, where)
    if not cands:
        raise FCSDataError(where, "neither HEADER nor TEXT ($BEGINDATA) gives a DATA offset")
    room = size - p.base
    if tot is None:
        # FCS 2.0 may omit $TOT: infer it from the first usable span.
        for src, s, e in cands:
            span = e - s + 1
            if span > 0 and s + span <= room + 1:
                span = min(span, room - s)
                tot = span // bytes_per_event
                p.warnings.append(f"$TOT is missing; inferred {tot} events from the {src} DATA span")
                break
        else:
            raise FCSDataError(where, "$TOT is missing and no DATA span fits in the file")
    need = tot * bytes_per_event
    best = None
    for rank, test in enumerate(
        (lambda span: span == need, lambda span: span == need + 1, lambda span: True)
    ):
        for src, s, e in cands:
            if test(e - s + 1) and s + need <= room:
                best = (rank, src, s, e)
                break
        if best:
            break
    if best is None:
        src, s, e = cands[0]
        holds = max(0, min(e - s + 1, room - s))
        raise FCSDataError(
            where,
            f"declares {tot:,} events of {bytes_per_event} bytes ({need:,} bytes) but its DATA segment "
            f"({src} offsets {s}-{e}) holds {holds:,} bytes in a file of {size:,} bytes",
        )
    rank, src, s, e = best
    if rank == 1:
        what = "one past the end of file" if p.base + e == size else "one byte too far"
        p.warnings.append(f"DATA end offset {e} ({src}) is {what}; used {s}-{s + need - 1}")
    elif rank == 2:
        p.warnings.append(
            f"DATA span {s}-{e} ({src}) does not match $TOT x {bytes_per_event} bytes = {need:,}; "
            f"read {need:,} bytes from {s}"
        )
    p.offsets["data"] = (s, s + need - 1)
    p.offsets["data_source"] = src
    return s, tot


def odd_widths(p: ParsedDataSet, bits: list[int], tot: int | None, size: int, where: str | None) -> list[int]:
    """Bytes per value when some $PnB is not a multiple of 8: 16-bit words if the DATA span says so."""
    if any(b > 16 for b in bits if b % 8):
        raise FCSUnsupportedError(where, f"$PnB {bits} includes a packed width above 16 bits")
    widths = [2 if b % 8 else b // 8 for b in bits]
    bpe = sum(widths)
    spans = [e - s + 1 for _, s, e in _candidates_quiet(p)]
    if tot is None or any(span in (tot * bpe, tot * bpe + 1) for span in spans):
        p.warnings.append(f"$PnB {sorted(set(b for b in bits if b % 8))} stored in 16-bit words (the DATA span says so)")
        return widths
    raise FCSUnsupportedError(
        where, f"$PnB {bits} asks for packed bit fields; only byte-aligned or 16-bit-word layouts are read"
    )


def _candidates_quiet(p: ParsedDataSet) -> list[tuple[str, int, int]]:
    saved = list(p.warnings)
    try:
        return data_candidates(p, None)
    finally:
        p.warnings[:] = saved
