"""Decoding the DATA segment of an FCS data set into an events x channels array.

Everything works on a read-only uint8 buffer (np.memmap of the file, or a view
of bytes in memory) through strided numpy views: no per-event Python loop and,
for the common layouts, exactly one copy (the final ``astype``). Uniform float
DATA of a file is the exception: it is read with ``np.fromfile`` straight into
the (writable) events array, because a copy out of the map leaves the file's
pages resident beside it (peak RSS 2x the matrix instead of 1.3x, measured by
benchmarks/bench_core.py); a read-only zero-copy view would only move that copy
to the first in-place step (compensation).

Byte order: $BYTEORD lists, for each byte of a word as stored, its significance
(1 = least significant). "1,2,3,4" / "1,2" are little-endian and "4,3,2,1" /
"2,1" big-endian for any word size; any other permutation (e.g. "3,4,1,2") is
applied literally to words of the same size and gathered byte by byte.

Layouts: uniform integers (:func:`decode_integers`), uniform floats (:func:`decode_floats`,
the zero-extra-copy path), FCS 3.2 mixed columns ($PnDATATYPE; :func:`decode_mixed`) and
bit-packed integers (:func:`decode_packed`).
"""
from __future__ import annotations

import numpy as np

from ..errors import FCSDataError, FCSTextError, FCSUnsupportedError


def parse_byteord(value: str, where: str | None) -> tuple[int, ...]:
    """$BYTEORD as a 0-based significance per stored byte, e.g. "4,3,2,1" -> (3, 2, 1, 0)."""
    try:
        order = tuple(int(x) - 1 for x in value.replace(" ", "").split(","))
    except ValueError:
        raise FCSTextError(where, f"$BYTEORD {value[:40]!r} is not a comma-separated list of byte positions") from None
    if not order or sorted(order) != list(range(len(order))):
        raise FCSTextError(where, f"$BYTEORD {value[:40]!r} is not a permutation of 1..{len(order) or 'n'}")
    return order


def _endian(order: tuple[int, ...]) -> str | None:
    """'<' or '>' when the order is plain little/big-endian, else None."""
    if order == tuple(range(len(order))):
        return "<"
    if order == tuple(reversed(range(len(order)))):
        return ">"
    return None


def _byte_significance(order: tuple[int, ...], nbytes: int, where: str | None) -> tuple[int, ...]:
    """Significance of each stored byte of an ``nbytes`` word."""
    endian = _endian(order)
    if endian == "<" or nbytes == 1:
        return tuple(range(nbytes))
    if endian == ">":
        return tuple(reversed(range(nbytes)))
    if len(order) == nbytes:
        return order
    raise FCSUnsupportedError(
        where, f"$BYTEORD {','.join(str(o + 1) for o in order)} cannot be applied to {nbytes}-byte values"
    )


def _strided(buf: np.ndarray, offset: int, dtype: str | np.dtype, n: int, stride: int) -> np.ndarray:
    """A view of ``n`` values of ``dtype`` starting at ``offset``, ``stride`` bytes apart."""
    if n == 0:  # an empty data set may start at the very end of the file
        return np.empty(0, dtype=dtype)
    return np.ndarray(shape=(n,), dtype=dtype, buffer=buf, offset=offset, strides=(stride,))


def _gather_uint(buf: np.ndarray, offset: int, n: int, stride: int, significance: tuple[int, ...]) -> np.ndarray:
    """Unsigned integers built byte by byte (odd widths or odd byte orders), as uint64."""
    out = np.zeros(n, dtype=np.uint64)
    for k, sig in enumerate(significance):
        byte = _strided(buf, offset + k, np.uint8, n, stride)
        out |= byte.astype(np.uint64) << np.uint64(8 * sig)
    return out


def _uint_column(buf: np.ndarray, offset: int, n: int, stride: int, nbytes: int, order, where) -> np.ndarray:
    significance = _byte_significance(order, nbytes, where)
    if nbytes in (1, 2, 4, 8) and (nbytes == 1 or _endian(significance) is not None):
        endian = "<" if nbytes == 1 else _endian(significance)
        return _strided(buf, offset, f"{endian}u{nbytes}", n, stride)
    return _gather_uint(buf, offset, n, stride, significance)


