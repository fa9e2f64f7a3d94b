"""CD7 screening assay: is the leukaemia CD7-positive, under a named, versioned rule?

``screen_file(path, protocol)`` reads an FCS file, gates it with the protocol's
automated gate sequence (:func:`run_protocol_gates`), and returns one plain record
(see :data:`RESULT_KEYS`). Intensities (``*_mfi``) are medians of compensated
fluorescence in the file's linear channel units; percentages are 0-100. A result
that cannot be trusted is ``verdict = "not_evaluable"`` with a ``reason``, never a guess.

How a file is gated (nothing depends on channel order, fluorochrome or scale range):

1. markers are found by $PnS (aliases; :func:`cd7flow.protocol.resolve_markers`), the
   file's own spillover compensates them, and each fluorescence channel gets a logicle
   with T = its $PnR and W from its negative spread;
2. the protocol's gates are fitted in order on their parent's events: time-clean,
   cells (mixture on FSC/SSC), singlets (A/H band), viable (dye valley), CD45/SSC
   populations found relative to the lymphocytes, B and T/NK cells (robust reference
   thresholds against granulocytes), lineage refinement of the blasts;
3. CD7+ = at or above the protocol's percentile of CD7 on the negative reference
   populations (B cells, monocytes, granulocytes, minus anything CD3+ or CD56+), or
   of the FMO tube's blasts; the verdict applies the protocol's rule to the percentage.

Record fields beyond :data:`RESULT_KEYS`: ``cd45_pos`` (denominator of ``blast_pct``),
``cd7_threshold`` (linear units) and ``cd7_threshold_scale`` (gating scale),
``threshold_reference``, ``gates`` (event count per population), ``channels`` (marker ->
$PnN), ``transforms``, ``notes`` (skipped gates, warnings), ``time_loss_pct``,
``sample_date`` ($DATE), ``path``, ``cd7flow_version``, ``plots``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gating.auto import (
    CD45SSCPopulations,
    CellsGate,
    DensityThreshold,
    LineageGate,
    PercentileThreshold,
    RobustReferenceThreshold,
    SingletGate,
    TimeCleanGate,
    ViabilityGate,
)
from gating.dimensions import Dimension
from gating.errors import GatingError as _GatingErrorBase

from .. import __version__
from ..datasource import SampleSource
from ..errors import CD7FlowError, ProtocolError
from ..protocol import GateSpec, Protocol, load_protocol, resolve_markers
from ..sample import Sample

RESULT_KEYS = (
    "file", "sha256", "protocol", "protocol_version", "protocol_sha256", "events", "viable_singlets", "cd45_pos",
    "blasts", "blast_pct", "cd7_pos", "cd7_pos_pct", "cd7_pos_ci95", "cd7_threshold", "cd7_mfi_blasts",
    "cd7_mfi_pos_blasts", "neg_ref_mfi", "neg_ref_events", "pos_ref_mfi", "pos_ref_events", "neg_ref_ratio",
    "pos_ref_ratio", "rd_fmo", "fmo_file", "fmo_sha256", "intensity", "rule", "verdict", "reason",
)
"""Keys of every screening record, in output order (more keys follow: gates, channels, notes...)."""

Z95 = 1.959963984540054


class NotEvaluable(Exception):
    """Raised inside the assay when the sample cannot give a trustworthy answer."""


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------
def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes of n, as percentages (0-100)."""
    if n <= 0:
        raise ValueError("Wilson interval needs n > 0")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def robust_sd(x: np.ndarray) -> float:
    """Robust SD: half the distance between the 15.87th and 84.13th percentiles (= SD for a normal)."""
    lo, hi = np.percentile(x, [15.865525393145708, 84.13447460685429])
    return float(hi - lo) / 2


def separation_index(stained: np.ndarray, fmo: np.ndarray) -> float:
    """RD = (MFI_stained - MFI_FMO) / (rSD_stained + rSD_FMO), medians and robust SDs in linear units."""
    spread = robust_sd(stained) + robust_sd(fmo)
    if spread <= 0:
        raise NotEvaluable("RD undefined: zero spread in the stained and FMO blasts")
    return (float(np.median(stained)) - float(np.median(fmo))) / spread


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


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


