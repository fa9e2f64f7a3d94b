"""FlowJo workspace import -> our gating tree: FlowJo 10 ``.wsp`` here, FlowJo 7-9 XML in :mod:`.flowjo9`.

``read_flowjo_workspace(path) -> Workspace`` (:mod:`.workspace`). Each
:class:`~cd7flow.io.workspace.WorkspaceSample` carries a
:class:`~cd7flow.strategy.GatingStrategy` (tree, transforms,
compensations) built for *our* engine, plus the event counts FlowJo stored for
every population, so re-computed counts can be compared with FlowJo's.

How FlowJo 10 stores things, and what we do with it:

* Groups (``GroupNode``) list sample ids; the full gate tree is repeated in every
  ``Sample/SampleNode``, so each sample's tree is read from there (group templates
  may be incomplete when samples carry custom gates).
* A sample's ``spilloverMatrix`` (rows = source detector, unitless spill fractions)
  is a compensation; a gate dimension named ``<prefix><detector><suffix>``
  (usually ``Comp-FL1-A``) whose detector is in the matrix is that detector after
  that compensation. Other names are uncompensated channels.
* ``Transformations`` hold one display transform per parameter: ``linear``
  (minRange..maxRange -> 0..1), ``log`` (offset, decades), ``fasinh``, ``logicle``
  and ``biex`` (FlowJo's lookup table, 0..4096 channels). A parameter without one
  is linear.
* Rectangle and polygon coordinates are stored in *data* units (compensated,
  untransformed). FlowJo draws and evaluates them on the display scale, so the
  coordinates are mapped through the parameter's transform and the gate is
  evaluated on transformed values: a polygon edge is straight on the display
  scale, as the user drew it. A rectangle bound beyond the end of a biex table
  (which clips) is made open, because FlowJo keeps off-scale events in a gate
  drawn to the axis end.
* Ellipses are stored as two foci and four edge points in FlowJo's 256 x 256
  display grid (each axis: transform output scaled to 0..256). They become exact
  :class:`~gating.gates.EllipsoidGate` s on the transformed scale: centre = mid-foci,
  semi-major axis from the edge points, semi-minor from the foci
  (b^2 = a^2 - c^2, as FlowKit does, because FlowJo's stored minor points are
  rounded to the grid).
* Quadrants are stored as four rectangle populations (they stay rectangles);
  boolean ``AndNode`` / ``OrNode`` / ``NotNode`` reference other populations by
  path (``Dependent name="A/B/C"``) and become :class:`~gating.gates.BooleanGate` s
  with path references. ``eventsInside="0"`` (keep the outside) wraps the gate in
  :class:`~gating.gates.OutsideGate`.

FlowJo counts polygons and ellipses on binned display data, so its counts for
events lying within about one display bin of an edge can differ from the exact
geometry used here by a few events; rectangles agree exactly.

The XML is parsed with defusedxml (entities and external references refused).
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from gating.dimensions import Dimension
from gating.gates import (
    AllEventsGate,
    BooleanGate,
    EllipsoidGate,
    Gate,
    GateReference,
    OutsideGate,
    PolygonGate,
    RectangleGate,
)

from ..compensation import SpilloverMatrix
from ..errors import CD7FlowError, GatingError, TransformError, WorkspaceError
from ..strategy import GatingStrategy
from ..transforms import (
    AsinhTransform,
    FlowJoBiexTransform,
    FlowJoLogTransform,
    LinearTransform,
    LogicleTransform,
    Transform,
)
from .flowjo9 import is_flowjo9, read_flowjo9
from .workspace import Workspace, WorkspaceSample, build_workspace, population_count
from .xml_safe import attribute as _attr
from .xml_safe import child as _kid
from .xml_safe import children as _kids
from .xml_safe import local_name as _local
from .xml_safe import number_attribute, parse_xml

__all__ = ["read_flowjo_workspace", "FlowJoWorkspace", "WorkspaceSample"]

FlowJoWorkspace = Workspace
"""The workspace model (kept under its FlowJo name; DiVa and FlowJo 7-9 return it too)."""

DISPLAY_BINS = 256.0
"""FlowJo's display grid: ellipse coordinates are stored in 0..256 per axis."""


