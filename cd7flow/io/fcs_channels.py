"""Per-channel keywords of an FCS data set ($PnN/$PnS/$PnB/$PnR/$PnE/$PnG) and preprocessing.

Preprocessing (``read_fcs(preprocess=True)``) follows flowCore's
"linearize-with-PnG-scaling", as flowio/FlowKit do for the reference corpus:
integer data with $PnE = f1,f2 and f1 > 0 are log decoded, ``10 ** (f1 * x / $PnR) * f2``
(f2 = 0 read as 1); linear channels with $PnG not 0 or 1 are divided by $PnG; the time
channel ($PnN "Time", any case) is multiplied by $TIMESTEP (seconds per tick) and never
gain-scaled. Unlike flowio, log channels are not gain-scaled and float data are never
log decoded (FCS 3.1: $PnE is 0,0 for F/D data and $PnG applies to linear channels).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import FCSTextError
from .fcs_text import ParsedDataSet, float_or_none, is_uint


def channel_layout(p: ParsedDataSet, par: int, datatype: str, where: str | None):
    """Per channel: stored bits ($PnB, int or None), range ($PnR float or nan), names, markers, PnE, PnG."""
    bits, ranges, names, markers, pne, png = [], [], [], [], [], []
    for n in range(1, par + 1):
        b = p.get(f"$P{n}B")
        if b is None and datatype == "I":
            raise FCSTextError(where, f"required keyword $P{n}B is missing ($PAR is {par})")
        b = (b or "").strip()
        if datatype == "I":
            if not is_uint(b) or not 0 < int(b) <= 64:
                raise FCSTextError(where, f"$P{n}B is {b[:20]!r}; integer data need a bit width of 1-64")
            bits.append(int(b))
        else:
            bits.append(int(b) if is_uint(b) else None)
        r = float_or_none(p.get(f"$P{n}R"))
        if r is None:
            if datatype == "I" and p.get(f"$P{n}R") is None:
                p.warnings.append(f"$P{n}R is missing; channel {n} is not masked")
            elif p.get(f"$P{n}R") is not None:
                p.warnings.append(f"$P{n}R {p.get(f'$P{n}R')[:20]!r} is not a number")
        ranges.append(math.nan if r is None else r)
        name = p.get(f"$P{n}N")
        if name is None or not name.strip():
            p.warnings.append(f"$P{n}N is missing; named the channel 'P{n}'")
            name = f"P{n}"
        names.append(name.strip())
        markers.append((p.get(f"$P{n}S") or "").strip())
        f1 = f2 = 0.0
        e = p.get(f"$P{n}E")
        if e is not None:
            fields = [float_or_none(x) for x in e.split(",")]
            if len(fields) == 2 and None not in fields:
                f1, f2 = fields
            else:
                p.warnings.append(f"$P{n}E {e[:20]!r} is not 'f1,f2'; treated channel {n} as linear")
        pne.append((f1, f2))
        g = float_or_none(p.get(f"$P{n}G"))
        png.append(1.0 if g is None else g)
    return bits, np.array(ranges, dtype=np.float64), names, markers, pne, png


def unique_names(names: list[str], p: ParsedDataSet) -> list[str]:
    seen: dict[str, int] = {}
    taken = {n.lower() for n in names}
    out = []
    for name in names:
        key = name.lower()
        if key not in seen:
            seen[key] = 1
            out.append(name)
            continue
        k = seen[key] + 1
        while f"{name}_{k}".lower() in taken:
            k += 1
        seen[key] = k
        new = f"{name}_{k}"
        taken.add(new.lower())
        out.append(new)
        p.warnings.append(f"duplicate $PnN {name!r}; renamed a repeat to {new!r}")
    return out


def bit_mask(bits: int, pnr: float) -> int | None:
    """Bit mask for an integer channel: next power of two >= $PnR, minus 1, when $PnR <= 2**$PnB."""
    if not math.isfinite(pnr) or pnr <= 0 or pnr > 2.0**bits:
        return None
    need = max(1, math.ceil(pnr))
    mask = (1 << (need - 1).bit_length()) - 1
    return None if mask >= (1 << bits) - 1 else mask


def preprocess_events(events: np.ndarray, p: ParsedDataSet, datatype: str, channels, ranges, pne, png) -> None:
    """In place: log decoding (I data), gain division (linear channels), time x $TIMESTEP."""
    time_idx = None
    for j, ch in enumerate(channels):
        if ch.strip().lower() == "time":
            time_idx = j
    for j, ((f1, f2), gain) in enumerate(zip(pne, png)):
        if datatype == "I" and f1 > 0:
            r = ranges[j]
            if not math.isfinite(r) or r <= 0:
                p.warnings.append(f"channel {channels[j]} is log-scaled but $PnR is unusable; left undecoded")
                continue
            col = events[:, j]
            np.multiply(col, f1 / r, out=col)
            np.power(10.0, col, out=col)
            col *= f2 if f2 != 0 else 1.0
        elif f1 > 0:
            p.warnings.append(
                f"$PnE {f1:g},{f2:g} on {channels[j]} ignored: log decoding applies to integer data only"
            )
        elif gain not in (0.0, 1.0) and j != time_idx:
            events[:, j] /= events.dtype.type(gain)
    if time_idx is not None:
        step = float_or_none(p.get("$TIMESTEP"))
        if step is not None and step != 0 and step != 1:
            events[:, time_idx] *= events.dtype.type(step)
