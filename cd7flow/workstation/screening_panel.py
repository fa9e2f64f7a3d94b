"""What the viewer's screening panel shows, computed from the tube's *current* gates (Qt-free).

:func:`screening_panel` takes a gated screening tube (:class:`~cd7flow.assays.protocol_gating.GatedSample`,
from the auto-gate or :func:`fit_screening`) and returns its screening record
(:func:`cd7flow.assays.screening.screening_record`: same fields and numbers as ``cd7flow screen``
on the same gates, plus ``manually_adjusted`` / ``adjusted_gates``), the rows the panel lists
(blasts, % positive with its 95% interval and method, references, verdict, rule, borderline
flag and reason) and the histogram of the screened marker on blasts vs the negative and
positive references with the threshold. Nothing is refitted: after a gate is dragged the
panel calls it again on the edited tree (:func:`with_tree` when the viewer holds its own
copy of the tree) and every number follows. Histogram x values are on the gating scale (the
protocol's transform, logicle 0-1 for fluorescence); densities have area 1 per population.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gating.errors import GatingError
from gating.tree import GatingTree

from ..assays.protocol_gating import GatedSample, NotEvaluable, run_protocol_gates
from ..assays.screening import FMOTube, reference_masks, screen_sample, screening_record
from ..protocol import Protocol, load_protocol
from ..sample import Sample

HISTOGRAM_BINS = 120


@dataclass
class HistogramSeries:
    label: str
    population: str  # "blasts", "negative_reference", "positive_reference"
    events: int
    density: np.ndarray  # per bin, area 1 (zeros when the population is empty)


@dataclass
class MarkerHistogram:
    marker: str
    x_label: str
    edges: np.ndarray  # bin edges on the gating scale
    series: list[HistogramSeries] = field(default_factory=list)
    threshold: float | None = None  # on the gating scale


@dataclass
class ScreeningPanelData:
    record: dict[str, Any]
    rows: list[tuple[str, str]]
    histogram: MarkerHistogram | None


def fit_screening(sample: Sample, protocol: Protocol | str = "screening") -> GatedSample:
    """Fit the protocol's gates on ``sample`` (what the auto-gate does); NotEvaluable when it cannot."""
    protocol = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    return run_protocol_gates(sample, protocol)


def with_tree(gated: GatedSample, tree: GatingTree) -> GatedSample:
    """``gated`` read through another tree (the viewer's edited copy); masks are recomputed from it.
    The tree must keep the protocol's population paths (an edited gate keeps its id)."""
    if tree is gated.tree:
        return gated
    return dataclasses.replace(gated, tree=tree)


def screening_panel(gated: GatedSample, protocol: Protocol | None = None, fmo: "Sample | FMOTube | None" = None,
                    adjusted=(), bins: int = HISTOGRAM_BINS) -> ScreeningPanelData:
    """The panel's record, rows and histogram from ``gated``'s current tree (see the module doc).
    ``adjusted``: paths the caller knows were edited by hand (the viewer's edit log)."""
    protocol = protocol or gated.protocol
    rec = screening_record(gated, protocol, fmo, adjusted)
    marker = protocol.settings["positivity"]["marker"]
    return ScreeningPanelData(rec, panel_rows(rec, protocol), _histogram(gated, protocol, rec, marker, bins))


def unfitted_panel(sample: Sample, protocol: Protocol, fmo=None) -> ScreeningPanelData:
    """The panel of a tube whose gates could not be fitted: ``cd7flow screen``'s not-evaluable record."""
    rec = screen_sample(sample, protocol, fmo)
    return ScreeningPanelData(rec, panel_rows(rec, protocol), None)


def panel_from_sample(sample: Sample, protocol: Protocol | str = "screening", fmo=None
                      ) -> tuple[GatedSample | None, ScreeningPanelData]:
    """Fit, then compute the panel (the gated sample is returned for later recomputation)."""
    protocol = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    try:
        gated = fit_screening(sample, protocol)
    except NotEvaluable:
        return None, unfitted_panel(sample, protocol, fmo)
    return gated, screening_panel(gated, protocol, fmo)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def _ci(ci) -> str:
    return "" if not ci or ci[0] is None else f" (95% CI {ci[0]:.1f}-{ci[1]:.1f})"


