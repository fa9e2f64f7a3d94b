"""Fit a protocol's automated gate sequence on one sample: the generic part of every assay.

:func:`run_protocol_gates` resolves the protocol's markers by $PnS, compensates
fluorescence with the file's spillover, gives each channel the protocol's transform
(logicle W chosen from the channel's negative spread, T = $PnR unless the protocol
sets it), and fits the gates parents first. Each fitted estimator's gates go straight
into one :class:`gating.tree.GatingTree` under the gate's parent population; the
result, :class:`GatedSample`, reads every population's mask from that tree (evaluated
once, cached) and exports the same tree as Gating-ML (:attr:`GatedSample.strategy`).
Gates live on the *gating scale* (transformed values: logicle 0-1 per channel, linear
channels in their $PnN units); :meth:`GatedSample.linear` gives compensated values in
linear channel units. Which estimator a gate method uses, and what it needs besides its
parent's events, is :data:`gating.auto.METHODS`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from gating.auto import METHODS
from gating.dimensions import FCS_COMPENSATION, Dimension
from gating.errors import GatingError as _GatingErrorBase
from gating.tree import ROOT, GatingResult, GatingTree

from ..datasource import SampleSource
from ..errors import NotEvaluable
from ..protocol import GateSpec, Protocol, resolve_markers
from ..sample import Sample
from ..strategy import GatingStrategy

__all__ = ["NotEvaluable", "GatedSample", "run_protocol_gates", "fitted_strategy", "logicle_width", "channel_transform",
           "sample_notes"]

LEAN_ABOVE_BYTES = 256 * 2**20
"""A tube whose float64 copy would exceed this is gated through the lean data source
(:class:`~cd7flow.datasource.SampleSource` ``lean=True``: same values, bounded memory, more
CPU): 14 channels from about 2.4 million events on."""

MASK_CACHE_MIN = 16 * 2**20
"""Bytes of unpacked population masks a gated sample keeps at least (see GatedSample)."""

UNCOMPENSATED_KEYS = ("fsc_a", "fsc_h", "time")
"""Scatter keys (protocol ``[scatter]``) used as stored: linear, never compensated."""


# ----------------------------------------------------------------------------------------------
# Transforms chosen from the data
# ----------------------------------------------------------------------------------------------
def logicle_width(values: np.ndarray, t: float, m: float, default: float = 0.5,
                  n_values: int | None = None) -> float:
    """Logicle W from the data (Parks et al. 2006, eq. 12): W = (M - log10(T / |r|)) / 2.

    r is the 5th percentile of the negative values; with fewer than 1% negative events
    there is nothing to linearise and ``default`` is used. W is clipped to [0, M/2].
    With ``n_values``, ``values`` holds only the finite negative values (in event order) of a
    column of ``n_values`` events.
    """
    neg = values if n_values is not None else values[np.isfinite(values) & (values < 0)]
    if neg.size < max(10, 0.01 * (values.size if n_values is None else n_values)):
        return default
    r = abs(float(np.percentile(neg, 5)))
    if r <= 0:
        return default
    return float(min(max((m - math.log10(t / r)) / 2, 0.0), m / 2))


def channel_transform(spec: dict[str, Any], channel_range: float, values: np.ndarray | None, where: str = ""):
    """The transform the protocol gives one channel whose linear ``values`` are all given (the
    viewer draws with it, so a plot's logicle is the one the fitted gates were made on)."""
    if values is None:
        return _make_transform(spec, channel_range, None, where)
    values = np.asarray(values)
    return _make_transform(spec, channel_range, (values[np.isfinite(values) & (values < 0)], values.size), where)


def _make_transform(spec: dict[str, Any], channel_range: float, negatives: tuple[np.ndarray, int] | None,
                    where: str):
    """The protocol's transform of one channel; ``negatives`` = (the channel's finite negative
    values, its number of events); ``where`` ("file: channel") names it in errors."""
    from ..transforms import transform_from_spec

    kind = spec["kind"]
    if kind == "linear":
        return None
    params = {k: v for k, v in spec.items() if k != "kind"}
    if params.get("t", "range") == "range":
        t = float(channel_range)
        if not math.isfinite(t) or t <= 0:
            # T = $PnR is the top of the scale; without a positive one there is no logicle/asinh.
            raise NotEvaluable(f"{where}: $PnR is {channel_range!r}, not a positive number, so the "
                               f"{kind} transform has no top of scale (T)")
    else:
        t = float(params["t"])
    params["t"] = t
    params.setdefault("m", 4.5)
    params.setdefault("a", 0.0)
    if kind == "logicle" and params.get("w", "auto") == "auto":
        w = logicle_width(negatives[0], t, params["m"], n_values=negatives[1]) if negatives is not None else 0.5
        params["w"] = min(w, (params["m"] - params["a"]) / 2)  # logicle needs A <= M - 2W
    return transform_from_spec(kind, **params)



# ----------------------------------------------------------------------------------------------
# The protocol's gate sequence
# ----------------------------------------------------------------------------------------------
class PopulationMasks(Mapping):
    """Population name -> bool mask (length = events in the file), in sequence order.

    Masks come from the gated sample's tree (cached there). A skipped gate's population
    is its parent's; a declared population the fit did not find is empty.
    """

    def __init__(self, g: "GatedSample"):
        self._g = g

    def __getitem__(self, population: str) -> np.ndarray:
        where = self._g.locations[population]
        if where is None:
            return np.zeros(self._g.sample.n_events, dtype=bool)
        return self._g.result.mask(where)

    def __iter__(self) -> Iterator[str]:
        return iter(self._g.locations)

    def __len__(self) -> int:
        return len(self._g.locations)


@dataclass
class GatedSample:
    """What :func:`run_protocol_gates` found.

    ``tree`` holds every fitted gate; ``locations`` maps each protocol population to its
    path in the tree (``()`` = all events, None = not found, empty); ``masks`` reads them.
    ``marker_positive`` holds marker tests (CD3+ or CD56+) on every event, whatever the parent.
    """

    sample: Sample
    source: SampleSource
    channels: dict[str, str]
    dimensions: dict[str, Dimension]
    tree: GatingTree = field(default_factory=GatingTree)
    locations: dict[str, tuple[str, ...] | None] = field(default_factory=lambda: {ROOT: ()})
    marker_positive: dict[str, np.ndarray] = field(default_factory=dict)
    estimators: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    transforms: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: Protocol | None = None

    def __post_init__(self) -> None:
        # a large tube keeps the masks of a few populations unpacked (one byte per event each);
        # the rest are bit-packed, then recomputed: its masks must not outweigh its events
        self.result = GatingResult(self.tree, self.source, cache_bytes=max(MASK_CACHE_MIN, 4 * self.sample.n_events))

    def invalidate(self) -> None:
        """Forget the cached masks and counts: call after a gate of ``tree`` was replaced (edited)."""
        self.result = GatingResult(self.tree, self.source)

    @property
    def masks(self) -> PopulationMasks:
        return PopulationMasks(self)

    @property
    def strategy(self) -> GatingStrategy:
        """The fitted tree with its transforms (what ``--gatingml`` writes)."""
        return GatingStrategy(tree=self.tree, transforms=dict(self.source.transforms))

    def values(self, key: str) -> np.ndarray:
        """Transformed values of a marker / scatter key (the gating scale)."""
        return self.source.values(self.dimensions[key])

    def linear(self, key: str) -> np.ndarray:
        """Compensated, untransformed values (linear channel units)."""
        d = self.dimensions[key]
        return self.source.channel_values(d.channel, d.compensation)

    def count(self, population: str) -> int:
        return int(np.count_nonzero(self.masks[population]))


def sample_notes(sample: Sample, protocol: Protocol) -> list[str]:
    """What a user must see about the file itself: the reader's warnings (recovered offsets,
    assumed byte order...), and a spillover matrix left unused because it is unusable when the
    protocol gates uncompensated data anyway (with "file" compensation that is not_evaluable)."""
    notes = [f"file: {w}" for w in sample.extra.get("warnings") or []]
    error = sample.extra.get("spillover_error")
    if error and protocol.section("compensation").get("source", "file") != "file":
        notes.append(f"file: spillover matrix ignored ({error}); the protocol gates uncompensated data")
    return notes


def _compensation(sample: Sample, protocol: Protocol, mapping: dict[str, str]) -> str | None:
    """"FCS" (the file's spillover) or None. A protocol taking compensation from the file gets
    it or a NotEvaluable: gating uncompensated data would be a wrong answer, not a fallback."""
    if protocol.section("compensation").get("source", "file") != "file":
        return None
    if not any(key in protocol.markers for key in mapping):
        return None  # no fluorescence marker in this tube: nothing to compensate
    if sample.spillover is not None:
        return FCS_COMPENSATION
    error = sample.extra.get("spillover_error")
    why = f"its spillover matrix is unusable ({error})" if error else \
        "it carries no spillover matrix ($SPILLOVER, SPILL or $COMP)"
    raise NotEvaluable(f"the protocol compensates with the file's matrix, and {why} (a protocol whose "
                       "compensation source is \"none\" gates uncompensated data)")


def _build_source(sample: Sample, protocol: Protocol, channels: Mapping[str, str] | None = None
                  ) -> tuple[SampleSource, dict[str, str], dict[str, Dimension], dict]:
    mapping, _missing = resolve_markers(sample, protocol)
    mapping.update(channels or {})
    comp = _compensation(sample, protocol, mapping)
    tspec = protocol.section("transforms")
    # A large tube gets the lean source: each column computed when a step needs it (the same
    # numbers as the whole compensated block gives), in a bounded cache; a smaller one keeps the
    # block and every column, which costs less CPU (benchmarks/results_memory.md)
    source = SampleSource(sample, lean=sample.n_events * len(sample.channels) * 8 > LEAN_ABOVE_BYTES)
    dims: dict[str, Dimension] = {}
    described: dict[str, dict[str, Any]] = {}
    linear_dims = {key: Dimension(ch, None if key in protocol.scatter else comp) for key, ch in mapping.items()
                   if key not in UNCOMPENSATED_KEYS}
    negatives = _negative_values(source, list(dict.fromkeys(linear_dims.values())))
    for key, ch in mapping.items():
        idx = sample.channel(ch)
        if key in UNCOMPENSATED_KEYS:
            dims[key] = Dimension(ch)
            continue
        scatter = key in protocol.scatter  # side scatter: its own transform, never compensated
        spec = tspec["ssc"] if scatter else tspec["fluorescence"]
        compensation = None if scatter else comp
        xf = _make_transform(spec, float(sample.ranges[idx]), (negatives[linear_dims[key]], sample.n_events),
                             f"channel {ch} ({key})")
        if xf is None:
            dims[key] = Dimension(ch, compensation)
            described[key] = {"channel": ch, "kind": "linear"}
        else:
            tid = f"{xf.kind}_{ch}"
            source.transforms[tid] = xf
            dims[key] = Dimension(ch, compensation, tid)
            described[key] = {"channel": ch, **{k: (round(v, 6) if isinstance(v, float) else v)
                                                 for k, v in xf.describe().items()}}
    return source, mapping, dims, described


def _negative_values(source: SampleSource, dimensions: list[Dimension]) -> dict[Dimension, np.ndarray]:
    """Each dimension's finite negative values, in event order (what logicle W is chosen from),
    found in one pass over the events: one compensation product per block for all channels."""
    parts: dict[Dimension, list[np.ndarray]] = {d: [] for d in dimensions}
    for _start, _stop, block in source.blocks(dimensions):
        for j, d in enumerate(dimensions):
            col = block[:, j]
            parts[d].append(col[np.isfinite(col) & (col < 0)])
    return {d: np.concatenate(p) if p else np.empty(0) for d, p in parts.items()}


def run_protocol_gates(sample: Sample, protocol: Protocol, channels: Mapping[str, str] | None = None) -> GatedSample:
    """Fit every gate of the protocol's sequence on ``sample``, parents first.

    ``channels`` (marker -> $PnN) overrides marker resolution (an FMO tube whose left-out
    marker has no $PnS borrows the stained tube's channel); ``sample`` is never modified.
    A gate marked ``optional`` whose channels are missing (or whose fit finds nothing)
    is skipped: its population is its parent's, and ``skipped`` says why. A required
    gate that cannot be fitted raises :class:`NotEvaluable` with the reason.
    """
    with _one_thread():
        return _run_gates(sample, protocol, channels)


def _one_thread():
    """BLAS and OpenMP pools limited to one thread while the gates are fitted (restored after).

    The fits make thousands of tiny BLAS / OpenMP calls (2x2-7x7 mixtures, k-means on 40k
    events), between which the pools' extra threads spin: on a 2-core machine shared with other
    work that made them several times slower in wall and CPU time (benchmarks/results_perf.md).
    """
    return threadpool_limits(limits=1)


def _run_gates(sample: Sample, protocol: Protocol, channels: Mapping[str, str] | None) -> GatedSample:
    source, mapping, dims, described = _build_source(sample, protocol, channels)
    g = GatedSample(sample, source, mapping, dims, transforms=described, protocol=protocol)
    for spec in protocol.gates:
        method = METHODS[spec.method]
        present = [d for d in spec.dimensions if d in dims]
        absent = [d for d in spec.dimensions if d not in dims]
        usable = present if method.partial_dimensions else (present if not absent else [])
        if not usable:
            why = f"no channel for {', '.join(absent)}"
            if not spec.optional:
                raise NotEvaluable(f"marker missing: {', '.join(absent)} (gate {spec.id})")
            _skip(g, spec, why)
            continue
        try:
            _fit_gate(g, spec, usable)
        except (_GatingErrorBase, NotEvaluable) as exc:
            if not spec.optional:
                raise NotEvaluable(f"gate {spec.id} failed: {exc}") from None
            _skip(g, spec, str(exc))
    return g


def _skip(g: GatedSample, spec: GateSpec, why: str) -> None:
    g.skipped[spec.id] = why
    g.locations[spec.id] = g.locations[spec.parent]
    for pop in spec.populations:
        # Pass-through keeps later gates well defined; the population is marked skipped too.
        g.skipped.setdefault(pop, f"population of {spec.id}: {why}")
        g.locations.setdefault(pop, g.locations[spec.parent])


def _fit_gate(g: GatedSample, spec: GateSpec, keys: list[str]) -> None:
    """Fit one gate on its parent's events and add its gates to the tree under the parent."""
    method = METHODS[spec.method]
    dims = [g.dimensions[k] for k in keys]
    shape = _parent_gate_dimensions(g, spec) if method.shape_dimensions else None
    est = method.build(dims, keys, spec.id, spec.params, shape)
    columns = dims + list(shape or [])

    def rows(mask: np.ndarray) -> np.ndarray:
        """The gate's columns for the events of ``mask``, stacked: one (events x columns) float64
        copy per population the fit needs, computed for those events only
        (:meth:`SampleSource.rows_table`): never every column of all events."""
        return g.source.rows_table(columns, mask)

    inputs = {name: _FIT_INPUTS[how](g, spec, rows) for name, how in method.fit_inputs.items()}
    est.fit(rows(g.masks[spec.parent]), **inputs)
    g.estimators[spec.id] = est
    if method.marker_test:
        # the marker test on every event, whatever its parent (a marker gate has one or two columns)
        g.marker_positive[spec.id] = _predict_by_rows(est, g.source, columns)
    where = g.locations[spec.parent]
    if where is None:  # the parent population was not found: this one is empty too
        g.locations[spec.id] = None
        return
    gates = est.tree_gates(spec.id)
    if not gates:  # the fit found nothing to take out (a tube without counting beads): pass-through
        g.locations[spec.id] = where
        return
    g.tree.add_siblings(gates, where)
    for gate in gates:
        if gate.id in method.populations:
            g.locations[gate.id] = where + (gate.id,)
    for pop in spec.populations:
        g.locations.setdefault(pop, None)  # declared, not found: empty
    g.locations[spec.id] = where + (spec.id,)


def _predict_by_rows(est, source: SampleSource, columns: list[Dimension], chunk: int = 1 << 18) -> np.ndarray:
    """``est.predict`` on every event, a block of rows at a time (a marker test is a per-event
    comparison): the stacked float64 copy is one block, not events x columns."""
    n = source.n_events
    out = np.empty(n, dtype=bool)
    for start in range(0, n, chunk):
        block = slice(start, min(start + chunk, n))
        out[block] = est.predict(source.rows_table(columns, block))
    return out


def _parent_gate_dimensions(g: GatedSample, spec: GateSpec) -> list[Dimension] | None:
    """Dimensions of the gate that made ``spec``'s parent population (CD45/SSC for blasts),
    when the sample has them all."""
    maker = next((x for x in g.protocol.gates if spec.parent == x.id or spec.parent in x.populations), None)
    if maker is None or any(k not in g.dimensions for k in maker.dimensions):
        return None
    return [g.dimensions[k] for k in maker.dimensions]


# ---- what a method's fit needs besides its parent's events (gating.auto.GateMethod.fit_inputs);
# ``rows(mask)`` stacks the gate's columns for the events of a mask ----
def _reference(g: GatedSample, spec: GateSpec, rows: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    name = spec.params.get("reference")
    if name is None:
        return None
    ref_mask = g.masks[name]
    # Spreading error from a bright neighbour channel can push a few T cells over the
    # CD19 threshold; events positive for an excluded gate's markers (e.g. CD3/CD56 of
    # t_nk_cells) are never negative reference, or its 99th percentile jumps to them.
    for other in spec.params.get("reference_exclude", []):
        if other in g.marker_positive:
            ref_mask = ref_mask & ~g.marker_positive[other]
    if np.count_nonzero(ref_mask) < 50:
        raise NotEvaluable(f"reference {name} has only {np.count_nonzero(ref_mask)} events")
    return rows(ref_mask)


def _fitted_reference(g: GatedSample, spec: GateSpec, rows: Callable[[np.ndarray], np.ndarray]
                      ) -> np.ndarray | None:
    name = spec.params.get("reference")
    if name is None or name in g.skipped:
        return None
    return rows(g.masks[name])


def _against(g: GatedSample, spec: GateSpec, rows: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    name = spec.params.get("against")
    if name in g.locations and name not in g.skipped and _contaminated(g, spec.parent, name):
        return rows(g.masks[name])
    return None


def _mature(g: GatedSample, spec: GateSpec, rows: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    name = spec.params.get("mature")
    if name is None or name not in g.locations or name in g.skipped:
        return None
    return rows(g.masks[name])


_FIT_INPUTS = {"reference": _reference, "fitted_reference": _fitted_reference, "against": _against,
               "mature": _mature}


def _contaminated(g: GatedSample, population: str, by: str, min_fraction: float = 0.005) -> bool:
    """Whether the CD45/SSC mixture puts ``by`` events (>= ``min_fraction``) inside ``population``'s
    polygon: only then do the populations share a region and must a lineage gate refine against
    ``by`` (with well-separated clusters, a marker shared with ``by`` still marks blasts)."""
    for est in g.estimators.values():
        share = getattr(est, "contamination_", {}).get(population)
        if share is not None:
            return share.get(by, 0.0) >= min_fraction
    return False


def fitted_strategy(g: GatedSample, protocol: Protocol | None = None) -> GatingStrategy:
    """The fitted gates as a :class:`~cd7flow.strategy.GatingStrategy` (for Gating-ML export).

    It is the very tree the masks of ``g`` come from (skipped gates are not in it; their
    children hang from the skipped gate's parent). ``protocol`` is accepted for
    compatibility and not needed.
    """
    return g.strategy
