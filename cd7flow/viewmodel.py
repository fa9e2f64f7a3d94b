"""Qt-free state of the desktop viewer: samples, axes, gates, selection.

The Qt widgets in ``gui/`` observe a :class:`ViewerModel` through plain Python
callbacks (:class:`Signal`), the way napari separates its models from its Qt
layer: nothing here imports Qt, and every analysis step calls the same cd7flow /
gating functions the CLI uses (``read_fcs``, ``compensate``, the transforms, the
gating tree, the Gating-ML and FCS writers).

Memory: the event matrix of a Sample is never copied by the model. Columns are
asked from a data source by :class:`~gating.dimensions.Dimension` (channel,
compensation, transform), which caches transformed/compensated columns. Only the
current sample keeps a source: switching sample clears the others' caches, and a
view change drops cached columns that neither the axes nor a gate use.
Display is downsampled: dot plots draw at most :data:`MAX_DISPLAY_DOTS` events
(a fixed, seeded random subset per sample, so the picture does not flicker),
while density plots, histograms, counts and statistics use every event.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gating.dimensions import FCS_COMPENSATION, Dimension, is_uncompensated
from gating.errors import GatingError as _AnyGatingError
from gating.gates import BooleanGate, EllipsoidGate, Gate, PolygonGate, QuadrantGate, RectangleGate
from gating.stats import channel_statistics, population_table
from gating.tree import ROOT_PATH, GatingResult, GatingTree

from .errors import CD7FlowError, FileProblem, GatingError
from .io import open_gating
from .io.fcs_read import read_fcs
from .outputs import write_csv
from .sample import Sample
from .strategy import GatingStrategy

MAX_DISPLAY_DOTS = 100_000
"""Most events a dot plot draws; gates, counts and statistics always use all events."""

TRANSFORM_KINDS = ("linear", "logicle", "asinh")
PLOT_MODES = ("density", "dots", "histogram")

# Display transform parameters (Gating-ML names): W and A for logicle, M for both.
# T is per channel: its $PnR, so 10-bit and 18-bit instruments both fill the axis.
LOGICLE_W = 0.5
LOGICLE_M = 4.5
LOGICLE_A = 0.0
ASINH_M = 4.5
ASINH_A = 0.0

PopulationPath = tuple[str, ...]
ROOT: PopulationPath = ROOT_PATH


class Signal:
    """A list of callbacks: ``connect(fn)``, ``disconnect(fn)``, ``emit(*args)``."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., None]] = []

    def connect(self, callback: Callable[..., None]) -> None:
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def disconnect(self, callback: Callable[..., None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args) -> None:
        for cb in list(self._callbacks):
            cb(*args)


class ViewerEvents:
    """The model's signals. Observers re-read the model state they care about."""

    def __init__(self) -> None:
        self.samples = Signal()  # the sample list changed
        self.current = Signal()  # another sample is shown (axes may have changed too)
        self.view = Signal()  # axes, transforms, compensation or plot mode changed
        self.gates = Signal()  # gates added, edited or removed: counts changed
        self.selection = Signal()  # another population is selected


@dataclass(frozen=True)
class PopulationRow:
    """One line of the population tree. Percentages are in percent (0-100)."""

    path: PopulationPath
    depth: int
    count: int
    percent_of_parent: float
    percent_of_total: float
    gate: Gate | None

    @property
    def name(self) -> str:
        return self.path[-1] if self.path else "All events"


def channel_label(sample: Sample, index: int) -> str:
    """'PnN (PnS)' when the channel has a marker, else just PnN."""
    name = sample.channels[index]
    marker = sample.markers[index] if index < len(sample.markers) else ""
    return f"{name} ({marker})" if marker and marker != name else name


def path_str(path: PopulationPath) -> str:
    return "/" + "/".join(path) if path else "/"


# ---------------------------------------------------------------- hooks into cd7flow
def make_display_transform(kind: str, top: float, transform_id: str | None = None):
    """A Gating-ML display transform (``apply``/``inverse``) for one channel; ``top`` is T (channel units)."""
    from .transforms import AsinhTransform, LogicleTransform

    if kind == "logicle":
        return LogicleTransform(t=top, w=LOGICLE_W, m=LOGICLE_M, a=LOGICLE_A, id=transform_id)
    if kind == "asinh":
        return AsinhTransform(t=top, m=ASINH_M, a=ASINH_A, id=transform_id)
    raise CD7FlowError(f"unknown display transform {kind!r}; choose one of {TRANSFORM_KINDS}")


# ---------------------------------------------------------------- the model
class ViewerModel:
    """Everything the viewer shows, without Qt.

    Gates are shared by all samples (like a FlowJo group): the same tree is
    applied to whichever sample is current. Gate coordinates are in the space of
    their dimensions (after compensation and transform), i.e. the plot's axes.
    """

    def __init__(self) -> None:
        self.events = ViewerEvents()
        self.samples: list[Sample] = []
        self.current_index: int = -1
        self.x_channel: str | None = None
        self.y_channel: str | None = None
        self.x_transform = "logicle"
        self.y_transform = "logicle"
        self.compensated = False
        self.plot_mode = "density"
        self.selected: PopulationPath = ROOT
        self._gates: list[tuple[Gate, PopulationPath]] = []  # in insertion order, parents first
        # What the gates' dimensions refer to (Gating-ML ids): display transforms made here plus
        # whatever a loaded Gating-ML file defines.
        self._transforms: dict[str, object] = {}
        self._compensations: dict[str, object] = {}
        self._derived: dict[str, object] = {}
        self._sources: dict[int, object] = {}  # id(sample) -> data source (cached columns)
        self._result: GatingResult | None = None
        self._display_index: dict[int, np.ndarray] = {}
        self._gate_counter = 0

    # ---- samples ----------------------------------------------------------
    @property
    def sample(self) -> Sample | None:
        return self.samples[self.current_index] if 0 <= self.current_index < len(self.samples) else None

    def open_files(self, paths: Sequence[str | os.PathLike]) -> list[CD7FlowError]:
        """Read each file and add it; returns the errors of files that could not be read.

        The last file read becomes current. Errors name the file and the problem.
        """
        errors: list[CD7FlowError] = []
        for p in paths:
            path = Path(p)
            try:
                sample = read_fcs(path)
            except CD7FlowError as exc:
                errors.append(exc)
                continue
            except (OSError, ValueError) as exc:  # a reader bug must not crash the viewer
                errors.append(FileProblem(path, f"cannot be read: {exc}"))
                continue
            self.add_sample(sample)
        return errors

    def add_sample(self, sample: Sample, make_current: bool = True) -> None:
        self.samples.append(sample)
        self.events.samples.emit()
        if make_current:
            self.set_current(len(self.samples) - 1)

    def set_current(self, index: int) -> None:
        if not 0 <= index < len(self.samples):
            raise CD7FlowError(f"no sample number {index} (have {len(self.samples)})")
        self.current_index = index
        sample = self.samples[index]
        for key in [k for k in self._sources if k != id(sample)]:
            self._sources.pop(key).clear_cache()  # computed columns of a sample no longer shown
        # Keep the axes when the new sample has those channels; else pick sensible defaults.
        if self.x_channel not in sample.channels or self.y_channel not in sample.channels:
            self.x_channel, self.y_channel = _default_axes(sample)
        if sample.spillover is None:
            self.compensated = False
        self._result = None
        self._trim_cache()
        self.events.current.emit()
        self.events.gates.emit()

    def channel_choices(self) -> list[tuple[str, str]]:
        """(PnN, 'PnN (PnS)') for every channel of the current sample."""
        s = self.sample
        return [] if s is None else [(c, channel_label(s, i)) for i, c in enumerate(s.channels)]

    # ---- axes -------------------------------------------------------------
    def set_axes(self, x: str | None = None, y: str | None = None,
                 x_transform: str | None = None, y_transform: str | None = None) -> None:
        """Choose the plotted channels (by $PnN or marker $PnS, resolved like everywhere else) and transforms."""
        s = self.sample
        if s is None and (x is not None or y is not None):
            raise CD7FlowError("no sample is open")
        # one resolver for $PnN and $PnS across CLI, protocols and GUI (Sample.channel)
        x = s.channels[s.channel(x)] if x is not None else None
        y = s.channels[s.channel(y)] if y is not None else None
        for kind in (x_transform, y_transform):
            if kind is not None and kind not in TRANSFORM_KINDS:
                raise CD7FlowError(f"unknown transform {kind!r}; choose one of {TRANSFORM_KINDS}")
        self.x_channel = x or self.x_channel
        self.y_channel = y or self.y_channel
        self.x_transform = x_transform or self.x_transform
        self.y_transform = y_transform or self.y_transform
        self._trim_cache()
        self.events.view.emit()

    @property
    def can_compensate(self) -> bool:
        return self.sample is not None and self.sample.spillover is not None

    def set_compensated(self, on: bool) -> None:
        if on and not self.can_compensate:
            raise CD7FlowError(f"{self.sample.name if self.sample else 'no sample'} carries no spillover matrix")
        self.compensated = bool(on)
        self._trim_cache()
        self.events.view.emit()

    def set_plot_mode(self, mode: str) -> None:
        if mode not in PLOT_MODES:
            raise CD7FlowError(f"unknown plot mode {mode!r}; choose one of {PLOT_MODES}")
        self.plot_mode = mode
        self._trim_cache()
        self.events.view.emit()

    def dimension(self, axis: str) -> Dimension:
        """The gate dimension the plot's 'x' or 'y' axis shows (channel, compensation, transform)."""
        s = self._need_sample()
        channel, kind = (self.x_channel, self.x_transform) if axis == "x" else (self.y_channel, self.y_transform)
        comp = FCS_COMPENSATION if self.compensated and channel in _spill_channels(s) else None
        return Dimension(channel, comp, self._transform_id(kind, s, channel))

    def _transform_id(self, kind: str, sample: Sample, channel: str) -> str | None:
        if kind == "linear":
            return None
        # T is the channel's top of scale: $PnR, or the largest value when the stored values
        # exceed it (log-amplified channels decoded from $PnE run to 10^decades, not $PnR).
        i = sample.channels.index(channel)
        top = float(sample.ranges[i]) if i < len(sample.ranges) else float("nan")
        col = sample.events[:, i]
        biggest = float(np.nanmax(col)) if col.size else float("nan")
        if not math.isfinite(top) or top <= 1 or (math.isfinite(biggest) and biggest > top * 1.01):
            top = biggest if math.isfinite(biggest) and biggest > 1 else 262144.0
        top = float(f"{top:.6g}")
        tid = f"{kind}_T{top:g}"
        if tid not in self._transforms:
            self._transforms[tid] = make_display_transform(kind, top, tid)
            for src in self._sources.values():  # a new id invalidates nothing already cached
                src.transforms[tid] = self._transforms[tid]
        return tid

    # ---- data -------------------------------------------------------------
    def _need_sample(self) -> Sample:
        if self.sample is None:
            raise CD7FlowError("no sample is open")
        return self.sample

    def source(self):
        """The data source of the current sample (columns cached per dimension)."""
        s = self._need_sample()
        src = self._sources.get(id(s))
        if src is None:
            src = self.strategy().source(s)
            self._sources[id(s)] = src
        return src

    def _trim_cache(self) -> None:
        """Drop the current source's cached columns that neither the axes nor any gate use."""
        s = self.sample
        src = self._sources.get(id(s)) if s is not None else None
        if src is None or not hasattr(src, "retain"):
            return
        keep = {d for g, _ in self._gates for d in g.dimensions}
        if self.x_channel in s.channels and self.y_channel in s.channels:
            keep |= {self.dimension("x"), self.dimension("y")}
        src.retain(keep)

    def values(self, axis: str) -> np.ndarray:
        """All events' values on the 'x' or 'y' axis (display units: after compensation and transform)."""
        dim = self.dimension(axis)  # first: it may register a new transform with the sources
        return np.asarray(self.source().values(dim))

    def axis_ticks(self, axis: str):
        """pyqtgraph tick spec for a transformed axis: decades in channel units at their
        transformed positions; None (automatic ticks) for a linear axis."""
        dim = self.dimension(axis)
        if dim.transform is None or dim.transform not in self._transforms:
            return None
        transform = self._transforms[dim.transform]
        top = float(dim.transform.split("_T", 1)[1]) if "_T" in dim.transform else 262144.0
        decades = [10.0 ** k for k in range(1, int(math.floor(math.log10(top))) + 1)]
        values = np.array([-d for d in reversed(decades[:3])] + [0.0] + decades)
        positions = np.asarray(transform.apply(values), dtype=float)
        lo, hi = self.axis_range(axis)
        major: list[tuple[float, str]] = []
        # Near zero logicle/asinh squeeze decades together; keep 0 and drop labels that would overlap.
        min_gap = 0.04 * (hi - lo)
        order = sorted(zip(positions, values), key=lambda pv: (pv[1] != 0, abs(pv[1])))
        for p, v in order:
            if np.isfinite(p) and lo <= p <= hi and all(abs(p - q) >= min_gap for q, _ in major):
                major.append((float(p), _decade_label(v)))
        return [sorted(major), []]

    def display_index(self) -> np.ndarray:
        """Sorted indices of the events a dot plot draws (seeded subset of at most MAX_DISPLAY_DOTS)."""
        s = self._need_sample()
        idx = self._display_index.get(id(s))
        if idx is None:
            n = s.n_events
            if n <= MAX_DISPLAY_DOTS:
                idx = np.arange(n)
            else:
                idx = np.sort(np.random.default_rng(0).choice(n, MAX_DISPLAY_DOTS, replace=False))
            self._display_index[id(s)] = idx
        return idx

    def axis_range(self, axis: str) -> tuple[float, float]:
        """Plot limits from the 0.1-99.9 percentiles of the displayed subset, padded 5%."""
        v = self.values(axis)[self.display_index()]
        v = v[np.isfinite(v)]
        if v.size == 0:
            return 0.0, 1.0
        lo, hi = np.percentile(v, [0.1, 99.9])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.05 * (hi - lo)
        return float(lo - pad), float(hi + pad)

    def display_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the selected population's events in the display subset."""
        idx = self.display_index()
        idx = idx[self.population_mask(self.selected)[idx]]
        return self.values("x")[idx], self.values("y")[idx]

    def density(self, bins: int | None = None) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
        """2-D histogram (bins x bins, x first) of every event of the selected population, with its ranges."""
        mask = self.population_mask(self.selected)
        if bins is None:  # ~sqrt(n) bins per axis: smooth for small files, fine for large ones
            bins = int(np.clip(np.sqrt(mask.size), 64, 256))
        xr, yr = self.axis_range("x"), self.axis_range("y")
        x, y = self.values("x")[mask], self.values("y")[mask]
        h, _, _ = np.histogram2d(x, y, bins=bins, range=(xr, yr))
        return h, xr, yr

    def histogram(self, bins: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of the x axis over every event of the selected population."""
        x = self.values("x")[self.population_mask(self.selected)]
        x = x[np.isfinite(x)]
        return np.histogram(x, bins=bins, range=self.axis_range("x"))

    # ---- gates ------------------------------------------------------------
    @property
    def n_gates(self) -> int:
        return len(self._gates)

    def strategy(self) -> GatingStrategy:
        """The gates plus the transforms/compensations they name, as the CLI's ``gate`` command uses them."""
        return GatingStrategy(self.tree(), dict(self._transforms), dict(self._compensations), dict(self._derived))

    def tree(self) -> GatingTree:
        tree = GatingTree()
        for gate, parent in self._gates:
            tree.add(gate, parent or None)
        return tree

    def result(self) -> GatingResult:
        """The gating result of the current sample (recomputed lazily after any change)."""
        if self._result is None:
            try:
                self._result = self.tree().apply(self.source())
            except GatingError:
                raise
            except _AnyGatingError as exc:  # e.g. a loaded gate names a channel this sample lacks
                raise GatingError(f"{self._need_sample().name}: {exc}") from None
        return self._result

    def population_mask(self, path: PopulationPath) -> np.ndarray:
        if not path:
            return np.ones(self._need_sample().n_events, dtype=bool)
        return self.result().mask(path)

    def populations(self) -> list[PopulationRow]:
        """The root (all events) and every population in tree order, with live counts."""
        s = self.sample
        if s is None:
            return []
        rows = [PopulationRow(ROOT, 0, s.n_events, 100.0, 100.0, None)]
        result = self.result()
        for pop in result.tree.populations():
            rows.append(PopulationRow(
                pop.path, len(pop.path), result.count(pop.path),
                result.percent_of_parent(pop.path), result.percent_of_total(pop.path), pop.gate,
            ))
        return rows

    def _new_name(self, prefix: str) -> str:
        taken = {g.id for g, _ in self._gates}
        while True:
            self._gate_counter += 1
            name = f"{prefix} {self._gate_counter}"
            if name not in taken:
                return name

    def add_gate(self, gate: Gate, parent: PopulationPath | None = None) -> PopulationPath:
        """Add a gate under ``parent`` (default: the selected population); returns its path."""
        parent = self.selected if parent is None else tuple(parent)
        candidate = self._gates + [(gate, parent)]
        tree = GatingTree()
        for g, p in candidate:
            tree.add(g, p or None)  # raises GatingError on a duplicate path
        self._gates = candidate
        self._changed()
        return parent + (gate.id,)

    def add_rectangle_gate(self, x_min: float, x_max: float, y_min: float | None = None,
                           y_max: float | None = None, name: str | None = None,
                           parent: PopulationPath | None = None) -> PopulationPath:
        """A rectangle on the current axes (display units); without y bounds, a range on x."""
        if y_min is None and y_max is None:
            gate = RectangleGate(name or self._new_name("Range"), [self.dimension("x")], [x_min], [x_max])
        else:
            gate = RectangleGate(name or self._new_name("Rectangle"), [self.dimension("x"), self.dimension("y")],
                                 [x_min, y_min], [x_max, y_max])
        return self.add_gate(gate, parent)

    def add_polygon_gate(self, vertices, name: str | None = None,
                         parent: PopulationPath | None = None) -> PopulationPath:
        gate = PolygonGate(name or self._new_name("Polygon"), [self.dimension("x"), self.dimension("y")], vertices)
        return self.add_gate(gate, parent)

    def gate_at(self, path: PopulationPath) -> Gate:
        for gate, parent in self._gates:
            if parent + (gate.id,) == tuple(path):
                return gate
        raise GatingError(f"no gate at {path_str(tuple(path))}")

    def replace_gate(self, path: PopulationPath, new_gate: Gate) -> None:
        """Swap the gate at ``path`` for an edited one with the same id (e.g. after dragging)."""
        path = tuple(path)
        for i, (gate, parent) in enumerate(self._gates):
            if parent + (gate.id,) == path:
                if new_gate.id != gate.id:
                    raise GatingError(f"edited gate {new_gate.id!r} must keep the id {gate.id!r}")
                self._gates[i] = (new_gate, parent)
                self._changed()
                return
        raise GatingError(f"no gate at {path_str(path)}")

    def edit_gate(self, path: PopulationPath, *, mins=None, maxs=None, vertices=None) -> None:
        """Move/reshape a rectangle (``mins``/``maxs``) or polygon (``vertices``) gate, keeping its id."""
        gate = self.gate_at(path)
        if isinstance(gate, PolygonGate) and vertices is not None:
            new: Gate = PolygonGate(gate.id, gate.dimensions, vertices)
        elif isinstance(gate, RectangleGate) and mins is not None and maxs is not None:
            new = RectangleGate(gate.id, gate.dimensions, mins, maxs)
        else:
            raise GatingError(f"gate {gate.id!r} ({type(gate).__name__}) cannot be edited that way")
        self.replace_gate(path, new)

    def remove_population(self, path: PopulationPath) -> None:
        """Remove a gate and every population under it."""
        path = tuple(path)
        self.gate_at(path)
        self._gates = [(g, p) for g, p in self._gates
                       if (p + (g.id,))[: len(path)] != path]
        if self.selected[: len(path)] == path:
            self.selected = path[:-1]
            self.events.selection.emit()
        self._changed()

    def clear_gates(self) -> None:
        self._gates = []
        self.selected = ROOT
        self._changed()
        self.events.selection.emit()

    def gates_on_axes(self) -> list[tuple[PopulationPath, Gate]]:
        """Rectangle/polygon/range gates drawn (editable) in the plot's current space, with their paths."""
        return [(o.path, o.gate) for o in self.gate_overlays()[0] if o.kind == "roi"]

    def gate_overlays(self) -> tuple[list["GateOverlay"], list[str]]:
        """What the plot draws for the loaded gates, and why the others are not drawn.

        Returns (overlays, reasons). A gate is drawn only when each of its dimensions is
        one of the plotted axes: same channel, same effective compensation ("FCS" on a
        channel the file's matrix does not cover is the stored value) and the same
        transform (same id, or the same kind and parameters). Geometry is in the
        plot's coordinates. Boolean gates have no geometry and are not listed.
        """
        if self.sample is None:
            return [], []
        overlays: list[GateOverlay] = []
        reasons: list[str] = []
        axes = ("x",) if self.plot_mode == "histogram" else ("x", "y")
        for gate, parent in self._gates:
            if isinstance(gate, BooleanGate):
                continue
            where, why = [], None
            for d in gate.dimensions:
                axis, why = self._axis_for(d, axes)
                if axis is None:
                    break
                where.append(axis)
            if why is None and isinstance(gate, (RectangleGate, PolygonGate)) and tuple(where) != axes:
                why = (f"a {len(where)}-D gate on a {len(axes)}-D plot" + (" (use histogram mode)" if len(where) == 1 else "")
                       if len(where) != len(axes) else "its dimensions are the plot's axes swapped")
            if why is None and isinstance(gate, EllipsoidGate):
                why = _ellipse_problem(gate, axes)
            if why is not None:
                reasons.append(f"{gate.id}: {why}")
                continue
            path = parent + (gate.id,)
            if isinstance(gate, QuadrantGate):
                overlays.append(_quadrant_overlay(gate, parent, dict(zip((d.id for d in gate.dividers), where))))
            elif isinstance(gate, EllipsoidGate):
                order = [where.index("x"), where.index("y")]  # the gate may list y first
                overlays.append(GateOverlay("ellipse", path, gate, outline=ellipse_outline(
                    gate.mean[order], gate.inverse_covariance[np.ix_(order, order)], gate.distance_square)))
            else:
                overlays.append(GateOverlay("roi", path, gate))
        return overlays, reasons

    def _axis_for(self, dim: Dimension, axes: Sequence[str]) -> tuple[str | None, str | None]:
        """The plotted axis showing ``dim`` (None, reason when none does)."""
        s = self._need_sample()
        try:
            col = s.channel(dim.channel)
        except (CD7FlowError, LookupError, ValueError):
            if dim.channel in self._derived:
                return None, f"on the ratio {dim.channel}, which the plot cannot show"
            if not is_uncompensated(dim.compensation) and dim.compensation != FCS_COMPENSATION:
                return None, f"on {dim.channel} of compensation {dim.compensation}, which the plot cannot show"
            return None, f"on {dim.channel}, which this sample does not have"
        why = f"on {s.channels[col]}, not plotted"
        for axis in axes:
            shown = self.dimension(axis)
            if s.channel(shown.channel) != col:
                continue
            if self._effective_comp(dim.compensation, col) != self._effective_comp(shown.compensation, col):
                return None, (f"{s.channels[col]} is {_comp_words(dim.compensation)} in the gate but "
                              f"{_comp_words(shown.compensation)} on the plot")
            if not self._same_transform(dim.transform, shown.transform):
                return None, (f"{s.channels[col]} uses transform {dim.transform or 'none (linear)'} in the gate, "
                              f"the plot shows {shown.transform or 'linear'}")
            return axis, None
        return None, why

    def _effective_comp(self, comp: str | None, col: int) -> str | None:
        if is_uncompensated(comp):
            return None
        if comp == FCS_COMPENSATION:
            s = self._need_sample()
            covered = {s.channel(c) for c in _spill_channels(s)}
            return FCS_COMPENSATION if col in covered else None
        return comp

    def _same_transform(self, a: str | None, b: str | None) -> bool:
        if a == b:
            return True
        ta, tb = self._transforms.get(a), self._transforms.get(b)
        if ta is None or tb is None or type(ta) is not type(tb) or not hasattr(ta, "params"):
            return False
        return ta.params() == tb.params()

    def population_count(self, path: PopulationPath) -> tuple[int, float]:
        """(events, percent of parent) of a population of the current sample."""
        r = self.result()
        return r.count(path), r.percent_of_parent(path)

    def select(self, path: PopulationPath) -> None:
        path = tuple(path)
        if path:
            self.gate_at(path)
        self.selected = path
        self.events.selection.emit()

    def _changed(self) -> None:
        self._result = None
        self.events.gates.emit()

    # ---- statistics and export --------------------------------------------
    def _stat_dimensions(self) -> list[Dimension]:
        """Every channel in channel units (no transform), compensated when compensation is on."""
        s = self._need_sample()
        comp = _spill_channels(s) if self.compensated else set()
        return [Dimension(ch, FCS_COMPENSATION if ch in comp else None, None) for ch in s.channels]

    def statistics(self, path: PopulationPath | None = None) -> list[dict[str, object]]:
        """One row per channel for a population: count, % of parent, % of total (percent) and
        gating.stats.channel_statistics (median, mean, sd, geometric_mean, cv, robust_cv; CVs in
        percent) of the values in channel units, compensated when compensation is on."""
        path = self.selected if path is None else tuple(path)
        s = self._need_sample()
        mask = self.population_mask(path)
        row = {r.path: r for r in self.populations()}[path]
        src = self.source()
        out = []
        for i, dim in enumerate(self._stat_dimensions()):
            v = np.asarray(src.values(dim))[mask]
            out.append({
                "population": path_str(path), "channel": dim.channel, "marker": s.markers[i],
                "count": row.count, "percent_of_parent": row.percent_of_parent,
                "percent_of_total": row.percent_of_total, **channel_statistics(v),
            })
        return out

    def export_statistics_csv(self, out_path: str | os.PathLike) -> Path:
        """Write the tidy statistics table (gating.stats.population_table: every population,
        every channel) of the current sample to CSV, atomically; returns the path."""
        table = population_table(self.result(), self._stat_dimensions(), sample=self._need_sample().name)
        return write_csv(table, out_path)

    def export_population_fcs(self, out_path: str | os.PathLike, path: PopulationPath | None = None) -> Path:
        """Write the events of a population (all channels, stored values) to an FCS 3.1 file."""
        from .io.fcs_write import write_fcs

        path = self.selected if path is None else tuple(path)
        s = self._need_sample()
        mask = np.asarray(self.population_mask(path), dtype=bool)
        return write_fcs(out_path, s, mask=mask,
                         metadata={"CD7FLOW_SUBSET": f"{path_str(path)}: {int(mask.sum())} of {s.n_events} events"})

    def load_gating(self, path: str | os.PathLike, sample: str | None = None) -> int:
        """Replace the gates with those of a gating file; returns the number of gates.

        The file may be Gating-ML 2.0, a FlowJo 10 or 7-9 workspace or a FACSDiva export
        (:func:`cd7flow.io.open_gating`). For a workspace, ``sample`` names the sample
        whose gates to use; by default the one whose FCS file name is the current
        sample's (or the workspace's only sample).
        """
        current = self.sample.path if self.sample is not None and self.sample.path else None
        strategy = open_gating(path, sample=sample, fcs=current if sample is None else None)
        gates: list[tuple[Gate, PopulationPath]] = []
        for pop in strategy.tree.populations():
            if pop.quadrant_id is not None and any(g is pop.gate for g, _ in gates):
                continue  # a quadrant gate is added once and yields all its quadrants
            gates.append((pop.gate, pop.parent_path))
        self._transforms.update(strategy.transforms)
        self._compensations = dict(strategy.compensations)
        self._derived = dict(strategy.derived)
        for src in self._sources.values():  # new compensation/transform tables: recompute
            src.clear_cache()
        self._sources.clear()
        self._gates = gates
        self.selected = ROOT
        self._changed()
        self.events.selection.emit()
        return len(gates)

    load_gatingml = load_gating  # the Gating-ML menu's name for it

    def save_gatingml(self, path: str | os.PathLike) -> Path:
        """Write the gates (and the transforms they use) as Gating-ML 2.0, atomically."""
        from .io.gatingml import write_gatingml

        write_gatingml(self.strategy(), path)
        return Path(path)


@dataclass(frozen=True)
class GateOverlay:
    """One gate as the plot draws it (plot coordinates).

    kind "roi": a rectangle/range/polygon gate (editable). kind "ellipse": ``outline``
    is a closed (n, 2) x/y polyline on the exact ellipse. kind "quadrant": ``lines`` are
    ("x" | "y", value) dividers, ``cells`` are (population path, (x_lo, x_hi), (y_lo, y_hi))
    with +-inf for open sides.
    """

    kind: str
    path: PopulationPath
    gate: Gate
    outline: np.ndarray | None = None
    lines: tuple[tuple[str, float], ...] = ()
    cells: tuple[tuple[PopulationPath, tuple[float, float], tuple[float, float]], ...] = ()


def ellipse_outline(mean, inverse_covariance, distance_square: float, n: int = 241) -> np.ndarray:
    """Closed (n, 2) polyline of the points p with (p - mean)' S (p - mean) = distance_square.

    S is the symmetric part of ``inverse_covariance`` (the quadratic form the gate
    evaluates only sees that). With S = L L' (Cholesky), p = mean + sqrt(d2) L'^-1 u for
    unit vectors u lies exactly on the ellipse.
    """
    sym = (np.asarray(inverse_covariance, float) + np.asarray(inverse_covariance, float).T) / 2
    lower = np.linalg.cholesky(sym)
    t = np.linspace(0.0, 2 * np.pi, n)
    unit = np.vstack([np.cos(t), np.sin(t)])
    pts = np.linalg.solve(lower.T, unit) * math.sqrt(distance_square)
    return (np.asarray(mean, float)[:, None] + pts).T


def _ellipse_problem(gate: EllipsoidGate, axes: Sequence[str]) -> str | None:
    if len(gate.dimensions) != 2 or len(axes) != 2:
        return f"a {len(gate.dimensions)}-D ellipsoid cannot be drawn on a {len(axes)}-D plot"
    sym = (gate.inverse_covariance + gate.inverse_covariance.T) / 2
    if not np.all(np.linalg.eigvalsh(sym) > 0):
        return "its covariance is not positive definite (not an ellipse)"
    return None


def _quadrant_overlay(gate: QuadrantGate, parent: PopulationPath, axis_of: dict[str, str]) -> GateOverlay:
    lines = tuple((axis_of[d.id], float(v)) for d in gate.dividers for v in d.values)
    cells = []
    for q in gate.quadrants:
        box = {"x": [-math.inf, math.inf], "y": [-math.inf, math.inf]}
        for ref, location in q.positions.items():
            d = next(dv for dv in gate.dividers if dv.id == ref)
            k = int(np.searchsorted(np.asarray(d.values), float(location), side="right"))
            lo = d.values[k - 1] if k > 0 else -math.inf
            hi = d.values[k] if k < len(d.values) else math.inf
            b = box[axis_of[ref]]
            b[0], b[1] = max(b[0], lo), min(b[1], hi)
        cells.append((parent + (q.id,), tuple(box["x"]), tuple(box["y"])))
    return GateOverlay("quadrant", parent + (gate.id,), gate, lines=lines, cells=tuple(cells))


def _comp_words(comp: str | None) -> str:
    return "uncompensated" if is_uncompensated(comp) else f"compensated ({comp})"


def _spill_channels(sample: Sample) -> set[str]:
    return set(sample.spillover.channels) if sample.spillover is not None else set()


def _default_axes(sample: Sample) -> tuple[str, str]:
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


def _decade_label(v: float) -> str:
    if v == 0:
        return "0"
    k = int(round(math.log10(abs(v))))
    return f"{'-' if v < 0 else ''}10{str(k).translate(_SUPERSCRIPT)}"


_SUPERSCRIPT = str.maketrans("0123456789-", "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207b")