def _num(v, fmt: str = "{:,.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def panel_rows(rec: dict[str, Any], protocol: Protocol) -> list[tuple[str, str]]:
    """(label, text) lines of the panel, in reading order."""
    marker = protocol.settings["positivity"]["marker"]
    m = marker.lower()
    verdict = rec.get("verdict") or "-"
    rows = [("File", rec.get("file") or "-"),
            ("Protocol", f"{rec.get('protocol')} v{rec.get('protocol_version')}"),
            ("Events", _num(rec.get("events"))),
            ("Viable singlets", _num(rec.get("viable_singlets"))),
            ("Blasts", f"{_num(rec.get('blasts'))} ({_pct(rec.get('blast_pct'))} of viable CD45+)"
             if rec.get("blasts") is not None else "-"),
            (f"% {marker}+ of blasts", f"{_pct(rec.get(f'{m}_pos_pct'))}{_ci(rec.get(f'{m}_pos_ci95'))}"
             f" [{rec.get(f'{m}_method') or '-'}]"),
            ("Above threshold", f"{_pct(rec.get(f'{m}_pos_pct_threshold'))}{_ci(rec.get(f'{m}_pos_ci95_threshold'))}"),
            ("Expressing", f"{_pct(rec.get(f'{m}_pos_pct_expressing'))}{_ci(rec.get(f'{m}_pos_ci95_expressing'))}"),
            ("Threshold", f"{_num(rec.get(f'{m}_threshold'), '{:,.1f}')} ({rec.get('threshold_reference') or '-'})"),
            ("Negative reference", f"{_num(rec.get('neg_ref_events'))} events, median {_num(rec.get('neg_ref_mfi'), '{:,.1f}')}"
             f", blasts/neg {_num(rec.get('neg_ref_ratio'), '{:.2f}')}"),
            ("Positive reference", f"{_num(rec.get('pos_ref_events'))} events, median {_num(rec.get('pos_ref_mfi'), '{:,.1f}')}"
             f", blasts/pos {_num(rec.get('pos_ref_ratio'), '{:.2f}')}"),
            ("Expressing reference", rec.get("expressing_reference") or "-")]
    if rec.get("fmo_file"):
        rows.append(("FMO", f"{rec['fmo_file']}, RD {_num(rec.get('rd_fmo'), '{:.2f}')}"))
    rows += [("Intensity", rec.get("intensity") or "-"),
             ("Rule", rec.get("rule") or "-"),
             ("Verdict", verdict.upper().replace("_", " ")),
             ("Borderline", "yes: the 95% CI straddles the cut-off" if rec.get("borderline") else
              ("no" if rec.get("borderline") is not None else "-")),
             ("Reason", rec.get("reason") or "-"),
             ("Manually adjusted", ("yes: " + ", ".join(rec.get("adjusted_gates") or [])) if rec.get("manually_adjusted")
              else "no")]
    return rows


def _histogram(g: GatedSample, protocol: Protocol, rec: dict[str, Any], marker: str, bins: int
               ) -> MarkerHistogram | None:
    """The marker on blasts vs references (as the screening PNG draws it), or None when not computable."""
    pos_cfg = protocol.settings["positivity"]
    if marker not in g.dimensions:
        return None
    try:
        blasts = g.masks[pos_cfg["population"]]
        neg_mask, pos_mask = reference_masks(g, pos_cfg, blasts)
    except (GatingError, KeyError):
        return None
    xs = g.values(marker)
    finite = np.isfinite(xs)
    shown = finite & (blasts | neg_mask | pos_mask)
    if not shown.any():
        return None
    lo, hi = np.percentile(xs[shown], [0.1, 99.9])
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    kind = g.transforms.get(marker, {}).get("kind", "linear")
    out = MarkerHistogram(marker, f"{marker} ({g.channels[marker]}, {kind})", edges,
                          threshold=rec.get(f"{marker.lower()}_threshold_scale"))
    for mask, label, pop in ((blasts, "blasts", "blasts"), (neg_mask, "negative ref", "negative_reference"),
                             (pos_mask, "positive ref", "positive_reference")):
        values = xs[mask & finite]
        density = np.histogram(values, bins=edges, density=True)[0] if values.size else np.zeros(bins)
        out.series.append(HistogramSeries(f"{label} (n={int(np.count_nonzero(mask))})", pop,
                                          int(np.count_nonzero(mask)), density))
    return out
