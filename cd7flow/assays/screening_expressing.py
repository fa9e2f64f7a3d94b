"""The % of blasts that *express* the screened marker, for the screening assay.

The estimators live in :mod:`gating.expressing` (arrays in, numbers out); this module
picks their negative reference from a gated tube:

* with an FMO tube (``--fmo``): the FMO's blasts (same cells and instrument, the marker's
  reagent left out), on the stained tube's gating scale;
* otherwise the in-tube negative reference events (B cells, monocytes, granulocytes minus
  CD3+/CD56+), weighted to the blasts' side scatter (autofluorescence goes with cell size
  and granularity) and re-spread to the blasts' spill-in (after compensation a negative's
  spread grows with the signal the other fluorochromes spill into the marker's detector;
  CD45-bright reference cells spread wider than CD45-dim blasts). Without a spillover
  matrix (uncompensated protocol) only the scatter weighting applies.

Values passed to the estimators are on the gating scale (the marker's transform).
"""
from __future__ import annotations

import numpy as np

from gating import expressing as E
from gating.dimensions import FCS_COMPENSATION, Dimension, is_uncompensated

from ..errors import CD7FlowError, NotEvaluable
from .protocol_gating import GatedSample


def _spillover(g: GatedSample, marker: str):
    """(matrix, detector $PnN list) the marker's values were compensated with, or None."""
    comp = g.dimensions[marker].compensation
    if is_uncompensated(comp):
        return None
    spill = g.sample.spillover if comp == FCS_COMPENSATION else g.source.compensations.get(comp)
    if spill is None or not hasattr(spill, "channels"):
        return None
    return np.asarray(spill.matrix, dtype=float), list(spill.channels)


def _column(g: GatedSample, name: str) -> int | None:
    try:
        return g.sample.channel(name)
    except CD7FlowError:
        return None


def marker_spill_in(g: GatedSample, marker: str, rows: np.ndarray | None = None) -> np.ndarray | None:
    """Per event (of the bool mask ``rows``, default all), the signal (linear channel units) the
    other fluorochromes spill into the marker's detector (:func:`gating.expressing.spill_in`),
    or None without a spillover matrix."""
    found = _spillover(g, marker)
    if found is None:
        return None
    matrix, detectors = found
    col = _column(g, g.channels[marker])
    j = next((i for i, name in enumerate(detectors) if col is not None and _column(g, name) == col), None)
    if j is None or any(_column(g, name) is None for name in detectors):
        return None  # the matrix names detectors the file lacks: no spill-in model, scatter matching only
    others = [i for i in range(len(detectors)) if i != j]
    comp = g.dimensions[marker].compensation
    columns = [Dimension(detectors[i], comp) for i in others]
    events = np.flatnonzero(rows) if rows is not None else np.arange(g.sample.n_events)
    # a block of events at a time, each detector computed for those events only: events x
    # detectors in float64 (and the estimator's temporaries) at once would be several event matrices
    out = np.empty(events.size, dtype=np.float64)
    for start in range(0, events.size, _SPILL_BLOCK):
        block = events[start:start + _SPILL_BLOCK]
        out[start:start + block.size] = E.spill_in(g.source.rows_table(columns, block), matrix[others, j])
    return out


_SPILL_BLOCK = 1 << 16


def _scatter_covariate(g: GatedSample, rows: np.ndarray) -> np.ndarray | None:
    """log SSC (linear channel units) of the events of ``rows``, in float64: side scatter goes
    with autofluorescence."""
    if "ssc_a" not in g.dimensions:
        return None
    return np.log(np.maximum(np.asarray(g.linear("ssc_a")[rows], dtype=np.float64), 1.0))


def expressing_estimate(g: GatedSample, marker: str, blasts: np.ndarray, neg_mask: np.ndarray,
                        fmo_linear: np.ndarray | None, method: str, n_boot: int,
                        min_reference_events: int) -> tuple[E.Estimate, str]:
    """(estimate, reference description) of the % of ``blasts`` expressing ``marker``.

    method : "mixture" or "overton" (:mod:`gating.expressing`). n_boot : bootstrap resamples
    of the 95% percentile interval (seeded: the same file gives the same interval).
    """
    xf = g.source.transforms.get(g.dimensions[marker].transform)
    to_scale = (lambda v: np.asarray(xf.apply(v), dtype=np.float64)) if xf is not None else (lambda v: v)
    x = g.values(marker)[blasts]
    if fmo_linear is not None:
        ref, weights, source = E.reference_for(None, fmo_values=fmo_linear)
        described = f"FMO blasts ({ref.size} events)"
    else:
        n_ref = int(np.count_nonzero(neg_mask))
        if n_ref < min_reference_events:
            raise NotEvaluable(f"negative reference has {n_ref} events (< {min_reference_events}) "
                               f"for the expressing fraction")
        linear = g.linear(marker)
        rows = neg_mask | blasts
        s_in = marker_spill_in(g, marker, rows)
        ssc = _scatter_covariate(g, rows)
        ref, weights, source = E.reference_for(
            linear[neg_mask],
            ref_spill_in=None if s_in is None else s_in[neg_mask[rows]],
            pop_spill_in=None if s_in is None else s_in[blasts[rows]],
            ref_covariates=None if ssc is None else ssc[neg_mask[rows]],
            pop_covariates=None if ssc is None else ssc[blasts[rows]])
        described = f"negative reference ({n_ref} events, {source}: SSC-weighted, re-spread to the blasts' spill-in)" \
            if source == "matched+respread" else f"negative reference ({n_ref} events, {source})"
    fit = E.mixture_fraction if method == "mixture" else E.overton_fraction
    try:
        est = fit(x, to_scale(ref), weights, n_boot=n_boot, seed=0)
    except ValueError as exc:
        raise NotEvaluable(f"expressing fraction of {marker}: {exc}") from None
    return est, described
