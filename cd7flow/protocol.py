"""Protocol files: declarative, versioned TOML that says how an assay gates and decides.

A protocol names its markers (found by $PnS with aliases, or mapped to a $PnN), the
scatter and Time channels, the compensation, the transforms, the gate sequence (method
and parameters per gate), the positivity reference, the intensity words and the verdict
rule. Shipped protocols live in ``cd7flow/protocols/*.toml``; a lab edits a copy.

``load_protocol(name_or_path)`` reads and validates one; every problem is a
:class:`~cd7flow.errors.ProtocolError` naming the file, the key and what is wrong.
A protocol may start from another with ``extends = "screening"`` (tables are merged
key by key, a gate with the same id replaces fields of the base gate, other lists are
replaced). ``Protocol.sha256`` is the sha256 of the file's bytes, followed by its bases'
bytes when it extends one, so any edit anywhere in the chain changes it.
"""
from __future__ import annotations

import copy
import hashlib
import math
import operator
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gating.auto import METHODS
from gating.tree import ROOT

from .errors import ProtocolError
from .sample import Sample

PROTOCOL_DIR = Path(__file__).resolve().parent / "protocols"

ASSAYS = ("screening", "autogate", "car")
SCATTER_KEYS = ("fsc_a", "fsc_h", "ssc_a", "time", "ssc_h")
_OPTIONAL_SCATTER_KEYS = ("ssc_h",)  # added later: a protocol without them still loads
TOP_KEYS = {"protocol", "extends", "markers", "scatter", "compensation", "transforms", "gates", "positivity",
            "intensity", "verdict", "qc", "car"}
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True)
class VerdictRule:
    """A threshold rule on a percentage, e.g. ``"> 30"`` (boundary excluded) or ``">= 20"``."""

    op: str
    value: float
    text: str

    @classmethod
    def parse(cls, text: str, where: str = "verdict rule") -> "VerdictRule":
        m = re.fullmatch(r"\s*(>=|<=|>|<)\s*([0-9]+(?:\.[0-9]+)?)\s*%?\s*", str(text))
        if not m:
            raise ValueError(f"{where} {text!r} is not '<op> <percent>' with op one of >, >=, <, <= (e.g. '> 30')")
        value = float(m.group(2))
        if not 0 <= value <= 100:
            raise ValueError(f"{where} {text!r}: the percentage must be within 0..100")
        return cls(m.group(1), value, f"{m.group(1)} {m.group(2)}%")

    def passes(self, pct: float) -> bool:
        return bool(_OPS[self.op](pct, self.value))


@dataclass(frozen=True)
class MarkerSpec:
    name: str
    aliases: tuple[str, ...]
    channel: str | None = None
    required: bool = False


@dataclass(frozen=True)
class GateSpec:
    id: str
    method: str
    parent: str
    dimensions: tuple[str, ...]
    params: dict[str, Any]
    optional: bool = False
    populations: tuple[str, ...] = ()


@dataclass
class Protocol:
    """A validated protocol. ``data`` is the merged TOML; the typed fields are views of it."""

    name: str
    version: str
    assay: str
    path: str
    sha256: str
    data: dict[str, Any]
    markers: dict[str, MarkerSpec]
    scatter: dict[str, tuple[str, ...]]
    gates: list[GateSpec]
    rule: VerdictRule | None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, key: str) -> dict[str, Any]:
        return self.data.get(key, {})

    def provenance(self) -> dict[str, str]:
        return {"protocol": self.name, "protocol_version": self.version, "protocol_sha256": self.sha256,
                "protocol_path": self.path}


def list_protocols() -> list[str]:
    """Names of the protocols shipped in the package."""
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.toml"))


def _locate(name_or_path: str | os.PathLike) -> Path:
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.suffix.lower() == ".toml" or os.sep in text or "/" in text or path.is_file():
        if not path.is_file():
            raise ProtocolError(text, "no such protocol file")
        return path
    shipped = PROTOCOL_DIR / f"{text}.toml"
    if not shipped.is_file():
        raise ProtocolError(text, f"unknown protocol; shipped protocols: {', '.join(list_protocols())} "
                                  "(or give a path to a .toml file)")
    return shipped


