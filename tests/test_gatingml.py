"""Gating-ML 2.0 import/export against the ISAC compliance truths (gate_ref) and hand-made cases."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest

from cd7flow.compensation import SpectrumMatrix
from cd7flow.datasource import SampleSource
from cd7flow.strategy import GatingStrategy
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


# ------------------------------------------- constructs of the official ISAC suite (sets 1-5)
# The official files (gatingMLData gates1-5.xml) are not copied here; these documents are written
# for the tests and use the same constructs: gates before the transformations they use, custom_info
# inside transform elements, comments, fluorochrome-named ratios as new dimensions of rectangles and
# quadrant dividers, multi-value dividers, a quadrant that names one divider only, matrices given
# already inverted (square and non-square), booleans over quadrants, not + use-as-complement.
def _spectrum(mid, fluoro, detectors, rows, inverted=False):
    flag = ' transforms:matrix-inverted-already="true"' if inverted else ""
    names = lambda ns: "".join(f'<data-type:fcs-dimension data-type:name="{n}"/>' for n in ns)  # noqa: E731
    spectra = "".join("<transforms:spectrum>" + "".join(
        f'<transforms:coefficient transforms:value="{float(v)!r}"/>' for v in r) + "</transforms:spectrum>" for r in rows)
    return (f'<transforms:spectrumMatrix transforms:id="{mid}"{flag}><transforms:fluorochromes>{names(fluoro)}'
            f"</transforms:fluorochromes><transforms:detectors>{names(detectors)}</transforms:detectors>{spectra}"
            "</transforms:spectrumMatrix>")


def _dim(name, comp, new=False):
    inner = (f'<data-type:new-dimension data-type:transformation-ref="{name}"/>' if new
             else f'<data-type:fcs-dimension data-type:name="{name}"/>')
    return f'<gating:dimension gating:compensation-ref="{comp}">{inner}</gating:dimension>'


TRIANGLE = "".join(f'<gating:vertex><gating:coordinate data-type:value="{x}"/><gating:coordinate data-type:value="{y}"/>'
                   "</gating:vertex>" for x, y in ((5, 5), (500, 5), (500, 500)))
SPILL = np.array([[1.0, 0.02, 0.06], [0.11, 1.0, 0.07], [0.09, 0.01, 1.0]])
NONSQ = np.array([[0.78, 0.13, 0.22], [0.05, 0.57, 0.89]])


def _suite_like_sample(n=40000, seed=11):
    from cd7flow.compensation import SpilloverMatrix

    rng = np.random.default_rng(seed)
    cols = {c: np.where(rng.random(n) < 0.2, rng.normal(0, 30, n), np.exp(rng.uniform(0, 9, n)))
            for c in ("D1", "D2", "D3")}
    sample = _sample(**cols)
    sample.spillover = SpilloverMatrix(("D1", "D2", "D3"), SPILL, "test")
    return sample


def test_suite_constructs_compensation_ratio_quadrant_boolean(tmp_path):
    from matplotlib.path import Path as MplPath

    det = ("D1", "D2", "D3")
    poly = lambda gid, a, b, comp: (f'<gating:PolygonGate gating:id="{gid}">{_dim(a, comp)}{_dim(b, comp)}'  # noqa: E731
                                    f"{TRIANGLE}</gating:PolygonGate>")
    body = "".join([
        poly("PComp", "CA", "CB", "Spec"), poly("PCompInv", "IA", "IB", "SpecInv"),
        poly("PNonSq", "U1", "U2", "NonSq"), poly("PNonSqInv", "V1", "V2", "NonSqInv"), poly("PFcs", "D1", "D2", "FCS"),
        f'<gating:RectangleGate gating:id="RatR"><gating:dimension gating:compensation-ref="Spec" gating:min="0.5" '
        f'gating:max="2"><data-type:new-dimension data-type:transformation-ref="RatComp"/></gating:dimension>'
        "</gating:RectangleGate>",
        '<gating:QuadrantGate gating:id="Q">'
        '<gating:divider gating:id="d1" gating:compensation-ref="Spec">'
        '<data-type:new-dimension data-type:transformation-ref="RatComp"/><gating:value>1.3</gating:value></gating:divider>'
        '<gating:divider gating:id="d2" gating:compensation-ref="Spec"><data-type:fcs-dimension data-type:name="CB"/>'
        "<gating:value>1000</gating:value><gating:value>100</gating:value></gating:divider>"
        '<gating:Quadrant gating:id="QNN"><gating:position gating:divider_ref="d1" gating:location="0"/>'
        '<gating:position gating:divider_ref="d2" gating:location="0"/></gating:Quadrant>'
        '<gating:Quadrant gating:id="QPH"><gating:position gating:divider_ref="d2" gating:location="5000"/>'
        '<gating:position gating:divider_ref="d1" gating:location="2"/></gating:Quadrant>'
        '<gating:Quadrant gating:id="QMid"><gating:position gating:divider_ref="d2" gating:location="500"/></gating:Quadrant>'
        "</gating:QuadrantGate>",
        '<gating:BooleanGate gating:id="NotNot"><gating:not>'
        '<gating:gateReference gating:ref="PComp" gating:use-as-complement="true"/></gating:not></gating:BooleanGate>',
        '<gating:BooleanGate gating:id="OrInP" gating:parent_id="PComp"><gating:or>'
        '<gating:gateReference gating:ref="PFcs"/><gating:gateReference gating:ref="QMid"/></gating:or></gating:BooleanGate>',
        "<!-- transformations come after the gates that use them -->",
        '<transforms:transformation transforms:id="RatComp"><transforms:fratio transforms:A="1" transforms:B="0" '
        'transforms:C="0"><data-type:custom_info>any note</data-type:custom_info>'
        '<data-type:fcs-dimension data-type:name="CA"/><data-type:fcs-dimension data-type:name="CB"/>'
        "</transforms:fratio></transforms:transformation>",
        _spectrum("Spec", ("CA", "CB", "CC"), det, SPILL),
        _spectrum("SpecInv", ("IA", "IB", "IC"), det, np.linalg.inv(SPILL), inverted=True),
        _spectrum("NonSq", ("U1", "U2"), det, NONSQ),
        _spectrum("NonSqInv", ("V1", "V2"), det, np.linalg.pinv(NONSQ), inverted=True),
    ])
    strategy = read_gatingml(_doc(tmp_path, body))
    sample = _suite_like_sample()
    r = strategy.apply(sample)
    obs = sample.events
    comp = obs @ np.linalg.inv(SPILL)  # independent: observed = true @ spill
    unmixed = np.linalg.lstsq(NONSQ.T, obs.T, rcond=None)[0].T
    tri = MplPath(np.array([(5, 5), (500, 5), (500, 500)], float))
    expect_comp = tri.contains_points(comp[:, :2])
    expect_nonsq = tri.contains_points(unmixed)
    assert 100 < expect_comp.sum() < len(obs) - 100 and 100 < expect_nonsq.sum()
    # random data puts no event on an edge, so the boundary convention does not matter here
    assert np.array_equal(r.mask("PComp"), expect_comp)
    for same in ("PCompInv", "PFcs", "NotNot"):
        assert np.array_equal(r.mask(same), expect_comp), same
    assert np.array_equal(r.mask("PNonSq"), expect_nonsq)
    assert np.array_equal(r.mask("PNonSqInv"), expect_nonsq)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = comp[:, 0] / comp[:, 1]
    assert np.array_equal(r.mask("RatR"), (ratio >= 0.5) & (ratio < 2))
    cb = comp[:, 1]
    assert np.array_equal(r.mask("QNN"), (ratio < 1.3) & (cb < 100))
    assert np.array_equal(r.mask("QPH"), (ratio >= 1.3) & (cb >= 1000))
    assert np.array_equal(r.mask("QMid"), (cb >= 100) & (cb < 1000))
    assert np.array_equal(r.mask("OrInP"), expect_comp & (expect_comp | ((cb >= 100) & (cb < 1000))))
    assert min(r.count(q) for q in ("QNN", "QPH", "QMid", "RatR")) > 100


def test_logicle_rectangle_equals_linear_rectangle_at_published_bounds(tmp_path):
    # The suite's Cube3Dul states that logicle(T=262144, W=1, M=4, A=0) of 100, 89000, 65, 121333, 12.5
    # and 107789 are these numbers, so the gate equals the linear-scale box event for event.
    published = {100: 0.25811667026097806, 89000: 0.8802467252235215, 65: 0.25527652868311457,
                 121333: 0.9148645329311738, 12.5: 0.2510148102244318, 107789: 0.9016746939365867}
    dims = "".join(
        f'<gating:dimension gating:compensation-ref="uncompensated" gating:transformation-ref="L" '
        f'gating:min="{published[lo]!r}" gating:max="{published[hi]!r}"><data-type:fcs-dimension data-type:name="{ch}"/>'
        "</gating:dimension>" for ch, lo, hi in (("X", 100, 89000), ("Y", 65, 121333), ("Z", 12.5, 107789)))
    p = _doc(tmp_path, f'<gating:RectangleGate gating:id="Cube">{dims}</gating:RectangleGate>'
                       '<transforms:transformation transforms:id="L"><transforms:logicle transforms:T="262144" '
                       'transforms:M="4" transforms:W="1" transforms:A="0"/></transforms:transformation>')
    s = read_gatingml(p)
    np.testing.assert_allclose(s.transforms["L"].apply(np.array(list(published), float)),
                               np.array(list(published.values())), rtol=0, atol=1e-12)
    rng = np.random.default_rng(3)
    cols = {c: np.exp(rng.uniform(0, 12.5, 30000)) - 20 for c in "XYZ"}
    expect = ((cols["X"] >= 100) & (cols["X"] < 89000) & (cols["Y"] >= 65) & (cols["Y"] < 121333)
              & (cols["Z"] >= 12.5) & (cols["Z"] < 107789))
    assert expect.sum() > 1000
    assert np.array_equal(s.apply(_sample(**cols)).mask("Cube"), expect)


def test_bounded_transform_gates_on_data1(tmp_path, data1):
    # Bounded variants that set 1 of the suite adds (ScaleRange*Bound, RatRange1Bound, RatRange1aBound),
    # checked against the flowCore definition max(min(f, boundMax), boundMin) written out in numpy.
    p = _doc(tmp_path, """
 <gating:RectangleGate gating:id="Lin"><gating:dimension gating:compensation-ref="uncompensated"
   gating:transformation-ref="LinB" gating:min="0.049" gating:max="0.055"><data-type:fcs-dimension data-type:name="FL1-H"/>
 </gating:dimension></gating:RectangleGate>
 <gating:RectangleGate gating:id="Asinh"><gating:dimension gating:compensation-ref="uncompensated"
   gating:transformation-ref="AsB" gating:min="0.37" gating:max="0.63"><data-type:fcs-dimension data-type:name="FL1-H"/>
 </gating:dimension></gating:RectangleGate>
 <gating:RectangleGate gating:id="Rat"><gating:dimension gating:compensation-ref="uncompensated" gating:min="3"
   gating:max="16.4"><data-type:new-dimension data-type:transformation-ref="RatB"/></gating:dimension></gating:RectangleGate>
 <gating:RectangleGate gating:id="RatLog"><gating:dimension gating:compensation-ref="uncompensated"
   gating:transformation-ref="LogU" gating:min="0.40625" gating:max="0.6601562">
   <data-type:new-dimension data-type:transformation-ref="RatU"/></gating:dimension></gating:RectangleGate>
 <gating:RectangleGate gating:id="RatLogB"><gating:dimension gating:compensation-ref="uncompensated"
   gating:transformation-ref="LogB" gating:min="0.40625" gating:max="0.6601562">
   <data-type:new-dimension data-type:transformation-ref="RatU"/></gating:dimension></gating:RectangleGate>
 <transforms:transformation transforms:id="LinB" transforms:boundMin="0.05" transforms:boundMax="100">
  <transforms:flin transforms:T="10000" transforms:A="500"/></transforms:transformation>
 <transforms:transformation transforms:id="AsB" transforms:boundMax="0.6">
  <transforms:fasinh transforms:T="10000" transforms:M="4" transforms:A="1"/></transforms:transformation>
 <transforms:transformation transforms:id="RatB" transforms:boundMax="15.3"><transforms:fratio transforms:A="1"
  transforms:B="0" transforms:C="-1"><data-type:fcs-dimension data-type:name="FL2-H"/>
  <data-type:fcs-dimension data-type:name="FL2-A"/></transforms:fratio></transforms:transformation>
 <transforms:transformation transforms:id="RatU"><transforms:fratio transforms:A="1" transforms:B="0" transforms:C="-1">
  <data-type:fcs-dimension data-type:name="FL2-H"/><data-type:fcs-dimension data-type:name="FL2-A"/>
 </transforms:fratio></transforms:transformation>
 <transforms:transformation transforms:id="LogU"><transforms:flog transforms:T="100" transforms:M="2"/></transforms:transformation>
 <transforms:transformation transforms:id="LogB" transforms:boundMin="0" transforms:boundMax="1">
  <transforms:flog transforms:T="100" transforms:M="2"><data-type:custom_info>bound to [0,1]</data-type:custom_info>
 </transforms:flog></transforms:transformation>""")
    r = read_gatingml(p).apply(data1)
    fl1 = data1.values("FL1-H").astype(np.float64)
    lin = np.clip((fl1 + 500) / (10000 + 500), 0.05, 100)
    ln10 = np.log(10)
    asinh = np.minimum((np.arcsinh(fl1 * np.sinh(4 * ln10) / 10000) + ln10) / (5 * ln10), 0.6)
    ratio = data1.values("FL2-H").astype(np.float64) / (data1.values("FL2-A").astype(np.float64) + 1)
    expect = {"Lin": (lin >= 0.049) & (lin < 0.055), "Asinh": (asinh >= 0.37) & (asinh < 0.63),
              "Rat": (np.minimum(ratio, 15.3) >= 3) & (np.minimum(ratio, 15.3) < 16.4)}
    with np.errstate(divide="ignore"):
        log = np.log10(ratio / 100) / 2 + 1
    expect["RatLog"] = (log >= 0.40625) & (log < 0.6601562)
    for gid, want in expect.items():
        assert 50 < want.sum() < data1.n_events, gid
        assert np.array_equal(r.mask(gid), want), gid
    # the bound changes these gates (everything below boundMin lands inside [0.049, 0.055), etc.) ...
    assert r.count("Lin") > 3 * np.count_nonzero(((fl1 + 500) / 10500 >= 0.049) & ((fl1 + 500) / 10500 < 0.055))
    # ... but not this one: the file says bounding to [0, 1] cannot move events across [0.40625, 0.66)
    assert np.array_equal(r.mask("RatLogB"), r.mask("RatLog"))


def test_indefinite_3d_ellipsoid_follows_the_formula(tmp_path):
    # set 3's myEllipsoidGate has an indefinite "covariance": the Gating-ML quadratic form still applies
    cov = np.array([[3.0, -2.0, 11.0], [-2.0, 0.3, -1.0], [11.0, -1.0, 2.0]])
    mean = np.array([0.2, 0.3, 0.25])
    dims = "".join(_dim(c, "uncompensated") for c in "XYZ")
    rows = "".join("<gating:row>" + "".join(f'<gating:entry data-type:value="{float(v)!r}"/>' for v in row) + "</gating:row>"
                   for row in cov)
    means = "".join(f'<gating:coordinate data-type:value="{float(v)!r}"/>' for v in mean)
    p = _doc(tmp_path, f'<gating:EllipsoidGate gating:id="E">{dims}<gating:mean>{means}</gating:mean>'
                       f'<gating:covarianceMatrix>{rows}</gating:covarianceMatrix>'
                       '<gating:distanceSquare data-type:value="3500"/></gating:EllipsoidGate>')
    rng = np.random.default_rng(8)
    pts = rng.normal(0, 40, size=(20000, 3))
    d = pts - mean
    expect = np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d) <= 3500
    assert 1000 < expect.sum() < 19000
    got = read_gatingml(p).apply(_sample(X=pts[:, 0], Y=pts[:, 1], Z=pts[:, 2])).mask("E")
    assert np.array_equal(got, expect)


@pytest.mark.parametrize("body, message", [
    ('<transforms:transformation transforms:id="L"><transforms:flin transforms:T="10" transforms:A="0"/>'
     '</transforms:transformation><gating:RectangleGate gating:id="R">'
     '<gating:dimension gating:compensation-ref="uncompensated" gating:min="0">'
     '<data-type:new-dimension data-type:transformation-ref="L"/></gating:dimension></gating:RectangleGate>',
     "new-dimension refers to 'L', a scale transformation"),
    ('<gating:RectangleGate gating:id="R"><gating:dimension gating:compensation-ref="uncompensated" gating:min="0">'
     '<data-type:new-dimension data-type:transformation-ref="Nope"/></gating:dimension></gating:RectangleGate>',
     "new-dimension refers to unknown transformation 'Nope'"),
    ('<transforms:transformation transforms:id="Rt"><transforms:fratio transforms:A="1" transforms:B="0" '
     'transforms:C="0"><data-type:fcs-dimension data-type:name="A"/><data-type:fcs-dimension data-type:name="B"/>'
     '</transforms:fratio></transforms:transformation><gating:RectangleGate gating:id="R"><gating:dimension '
     'gating:compensation-ref="uncompensated" gating:transformation-ref="Rt" gating:min="0">'
     '<data-type:fcs-dimension data-type:name="A"/></gating:dimension></gating:RectangleGate>',
     "transformation-ref 'Rt' is an fratio"),
])
def test_misused_ratio_references_are_refused(tmp_path, body, message):
    with pytest.raises(GatingMLError, match=message):
        read_gatingml(_doc(tmp_path, body, "ratio.xml"))
