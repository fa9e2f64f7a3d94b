"""Gate editing on the model: add, reshape, rename, remove, fitted trees, undo/redo.

Every change goes through :meth:`GateEditing._commit`, which swaps the immutable
gate tuple, records the step in the undo history and, when an automated gate's
geometry changes, appends who/when/old/new to the manual-adjustment log.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np

from gating.gates import Divider, EllipsoidGate, Gate, PolygonGate, Quadrant, QuadrantGate, RectangleGate
from gating.tree import GatingTree

from ..errors import GatingError
from .history import GateEntry, Gates, edit_record
from .state import PopulationPath, path_str


class GateEditing:
    """Mixin of :class:`~cd7flow.viewer.ViewerModel` (uses its ``_gates``, ``history``, events)."""

    # ---- looking up -------------------------------------------------------
    @property
    def n_gates(self) -> int:
        return len(self._gates)

    def tree(self) -> GatingTree:
        tree = GatingTree()
        for e in self._gates:
            tree.add(e.gate, e.parent or None)
        return tree

    def _entry_index(self, path: PopulationPath) -> int:
        path = tuple(path)
        for i, e in enumerate(self._gates):
            if e.path == path:
                return i
        raise GatingError(f"no gate at {path_str(path)}")

    def gate_at(self, path: PopulationPath) -> Gate:
        """The gate that makes the population at ``path`` (a tuple of names from the root)."""
        return self._gates[self._entry_index(path)].gate

    def entry_at(self, path: PopulationPath) -> GateEntry:
        return self._gates[self._entry_index(path)]

    def is_automated(self, path: PopulationPath) -> bool:
        return self.entry_at(path).automated

    def is_manually_adjusted(self, path: PopulationPath) -> bool:
        """True when an automated gate's geometry differs from the fitted one (a dragged gate
        dragged back by undo is no longer adjusted)."""
        e = self.entry_at(path)
        return e.automated and e.fitted is not None and e.gate is not e.fitted

    @property
    def edit_log(self) -> list[dict]:
        """Manual changes to automated gates, oldest first: {who, when (UTC ISO), action, path, old, new}."""
        return list(self._edit_log)

    # ---- the one way to change gates ------------------------------------
    def _commit(self, label: str, after: Gates, *, changed: PopulationPath | None = None) -> None:
        before = self._gates
        if before == after:
            return
        _check_tree(after)
        self._set_gates(after, changed)
        self.history.record(label, before, after)
        self._log_adjustments(before, after, "edit")
        self.dirty = True
        self.events.history.emit()

    def _set_gates(self, gates: Gates, changed: PopulationPath | None = None) -> None:
        self._gates = tuple(gates)
        paths = {e.path for e in self._gates} | {e.parent + (q.id,) for e in self._gates
                                                  if isinstance(e.gate, QuadrantGate) for q in e.gate.quadrants}
        if self.selected and self.selected not in paths:
            self.selected = ()
            self.events.selection.emit()
        for plot in self.plots:
            if plot.population and plot.population not in paths:
                plot.population = None
        self._changed(changed)

    def _log_adjustments(self, before: Gates, after: Gates, action: str) -> None:
        old = {id(e.fitted): e for e in before if e.automated and e.fitted is not None}
        for e in after:
            prev = old.get(id(e.fitted)) if e.automated and e.fitted is not None else None
            if prev is not None and prev.gate is not e.gate:
                self._edit_log.append(edit_record(e.path, prev.gate, e.gate, action))

    def undo(self) -> bool:
        """Undo the last gate change (Ctrl+Z); False when there is nothing to undo."""
        step = self.history.undo()
        if step is None:
            return False
        self._set_gates(step.before)
        self._log_adjustments(step.after, step.before, "undo")
        self.dirty = True
        self.events.history.emit()
        return True

    def redo(self) -> bool:
        """Re-apply the last undone change (Ctrl+Shift+Z); False when there is nothing to redo."""
        step = self.history.redo()
        if step is None:
            return False
        self._set_gates(step.after)
        self._log_adjustments(step.before, step.after, "redo")
        self.dirty = True
        self.events.history.emit()
        return True

    # ---- adding -------------------------------------------------------------
    def _new_name(self, prefix: str) -> str:
        taken = {e.gate.id for e in self._gates}
        while True:
            self._gate_counter += 1
            name = f"{prefix} {self._gate_counter}"
            if name not in taken:
                return name

    def add_gate(self, gate: Gate, parent: PopulationPath | None = None) -> PopulationPath:
        """Add a gate under ``parent`` (default: the selected population); returns its path."""
        parent = self.selected if parent is None else tuple(parent)
        self._commit(f"Add {gate.id}", self._gates + (GateEntry(gate, parent),))
        return parent + (gate.id,)

    def add_rectangle_gate(self, x_min: float, x_max: float, y_min: float | None = None,
                           y_max: float | None = None, name: str | None = None,
                           parent: PopulationPath | None = None, plot: int | None = None) -> PopulationPath:
        """A rectangle on a plot's axes (display units); without y bounds, a range on x.

        The parent defaults to the population the plot shows."""
        dx = self.dimension("x", plot)
        if y_min is None and y_max is None:
            gate = RectangleGate(name or self._new_name("Range"), [dx], [x_min], [x_max])
        else:
            gate = RectangleGate(name or self._new_name("Rectangle"), [dx, self.dimension("y", plot)],
                                 [x_min, y_min], [x_max, y_max])
        return self.add_gate(gate, self._draw_parent(parent, plot))

    def add_polygon_gate(self, vertices, name: str | None = None, parent: PopulationPath | None = None,
                         plot: int | None = None) -> PopulationPath:
        gate = PolygonGate(name or self._new_name("Polygon"),
                           [self.dimension("x", plot), self.dimension("y", plot)], vertices)
        return self.add_gate(gate, self._draw_parent(parent, plot))

    def add_ellipse_gate(self, center: Sequence[float], half_axes: Sequence[float], name: str | None = None,
                         parent: PopulationPath | None = None, plot: int | None = None) -> PopulationPath:
        """An axis-aligned ellipse (display units): centre (x, y), half-widths (a, b)."""
        a, b = (float(v) for v in half_axes)
        if not (a > 0 and b > 0):
            raise GatingError("an ellipse needs a positive width and height")
        gate = EllipsoidGate(name or self._new_name("Ellipse"), [self.dimension("x", plot), self.dimension("y", plot)],
                             np.asarray(center, float), np.diag([a * a, b * b]), 1.0)
        return self.add_gate(gate, self._draw_parent(parent, plot))

    def add_quadrant_gate(self, x: float, y: float, name: str | None = None,
                          parent: PopulationPath | None = None, plot: int | None = None) -> PopulationPath:
        """Quadrants cut at (x, y) (display units); quadrants are named by marker and sign
        ("CD7+ CD3-"), like FlowJo's Q1-Q4 but readable in an export."""
        dx, dy = self.dimension("x", plot), self.dimension("y", plot)
        name = name or self._new_name("Quadrant")
        s = self._need_sample()
        nx, ny = (self._short_label(s, d.channel) for d in (dx, dy))
        # a location is any point inside its quadrant: one unit (or the cut's size) past the divider
        ox, oy = max(1.0, abs(float(x))), max(1.0, abs(float(y)))
        cells = [Quadrant(f"{nx}{sx} {ny}{sy}", {"x": float(x) + px * ox, "y": float(y) + py * oy})
                 for sy, py in (("+", 1), ("-", -1)) for sx, px in (("-", -1), ("+", 1))]
        gate = QuadrantGate(name, [Divider("x", dx, (float(x),)), Divider("y", dy, (float(y),))], cells)
        return self.add_gate(gate, self._draw_parent(parent, plot))

    @staticmethod
    def _short_label(sample, channel: str) -> str:
        i = sample.channel(channel)
        marker = sample.markers[i] if i < len(sample.markers) else ""
        return marker or sample.channels[i]

    def _draw_parent(self, parent: PopulationPath | None, plot: int | None) -> PopulationPath:
        return tuple(parent) if parent is not None else self.shown_population(plot)

    # ---- changing -----------------------------------------------------------
    def replace_gate(self, path: PopulationPath, new_gate: Gate, label: str | None = None) -> None:
        """Swap the gate at ``path`` for an edited one with the same id (e.g. after dragging).

        Goes through the undo history. For an automated gate it also records a manual
        adjustment {who: the login name, when: UTC ISO time, path, old, new geometry} in
        :attr:`edit_log`, and :meth:`is_manually_adjusted` becomes True.
        """
        path = tuple(path)
        i = self._entry_index(path)
        entry = self._gates[i]
        if new_gate.id != entry.gate.id:
            raise GatingError(f"edited gate {new_gate.id!r} must keep the id {entry.gate.id!r}")
        after = list(self._gates)
        after[i] = GateEntry(new_gate, entry.parent, entry.automated, entry.source, entry.fitted)
        self._commit(label or f"Edit {entry.gate.id}", tuple(after), changed=path)

    def edit_gate(self, path: PopulationPath, **geometry) -> None:
        """Reshape a gate in its own coordinates, keeping its id (one undoable step): rectangle/range
        ``mins``/``maxs``, polygon ``vertices``, ellipse ``mean``/``covariance``, quadrant
        ``dividers`` {divider id: values}."""
        self.replace_gate(path, self.edited_gate(path, **geometry))

    def edited_gate(self, path: PopulationPath, *, mins=None, maxs=None, vertices=None, mean=None,
                    covariance=None, dividers: Mapping[str, Sequence[float]] | None = None) -> Gate:
        """The gate at ``path`` reshaped as :meth:`edit_gate` says, without committing it."""
        gate = self.gate_at(path)
        if isinstance(gate, PolygonGate) and vertices is not None:
            new: Gate = PolygonGate(gate.id, gate.dimensions, vertices, include_boundary=gate.include_boundary)
        elif isinstance(gate, RectangleGate) and mins is not None and maxs is not None:
            new = RectangleGate(gate.id, gate.dimensions, mins, maxs)
        elif isinstance(gate, EllipsoidGate) and (mean is not None or covariance is not None):
            new = EllipsoidGate(gate.id, gate.dimensions, gate.mean if mean is None else mean,
                                gate.covariance if covariance is None else covariance, gate.distance_square)
        elif isinstance(gate, QuadrantGate) and dividers:
            moved = [Divider(d.id, d.dimension, tuple(sorted(float(v) for v in dividers.get(d.id, d.values))))
                     for d in gate.dividers]
            if any(len(a.values) != len(b.values) for a, b in zip(moved, gate.dividers)):
                raise GatingError(f"quadrant gate {gate.id!r}: a divider keeps its number of cut points")
            new = QuadrantGate(gate.id, moved, _relocated(gate, moved))
        else:
            raise GatingError(f"gate {gate.id!r} ({type(gate).__name__}) cannot be edited that way")
        return new

    def edit_gate_on_plot(self, path: PopulationPath, plot: int | None = None, **geometry) -> None:
        """:meth:`gate_from_plot`, committed as one undoable step."""
        self.replace_gate(path, self.gate_from_plot(path, plot, **geometry))

    def gate_from_plot(self, path: PopulationPath, plot: int | None = None, *, mins=None, maxs=None,
                       vertices=None, translate=None, scale=None, dividers=None) -> Gate:
        """A reshaped gate (not committed) from geometry in a plot's coordinates (x first), mapped back to the
        gate's own scale when the plot shows the channel on another one.

        rectangle: ``mins``/``maxs`` (x, y); polygon: ``vertices`` (n, 2); ellipse:
        ``translate`` (dx, dy) and/or ``scale`` (sx, sy) of its outline; quadrant:
        ``dividers`` {"x": value, "y": value}.
        """
        ov = self.overlay(path, plot)
        gate = ov.gate
        if isinstance(gate, RectangleGate) and mins is not None:
            lo, hi = dict(zip(("x", "y"), mins)), dict(zip(("x", "y"), maxs))
            new_lo = [None if gate.mins[i] is None and lo[a] is None else float(ov.to_gate[a](np.array([lo[a]]))[0])
                      for i, a in enumerate(ov.axes)]
            new_hi = [None if gate.maxs[i] is None and hi[a] is None else float(ov.to_gate[a](np.array([hi[a]]))[0])
                      for i, a in enumerate(ov.axes)]
            return self.edited_gate(path, mins=new_lo, maxs=new_hi)
        elif isinstance(gate, PolygonGate) and vertices is not None:
            v = np.asarray(vertices, float)
            cols = {"x": ov.to_gate["x"](v[:, 0]), "y": ov.to_gate["y"](v[:, 1])}
            return self.edited_gate(path, vertices=np.column_stack([cols[a] for a in ov.axes]))
        elif isinstance(gate, EllipsoidGate) and (translate is not None or scale is not None):
            if not ov.exact:
                raise GatingError(f"{gate.id}: shown re-projected ({ov.note}); show its own scale to edit it")
            order = [ov.axes.index("x"), ov.axes.index("y")]
            sx, sy = scale if scale is not None else (1.0, 1.0)
            dx, dy = translate if translate is not None else (0.0, 0.0)
            back = np.argsort(order)
            mean_xy = np.asarray(gate.mean, float)[order] + [dx, dy]
            s = np.diag([sx, sy])
            cov_xy = s @ np.asarray(gate.covariance, float)[np.ix_(order, order)] @ s
            return self.edited_gate(path, mean=mean_xy[back], covariance=cov_xy[np.ix_(back, back)])
        elif isinstance(gate, QuadrantGate) and dividers:
            by_axis = {ov.axes[i]: d.id for i, d in enumerate(gate.dividers)}
            return self.edited_gate(path, dividers={by_axis[a]: [float(ov.to_gate[a](np.array([v]))[0])]
                                                    for a, v in dividers.items() if a in by_axis})
        raise GatingError(f"gate {gate.id!r} ({type(gate).__name__}) cannot be edited that way")

    def rename_gate(self, path: PopulationPath, new_name: str) -> PopulationPath:
        """Rename a population (a gate, or one quadrant of a quadrant gate); children follow.

        Returns the new path. Names must be non-empty, without "/", unique among siblings."""
        path = tuple(path)
        new_name = str(new_name).strip()
        if not new_name or "/" in new_name:
            raise GatingError(f"{new_name!r} is not a population name (non-empty, no '/')")
        if new_name == path[-1]:
            return path
        new_path = path[:-1] + (new_name,)
        after: list[GateEntry] = []
        found = False
        for e in self._gates:
            gate, parent = e.gate, e.parent
            if e.path == path:
                gate = _renamed(gate, new_name)
                found = True
            elif isinstance(gate, QuadrantGate) and parent == path[:-1] and path[-1] in gate.quadrant_ids:
                gate = QuadrantGate(gate.id, gate.dividers, [Quadrant(new_name if q.id == path[-1] else q.id,
                                                                      q.positions) for q in gate.quadrants])
                found = True
            if parent[: len(path)] == path:
                parent = new_path + parent[len(path):]
            fitted = e.fitted if gate is e.gate else (_renamed(e.fitted, new_name) if e.fitted is not None else None)
            after.append(GateEntry(gate, parent, e.automated, e.source, gate if e.fitted is e.gate else fitted))
        if not found:
            raise GatingError(f"no population at {path_str(path)}")
        self._commit(f"Rename {path[-1]} to {new_name}", tuple(after))
        if self.selected[: len(path)] == path:
            self.selected = new_path + self.selected[len(path):]
            self.events.selection.emit()
        return new_path

    def remove_population(self, path: PopulationPath) -> None:
        """Remove a gate and every population under it."""
        path = tuple(path)
        self.gate_at(path)
        self._commit(f"Remove {path[-1]}", tuple(e for e in self._gates if e.path[: len(path)] != path))

    def clear_gates(self) -> None:
        self._commit("Clear all gates", ())

    def set_tree(self, tree: GatingTree, *, automated: bool, source: str,
                 transforms: Mapping[str, object] | None = None,
                 compensations: Mapping[str, object] | None = None) -> None:
        """Replace the gates with a fitted (or loaded) tree, as one undoable step.

        ``automated``: the gates were fitted by a protocol (``source`` names it, e.g.
        "screening 1.4"); a later drag of one of them is a manual adjustment (see
        :meth:`replace_gate`). ``transforms`` / ``compensations``: what the tree's
        dimensions name (e.g. the protocol's logicle per channel), by id. The gates are
        shared by the open samples until the next ``set_tree`` (the auto-gate panel calls it
        again for another sample).
        """
        if transforms:
            self._register_transforms(dict(transforms))
        if compensations:
            self._compensations.update(compensations)
            self._reset_sources()
        entries: list[GateEntry] = []
        seen: set[int] = set()
        for pop in tree.populations():
            if id(pop.gate) in seen:
                continue  # a quadrant gate is added once and yields all its quadrants
            seen.add(id(pop.gate))
            entries.append(GateEntry(pop.gate, pop.parent_path, bool(automated), str(source),
                                     pop.gate if automated else None))
        self._commit(f"{'Auto-gate' if automated else 'Load gates'} ({source})", tuple(entries))

    def restore_gates(self, entries: Sequence[GateEntry], *, transforms: Mapping[str, object] | None = None,
                      compensations: Mapping[str, object] | None = None, edit_log: Sequence[dict] = ()) -> None:
        """[autogate] Put back a saved gate list (a session): automated flags and fitted geometry as
        saved, the adjustment log replaced, no undo step, nothing unsaved."""
        if transforms:
            self._register_transforms(dict(transforms))
        if compensations:
            self._compensations.update(compensations)
            self._reset_sources()
        _check_tree(tuple(entries))
        self.history.clear()
        self._edit_log = [dict(e) for e in edit_log]
        self._set_gates(tuple(entries))
        self.dirty = False
        self.events.history.emit()


