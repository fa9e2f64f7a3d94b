"""FlowJo 7.x-9.x "Workspace" XML (Mac ``.jo``/``.xml`` and Windows 7.x exports) -> our gating tree.

Called by :func:`cd7flow.io.flowjo.read_flowjo_workspace` when the root
``<Workspace>`` says ``flowJoVersion`` < 10; returns the same
:class:`~cd7flow.io.workspace.Workspace` / ``WorkspaceSample`` objects as the
FlowJo 10 reader, so counts can be compared with the ones FlowJo stored.

How FlowJo 9 stores things, and what we do with it (layout as read by
flowWorkspace's ``macFlowJoWorkspace``; our own code):

* ``SampleList/Sample`` holds ``Keywords``, one ``Parameter`` per channel (``log="1"``
  = shown on a log-like display scale) and a ``SampleNode`` with the gate tree
  (``Population`` nested in ``Population``). Several samples may share a
  SampleNode name, so a sample is named by its ``$FIL`` keyword when it has one.
* ``compensationID`` on the Sample: ``n`` >= 1 = the n-th
  ``CompensationMatrices/CompensationMatrix`` (``Channel`` = source detector,
  ``ChannelValue`` = its spill fraction into each detector, as a spillover matrix);
  ``-1`` = acquisition-defined (the FCS file's own SPILL, our ``"FCS"``);
  empty / ``-2`` = none. A gate parameter written ``<prefix><detector><suffix>``
  (usually ``<FITC-A>``) is that detector after that compensation.
* Display scales. A ``log="1"`` parameter of a compensated detector is drawn on
  the channel scale of the ``CalibrationTables/Table`` named
  ``"<matrix name> <prefix><detector><suffix>"``: 4097 (channel, data value)
  pairs, channel 0..4096, FlowJo's biexponential ("Logicle"/"Biex") or log scale
  calibrated to that sample. It becomes a :class:`CalibrationTableTransform`
  (data -> channel, linear between table points, linear beyond both ends).
  Other ``log="1"`` parameters use the table at ``calibrationIndex`` (1-based)
  if given, else FlowJo's plain log scale (``lowValue``..``highValue`` over
  ``decades``). ``log="0"`` parameters are linear (no transform).
* Gates are stored in *data* units (compensated, untransformed) under
  ``PolygonGate``: ``Polygon`` (vertices), ``PolyRect`` (4 vertices, axis-aligned:
  a rectangle), ``Range`` (2 vertices, x only: a 1-D range), ``Ellipse`` (4
  vertices: two pairs of antipodal points, i.e. conjugate diameters), and
  ``BooleanGate`` (``specification="G0 & !G1"`` over ``String`` population
  paths). Polygons and ellipses are mapped vertex by vertex onto the display scale
  and evaluated there (an edge is straight on the plot where it was drawn).
  ``negated="1"`` keeps the outside. The ellipse is exact:
  centre = mean of the 4 points, covariance = a a' + b b' for the half-diameters
  a, b (valid for any pair of conjugate diameters, hence for any axis scaling).
* Counts: each ``Population``'s ``count`` attribute (missing = never computed).

FlowJo computes polygon membership on binned display data (channel values
rounded to its display resolution), so events within about one display bin of
a sloped polygon edge can be counted differently from the exact geometry used
here; rectangles and ranges agree exactly up to the table interpolation.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np

from gating.dimensions import FCS_COMPENSATION, UNCOMPENSATED, Dimension
from gating.gates import BooleanGate, EllipsoidGate, Gate, GateReference, OutsideGate, PolygonGate, RectangleGate

from ..compensation import SpilloverMatrix
from ..errors import CD7FlowError, GatingError, TransformError, WorkspaceError
from ..strategy import GatingStrategy
from ..transforms import FlowJoLogTransform, Transform
from .workspace import Workspace, WorkspaceSample, build_workspace, population_count
from .xml_safe import attribute, finite_number

__all__ = ["read_flowjo9", "CalibrationTableTransform"]


class CalibrationTableTransform(Transform):
    """A FlowJo 9 calibration table: data value -> display channel (0..4096 for 4096-channel tables).

    ``data`` and ``channels`` are the table's pairs (data increasing). Between
    table points the map is linear; beyond either end it continues the end
    segment's slope (FlowJo 9 clips off-scale events to the axis end on screen, but
    a strictly increasing map keeps gates with vertices beyond the table exact in
    data units). Output units: display channels.
    """

    kind = "flowjo9_table"

    def __init__(self, data, channels, name: str = "", id: str | None = None):
        super().__init__(id)
        x = np.asarray(data, dtype=np.float64)
        y = np.asarray(channels, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size < 2:
            raise TransformError(f"calibration table {name!r}: needs >= 2 (channel, value) pairs")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise TransformError(f"calibration table {name!r}: values must be finite")
        if not (np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)):
            raise TransformError(f"calibration table {name!r}: values must increase with the channel")
        self.name = name
        self._x, self._y = x, y
        self._lo_slope = (y[1] - y[0]) / (x[1] - x[0])
        self._hi_slope = (y[-1] - y[-2]) / (x[-1] - x[-2])

    def params(self) -> dict[str, float]:
        return {"points": float(self._x.size), "first_value": float(self._x[0]),
                "last_value": float(self._x[-1]), "last_channel": float(self._y[-1]),
                "checksum": float(np.sum(self._x * np.arange(1, self._x.size + 1)))}

    @staticmethod
    def _map(src, dst, xs, ys, lo_slope, hi_slope):
        out = np.interp(src, xs, ys)
        below = src < xs[0]
        above = src > xs[-1]
        out[below] = ys[0] + (src[below] - xs[0]) * lo_slope
        out[above] = ys[-1] + (src[above] - xs[-1]) * hi_slope
        np.copyto(dst, out, casting="same_kind")

    def _forward_kernel(self, src, dst):
        self._map(src, dst, self._x, self._y, self._lo_slope, self._hi_slope)

    def _inverse_kernel(self, src, dst):
        self._map(src, dst, self._y, self._x, 1.0 / self._lo_slope, 1.0 / self._hi_slope)


def _num(raw: str | None, what: str, path: str) -> float:
    return finite_number(raw, what, lambda problem: WorkspaceError(path, problem))


class _Reader9:
    def __init__(self, path: str, root: ET.Element):
        self.path = path
        self.root = root
        self.tables = self._tables()
        self.matrices = self._matrices()

    def fail(self, problem: str) -> WorkspaceError:
        return WorkspaceError(self.path, problem)

    # -- workspace-level material ------------------------------------------
    def _tables(self) -> list[tuple[str, ET.Element]]:
        ct = self.root.find("CalibrationTables")
        return [(t.get("name") or "", t) for t in (ct.findall("Table") if ct is not None else [])]

    def table(self, name: str, el: ET.Element, tid: str) -> CalibrationTableTransform:
        try:
            flat = np.array([float(v) for v in re.split(r"[,\s]+", (el.text or "").strip()) if v])
        except ValueError:
            raise self.fail(f"calibration table {name!r} holds a value that is not a number") from None
        if flat.size < 4 or flat.size % 2:
            raise self.fail(f"calibration table {name!r}: expected (channel, value) pairs, got {flat.size} numbers")
        try:
            return CalibrationTableTransform(flat[1::2], flat[0::2], name=name, id=tid)
        except TransformError as exc:
            raise self.fail(str(exc)) from None

    def _matrices(self) -> list[dict]:
        out = []
        cms = self.root.find("CompensationMatrices")
        for m in cms.findall("CompensationMatrix") if cms is not None else []:
            name = m.get("name") or f"matrix {len(out) + 1}"
            rows = m.findall("Channel")
            detectors = [r.get("name") or "" for r in rows]
            values = []
            for r in rows:
                cells = {c.get("name") or "": c.get("value") for c in r.findall("ChannelValue")}
                if set(cells) != set(detectors):
                    raise self.fail(f"compensation matrix {name!r}: row {r.get('name')!r} does not list "
                                    "exactly the matrix's channels")
                values.append([_num(cells[d], f"compensation matrix {name!r}", self.path) for d in detectors])
            try:
                matrix = SpilloverMatrix(tuple(detectors), np.array(values), source=f"{self.path} matrix {name!r}")
            except CD7FlowError as exc:
                raise self.fail(f"compensation matrix {name!r}: {exc}") from None
            out.append({"id": name, "matrix": matrix, "prefix": m.get("prefix") or "",
                        "suffix": m.get("suffix") or "", "detectors": set(detectors)})
        return out

    # -- workspace ------------------------------------------------------------
    def workspace(self) -> Workspace:
        version = self.root.get("flowJoVersion") or self.root.get("version") or "?"
        sample_list = self.root.find("SampleList")
        if sample_list is None:
            raise self.fail("no <SampleList> (not a FlowJo workspace)")
        groups_el = self.root.find("Groups")
        groups = ((node.get("name") or "", [ref.get("sampleID") or "" for ref in node.iter("SampleRef")])
                  for node in (groups_el.findall("GroupNode") if groups_el is not None else []))
        return build_workspace(self.path, version, (self.sample(el) for el in sample_list.findall("Sample")),
                               groups, self.fail, name_note=" (same $FIL)")

    def sample(self, el: ET.Element) -> WorkspaceSample:
        node = el.find("SampleNode")
        if node is None:
            raise self.fail("a <Sample> has no <SampleNode>")
        kw_el = el.find("Keywords")
        keywords = {k.get("name"): (k.get("value") or "").strip()
                    for k in (kw_el.findall("Keyword") if kw_el is not None else []) if k.get("name")}
        sid = el.get("sampleID") or node.get("sampleID") or ""
        name = keywords.get("$FIL") or node.get("name") or f"sample {sid}"
        what = f"sample {name!r}"
        strategy = GatingStrategy(source_path=self.path)
        ws = WorkspaceSample(sample_id=sid, name=name, uri=None, strategy=strategy, keywords=keywords)
        for attr in (node.get("count"), el.get("eventCount")):
            if population_count(attr) is not None:
                ws.event_count = population_count(attr)
                break
        ctx = _Sample9(self, strategy, self.compensation(el, strategy, what), self.parameters(el), what)
        ctx.populations(node, (), ws.flowjo_counts)
        ctx.resolve_booleans()
        return ws

    def compensation(self, el: ET.Element, strategy: GatingStrategy, what: str) -> dict | None:
        cid = (el.get("compensationID") or "").strip()
        if cid in ("", "-2", "0"):
            return None
        if cid == "-1":  # acquisition-defined: the FCS file's own spillover keyword
            return {"id": FCS_COMPENSATION, "prefix": "<", "suffix": ">", "detectors": None}
        if not cid.isdigit() or not 1 <= int(cid) <= len(self.matrices):
            raise self.fail(f"{what}: compensationID {cid!r} names no CompensationMatrix "
                            f"(the workspace has {len(self.matrices)})")
        comp = self.matrices[int(cid) - 1]
        strategy.compensations[comp["id"]] = comp["matrix"]
        return comp

    def parameters(self, el: ET.Element) -> dict[str, dict[str, str]]:
        return {p.get("name"): dict(p.attrib) for p in el.findall("Parameter") if p.get("name")}


class _Sample9:
    """One sample's tree: parameter names -> dimensions, FlowJo 9 gates -> our gates."""

    def __init__(self, reader: _Reader9, strategy: GatingStrategy, comp: dict | None,
                 params: dict[str, dict[str, str]], what: str):
        self.r = reader
        self.strategy = strategy
        self.comp = comp
        self.params = params
        self.what = what
        self._axes: dict[str, tuple[Dimension, Transform | None]] = {}
        self._booleans: list[tuple[tuple[str, ...], BooleanGate]] = []

    # -- dimensions ---------------------------------------------------------
    def axis(self, name: str) -> tuple[Dimension, Transform | None]:
        if name in self._axes:
            return self._axes[name]
        channel, comp_id = name, None
        comp = self.comp
        if comp is not None:
            pre, suf = comp["prefix"], comp["suffix"]
            if pre and suf and name.startswith(pre) and name.endswith(suf) and len(name) > len(pre) + len(suf):
                stripped = name[len(pre): len(name) - len(suf)]
                if comp["detectors"] is None or stripped in comp["detectors"]:
                    channel, comp_id = stripped, comp["id"]
        param = self.params.get(channel)
        if param is None:
            raise GatingError(f"parameter {name!r} is not among the sample's <Parameter>s")
        xf: Transform | None = None
        if param.get("log") == "1":
            xf = self._display_transform(name, channel, comp_id, param)
        if xf is not None:
            self.strategy.transforms.setdefault(xf.id, xf)
        result = (Dimension(channel, comp_id, xf.id if xf is not None else None), xf)
        self._axes[name] = result
        return result

    def _display_transform(self, name: str, channel: str, comp_id: str | None, param: dict) -> Transform:
        idx = param.get("calibrationIndex")
        if idx and idx.isdigit() and 1 <= int(idx) <= len(self.r.tables):
            tname, tel = self.r.tables[int(idx) - 1]
            return self.r.table(tname, tel, f"table:{tname}")
        wanted = f"{comp_id} {name}" if comp_id not in (UNCOMPENSATED, FCS_COMPENSATION) else None
        for tname, tel in self.r.tables:
            if wanted is not None and tname.strip() == wanted:
                return self.r.table(tname, tel, f"table:{tname}")
        low = _num(param.get("lowValue", "1"), f"{self.what} parameter {channel!r} lowValue", self.r.path)
        decades = _num(param.get("decades", "4"), f"{self.what} parameter {channel!r} decades", self.r.path)
        if low <= 0 or decades <= 0:
            raise GatingError(f"parameter {channel!r}: log display needs lowValue > 0 and decades > 0 "
                              f"(got {low}, {decades}) and no calibration table applies")
        try:
            xf = FlowJoLogTransform(offset=low, decades=decades)
        except TransformError as exc:
            raise GatingError(f"parameter {channel!r}: {exc}") from None
        xf.id = f"log:{channel}:{low:g}:{decades:g}"
        return xf

    # -- tree ---------------------------------------------------------------
    def populations(self, el: ET.Element, parent: tuple[str, ...], counts: dict) -> None:
        for child in el.findall("Population"):
            name = child.get("name")
            if not name:
                raise self.r.fail(f"{self.what}: a Population under {'/'.join(parent) or 'the sample'} has no name")
            if "/" in name:
                raise self.r.fail(f"{self.what}: population name {name!r} contains '/', "
                                  "which FlowJo also uses to separate paths")
            path = parent + (name,)
            try:
                gate = self.gate(child, name, path)
                self.r_add(gate, parent)
            except GatingError as exc:
                raise self.r.fail(f"{self.what}: population {'/'.join(path)!r}: {exc}") from None
            count = population_count(child.get("count"))
            if count is not None:
                counts[path] = count
            self.populations(child, path, counts)

    def r_add(self, gate: Gate, parent: tuple[str, ...]) -> None:
        self.strategy.tree.add(gate, parent or None)

    def gate(self, pop: ET.Element, name: str, path: tuple[str, ...]) -> Gate:
        boolean = pop.find("BooleanGate")
        if boolean is not None:
            gate: Gate = self.boolean(boolean, name, path)
            negated = boolean.get("negated")
        else:
            pg = pop.find("PolygonGate")
            shapes = [c for c in pg if c.tag in ("Polygon", "PolyRect", "Range", "Ellipse")] if pg is not None else []
            if len(shapes) != 1:
                kinds = sorted({c.tag for c in pop} - {"Graph", "Population", "StainCriterion"})
                raise GatingError(f"no supported gate (Polygon, PolyRect, Range, Ellipse, BooleanGate); "
                                  f"found {kinds or 'nothing'}")
            shape = shapes[0]
            gate = self.shape(shape, name)
            negated = shape.get("negated")
        if negated not in (None, "", "0"):
            gate = OutsideGate(gate)
        return gate

    def shape(self, g: ET.Element, name: str) -> Gate:
        kind = g.tag
        x_name = g.get("xAxisName") or ""
        y_name = g.get("yAxisName") or ""
        if not x_name:
            raise GatingError(f"{kind} names no x axis")
        verts = []
        for v in g.findall("Polygon/Vertex"):
            verts.append((_num(v.get("x"), f"{kind} vertex x", self.r.path),
                          _num(v.get("y"), f"{kind} vertex y", self.r.path)))
        if kind == "Range":
            if len(verts) != 2:
                raise GatingError(f"Range needs 2 vertices, got {len(verts)}")
            dim, xf = self.axis(x_name)
            lo, hi = sorted((verts[0][0], verts[1][0]))
            return RectangleGate(name, [dim], [_fwd(xf, lo)], [_fwd(xf, hi)])
        if not y_name:
            raise GatingError(f"{kind} names no y axis")
        (dx, fx), (dy, fy) = self.axis(x_name), self.axis(y_name)
        pts = np.array(verts, dtype=np.float64).reshape(-1, 2)
        disp = np.column_stack([_fwd_many(fx, pts[:, 0]), _fwd_many(fy, pts[:, 1])])
        if kind == "PolyRect":
            if len(pts) != 4:
                raise GatingError(f"PolyRect needs 4 vertices, got {len(pts)}")
            lo, hi = disp.min(axis=0), disp.max(axis=0)
            return RectangleGate(name, [dx, dy], list(lo), list(hi))
        if kind == "Ellipse":
            if len(pts) != 4:
                raise GatingError(f"Ellipse needs 4 vertices (two antipodal pairs), got {len(pts)}")
            centre = disp.mean(axis=0)
            a = (disp[0] - disp[1]) / 2.0
            b = (disp[2] - disp[3]) / 2.0
            cov = np.outer(a, a) + np.outer(b, b)
            if abs(np.linalg.det(cov)) <= 1e-12 * max(float(np.trace(cov)) ** 2, 1e-300):
                raise GatingError("Ellipse vertices are collinear; not an ellipse")
            return EllipsoidGate(name, [dx, dy], centre, cov, 1.0)
        # a closed polygon often repeats its first vertex (and FlowJo duplicates points): drop repeats
        keep = np.ones(len(disp), dtype=bool)
        keep[1:] = np.any(np.diff(disp, axis=0) != 0, axis=1)
        disp = disp[keep]
        if len(disp) > 1 and np.array_equal(disp[0], disp[-1]):
            disp = disp[:-1]
        return PolygonGate(name, [dx, dy], disp)

    def boolean(self, el: ET.Element, name: str, path: tuple[str, ...]) -> BooleanGate:
        spec = (el.get("specification") or "").replace("! G", "!G").split()
        paths = [tuple(p for p in (s.text or "").split("/") if p) for s in el.iter("String")]
        if not spec or len(spec) % 2 == 0:
            raise GatingError(f"boolean specification {el.get('specification')!r} is not 'G0 & G1 ...'")
        tokens, ops = spec[0::2], set(spec[1::2])
        if not ops <= {"&", "|"} or len(ops) > 1:
            raise GatingError(f"boolean specification {el.get('specification')!r}: only one operator, "
                              "all '&' or all '|', is supported")
        operands = []
        for tok in tokens:
            m = re.fullmatch(r"(!?)G(\d+)", tok)
            if m is None or int(m.group(2)) >= len(paths) or not paths[int(m.group(2))]:
                raise GatingError(f"boolean operand {tok!r} names no population path")
            operands.append(GateReference(paths[int(m.group(2))], complement=bool(m.group(1))))
        op = "or" if ops == {"|"} else "and"
        gate = BooleanGate(name, op, operands)
        self._booleans.append((path, gate))
        return gate

    def resolve_booleans(self) -> None:
        """Operand paths are absolute in FlowJo 9; fall back to relative to the boolean's parent."""
        tree = self.strategy.tree
        for path, gate in self._booleans:
            fixed = []
            for o in gate.operands:
                ref = tuple(o.ref)
                if ref not in {p.path for p in tree.populations()}:
                    rel = path[:-1] + ref
                    if rel in {p.path for p in tree.populations()}:
                        ref = rel
                    else:
                        raise self.r.fail(f"{self.what}: boolean population {'/'.join(path)!r} refers to "
                                          f"{'/'.join(o.ref)!r}, which is not in the tree")
                fixed.append(GateReference(ref, o.complement))
            gate.operands = tuple(fixed)


def _fwd(xf: Transform | None, value: float) -> float:
    return float(value) if xf is None else float(_fwd_many(xf, np.array([value]))[0])


def _fwd_many(xf: Transform | None, values: np.ndarray) -> np.ndarray:
    if xf is None:
        return np.asarray(values, dtype=np.float64)
    out = np.asarray(xf.apply(np.asarray(values, dtype=np.float64)), dtype=np.float64)
    if not np.all(np.isfinite(out)):
        bad = np.asarray(values)[~np.isfinite(out)][0]
        raise GatingError(f"coordinate {bad} has no value on the {xf.kind} display scale")
    return out


def is_flowjo9(root: ET.Element) -> bool:
    """A ``<Workspace>`` root written by FlowJo 7-9 (``flowJoVersion`` below 10)."""
    version = attribute(root, "flowJoVersion") or ""
    major = version.split(".", 1)[0]
    return major.isdigit() and int(major) < 10


def read_flowjo9(path: str, root: ET.Element) -> Workspace:
    """Build a :class:`~cd7flow.io.workspace.Workspace` from a parsed FlowJo 7-9 XML root."""
    return _Reader9(path, root).workspace()
