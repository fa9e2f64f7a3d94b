"""Fit a protocol's automated gate sequence on one sample: the generic part of every assay.

:func:`run_protocol_gates` resolves the protocol's markers by $PnS, compensates
fluorescence with the file's spillover, gives each channel the protocol's transform
(logicle W chosen from the channel's negative spread, T = $PnR unless the protocol
sets it), and fits the gates parents first. The result, :class:`GatedSample`, holds one
boolean mask per population (length = events in the file). Gates live on the *gating
scale* (transformed values: logicle 0-1 per channel, linear channels in their $PnN
units); :meth:`GatedSample.linear` gives compensated values in linear channel units.
:func:`fitted_strategy` turns the fitted gates into a GatingStrategy for Gating-ML export.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gating.auto import (
    BeadGate,
    CD45SSCPopulations,
    CellsGate,
    DensityThreshold,
    LineageGate,
    RobustReferenceThreshold,
    SingletGate,
    TimeCleanGate,
    ViabilityGate,
)
from gating.dimensions import Dimension
from gating.errors import GatingError as _GatingErrorBase

from ..datasource import SampleSource
from ..errors import CD7FlowError
from ..protocol import GateSpec, Protocol, resolve_markers
from ..sample import Sample

__all__ = ["NotEvaluable", "GatedSample", "run_protocol_gates", "fitted_strategy", "logicle_width"]


class NotEvaluable(Exception):
    """The sample cannot give a trustworthy answer (required marker or gate missing, too few events).

    Assays turn it into ``verdict = "not_evaluable"`` with the message as the reason.
    """



# ----------------------------------------------------------------------------------------------
# Transforms chosen from the data
# ----------------------------------------------------------------------------------------------
def logicle_width(values: np.ndarray, t: float, m: float, default: float = 0.5) -> float:
    """Logicle W from the data (Parks et al. 2006, eq. 12): W = (M - log10(T / |r|)) / 2.

    r is the 5th percentile of the negative values; with fewer than 1% negative events
    there is nothing to linearise and ``default`` is used. W is clipped to [0, M/2].
    """
    neg = values[np.isfinite(values) & (values < 0)]
    if neg.size < max(10, 0.01 * values.size):
        return default
    r = abs(float(np.percentile(neg, 5)))
    if r <= 0:
        return default
    return float(min(max((m - math.log10(t / r)) / 2, 0.0), m / 2))


def _make_transform(spec: dict[str, Any], channel_range: float, values: np.ndarray | None):
    from ..transforms import transform_from_spec

    kind = spec["kind"]
    if kind == "linear":
        return None
    params = {k: v for k, v in spec.items() if k != "kind"}
    t = float(channel_range) if params.get("t", "range") == "range" else float(params["t"])
    params["t"] = t
    params.setdefault("m", 4.5)
    params.setdefault("a", 0.0)
    if kind == "logicle" and params.get("w", "auto") == "auto":
        w = logicle_width(values, t, params["m"]) if values is not None else 0.5
        params["w"] = min(w, (params["m"] - params["a"]) / 2)  # logicle needs A <= M - 2W
    return transform_from_spec(kind, **params)



# ----------------------------------------------------------------------------------------------
# The protocol's gate sequence
# ----------------------------------------------------------------------------------------------
@dataclass
class GatedSample:
    """What :func:`run_protocol_gates` found: one mask per population, in sequence order."""

    sample: Sample
    source: SampleSource
    channels: dict[str, str]
    dimensions: dict[str, Dimension]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    marker_positive: dict[str, np.ndarray] = field(default_factory=dict)
    estimators: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    transforms: dict[str, dict[str, Any]] = field(default_factory=dict)

    def values(self, key: str) -> np.ndarray:
        """Transformed values of a marker / scatter key (the gating scale)."""
        return self.source.values(self.dimensions[key])

    def linear(self, key: str) -> np.ndarray:
        """Compensated, untransformed values (linear channel units)."""
        d = self.dimensions[key]
        return self.source.channel_values(d.channel, d.compensation)

    def count(self, population: str) -> int:
        return int(np.count_nonzero(self.masks[population]))


def _build_source(sample: Sample, protocol: Protocol) -> tuple[SampleSource, dict[str, str], dict[str, Dimension], dict]:
    mapping, _missing = resolve_markers(sample, protocol)
    comp = "FCS" if protocol.section("compensation").get("source", "file") == "file" and sample.spillover is not None else None
    tspec = protocol.section("transforms")
    source = SampleSource(sample)
    dims: dict[str, Dimension] = {}
    described: dict[str, dict[str, Any]] = {}
    for key, ch in mapping.items():
        idx = sample.channel(ch)
        if key in ("fsc_a", "fsc_h", "time"):
            dims[key] = Dimension(ch)
            continue
        spec = tspec["ssc"] if key == "ssc_a" else tspec["fluorescence"]
        compensation = comp if key != "ssc_a" else None
        linear = source.channel_values(ch, compensation)
        xf = _make_transform(spec, float(sample.ranges[idx]), linear)
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


def _estimator(spec: GateSpec, dims: list[Dimension], keys: list[str] | None = None):
    p = {k: v for k, v in spec.params.items() if k not in ("reference", "mode", "reference_exclude", "groups", "against", "primary")}
    try:
        if spec.method == "time_clean":
            return TimeCleanGate(dims[0], gate_id=spec.id, **p)
        if spec.method == "beads":
            return BeadGate(dims, gate_id=spec.id, **p)
        if spec.method == "cells":
            return CellsGate(dims, gate_id=spec.id, **p)
        if spec.method == "singlets":
            return SingletGate(dims, gate_id=spec.id, **p)
        if spec.method == "viability":
            return ViabilityGate(dims[0], gate_id=spec.id, **p)
        if spec.method == "cd45_ssc":
            # "No blasts" is a finding (reported as too few blasts), not a gating failure.
            return CD45SSCPopulations(dims, population=spec.populations[0], gate_id=spec.populations[0],
                                      require_population=False, **p)
        if spec.method == "lineage":
            groups = None
            if "groups" in spec.params and keys is not None:
                # Marker names -> columns of this fit; markers absent from the tube drop out,
                # and a lineage with none of its markers in the tube is no candidate.
                groups = [[keys.index(m) for m in grp if m in keys] for grp in spec.params["groups"]]
                groups = [grp for grp in groups if grp] or None
            primary = None
            if "primary" in spec.params and keys is not None:
                primary = [keys.index(m) for m in spec.params["primary"] if m in keys] or None
            return LineageGate(dims, mode=spec.params.get("mode", "any"), groups=groups, primary=primary,
                               gate_id=spec.id, **p)
    except TypeError as exc:
        raise CD7FlowError(f"gate {spec.id}: bad params {sorted(spec.params)}: {exc}") from None
    raise CD7FlowError(f"gate {spec.id}: method {spec.method} has no estimator here")


def run_protocol_gates(sample: Sample, protocol: Protocol) -> GatedSample:
    """Fit every gate of the protocol's sequence on ``sample``, parents first.

    A gate marked ``optional`` whose channels are missing (or whose fit finds nothing)
    is skipped: its population is its parent's, and ``skipped`` says why. A required
    gate that cannot be fitted raises :class:`NotEvaluable` with the reason.
    """
    source, mapping, dims, described = _build_source(sample, protocol)
    g = GatedSample(sample, source, mapping, dims, transforms=described)
    g.masks["root"] = np.ones(sample.n_events, dtype=bool)
    for spec in protocol.gates:
        parent = g.masks[spec.parent]
        present = [d for d in spec.dimensions if d in dims]
        absent = [d for d in spec.dimensions if d not in dims]
        usable = present if spec.method in ("lineage", "positive") else (present if not absent else [])
        if not usable:
            why = f"no channel for {', '.join(absent)}"
            if not spec.optional:
                raise NotEvaluable(f"marker missing: {', '.join(absent)} (gate {spec.id})")
            _skip(g, spec, why)
            continue
        try:
            _fit_gate(g, spec, usable, parent)
        except (_GatingErrorBase, NotEvaluable) as exc:
            if not spec.optional:
                raise NotEvaluable(f"gate {spec.id} failed: {exc}") from None
            _skip(g, spec, str(exc))
    return g


def _fit_positive(g: GatedSample, spec: GateSpec, dims: list[Dimension], keys: list[str], X: np.ndarray,
                  parent: np.ndarray) -> None:
    """Positive for any/all of the markers. Each threshold is median + n_sd robust SDs of a
    negative reference population when the protocol names one with enough events (works
    when the parent holds only positive cells, and shrugs off a few contaminants), else the
    density valley on the parent's events."""
    ref_name = spec.params.get("reference")
    ref_mask = g.masks.get(ref_name) if ref_name else None
    min_ref = int(spec.params.get("min_reference_events", 50))
    use_ref = ref_mask is not None and ref_name not in g.skipped and np.count_nonzero(ref_mask) >= min_ref
    pos, fitted = [], []
    for j, d in enumerate(dims):
        if use_ref:
            est = RobustReferenceThreshold(d, n_sd=float(spec.params.get("n_sd", 4.0)),
                                           min_reference_events=min_ref, gate_id=f"{spec.id}_{d.channel}")
            est.fit(X[ref_mask, j])
        else:
            est = DensityThreshold(d, gate_id=f"{spec.id}_{d.channel}")
            est.fit(X[parent, j])
            if est.method_ != "valley":
                raise NotEvaluable(f"no {keys[j]}-positive population (no density valley, no reference)")
        fitted.append(est)
        pos.append(est.predict(X[:, j]))
    own = np.logical_or.reduce(pos) if spec.params.get("mode", "any") == "any" else np.logical_and.reduce(pos)
    g.estimators[spec.id] = fitted
    g.marker_positive[spec.id] = own  # the marker test on every event, whatever its parent
    g.masks[spec.id] = parent & own


