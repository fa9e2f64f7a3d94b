"""FlowJo 9.2 XML workspace (flowWorkspaceData A2004Analysis.xml): structure, display scales,
and counts re-computed for sample A2 vs the counts FlowJo stored.

Measured on A2 (45,363 events, 18 populations with a stored count): 9 agree exactly (the
rectangle/range populations whose parent chain agrees), Live 34,431 vs 34,469 (-0.11 %), APC
+5, B Cell -91 (-5.3 %), Monocytes -34 (-1.8 %), pDC -7. Why they differ (see the report):
FlowJo evaluates polygons on binned display data and the group-owned B Cell / Monocytes /
pDC / mDC gates were drawn on a display whose scale is not among the stored calibration
tables (their vertices do not fall on the 16-channel pixel grid, unlike APC's).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from defusedxml import ElementTree as SafeET
from typer.testing import CliRunner

from cd7flow.errors import WorkspaceError
from cd7flow.io.fcs_read import read_fcs
from cd7flow.io.flowjo import read_flowjo_workspace
from gating.gates import OutsideGate
from cd7flow.io.flowjo9 import CalibrationTableTransform
from gating.gates import BooleanGate, EllipsoidGate, PolygonGate, RectangleGate

A2 = "a2004_O1T2pb05i_A2_A02.fcs"
MATRIX = "A2004-A2005_06i"


@pytest.fixture(scope="module")
def folder(shared_data: Path) -> Path:
    return shared_data / "flowworkspacedata" / "inst" / "extdata"


@pytest.fixture(scope="module")
def ws(folder: Path):
    return read_flowjo_workspace(folder / "A2004Analysis.xml")


@pytest.fixture(scope="module")
def a2(ws, folder: Path):
    wsample = ws.sample_for_file(folder / A2)
    sample = read_fcs(folder / A2)
    return wsample, sample, wsample.apply(sample)


def _raw_xml(folder: Path):
    return SafeET.parse(folder / "A2004Analysis.xml", forbid_dtd=False).getroot()


def test_structure_keywords_and_compensation(ws, folder: Path):
    assert ws.flowjo_version == "9.2"
    assert sorted(ws.samples) == ["a2004_O1T2pb05i_A1_A01.fcs", A2]  # both SampleNodes say 'a2004_O1T2pb05i'
    assert ws.groups == {"All Samples": ["a2004_O1T2pb05i_A1_A01.fcs", A2]}
    s = ws.sample(A2)
    assert s.event_count == 45363 and s.keywords["$TOT"] == "45363" and s.keywords["stim"] == "R-FSL"
    assert ws.sample("a2004_O1T2pb05i_A1_A01.fcs").event_count == 61832
    assert ws.fcs_path(s) == str(folder / A2)
    assert ws.fcs_path(ws.sample("a2004_O1T2pb05i_A1_A01.fcs")) is None  # not in the corpus (> 4 MiB)
    m = s.strategy.compensations[MATRIX]
    assert m.channels[:2] == ("Am Cyan-A", "Pacific Blue-A") and len(m.channels) == 8
    # row = source detector: Pacific Blue spills 38.6 % into Am Cyan, Am Cyan 4.8 % into Pacific Blue
    assert m.matrix[1, 0] == pytest.approx(0.386) and m.matrix[0, 1] == pytest.approx(0.048)
    assert m.matrix[5, 0] == pytest.approx(0.745) and np.all(np.diag(m.matrix) == 1)
    live = s.tree.find("/Live").gate
    assert isinstance(live, PolygonGate) and [d.channel for d in live.dimensions] == ["FSC-A", "SSC-A"]
    assert all(d.compensation is None and d.transform is None for d in live.dimensions)
    apc = s.tree.find("/Live/APC").gate
    assert [(d.channel, d.compensation) for d in apc.dimensions] == [("PerCP-CY5-5-A", MATRIX), ("PE-CY7-A", MATRIX)]
    assert isinstance(s.tree.find("/Live/APC/pDC").gate, RectangleGate)  # PolyRect
    rng = s.tree.find("/Live/Monocytes/IL-6+").gate
    assert isinstance(rng, RectangleGate) and len(rng.dimensions) == 1
    assert isinstance(s.tree.find("/Live/CD14-MHC2-").gate, EllipsoidGate)
    assert ("Live", "CD14-MHC2-") not in s.flowjo_counts  # FlowJo stored no count for it
    assert len(s.flowjo_counts) == 18


def test_display_scale_is_the_calibration_index_table(ws, folder: Path):
    """Sample A2's log parameters have calibrationIndex=1 and lowValue -110.5975, the first value of
    table 1. Independent check: the APC polygon, drawn on a 256-pixel plot of 4096 channels, has
    its vertices on the 16-channel pixel grid on that scale (mean distance 0.03 / 0.31 channels)."""
    s = ws.sample(A2)
    apc = s.tree.find("/Live/APC").gate
    xf = s.strategy.transforms[apc.dimensions[0].transform]
    assert isinstance(xf, CalibrationTableTransform)
    assert xf.params()["first_value"] == pytest.approx(-110.59754) and xf.params()["last_channel"] == 4096
    off_grid = np.abs(apc.vertices / 16 - np.round(apc.vertices / 16)) * 16
    assert off_grid[:, 0].mean() < 0.1 and off_grid[:, 1].mean() < 0.5
    # the table read back: channel 4095 <-> 2.6092927e5, between points linear, invertible
    assert xf.apply(np.array([2.6092927e5]))[0] == pytest.approx(4095, abs=1e-9)
    v = np.array([-500.0, -110.59754, 0.0, 1234.5, 261589.93, 5e6])
    np.testing.assert_allclose(xf.inverse(xf.apply(v)), v, rtol=1e-12, atol=1e-9)
    assert np.all(np.diff(xf.apply(v)) > 0)


def test_a2_counts_against_flowjo(a2):
    wsample, sample, result = a2
    assert wsample.event_count == sample.n_events == 45363
    diffs = {p: result.count(p) - n for p, n in wsample.flowjo_counts.items()}
    exact = [p for p, d in diffs.items() if d == 0]
    assert len(exact) >= 9
    # every rectangle/range population under mDC agrees exactly (its whole parent chain does)
    assert all(diffs[p] == 0 for p in wsample.flowjo_counts if p[:3] == ("Live", "APC", "mDC"))
    # Live (linear FSC-A/SSC-A polygon): 38 fewer events, all within 256 data units of its
    # near-vertical left edge -- FlowJo's binned polygon test, not a scale problem
    assert abs(diffs[("Live",)]) <= 0.002 * wsample.flowjo_counts[("Live",)]
    # worst: B Cell -91 of 1727; nothing may be further off than 6 % or 8 events
    for p, d in diffs.items():
        assert abs(d) <= max(8, 0.06 * wsample.flowjo_counts[p]), (p, d)


def test_rectangles_and_ranges_match_an_independent_numpy_evaluation(a2, folder: Path):
    """Compensate with numpy from the XML matrix (parsed here independently) and apply mDC and its
    ranges in data units: our tree's masks must be identical, and the counts are FlowJo's."""
    wsample, sample, result = a2
    root = _raw_xml(folder)
    cm = root.find("CompensationMatrices/CompensationMatrix")
    names = [c.get("name") for c in cm.findall("Channel")]
    S = np.array([[float(v.get("value")) for v in c.findall("ChannelValue")] for c in cm.findall("Channel")])
    raw = np.column_stack([sample.values(n).astype(np.float64) for n in names])
    comp = dict(zip(names, (raw @ np.linalg.inv(S)).T))
    parent = result.mask("/Live/APC")
    node = next(p for p in root.find("SampleList")[1].iter("Population") if p.get("name") == "mDC")
    vx = [(float(v.get("x")), float(v.get("y"))) for v in node.find("PolygonGate/PolyRect").iter("Vertex")]
    xs, ys = zip(*vx)
    mdc = parent & (comp["Am Cyan-A"] >= min(xs)) & (comp["Am Cyan-A"] < max(xs)) \
        & (comp["APC-A"] >= min(ys)) & (comp["APC-A"] < max(ys))
    assert np.array_equal(mdc, result.mask("/Live/APC/mDC")) and mdc.sum() == 449
    for child in node.findall("Population"):
        rg = child.find("PolygonGate/Range")
        ch = rg.get("xAxisName").strip("<>")
        lo, hi = sorted(float(v.get("x")) for v in rg.iter("Vertex"))
        mask = mdc & (comp[ch] >= lo) & (comp[ch] < hi)
        path = ("Live", "APC", "mDC", child.get("name"))
        assert np.array_equal(mask, result.mask(path)), path
        assert mask.sum() == int(child.get("count")), path


def test_ellipse_passes_through_its_four_points(ws):
    s = ws.sample(A2)
    gate = s.tree.find("/Live/CD14-MHC2-").gate
    pts_data = np.array([[367.9437561035156, 349.5470275878906], [-15.54942226409912, 322.071044921875],
                         [65.537841796875, 78.14555358886719], [62.30764770507812, 1565.20556640625]])
    disp = np.column_stack([s.strategy.transforms[d.transform].apply(pts_data[:, i])
                            for i, d in enumerate(gate.dimensions)])
    np.testing.assert_allclose(gate.mean, disp.mean(axis=0), rtol=1e-12)
    a, b = (disp[0] - disp[1]) / 2, (disp[2] - disp[3]) / 2
    np.testing.assert_allclose(gate.covariance, np.outer(a, a) + np.outer(b, b), rtol=1e-12)
    # on this display scale the two stored pairs are not exactly antipodal (their midpoints are
    # apart), so the points lie near the curve, not on it; exact when the midpoints coincide:
    mid_gap = np.linalg.norm((disp[0] + disp[1]) / 2 - (disp[2] + disp[3]) / 2)
    diff = disp - gate.mean
    d2 = np.einsum("ij,jk,ik->i", diff, gate.inverse_covariance, diff)
    assert np.all(np.abs(d2 - 1) < 0.5) and mid_gap < 0.4 * np.linalg.norm(a)  # measured 0.35 and 171 / 521 channels
    c = np.array([100.0, 200.0])
    sym = EllipsoidGate("e", gate.dimensions, c, np.outer(a, a) + np.outer(b, b), 1.0)
    ring = np.array([c + a, c - a, c + b, c - b, c + (a + b) / np.sqrt(2)]) - c
    np.testing.assert_allclose(np.einsum("ij,jk,ik->i", ring, sym.inverse_covariance, ring), 1.0, rtol=1e-9)


def _edited(folder: Path, tmp_path: Path, old: str, new: str, count: int = -1) -> Path:
    text = (folder / "A2004Analysis.xml").read_text(encoding="latin-1")
    assert old in text
    out = tmp_path / "A2004Analysis.xml"
    out.write_text(text.replace(old, new, count), encoding="latin-1")
    return out


BOOL_POP = ('<Population name="BT" count="7"><BooleanGate specification="G0 &amp; !G1">'
            '<StringArray><String>/Live/APC/mDC</String><String>/Live/APC/mDC/TNFa+</String>'
            '</StringArray></BooleanGate></Population>')


def test_boolean_and_negated_gates(folder: Path, tmp_path: Path, a2):
    _, sample, result = a2
    # sample 2's Live population gets a boolean child and its APC polygon is negated
    text = (folder / "A2004Analysis.xml").read_text(encoding="latin-1")
    start = text.index('<Sample eventCount="45363"')
    live_end = text.index('<Population expanded="1" name="APC"', start)
    text = text[:live_end] + BOOL_POP + text[live_end:]
    apc_poly = text.index('<Polygon name="APC"', start)
    edited = text[:apc_poly] + '<Polygon negated="1" ' + text[apc_poly + len("<Polygon "):]
    path = tmp_path / "A2004Analysis.xml"
    path.write_text(edited, encoding="latin-1")
    s = read_flowjo_workspace(path).sample(A2)
    bt = s.tree.find("/Live/BT").gate
    assert isinstance(bt, BooleanGate) and bt.operator == "and"
    assert [o.complement for o in bt.operands] == [False, True]
    assert isinstance(s.tree.find("/Live/APC").gate, OutsideGate)
    r = s.apply(sample)
    # negation: Live/APC is now Live minus the old APC
    assert np.array_equal(r.mask("/Live/APC"), result.mask("/Live") & ~result.mask("/Live/APC"))
    assert s.flowjo_counts[("Live", "BT")] == 7
    # the boolean reads populations of the edited tree: mDC is now under the negated APC
    expect = r.mask("/Live") & r.mask("/Live/APC/mDC") & ~r.mask("/Live/APC/mDC/TNFa+")
    assert np.array_equal(r.mask("/Live/BT"), expect)


def test_bad_flowjo9_content_raises_workspace_error(folder: Path, tmp_path: Path):
    p = _edited(folder, tmp_path, 'compensationID="1"', 'compensationID="7"')
    with pytest.raises(WorkspaceError, match="compensationID '7' names no CompensationMatrix"):
        read_flowjo_workspace(p)
    p = _edited(folder, tmp_path, "0,-110.59754,1,-110.29722", "0,-110.59754,1,abc")
    with pytest.raises(WorkspaceError, match="not a number"):
        read_flowjo_workspace(p)
    p = _edited(folder, tmp_path, '<Vertex x="22809.306640625"', '<Vertex x="nan"')
    with pytest.raises(WorkspaceError, match="A2004Analysis.xml: .*not finite"):
        read_flowjo_workspace(p)
    p.write_text((folder / "A2004Analysis.xml").read_text(encoding="latin-1")
                 .replace("<Range ", "<Spline ").replace("</Range>", "</Spline>"), encoding="latin-1")
    with pytest.raises(WorkspaceError, match="no supported gate"):
        read_flowjo_workspace(p)
    bad_bool = BOOL_POP.replace("/Live/APC/mDC/TNFa+", "/Live/Nowhere")
    text = (folder / "A2004Analysis.xml").read_text(encoding="latin-1")
    i = text.index('<Population expanded="1" name="APC"', text.index('<Sample eventCount="45363"'))
    p.write_text(text[:i] + bad_bool + text[i:], encoding="latin-1")
    with pytest.raises(WorkspaceError, match="refers to 'Live/Nowhere'"):
        read_flowjo_workspace(p)


def test_cli_gate_detects_flowjo9_by_root_element(folder: Path, tmp_path: Path):
    from cd7flow.cli import app

    out = tmp_path / "stats.csv"
    res = CliRunner().invoke(app, ["gate", str(folder / A2), "--gates", str(folder / "A2004Analysis.xml"),
                                   "--stats", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if re.match(r"[^,]*,/Live/APC/mDC,count,", line))
    assert float(row.rsplit(",", 1)[1]) == 449


def test_gates_file_kind_is_read_from_the_root_element(folder: Path, tmp_path: Path):
    from cd7flow.io.gating_files import gating_format, root_element

    assert root_element(folder / "A2004Analysis.xml") == "Workspace"  # after <?xml?> and <!DOCTYPE>
    assert root_element(folder / "diva" / "PE_2.xml") == "bdfacs"
    assert gating_format(folder / "diva" / "PE_2.xml") == "diva"
    tricky = tmp_path / "g.xml"
    tricky.write_text('<?xml version="1.0"?><!-- exported from a <Workspace> -->\n'
                      '<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"/>',
                      encoding="utf-8")
    assert root_element(tricky) == "Gating-ML" and gating_format(tricky) == "gatingml"
    assert gating_format(folder / "A2004Analysis.xml") == "flowjo"
