"""Per-channel keywords of an FCS data set ($PnN/$PnS/$PnB/$PnR/$PnE/$PnG/$PnDATATYPE...) and preprocessing.

Column types: each column is I (unsigned integer), F (float32) or D (float64). FCS 3.2
$PnDATATYPE overrides $DATATYPE for column n, so one data set may mix integer and float
columns of different widths (:func:`column_types`). ASCII (A) is read only when every column is A.

Preprocessing (``read_fcs(preprocess=True)``) follows flowCore's
"linearize-with-PnG-scaling", as flowio/FlowKit do for the reference corpus:
integer columns with $PnE = f1,f2 and f1 > 0 are log decoded, ``10 ** (f1 * x / $PnR) * f2``
(f2 = 0 read as 1, FCS 3.1); linear channels with $PnG > 0 and not 1 are divided by $PnG; the
time channel ($PnN "Time" in any case, or FCS 3.2 $PnTYPE "Time") is multiplied by $TIMESTEP
(seconds per tick) and never gain-scaled. Unlike flowio, log channels are not gain-scaled and
float columns are never log decoded (FCS 3.1: $PnE is 0,0 for F/D data; FCS 3.2: $PnG is not
used with log amplification); both cases are tolerated with a warning.

:func:`channel_info` collects the optional per-channel keywords (FCS 3.1 $PnL list of
wavelengths, $PnV, $PnG, $PnD; FCS 3.2 $PnTYPE, $PnDET, $PnTAG, $PnANALYTE, $PnFEATURE,
$PnDISPLAY) into plain dicts for ``sample.extra["channel_info"]``.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import FCSTextError
from .fcs_text import ParsedDataSet, float_or_none, is_uint


def column_types(p: ParsedDataSet, par: int, datatype: str, where: str | None) -> list[str]:
    """Per column 'I', 'F', 'D' or 'A': $PnDATATYPE (FCS 3.2) where given, else $DATATYPE.

    $PnDATATYPE is only defined by FCS 3.2; a file of an earlier version carrying it is
    still read by it (the writer meant it), with a warning.
    """
    kinds = []
    overridden = []
    for n in range(1, par + 1):
        raw = p.get(f"$P{n}DATATYPE")
        if raw is None:
            kinds.append(datatype)
            continue
        kind = raw.strip().upper()
        if kind not in ("I", "F", "D"):
            raise FCSTextError(where, f"$P{n}DATATYPE is {raw[:10]!r}; FCS 3.2 allows I, F or D")
        kinds.append(kind)
        if kind != datatype:
            overridden.append(n)
    if overridden and p.header.version != "FCS3.2":
        p.warnings.append(
            f"$PnDATATYPE (an FCS 3.2 keyword) in an {p.header.version} file; used it for parameter(s) "
            f"{', '.join(map(str, overridden[:8]))}"
        )
    return kinds


def channel_layout(p: ParsedDataSet, par: int, kinds: list[str], where: str | None):
    """Per channel: stored bits ($PnB, int or None), range ($PnR float or nan), names, markers, PnE, PnG.

    ``kinds`` is the column type of each channel (see :func:`column_types`).
    """
    bits, ranges, names, markers, pne, png = [], [], [], [], [], []
    for n, kind in zip(range(1, par + 1), kinds):
        b = p.get(f"$P{n}B")
        if b is None and kind == "I":
            raise FCSTextError(where, f"required keyword $P{n}B is missing ($PAR is {par})")
        b = (b or "").strip()
        if kind == "I":
            if not is_uint(b) or not 0 < int(b) <= 64:
                raise FCSTextError(where, f"$P{n}B is {b[:20]!r}; integer data need a bit width of 1-64")
            bits.append(int(b))
        else:
            bits.append(int(b) if is_uint(b) else None)
        r = float_or_none(p.get(f"$P{n}R"))
        if r is None:
            if kind == "I" and p.get(f"$P{n}R") is None:
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
            if len(fields) == 2 and None not in fields and fields[0] >= 0 and fields[1] >= 0:
                f1, f2 = fields
            else:
                p.warnings.append(f"$P{n}E {e[:20]!r} is not 'f1,f2' with f1, f2 >= 0; treated channel {n} as linear")
        pne.append((f1, f2))
        g = float_or_none(p.get(f"$P{n}G"))
        png.append(1.0 if g is None else g)
    return bits, np.array(ranges, dtype=np.float64), names, markers, pne, png


_INFO_KEYWORDS = {
    # key in the info dict: $Pn<suffix>
    "type": "TYPE", "detector": "DET", "tag": "TAG", "analyte": "ANALYTE", "feature": "FEATURE",
    "filter": "F", "detector_type": "T", "calibration": "CALIBRATION", "display_scale": "D",
}


def channel_info(p: ParsedDataSet, par: int, kinds: list[str], bits, ranges, pne, png) -> tuple[dict, ...]:
    """One dict per channel: what TEXT says about it beyond name/marker (units in the keys).

    Keys always present: ``datatype`` ('I'/'F'/'D'), ``bits`` ($PnB or None), ``range``
    ($PnR, channel units), ``amplification`` ((f1 decades, f2 offset)), ``gain`` ($PnG).
    Present when the file has them: ``excitation_wavelengths_nm`` ($PnL, FCS 3.1 allows a
    comma-separated list), ``detector_voltage_v`` ($PnV), ``excitation_power_mw`` ($PnO),
    ``percent_emitted`` ($PnP), ``display`` (FCS 3.2 $PnDISPLAY as ('LIN'|'LOG', a, b)),
    and the text of $PnTYPE, $PnDET, $PnTAG, $PnANALYTE, $PnFEATURE, $PnF, $PnT,
    $PnCALIBRATION, $PnD under the names in ``_INFO_KEYWORDS``.
    """
    out = []
    for j in range(par):
        n = j + 1
        info: dict[str, object] = {
            "datatype": kinds[j], "bits": bits[j], "range": float(ranges[j]),
            "amplification": tuple(pne[j]), "gain": float(png[j]),
        }
        for key, suffix in _INFO_KEYWORDS.items():
            v = p.get(f"$P{n}{suffix}")
            if v is not None and v.strip():
                info[key] = v.strip()
        wl = p.get(f"$P{n}L")
        if wl is not None:
            values = [float_or_none(x) for x in wl.split(",")]
            if values and None not in values:
                info["excitation_wavelengths_nm"] = tuple(values)
        for key, suffix in (("detector_voltage_v", "V"), ("excitation_power_mw", "O"), ("percent_emitted", "P")):
            v = float_or_none(p.get(f"$P{n}{suffix}"))
            if v is not None:
                info[key] = v
        disp = p.get(f"$P{n}DISPLAY")
        if disp is not None:
            parts = [x.strip() for x in disp.split(",")]
            nums = [float_or_none(x) for x in parts[1:]]
            if len(parts) == 3 and parts[0].upper() in ("LIN", "LOG") and None not in nums:
                info["display"] = (parts[0].upper(), nums[0], nums[1])
            else:
                p.warnings.append(f"$P{n}DISPLAY {disp[:30]!r} is not 'LIN|LOG,f1,f2'; ignored it")
        out.append(info)
    return tuple(out)


def time_channel(p: ParsedDataSet, channels) -> int | None:
    """Index of the time channel: FCS 3.2 $PnTYPE 'Time' first, else $PnN 'Time' (any case)."""
    by_type = [j for j in range(len(channels)) if (p.get(f"$P{j + 1}TYPE") or "").strip().lower() == "time"]
    if by_type:
        return by_type[0]
    by_name = [j for j, ch in enumerate(channels) if ch.strip().lower() == "time"]
    return by_name[-1] if by_name else None


def unstained_centers(p: ParsedDataSet, channels, where: str | None) -> dict[str, float] | None:
    """FCS 3.2 $UNSTAINEDCENTERS ``n,name1..namen,value1..valuen`` as {$PnN: center}, or None.

    Malformed values are reported in the warnings, not raised: the data are still readable.
    """
    raw = p.get("$UNSTAINEDCENTERS")
    if raw is None or not raw.strip():
        return None
    parts = [x.strip() for x in raw.split(",")]
    if not is_uint(parts[0]) or len(parts) != 1 + 2 * int(parts[0]) or int(parts[0]) == 0:
        p.warnings.append(f"$UNSTAINEDCENTERS {raw[:40]!r} is not 'n,names,values'; ignored it")
        return None
    k = int(parts[0])
    names, values = parts[1 : 1 + k], [float_or_none(x) for x in parts[1 + k :]]
    known = {c.lower() for c in channels}
    if None in values or any(nm.lower() not in known for nm in names):
        p.warnings.append(f"$UNSTAINEDCENTERS {raw[:40]!r} names unknown channels or non-numbers; ignored it")
        return None
    return dict(zip(names, values))


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


def preprocess_events(events: np.ndarray, p: ParsedDataSet, kinds: list[str], channels, ranges, pne, png) -> None:
    """In place: log decoding (integer columns), gain division (linear channels), time x $TIMESTEP."""
    time_idx = time_channel(p, channels)
    for j, ((f1, f2), gain) in enumerate(zip(pne, png)):
        if kinds[j] in ("I", "A") and f1 > 0:  # ASCII values are integers too
            r = ranges[j]
            if not math.isfinite(r) or r <= 0:
                p.warnings.append(f"channel {channels[j]} is log-scaled but $PnR is unusable; left undecoded")
                continue
            if gain not in (0.0, 1.0):
                p.warnings.append(f"$PnG {gain:g} on log-scaled {channels[j]} ignored (FCS 3.2: gain is for linear channels)")
            col = events[:, j]
            np.multiply(col, f1 / r, out=col)
            np.power(10.0, col, out=col)
            col *= f2 if f2 != 0 else 1.0
        elif f1 > 0:
            p.warnings.append(
                f"$PnE {f1:g},{f2:g} on {channels[j]} ignored: log decoding applies to integer data only"
            )
        elif j == time_idx:
            continue
        elif gain < 0 or not math.isfinite(gain):
            p.warnings.append(f"$PnG {gain:g} on {channels[j]} is not a positive gain; ignored it")
        elif gain not in (0.0, 1.0):
            events[:, j] /= events.dtype.type(gain)
    if time_idx is not None:
        step = float_or_none(p.get("$TIMESTEP"))
        if step is not None and step > 0 and step != 1:
            events[:, time_idx] *= events.dtype.type(step)
        elif step is not None and step <= 0:
            p.warnings.append(f"$TIMESTEP {step:g} is not positive; left the time channel in ticks")