def decode_integers(
    buf: np.ndarray, start: int, n_events: int, widths: list[int], masks: list[int | None], order, where
) -> np.ndarray:
    """Integer DATA (bytes per value in ``widths``) as float64 n x p, each column AND-ed with its mask."""
    n_par = len(widths)
    stride = sum(widths)
    out = np.empty((n_events, n_par), dtype=np.float64)
    uniform = len(set(widths)) == 1 and widths[0] in (1, 2, 4, 8)
    endian = "<" if widths[0] == 1 else _endian(_byte_significance(order, widths[0], where))
    if uniform and endian is not None:
        # One 2-D view of the whole matrix; masks broadcast across rows.
        raw = np.ndarray(
            shape=(n_events, n_par), dtype=f"{endian}u{widths[0]}", buffer=buf, offset=start,
            strides=(stride, widths[0]),
        )
        if any(m is not None for m in masks):
            full = np.array([m if m is not None else (1 << (8 * widths[0])) - 1 for m in masks], dtype=raw.dtype)
            np.bitwise_and(raw, full, out=out, casting="unsafe")
        else:
            out[...] = raw
        return out
    offset = start
    for j, (w, m) in enumerate(zip(widths, masks)):
        col = _uint_column(buf, offset, n_events, stride, w, order, where)
        if m is not None:
            col = col & np.asarray(m, dtype=col.dtype)
        out[:, j] = col
        offset += w
    return out


def decode_floats(
    buf: np.ndarray, start: int, n_events: int, n_par: int, nbytes: int, order, where
) -> np.ndarray:
    """Float DATA ($DATATYPE F: 4 bytes, D: 8 bytes) as native float32/float64 n x p, one copy."""
    kind = f"f{nbytes}"
    significance = _byte_significance(order, nbytes, where)
    endian = _endian(significance)
    stride = n_par * nbytes
    if endian is not None:
        filename = getattr(buf, "filename", None)
        if filename is not None:
            return _read_floats_from_file(filename, buf.offset + start, n_events, n_par, f"{endian}{kind}", where)
        raw = np.ndarray(shape=(n_events, n_par), dtype=f"{endian}{kind}", buffer=buf, offset=start)
        return raw.astype(f"={kind}")
    out = np.empty((n_events, n_par), dtype=f"={kind}")
    for j in range(n_par):
        bits = _gather_uint(buf, start + j * nbytes, n_events, stride, significance)
        out[:, j] = bits.astype(f"=u{nbytes}").view(f"={kind}")
    return out


def _read_floats_from_file(filename: str, offset: int, n_events: int, n_par: int, dtype: str, where) -> np.ndarray:
    """Read a contiguous float DATA segment straight into an owned, writable native array.

    Copying out of the memory map would leave the file's pages mapped beside the copy
    (peak RSS twice the event matrix); np.fromfile has the kernel copy once into the
    array, and a foreign byte order is then swapped in place.
    """
    count = n_events * n_par
    with open(filename, "rb") as fh:
        events = np.fromfile(fh, dtype=dtype, count=count, offset=offset)
    if events.size != count:  # the file shrank since it was mapped
        raise FCSDataError(where, f"DATA segment ends early: read {events.size:,} of {count:,} values")
    if not events.dtype.isnative:
        events.byteswap(inplace=True)
        events = events.view(events.dtype.newbyteorder("="))
    return events.reshape(n_events, n_par)


def _float_column(buf: np.ndarray, offset: int, n: int, stride: int, nbytes: int, order, where) -> np.ndarray:
    significance = _byte_significance(order, nbytes, where)
    endian = _endian(significance)
    if endian is not None:
        return _strided(buf, offset, f"{endian}f{nbytes}", n, stride)
    return _gather_uint(buf, offset, n, stride, significance).astype(f"=u{nbytes}").view(f"=f{nbytes}")


def decode_mixed(
    buf: np.ndarray, start: int, n_events: int, kinds: list[str], widths: list[int], masks: list[int | None],
    order, where,
) -> np.ndarray:
    """FCS 3.2 DATA whose columns differ in type ($PnDATATYPE I/F/D) as float64 n x p.

    Integer columns are AND-ed with their mask; float32 values widen exactly to float64.
    """
    stride = sum(widths)
    out = np.empty((n_events, len(widths)), dtype=np.float64)
    offset = start
    for j, (kind, w, m) in enumerate(zip(kinds, widths, masks)):
        if kind == "I":
            col = _uint_column(buf, offset, n_events, stride, w, order, where)
            if m is not None:
                col = col & np.asarray(m, dtype=col.dtype)
        else:
            col = _float_column(buf, offset, n_events, stride, w, order, where)
        out[:, j] = col
        offset += w
    return out


MAX_PACKED_BITS = 57  # a field plus its bit shift (<= 7) must fit in one 64-bit gather


