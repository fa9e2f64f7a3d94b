"""Gating-ML 2.0 import and export (ISAC): gates, transforms, compensation.

``read_gatingml(path) -> GatingStrategy`` and ``write_gatingml(strategy, path)``.

Covered: RectangleGate (ranges, open bounds), PolygonGate, EllipsoidGate (n-D),
QuadrantGate (multi-value dividers, partial positions), BooleanGate (and/or/not,
use-as-complement), ``parent_id`` (including a quadrant as parent); transforms
flin, flog, fasinh, logicle, hyperlog and fratio, each optionally bounded with
``boundMin`` / ``boundMax``; compensation ``uncompensated``, ``FCS`` and in-file
``spectrumMatrix`` (fluorochromes x detectors, non-square unmixing by least
squares, ``matrix-inverted-already``). Gates are evaluated by :mod:`gating`.

All five files of the official ISAC Gating-ML 2.0 compliance suite (gatingMLData
gates1-5.xml: 189 gates and quadrants) read and evaluate; set 1 matches the published
per-event results on data1.fcs. Semantics follow flowCore, which produced those results:
bounds clip (max(min(f, boundMax), boundMin)), fratio divides as IEEE 754 (x/0 = +-inf).

The XML is parsed with defusedxml: DTD entities (billion-laughs bombs) and external
entities are refused with a :class:`~cd7flow.errors.GatingMLError` naming the file.
Output is written to a temporary file in the target folder and renamed.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import numpy as np

from gating.dimensions import (
    FCS_COMPENSATION,
    UNCOMPENSATED,
    UNCOMPENSATED_NAME,
    Dimension,
    RatioDimension,
    is_uncompensated,
)
from gating.gates import (
    BooleanGate,
    Divider,
    EllipsoidGate,
    Gate,
    GateReference,
    PolygonGate,
    Quadrant,
    QuadrantGate,
    RectangleGate,
)
from gating.errors import GatingError as GeometryError
from gating.tree import GatingTree, Population

from ..compensation.spectrum import SpectrumMatrix
from ..errors import GatingError, GatingMLError, TransformError
from ..outputs import atomic_output
from ..strategy import GatingStrategy
from ..transforms import BoundedTransform, Transform, transform_from_spec
from .xml_safe import attribute, child, children, iterparse_xml, local_name, number_attribute

__all__ = ["read_gatingml", "write_gatingml", "GatingStrategy"]

NS_GATING = "http://www.isac-net.org/std/Gating-ML/v2.0/gating"
NS_TRANSFORMS = "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
NS_DATATYPE = "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"

MAX_NESTING = 100
"""Deepest nesting of foreign container elements around the Gating-ML definitions."""

_KINDS = {
    "flin": ("T", "A"),
    "flog": ("T", "M"),
    "fasinh": ("T", "M", "A"),
    "logicle": ("T", "W", "M", "A"),
    "hyperlog": ("T", "W", "M", "A"),
}
"""Gating-ML 2.0 scale transforms and their parameters (fratio is a derived dimension)."""


# ---------------------------------------------------------------- reading --
_local, _attr, _kids, _kid = local_name, attribute, children, child


class _Reader:
    def __init__(self, path: str):
        self.path = path
        # (what, transformation id) of every new-dimension, checked once all transformations are read
        self.new_dimensions: list[tuple[str, str]] = []

    def fail(self, problem: str) -> GatingMLError:
        return GatingMLError(self.path, problem)

    def number(self, el: ET.Element, name: str, what: str, default: float | None = None,
               required: bool = True) -> float | None:
        return number_attribute(el, name, what, self.fail, required=required, default=default)

    # -- transforms and compensation --
    def transformation(self, el: ET.Element, strategy: GatingStrategy) -> None:
        tid = _attr(el, "id")
        if not tid:
            raise self.fail("a transformation has no transforms:id")
        what = f"transformation {tid!r}"
        bmin = self.number(el, "boundMin", what, required=False)
        bmax = self.number(el, "boundMax", what, required=False)
        if bmin is not None and bmax is not None and bmin > bmax:
            raise self.fail(f"{what}: boundMin {bmin} is above boundMax {bmax}")
        body = [c for c in el if _local(c.tag) != "custom_info"]
        if len(body) != 1:
            raise self.fail(f"{what}: expected exactly one transform element, got {len(body)}")
        kind_el = body[0]
        kind = _local(kind_el.tag)
        if tid in strategy.transforms or tid in strategy.derived:
            raise self.fail(f"{what} is defined twice")
        if kind == "fratio":
            dims = _kids(kind_el, "fcs-dimension")
            if len(dims) != 2 or not all(_attr(d, "name") for d in dims):
                raise self.fail(f"{what}: fratio needs two named fcs-dimension elements")
            strategy.derived[tid] = RatioDimension(
                tid, _attr(dims[0], "name"), _attr(dims[1], "name"),
                A=self.number(kind_el, "A", what), B=self.number(kind_el, "B", what),
                C=self.number(kind_el, "C", what), bound_min=bmin, bound_max=bmax,
            )
            return
        if kind not in _KINDS:
            raise self.fail(f"{what}: unsupported transform {kind!r} (Gating-ML 2.0 defines "
                            f"{', '.join([*_KINDS, 'fratio'])})")
        params = {p: self.number(kind_el, p, what) for p in _KINDS[kind]}
        try:
            strategy.transforms[tid] = transform_from_spec(kind, id=tid, bound_min=bmin, bound_max=bmax, **params)
        except TransformError as exc:
            raise self.fail(f"{what}: {exc}") from None

    def spectrum_matrix(self, el: ET.Element, strategy: GatingStrategy) -> None:
        mid = _attr(el, "id")
        if not mid:
            raise self.fail("a spectrumMatrix has no transforms:id")
        what = f"spectrumMatrix {mid!r}"

        def names(section: str) -> tuple[str, ...]:
            sec = _kid(el, section)
            if sec is None:
                raise self.fail(f"{what}: missing <{section}>")
            out = tuple(_attr(d, "name") or "" for d in _kids(sec, "fcs-dimension"))
            if not out or not all(out):
                raise self.fail(f"{what}: <{section}> needs named fcs-dimension elements")
            return out

        fluoro, detectors = names("fluorochromes"), names("detectors")
        rows = [[self.number(c, "value", what) for c in _kids(s, "coefficient")] for s in _kids(el, "spectrum")]
        if not rows or len({len(r) for r in rows}) != 1:
            raise self.fail(f"{what}: spectrum rows are missing or of unequal length")
        inverted = (_attr(el, "matrix-inverted-already", "false") or "").strip().lower() in ("true", "1")
        try:
            strategy.compensations[mid] = SpectrumMatrix(mid, fluoro, detectors, np.array(rows), inverted)
        except GatingError as exc:
            raise self.fail(str(exc)) from None

    # -- gates --
    def dimension(self, el: ET.Element, what: str) -> Dimension:
        comp = _attr(el, "compensation-ref", UNCOMPENSATED_NAME)
        comp = UNCOMPENSATED if is_uncompensated(comp) else comp
        xform = _attr(el, "transformation-ref") or None
        fcs = _kid(el, "fcs-dimension")
        new = _kid(el, "new-dimension")
        if fcs is not None and _attr(fcs, "name"):
            channel = _attr(fcs, "name")
        elif new is not None and _attr(new, "transformation-ref"):
            channel = _attr(new, "transformation-ref")
            self.new_dimensions.append((what, channel))
        else:
            raise self.fail(f"{what}: a dimension names neither an fcs-dimension nor a new-dimension")
        return Dimension(channel, comp, xform)

    def gate(self, el: ET.Element) -> Gate:
        kind = _local(el.tag)
        gid = _attr(el, "id")
        if not gid:
            raise self.fail(f"a {kind} has no gating:id")
        what = f"{kind} {gid!r}"
        if kind == "RectangleGate":
            dims, mins, maxs = [], [], []
            for d in _kids(el, "dimension"):
                dims.append(self.dimension(d, what))
                mins.append(self.number(d, "min", what, required=False))
                maxs.append(self.number(d, "max", what, required=False))
            return RectangleGate(gid, dims, mins, maxs)
        if kind == "PolygonGate":
            dims = [self.dimension(d, what) for d in _kids(el, "dimension")]
            verts = [[self.number(c, "value", what) for c in _kids(v, "coordinate")] for v in _kids(el, "vertex")]
            if any(len(v) != 2 for v in verts):
                raise self.fail(f"{what}: every vertex needs two coordinates")
            # The standard puts edge events in. Polygons cd7flow itself wrote from a half-open gate
            # (automated hulls pass through events; FlowJo/DiVa polygons) say so in custom_info, so
            # `autogate --gatingml` re-applies to exactly the events the fit gated.
            return PolygonGate(gid, dims, verts, include_boundary=not _declares_half_open(el))
        if kind == "EllipsoidGate":
            dims = [self.dimension(d, what) for d in _kids(el, "dimension")]
            mean_el, cov_el, d2_el = _kid(el, "mean"), _kid(el, "covarianceMatrix"), _kid(el, "distanceSquare")
            if mean_el is None or cov_el is None or d2_el is None:
                raise self.fail(f"{what}: needs mean, covarianceMatrix and distanceSquare")
            mean = [self.number(c, "value", what) for c in _kids(mean_el, "coordinate")]
            cov = [[self.number(e, "value", what) for e in _kids(r, "entry")] for r in _kids(cov_el, "row")]
            return EllipsoidGate(gid, dims, mean, cov, self.number(d2_el, "value", what))
        if kind == "QuadrantGate":
            dividers = []
            for dv in _kids(el, "divider"):
                did = _attr(dv, "id")
                if not did:
                    raise self.fail(f"{what}: a divider has no gating:id")
                vals = []
                for v in _kids(dv, "value"):
                    try:
                        vals.append(float((v.text or "").strip()))
                    except ValueError:
                        raise self.fail(f"{what}: divider {did!r} value {v.text!r} is not a number") from None
                dividers.append(Divider(did, self.dimension(dv, what), tuple(vals)))
            quadrants = []
            for q in _kids(el, "Quadrant"):
                qid = _attr(q, "id")
                if not qid:
                    raise self.fail(f"{what}: a Quadrant has no gating:id")
                pos = {}
                for p in _kids(q, "position"):
                    ref = _attr(p, "divider_ref")
                    if not ref:
                        raise self.fail(f"{what}: quadrant {qid!r} has a position without divider_ref")
                    pos[ref] = self.number(p, "location", what)
                quadrants.append(Quadrant(qid, pos))
            return QuadrantGate(gid, dividers, quadrants)
        if kind == "BooleanGate":
            ops = [c for c in el if _local(c.tag) in ("and", "or", "not")]
            if len(ops) != 1:
                raise self.fail(f"{what}: needs exactly one of and/or/not")
            refs = []
            for r in _kids(ops[0], "gateReference"):
                ref = _attr(r, "ref")
                if not ref:
                    raise self.fail(f"{what}: a gateReference has no gating:ref")
                comp = (_attr(r, "use-as-complement", "false") or "").strip().lower() in ("true", "1")
                refs.append(GateReference(ref, comp))
            return BooleanGate(gid, _local(ops[0].tag), refs)
        raise self.fail(f"unsupported gate element {kind!r}")

    def document(self, events: Iterator[tuple[str, ET.Element]]) -> GatingStrategy:
        strategy = GatingStrategy(source_path=self.path)
        pending: list[tuple[Gate, str | None]] = []
        for el in self._definitions(events):
            name = _local(el.tag)
            try:
                if name == "transformation":
                    self.transformation(el, strategy)
                elif name == "spectrumMatrix":
                    self.spectrum_matrix(el, strategy)
                elif name.endswith("Gate"):
                    pending.append((self.gate(el), _attr(el, "parent_id") or None))
            except GeometryError as exc:  # gating's own (polygon < 3 vertices, min > max) or cd7flow's
                raise self.fail(str(exc)) from None
        self.build_tree(strategy.tree, pending)
        self.check_references(strategy)
        return strategy

    def _definitions(self, events: Iterator[tuple[str, ET.Element]]) -> Iterator[ET.Element]:
        """Top-level definitions, each complete, in file order; elements of foreign namespaces
        are looked into, not skipped (files wrap gates in vendor containers such as <sample>).

        Read as a stream: a definition is let go once used, so a file of 200,000 gates
        never stands as one XML tree. Containers nested deeper than :data:`MAX_NESTING`
        are refused.
        """
        open_elements: list[ET.Element] = []  # the root, then the elements now open below it
        in_definition = 0  # open Gating-ML elements (a definition and its parts)
        for event, el in events:
            ours = _namespace(el.tag) in (NS_GATING, NS_TRANSFORMS, NS_DATATYPE)
            if event == "start":
                if not open_elements and _local(el.tag) != "Gating-ML":
                    raise self.fail(f"root element is <{_local(el.tag)}>, not <Gating-ML>")
                if open_elements and not in_definition and not ours and len(open_elements) >= MAX_NESTING:
                    raise self.fail(f"elements are nested more than {MAX_NESTING} deep (at <{_local(el.tag)}>); "
                                    "not a Gating-ML document")
                in_definition += ours and len(open_elements) > 0
                open_elements.append(el)
                continue
            open_elements.pop()
            if not open_elements:  # the root's end
                return
            if ours:
                in_definition -= 1
                if in_definition:
                    continue
                yield el
            elif in_definition:
                continue  # a foreign element inside a definition is part of it
            del open_elements[-1][-1]  # el, its parent's last child: done with it

    def build_tree(self, tree: GatingTree, pending: list[tuple[Gate, str | None]]) -> None:
        """Add gates parents first; a parent_id may name a gate or a quadrant.

        Gates are added in file order, except that a gate whose parent comes later in
        the file waits for it (and is added after the gates that did not wait): the
        order a repeated sweep over the file would give, computed in one pass.
        """
        owner: dict[str, int] = {}  # gate/quadrant id -> index in pending of the gate defining it
        for i, (gate, _) in enumerate(pending):
            names = gate.quadrant_ids if isinstance(gate, QuadrantGate) else (gate.id,)
            for n in names:
                if n in owner:
                    raise self.fail(f"gate id {n!r} is used twice")
                owner[n] = i
            if isinstance(gate, QuadrantGate):
                owner.setdefault(gate.id, i)
        sweep = _sweeps(pending, owner)
        stuck = [pending[i] for i, k in enumerate(sweep) if k is None]
        if stuck:
            bad = ", ".join(f"{g.id!r} (parent {p!r})" for g, p in stuck)
            raise self.fail(f"parent_id refers to a missing gate or forms a cycle: {bad}")
        where: dict[str, Population | None] = {}  # gate/quadrant id -> population (None = the root)
        for i in sorted(range(len(pending)), key=lambda i: (sweep[i], i)):
            gate, parent = pending[i]
            parent_pop = where[parent] if parent else None
            for pop in tree.add(gate, parent_pop):
                where[pop.name] = pop
            if isinstance(gate, QuadrantGate):
                where.setdefault(gate.id, parent_pop)

    def check_references(self, strategy: GatingStrategy) -> None:
        for what, ref in self.new_dimensions:
            if ref in strategy.transforms:
                raise self.fail(f"{what}: new-dimension refers to {ref!r}, a scale transformation; "
                                "only an fratio defines a new dimension")
            if ref not in strategy.derived:
                raise self.fail(f"{what}: new-dimension refers to unknown transformation {ref!r}")
        names = {p.name for p in strategy.tree.populations()}
        for gate in strategy.tree.gates():
            for ref in gate.references:
                if ref not in names:
                    raise self.fail(f"boolean gate {gate.id!r} references unknown gate {ref!r}")
            for dim in gate.dimensions:
                if dim.transform is not None and dim.transform not in strategy.transforms:
                    if dim.transform in strategy.derived:
                        raise self.fail(f"gate {gate.id!r}: transformation-ref {dim.transform!r} is an fratio; "
                                        "a ratio is used as a new-dimension, not as a scale")
                    raise self.fail(f"gate {gate.id!r}: unknown transformation-ref {dim.transform!r}")
                if not is_uncompensated(dim.compensation) and dim.compensation != FCS_COMPENSATION \
                        and dim.compensation not in strategy.compensations:
                    raise self.fail(f"gate {gate.id!r}: unknown compensation-ref {dim.compensation!r}")
        cycle = _dependency_cycle(strategy.tree)
        if cycle:
            raise self.fail("boolean gates depend on themselves (through their operands and parents): "
                            + " -> ".join(cycle))


def _sweeps(pending: list[tuple[Gate, str | None]], owner: dict[str, int]) -> list[int | None]:
    """For each gate, the sweep over the file in which its parent exists (None: never).

    A top-level gate is placed in sweep 1; a gate after its parent in the file in its
    parent's sweep, before it in the next one. A missing parent or a cycle of
    parent_ids leaves the gate (and every gate below it) at None. Iterative, so a
    chain of nested gates of any length is fine.
    """
    n = len(pending)
    sweep: list[int | None] = [None] * n
    settled = [False] * n
    for start in range(n):
        chain: list[int] = []
        on_chain: set[int] = set()
        j: int | None = start
        while j is not None and not settled[j] and j not in on_chain:
            chain.append(j)
            on_chain.add(j)
            parent = pending[j][1]
            j = owner.get(parent, -1) if parent is not None else None
            if j == -1:  # a parent_id no gate defines
                break
        # j is None (reached the root), settled, on the chain (a cycle) or -1 (missing)
        for k in reversed(chain):
            parent = pending[k][1]
            if parent is None:
                sweep[k] = 1
            else:
                p = owner.get(parent)
                if p is not None and settled[p] and sweep[p] is not None:
                    sweep[k] = sweep[p] + (0 if p < k else 1)
            settled[k] = True
    return sweep


def _dependency_cycle(tree: GatingTree) -> list[str]:
    """Gate ids of a cycle in 'needs the mask of' (operands of boolean gates, and parents), or [].

    Found before gating so that such a file is refused with its name, not at evaluation.
    Iterative depth-first search: the tree may be deep.
    """
    def needs(pop: Population) -> list[Population]:
        out = [pop.parent] if pop.parent is not None else []
        if isinstance(pop.gate, BooleanGate):
            out += [tree.find(ref) for ref in pop.gate.references]
        return out

    state: dict[Population, int] = {}  # 1 = on the current path, 2 = done
    for start in tree.populations():
        if start in state or not isinstance(start.gate, BooleanGate):
            continue
        path = [start]
        stack = [iter(needs(start))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                loop = path[path.index(nxt):] + [nxt]
                return [p.name for p in loop]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(needs(nxt)))
    return []


def read_gatingml(path: str | os.PathLike) -> GatingStrategy:
    """Read a Gating-ML 2.0 file into a GatingStrategy (tree, transforms, compensations, ratios)."""
    path = os.fspath(path)
    return _Reader(path).document(iterparse_xml(path, GatingMLError))


def _namespace(tag) -> str:
    """'{ns}name' -> 'ns' ('' without a namespace, or for a comment)."""
    return tag[1:].split("}", 1)[0] if isinstance(tag, str) and tag.startswith("{") else ""


# ---------------------------------------------------------------- writing --
def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


_PREFIXES = {NS_GATING: "gating", NS_TRANSFORMS: "transforms", NS_DATATYPE: "data-type"}
"""The prefixes Gating-ML files conventionally use (the namespace map of our output)."""


def _with_prefixes(root: ET.Element) -> ET.Element:
    """Spell ``{namespace}name`` tags and attributes as ``prefix:name``, declaring on the root
    (sorted by prefix) the namespaces used: ElementTree's own prefix map is process-wide
    (``ET.register_namespace``), this one is local to the document."""
    used: set[str] = set()

    def prefixed(name: str) -> str:
        if name.startswith("{"):
            ns, local = name[1:].split("}", 1)
            used.add(ns)
            return f"{_PREFIXES[ns]}:{local}"
        return name

    for el in root.iter():
        el.tag = prefixed(el.tag)
        if el.attrib:
            el.attrib = {prefixed(k): v for k, v in el.attrib.items()}
    own = dict(root.attrib)
    root.attrib = {f"xmlns:{p}": ns for p, ns in sorted((_PREFIXES[ns], ns) for ns in used)}
    root.attrib.update(own)
    return root


# A cd7flow polygon with the half-open edge rule (left/bottom edges in, right/top out) instead of the
# standard's closed one is written with this custom_info; other readers ignore it (on-edge events
# only can then differ), cd7flow honours it.
HALF_OPEN_TAG = "cd7flow_polygon"


def _declare_half_open(gate_el: ET.Element) -> None:
    info = ET.SubElement(gate_el, _q(NS_DATATYPE, "custom_info"))
    ET.SubElement(info, HALF_OPEN_TAG, {"boundary": "half-open"})


def _declares_half_open(gate_el) -> bool:
    for info in gate_el:
        if _local(info.tag) == "custom_info":
            for declared in info:
                if _local(declared.tag) == HALF_OPEN_TAG and declared.get("boundary") == "half-open":
                    return True
    return False


def _num(value: float) -> str:
    return repr(float(value))  # shortest text that reads back to the same double


class _Writer:
    def __init__(self, strategy: GatingStrategy, path: str):
        self.s = strategy
        self.path = path
        pops = list(strategy.tree.populations())
        counts: dict[str, int] = {}
        for p in pops:
            counts[p.name] = counts.get(p.name, 0) + 1
        # Gating-ML ids are global: a name used twice in the tree is written as its path.
        self.ids = {p: (p.name if counts[p.name] == 1 else "_".join(p.path)) for p in pops}
        self.pops = pops

    def fail(self, problem: str) -> GatingMLError:
        return GatingMLError(self.path, problem)

    def transform(self, root: ET.Element, tid: str, xf: Any) -> None:
        lower = upper = None
        inner = xf
        if isinstance(xf, BoundedTransform):
            inner = xf.inner
            lower = None if xf.lower == -np.inf else xf.lower
            upper = None if xf.upper == np.inf else xf.upper
        kind = getattr(inner, "kind", None)
        if not isinstance(inner, Transform) or kind not in _KINDS:
            raise self.fail(f"transform {tid!r} ({type(inner).__name__}, kind {kind!r}) has no Gating-ML 2.0 form")
        params = {k.upper(): v for k, v in inner.params().items()}
        el = ET.SubElement(root, _q(NS_TRANSFORMS, "transformation"), {_q(NS_TRANSFORMS, "id"): tid})
        self._bounds(el, lower, upper)
        ET.SubElement(el, _q(NS_TRANSFORMS, kind), {_q(NS_TRANSFORMS, p): _num(params[p]) for p in _KINDS[kind]})

    @staticmethod
    def _bounds(el: ET.Element, lower: float | None, upper: float | None) -> None:
        if lower is not None:
            el.set(_q(NS_TRANSFORMS, "boundMin"), _num(lower))
        if upper is not None:
            el.set(_q(NS_TRANSFORMS, "boundMax"), _num(upper))

    def ratio(self, root: ET.Element, r: RatioDimension) -> None:
        el = ET.SubElement(root, _q(NS_TRANSFORMS, "transformation"), {_q(NS_TRANSFORMS, "id"): r.id})
        self._bounds(el, r.bound_min, r.bound_max)
        fr = ET.SubElement(el, _q(NS_TRANSFORMS, "fratio"), {
            _q(NS_TRANSFORMS, "A"): _num(r.A), _q(NS_TRANSFORMS, "B"): _num(r.B), _q(NS_TRANSFORMS, "C"): _num(r.C)})
        for ch in (r.numerator, r.denominator):
            ET.SubElement(fr, _q(NS_DATATYPE, "fcs-dimension"), {_q(NS_DATATYPE, "name"): ch})

    def matrix(self, root: ET.Element, mid: str, m: Any) -> None:
        if isinstance(m, SpectrumMatrix):
            fluoro, detectors, rows, inverted = m.fluorochromes, m.detectors, m.matrix, m.inverted_already
        elif hasattr(m, "channels") and hasattr(m, "matrix"):  # SpilloverMatrix: rows/cols = detectors
            fluoro = detectors = tuple(m.channels)
            rows, inverted = np.asarray(m.matrix), False
        else:
            raise self.fail(f"compensation {mid!r} ({type(m).__name__}) cannot be written as a spectrumMatrix")
        el = ET.SubElement(root, _q(NS_TRANSFORMS, "spectrumMatrix"), {_q(NS_TRANSFORMS, "id"): mid})
        if inverted:
            el.set(_q(NS_TRANSFORMS, "matrix-inverted-already"), "true")
        for section, names in (("fluorochromes", fluoro), ("detectors", detectors)):
            sec = ET.SubElement(el, _q(NS_TRANSFORMS, section))
            for n in names:
                ET.SubElement(sec, _q(NS_DATATYPE, "fcs-dimension"), {_q(NS_DATATYPE, "name"): n})
        for row in rows:
            sp = ET.SubElement(el, _q(NS_TRANSFORMS, "spectrum"))
            for v in row:
                ET.SubElement(sp, _q(NS_TRANSFORMS, "coefficient"), {_q(NS_TRANSFORMS, "value"): _num(v)})

    def dim_attrs(self, d: Dimension) -> dict[str, str]:
        a = {_q(NS_GATING, "compensation-ref"): UNCOMPENSATED_NAME if is_uncompensated(d.compensation) else d.compensation}
        if d.transform:
            if d.transform not in self.s.transforms:
                raise self.fail(f"dimension {d} names transform {d.transform!r}, which the strategy lacks")
            a[_q(NS_GATING, "transformation-ref")] = d.transform
        return a

    def dim_child(self, parent: ET.Element, d: Dimension) -> None:
        if d.channel in self.s.derived:
            ET.SubElement(parent, _q(NS_DATATYPE, "new-dimension"), {_q(NS_DATATYPE, "transformation-ref"): d.channel})
        else:
            ET.SubElement(parent, _q(NS_DATATYPE, "fcs-dimension"), {_q(NS_DATATYPE, "name"): d.channel})

    def coordinate(self, parent: ET.Element, tag: str, value: float) -> None:
        ET.SubElement(parent, _q(NS_GATING, tag), {_q(NS_DATATYPE, "value"): _num(value)})

    def gate(self, root: ET.Element, pop: Population) -> None:
        g = pop.gate
        gid = self.ids[pop]
        kind = type(g)
        for base in (RectangleGate, PolygonGate, EllipsoidGate, QuadrantGate, BooleanGate):
            if isinstance(g, base):
                kind = base
                break
        else:
            raise self.fail(f"gate {g.id!r} ({type(g).__name__}) is not a Gating-ML gate type")
        attrs = {_q(NS_GATING, "id"): gid}
        if pop.parent is not None:
            attrs[_q(NS_GATING, "parent_id")] = self.ids[pop.parent]
        el = ET.SubElement(root, _q(NS_GATING, kind.__name__), attrs)
        if kind is RectangleGate:
            for d, lo, hi in zip(g.dimensions, g.mins, g.maxs):
                a = self.dim_attrs(d)
                if lo is not None:
                    a[_q(NS_GATING, "min")] = _num(lo)
                if hi is not None:
                    a[_q(NS_GATING, "max")] = _num(hi)
                self.dim_child(ET.SubElement(el, _q(NS_GATING, "dimension"), a), d)
        elif kind is PolygonGate:
            if not g.include_boundary:
                _declare_half_open(el)
            for d in g.dimensions:
                self.dim_child(ET.SubElement(el, _q(NS_GATING, "dimension"), self.dim_attrs(d)), d)
            for x, y in g.vertices:
                v = ET.SubElement(el, _q(NS_GATING, "vertex"))
                self.coordinate(v, "coordinate", x)
                self.coordinate(v, "coordinate", y)
        elif kind is EllipsoidGate:
            for d in g.dimensions:
                self.dim_child(ET.SubElement(el, _q(NS_GATING, "dimension"), self.dim_attrs(d)), d)
            mean = ET.SubElement(el, _q(NS_GATING, "mean"))
            for v in g.mean:
                self.coordinate(mean, "coordinate", v)
            cov = ET.SubElement(el, _q(NS_GATING, "covarianceMatrix"))
            for row in g.covariance:
                r = ET.SubElement(cov, _q(NS_GATING, "row"))
                for v in row:
                    self.coordinate(r, "entry", v)
            self.coordinate(el, "distanceSquare", g.distance_square)
        elif kind is QuadrantGate:
            el.set(_q(NS_GATING, "id"), g.id)
            for dv in g.dividers:
                a = {_q(NS_GATING, "id"): dv.id, **self.dim_attrs(dv.dimension)}
                del_el = ET.SubElement(el, _q(NS_GATING, "divider"), a)
                self.dim_child(del_el, dv.dimension)
                for v in dv.values:
                    ET.SubElement(del_el, _q(NS_GATING, "value")).text = _num(v)
            for q in g.quadrants:
                qe = ET.SubElement(el, _q(NS_GATING, "Quadrant"), {_q(NS_GATING, "id"): q.id})
                for ref, loc in q.positions.items():
                    ET.SubElement(qe, _q(NS_GATING, "position"),
                                  {_q(NS_GATING, "divider_ref"): ref, _q(NS_GATING, "location"): _num(loc)})
        else:
            op = ET.SubElement(el, _q(NS_GATING, g.operator))
            for o in g.operands:
                try:
                    target = self.s.tree.find(o.ref)
                except GatingError as exc:
                    raise self.fail(f"boolean gate {g.id!r}: {exc}") from None
                ET.SubElement(op, _q(NS_GATING, "gateReference"), {
                    _q(NS_GATING, "ref"): self.ids[target],
                    _q(NS_GATING, "use-as-complement"): "true" if o.complement else "false"})

    def document(self) -> ET.Element:
        root = ET.Element(_q(NS_GATING, "Gating-ML"))
        for tid, xf in self.s.transforms.items():
            self.transform(root, tid, xf)
        for r in self.s.derived.values():
            self.ratio(root, r)
        for mid, m in self.s.compensations.items():
            self.matrix(root, mid, m)
        done_quadrants: set[tuple[int, int]] = set()
        for pop in self.pops:
            if isinstance(pop.gate, QuadrantGate):
                key = (id(pop.gate), id(pop.parent))
                if key in done_quadrants:
                    continue
                done_quadrants.add(key)
            self.gate(root, pop)
        return root


def write_gatingml(strategy: GatingStrategy, path: str | os.PathLike) -> None:
    """Write ``strategy`` as a Gating-ML 2.0 file (atomically: temporary file, then rename).

    Population names that occur more than once in the tree are written with their
    path joined by "_" as the gate id (Gating-ML ids are global). Transforms without
    a Gating-ML 2.0 form (FlowJo biex, FlowJo log) raise GatingMLError.
    """
    path = os.fspath(path)
    root = _with_prefixes(_Writer(strategy, path).document())
    ET.indent(root)
    data = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    with atomic_output(path, "wb", error_class=GatingMLError) as fh:
        fh.write(data)