def _estimator(spec: GateSpec, dims: list[Dimension]):
    p = {k: v for k, v in spec.params.items() if k not in ("reference", "mode")}
    try:
        if spec.method == "time_clean":
            return TimeCleanGate(dims[0], gate_id=spec.id, **p)
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
            return LineageGate(dims, mode=spec.params.get("mode", "any"), gate_id=spec.id, **p)
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
    est = _estimator(spec, dims)
    if spec.method == "lineage":
        ref_name = spec.params.get("reference")
        ref = None
        if ref_name is not None:
            ref_mask = g.masks[ref_name]
            if np.count_nonzero(ref_mask) < 50:
                raise NotEvaluable(f"reference {ref_name} has only {np.count_nonzero(ref_mask)} events")
            ref = X[ref_mask]
        est.fit(Xp, reference=ref)
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
        elif spec.method == "lineage":
            union(spec.id, est.gates_ if est.mode == "any" else [est.gate_], spec.parent)
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


# ----------------------------------------------------------------------------------------------
# The assay
# ----------------------------------------------------------------------------------------------
def _blank(sample_path: str, sha: str | None, protocol: Protocol) -> dict[str, Any]:
    rec: dict[str, Any] = {k: None for k in RESULT_KEYS}
    rec.update(file=os.path.basename(sample_path), sha256=sha, protocol=protocol.name,
               protocol_version=protocol.version, protocol_sha256=protocol.sha256,
               rule=f"CD7+ blasts {protocol.rule.text} ({protocol.name} v{protocol.version})")
    rec.update(path=os.path.abspath(sample_path), cd7flow_version=__version__, notes=[], gates={}, channels={})
    return rec


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.6g}") if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_round(x) for x in v]
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return v


