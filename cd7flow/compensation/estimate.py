"""Estimating a spillover matrix from single-stain controls (the median method).

For each single-stain control i (primary detector i) and each detector j:

    S[i, j] = max(stat_j(stain_i) - stat_j(unstained), 0) / (stat_i(stain_i) - stat_i(unstained))

with stat the median (or mean) of linear intensities. This is Bagwell & Adams (1993) as
flowCore/flowStats ``spillover(method="median")`` computes it: flowStats subtracts the
unstained statistic, clips at zero and divides each row by its largest value, which is the
primary detector in any sensible control; here a row whose largest value is *not* on the
diagonal is refused (it means the control does not match its detector), so the results agree.

Which events count (``gate``):
* None: every event, as flowStats does with ``pregate=FALSE, useNormFilt=FALSE``;
* a number q in (0, 100): in each single stain, events above the q-th percentile of its
  primary detector (a simple "bright positive" rule for controls with a negative peak);
* a mapping detector -> boolean mask over that control's events: a gate drawn elsewhere.
The unstained control always uses all its events.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import CompensationError
from ..sample import Sample
from .matrix import SpilloverMatrix

_STATS = {"median": np.median, "mean": np.mean}


def _columns(control, channels: Sequence[str], label: str) -> np.ndarray:
    """(n_events, len(channels)) float64 values of one control."""
    if isinstance(control, Sample):
        try:
            idx = [control.channel(c) for c in channels]
        except KeyError as exc:
            raise CompensationError(control.path, f"{label} control: {exc}") from None
        return np.asarray(control.events[:, idx], dtype=np.float64)
    arr = np.asarray(control, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(channels):
        raise CompensationError(None, f"{label} control: array of shape {arr.shape} does not have "
                                f"{len(channels)} columns (one per channel, in order)")
    return arr


def compute_spillover(unstained, singles: Mapping[str, object], channels: Sequence[str] | None = None, *,
                      method: str = "median", gate=None) -> SpilloverMatrix:
    """Spillover matrix (fractions) from an unstained control and single-stain controls.

    unstained : Sample, or (n, len(channels)) array of linear intensities.
    singles : primary detector ($PnN) -> Sample or array of the control stained for it.
    channels : detectors of the matrix, rows and columns in this order (default: the
        keys of ``singles``); arrays must have exactly these columns in this order.
    method : "median" (default, flowCore's) or "mean".
    gate : None, a percentile in (0, 100), or a mapping detector -> bool mask (see module doc).
    """
    channels = tuple(singles) if channels is None else tuple(channels)
    if set(channels) != set(singles):
        raise CompensationError(None, f"need one single-stain control per channel: channels "
                                f"{', '.join(channels)}; controls for {', '.join(singles)}")
    if method not in _STATS:
        raise CompensationError(None, f"unknown method {method!r} (use {', '.join(_STATS)})")
    stat = _STATS[method]
    base_events = _columns(unstained, channels, "unstained")
    if base_events.shape[0] == 0:
        raise CompensationError(None, "unstained control has no events")
    base = stat(base_events, axis=0)
    n = len(channels)
    raw = np.empty((n, n))
    for i, detector in enumerate(channels):
        events = _columns(singles[detector], channels, detector)
        if gate is not None:
            if isinstance(gate, Mapping):
                mask = np.asarray(gate[detector], dtype=bool) if detector in gate else np.ones(len(events), bool)
                if mask.shape != (len(events),):
                    raise CompensationError(None, f"gate for {detector} has {mask.shape} values, control has {len(events)} events")
            else:
                q = float(gate)
                if not 0 < q < 100:
                    raise CompensationError(None, f"gate percentile {q} is outside (0, 100)")
                mask = events[:, i] > np.percentile(events[:, i], q)
            events = events[mask]
        if events.shape[0] == 0:
            raise CompensationError(None, f"single-stain control for {detector} has no events in its gate")
        raw[i] = stat(events, axis=0) - base
    raw = np.maximum(raw, 0.0)
    primary = np.diag(raw).copy()
    for i, detector in enumerate(channels):
        if primary[i] <= 0:
            raise CompensationError(None, f"control for {detector} is not brighter than unstained in {detector}")
        j = int(np.argmax(raw[i]))
        if j != i:
            raise CompensationError(None, f"control for {detector} is brightest in {channels[j]}, not in its "
                                    "own detector: is it matched to the right channel?")
    return SpilloverMatrix(channels, raw / primary[:, None], f"computed ({method}) from single stains")
