"""BD FACSDiva experiment XML export (root ``<bdfacs>``) -> our gating tree.

``read_diva_xml(path) -> DivaWorkspace``: one :class:`DivaTube` per ``<tube>`` (a
:class:`~cd7flow.io.workspace.WorkspaceSample`, so ``cd7flow gate`` and everything that
takes a FlowJo workspace sample takes a tube), grouped by ``<specimen>``. Each tube
carries its gates as a :class:`~cd7flow.strategy.GatingStrategy`, the event counts
DiVa stored (``flowjo_counts``, by population path) and the per-gate means DiVa
stored (``stored_means``). :func:`manual_gate_masks` gives one boolean mask per gate.

How DiVa stores things (DiVa 6.1 export; coordinate conventions as read by CytoML's
``diva2GatingSet.R``, checked here against DiVa's stored counts and means):

* ``tube/gates/gate``: ``fullname`` is the path (``All Events\\P1\\P2``), ``type`` the
  kind: ``EventSource_Classifier`` = all events (the root); ``Region_Classifier``,
  ``SnapTo_Classifier`` and ``SnapTo_Interval_Classifier`` = a ``<region>`` (snap-to
  gates store the region they snapped to); ``RestOf_Classifier`` = the parent minus
  its ``<input>`` populations (minus all sibling regions if it names none);
  ``Composite_Classifier`` (``BINNER_REGION``) only groups quadrant polygons, which
  are stored as ordinary polygons, so it is not a population. A ``/`` in a gate name
  becomes ``|`` (our paths use ``/``).
* Regions: ``RECTANGLE_REGION`` (4 corners), ``POLYGON_REGION`` (vertices),
  ``INTERVAL_REGION`` (x only, 2 points; y is the histogram height, ignored).
* Coordinates, per axis, by the gate's ``is_<ax>_parameter_log`` / ``_scaled`` flags:
  scaled log = display channel 0..4096 of a biexponential axis: logicle with
  T = 262144, M = 4.5, A = 0, W = (M - log10(T / r)) / 2 (0 if negative), r = the
  gate's ``<ax>_parameter_scale_value`` (plain log, T and M as above, when r = 0);
  unscaled log = log10 of the data value on a log axis of ``log_decades`` decades
  below T (5 decades: the axis starts at 2.62); scaled linear = channel / 4096 * T;
  unscaled linear = data units. Log axes are evaluated as fractions of the axis
  (0..1): data beyond an axis end are drawn on it by DiVa, so values are clipped to
  [0, 1] and a vertex within 1.5 channels of an axis end is moved one channel
  beyond it, which keeps those piled-up events inside gates drawn to the edge.
  Polygons are evaluated on that scale, where their edges are straight.
* Compensation: each compensated ``instrument_settings/parameter`` lists its
  ``compensation_coefficient`` s: column j of the *compensation* matrix (the inverse
  of the spillover matrix), i.e. compensated_j = sum_i raw_i * c_i. Its inverse
  transposed is the spillover matrix (for 124500.fcs it equals the FCS SPILL keyword
  within 3e-5, the rounding of the 8 stored digits). It is used for the tube's
  fluorescence parameters when ``compensation_enabled`` is true (``compensation=
  "fcs"`` uses the FCS file's SPILL instead, ``"none"`` none).
* ``statistics_calculations/calculation_schedule`` (``gate``, ``parameter``) with a
  ``calculation formula="Mean"`` = DiVa's mean of that parameter in that population.

DiVa's counts were made by DiVa on its own display (gates drawn on a 4096-channel
raster), so events within about one channel of a sloped polygon edge can be counted
differently from the exact geometry used here. Measured on PE_2.xml tube _001
(124500.fcs): every population within 0.5 % of DiVa's stored count (P1 -32 of 17,902,
P4 -5 of 1,160), per-gate means within 0.16 %; the shortfall comes from the two
scatter-width rectangles, which DiVa evaluates about 0.9 % further out in width than
their stored coordinates (see tests/test_diva.py). The XML is parsed with defusedxml.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from gating.dimensions import FCS_COMPENSATION, Dimension
from gating.gates import BooleanGate, Gate, GateReference, PolygonGate, RectangleGate

from ..compensation import SpilloverMatrix
from ..errors import CD7FlowError, GatingError, TransformError, WorkspaceError
from ..strategy import GatingStrategy
from ..transforms import BoundedTransform, FlowJoLogTransform, LogicleTransform, Transform
from .workspace import Workspace, WorkspaceSample, population_count
from .xml_safe import child as _kid
from .xml_safe import child_text as _text
from .xml_safe import children as _kids
from .xml_safe import finite_number, local_name, parse_xml

__all__ = ["read_diva_xml", "manual_gate_masks", "DivaWorkspace", "DivaTube", "DIVA_T", "DIVA_M"]

DIVA_T = 262144.0
"""Top of DiVa's scales (data units, 18-bit)."""
DIVA_M = 4.5
"""Decades of DiVa's biexponential display."""
CHANNELS = 4096.0
"""Display channels of a scaled axis."""
EDGE = 1.5 / CHANNELS
"""A vertex this close (fraction of the axis) to an axis end is on the end."""
COMPENSATION_ID = "DiVa"
ROOT_TYPE = "EventSource_Classifier"
REGION_TYPES = ("Region_Classifier", "SnapTo_Classifier", "SnapTo_Interval_Classifier")


