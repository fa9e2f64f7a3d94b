"""Gating-ML 2.0 import/export against the ISAC compliance truths (gate_ref) and hand-made cases."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest

from cd7flow.datasource import GatingStrategy, SampleSource, SpectrumMatrix
from cd7flow.errors import GatingMLError
from cd7flow.io.fcs_read import read_fcs
from cd7flow.io.gatingml import read_gatingml, write_gatingml
from cd7flow.sample import CaseInsensitiveDict, Sample
from tests.conftest import SHARED_DATA

GATE_REF = SHARED_DATA / "flowkit" / "data" / "gate_ref"
GML_FILES = sorted(os.path.basename(p) for p in glob.glob(str(GATE_REF / "gml" / "*.xml")))
# The one truth file not named after its gate (see shared/data/README.md).
RENAMED = {("gml_parent_quadrant_rect_gate.xml", "ParRectangle1"): "ParQuadRect"}


@pytest.fixture(scope="module")
def data1(shared_data):
    return read_fcs(shared_data / "flowkit" / "data" / "gate_ref" / "data1.fcs")


@pytest.fixture(scope="module")
def truths(shared_data):
    out = {}
    for f in glob.glob(str(shared_data / "flowkit" / "data" / "gate_ref" / "truth" / "Results_*.txt")):
        out[os.path.basename(f)[len("Results_"):-4]] = np.loadtxt(f, dtype=np.int8).astype(bool)
    return out


def _truth_key(gml: str, name: str) -> str:
    return RENAMED.get((gml, name), name)


@pytest.mark.parametrize("gml", GML_FILES or ["<corpus absent>"])
def test_compliance_file_matches_truth_on_every_event(gml, data1, truths):
    strategy = read_gatingml(GATE_REF / "gml" / gml)
    result = strategy.apply(data1)
    checked = 0
    for pop in strategy.tree:
        key = _truth_key(gml, pop.name)
        if key in truths:
            mask = result.mask(pop.path)
            assert mask.shape == truths[key].shape
            wrong = np.flatnonzero(mask != truths[key])
            assert wrong.size == 0, f"{gml}: {pop.path_str} differs from Results_{key} on events {wrong[:10]}"
            checked += 1
    # every compliance file except gml_ellipse2 (no truth published) has at least one truth
    assert checked > 0 or gml == "gml_ellipse2_gate.xml"


def test_every_truth_file_is_covered(truths):
    covered = set()
    for gml in GML_FILES:
        covered |= {_truth_key(gml, p.name) for p in read_gatingml(GATE_REF / "gml" / gml).tree}
    assert len(truths) == 51
    assert set(truths) <= covered


@pytest.mark.parametrize("gml", GML_FILES or ["<corpus absent>"])
def test_export_import_round_trip_same_membership(gml, data1, tmp_path):
    strategy = read_gatingml(GATE_REF / "gml" / gml)
    out = tmp_path / "round.xml"
    write_gatingml(strategy, out)
    again = read_gatingml(out)
    assert [p.path for p in again.tree] == [p.path for p in strategy.tree]
    a, b = strategy.apply(data1), again.apply(data1)
    for pop in strategy.tree:
        assert np.array_equal(a.mask(pop.path), b.mask(pop.path)), pop.path_str
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


# ---------------------------------------------------------------- hand-made documents
HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"
 xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
 xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">
"""


def _doc(tmp_path: Path, body: str, name: str = "g.xml") -> Path:
    p = tmp_path / name
    p.write_text(HEAD + body + "\n</gating:Gating-ML>\n", encoding="utf-8")
    return p


def _sample(**cols) -> Sample:
    names = tuple(cols)
    ev = np.column_stack([np.asarray(cols[n], float) for n in names])
    return Sample(ev, names, ("",) * len(names), CaseInsensitiveDict({}), np.full(len(names), 1024.0))


