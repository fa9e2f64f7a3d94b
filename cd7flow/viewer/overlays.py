"""Gate overlays: where each gate of the tree lies on a plot, in the plot's coordinates.

A gate is drawn on a plot when each of its dimensions is a channel the plot shows.
When the gate was defined on another scale of that channel (another logicle W,
linear vs logicle) its geometry is re-projected through the two transforms
(channel units in between: exact for rectangles, ranges and quadrant dividers; a
polygon's vertices are mapped, its edges stay straight on the plot). When the gate
was defined on compensated values and the plot is not (or the reverse) it is still
drawn, re-projected, with ``note`` saying so: the plot view marks such outlines.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gating.dimensions import Dimension, is_uncompensated
from gating.gates import BooleanGate, EllipsoidGate, Gate, PolygonGate, QuadrantGate, RectangleGate

PopulationPath = tuple[str, ...]
Mapper = Callable[[np.ndarray], np.ndarray]


def _identity(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=float)


@dataclass(frozen=True)
class GateOverlay:
    """One gate as a plot draws it (plot coordinates).

    kind "roi": a rectangle/range/polygon gate. kind "ellipse": ``outline`` is a closed
    (n, 2) x/y polyline on the ellipse. kind "quadrant": ``lines`` are ("x" | "y", value)
    dividers, ``cells`` are (population path, (x_lo, x_hi), (y_lo, y_hi)) with +-inf for
    open sides. ``axes`` lists the plot axis of each gate dimension; ``to_plot`` /
    ``to_gate`` map values of each axis between the gate's scale and the plot's.
    ``note`` is empty when the plot shows the gate's own scale, else says how it differs.
    """

    kind: str
    path: PopulationPath
    gate: Gate
    outline: np.ndarray | None = None
    lines: tuple[tuple[str, float], ...] = ()
    cells: tuple[tuple[PopulationPath, tuple[float, float], tuple[float, float]], ...] = ()
    axes: tuple[str, ...] = ()
    note: str = ""
    to_plot: dict = field(default_factory=dict, compare=False)
    to_gate: dict = field(default_factory=dict, compare=False)

    @property
    def exact(self) -> bool:
        return not self.note

    def plot_vertices(self) -> np.ndarray:
        """A polygon's vertices in plot coordinates (x, y columns)."""
        v = np.asarray(self.gate.vertices, dtype=float)
        cols = {a: self.to_plot[a](v[:, i]) for i, a in enumerate(self.axes)}
        return np.column_stack([cols["x"], cols["y"]])

    def plot_bounds(self) -> tuple[list[float | None], list[float | None]]:
        """A rectangle's (mins, maxs) in plot coordinates, x first (None = open)."""
        mins: dict[str, float | None] = {}
        maxs: dict[str, float | None] = {}
        for i, a in enumerate(self.axes):
            lo, hi = self.gate.mins[i], self.gate.maxs[i]
            mins[a] = None if lo is None else float(self.to_plot[a](np.array([lo]))[0])
            maxs[a] = None if hi is None else float(self.to_plot[a](np.array([hi]))[0])
        order = [a for a in ("x", "y") if a in mins]
        return [mins[a] for a in order], [maxs[a] for a in order]


@dataclass(frozen=True)
class PlotSpace:
    """What one plot shows: the Dimension per axis and how to reach channel units."""

    dims: dict  # "x"/"y" -> Dimension
    transforms: dict  # transform id -> transform object
    channel_index: Callable[[str], int | None]  # channel name -> column (None: the sample lacks it)
    effective_comp: Callable[[str | None, int], str | None]
    derived: frozenset = frozenset()

    def mapper(self, gate_dim: Dimension, axis: str) -> tuple[Mapper, Mapper, bool]:
        """(gate -> plot, plot -> gate, same scale) for one dimension shown on ``axis``."""
        shown = self.dims[axis]
        ga, pa = gate_dim.transform, shown.transform
        tg = self.transforms.get(ga) if ga else None
        tp = self.transforms.get(pa) if pa else None
        if ga == pa or (tg is not None and tp is not None and type(tg) is type(tp)
                        and hasattr(tg, "params") and tg.params() == tp.params()):
            return _identity, _identity, True

        def to_plot(v, tg=tg, tp=tp):
            lin = np.asarray(v, float) if tg is None else np.asarray(tg.inverse(np.asarray(v, float)), float)
            return lin if tp is None else np.asarray(tp.apply(lin), float)

        def to_gate(v, tg=tg, tp=tp):
            lin = np.asarray(v, float) if tp is None else np.asarray(tp.inverse(np.asarray(v, float)), float)
            return lin if tg is None else np.asarray(tg.apply(lin), float)

        return to_plot, to_gate, False