# ----------------------------------------------------------------- helpers --
@dataclass
class _Axis:
    """What a FlowJo parameter name means: channel, compensation, transform and display range."""

    dimension: Dimension
    transform: Transform | None

    @property
    def display_range(self) -> float:
        """Width of the transform's output scale that FlowJo maps onto its 256 display bins."""
        return float(FlowJoBiexTransform.channel_range) if isinstance(self.transform, FlowJoBiexTransform) else 1.0

    def forward(self, value: float) -> float:
        if self.transform is None:
            return float(value)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(self.transform.apply(np.array([value], dtype=np.float64))[0])


# ------------------------------------------------------------- FlowJo 10 ---
class _Reader10:
    def __init__(self, path: str):
        self.path = path

    def fail(self, problem: str) -> WorkspaceError:
        return WorkspaceError(self.path, problem)

    def number(self, el: ET.Element, name: str, what: str, required: bool = True) -> float | None:
        return number_attribute(el, name, what, self.fail, required=required)

    # -- workspace --
    def workspace(self, root: ET.Element) -> Workspace:
        version = _attr(root, "flowJoVersion") or _attr(root, "version") or "?"
        sample_list = _kid(root, "SampleList")
        if sample_list is None:
            raise self.fail("no <SampleList> (not a FlowJo workspace)")
        groups_el = _kid(root, "Groups")
        groups = ((_attr(node, "name") or "",
                   [_attr(ref, "sampleID") or "" for ref in _kids(_kid(_kid(node, "Group"), "SampleRefs"), "SampleRef")])
                  for node in _kids(groups_el, "GroupNode"))
        return build_workspace(self.path, version, (self.sample(el) for el in _kids(sample_list, "Sample")),
                               groups, self.fail)

    def sample(self, el: ET.Element) -> WorkspaceSample:
        node = _kid(el, "SampleNode")
        dataset = _kid(el, "DataSet")
        if node is None:
            raise self.fail("a <Sample> has no <SampleNode>")
        name = _attr(node, "name") or ""
        sid = _attr(node, "sampleID") or (_attr(dataset, "sampleID") if dataset is not None else None) or name
        what = f"sample {name!r}"
        strategy = GatingStrategy(source_path=self.path)
        comp = self.compensation(el, strategy, what)
        axes_xforms = self.transforms(_kid(el, "Transformations"), what)
        keywords = {}
        kw_el = _kid(el, "Keywords")
        for k in _kids(kw_el, "Keyword") if kw_el is not None else []:
            if _attr(k, "name") is not None:
                keywords[_attr(k, "name")] = _attr(k, "value", "") or ""
        ws = WorkspaceSample(
            sample_id=sid, name=name, uri=_attr(dataset, "uri") if dataset is not None else None,
            strategy=strategy, keywords=keywords,
        )
        ws.event_count = population_count(_attr(node, "count"))
        subpops = _kid(node, "Subpopulations")
        if subpops is not None:
            ctx = _Context(self, strategy, comp, axes_xforms, what)
            ctx.subpopulations(subpops, (), ws.flowjo_counts)
        return ws

    def compensation(self, sample_el: ET.Element, strategy: GatingStrategy, what: str) -> dict | None:
        matrices = _kids(sample_el, "spilloverMatrix")
        if not matrices:
            return None
        if len(matrices) > 1:
            raise self.fail(f"{what}: more than one spilloverMatrix")
        m = matrices[0]
        mid = _attr(m, "name") or _attr(m, "id") or "FlowJo"
        if (_attr(m, "spectral") or "0") == "1":
            raise self.fail(f"{what}: spectral (unmixing) matrix {mid!r} is not supported")
        params_el = _kid(m, "parameters")
        detectors = [(_attr(p, "name") or "") for p in (_kids(params_el, "parameter") if params_el is not None else [])]
        rows: dict[str, dict[str, float]] = {}
        for sp in _kids(m, "spillover"):
            src = _attr(sp, "parameter") or ""
            rows[src] = {(_attr(c, "parameter") or ""): self.number(c, "value", f"{what} matrix {mid!r}")
                         for c in _kids(sp, "coefficient")}
        if not detectors or not all(detectors) or set(rows) != set(detectors):
            raise self.fail(f"{what}: spilloverMatrix {mid!r} rows do not match its parameters")
        try:
            values = [[rows[r][c] for c in detectors] for r in detectors]
        except KeyError as exc:
            raise self.fail(f"{what}: spilloverMatrix {mid!r} lacks the coefficient for {exc}") from None
        try:
            matrix = SpilloverMatrix(tuple(detectors), np.array(values), source=f"{self.path} matrix {mid!r}")
        except CD7FlowError as exc:
            raise self.fail(f"{what}: {exc}") from None
        strategy.compensations[mid] = matrix
        return {"id": mid, "prefix": _attr(m, "prefix") or "", "suffix": _attr(m, "suffix") or "",
                "detectors": set(detectors)}

    def transforms(self, el: ET.Element | None, what: str) -> dict[str, Transform]:
        out: dict[str, Transform] = {}
        for x in el if el is not None else []:
            kind = _local(x.tag)
            p = _kid(x, "parameter")
            pname = _attr(p, "name") if p is not None else None
            if not pname:
                raise self.fail(f"{what}: a {kind} transform names no parameter")
            w = f"{what} {kind} transform of {pname!r}"
            try:
                if kind == "linear":
                    lo = self.number(x, "minRange", w)
                    hi = self.number(x, "maxRange", w)
                    # display 0..1 spans minRange..maxRange: flin with T = max, A = -min
                    xf: Transform = LinearTransform(t=hi, a=-lo)
                elif kind == "log":
                    xf = FlowJoLogTransform(offset=self.number(x, "offset", w), decades=self.number(x, "decades", w))
                elif kind == "fasinh":
                    xf = AsinhTransform(t=self.number(x, "T", w), m=self.number(x, "M", w), a=self.number(x, "A", w))
                elif kind == "logicle":
                    xf = LogicleTransform(t=self.number(x, "T", w), w=self.number(x, "W", w),
                                          m=self.number(x, "M", w), a=self.number(x, "A", w))
                elif kind == "biex":
                    length = self.number(x, "length", w, required=False)
                    xf = FlowJoBiexTransform(negative=self.number(x, "neg", w), width=self.number(x, "width", w),
                                             positive=self.number(x, "pos", w),
                                             max_value=self.number(x, "maxRange", w),
                                             length=int(length) if length is not None else 256)
                else:
                    raise self.fail(f"{w}: FlowJo transform {kind!r} is not supported "
                                    "(linear, log, fasinh, logicle and biex are)")
            except TransformError as exc:
                raise self.fail(f"{w}: {exc}") from None
            xf.id = pname
            out[pname] = xf
        return out


