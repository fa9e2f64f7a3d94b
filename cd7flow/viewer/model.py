"""The viewer's Qt-free model: samples, plots (axes, scales, zoom), gates, selection.

The Qt widgets in ``gui/`` observe a :class:`ViewerModel` through psygnal signals
(:mod:`.events`), the way napari separates its models from its Qt layer: nothing
here imports Qt, and every analysis step calls the same cd7flow / gating functions
the CLI uses (``read_fcs``, ``compensate``, the protocol's transforms, the gating
tree, the Gating-ML and FCS writers).

Memory: the event matrix of a Sample is never copied. Columns are asked from a
data source by :class:`~gating.dimensions.Dimension` (channel, compensation,
transform), which caches them; only the current sample keeps a source, and a view
change drops cached columns that neither a plot nor a gate uses. Dot plots draw at
most :data:`MAX_DISPLAY_DOTS` events (a seeded subset per sample); density plots,
histograms, counts and statistics use every event.
"""
from __future__ import annotations

import numpy as np

from gating.dimensions import FCS_COMPENSATION, Dimension, is_uncompensated

from ..errors import CD7FlowError, GatingError
from ..sample import Sample
from ..strategy import GatingStrategy
from .actions import FileActions
from .binning import histogram2d
from .editing import GateEditing
from .events import ViewerEvents
from .history import GateEntry, History
from .overlays import GateOverlay, PlotSpace, compute_overlays
from .results import ViewerResult, seeded_result
from .scales import (TRANSFORM_KINDS, Tick, channel_label, decade_ticks, default_axes, default_kind, full_range,
                     make_display_transform, top_of_scale, transform_id)
from .state import MAX_PLOTS, PLOT_MODES, ROOT, PlotState, PopulationPath, PopulationRow, path_str
from .statistics import PopulationStatistics

MAX_DISPLAY_DOTS = 100_000
"""Most events a dot plot draws; gates, counts and statistics always use all events."""


