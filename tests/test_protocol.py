"""Protocol files: the shipped ones load, every setting is validated, markers resolve by $PnS."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cd7flow.errors import ProtocolError
from cd7flow.protocol import PROTOCOL_DIR, VerdictRule, list_protocols, load_protocol, resolve_markers
from cd7flow.sample import CaseInsensitiveDict, Sample

SHIPPED = PROTOCOL_DIR / "screening.toml"


def _sample(pairs, name="t.fcs"):
    channels = tuple(c for c, _ in pairs)
    return Sample(events=np.zeros((3, len(pairs)), np.float32), channels=channels,
                  markers=tuple(m for _, m in pairs), metadata=CaseInsensitiveDict({}),
                  ranges=np.full(len(pairs), 262144.0), path=name)


def _write(tmp_path, text, name="p.toml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _edited(tmp_path, old, new, name="edited.toml"):
    text = SHIPPED.read_text(encoding="utf-8")
    assert old in text, old
    return _write(tmp_path, text.replace(old, new, 1), name)


def test_shipped_protocols_load_with_name_version_and_content_hash():
    assert {"screening", "screening_aml", "screening_tall", "leukocytes"} <= set(list_protocols())
    p = load_protocol("screening")
    assert (p.name, p.version, p.assay) == ("screening", "1.5.0", "screening")
    assert p.sha256 == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert p.rule == VerdictRule(">", 30.0, "> 30%")
    assert [g.id for g in p.gates][:5] == ["time_clean", "cells", "singlets", "singlets_ssc", "viable"]
    assert p.markers["CD7"].required and "Viab" in p.markers["Viability"].aliases
    assert p.provenance()["protocol_sha256"] == p.sha256
    assert load_protocol(SHIPPED).sha256 == p.sha256  # by path too


def test_variants_extend_the_base_and_hash_the_whole_chain():
    aml = load_protocol("screening_aml")
    refine = next(g for g in aml.gates if g.id == "blasts_refined")
    assert refine.dimensions == ("CD34", "CD117", "CD33")
    assert refine.params["reference"] == "lymphocytes"
    assert refine.parent == "blasts" and refine.method == "lineage"  # kept from the base
    raw = (PROTOCOL_DIR / "screening_aml.toml").read_bytes() + b"\n" + SHIPPED.read_bytes()
    assert aml.sha256 == hashlib.sha256(raw).hexdigest()
    tall = load_protocol("screening_tall")
    assert "CD7" not in next(g for g in tall.gates if g.id == "blasts_refined").dimensions


def test_extends_of_an_edited_base_changes_the_hash(tmp_path):
    base = _edited(tmp_path, 'rule = "> 30"', 'rule = ">= 20"', name="base.toml")
    child = _write(tmp_path, 'extends = "base.toml"\n[protocol]\nname = "mine"\nversion = "2.1"\nassay = "screening"\n',
                   "child.toml")
    p = load_protocol(child)
    assert (p.name, p.version) == ("mine", "2.1")
    assert p.rule.passes(20.0) and not VerdictRule.parse("> 30").passes(30.0)
    before = p.sha256
    base.write_text(base.read_text().replace('">= 20"', '">= 21"'))
    assert load_protocol(child).sha256 != before


@pytest.mark.parametrize("text, op, value, at_boundary", [
    ("> 30", ">", 30.0, False), (">= 20", ">=", 20.0, True), (">=20%", ">=", 20.0, True), ("> 98", ">", 98.0, False),
])
def test_verdict_rule_boundary(text, op, value, at_boundary):
    rule = VerdictRule.parse(text)
    assert (rule.op, rule.value) == (op, value)
    assert rule.passes(value) is at_boundary
    assert rule.passes(value + 0.01) and not rule.passes(value - 0.01)


@pytest.mark.parametrize("bad", ["30", "=> 30", "> 130", "> abc", ""])
def test_verdict_rule_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        VerdictRule.parse(bad)


@pytest.mark.parametrize("old, new, key, problem", [
    ('rule = "> 30"', 'rule = "about 30"', "verdict.rule", "is not '<op> <percent>'"),
    ("[qc]", "[qc]\nmin_blastz = 3", "qc.min_blastz", "unknown key"),
    ("percentile = 99.5\nmin_reference_events = 100", "percentile = 100.5\nmin_reference_events = 100",
     "positivity.percentile", "outside"),
    ('params = { reference = "granulocytes"', 'params = { reference = "granulocytez"', "gates.b_cells.params.reference",
     "'granulocytez' is not a population defined above"),
    ('method = "cells"', 'method = "magic"', "gates.cells.method", "unknown method 'magic'"),
    ('parent = "cells"', 'parent = "nowhere"', "gates.singlets.parent", "'nowhere' is not a gate defined above"),
    ('dimensions = ["CD34", "CD117", "CD33", "CD3", "CD5"]', 'dimensions = ["CD34", "CD7"]',
     "gates.blasts_refined.dimensions", "the marker being screened"),
    ('negative_reference = ["b_cells", "monocytes", "granulocytes"]', 'negative_reference = ["b_cels"]',
     "positivity.negative_reference", "'b_cels' is not a gate or population"),
    ('version = "1.5.0"', 'version = "one"', "protocol.version", "is not a version"),
    ('CD7 = { aliases = ["CD7"], required = true }', 'CD7 = { aliases = ["CD7"], required = "yes" }',
     "markers.CD7.required", "must be true or false"),
    ("negative_below_pct = 20.0", "negative_below_pct = 90.0", "intensity.partial_below_pct", "must be >="),
    ('fluorescence = { kind = "logicle"', 'fluorescence = { kind = "logicle", q = 1', "transforms.fluorescence.q",
     "unknown key"),
    ('[protocol]\nname = "screening"', 'colour = 3\n[protocol]\nname = "screening"', "colour", "unknown key"),
    ("params = { n_mad_low = 6.0, n_mad_high = 5.0 }", "params = { n_mad_lo = 6.0, n_mad_high = 5.0 }",
     "gates.singlets.params.n_mad_lo", "unknown parameter for method singlets"),
])
def test_invalid_settings_name_the_file_key_and_problem(tmp_path, old, new, key, problem):
    path = _edited(tmp_path, old, new)
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    assert f"key '{key}'" in msg and problem in msg, msg


def test_unreadable_protocols_are_protocol_errors(tmp_path):
    with pytest.raises(ProtocolError, match="unknown protocol; shipped protocols: .*screening"):
        load_protocol("no_such_protocol")
    with pytest.raises(ProtocolError, match="no such protocol file"):
        load_protocol(tmp_path / "missing.toml")
    with pytest.raises(ProtocolError, match="invalid TOML"):
        load_protocol(_write(tmp_path, "[protocol\nname = 1"))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('[protocol]\nname = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ProtocolError, match="not UTF-8"):
        load_protocol(bad)
    loop = _write(tmp_path, 'extends = "loop.toml"\n', "loop.toml")
    with pytest.raises(ProtocolError, match="cycle"):
        load_protocol(loop)


def test_markers_resolve_by_pns_alias_word_and_explicit_channel(tmp_path):
    p = load_protocol("screening")
    s = _sample([("FSC-A", ""), ("FSC-H", ""), ("SSC-A", ""), ("B1-A", "cd7 FITC"), ("V2-A", "PTPRC"),
                 ("R1-A", "Live/Dead"), ("Time", "")])
    mapping, missing = resolve_markers(s, p)
    assert mapping["CD7"] == "B1-A" and mapping["CD45"] == "V2-A" and mapping["Viability"] == "R1-A"
    assert mapping["fsc_a"] == "FSC-A" and mapping["time"] == "Time"
    assert "CD34" in missing and "CD3" in missing
    # CD3 must not match CD34 (whole words only)
    s2 = _sample([("FSC-A", ""), ("X-A", "CD34")])
    m2, _ = resolve_markers(s2, p)
    assert m2.get("CD34") == "X-A" and "CD3" not in m2
    # explicit mapping wins, and must exist
    explicit = _edited(tmp_path, 'CD7 = { aliases = ["CD7"], required = true }',
                       'CD7 = { aliases = ["CD7"], channel = "V2-A", required = true }')
    m3, _ = resolve_markers(s, load_protocol(explicit))
    assert m3["CD7"] == "V2-A"
    gone = _sample([("FSC-A", "")])
    with pytest.raises(ProtocolError, match="markers.CD7.channel.*not a channel of t.fcs"):
        resolve_markers(gone, load_protocol(explicit))


def test_marker_on_area_and_height_prefers_area_but_two_detectors_is_an_error():
    p = load_protocol("screening")
    s = _sample([("APC-A", "CD7"), ("APC-H", "CD7")])
    assert resolve_markers(s, p)[0]["CD7"] == "APC-A"
    s2 = _sample([("APC-A", "CD7"), ("FITC-A", "CD7")], name="dup.fcs")
    with pytest.raises(ProtocolError, match="dup.fcs: marker CD7 matches several channels"):
        resolve_markers(s2, p)
