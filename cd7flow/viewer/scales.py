"""Axis scales of the viewer: display transforms, full-scale ranges, ticks, labels.

One logicle scale per channel, shared with the protocols: the viewer builds its
logicle with the protocol's own transform spec and estimate
(:func:`cd7flow.assays.protocol_gating.channel_transform`: T = the channel's $PnR,
W fitted from the negative values as Parks et al. 2006 eq. 12, M and A from the
protocol), so an automated gate fitted by the protocol lands on the same scale the
technician sees. Scatter (FSC, SSC) and Time are linear by default, fluorescence
logicle, as on a FlowJo plot.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import CD7FlowError
from ..sample import Sample

TRANSFORM_KINDS = ("linear", "logicle", "asinh")

# asinh keeps fixed Gating-ML parameters (the protocols have no asinh estimate).
ASINH_M = 4.5
ASINH_A = 0.0
# The protocol's fluorescence transform when no protocol is given (screening.toml's default).
DEFAULT_FLUORESCENCE_SPEC = {"kind": "logicle", "t": "range", "w": "auto", "m": 4.5, "a": 0.0}

Tick = tuple[float, str]
"""A tick as a plain (position in display units, label) pair."""


def channel_label(sample: Sample, index: int) -> str:
    """'PnN (PnS)' when the channel has a marker, else just PnN."""
    name = sample.channels[index]
    marker = sample.markers[index] if index < len(sample.markers) else ""
    return f"{name} ({marker})" if marker and marker != name else name


def marker_label(sample: Sample, channel: str, compensation: str | None = None) -> str:
    """'CD7 (FITC-A), comp=FCS' / 'FSC-A': the marker first, as a technician names a channel."""
    i = sample.channel(channel)
    name = sample.channels[i]
    marker = sample.markers[i] if i < len(sample.markers) else ""
    text = f"{marker} ({name})" if marker and marker != name else name
    return f"{text}, comp={compensation}" if compensation else text


def is_scatter(channel: str) -> bool:
    """Forward/side scatter and time: shown linear by default (they are never compensated)."""
    up = channel.upper()
    return up.startswith(("FSC", "SSC", "FS ", "SS ", "FS-", "SS-")) or up in ("TIME", "EVENT_LENGTH", "FS", "SS")


def default_kind(channel: str) -> str:
    """The transform a technician expects first: scatter linear, fluorescence logicle."""
    return "linear" if is_scatter(channel) else "logicle"


def default_axes(sample: Sample) -> tuple[str, str]:
    """FSC-A vs SSC-A style defaults: the first scatter channels, else the first two (non-Time)."""
    names = list(sample.channels)
    usable = [c for c in names if c.lower() not in ("time", "event_length")] or names
    fsc = [c for c in usable if c.upper().startswith("FSC")]
    ssc = [c for c in usable if c.upper().startswith("SSC")]
    if fsc and ssc:
        return fsc[0], ssc[0]
    if len(usable) >= 2:
        return usable[0], usable[1]
    return names[0], names[0]


def top_of_scale(sample: Sample, channel: str, column_max: float) -> float:
    """T in channel units: $PnR, or the largest value when the stored values exceed it
    (log-amplified channels decoded from $PnE run to 10^decades, not $PnR)."""
    i = sample.channels.index(channel)
    top = float(sample.ranges[i]) if i < len(sample.ranges) else float("nan")
    if not math.isfinite(top) or top <= 1 or (math.isfinite(column_max) and column_max > top * 1.01):
        top = column_max if math.isfinite(column_max) and column_max > 1 else 262144.0
    return float(f"{top:.6g}")


def make_display_transform(kind: str, top: float, linear_values: np.ndarray | None,
                           spec: dict | None = None, where: str = ""):
    """The display transform of one channel (an object with ``apply``/``inverse``/``params``).

    logicle: the protocol's spec (``spec``, default screening's fluorescence entry) with
    T = ``top`` and, for ``w = "auto"``, W estimated from ``linear_values`` exactly as the
    protocol pipeline does. asinh: T = ``top``, M = 4.5, A = 0.
    """
    from ..assays.protocol_gating import channel_transform
    from ..transforms import AsinhTransform

    if kind == "logicle":
        spec = dict(spec or DEFAULT_FLUORESCENCE_SPEC)
        spec["kind"] = "logicle"
        return channel_transform(spec, top, linear_values, where)
    if kind == "asinh":
        return AsinhTransform(t=top, m=ASINH_M, a=ASINH_A)
    raise CD7FlowError(f"unknown display transform {kind!r}; choose one of {TRANSFORM_KINDS}")


def transform_id(kind: str, transform) -> str:
    """A Gating-ML id naming the transform by its parameters (same parameters, same id)."""
    params = transform.params() if hasattr(transform, "params") else {}
    text = "_".join(f"{k.upper()}{float(v):.6g}" for k, v in sorted(params.items()))
    return f"{kind}_{text}" if text else kind


def full_range(kind: str, transform, top: float) -> tuple[float, float]:
    """The whole scale of a channel in display units (FlowJo-like, independent of the events).

    linear: -1% .. 100% of T; logicle: Gating-ML's [0, 1] (which includes the
    linearised negatives); asinh: 3 decades below zero .. T.
    """
    if kind == "linear" or transform is None:
        return (-0.01 * top, top)
    if kind == "logicle":
        return (0.0, 1.0)
    lo = float(np.asarray(transform.apply(np.array([-top * 1e-3])))[0])
    return (lo, 1.0)


def decade_ticks(transform, top: float, lo: float, hi: float) -> list[Tick]:
    """Decades in channel units at their transformed positions, within [lo, hi] (display units)."""
    decades = [10.0 ** k for k in range(1, int(math.floor(math.log10(max(top, 10.0)))) + 1)]
    values = np.array([-d for d in reversed(decades[:3])] + [0.0] + decades)
    positions = np.asarray(transform.apply(values), dtype=float)
    ticks: list[Tick] = []
    # near zero logicle/asinh squeeze decades together; keep 0 and drop labels that would overlap
    min_gap = 0.04 * (hi - lo)
    order = sorted(zip(positions, values), key=lambda pv: (pv[1] != 0, abs(pv[1])))
    for p, v in order:
        if np.isfinite(p) and lo <= p <= hi and all(abs(p - q) >= min_gap for q, _ in ticks):
            ticks.append((float(p), decade_label(v)))
    return sorted(ticks)


def decade_label(v: float) -> str:
    if v == 0:
        return "0"
    k = int(round(math.log10(abs(v))))
    return f"{'-' if v < 0 else ''}10{str(k).translate(_SUPERSCRIPT)}"


_SUPERSCRIPT = str.maketrans("0123456789-", "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207b")