def test_bounded_flin_clips_into_the_gate(tmp_path):
    # flin T=100 A=0 -> x/100, bounded to [0.1, 0.5]; gate [0.1, 0.6): everything from x=-inf to
    # x<60 is in after clipping, including negatives (clipped up to 0.1) and x=70 (clipped to 0.5).
    p = _doc(tmp_path, """
 <transforms:transformation transforms:id="L" transforms:boundMin="0.1" transforms:boundMax="0.5">
  <transforms:flin transforms:T="100" transforms:A="0"/>
 </transforms:transformation>
 <gating:RectangleGate gating:id="R">
  <gating:dimension gating:compensation-ref="uncompensated" gating:transformation-ref="L" gating:min="0.1" gating:max="0.6">
   <data-type:fcs-dimension data-type:name="X"/></gating:dimension>
 </gating:RectangleGate>
 <gating:RectangleGate gating:id="Unreachable">
  <gating:dimension gating:compensation-ref="uncompensated" gating:transformation-ref="L" gating:min="0.55">
   <data-type:fcs-dimension data-type:name="X"/></gating:dimension>
 </gating:RectangleGate>""")
    s = read_gatingml(p)
    r = s.apply(_sample(X=[-50, 0, 5, 30, 70, 1e6]))
    assert r.mask("R").tolist() == [True] * 6
    assert r.count("Unreachable") == 0
    write_gatingml(s, tmp_path / "w.xml")
    assert 'boundMin="0.1"' in (tmp_path / "w.xml").read_text()


def test_bounded_ratio_and_zero_denominator(tmp_path):
    # flowCore's ratiotGml2 (which produced the ISAC results) divides as IEEE 754 does:
    # x/0 = +-inf, which a bound then clips; 0/0 = NaN, outside every gate.
    p = _doc(tmp_path, """
 <transforms:transformation transforms:id="Rat" transforms:boundMax="2">
  <transforms:fratio transforms:A="2" transforms:B="1" transforms:C="0">
   <data-type:fcs-dimension data-type:name="N"/><data-type:fcs-dimension data-type:name="D"/>
  </transforms:fratio>
 </transforms:transformation>
 <transforms:transformation transforms:id="Free">
  <transforms:fratio transforms:A="2" transforms:B="1" transforms:C="0">
   <data-type:fcs-dimension data-type:name="N"/><data-type:fcs-dimension data-type:name="D"/>
  </transforms:fratio>
 </transforms:transformation>
 <gating:RectangleGate gating:id="R">
  <gating:dimension gating:compensation-ref="uncompensated" gating:min="1" gating:max="2.5">
   <data-type:new-dimension data-type:transformation-ref="Rat"/></gating:dimension>
 </gating:RectangleGate>
 <gating:RectangleGate gating:id="Low">
  <gating:dimension gating:compensation-ref="uncompensated" gating:max="0">
   <data-type:new-dimension data-type:transformation-ref="Free"/></gating:dimension>
 </gating:RectangleGate>""")
    s = read_gatingml(p)
    src = s.source(_sample(N=[3, 1, 11, 5, 1, 0], D=[4, 5, 2, 0, 0, 0]))
    from gating.dimensions import Dimension

    # 2*(3-1)/4 = 1, 0, 2*10/2 = 10 -> bounded 2, 2*4/0 = +inf -> bounded 2, 0/0, 2*(-1)/0 = -inf (no boundMin)
    vals = src.values(Dimension("Rat"))
    assert vals[[0, 1, 2, 3, 5]].tolist() == [1.0, 0.0, 2.0, 2.0, -np.inf] and np.isnan(vals[4])
    free = src.values(Dimension("Free"))
    assert free[3] == np.inf and free[5] == -np.inf and np.isnan(free[4])
    r = s.tree.apply(src)
    assert r.mask("R").tolist() == [True, False, True, True, False, False]
    assert r.mask("Low").tolist() == [False, False, False, False, False, True]