def _read_toml(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProtocolError(path, f"cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8")), raw
    except UnicodeDecodeError as exc:
        raise ProtocolError(path, f"not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(path, f"invalid TOML: {exc}") from None


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in child.items():
        if key == "gates" and isinstance(value, list) and isinstance(out.get("gates"), list):
            gates = out["gates"]
            index = {g.get("id"): i for i, g in enumerate(gates) if isinstance(g, dict)}
            for g in value:
                i = index.get(g.get("id")) if isinstance(g, dict) else None
                if i is None:
                    gates.append(copy.deepcopy(g))
                else:
                    gates[i] = _merge(gates[i], g)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], bytes]:
    data, raw = _read_toml(path)
    base_name = data.get("extends")
    if base_name is None:
        return data, raw
    if not isinstance(base_name, str):
        raise ProtocolError(path, f"key 'extends' must be a protocol name or path, got {base_name!r}")
    base_path = _locate(base_name if not base_name.endswith(".toml") else path.parent / base_name)
    if base_path.resolve() in seen or base_path.resolve() == path.resolve():
        raise ProtocolError(path, f"key 'extends': {base_name!r} extends itself (a cycle)")
    base, base_raw = _load_chain(base_path, seen + (path.resolve(),))
    child = {k: v for k, v in data.items() if k != "extends"}
    return _merge(base, child), raw + b"\n" + base_raw


