"""Automated gates in the viewer: the protocol a sample gets, the fit, and one small plot per gating step.

The fit is exactly ``cd7flow autogate``'s: :func:`cd7flow.assays.protocol_gating.run_protocol_gates`
on the sample with a shipped (or user) protocol; the viewer then holds that very tree, with the
transforms the protocol fitted (logicle W per channel), so its counts are the CLI's counts.

Which protocol: the tube, from the sample's TEXT keywords (TUBE NAME, $SMNO, $FIL, the same
rule as the batch planner, :func:`cd7flow.batch_plan.infer_from_keywords`): screening and FMO
tubes get ``screening`` (the CLI's default), CAR and MRD tubes ``car`` (as ``cd7flow
persistence`` gates them); a tube of unknown kind gets the generic ``leukocytes`` gates, which
need no assay panel. The user may switch to any shipped protocol.

Each gating step gets its own plot (:class:`GatePlot`): the parent population's events on the
gates' own dimensions (compensation and the protocol's transform), with every gate of that
parent on those dimensions outlined (the four CD45/SSC populations share one plot); and
back-gating: the events of a selected population drawn in colour inside every plot whose
parent population contains it. Pictures are made here as numpy arrays (density images and
histograms, every event binned), so the Qt side only shows them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from gating.dimensions import Dimension
from gating.gates import BooleanGate, EllipsoidGate, Gate, PolygonGate, RectangleGate
from gating.tree import GatingResult, GatingTree

from ..assays.protocol_gating import GatedSample, run_protocol_gates, sample_notes
from ..errors import NotEvaluable
from .workspace import GENERIC_PROTOCOL, TUBE_PROTOCOLS
from .workspace import protocol_choices as workspace_protocols
from ..protocol import Protocol, load_protocol
from ..sample import Sample
from ..strategy import GatingStrategy

PopulationPath = tuple[str, ...]


BASE_RGB = np.array([70, 70, 70], dtype=np.float64)  # the parent's events: grey
HIGHLIGHT_RGB = np.array([225, 40, 20], dtype=np.float64)  # back-gated population: red


# ---------------------------------------------------------------- which protocol
def sample_tube(sample: Sample) -> str | None:
    """The tube kind (screening / fmo / car / mrd) the sample's TEXT keywords name, or None."""
    from ..batch_plan import FileMeta, infer_from_keywords

    meta = FileMeta(path=sample.path or sample.name, rel=sample.name)
    infer_from_keywords(meta, sample.metadata)
    return meta.tube


def choose_protocol(sample: Sample, tube: str | None = None) -> tuple[str, str]:
    """(protocol name, why) for ``sample``; ``tube`` (e.g. from a manifest) wins over keywords."""
    kind = tube or sample_tube(sample)
    if kind in TUBE_PROTOCOLS:
        where = "the manifest" if tube else "its keywords"
        return TUBE_PROTOCOLS[kind], f"a {kind} tube (from {where})"
    return GENERIC_PROTOCOL, "tube kind unknown: generic leukocyte gates"


def protocol_choices() -> list[str]:
    """Names of the shipped protocols that fit gates."""
    return [c.name for c in workspace_protocols()]


# ---------------------------------------------------------------- the fit
@dataclass
class AutoGate:
    """One automated fit: the sample, the protocol, what was fitted and how long it took (s)."""

    sample: Sample
    protocol: Protocol
    gated: GatedSample
    why: str
    seconds: float

    @property
    def tree(self) -> GatingTree:
        return self.gated.tree

    @property
    def strategy(self) -> GatingStrategy:
        """The fitted tree with the transforms it names (what ``autogate --gatingml`` writes)."""
        return self.gated.strategy

    @property
    def result(self) -> GatingResult:
        return self.gated.result

    def counts(self) -> dict[PopulationPath, int]:
        """Events of every population of the fitted tree, by path (tree order)."""
        return {pop.path: self.result.count(pop.path) for pop in self.tree.populations()}

    def protocol_counts(self) -> dict[str, int]:
        """Events per protocol population name, as ``cd7flow autogate`` prints them."""
        masks = self.gated.masks
        return {k: int(np.count_nonzero(masks[k])) for k in masks if k != "root" and k not in self.gated.skipped}

    def notes(self) -> list[str]:
        """Skipped gates with their reason, then the file notes the CLI prints."""
        return ([f"gate {k} skipped: {why}" for k, why in self.gated.skipped.items()]
                + sample_notes(self.sample, self.protocol))

    def provenance(self) -> dict[str, str]:
        return {"protocol": self.protocol.name, "protocol_version": self.protocol.version,
                "protocol_sha256": self.protocol.sha256}