def _skip(g: GatedSample, spec: GateSpec, why: str) -> None:
    g.skipped[spec.id] = why
    g.masks[spec.id] = g.masks[spec.parent]
    for pop in spec.populations:
        # Pass-through keeps later gates well defined; the population is marked skipped too.
        g.skipped.setdefault(pop, f"population of {spec.id}: {why}")
        g.masks.setdefault(pop, g.masks[spec.parent])


def _fit_gate(g: GatedSample, spec: GateSpec, keys: list[str], parent: np.ndarray) -> None:
    dims = [g.dimensions[k] for k in keys]
    X = np.column_stack([g.source.values(d) for d in dims])
    Xp = X[parent]
    if spec.method == "positive":
        _fit_positive(g, spec, dims, keys, X, parent)
        return
    est = _estimator(spec, dims, keys)
    if spec.method == "lineage":
        ref_name = spec.params.get("reference")
        ref = None
        if ref_name is not None:
            ref_mask = g.masks[ref_name]
            # Spreading error from a bright neighbour channel can push a few T cells over the
            # CD19 threshold; events positive for an excluded gate's markers (e.g. CD3/CD56 of
            # t_nk_cells) are never negative reference, or its 99th percentile jumps to them.
            for other in spec.params.get("reference_exclude", []):
                if other in g.marker_positive:
                    ref_mask = ref_mask & ~g.marker_positive[other]
            if np.count_nonzero(ref_mask) < 50:
                raise NotEvaluable(f"reference {ref_name} has only {np.count_nonzero(ref_mask)} events")
            ref = X[ref_mask]
        against = spec.params.get("against")
        against_x = None
        if against in g.masks and against not in g.skipped and _contaminated(g, spec.parent, against):
            against_x = X[g.masks[against]]
        est.fit(Xp, reference=ref, against=against_x)
        g.estimators[spec.id] = est
        g.masks[spec.id] = parent & _lineage_mask(g, spec, est, X, parent)
        return
    else:
        est.fit(Xp)
    g.estimators[spec.id] = est
    if spec.method == "cd45_ssc":
        masks = est.predict_populations(X)
        for pop, m in masks.items():
            g.masks[pop] = parent & m
        for pop in spec.populations:
            g.masks.setdefault(pop, np.zeros_like(parent))
        g.masks[spec.id] = parent & np.logical_or.reduce([m for p, m in masks.items() if p != "cd45_negative"])
        return
    g.masks[spec.id] = parent & est.predict(X)