class _Context:
    """Builds one sample's tree: resolves parameter names to dimensions and converts gates."""

    def __init__(self, reader: _Reader10, strategy: GatingStrategy, comp: dict | None,
                 transforms: dict[str, Transform], what: str):
        self.r = reader
        self.strategy = strategy
        self.comp = comp
        self.transforms = transforms
        self.what = what

    def axis(self, name: str) -> _Axis:
        channel, comp_id = name, None
        if self.comp is not None:
            pre, suf = self.comp["prefix"], self.comp["suffix"]
            stripped = name
            if pre and stripped.startswith(pre):
                stripped = stripped[len(pre):]
            if suf and stripped.endswith(suf):
                stripped = stripped[: -len(suf)]
            if stripped != name and stripped in self.comp["detectors"]:
                channel, comp_id = stripped, self.comp["id"]
        xf = self.transforms.get(name) or self.transforms.get(channel)
        if xf is not None:
            self.strategy.transforms.setdefault(xf.id, xf)
        return _Axis(Dimension(channel, comp_id, xf.id if xf is not None else None), xf)

    def subpopulations(self, el: ET.Element, parent: tuple[str, ...], counts: dict) -> None:
        for child in el:
            kind = _local(child.tag)
            if kind not in ("Population", "AndNode", "OrNode", "NotNode"):
                continue
            name = _attr(child, "name")
            if not name:
                raise self.r.fail(f"{self.what}: a {kind} under {'/'.join(parent) or 'the sample'} has no name")
            if "/" in name:
                raise self.r.fail(f"{self.what}: population name {name!r} contains '/', "
                                  "which FlowJo also uses to separate paths")
            where = "/".join(parent + (name,))
            try:
                gate = self.population_gate(child, name) if kind == "Population" else self.boolean_gate(child, kind, name)
                self.strategy.tree.add(gate, parent or None)
            except GatingError as exc:
                raise self.r.fail(f"{self.what}: population {where!r}: {exc}") from None
            path = parent + (name,)
            count = population_count(_attr(child, "count"))
            if count is not None:
                counts[path] = count
            sub = _kid(child, "Subpopulations")
            if sub is not None:
                self.subpopulations(sub, path, counts)

    def boolean_gate(self, el: ET.Element, kind: str, name: str) -> BooleanGate:
        deps = _kid(el, "Dependents")
        refs = [tuple(p for p in (_attr(d, "name") or "").split("/") if p)
                for d in (_kids(deps, "Dependent") if deps is not None else [])]
        if not refs or not all(refs):
            raise GatingError(f"boolean {kind} names no dependent populations")
        op = {"AndNode": "and", "OrNode": "or", "NotNode": "not"}[kind]
        return BooleanGate(name, op, [GateReference(r) for r in refs])

    def population_gate(self, el: ET.Element, name: str) -> Gate:
        gate_el = _kid(el, "Gate")
        body = [c for c in gate_el] if gate_el is not None else []
        if len(body) != 1:
            raise GatingError("needs exactly one gate inside <Gate>")
        g = body[0]
        kind = _local(g.tag)
        what = f"{kind} of {name!r}"
        dims = _kids(g, "dimension")
        axes = []
        for d in dims:
            fcs = _kid(d, "fcs-dimension")
            pname = _attr(fcs, "name") if fcs is not None else None
            if not pname:
                raise GatingError(f"{what}: a dimension names no fcs-dimension")
            axes.append(self.axis(pname))
        if kind == "RectangleGate":
            gate: Gate = self.rectangle(name, g, dims, axes, what)
        elif kind == "PolygonGate":
            verts = []
            for v in _kids(g, "vertex"):
                coords = [self.r.number(c, "value", what) for c in _kids(v, "coordinate")]
                if len(coords) != 2:
                    raise GatingError(f"{what}: every vertex needs two coordinates")
                verts.append([axes[0].forward(coords[0]), axes[1].forward(coords[1])])
            gate = PolygonGate(name, [a.dimension for a in axes], verts)
        elif kind == "EllipsoidGate":
            gate = self.ellipse(name, g, axes, what)
        else:
            raise GatingError(f"gate type {kind!r} is not supported in FlowJo workspaces")
        if (_attr(g, "eventsInside") or "1").strip() == "0":
            gate = OutsideGate(gate)
        return gate

    def rectangle(self, name: str, g: ET.Element, dims: list[ET.Element], axes: list[_Axis], what: str) -> Gate:
        mins, maxs = [], []
        for d, ax in zip(dims, axes):
            lo = self.r.number(d, "min", what, required=False)
            hi = self.r.number(d, "max", what, required=False)
            lo_t = None if lo is None else ax.forward(lo)
            hi_t = None if hi is None else ax.forward(hi)
            if isinstance(ax.transform, FlowJoBiexTransform):
                # the biex table clips data beyond its ends: a bound out there means "to the axis end"
                first, last = ax.transform.data_range
                if lo is not None and lo <= first:
                    lo_t = None
                if hi is not None and hi >= last:
                    hi_t = None
            for v in (lo_t, hi_t):
                if v is not None and not math.isfinite(v):
                    raise GatingError(f"{what}: bound {lo if v is lo_t else hi} has no value on the "
                                      f"{ax.transform.kind if ax.transform else 'linear'} scale")
            mins.append(lo_t)
            maxs.append(hi_t)
        keep = [i for i, (lo, hi) in enumerate(zip(mins, maxs)) if lo is not None or hi is not None]
        if not keep:
            return AllEventsGate(name, [a.dimension for a in axes])
        return RectangleGate(name, [axes[i].dimension for i in keep], [mins[i] for i in keep], [maxs[i] for i in keep])

    def ellipse(self, name: str, g: ET.Element, axes: list[_Axis], what: str) -> EllipsoidGate:
        if len(axes) != 2:
            raise GatingError(f"{what}: FlowJo ellipses have 2 dimensions, got {len(axes)}")

        def points(section: str, n_min: int) -> np.ndarray:
            sec = _kid(g, section)
            pts = [[self.r.number(c, "value", what) for c in _kids(v, "coordinate")]
                   for v in (_kids(sec, "vertex") if sec is not None else [])]
            if len(pts) < n_min or any(len(p) != 2 for p in pts):
                raise GatingError(f"{what}: needs {n_min} two-coordinate <{section}> vertices")
            return np.array(pts, dtype=np.float64)

        foci, edges = points("foci", 2)[:2], points("edge", 4)
        center = foci.mean(axis=0)
        axis_vec = foci[1] - foci[0]
        c = float(np.hypot(*axis_vec)) / 2.0
        if c > 0:
            u = axis_vec / (2.0 * c)
        else:  # a circle: the foci coincide, orientation from the first edge point
            u = edges[0] - center
            u = u / float(np.hypot(*u))
        v = np.array([-u[1], u[0]])
        # semi-major axis: the largest distance along u of the edge points from the centre
        a = float(np.max(np.abs((edges - center) @ u)))
        if a <= c:
            raise GatingError(f"{what}: edge points lie inside the foci; not an ellipse")
        b2 = a * a - c * c
        # in display units: (d - m)' (u u'/a^2 + v v'/b^2) (d - m) <= 1; covariance = inverse of that form
        cov_display = a * a * np.outer(u, u) + b2 * np.outer(v, v)
        scale = np.array([ax.display_range / DISPLAY_BINS for ax in axes])
        cov = cov_display * np.outer(scale, scale)
        return EllipsoidGate(name, [ax.dimension for ax in axes], center * scale, cov, 1.0)


# ------------------------------------------------------------- entry point --
def read_flowjo_workspace(path: str | os.PathLike) -> Workspace:
    """Read a FlowJo workspace: FlowJo 10 (.wsp) here, FlowJo 7-9 XML via :mod:`cd7flow.io.flowjo9`.

    Raises :class:`~cd7flow.errors.WorkspaceError` (naming the file and the
    problem) for unreadable, unsafe or unsupported content.
    """
    path = os.fspath(path)
    root = parse_xml(path, WorkspaceError)
    if _local(root.tag) != "Workspace":
        raise WorkspaceError(path, f"root element is <{_local(root.tag)}>, not a FlowJo <Workspace>")
    if is_flowjo9(root):
        return read_flowjo9(path, root)
    return _Reader10(path).workspace(root)
