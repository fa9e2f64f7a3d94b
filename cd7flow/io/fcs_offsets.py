"""Where the DATA segment of a data set is: HEADER vs TEXT offsets, $TOT, odd bit widths.

The rule is documented in :mod:`cd7flow.io.fcs_read` (module docstring). Offsets are
bytes relative to the data set start, inclusive, as in the file. Sizes are counted in
bits per event so that bit-packed integer layouts (FCS 2.0/3.0 "continuous bit stream")
fit the same rule: a packed DATA segment holds ceil($TOT x bits per event / 8) bytes.
"""
from __future__ import annotations

from ..errors import FCSDataError, FCSTextError
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


def _nbytes(tot: int, bits_per_event: int) -> int:
    return (tot * bits_per_event + 7) // 8


def locate_data(p: ParsedDataSet, size: int, bits_per_event: int, tot: int | None, where: str | None):
    """(data start relative to the data set, $TOT) chosen by the rule in the module docstring.

    ``bits_per_event`` is 8 x bytes per event for byte-aligned layouts, the sum of $PnB
    for a bit-packed one.
    """
    unit = f"{bits_per_event // 8} bytes" if bits_per_event % 8 == 0 else f"{bits_per_event} bits"
    cands = data_candidates(p, where)
    if not cands and tot == 0:
        # No events and no DATA segment: FCS 3.1 gives an absent segment the offsets 0
        # (HEADER and $BEGINDATA/$ENDDATA), which is what our writer does.
        p.offsets["data"] = None
        p.offsets["data_source"] = "none (0 events)"
        return 0, 0
    if not cands:
        raise FCSDataError(where, "neither HEADER nor TEXT ($BEGINDATA) gives a DATA offset")
    room = size - p.base
    if tot is None:
        # FCS 2.0 may omit $TOT: infer it from the first usable span.
        for src, s, e in cands:
            span = e - s + 1
            if span > 0 and s + span <= room + 1:
                span = min(span, room - s)
                tot = span * 8 // bits_per_event
                p.warnings.append(f"$TOT is missing; inferred {tot} events from the {src} DATA span")
                break
        else:
            raise FCSDataError(where, "$TOT is missing and no DATA span fits in the file")
    need = _nbytes(tot, bits_per_event)
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
            f"declares {tot:,} events of {unit} ({need:,} bytes) but its DATA segment "
            f"({src} offsets {s}-{e}) holds {holds:,} bytes in a file of {size:,} bytes",
        )
    rank, src, s, e = best
    if rank == 1:
        what = "one past the end of file" if p.base + e == size else "one byte too far"
        p.warnings.append(f"DATA end offset {e} ({src}) is {what}; used {s}-{s + need - 1}")
    elif rank == 2:
        p.warnings.append(
            f"DATA span {s}-{e} ({src}) does not match $TOT x {unit} = {need:,} bytes; "
            f"read {need:,} bytes from {s}"
        )
    p.offsets["data"] = (s, s + need - 1)
    p.offsets["data_source"] = src
    return s, tot


def word_bytes(bits: int) -> int:
    """Bytes of the smallest 1/2/4/8-byte word that holds ``bits`` bits."""
    return next(w for w in (1, 2, 4, 8) if 8 * w >= bits)


def odd_layout(p: ParsedDataSet, bits: list[int], kinds: list[str], fixed_bytes: list[int],
               tot: int | None) -> tuple[str, list[int]]:
    """Layout when some integer $PnB is not a multiple of 8: ("words", bytes per column) or ("packed", bits).

    Two layouts are found in files: each value in its own 8/16/32/64-bit word (Beckman
    FC500 writes $PnB 10 in 16-bit words), or one continuous bit stream of $PnB-bit fields
    (what FCS 2.0/3.0 describe: "a continuous bit stream with no delimiters"). The DATA
    span decides; packing is only considered when every column is an integer. With no
    span to decide (missing $TOT, or neither matches), words are assumed, as before.
    ``fixed_bytes`` is the byte width of each column whose width is not in question.
    """
    words = [word_bytes(b) if k == "I" and b % 8 else w for b, k, w in zip(bits, kinds, fixed_bytes)]
    spans = [e - s + 1 for _, s, e in _candidates_quiet(p)]
    odd = sorted({b for b, k in zip(bits, kinds) if k == "I" and b % 8})
    sizes = "/".join(str(8 * w) for w in sorted({word_bytes(b) for b in odd}))
    if tot is not None:
        word_need = tot * sum(words)
        if any(span in (word_need, word_need + 1) for span in spans):
            p.warnings.append(f"$PnB {odd} stored in {sizes}-bit words (the DATA span says so)")
            return "words", words
        if all(k == "I" for k in kinds):
            packed_need = _nbytes(tot, sum(bits))
            if any(span in (packed_need, packed_need + 1) for span in spans):
                p.warnings.append(f"$PnB {odd}: DATA is a packed bit stream of {sum(bits)} bits per event")
                return "packed", list(bits)
    p.warnings.append(f"$PnB {odd} read as {sizes}-bit words (the DATA span matches neither words nor packed bits)")
    return "words", words


def _candidates_quiet(p: ParsedDataSet) -> list[tuple[str, int, int]]:
    saved = list(p.warnings)
    try:
        return data_candidates(p, None)
    finally:
        p.warnings[:] = saved