def run_autogate(sample: Sample, protocol: str | Protocol | None = None, *, tube: str | None = None,
                 why: str = "chosen by the user") -> AutoGate:
    """Fit ``protocol`` (default: :func:`choose_protocol`) on ``sample``; raises a
    :class:`~cd7flow.errors.NotEvaluable` naming the file when a required gate cannot be fitted.
    ``why`` says where a given protocol came from. Pure: safe on a worker thread (the sample is
    only read)."""
    if protocol is None:
        name, why = choose_protocol(sample, tube)
        proto = load_protocol(name)
    else:
        proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    start = time.perf_counter()
    try:
        gated = run_protocol_gates(sample, proto)
    except NotEvaluable as exc:
        raise NotEvaluable(f"{sample.path or sample.name}: protocol {proto.name}: {exc}") from None
    return AutoGate(sample, proto, gated, why, time.perf_counter() - start)


# ---------------------------------------------------------------- one plot per gating step
@dataclass(frozen=True)
class DrawnGate:
    """One gate on a plot: a closed (k, 2) ``outline`` (2-D) or an ``interval`` (1-D; open ends
    at the axis limit), in the plot's coordinates."""

    path: PopulationPath
    gate: Gate
    outline: np.ndarray | None = None
    interval: tuple[float, float] | None = None

    @property
    def name(self) -> str:
        return self.path[-1]


@dataclass(frozen=True)
class GatePlot:
    """One gating step: the events of ``parent`` on the dimensions its child gates share
    (compensated, transformed as the gates are), with those gates drawn.

    ``dimensions`` are (x,) for 1-D gates (a histogram) or (x, y); ``ranges`` the axis limits,
    from every event of the sample (widened to show the whole gate), so one dimension has one
    axis in every plot.
    """

    parent: PopulationPath
    dimensions: tuple[Dimension, ...]
    ranges: tuple[tuple[float, float], ...]
    gates: tuple[DrawnGate, ...]

    @property
    def paths(self) -> list[PopulationPath]:
        return [g.path for g in self.gates]

    def axis_label(self, k: int, transforms: dict | None = None) -> str:
        d = self.dimensions[k]
        xf = (transforms or {}).get(d.transform) if d.transform else None
        kind = "linear" if d.transform is None else getattr(xf, "kind", d.transform)
        return f"{d.channel} ({kind})"


@dataclass
class GatePlots:
    """Every gating step that can be drawn, and why the other gates are not (path -> reason)."""

    plots: list[GatePlot]
    not_drawn: dict[PopulationPath, str] = field(default_factory=dict)

    def plot_of(self, path: PopulationPath) -> GatePlot | None:
        """The plot drawing the gate of population ``path`` (None when it is not drawn)."""
        return next((p for p in self.plots if tuple(path) in p.paths), None)


def gate_plots(tree: GatingTree, source, limits: dict | None = None) -> GatePlots:
    """The gating steps of ``tree`` in tree order: rectangle (1-D or 2-D), polygon and 2-D
    ellipse gates grouped by (parent, dimensions), so sibling gates on one plot (the CD45/SSC
    populations) are drawn together; ``source`` gives the values (a ``SampleSource``).
    ``limits``: a cache of each dimension's data limits for this sample (filled here), so a
    redraw after an edit does not take percentiles of every column again."""
    steps: dict[tuple, list] = {}
    not_drawn: dict[PopulationPath, str] = {}
    for pop in tree.populations():
        gate = pop.gate
        if isinstance(gate, BooleanGate):
            not_drawn[pop.path] = f"a boolean gate ({gate.operator} of other gates): no geometry of its own"
        elif not isinstance(gate, (RectangleGate, PolygonGate, EllipsoidGate)) or len(gate.dimensions) > 2:
            not_drawn[pop.path] = f"a {len(gate.dimensions)}-D {type(gate).__name__}: shown in the tree only"
        else:
            steps.setdefault((pop.parent_path, tuple(gate.dimensions)), []).append(pop)
    limits = {} if limits is None else limits
    plots = []
    for (parent, dims), pops in steps.items():
        ranges = []
        for k, d in enumerate(dims):
            if d not in limits:
                limits[d] = _data_limits(np.asarray(source.values(d)))
            lo, hi = limits[d]
            span = hi - lo
            # the gates' own extent widens the axis, by at most a quarter of the data's span
            g_lo = min(_geometry_extent(p.gate)[0][k] for p in pops)
            g_hi = max(_geometry_extent(p.gate)[1][k] for p in pops)
            ranges.append(_padded(max(min(lo, g_lo), lo - span / 4), min(max(hi, g_hi), hi + span / 4)))
        ranges = tuple(ranges)
        drawn = []
        for pop in pops:
            g = pop.gate
            if len(dims) == 1:
                lo, hi = g.mins[0], g.maxs[0]
                drawn.append(DrawnGate(pop.path, g, interval=(ranges[0][0] if lo is None else lo,
                                                                ranges[0][1] if hi is None else hi)))
            else:
                drawn.append(DrawnGate(pop.path, g, outline=_outline(g, ranges)))
        plots.append(GatePlot(parent, dims, ranges, tuple(drawn)))
    return GatePlots(plots, not_drawn)