@dataclass
class DivaTube(WorkspaceSample):
    """One DiVa tube: a workspace sample plus DiVa's specimen/tube names and stored means.

    stored_means : (population path, parameter $PnN) -> mean DiVa stored (data units,
        compensated for fluorescence parameters); path () is all events.
    """

    specimen: str = ""
    tube: str = ""
    stored_means: dict[tuple[tuple[str, ...], str], float] = field(default_factory=dict)


class DivaWorkspace(Workspace):
    """A DiVa experiment: tubes by FCS file name (``samples``), specimens as ``groups``."""

    def sample(self, name: str) -> WorkspaceSample:
        """A tube by FCS file name, tube name (``_001``) or ``specimen/tube``."""
        hits = [t for t in self.samples.values()
                if name in (t.tube, f"{t.specimen}/{t.tube}")]  # type: ignore[attr-defined]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise WorkspaceError(self.path, f"tube name {name!r} is used in several specimens; "
                                            "name it as 'specimen/tube' or by its FCS file")
        return super().sample(name)


@dataclass
class _Axis:
    """A gate axis: its dimension, and coordinate -> scale value (and whether scale values are clipped)."""

    dimension: Dimension
    transform: Transform | None
    coordinate_to_scale: float | None  # None: coordinates are in data units; else scale = (c - offset) * k
    offset: float = 0.0

    def scale(self, coords: np.ndarray) -> np.ndarray:
        c = np.asarray(coords, dtype=np.float64)
        if self.coordinate_to_scale is None:
            return c
        f = (c - self.offset) * self.coordinate_to_scale
        # on a clipped log axis the ends hold every event beyond them: a vertex on an end goes past it
        f = np.where(f <= EDGE, np.minimum(f, -1.0 / CHANNELS), f)
        return np.where(f >= 1.0 - EDGE, np.maximum(f, 1.0 + 1.0 / CHANNELS), f)

    def at_end(self, scale_value: float) -> bool:
        return self.coordinate_to_scale is not None and not (0.0 < scale_value < 1.0)