def screen_sample(sample: Sample, protocol: Protocol, fmo: Sample | None = None,
                  plots_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Screen one sample (and its FMO tube, if given). Returns the result record."""
    if protocol.assay != "screening" or protocol.rule is None:
        raise ProtocolError(protocol.path, f"protocol {protocol.name} is a {protocol.assay!r} protocol, "
                                           "not a screening one")
    rec = _blank(sample.path or sample.name, sample.sha256, protocol)
    rec["events"] = sample.n_events
    rec["sample_date"] = sample.metadata.get("$DATE")
    if fmo is not None:
        rec["fmo_file"] = os.path.basename(fmo.path or fmo.name)
        rec["fmo_sha256"] = fmo.sha256
    try:
        _screen(sample, protocol, fmo, rec, plots_dir)
    except NotEvaluable as exc:
        rec["verdict"] = "not_evaluable"
        rec["reason"] = str(exc)
    return _round(rec)


def _screen(sample: Sample, protocol: Protocol, fmo: Sample | None, rec: dict, plots_dir) -> None:
    s = protocol.settings
    pos_cfg, inten, qc = s["positivity"], s["intensity"], s["qc"]
    _mapping, missing = resolve_markers(sample, protocol)
    required = [m for m in protocol.markers.values() if m.required and m.name in missing]
    if required:
        raise NotEvaluable(f"marker missing: {', '.join(m.name for m in required)} (not found in $PnS of "
                           f"{sample.name})")
    g = run_protocol_gates(sample, protocol)
    rec["channels"] = g.channels
    rec["transforms"] = g.transforms
    rec["gates"] = {name: g.count(name) for name in g.masks if name != "root"}
    rec["notes"] = [f"gate {k} skipped: {v}" for k, v in g.skipped.items()]
    if any(x.method == "singlets" and x.id in g.skipped for x in protocol.gates):
        rec["notes"].append("no doublet discrimination: doublets in the reference populations can raise the "
                            "positivity threshold")

    viable_key = _last_of(protocol, ("viability", "singlets"))
    rec["viable_singlets"] = g.count(viable_key)
    cd45_pos = g.masks[viable_key] & ~g.masks.get("cd45_negative", np.zeros(sample.n_events, bool))
    rec["cd45_pos"] = int(np.count_nonzero(cd45_pos))
    time_gate = next((x for x in protocol.gates if x.method == "time_clean"), None)
    if time_gate is not None and time_gate.id not in g.skipped:
        loss = 100.0 * (1 - g.count(time_gate.id) / max(sample.n_events, 1))
        rec["time_loss_pct"] = loss
        if loss > qc["max_time_loss_pct"]:
            raise NotEvaluable(f"failed QC: the time gate dropped {loss:.1f}% of events "
                               f"(> {qc['max_time_loss_pct']}%)")
    if rec["viable_singlets"] < qc["min_viable_singlets"]:
        raise NotEvaluable(f"failed QC: {rec['viable_singlets']} viable singlets (< {qc['min_viable_singlets']:g})")

    population = pos_cfg["population"]
    blasts = g.masks[population]
    rec["blast_population"] = population
    rec["blasts"] = int(np.count_nonzero(blasts))
    rec["blast_pct"] = 100.0 * rec["blasts"] / rec["cd45_pos"] if rec["cd45_pos"] else None
    if rec["blasts"] < qc["min_blasts"]:
        raise NotEvaluable(f"too few blasts: {rec['blasts']} gated (< {qc['min_blasts']:g})")

    marker = pos_cfg["marker"]
    cd7 = g.linear(marker)
    cd7_blasts = cd7[blasts]
    neg_mask = np.logical_or.reduce([g.masks[p] for p in pos_cfg["negative_reference"]]) & ~blasts
    # A few NK or T cells inside a granulocyte/monocyte gate are enough to move a 99.5th
    # percentile: events carrying the positive reference's markers (CD3, CD56) are never
    # negative reference, wherever they sit on CD45/SSC.
    for p in pos_cfg["positive_reference"]:
        if p in g.marker_positive:
            neg_mask &= ~g.marker_positive[p]
    pos_mask = np.logical_or.reduce([g.masks[p] for p in pos_cfg["positive_reference"]]) & ~blasts
    for p in pos_cfg["negative_reference"] + pos_cfg["positive_reference"]:
        if p in g.skipped:
            rec["notes"].append(f"reference {p} unavailable: {g.skipped[p]}")
    rec["neg_ref_events"] = int(np.count_nonzero(neg_mask))
    rec["pos_ref_events"] = int(np.count_nonzero(pos_mask))
    min_ref = int(pos_cfg.get("min_reference_events", 100))

    fmo_blasts = fmo_scale = None
    if fmo is not None:
        fmo_blasts, fmo_scale = _fmo_blast_values(fmo, protocol, marker, population, g)
        rec["rd_fmo"] = separation_index(cd7_blasts, fmo_blasts)
        rec["fmo_blasts"] = int(fmo_blasts.size)

    pct = pos_cfg["percentile"]
    scale = g.values(marker)  # the gating scale (transformed): thresholds live there, like any gate
    if pos_cfg["method"] == "fmo_percentile":
        if fmo_blasts is None:
            raise NotEvaluable("the protocol sets positivity by an FMO tube, and none was given (--fmo)")
        reference = fmo_scale
        rec["threshold_reference"] = f"{pct}th percentile of {marker} on FMO blasts ({fmo_blasts.size} events)"
    else:
        if rec["neg_ref_events"] < min_ref:
            raise NotEvaluable(f"negative reference ({' + '.join(pos_cfg['negative_reference'])}) has "
                               f"{rec['neg_ref_events']} events (< {min_ref})")
        reference = scale[neg_mask]
        rec["threshold_reference"] = (f"{pct}th percentile of {marker} on "
                                      f"{' + '.join(pos_cfg['negative_reference'])} ({reference.size} events)")
    thr = PercentileThreshold(g.dimensions[marker], percentile=pct, min_reference_events=min(min_ref, 50),
                              gate_id=f"{marker}_positive")
    thr.fit(reference)
    positive = thr.predict(scale[blasts])
    k, n = int(np.count_nonzero(positive)), int(cd7_blasts.size)
    xf = g.source.transforms.get(g.dimensions[marker].transform)
    rec["cd7_threshold"] = float(xf.inverse(np.array([thr.threshold_]))[0]) if xf is not None else thr.threshold_
    rec["cd7_threshold_scale"] = thr.threshold_
    rec["cd7_pos"] = k
    rec["cd7_pos_pct"] = 100.0 * k / n
    rec["cd7_pos_ci95"] = list(wilson_interval(k, n))
    rec["cd7_mfi_blasts"] = float(np.median(cd7_blasts))
    rec["cd7_mfi_pos_blasts"] = float(np.median(cd7_blasts[positive])) if k else None
    rec["neg_ref_mfi"] = float(np.median(cd7[neg_mask])) if rec["neg_ref_events"] else None
    rec["pos_ref_mfi"] = float(np.median(cd7[pos_mask])) if rec["pos_ref_events"] else None
    rec["neg_ref_ratio"] = _ratio(rec["cd7_mfi_blasts"], rec["neg_ref_mfi"])
    rec["pos_ref_ratio"] = _ratio(rec["cd7_mfi_blasts"], rec["pos_ref_mfi"])
    if rec["pos_ref_events"] < min_ref:
        rec["notes"].append(f"positive reference has {rec['pos_ref_events']} events (< {min_ref}): "
                            "intensity is judged without it")
    rec["intensity"] = intensity_word(rec["cd7_pos_pct"], rec["cd7_mfi_pos_blasts"],
                                      rec["pos_ref_mfi"] if rec["pos_ref_events"] >= min_ref else None, inten)
    rec["verdict"] = "positive" if protocol.rule.passes(rec["cd7_pos_pct"]) else "negative"
    rec["reason"] = (f"{rec['cd7_pos_pct']:.1f}% CD7+ blasts (95% CI {rec['cd7_pos_ci95'][0]:.1f}-"
                     f"{rec['cd7_pos_ci95'][1]:.1f}) {'meets' if rec['verdict'] == 'positive' else 'fails'} "
                     f"rule {protocol.rule.text}")
    if plots_dir is not None:
        rec["plots"] = write_plots(g, protocol, rec, blasts, neg_mask, pos_mask, plots_dir)


def intensity_word(pos_pct: float, mfi_pos_blasts: float | None, pos_ref_mfi: float | None,
                   rules: dict[str, float]) -> str:
    """Bethesda-style word from % positive blasts and the CD7+ blasts' median vs the positive reference.

    Order of the rules: too few positive blasts -> "negative"; positive blasts clearly
    dimmer than normal T/NK cells -> "dim" (whatever their fraction: a dim marker on part of
    the blasts is still reported as dim, the fraction is in cd7_pos_pct); otherwise a fraction
    below the partial cut-off -> "partial"; otherwise "bright" when the blasts are about as
    bright as normal T/NK cells, "positive" in between. Without a positive reference the
    intensity cannot be judged: "partial" or "positive" by fraction alone.
    """
    if pos_pct < rules["negative_below_pct"]:
        return "negative"
    ratio = _ratio(mfi_pos_blasts, pos_ref_mfi)
    if ratio is not None and ratio < rules["dim_below_pos_ratio"]:
        return "dim"
    if pos_pct < rules["partial_below_pct"]:
        return "partial"
    if ratio is None:
        return "positive"
    if ratio > rules["bright_above_pos_ratio"]:
        return "bright"
    return "positive"


def _last_of(protocol: Protocol, methods: tuple[str, ...]) -> str:
    for method in methods:
        for spec in reversed(protocol.gates):
            if spec.method == method:
                return spec.id
    return "root"


def _fmo_blast_values(fmo: Sample, protocol: Protocol, marker: str, population: str,
                      stained: GatedSample) -> tuple[np.ndarray, np.ndarray]:
    """CD7 on the FMO tube's blasts, gated from the FMO's own data: (linear, compensated) and
    on the stained tube's gating scale (its transform, so thresholds compare like for like)."""
    try:
        g = run_protocol_gates(fmo, protocol)
    except NotEvaluable as exc:
        raise NotEvaluable(f"FMO {fmo.name}: {exc}") from None
    if marker not in g.dimensions:
        raise NotEvaluable(f"FMO {fmo.name}: no channel for {marker}")
    vals = g.linear(marker)[g.masks[population]]
    if vals.size < protocol.settings["qc"]["min_blasts"]:
        raise NotEvaluable(f"FMO {fmo.name}: too few blasts ({vals.size})")
    xf = stained.source.transforms.get(stained.dimensions[marker].transform)
    return vals, (np.asarray(xf.apply(vals), dtype=np.float64) if xf is not None else vals)


def _fmo_marker_channel(fmo: Sample, protocol: Protocol, stained: Sample, marker: str) -> None:
    """An FMO leaves the screened marker out, so its $PnS is often empty: borrow the stained tube's channel."""
    mapping, missing = resolve_markers(fmo, protocol)
    if marker in missing:
        smap, _ = resolve_markers(stained, protocol)
        ch = smap.get(marker)
        if ch is not None and ch in fmo.channels:
            markers = list(fmo.markers)
            markers[fmo.channels.index(ch)] = marker
            fmo.markers = tuple(markers)


def screen_file(path: str | os.PathLike, protocol: Protocol | str = "screening", fmo_path=None,
                plots_dir=None) -> dict[str, Any]:
    """Read and screen one FCS file (and its FMO). Unreadable files raise FCSError."""
    from ..io.fcs_read import read_fcs

    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    sample = read_fcs(path)
    fmo = None
    if fmo_path is not None:
        fmo = read_fcs(fmo_path)
        _fmo_marker_channel(fmo, protocol, sample, protocol.settings["positivity"]["marker"])
    rec = screen_sample(sample, protocol, fmo, plots_dir)
    rec["sha256"] = sample.sha256
    if fmo is not None:
        rec["fmo_sha256"] = fmo.sha256
    return rec


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg backend; PNG written to a temporary name and renamed)
# ----------------------------------------------------------------------------------------------
def _save_atomic(fig, path: str) -> None:
    import tempfile

    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a plot is an ordinary output file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_plots(g: GatedSample, protocol: Protocol, rec: dict, blasts: np.ndarray, neg_mask: np.ndarray,
                pos_mask: np.ndarray, plots_dir) -> list[str]:
    """CD45/SSC with the blast gate, and CD7 histograms of blasts vs references with the threshold."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    os.makedirs(plots_dir, exist_ok=True)
    stem = os.path.splitext(rec["file"])[0]
    written = []
    cd45_gate = next(x for x in protocol.gates if x.method == "cd45_ssc")
    parent = g.masks[cd45_gate.parent]
    x, y = g.values("CD45"), g.values("ssc_a")
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    ax.scatter(x[parent], y[parent], s=1, c="0.6", alpha=0.4, rasterized=True, label=f"{cd45_gate.parent} events")
    ax.scatter(x[blasts], y[blasts], s=1, c="tab:red", alpha=0.4, rasterized=True, label="blasts")
    est = g.estimators.get(cd45_gate.id)
    for pop, gate in (getattr(est, "gates_", None) or {}).items():
        v = np.vstack([gate.vertices, gate.vertices[:1]])
        ax.plot(v[:, 0], v[:, 1], lw=1.2, label=f"{pop} gate")
    ax.set_xlabel(f"CD45 ({g.channels['CD45']}, {g.transforms['CD45'].get('kind')})")
    ax.set_ylabel(f"SSC ({g.channels['ssc_a']}, {g.transforms.get('ssc_a', {}).get('kind', 'linear')})")
    ax.set_title(f"{rec['file']}: blasts {rec['blasts']} ({(rec['blast_pct'] or 0):.1f}% of viable CD45+)", fontsize=9)
    ax.legend(fontsize=7, markerscale=5, loc="upper left")
    path = os.path.join(plots_dir, f"{stem}_cd45_ssc.png")
    _save_atomic(fig, path)
    written.append(path)

    marker = protocol.settings["positivity"]["marker"]
    xs = g.values(marker)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    finite = np.isfinite(xs)
    lo, hi = np.percentile(xs[finite & (blasts | neg_mask | pos_mask)], [0.1, 99.9])
    bins = np.linspace(lo, hi, 120)
    for mask, label, colour in ((blasts, f"blasts (n={rec['blasts']})", "tab:red"),
                                (neg_mask, f"negative ref (n={rec['neg_ref_events']})", "tab:blue"),
                                (pos_mask, f"positive ref (n={rec['pos_ref_events']})", "tab:green")):
        if mask.any():
            ax.hist(xs[mask & finite], bins=bins, histtype="step", density=True, color=colour, label=label)
    if rec.get("cd7_threshold") is not None:
        xf = g.source.transforms.get(g.dimensions[marker].transform)
        t = float(xf.apply(np.array([rec["cd7_threshold"]]))[0]) if xf is not None else rec["cd7_threshold"]
        ax.axvline(t, color="k", ls="--", lw=1, label="threshold")
    ax.set_xlabel(f"{marker} ({g.channels[marker]}, {g.transforms[marker].get('kind')})")
    ax.set_ylabel("density")
    ax.set_title(f"{rec['file']}: {rec['cd7_pos_pct']:.1f}% {marker}+ blasts, {rec['verdict']} "
                 f"({protocol.rule.text})", fontsize=9)
    ax.legend(fontsize=7)
    path = os.path.join(plots_dir, f"{stem}_{marker.lower()}_hist.png")
    _save_atomic(fig, path)
    written.append(path)
    return written