def _data_limits(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [0.05, 99.95])
    return float(lo), float(hi)


def _padded(lo: float, hi: float) -> tuple[float, float]:
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.04 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def _geometry_extent(gate: Gate) -> tuple[list[float], list[float]]:
    """Finite extent of a gate's geometry per dimension (+inf / -inf where it has none)."""
    n = len(gate.dimensions)
    if isinstance(gate, PolygonGate):
        v = np.asarray(gate.vertices, float)
        return list(v.min(axis=0)), list(v.max(axis=0))
    if isinstance(gate, RectangleGate):
        return ([math.inf if v is None else v for v in gate.mins], [-math.inf if v is None else v for v in gate.maxs])
    if isinstance(gate, EllipsoidGate):
        pts = _ellipse(gate)
        return list(pts.min(axis=0)), list(pts.max(axis=0))
    return [math.inf] * n, [-math.inf] * n


def _ellipse(gate: EllipsoidGate, n: int = 181) -> np.ndarray:
    """Closed polyline on the ellipse (p - mean)' S (p - mean) = d2, S = Cholesky L L'."""
    inv = np.asarray(gate.inverse_covariance, float)
    lower = np.linalg.cholesky((inv + inv.T) / 2)
    t = np.linspace(0.0, 2 * np.pi, n)
    pts = np.linalg.solve(lower.T, np.vstack([np.cos(t), np.sin(t)])) * math.sqrt(gate.distance_square)
    return (np.asarray(gate.mean, float)[:, None] + pts).T


def _outline(gate: Gate, ranges) -> np.ndarray:
    if isinstance(gate, PolygonGate):
        v = np.asarray(gate.vertices, float)
        return np.vstack([v, v[:1]])
    if isinstance(gate, EllipsoidGate):
        return _ellipse(gate)
    (x0, x1), (y0, y1) = ranges  # open rectangle sides run to the axis limits
    lo = [x0 if gate.mins[0] is None else gate.mins[0], y0 if gate.mins[1] is None else gate.mins[1]]
    hi = [x1 if gate.maxs[0] is None else gate.maxs[0], y1 if gate.maxs[1] is None else gate.maxs[1]]
    return np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]], [lo[0], lo[1]]])


def backgated(plot: GatePlot, selected: PopulationPath) -> bool:
    """Whether ``selected`` is drawn in colour on ``plot``: it lies inside the plot's parent
    population (the gate's own population included), so its events are among those shown."""
    selected = tuple(selected)
    return len(selected) > len(plot.parent) and selected[: len(plot.parent)] == plot.parent


def _mask(result: GatingResult, path: PopulationPath) -> np.ndarray:
    if not path:
        return np.ones(result.n_events, dtype=bool)
    return np.asarray(result.mask(path), dtype=bool)


@dataclass(frozen=True)
class PictureInputs:
    """What the pictures need, read from the model on its own (UI) thread, so a worker that
    bins them touches no cache of the model: columns by dimension, masks by population path,
    each drawn gate's (count, % of parent), and the back-gated selection."""

    columns: dict[Dimension, np.ndarray]
    masks: dict[PopulationPath, np.ndarray]
    counts: dict[PopulationPath, tuple[int, float]]
    selected: PopulationPath = ()