def _lineage_mask(g: GatedSample, spec: GateSpec, est, X: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """The lineage gate's positives. When it split its lineage into a primary marker (CD34)
    and secondary ones (CD33), secondary-only events count only inside the ellipsoid that
    holds ``primary_coverage`` of the primary-positive parent events on CD45, SSC and the
    secondary markers (chi-square quantile of the Mahalanobis distance): CD34-negative blasts
    look like the CD34+ blasts there, CD33-bright monocytes sharing the blast gate do not."""
    est.shape_gate_ = None
    if not est.primary_ or any(k not in g.dimensions for k in ("CD45", "ssc_a")):
        return est.predict(X)
    from scipy.stats import chi2

    from gating.gates import EllipsoidGate

    dims = [g.dimensions["CD45"], g.dimensions["ssc_a"]] + [est.dimensions[j] for j in est.secondary_]
    Y = np.column_stack([g.source.values(d) for d in dims])
    prim_pos = (X[:, est.primary_] >= est.thresholds_[est.primary_]).any(axis=1)
    sec_pos = (X[:, est.secondary_] >= est.thresholds_[est.secondary_]).any(axis=1)
    model = Y[parent & prim_pos]
    model = model[np.isfinite(model).all(axis=1)]
    if model.shape[0] < 10 * Y.shape[1]:
        return est.predict(X)
    cov = np.cov(model.T)
    if not np.all(np.linalg.eigvalsh(cov) > 0):
        return est.predict(X)
    est.shape_gate_ = EllipsoidGate(f"{spec.id}_like_primary", dims, model.mean(axis=0), cov,
                                    float(chi2.ppf(est.primary_coverage, Y.shape[1])))
    return prim_pos | (sec_pos & est.shape_gate_.contains(g.source))


def _contaminated(g: GatedSample, population: str, by: str, min_fraction: float = 0.005) -> bool:
    """Whether the CD45/SSC mixture puts ``by`` events (>= ``min_fraction``) inside ``population``'s
    polygon: only then do the populations share a region and must a lineage gate refine against
    ``by`` (with well-separated clusters, a marker shared with ``by`` still marks blasts)."""
    for est in g.estimators.values():
        share = getattr(est, "contamination_", {}).get(population)
        if share is not None:
            return share.get(by, 0.0) >= min_fraction
    return False


def fitted_strategy(g: GatedSample, protocol: Protocol):
    """The fitted gates as a :class:`~cd7flow.datasource.GatingStrategy` (for Gating-ML export).

    Applying it to the same sample gives the masks of ``g`` population for population:
    every fitted geometry is added as an ordinary gate under its (effective) parent; a
    union (several time intervals, "any of" markers, the CD45/SSC leukocytes) is a
    boolean 'or' over sibling gates that are added with it. Skipped gates are left out
    and their children hang from the skipped gate's parent.
    """
    from gating.gates import BooleanGate
    from gating.tree import GatingTree

    from ..datasource import GatingStrategy

    tree = GatingTree()
    path: dict[str, tuple[str, ...]] = {"root": ()}  # population name -> its path in the tree

    def add(gate, parent: str) -> None:
        tree.add(gate, path[parent] or None)
        path[gate.id] = path[parent] + (gate.id,)

    def union(gid: str, gates: list, parent: str, operator: str = "or", add_operands: bool = True) -> None:
        if len(gates) == 1:
            add(_renamed(gates[0], gid), parent)
            return
        if add_operands:
            for gate in gates:
                add(gate, parent)
        add(BooleanGate(gid, operator, [path[parent] + (x.id,) for x in gates]), parent)

    for spec in protocol.gates:
        if spec.id in g.skipped or spec.parent not in path:
            # Left out; children of a skipped gate hang from its parent, and a gate whose
            # parent population was not found at all (e.g. no blasts) is left out with it.
            if spec.parent in path:
                path[spec.id] = path[spec.parent]
                for pop in spec.populations:
                    path[pop] = path[spec.parent]
            continue
        est = g.estimators[spec.id]
        if spec.method == "time_clean":
            union(spec.id, est.gates_, spec.parent)
        elif spec.method == "positive":
            op = "or" if spec.params.get("mode", "any") == "any" else "and"
            union(spec.id, [e.gate_ for e in est], spec.parent, op)
        elif spec.method == "lineage" and getattr(est, "shape_gate_", None) is not None:
            # primary-positive, or secondary-positive inside the primary blasts' ellipsoid
            chosen = {j: gate for j, gate in zip(est.selected_, est.gates_)}
            for gate in est.gates_:
                add(gate, spec.parent)
            add(est.shape_gate_, spec.parent)
            base = path[spec.parent]
            sec = BooleanGate(f"{spec.id}_secondary", "or", [base + (chosen[j].id,) for j in est.secondary_])
            add(sec, spec.parent)
            like = BooleanGate(f"{spec.id}_secondary_like_primary", "and",
                               [base + (sec.id,), base + (est.shape_gate_.id,)])
            add(like, spec.parent)
            add(BooleanGate(spec.id, "or", [base + (chosen[j].id,) for j in est.primary_] + [base + (like.id,)]),
                spec.parent)
        elif spec.method == "lineage":
            union(spec.id, est.gates_ if est.mode == "any" else [est.gate_], spec.parent)
        elif spec.method == "beads":  # the population is everything but the bead box
            if est.gate_ is None:
                path[spec.id] = path[spec.parent]
            else:
                add(est.gate_, spec.parent)
                add(BooleanGate(spec.id, "not", [path[spec.parent] + (est.gate_.id,)]), spec.parent)
        elif spec.method == "cd45_ssc":
            pops = [_renamed(x, pop) for pop, x in est.gates_.items()]
            for gate in pops:
                add(gate, spec.parent)
            union(spec.id, [x for x in pops if x.id != "cd45_negative"], spec.parent, add_operands=False)
        else:
            add(_renamed(est.gate_, spec.id), spec.parent)
    transforms = dict(g.source.transforms)
    return GatingStrategy(tree=tree, transforms=transforms)


def _renamed(gate, new_id: str):
    import copy

    if gate.id == new_id:
        return gate
    out = copy.copy(gate)
    out.id = new_id
    return out