def test_non_square_spectrum_matrix_is_least_squares(tmp_path):
    spectra = np.array([[1.0, 0.3, 0.1], [0.2, 1.0, 0.4]])  # 2 fluorochromes x 3 detectors
    rng = np.random.default_rng(5)
    true = rng.uniform(10, 1000, size=(50, 2))
    observed = true @ spectra + rng.normal(0, 1, size=(50, 3))
    rows = "".join(
        "<transforms:spectrum>" + "".join(f'<transforms:coefficient transforms:value="{float(v)!r}"/>' for v in r)
        + "</transforms:spectrum>" for r in spectra)
    p = _doc(tmp_path, f"""
 <transforms:spectrumMatrix transforms:id="Unmix">
  <transforms:fluorochromes><data-type:fcs-dimension data-type:name="FITC"/><data-type:fcs-dimension data-type:name="PE"/></transforms:fluorochromes>
  <transforms:detectors><data-type:fcs-dimension data-type:name="D1"/><data-type:fcs-dimension data-type:name="D2"/><data-type:fcs-dimension data-type:name="D3"/></transforms:detectors>
  {rows}
 </transforms:spectrumMatrix>
 <gating:RectangleGate gating:id="R">
  <gating:dimension gating:compensation-ref="Unmix" gating:min="500"><data-type:fcs-dimension data-type:name="PE"/></gating:dimension>
 </gating:RectangleGate>""")
    s = read_gatingml(p)
    sample = _sample(D1=observed[:, 0], D2=observed[:, 1], D3=observed[:, 2])
    from gating.dimensions import Dimension

    got = s.source(sample).values(Dimension("PE", "Unmix"))
    ref = np.linalg.lstsq(spectra.T, observed.T, rcond=None)[0].T[:, 1]  # independent solve
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-9)
    assert s.apply(sample).mask("R").tolist() == (ref >= 500).tolist()