def _relocated(gate: QuadrantGate, moved: Sequence[Divider]) -> list[Quadrant]:
    """The quadrants of ``gate`` with each location moved into the same interval of the moved
    dividers (a location is a point inside its quadrant; a divider dragged past it must not
    move the quadrant to the other side)."""
    new_by_id = {d.id: np.asarray(d.values) for d in moved}
    out = []
    for q in gate.quadrants:
        positions = {}
        for ref, location in q.positions.items():
            old = np.asarray(gate._divider_by_id[ref].values)
            k = int(np.searchsorted(old, float(location), side="right"))  # the interval it is in
            cuts = new_by_id[ref]
            if k == 0:
                positions[ref] = float(cuts[0] - max(1.0, abs(cuts[0])))
            elif k == len(cuts):
                positions[ref] = float(cuts[-1] + max(1.0, abs(cuts[-1])))
            else:
                positions[ref] = float((cuts[k - 1] + cuts[k]) / 2)
        out.append(Quadrant(q.id, positions))
    return out


def _renamed(gate: Gate, name: str) -> Gate:
    new = copy.copy(gate)
    new.id = name
    return new


def _check_tree(entries: Gates) -> None:
    """Raise GatingError when the entries do not make a valid tree (duplicate path, missing parent)."""
    tree = GatingTree()
    for e in entries:
        tree.add(e.gate, e.parent or None)