class ViewerModel(GateEditing, FileActions, PopulationStatistics):
    """Everything the viewer shows, without Qt.

    Gates are shared by all samples (like a FlowJo group): the same tree is applied to
    whichever sample is current. Gate coordinates are in the space of their dimensions
    (after compensation and transform). Plots: ``plots[active_plot]`` is the one the
    axis controls edit; ``x_channel``, ``x_transform``, ... read and ``set_axes`` writes it
    unless ``plot=`` names another.

    Public API used by the other panels: ``open_files``, ``add_sample``,
    ``set_current``, ``set_axes``, ``set_compensated``, ``add_gate``, ``replace_gate``,
    ``edit_gate``, ``edit_gate_on_plot``, ``rename_gate``, ``remove_population``,
    ``set_tree``, ``gate_at``, ``undo``/``redo``, ``edit_log``,
    ``is_manually_adjusted``, ``tree``, ``strategy``, ``population_count``,
    ``populations``, ``statistics``, ``load_gating``, ``save_gatingml``,
    ``view_state``/``restore_view_state``, ``events.*`` (see :class:`ViewerEvents`).
    """

    def __init__(self, protocol=None) -> None:
        self.events = ViewerEvents()
        self.samples: list[Sample] = []
        self.current_index: int = -1
        self.plots: list[PlotState] = [PlotState()]
        self.active_plot = 0
        self.compensated = False
        self.selected: PopulationPath = ROOT
        self._gates: tuple[GateEntry, ...] = ()
        self.history = History()
        self._edit_log: list[dict] = []
        self.dirty = False  # gates changed since the last load/save
        # What the gates' dimensions refer to (Gating-ML ids): display transforms made here plus
        # whatever a loaded gating file or a fitted protocol defines.
        self._transforms: dict[str, object] = {}
        self._compensations: dict[str, object] = {}
        self._derived: dict[str, object] = {}
        self._sources: dict[int, object] = {}  # id(sample) -> data source (cached columns)
        self._scales: dict[tuple, tuple[str | None, object, float]] = {}
        self._column_max: dict[tuple[int, str], float] = {}
        self._result: ViewerResult | None = None
        self._previous_result: ViewerResult | None = None
        self._changed_path: PopulationPath | None = None
        self._stats_cache: dict[tuple, list[dict]] = {}
        self._stat_columns: dict[tuple, list[np.ndarray]] = {}  # one set: (sample, compensated) -> columns
        self._comp_chosen = False  # the user toggled compensation: keep that choice across samples
        self._gates_version = 0
        self._display_index: dict[int, np.ndarray] = {}
        self._gate_counter = 0
        self._protocol = protocol
        self._fluorescence_spec: dict | None = None  # read from the protocol on the first logicle axis
        self._kind_choice: dict[str, str] = {}  # channel -> the transform last chosen for it

    # ---- samples ----------------------------------------------------------
    @property
    def sample(self) -> Sample | None:
        return self.samples[self.current_index] if 0 <= self.current_index < len(self.samples) else None

    def add_sample(self, sample: Sample, make_current: bool = True) -> None:
        self.samples.append(sample)
        self.events.samples.emit()
        if make_current:
            self.set_current(len(self.samples) - 1)

    def set_current(self, index: int) -> None:
        """Show another sample. Axes stay when it has the channels; compensation is on when it
        carries a matrix (a technician's default) and off when it has none."""
        if not 0 <= index < len(self.samples):
            raise CD7FlowError(f"no sample number {index} (have {len(self.samples)})")
        first = self.current_index < 0
        self.current_index = index
        sample = self.samples[index]
        for key in [k for k in self._sources if k != id(sample)]:
            self._sources.pop(key).clear_cache()  # computed columns of a sample no longer shown
        self._stat_columns = {}
        if sample.spillover is None:
            self.compensated = False
        elif first or not self._comp_chosen:
            self.compensated = True
        for i, plot in enumerate(self.plots):
            if plot.x_channel not in sample.channels or (plot.mode != "histogram" and plot.y_channel not in sample.channels):
                self._default_plot(plot, sample, i)
        self._result = None
        self._previous_result = None
        self._trim_cache()
        self.events.sample_changed.emit()
        self.events.gates_changed.emit()

    def _default_plot(self, plot: PlotState, sample: Sample, index: int) -> None:
        """FSC/SSC on the first plot; the next plots pair up fluorescence channels."""
        x, y = default_axes(sample)
        if index > 0:
            fl = [c for c in sample.channels if default_kind(c) == "logicle"]
            if len(fl) >= 2 * index:
                x, y = fl[2 * index - 2], fl[2 * index - 1]
            elif len(fl) >= 2:
                x, y = fl[0], fl[1]
        plot.x_channel, plot.y_channel = x, y
        plot.x_transform = self._kind_choice.get(x, default_kind(x))
        plot.y_transform = self._kind_choice.get(y, default_kind(y))
        plot.x_range = plot.y_range = None

    def channel_choices(self) -> list[tuple[str, str]]:
        """(PnN, 'PnN (PnS)') for every channel of the current sample."""
        s = self.sample
        return [] if s is None else [(c, channel_label(s, i)) for i, c in enumerate(s.channels)]

    # ---- plots ------------------------------------------------------------
    def _plot(self, plot: int | None) -> PlotState:
        return self.plots[self.active_plot if plot is None else plot]

    @property
    def x_channel(self) -> str | None:
        return self._plot(None).x_channel

    @property
    def y_channel(self) -> str | None:
        return self._plot(None).y_channel

    @property
    def x_transform(self) -> str:
        return self._plot(None).x_transform

    @property
    def y_transform(self) -> str:
        return self._plot(None).y_transform

    @property
    def plot_mode(self) -> str:
        return self._plot(None).mode

    def set_layout(self, n_plots: int) -> None:
        """Show ``n_plots`` plots (1..4), each with its own axes; new plots get default axes."""
        if not 1 <= int(n_plots) <= MAX_PLOTS:
            raise CD7FlowError(f"a layout has 1 to {MAX_PLOTS} plots, not {n_plots}")
        while len(self.plots) < n_plots:
            plot = PlotState()
            if self.sample is not None:
                self._default_plot(plot, self.sample, len(self.plots))
            self.plots.append(plot)
        del self.plots[int(n_plots):]
        self.active_plot = min(self.active_plot, len(self.plots) - 1)
        self._trim_cache()
        self.events.view.emit()

    def plot_exists(self, index: int) -> bool:
        return 0 <= index < len(self.plots)

    @property
    def gates_version(self) -> int:
        """Grows with every gate change (views compare it to know what to redraw)."""
        return self._gates_version

    def set_active_plot(self, index: int) -> None:
        if not 0 <= index < len(self.plots):
            raise CD7FlowError(f"no plot number {index} (have {len(self.plots)})")
        if index != self.active_plot:
            self.active_plot = index
            self.events.view.emit()

    def set_axes(self, x: str | None = None, y: str | None = None,
                 x_transform: str | None = None, y_transform: str | None = None, plot: int | None = None) -> None:
        """Choose a plot's channels (by $PnN or marker $PnS, resolved like everywhere else) and
        transforms. A new channel without a transform gets its default (scatter linear,
        fluorescence logicle) and its full scale (the zoom of that axis is reset)."""
        s = self.sample
        if s is None and (x is not None or y is not None):
            raise CD7FlowError("no sample is open")
        p = self._plot(plot)
        x = s.channels[s.channel(x)] if x is not None else None
        y = s.channels[s.channel(y)] if y is not None else None
        for kind in (x_transform, y_transform):
            if kind is not None and kind not in TRANSFORM_KINDS:
                raise CD7FlowError(f"unknown transform {kind!r}; choose one of {TRANSFORM_KINDS}")
        for axis, ch, kind in (("x", x, x_transform), ("y", y, y_transform)):
            old_ch, old_kind = getattr(p, f"{axis}_channel"), getattr(p, f"{axis}_transform")
            if ch is not None and ch != old_ch:
                setattr(p, f"{axis}_channel", ch)
                if kind is None:
                    kind = self._kind_choice.get(ch, default_kind(ch))
                setattr(p, f"{axis}_range", None)
            if kind is not None:
                self._kind_choice[getattr(p, f"{axis}_channel")] = kind
            if kind is not None and kind != old_kind:
                setattr(p, f"{axis}_transform", kind)
                setattr(p, f"{axis}_range", None)
        self._trim_cache()
        self.events.view.emit()

    def set_zoom(self, x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
                 plot: int | None = None) -> None:
        """Set a plot's visible ranges (display units; None = full scale). Density plots re-bin on them."""
        p = self._plot(plot)
        nx = None if x_range is None else (float(x_range[0]), float(x_range[1]))
        ny = None if y_range is None else (float(y_range[0]), float(y_range[1]))
        if (nx, ny) != (p.x_range, p.y_range):
            p.x_range, p.y_range = nx, ny
            self.events.view.emit()

    def show_population(self, path: PopulationPath | None, plot: int | None = None) -> None:
        """Pin a plot to a population (None: it follows the selection)."""
        self._plot(plot).population = None if path is None else tuple(path)
        self.events.view.emit()

    def shown_population(self, plot: int | None = None) -> PopulationPath:
        p = self._plot(plot)
        return self.selected if p.population is None else p.population

    @property
    def can_compensate(self) -> bool:
        return self.sample is not None and self.sample.spillover is not None

    def set_compensated(self, on: bool) -> None:
        if on and not self.can_compensate:
            raise CD7FlowError(f"{self.sample.name if self.sample else 'no sample'} carries no spillover matrix")
        self._comp_chosen = True
        if bool(on) != self.compensated:
            self.compensated = bool(on)
            for p in self.plots:  # another scale: logicle W is re-estimated on the compensated values
                if p.x_transform != "linear":
                    p.x_range = None
                if p.y_transform != "linear":
                    p.y_range = None
        self._trim_cache()
        self.events.view.emit()

    def set_plot_mode(self, mode: str, plot: int | None = None) -> None:
        if mode not in PLOT_MODES:
            raise CD7FlowError(f"unknown plot mode {mode!r}; choose one of {PLOT_MODES}")
        self._plot(plot).mode = mode
        self._trim_cache()
        self.events.view.emit()

    # ---- scales -----------------------------------------------------------
    def dimension(self, axis: str, plot: int | None = None) -> Dimension:
        """The gate dimension a plot's 'x' or 'y' axis shows (channel, compensation, transform)."""
        s = self._need_sample()
        p = self._plot(plot)
        channel, kind = (p.x_channel, p.x_transform) if axis == "x" else (p.y_channel, p.y_transform)
        comp = FCS_COMPENSATION if self.compensated and channel in _spill_channels(s) else None
        tid, _, _ = self._scale(s, channel, comp, kind)
        return Dimension(channel, comp, tid)

    def _scale(self, s: Sample, channel: str, comp: str | None, kind: str) -> tuple[str | None, object, float]:
        """(transform id, transform, T) of one channel as shown; estimated once per sample,
        channel and compensation (the W estimate scans the column once, not per call)."""
        key = (id(s), channel, comp, kind)
        hit = self._scales.get(key)
        if hit is not None:
            return hit
        ck = (id(s), channel)
        if ck not in self._column_max:
            col = s.events[:, s.channels.index(channel)]
            self._column_max[ck] = float(np.nanmax(col)) if col.size else float("nan")
        top = top_of_scale(s, channel, self._column_max[ck])
        if kind == "linear":
            hit = (None, None, top)
        else:
            linear = np.asarray(self.source().channel_values(channel, comp)) if kind == "logicle" else None
            if self._fluorescence_spec is None and kind == "logicle":
                self._fluorescence_spec = _protocol_spec(self._protocol) or {}
            xf = make_display_transform(kind, top, linear, self._fluorescence_spec or None, f"{s.name}: {channel}")
            tid = transform_id(kind, xf)
            self._register_transforms({tid: self._transforms.get(tid, xf)})
            hit = (tid, self._transforms[tid], top)
        self._scales[key] = hit
        return hit

    def _register_transforms(self, transforms: dict) -> None:
        self._transforms.update(transforms)
        for src in self._sources.values():  # a new id invalidates nothing already cached
            src.transforms.update(transforms)

    def axis_transform(self, axis: str, plot: int | None = None):
        """The transform object of a plot axis (None when linear)."""
        dim = self.dimension(axis, plot)
        return self._transforms.get(dim.transform) if dim.transform else None

    def axis_ticks(self, axis: str, plot: int | None = None) -> list[Tick] | None:
        """Ticks of a transformed axis as plain (position, label) pairs: decades in channel units
        at their transformed positions; None (automatic ticks) for a linear axis."""
        dim = self.dimension(axis, plot)
        transform = self._transforms.get(dim.transform) if dim.transform else None
        if transform is None:
            return None
        _, _, top = self._scale(self._need_sample(), dim.channel, dim.compensation, self._kind(axis, plot))
        lo, hi = self.axis_range(axis, plot)
        return decade_ticks(transform, top, lo, hi)

    def _kind(self, axis: str, plot: int | None) -> str:
        p = self._plot(plot)
        return p.x_transform if axis == "x" else p.y_transform

    def full_range(self, axis: str, plot: int | None = None) -> tuple[float, float]:
        """The channel's whole scale in display units (from $PnR; FlowJo-like, the same for every sample)."""
        s = self._need_sample()
        dim = self.dimension(axis, plot)
        kind = self._kind(axis, plot)
        tid, xf, top = self._scale(s, dim.channel, dim.compensation, kind)
        return full_range(kind, xf, top)

    def axis_range(self, axis: str, plot: int | None = None) -> tuple[float, float]:
        """The visible range of a plot axis: the zoom when set, else the full scale."""
        p = self._plot(plot)
        zoom = p.x_range if axis == "x" else p.y_range
        return tuple(zoom) if zoom is not None else self.full_range(axis, plot)

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

    def _reset_sources(self) -> None:
        for src in self._sources.values():  # new compensation/transform tables: recompute
            src.clear_cache()
        self._sources.clear()
        self._scales.clear()
        self._stat_columns = {}
        self._result = self._previous_result = None

    def _trim_cache(self) -> None:
        """Drop the current source's cached columns that neither a plot nor a gate uses."""
        s = self.sample
        src = self._sources.get(id(s)) if s is not None else None
        if src is None or not hasattr(src, "retain"):
            return
        keep = {d for e in self._gates for d in e.gate.dimensions}
        for i, p in enumerate(self.plots):
            if p.x_channel in s.channels and p.y_channel in s.channels:
                keep |= {self.dimension("x", i), self.dimension("y", i)}
        src.retain(keep)

    def values(self, axis: str, plot: int | None = None) -> np.ndarray:
        """All events' values on a plot's 'x' or 'y' axis (display units)."""
        dim = self.dimension(axis, plot)  # first: it may register a new transform with the sources
        return np.asarray(self.source().values(dim))

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

    def display_points(self, plot: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the shown population's events in the display subset."""
        idx = self.display_index()
        idx = idx[self.population_mask(self.shown_population(plot))[idx]]
        return self.values("x", plot)[idx], self.values("y", plot)[idx]

    def density(self, bins: int | None = None, plot: int | None = None
                ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
        """2-D histogram (bins x bins, x first) of every event of the shown population over the
        visible ranges (a zoomed plot is re-binned on its zoom), with those ranges."""
        path = self.shown_population(plot)
        xr, yr = self.axis_range("x", plot), self.axis_range("y", plot)
        x, y = self.values("x", plot), self.values("y", plot)
        if path:
            mask = self.population_mask(path)
            x, y = x[mask], y[mask]
        if bins is None:  # ~sqrt(n) bins per axis: smooth for small files, fine for large ones
            bins = int(np.clip(np.sqrt(self._need_sample().n_events), 64, 256))
        return histogram2d(x, y, bins, xr, yr), xr, yr

    def histogram(self, bins: int = 256, plot: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of the x axis over every event of the shown population, on the visible range."""
        path = self.shown_population(plot)
        x = self.values("x", plot)
        if path:
            x = x[self.population_mask(path)]
        x = x[np.isfinite(x)]
        return np.histogram(x, bins=bins, range=self.axis_range("x", plot))

    # ---- gating results -----------------------------------------------------
    def strategy(self) -> GatingStrategy:
        """The gates plus the transforms/compensations they name, as the CLI's ``gate`` command uses them."""
        return GatingStrategy(self.tree(), dict(self._transforms), dict(self._compensations), dict(self._derived))

    def _changed(self, changed: PopulationPath | None = None) -> None:
        self._previous_result = self._result if changed is not None else None
        self._changed_path = changed
        self._result = None
        self._gates_version += 1
        self._stats_cache.clear()
        self.events.gates_changed.emit()

    def result(self) -> ViewerResult:
        """The gating result of the current sample (recomputed lazily after a change; after one
        gate's edit only that gate's branch is re-evaluated). A gate the sample cannot
        evaluate (e.g. a channel it lacks) blanks its own branch only."""
        if self._result is None:
            prev, changed = self._previous_result, self._changed_path
            tree = self.tree()
            self._result = (seeded_result(tree, self.source(), prev, changed) if prev is not None and changed
                            else ViewerResult(tree, self.source()))
            self._previous_result = None
            for pop in tree.populations():
                self._result.population_mask(pop)
        return self._result

    def _result_for(self, index: int) -> ViewerResult:
        if index == self.current_index:
            return self.result()
        s = self.samples[index]
        result = ViewerResult(self.tree(), self.strategy().source(s))
        for pop in result.tree.populations():
            result.population_mask(pop)
        return result

    def population_mask(self, path: PopulationPath) -> np.ndarray:
        if not path:
            return np.ones(self._need_sample().n_events, dtype=bool)
        return self.result().mask(path)

    def population_count(self, path: PopulationPath) -> tuple[int | None, float]:
        """(events, percent of parent) of a population of the current sample; (None, nan) when
        the sample cannot evaluate it."""
        r = self.result()
        path = tuple(path)
        if path and r.is_blank(path):
            return None, float("nan")
        return r.count(path), (100.0 if not path else r.percent_of_parent(path))

    def populations(self) -> list[PopulationRow]:
        """The root (all events) and every population in tree order, with live counts."""
        s = self.sample
        if s is None:
            return []
        rows = [PopulationRow(ROOT, 0, s.n_events, 100.0, 100.0, None)]
        result = self.result()
        entries = {e.path: e for e in self._gates}
        for pop in result.tree.populations():
            gate_path = pop.parent_path + (pop.gate.id,)
            e = entries.get(gate_path)
            automated = bool(e and e.automated)
            adjusted = bool(e and e.automated and e.fitted is not None and e.gate is not e.fitted)
            if result.is_blank(pop.path):
                rows.append(PopulationRow(pop.path, len(pop.path), None, float("nan"), float("nan"), pop.gate,
                                          automated, adjusted, result.blank_reason(pop.path)))
                continue
            rows.append(PopulationRow(
                pop.path, len(pop.path), result.count(pop.path),
                result.percent_of_parent(pop.path), result.percent_of_total(pop.path), pop.gate, automated, adjusted,
            ))
        return rows

    def select(self, path: PopulationPath) -> None:
        path = tuple(path)
        if path:
            self.result().tree.find(path)  # raises GatingError for an unknown path
        self.selected = path
        self.events.selection.emit()

    # ---- overlays -----------------------------------------------------------
    def plot_space(self, plot: int | None = None) -> PlotSpace:
        self._need_sample()  # raises without a sample
        p = self._plot(plot)
        axes = ("x",) if p.mode == "histogram" else ("x", "y")
        return PlotSpace({a: self.dimension(a, plot) for a in axes}, self._transforms, self._channel_index,
                         self._effective_comp, frozenset(self._derived))

    def _channel_index(self, name: str) -> int | None:
        try:
            return self._need_sample().channel(name)
        except (CD7FlowError, LookupError, ValueError):
            return None

    def gate_overlays(self, plot: int | None = None) -> tuple[list[GateOverlay], list[str]]:
        """What a plot draws for the gates, and why the others are not drawn.

        Returns (overlays, reasons). A gate is drawn when each of its dimensions is a
        channel the plot shows; on another scale it is re-projected and on other
        compensation marked (:mod:`.overlays`). Boolean gates have no geometry."""
        if self.sample is None:
            return [], []
        p = self._plot(plot)
        axes = ("x",) if p.mode == "histogram" else ("x", "y")
        return compute_overlays(self._gates, self.plot_space(plot), axes)

    def overlay(self, path: PopulationPath, plot: int | None = None) -> GateOverlay:
        for ov in self.gate_overlays(plot)[0]:
            if ov.path == tuple(path):
                return ov
        raise GatingError(f"{path_str(tuple(path))} is not drawn on this plot")

    def gates_on_axes(self, plot: int | None = None) -> list[tuple[PopulationPath, object]]:
        """Rectangle/polygon/range gates drawn in a plot's current space, with their paths."""
        return [(o.path, o.gate) for o in self.gate_overlays(plot)[0] if o.kind == "roi"]

    def _effective_comp(self, comp: str | None, col: int) -> str | None:
        if is_uncompensated(comp):
            return None
        if comp == FCS_COMPENSATION:
            s = self._need_sample()
            covered = {s.channel(c) for c in _spill_channels(s)}
            return FCS_COMPENSATION if col in covered else None
        return comp

    def preview(self, path: PopulationPath, new_gate) -> ViewerResult:
        """A result with the gate at ``path`` swapped for ``new_gate``, nothing committed. Cheap to
        build (it reuses the current masks outside the branch); evaluate it off the UI thread."""
        i = self._entry_index(tuple(path))
        entries = list(self._gates)
        e = entries[i]
        entries[i] = GateEntry(new_gate, e.parent, e.automated, e.source, e.fitted)
        from gating.tree import GatingTree

        tree = GatingTree()
        for entry in entries:
            tree.add(entry.gate, entry.parent or None)
        return seeded_result(tree, self.source(), self.result(), tuple(path))

    # ---- view state -------------------------------------------------------
    def view_state(self) -> dict:
        """JSON-able view: plots (axes, transforms, mode, zoom, pinned population), the active
        plot, compensation, the selection and the current sample's path."""
        s = self.sample
        return {
            "plots": [p.to_json() for p in self.plots],
            "active_plot": self.active_plot,
            "compensated": self.compensated,
            "selected": list(self.selected),
            "current": (s.path if s is not None and s.path else None),
        }

    def restore_view_state(self, state: dict) -> None:
        """Restore :meth:`view_state` (the samples must already be open; unknown channels are
        replaced by defaults, compensation stays off for a sample without a matrix)."""
        current = state.get("current")
        if current:
            for i, s in enumerate(self.samples):
                if s.path and str(s.path) == str(current) and i != self.current_index:
                    self.set_current(i)
                    break
        plots = [PlotState.from_json(d) for d in state.get("plots", [])][:MAX_PLOTS] or [PlotState()]
        s = self.sample
        if s is not None:
            for i, p in enumerate(plots):
                if p.x_channel not in s.channels or p.y_channel not in s.channels:
                    self._default_plot(p, s, i)
        self.plots = plots
        self.active_plot = min(int(state.get("active_plot", 0)), len(plots) - 1)
        if "compensated" in state:
            self._comp_chosen = True
            self.compensated = bool(state["compensated"]) and self.can_compensate
        selected = tuple(state.get("selected") or ())
        try:
            if selected:
                self.result().tree.find(selected)
            self.selected = selected
        except (CD7FlowError, LookupError):
            self.selected = ROOT
        self._trim_cache()
        self.events.view.emit()
        self.events.selection.emit()


def _spill_channels(sample: Sample) -> set[str]:
    return set(sample.spillover.channels) if sample.spillover is not None else set()


def _protocol_spec(protocol) -> dict | None:
    """The protocol's fluorescence transform spec (the shipped screening protocol's by default)."""
    if protocol is None:
        try:
            from ..protocol import load_protocol

            protocol = load_protocol("screening")
        except CD7FlowError:
            return None
    spec = protocol.section("transforms").get("fluorescence")
    return dict(spec) if spec and spec.get("kind") == "logicle" else None