class _Reader:
    def __init__(self, path: str, root: ET.Element, compensation: str):
        self.path = path
        self.root = root
        if compensation not in ("diva", "fcs", "none"):
            raise ValueError(f"compensation must be 'diva', 'fcs' or 'none', got {compensation!r}")
        self.compensation = compensation

    def fail(self, problem: str) -> WorkspaceError:
        return WorkspaceError(self.path, problem)

    def number(self, raw: str | None, what: str) -> float:
        return finite_number(raw, what, self.fail)

    def workspace(self) -> DivaWorkspace:
        experiment = _kid(self.root, "experiment")
        if experiment is None:
            raise self.fail("no <experiment> under <bdfacs> (not a FACSDiva experiment export)")
        decades = self.number(_text(experiment, "log_decades") or "5", "experiment log_decades")
        if decades <= 0:
            raise self.fail(f"experiment log_decades must be > 0, got {decades:g}")
        self.log_floor = DIVA_T / 10.0 ** decades
        samples: dict[str, WorkspaceSample] = {}
        groups: dict[str, list[str]] = {}
        for specimen in _kids(experiment, "specimen"):
            sname = specimen.get("name") or ""
            members = groups.setdefault(sname, [])
            for tube_el in _kids(specimen, "tube"):
                tube = self.tube(tube_el, sname, [specimen, experiment])
                if tube.name in samples:
                    raise self.fail(f"two tubes use the FCS file {tube.name!r}")
                samples[tube.name] = tube
                members.append(tube.name)
        if not samples:
            raise self.fail("the experiment has no tubes")
        version = self.root.get("version") or "?"
        return DivaWorkspace(self.path, f"BD FACSDiva {version}", samples, groups)

    # -- one tube ---------------------------------------------------------------
    def tube(self, el: ET.Element, specimen: str, outer: list[ET.Element]) -> DivaTube:
        """One tube; instrument settings missing from it are the specimen's, else the experiment's."""
        tname = el.get("name") or ""
        what = f"tube {specimen}/{tname}"
        filename = _text(el, "data_filename") or f"{specimen}/{tname}"
        strategy = GatingStrategy(source_path=self.path)
        kw = {k.get("name"): _text(k, "value") or "" for k in _kids(_kid(el, "keywords"), "keyword") if k.get("name")}
        tube = DivaTube(sample_id=f"{specimen}/{tname}", name=filename, uri=None, strategy=strategy,
                        keywords=kw, groups=[specimen], specimen=specimen, tube=tname)
        settings = next((s for s in (_kid(e, "instrument_settings") for e in [el, *outer]) if s is not None), None)
        self.params = {p.get("name"): p for p in _kids(settings, "parameter") if p.get("name")}
        self.compensated = self.tube_compensation(settings, strategy, what)
        self.what = what
        self.strategy = strategy
        self.transforms: dict[str, Transform] = {}
        self.gates(el, tube)
        for cs in _kids(_kid(el, "statistics_calculations"), "calculation_schedule"):
            path = self.gate_path(cs.get("gate") or "", what)
            for calc in _kids(cs, "calculation"):
                if (calc.get("formula") or "").lower() == "mean" and cs.get("parameter"):
                    tube.stored_means[(path, cs.get("parameter"))] = self.number(
                        calc.get("value"), f"{what}: mean of {cs.get('parameter')!r} in {cs.get('gate')!r}")
        return tube

    def tube_compensation(self, settings: ET.Element | None, strategy: GatingStrategy, what: str) -> set[str]:
        """Channels a gate sees compensated (and the DiVa matrix added to the strategy)."""
        if settings is None or (_text(settings, "compensation_enabled") or "").lower() != "true":
            return set()
        rows = [(name, [self.number(c.text, f"{what}: compensation coefficient of {name!r}")
                        for c in p.iter() if local_name(c.tag) == "compensation_coefficient"])
                for name, p in self.params.items()]
        rows = [(n, c) for n, c in rows if c]
        if not rows or self.compensation == "none":
            return set()
        names = tuple(n for n, _ in rows)
        if self.compensation == "fcs":
            return set(names)
        if any(len(c) != len(rows) for _, c in rows):
            raise self.fail(f"{what}: each compensated parameter must list {len(rows)} compensation "
                            f"coefficients (one per compensated parameter)")
        comp = np.array([c for _, c in rows], dtype=np.float64)  # row j = coefficients of parameter j
        try:
            spill = np.linalg.inv(comp.T)
        except np.linalg.LinAlgError:
            raise self.fail(f"{what}: the compensation matrix is singular") from None
        # the stored 8-digit coefficients leave the inverse's diagonal ~1e-5 off 1; the spillover model has exactly 1
        spill = spill / np.diag(spill)[:, None]
        try:
            strategy.compensations[COMPENSATION_ID] = SpilloverMatrix(names, spill, source=f"{self.path} {what}")
        except CD7FlowError as exc:
            raise self.fail(f"{what}: compensation: {exc}") from None
        return set(names)

    # -- gates ------------------------------------------------------------------------
    def gate_path(self, fullname: str, what: str) -> tuple[str, ...]:
        parts = [p.replace("/", "|") for p in fullname.split("\\")]
        if not parts or not parts[0]:
            raise self.fail(f"{what}: a gate has no fullname")
        return tuple(parts[1:])  # the first part is the root ("All Events")

    def gates(self, tube_el: ET.Element, tube: DivaTube) -> None:
        pending: list[tuple[tuple[str, ...], ET.Element]] = []
        rest_of: list[tuple[tuple[str, ...], ET.Element]] = []
        for g in _kids(_kid(tube_el, "gates"), "gate"):
            kind = g.get("type") or ""
            path = self.gate_path(g.get("fullname") or "", self.what)
            count = _text(g, "num_events")
            if kind == ROOT_TYPE:
                if path:
                    raise self.fail(f"{self.what}: the all-events gate {g.get('fullname')!r} has a parent")
                tube.event_count = population_count(count)
                continue
            if not path:
                raise self.fail(f"{self.what}: gate {g.get('fullname')!r} has no parent")
            if kind == "Composite_Classifier":
                continue  # a quadrant set's holder: its quadrants are stored as polygons
            if kind in REGION_TYPES:
                pending.append((path, g))
            elif kind == "RestOf_Classifier":
                rest_of.append((path, g))
            else:
                raise self.fail(f"{self.what}: gate {g.get('fullname')!r} has type {kind!r}, which is not "
                                f"supported ({', '.join(REGION_TYPES)}, RestOf_Classifier, Composite_Classifier)")
            if population_count(count) is not None:
                tube.flowjo_counts[path] = population_count(count)
        tree = self.strategy.tree
        # parents first, whatever the file's order
        for path, g in sorted(pending, key=lambda pg: len(pg[0])):
            try:
                gate = self.region_gate(path[-1], g)
                tree.add(gate, path[:-1] or None)
            except (GatingError, TransformError) as exc:
                raise self.fail(f"{self.what}: gate {g.get('fullname')!r}: {exc}") from None
        for path, g in rest_of:
            others = [self.gate_path(i.text or "", self.what) for i in _kids(g, "input")]
            others = [p for p in others if p and p[:-1] == path[:-1] and p != path]
            if not others:
                others = [p.path for p in tree.children(path[:-1] or None)]
            try:
                if not others:
                    raise GatingError("there is no sibling population to take the rest of")
                gate = BooleanGate(path[-1], "and", [GateReference(p, complement=True) for p in others])
                tree.add(gate, path[:-1] or None)
            except GatingError as exc:
                raise self.fail(f"{self.what}: gate {g.get('fullname')!r}: {exc}") from None

    def axis(self, g: ET.Element, ax: str, param: str) -> _Axis:
        if param not in self.params:
            raise GatingError(f"parameter {param!r} is not among the tube's instrument parameters")
        is_log = (_text(g, f"is_{ax}_parameter_log") or "false").lower() == "true"
        scaled = (_text(g, f"is_{ax}_parameter_scaled") or "false").lower() == "true"
        comp = None
        if param in self.compensated:
            comp = FCS_COMPENSATION if self.compensation == "fcs" else COMPENSATION_ID
        if not is_log:
            k = DIVA_T / CHANNELS if scaled else 1.0
            # linear coordinates become data units: no transform, no clipping
            return _Axis(Dimension(param, comp, None), None, None, 0.0) if k == 1.0 else \
                _ScaledLinear(Dimension(param, comp, None), None, None, 0.0, k)
        if scaled:
            r = abs(self.number(_text(g, f"{ax}_parameter_scale_value") or "0", f"{ax}_parameter_scale_value"))
            if r == 0:
                # Gating-ML flog(T, M) on the axis, but data <= 0 (NaN under flog) sit on its floor as DiVa draws them
                inner: Transform = FlowJoLogTransform(offset=DIVA_T / 10.0 ** DIVA_M, decades=DIVA_M)
                tid = "diva:log"
            else:
                w = max(0.0, (DIVA_M - math.log10(DIVA_T / r)) / 2.0)
                inner = LogicleTransform(t=DIVA_T, w=w, m=DIVA_M, a=0.0)
                tid = f"diva:logicle:r={r:g}"
            xf = BoundedTransform(inner, 0.0, 1.0, id=tid)
            axis = _Axis(Dimension(param, comp, tid), xf, 1.0 / CHANNELS, 0.0)
        else:
            decades = math.log10(DIVA_T / self.log_floor)
            tid = f"diva:log10:floor={self.log_floor:g}"
            xf = BoundedTransform(FlowJoLogTransform(offset=self.log_floor, decades=decades), 0.0, 1.0, id=tid)
            axis = _Axis(Dimension(param, comp, tid), xf, 1.0 / decades, math.log10(self.log_floor))
        self.strategy.transforms.setdefault(xf.id, xf)
        return axis

    def region_gate(self, name: str, g: ET.Element) -> Gate:
        region = _kid(g, "region")
        if region is None:
            raise GatingError("no <region>")
        rtype = region.get("type") or ""
        pts = np.array([(self.number(p.get("x"), f"{self.what}: gate {name!r} point x"),
                         self.number(p.get("y"), f"{self.what}: gate {name!r} point y"))
                        for p in _kids(_kid(region, "points"), "point")], dtype=np.float64).reshape(-1, 2)
        xparm = region.get("xparm")
        if not xparm:
            raise GatingError(f"{rtype} names no x parameter")
        x = self.axis(g, "x", xparm)
        if rtype == "INTERVAL_REGION":
            if len(pts) != 2:
                raise GatingError(f"INTERVAL_REGION needs 2 points, got {len(pts)}")
            lo, hi = sorted(pts[:, 0])
            return _rectangle(name, [x], [(lo, hi)])
        yparm = region.get("yparm")
        if not yparm:
            raise GatingError(f"{rtype} names no y parameter")
        y = self.axis(g, "y", yparm)
        if rtype == "RECTANGLE_REGION":
            if len(pts) != 4 or len(np.unique(pts[:, 0])) != 2 or len(np.unique(pts[:, 1])) != 2:
                raise GatingError("RECTANGLE_REGION needs 4 corners of an axis-aligned rectangle")
            return _rectangle(name, [x, y], [(pts[:, 0].min(), pts[:, 0].max()), (pts[:, 1].min(), pts[:, 1].max())])
        if rtype == "POLYGON_REGION":
            verts = np.column_stack([x.scale(pts[:, 0]), y.scale(pts[:, 1])])
            keep = np.ones(len(verts), dtype=bool)
            keep[1:] = np.any(np.diff(verts, axis=0) != 0, axis=1)
            verts = verts[keep]
            if len(verts) > 1 and np.array_equal(verts[0], verts[-1]):
                verts = verts[:-1]
            return PolygonGate(name, [x.dimension, y.dimension], verts)
        raise GatingError(f"region type {rtype!r} is not supported (RECTANGLE_REGION, POLYGON_REGION, "
                          "INTERVAL_REGION)")