def decode_packed(
    buf: np.ndarray, start: int, n_events: int, bits: list[int], masks: list[int | None], order, where
) -> np.ndarray:
    """Bit-packed unsigned integers (the sum of $PnB is the event size in bits) as float64 n x p.

    DATA is read as one continuous bit stream, events one after another with no padding.
    Bit numbering follows $BYTEORD: little-endian ("1,2,...") streams start at the least
    significant bit of the first byte and each field's least significant bit comes first;
    big-endian ("...,2,1") streams start at the most significant bit and each field's most
    significant bit comes first. Each column is gathered with a few vectorised byte reads
    and shifts (no per-event loop).
    """
    endian = _endian(tuple(order))
    if endian is None:
        raise FCSUnsupportedError(
            where, f"$BYTEORD {','.join(str(o + 1) for o in order)} cannot be applied to a packed bit stream"
        )
    if max(bits) > MAX_PACKED_BITS:
        raise FCSUnsupportedError(where, f"packed $PnB above {MAX_PACKED_BITS} bits is not supported (got {max(bits)})")
    per_event = sum(bits)
    last = start + (n_events * per_event + 7) // 8 - 1
    out = np.empty((n_events, len(bits)), dtype=np.float64)
    first_bit = np.arange(n_events, dtype=np.int64) * per_event
    offset = 0
    for j, (b, m) in enumerate(zip(bits, masks)):
        pos = first_bit + offset
        byte = start + (pos >> 3)
        shift = (pos & 7).astype(np.uint64)
        nb = (b + 7 + 7) // 8  # bytes touched by a b-bit field starting at any bit of a byte
        word = np.zeros(n_events, dtype=np.uint64)
        for k in range(nb):
            # Reads past the last byte of DATA only feed bits that are shifted or masked away.
            got = buf[np.minimum(byte + k, last)].astype(np.uint64)
            word |= got << np.uint64(8 * k if endian == "<" else 8 * (nb - 1 - k))
        if endian == "<":
            word >>= shift
        else:
            word >>= np.uint64(8 * nb - b) - shift
        field = (1 << b) - 1 if m is None else min(m, (1 << b) - 1)
        out[:, j] = word & np.uint64(field)
        offset += b
    return out


def decode_ascii_fixed(buf: np.ndarray, start: int, n_events: int, widths: list[int], where) -> np.ndarray:
    """$DATATYPE A with fixed $PnB characters per value (FCS 3.1: deprecated) as float64 n x p.

    Each field holds decimal digits, optionally padded with blanks; an all-blank field is 0.
    """
    stride = sum(widths)
    block = np.ndarray(shape=(n_events, stride), dtype=np.uint8, buffer=buf, offset=start) if n_events else \
        np.empty((0, stride), dtype=np.uint8)
    ok = ((block >= 48) & (block <= 57)) | (block == 32)
    if not ok.all():
        row, col = (int(v[0]) for v in np.nonzero(~ok))
        raise FCSDataError(where, f"ASCII DATA holds byte {int(block[row, col])!r} (not a digit) in event {row + 1}")
    out = np.empty((n_events, len(widths)), dtype=np.float64)
    pos = 0
    for j, w in enumerate(widths):
        field = np.array(block[:, pos : pos + w])
        field[(field == 32).all(axis=1), w - 1] = 48
        out[:, j] = field.view(f"S{w}").reshape(n_events).astype(np.float64)
        pos += w
    return out


_ASCII_SEPARATORS = bytes.maketrans(b",\t\r\n", b"    ")


def decode_ascii_free(raw: bytes, n_events: int | None, n_par: int, where) -> np.ndarray:
    """$DATATYPE A with $PnB * : values separated by blank, tab, comma, CR or LF (runs count once)."""
    tokens = raw.translate(_ASCII_SEPARATORS).split()
    if n_events is None:
        n_events = len(tokens) // n_par
    need = n_events * n_par
    if len(tokens) < need:
        raise FCSDataError(where, f"free-format ASCII DATA holds {len(tokens):,} values; $TOT x $PAR needs {need:,}")
    try:
        values = np.array(tokens[:need], dtype=np.float64)
    except ValueError:
        raise FCSDataError(where, "free-format ASCII DATA holds a value that is not a number") from None
    return values.reshape(n_events, n_par)


def check_fits(buf_size: int, start: int, nbytes: int, where: str | None, what: str) -> None:
    if start < 0 or start + nbytes > buf_size:
        raise FCSDataError(
            where, f"{what}: DATA needs bytes {start}-{start + nbytes - 1} but the file has only {buf_size:,} bytes"
        )