def compute_overlays(entries: Sequence, space: PlotSpace, axes: Sequence[str]) -> tuple[list[GateOverlay], list[str]]:
    """Overlays of ``entries`` (objects with .gate and .parent) on a plot, and "gate: reason" for the others."""
    overlays: list[GateOverlay] = []
    reasons: list[str] = []
    for entry in entries:
        gate, parent = entry.gate, entry.parent
        if isinstance(gate, BooleanGate):
            continue
        where: list[str] = []
        to_plot: dict[str, Mapper] = {}
        to_gate: dict[str, Mapper] = {}
        notes: list[str] = []
        why = None
        for d in gate.dimensions:
            axis, why, note = _axis_for(d, space, axes)
            if axis is None:
                break
            if axis in where:
                why = "two of its dimensions are one plot axis"
                break
            where.append(axis)
            fwd, back, same = space.mapper(d, axis)
            to_plot[axis], to_gate[axis] = fwd, back
            if note:
                notes.append(note)
            elif not same:
                notes.append(f"{d.channel} re-projected from {d.transform or 'linear'}")
        if why is None and isinstance(gate, (RectangleGate, PolygonGate)) and tuple(where) != tuple(axes):
            if len(where) != len(axes):
                why = f"a {len(where)}-D gate on a {len(axes)}-D plot" + (" (use histogram mode)" if len(where) == 1 else "")
            elif isinstance(gate, RectangleGate):
                where = list(where)  # a rectangle is symmetric: x/y swapped is still drawable
            else:
                why = None  # polygon vertices are re-ordered below
        if why is None and isinstance(gate, EllipsoidGate):
            why = _ellipse_problem(gate, axes)
        if why is not None:
            reasons.append(f"{gate.id}: {why}")
            continue
        path = parent + (gate.id,)
        common = dict(axes=tuple(where), note="; ".join(notes), to_plot=to_plot, to_gate=to_gate)
        if isinstance(gate, QuadrantGate):
            overlays.append(_quadrant_overlay(gate, parent, dict(zip((d.id for d in gate.dividers), where)), common))
        elif isinstance(gate, EllipsoidGate):
            order = [where.index("x"), where.index("y")]  # the gate may list y first
            outline = ellipse_outline(gate.mean[order], gate.inverse_covariance[np.ix_(order, order)],
                                      gate.distance_square)
            outline = np.column_stack([to_plot["x"](outline[:, 0]), to_plot["y"](outline[:, 1])])
            overlays.append(GateOverlay("ellipse", path, gate, outline=outline, **common))
        else:
            overlays.append(GateOverlay("roi", path, gate, **common))
    return overlays, reasons


def _axis_for(dim: Dimension, space: PlotSpace, axes: Sequence[str]) -> tuple[str | None, str | None, str]:
    """(plot axis showing ``dim``, reason when none does, note when shown with another compensation)."""
    col = space.channel_index(dim.channel)
    if col is None:
        if dim.channel in space.derived:
            return None, f"on the ratio {dim.channel}, which the plot cannot show", ""
        return None, f"on {dim.channel}, which this sample does not have", ""
    for axis in axes:
        shown = space.dims[axis]
        if space.channel_index(shown.channel) != col:
            continue
        note = ""
        if space.effective_comp(dim.compensation, col) != space.effective_comp(shown.compensation, col):
            note = (f"{shown.channel} is {_comp_words(dim.compensation)} in the gate but "
                    f"{_comp_words(shown.compensation)} on the plot")
        return axis, None, note
    return None, f"on {dim.channel}, not plotted", ""


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


def _quadrant_overlay(gate: QuadrantGate, parent: PopulationPath, axis_of: dict[str, str], common: dict) -> GateOverlay:
    fwd = common["to_plot"]

    def mapped(axis: str, v: float) -> float:
        return v if not math.isfinite(v) else float(fwd[axis](np.array([v]))[0])

    lines = tuple((axis_of[d.id], mapped(axis_of[d.id], float(v))) for d in gate.dividers for v in d.values)
    cells = []
    for q in gate.quadrants:
        box = {"x": [-math.inf, math.inf], "y": [-math.inf, math.inf]}
        for ref, location in q.positions.items():
            d = next(dv for dv in gate.dividers if dv.id == ref)
            k = int(np.searchsorted(np.asarray(d.values), float(location), side="right"))
            lo = d.values[k - 1] if k > 0 else -math.inf
            hi = d.values[k] if k < len(d.values) else math.inf
            a = axis_of[ref]
            b = box[a]
            b[0], b[1] = max(b[0], mapped(a, lo)), min(b[1], mapped(a, hi))
        cells.append((parent + (q.id,), tuple(box["x"]), tuple(box["y"])))
    return GateOverlay("quadrant", parent + (gate.id,), gate, lines=lines, cells=tuple(cells), **common)


def _comp_words(comp: str | None) -> str:
    return "uncompensated" if is_uncompensated(comp) else f"compensated ({comp})"