@dataclass
class _ScaledLinear(_Axis):
    """A linear axis whose coordinates are display channels: data = channel * T / 4096."""

    k: float = 1.0

    def scale(self, coords: np.ndarray) -> np.ndarray:
        return np.asarray(coords, dtype=np.float64) * self.k


def _rectangle(name: str, axes: list[_Axis], bounds: list[tuple[float, float]]) -> RectangleGate:
    """A rectangle whose bounds on a clipped axis end are open (that end holds everything beyond it)."""
    mins, maxs = [], []
    for ax, (lo, hi) in zip(axes, bounds):
        slo, shi = ax.scale(np.array([lo, hi]))
        mins.append(None if ax.at_end(slo) else float(slo))
        maxs.append(None if ax.at_end(shi) else float(shi))
    return RectangleGate(name, [a.dimension for a in axes], mins, maxs)


def read_diva_xml(path: str | os.PathLike, compensation: str = "diva") -> DivaWorkspace:
    """Read a BD FACSDiva experiment XML export (root ``<bdfacs>``).

    compensation : ``"diva"`` (the matrix stored in each tube, default), ``"fcs"``
        (the FCS file's SPILL keyword) or ``"none"``.
    Raises :class:`~cd7flow.errors.WorkspaceError` naming the file and the problem.
    """
    path = os.fspath(path)
    root = parse_xml(path, WorkspaceError)
    if local_name(root.tag) != "bdfacs":
        raise WorkspaceError(path, f"root element is <{local_name(root.tag)}>, not a FACSDiva <bdfacs> export")
    return _Reader(path, root, compensation).workspace()


def manual_gate_masks(xml_path: str | os.PathLike, fcs_path: str | os.PathLike,
                      tube: str | None = None) -> dict[str, np.ndarray]:
    """DiVa's gates applied to an FCS file: gate name -> event mask (parents included).

    The tube is the one whose FCS file name is ``fcs_path``'s name unless ``tube``
    names one. A name used by two populations is keyed by its path (``"/P1/P2"``).
    """
    from .fcs_read import read_fcs

    ws = read_diva_xml(xml_path)
    wsample = ws.sample(tube) if tube else ws.sample_for_file(fcs_path)
    result = wsample.apply(read_fcs(fcs_path))
    pops = list(result.tree.populations())
    names = [p.name for p in pops]
    return {(p.name if names.count(p.name) == 1 else p.path_str): result.mask(p.path) for p in pops}