def picture_inputs(plots: list[GatePlot], result: GatingResult, source,
                   selected: PopulationPath = ()) -> PictureInputs:
    """Gather :class:`PictureInputs` for ``plots`` (cached columns and masks: cheap once the
    population tree has been counted)."""
    selected = tuple(selected)
    columns = {d: np.asarray(source.values(d)) for p in plots for d in p.dimensions}
    paths = {p.parent for p in plots} | ({selected} if any(backgated(p, selected) for p in plots) else set())
    masks = {path: _mask(result, path) for path in paths}
    counts = {g.path: (result.count(g.path), result.percent_of_parent(g.path)) for p in plots for g in p.gates}
    return PictureInputs(columns, masks, counts, selected)


def plot_density(plot: GatePlot, inputs: PictureInputs, bins: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgba, parent_counts, highlight_counts) of a 2-D gate plot, every event counted.

    ``parent_counts`` / ``highlight_counts`` are (bins, bins) histograms (x first) over
    ``plot.ranges`` (half-open: [lo, hi)) of the parent population and of the back-gated
    selected population (zeros when it is not inside the parent). ``rgba`` is (bins, bins, 4)
    uint8: grey for the parent, red for the selected events, darker where denser (log scale),
    transparent where empty.
    """
    from ..viewer.binning import histogram2d  # the viewer's bincount histogram: same bins, several times faster

    x, y = (inputs.columns[d] for d in plot.dimensions)
    parent = inputs.masks[plot.parent]
    base = histogram2d(x[parent], y[parent], bins, *plot.ranges)
    if backgated(plot, inputs.selected):
        chosen = inputs.masks[inputs.selected]
        high = histogram2d(x[chosen], y[chosen], bins, *plot.ranges)
    else:
        high = np.zeros_like(base)
    return _compose(base, high), base, high


def plot_histogram(plot: GatePlot, inputs: PictureInputs, bins: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, parent_counts, highlight_counts) of a 1-D gate plot over ``plot.ranges[0]``."""
    x = inputs.columns[plot.dimensions[0]]
    base, edges = np.histogram(x[inputs.masks[plot.parent]], bins=bins, range=plot.ranges[0])
    if backgated(plot, inputs.selected):
        high, _ = np.histogram(x[inputs.masks[inputs.selected]], bins=bins, range=plot.ranges[0])
    else:
        high = np.zeros_like(base)
    return edges, base, high


def _compose(base: np.ndarray, high: np.ndarray) -> np.ndarray:
    """RGBA picture: log-scaled shade of grey (parent) with red (selected) painted over it."""
    rgba = np.zeros(base.shape + (4,), dtype=np.uint8)
    for counts, rgb in ((base, BASE_RGB), (high, HIGHLIGHT_RGB)):
        filled = counts > 0
        if not filled.any():
            continue
        level = np.log1p(counts) / np.log1p(counts.max())  # 0..1, 1 = densest bin
        # sparse bins are pale (towards white), dense bins take the full colour
        shade = 255 - (255 - rgb)[None, None, :] * (0.35 + 0.65 * level)[..., None]
        rgba[filled, :3] = shade[filled].round().astype(np.uint8)
        rgba[filled, 3] = 255
    return rgba


@dataclass(frozen=True)
class StepPicture:
    """What one gating step's plot shows: a 2-D ``rgba`` image, or a 1-D histogram (``edges``,
    ``base`` = parent, ``high`` = back-gated), and each gate's (count, % of parent)."""

    rgba: np.ndarray | None
    edges: np.ndarray | None
    base: np.ndarray | None
    high: np.ndarray | None
    counts: dict[PopulationPath, tuple[int, float]]


def step_pictures(plots: list[GatePlot], inputs: PictureInputs) -> list[StepPicture]:
    """:func:`plot_density` / :func:`plot_histogram` of every step, with its gates' counts: numpy on
    the arrays of ``inputs`` only, so it may run on a worker thread."""
    out = []
    for plot in plots:
        counts = {g.path: inputs.counts[g.path] for g in plot.gates}
        if len(plot.dimensions) == 2:
            rgba, _, _ = plot_density(plot, inputs)
            out.append(StepPicture(rgba, None, None, None, counts))
        else:
            edges, base, high = plot_histogram(plot, inputs)
            out.append(StepPicture(None, edges, base, high, counts))
    return out