def test_inverted_already_matrix_gives_same_values():
    s = np.array([[1.0, 0.1], [0.25, 1.0]])
    a = SpectrumMatrix("a", ("F1", "F2"), ("D1", "D2"), s)
    b = SpectrumMatrix("b", ("F1", "F2"), ("D1", "D2"), np.linalg.inv(s), inverted_already=True)
    obs = np.array([[100.0, 50.0], [3.0, 400.0]])
    np.testing.assert_allclose(a.unmix(obs), b.unmix(obs), rtol=1e-12)
    np.testing.assert_allclose(a.unmix(obs) @ s, obs, rtol=1e-12)


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating">&lol3;</gating:Gating-ML>
"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating">&xxe;</gating:Gating-ML>
"""


@pytest.mark.parametrize("text", [BOMB, XXE], ids=["billion-laughs", "external-entity"])
def test_unsafe_xml_is_refused_naming_the_file(tmp_path, text):
    p = tmp_path / "evil.xml"
    p.write_text(text)
    with pytest.raises(GatingMLError, match=r"evil\.xml: unsafe XML refused"):
        read_gatingml(p)


@pytest.mark.parametrize(
    "body, message",
    [
        ('<gating:RectangleGate gating:id="R"><gating:dimension gating:compensation-ref="uncompensated" '
         'gating:transformation-ref="Nope" gating:min="1"><data-type:fcs-dimension data-type:name="X"/>'
         "</gating:dimension></gating:RectangleGate>", "unknown transformation-ref 'Nope'"),
        ('<gating:RectangleGate gating:id="R" gating:parent_id="Ghost"><gating:dimension gating:min="1">'
         '<data-type:fcs-dimension data-type:name="X"/></gating:dimension></gating:RectangleGate>',
         "parent_id refers to a missing gate"),
        ('<gating:RectangleGate gating:id="R"><gating:dimension gating:min="abc">'
         '<data-type:fcs-dimension data-type:name="X"/></gating:dimension></gating:RectangleGate>',
         "min='abc' is not a number"),
        ('<gating:BooleanGate gating:id="B"><gating:and><gating:gateReference gating:ref="A"/>'
         '<gating:gateReference gating:ref="C"/></gating:and></gating:BooleanGate>', "unknown gate 'A'"),
    ],
)
def test_bad_documents_raise_gatingml_error(tmp_path, body, message):
    p = _doc(tmp_path, body, "bad.xml")
    with pytest.raises(GatingMLError, match=message) as info:
        read_gatingml(p)
    assert "bad.xml" in str(info.value)


def test_not_xml_and_missing_file(tmp_path):
    p = tmp_path / "junk.xml"
    p.write_bytes(b"\x00\x01 not xml")
    with pytest.raises(GatingMLError, match="junk.xml: not well-formed XML"):
        read_gatingml(p)
    with pytest.raises(GatingMLError, match="cannot read"):
        read_gatingml(tmp_path / "missing.xml")


def test_fcs_compensation_uses_the_samples_own_matrix(shared_data):
    from cd7flow.compensation import SpilloverMatrix
    from gating.dimensions import Dimension

    sample = read_fcs(shared_data / "flowkit" / "data" / "gate_ref" / "data1.fcs")
    spill = SpilloverMatrix(("FL1-H", "FL2-H"), np.array([[1.0, 0.2], [0.05, 1.0]]), "test")
    sample.spillover = spill
    src = SampleSource(sample)
    obs = sample.events[:, [2, 3]]
    expect = obs @ np.linalg.inv(spill.matrix)
    np.testing.assert_allclose(src.values(Dimension("FL2-H", "FCS")), expect[:, 1], rtol=1e-12)
    np.testing.assert_array_equal(src.values(Dimension("FSC-H", "FCS")), sample.events[:, 0])
    np.testing.assert_array_equal(src.values(Dimension("FL2-H")), sample.events[:, 3])


def test_spillover_matrix_is_written_as_a_spectrum_matrix(tmp_path, data1):
    from cd7flow.compensation import SpilloverMatrix
    from gating.dimensions import Dimension
    from gating.gates import RectangleGate

    strategy = GatingStrategy()
    strategy.compensations["Spill"] = SpilloverMatrix(("FL1-H", "FL2-H"), np.array([[1.0, 0.2], [0.05, 1.0]]), "t")
    strategy.tree.add(RectangleGate("PE+", [Dimension("FL2-H", "Spill")], [50], [None]))
    write_gatingml(strategy, tmp_path / "s.xml")
    again = read_gatingml(tmp_path / "s.xml")
    assert isinstance(again.compensations["Spill"], SpectrumMatrix)
    a, b = strategy.apply(data1), again.apply(data1)
    assert 0 < a.count("PE+") < data1.n_events
    assert np.array_equal(a.mask("PE+"), b.mask("PE+"))


def test_sample_source_caches_dimensions_and_compensates_once(data1):
    from gating.dimensions import Dimension

    matrix = SpectrumMatrix("M", ("FL1-H", "FL2-H"), ("FL1-H", "FL2-H"), np.array([[1.0, 0.1], [0.02, 1.0]]))
    src = SampleSource(data1, {"M": matrix})
    a = src.values(Dimension("FL1-H", "M"))
    assert src.values(Dimension("FL1-H", "M")) is a
    b = src.values(Dimension("FL2-H", "M"))
    assert list(src._compensated) == ["M"]  # one unmixing for both channels
    expect = data1.events[:, [2, 3]] @ np.linalg.inv(matrix.matrix)
    np.testing.assert_allclose(np.column_stack([a, b]), expect, rtol=1e-12)
    assert not a.flags.writeable
    from cd7flow.errors import GatingError

    with pytest.raises(GatingError, match="unknown compensation 'Other'"):
        src.values(Dimension("FL1-H", "Other"))
    with pytest.raises(GatingError, match="no channel or marker named 'CD7'"):
        src.values(Dimension("CD7"))