def load_protocol(name_or_path: str | os.PathLike = "screening") -> Protocol:
    """Load and validate a protocol by shipped name (``"screening"``) or by path."""
    path = _locate(name_or_path)
    data, raw_chain = _load_chain(path)
    return _validate(data, path, hashlib.sha256(raw_chain).hexdigest())


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str) -> ProtocolError:
        return ProtocolError(self.path, f"key '{key}': {problem}")

    def table(self, data: dict, key: str, required: bool = True) -> dict:
        value = data.get(key.split(".")[-1])
        if value is None:
            if required:
                raise self.fail(key, "is missing")
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {type(value).__name__}")
        return value

    def string(self, table: dict, key: str, full: str, default: str | None = None) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(full, "is missing" if value is None else f"must be a non-empty string, got {value!r}")
        return value

    def number(self, table: dict, key: str, full: str, lo: float | None = None, hi: float | None = None,
               default: float | None = None) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(full, "is missing" if value is None else f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise self.fail(full, f"must be a finite number, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(full, f"{value} is outside {lo}..{hi}")
        return float(value)

    def strings(self, table: dict, key: str, full: str, default=None) -> tuple[str, ...]:
        value = table.get(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.fail(full, f"must be a non-empty list of strings, got {value!r}")
        return tuple(value)

    def only(self, table: dict, allowed: set[str], where: str) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}" if where else unknown[0],
                            f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _validate(data: dict[str, Any], path: Path, sha256: str) -> Protocol:
    c = _Checker(path)
    c.only(data, TOP_KEYS, "")
    head = c.table(data, "protocol")
    c.only(head, {"name", "version", "assay", "description"}, "protocol")
    name = c.string(head, "name", "protocol.name")
    version = c.string(head, "version", "protocol.version")
    if not re.fullmatch(r"\d+(\.\d+){0,2}([-+.][0-9A-Za-z.]+)?", version):
        raise c.fail("protocol.version", f"{version!r} is not a version like '1.0.0'")
    assay = c.string(head, "assay", "protocol.assay")
    if assay not in ASSAYS:
        raise c.fail("protocol.assay", f"unknown assay {assay!r} (known: {', '.join(ASSAYS)})")

    markers: dict[str, MarkerSpec] = {}
    for mname, spec in c.table(data, "markers").items():
        where = f"markers.{mname}"
        if not isinstance(spec, dict):
            raise c.fail(where, "must be a table like { aliases = [\"CD7\"] }")
        c.only(spec, {"aliases", "channel", "required"}, where)
        aliases = c.strings(spec, "aliases", f"{where}.aliases", default=[mname])
        channel = spec.get("channel")
        if channel is not None and (not isinstance(channel, str) or not channel):
            raise c.fail(f"{where}.channel", f"must be a $PnN string, got {channel!r}")
        required = spec.get("required", False)
        if not isinstance(required, bool):
            raise c.fail(f"{where}.required", f"must be true or false, got {required!r}")
        markers[mname] = MarkerSpec(mname, aliases, channel, required)

    scatter_t = c.table(data, "scatter")
    c.only(scatter_t, set(SCATTER_KEYS), "scatter")
    scatter = {k: c.strings(scatter_t, k, f"scatter.{k}") for k in SCATTER_KEYS
               if k in scatter_t or k not in _OPTIONAL_SCATTER_KEYS}

    comp = c.table(data, "compensation", required=False)
    c.only(comp, {"source"}, "compensation")
    if comp.get("source", "file") not in ("file", "none"):
        raise c.fail("compensation.source", f"must be 'file' or 'none', got {comp.get('source')!r}")

    transforms = c.table(data, "transforms", required=False) or {
        "fluorescence": {"kind": "logicle", "t": "range", "w": "auto", "m": 4.5, "a": 0.0}, "ssc": {"kind": "linear"}}
    data.setdefault("transforms", transforms)
    c.only(transforms, {"fluorescence", "ssc"}, "transforms")
    for key in ("fluorescence", "ssc"):
        spec = c.table(transforms, f"transforms.{key}")
        kind = c.string(spec, "kind", f"transforms.{key}.kind")
        params = {k: v for k, v in spec.items() if k != "kind"}
        _check_transform(c, f"transforms.{key}", kind, params)

    dims_known = set(markers) | set(SCATTER_KEYS)
    gates: list[GateSpec] = []
    populations = {ROOT}
    raw_gates = data.get("gates")
    if not isinstance(raw_gates, list) or not raw_gates:
        raise c.fail("gates", "must be a non-empty array of tables ([[gates]])")
    for i, g in enumerate(raw_gates):
        where = f"gates[{i}]"
        if not isinstance(g, dict):
            raise c.fail(where, "must be a table")
        c.only(g, {"id", "method", "parent", "dimensions", "params", "optional", "populations"}, where)
        gid = c.string(g, "id", f"{where}.id")
        where = f"gates.{gid}"
        method = c.string(g, "method", f"{where}.method")
        if method not in METHODS:
            raise c.fail(f"{where}.method", f"unknown method {method!r} (known: {', '.join(METHODS)})")
        parent = c.string(g, "parent", f"{where}.parent")
        if parent not in populations:
            raise c.fail(f"{where}.parent", f"{parent!r} is not a gate defined above it ({', '.join(sorted(populations))})")
        dims = c.strings(g, "dimensions", f"{where}.dimensions")
        for d in dims:
            if d not in dims_known:
                raise c.fail(f"{where}.dimensions", f"{d!r} is neither a marker nor one of {', '.join(SCATTER_KEYS)}")
        params = g.get("params", {})
        if not isinstance(params, dict):
            raise c.fail(f"{where}.params", "must be a table")
        allowed_params = METHODS[method].params()
        for key in params:
            if key not in allowed_params:
                raise c.fail(f"{where}.params.{key}",
                             f"unknown parameter for method {method} (allowed: {', '.join(sorted(allowed_params))})")
            if key == "reference_exclude":  # a list of populations (checked below)
                if not isinstance(params[key], list) or not all(isinstance(x, str) for x in params[key]):
                    raise c.fail(f"{where}.params.{key}", "must be a list of population names")
            elif key == "groups" and method == "lineage":  # lists of this gate's markers
                ok = isinstance(params[key], list) and all(
                    isinstance(grp, list) and grp and all(isinstance(x, str) and x in dims_known for x in grp)
                    for grp in params[key])
                if not ok:  # markers the gate does not use are ignored when it is fitted
                    raise c.fail(f"{where}.params.{key}", "must be a list of lists of marker names")
            elif key in ("primary", "mature_markers") and method == "lineage":  # a list of this gate's markers
                if not isinstance(params[key], list) or not all(isinstance(x, str) and x in dims_known
                                                                for x in params[key]):
                    raise c.fail(f"{where}.params.{key}", "must be a list of marker names")
            elif isinstance(params[key], (dict, list)):
                raise c.fail(f"{where}.params.{key}", "must be a number, string or boolean")
        optional = g.get("optional", False)
        if not isinstance(optional, bool):
            raise c.fail(f"{where}.optional", f"must be true or false, got {optional!r}")
        pops: tuple[str, ...] = ()
        known_pops = METHODS[method].populations
        if known_pops:
            pops = c.strings(g, "populations", f"{where}.populations", default=[known_pops[0]])
            bad = [p for p in pops if p not in known_pops]
            if bad:
                raise c.fail(f"{where}.populations", f"unknown population {bad[0]!r} (known: {', '.join(known_pops)})")
            populations.update(pops)
        if gid in populations:
            raise c.fail(f"{where}.id", f"{gid!r} is defined twice")
        populations.add(gid)
        for key in ("reference", "against", "mature"):
            if key in params and params[key] not in populations:
                raise c.fail(f"{where}.params.{key}", f"{params[key]!r} is not a population defined above")
        for other in params.get("reference_exclude", []):
            if other not in populations:
                raise c.fail(f"{where}.params.reference_exclude", f"{other!r} is not a population defined above")
        _check_estimator(c, where, method, dims, params)
        gates.append(GateSpec(gid, method, parent, dims, dict(params), optional, pops))

    settings: dict[str, dict[str, Any]] = {}
    if assay == "screening":
        settings = _validate_screening(c, data, markers, populations, gates)
    rule = None
    verdict = c.table(data, "verdict", required=assay == "screening")
    c.only(verdict, {"rule", "source"}, "verdict")
    if verdict:
        try:
            rule = VerdictRule.parse(c.string(verdict, "rule", "verdict.rule"), "rule")
        except ValueError as exc:
            raise c.fail("verdict.rule", str(exc)) from None
    return Protocol(name, version, assay, str(path), sha256, data, markers, scatter, gates, rule, settings)


def _check_estimator(c: _Checker, where: str, method: str, dims: tuple[str, ...], params: dict[str, Any]) -> None:
    """Build the gate's estimator and validate its parameters now, so a value that would only
    fail when a file is gated (n_components = -4, percentile = -1 or nan) fails at load time."""
    from gating.auto import ParameterError
    from gating.dimensions import Dimension

    m = METHODS[method]
    n_dims = m.estimator.n_dims
    if n_dims is not None and len(dims) != n_dims:
        raise c.fail(f"{where}.dimensions", f"method {method} takes {n_dims} dimension(s), got {len(dims)}")
    for key, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise c.fail(f"{where}.params.{key}", f"must be a finite number, got {value!r}")
    try:
        m.build([Dimension(d) for d in dims], dims, where, params).check_params()
    except ParameterError as exc:
        raise c.fail(f"{where}.params.{exc.param}", str(exc)) from None
    except TypeError as exc:  # a value of the wrong kind where the estimator needs a number or list
        raise c.fail(f"{where}.params", str(exc)) from None


def _check_transform(c: _Checker, where: str, kind: str, params: dict[str, Any]) -> None:
    if kind == "linear":
        if params:
            raise c.fail(f"{where}.{sorted(params)[0]}", "a linear transform takes no parameters")
        return
    if kind not in ("logicle", "asinh"):
        raise c.fail(f"{where}.kind", f"must be logicle, asinh or linear, got {kind!r}")
    allowed = {"t", "w", "m", "a"} if kind == "logicle" else {"t", "m", "a"}
    c.only(params, allowed, where)
    t = params.get("t", "range")
    if t != "range" and (isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0):
        raise c.fail(f"{where}.t", f"must be 'range' ($PnR of the channel) or a positive number, got {t!r}")
    m = c.number(params, "m", f"{where}.m", 0.5, 10.0, default=4.5)
    if kind == "logicle":
        w = params.get("w", "auto")
        if w != "auto":
            c.number(params, "w", f"{where}.w", 0.0, m / 2)
    c.number(params, "a", f"{where}.a", -5.0, 5.0, default=0.0)


def _validate_screening(c: _Checker, data, markers, populations, gates) -> dict[str, dict[str, Any]]:
    pos = c.table(data, "positivity")
    c.only(pos, {"marker", "population", "method", "negative_reference", "positive_reference", "percentile",
                 "min_reference_events", "estimate", "bootstrap"}, "positivity")
    marker = c.string(pos, "marker", "positivity.marker")
    if marker not in markers:
        raise c.fail("positivity.marker", f"{marker!r} is not declared under [markers]")
    for g in gates:
        if g.method == "lineage" and marker in g.dimensions:
            raise c.fail(f"gates.{g.id}.dimensions",
                         f"refines blasts on {marker}, the marker being screened: that would select the answer")
    population = c.string(pos, "population", "positivity.population")
    if population not in populations:
        raise c.fail("positivity.population", f"{population!r} is not a gate or population of the sequence")
    method = c.string(pos, "method", "positivity.method")
    if method not in ("reference_percentile", "fmo_percentile"):
        raise c.fail("positivity.method", f"must be reference_percentile or fmo_percentile, got {method!r}")
    for key in ("negative_reference", "positive_reference"):
        for ref in c.strings(pos, key, f"positivity.{key}"):
            if ref not in populations:
                raise c.fail(f"positivity.{key}", f"{ref!r} is not a gate or population of the sequence")
    c.number(pos, "percentile", "positivity.percentile", 50.0, 99.999)
    c.number(pos, "min_reference_events", "positivity.min_reference_events", 1, None, default=100)
    estimate = c.string(pos, "estimate", "positivity.estimate", default="mixture")
    if estimate not in ("mixture", "overton", "threshold"):
        raise c.fail("positivity.estimate", f"must be mixture, overton or threshold, got {estimate!r}")
    c.number(pos, "bootstrap", "positivity.bootstrap", 20, 10000, default=200)

    inten = c.table(data, "intensity")
    allowed = {"negative_below_pct", "partial_below_pct", "dim_below_pos_ratio", "bright_above_pos_ratio"}
    c.only(inten, allowed, "intensity")
    for key in allowed:
        c.number(inten, key, f"intensity.{key}", 0.0, 100.0 if key.endswith("pct") else None)
    if inten["negative_below_pct"] > inten["partial_below_pct"]:
        raise c.fail("intensity.partial_below_pct", "must be >= intensity.negative_below_pct")
    if inten["dim_below_pos_ratio"] > inten["bright_above_pos_ratio"]:
        raise c.fail("intensity.bright_above_pos_ratio", "must be >= intensity.dim_below_pos_ratio")

    qc = c.table(data, "qc")
    c.only(qc, {"min_blasts", "min_viable_singlets", "max_time_loss_pct"}, "qc")
    c.number(qc, "min_blasts", "qc.min_blasts", 1)
    c.number(qc, "min_viable_singlets", "qc.min_viable_singlets", 1)
    c.number(qc, "max_time_loss_pct", "qc.max_time_loss_pct", 0.0, 100.0)
    return {"positivity": pos, "intensity": inten, "qc": qc}


# ---------------------------------------------------------------------------------------------
# Marker resolution: the one place $PnS / aliases / explicit channels turn into $PnN.
# ---------------------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return re.sub(r"[\s_\-/]+", "", text.strip().lower())


def _pns_tokens(pns: str) -> set[str]:
    """'CD7 FITC' -> {'cd7fitc', 'cd7', 'fitc'}: the whole label and each word of it."""
    words = [w for w in re.split(r"[\s,;:|()]+", pns.strip()) if w]
    return {_norm(pns)} | {_norm(w) for w in words}


def resolve_markers(sample: Sample, protocol: Protocol) -> tuple[dict[str, str], list[str]]:
    """Map every protocol marker and scatter key to a $PnN of ``sample``.

    Returns ``(mapping, missing)``: ``missing`` lists markers/scatter keys not found.
    An explicit ``channel`` must exist (ProtocolError otherwise, naming the file). A
    marker whose aliases match several channels is an error, never a silent first pick.
    """
    mapping: dict[str, str] = {}
    missing: list[str] = []
    lowered = {ch.lower(): ch for ch in sample.channels}
    for spec in protocol.markers.values():
        if spec.channel is not None:
            ch = lowered.get(spec.channel.lower())
            if ch is None:
                raise ProtocolError(protocol.path, f"key 'markers.{spec.name}.channel': {spec.channel!r} is not a "
                                                   f"channel of {sample.name} ({', '.join(sample.channels)})")
            mapping[spec.name] = ch
            continue
        wanted = {_norm(a) for a in spec.aliases}
        hits = [ch for ch, pns in zip(sample.channels, sample.markers) if pns and _pns_tokens(pns) & wanted]
        if not hits:
            # Some instruments put the marker in $PnN ("CD7-FITC-A") and leave $PnS empty.
            hits = [ch for ch, pns in zip(sample.channels, sample.markers)
                    if not pns and _pns_tokens(re.sub(r"-[AHW]$", "", ch).replace("-", " ")) & wanted]
        if len(hits) > 1:
            # BD files label the -A, -H and -W of one detector with the same $PnS: use the area.
            areas = [ch for ch in hits if ch.upper().endswith("-A")]
            if len(areas) == 1:
                hits = areas
        if len(hits) > 1:
            raise ProtocolError(sample.path, f"marker {spec.name} matches several channels "
                                             f"({', '.join(hits)}); map it with markers.{spec.name}.channel")
        if hits:
            mapping[spec.name] = hits[0]
        else:
            missing.append(spec.name)
    for key, candidates in protocol.scatter.items():
        ch = next((lowered[c.lower()] for c in candidates if c.lower() in lowered), None)
        if ch is None:
            missing.append(key)
        else:
            mapping[key] = ch
    return mapping, missing
