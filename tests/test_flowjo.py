"""FlowJo workspace import: counts re-computed by our engine vs the counts FlowJo stored,
and gate geometry vs FlowKit's independent parse where the FCS files are absent."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from cd7flow.errors import CD7FlowError, WorkspaceError
from cd7flow.io.fcs_read import read_fcs
from cd7flow.io.flowjo import read_flowjo_workspace
from gating.gates import OutsideGate
from gating.gates import BooleanGate, EllipsoidGate, PolygonGate, RectangleGate

SIMPLE = [
    "simple_diamond_example/simple_diamond_example_quad_gate.wsp",
    "simple_diamond_example/test_data_diamond_asinh_rect.wsp",
    "simple_diamond_example/test_data_diamond_asinh_rect2.wsp",
    "simple_diamond_example/test_data_diamond_biex_rect.wsp",
    "simple_line_example/simple_poly_and_rect.wsp",
    "simple_line_example/simple_poly_and_rect_v2_poly50.wsp",
    "simple_line_example/single_ellipse_51_events.wsp",
]
EIGHT_COLOR = sorted(
    ["8_color_ICS.wsp", "8_color_ICS_boolean_gate_testing.wsp", "8_color_ICS_dot_gate_name.wsp",
     "8_color_ICS_sample_without_gates.wsp", "8_color_ICS_simple.wsp", "8_color_ICS_with_ellipse.wsp",
     "reused_quad_gate_with_child.wsp"]
)

# FlowJo stored count="0" for poly1, but the 100 events lie on the line y = 131072 and the
# polygon's top edge crosses that line at x ~ 98,430, so 50 of them are inside (the file name
# says so too, and FlowKit computes 50). The stored count predates the last vertex edit; it is
# not a binning effect (the crossing is 17 display bins from the nearest event).
STALE_FLOWJO_COUNTS = {("simple_poly_and_rect_v2_poly50.wsp", ("poly1",)): 50}


def _fk():
    fk = pytest.importorskip("flowkit")
    warnings.filterwarnings("ignore", module="flowkit")
    return fk


@pytest.fixture(scope="module")
def fk_data(shared_data):
    return shared_data / "flowkit" / "data"


# ---------------------------------------------------------------- counts ---
@pytest.mark.parametrize("rel", SIMPLE)
def test_recomputed_counts_match_flowjo(fk_data: Path, rel: str):
    ws = read_flowjo_workspace(fk_data / rel)
    assert len(ws.samples) == 1
    (wsample,) = ws
    fcs = ws.fcs_path(wsample)
    assert fcs is not None and Path(fcs).parent == (fk_data / rel).parent
    sample = read_fcs(fcs)
    assert wsample.event_count == sample.n_events
    result = wsample.apply(sample)
    assert len(wsample.tree) > 0
    compared = 0
    for pop in wsample.tree.populations():
        ours = result.count(pop.path)
        stale = STALE_FLOWJO_COUNTS.get((Path(rel).name, pop.path))
        if stale is not None:
            assert wsample.flowjo_counts[pop.path] != stale
            assert ours == stale
            continue
        if pop.path not in wsample.flowjo_counts:  # FlowJo wrote count="-1": never computed
            continue
        # Exact: rectangles are evaluated identically, and the polygon/ellipse gates here
        # have no event within a display bin of their edges, so binning cannot move any.
        assert ours == wsample.flowjo_counts[pop.path], pop.path_str
        compared += 1
    if Path(rel).name != "simple_poly_and_rect.wsp":
        assert compared >= 1


def test_recomputed_counts_match_flowkit_workspace(fk_data: Path):
    """Every population of the paired workspaces, including the ones FlowJo never counted."""
    fk = _fk()
    for rel in SIMPLE:
        wsp = fk_data / rel
        ws = read_flowjo_workspace(wsp)
        (wsample,) = ws
        fcs = ws.fcs_path(wsample)
        result = wsample.apply(read_fcs(fcs))
        fws = fk.Workspace(str(wsp), fcs_samples=[str(fcs)])
        fws.analyze_samples(sample_id=wsample.name, use_mp=False)
        report = fws.get_gating_results(wsample.name).report
        assert len(report) == len(wsample.tree)
        for _, row in report.iterrows():
            path = tuple(row["gate_path"][1:]) + (row["gate_name"],)
            assert result.count(path) == row["count"], (rel, path)


def test_ellipse_is_exact_ellipse_in_display_units(fk_data: Path):
    ws = read_flowjo_workspace(fk_data / "simple_line_example/single_ellipse_51_events.wsp")
    (wsample,) = ws
    gate = wsample.tree.find("ellipse1").gate
    assert isinstance(gate, EllipsoidGate)
    # foci (62.77, 157.40) and (94.23, 93.60) in 256-bin display units on linear 0..262144 axes
    np.testing.assert_allclose(gate.mean * 256, [78.5, 125.5], atol=1e-9)
    foci = np.array([[62.7724519002, 157.4044547167], [94.2275480998, 93.5955452833]]) / 256
    # a focus-to-focus point pair: sum of distances to the foci = 2a for points on the ellipse
    evals, evecs = np.linalg.eigh(gate.covariance)
    a, b = np.sqrt(evals[::-1])
    c = np.linalg.norm(foci[1] - foci[0]) / 2
    np.testing.assert_allclose(a * a - b * b, c * c, rtol=1e-12)
    np.testing.assert_allclose(abs(evecs[:, 1] @ (foci[1] - foci[0])) / (2 * c), 1.0, rtol=1e-12)


def test_events_inside_zero_gives_outside(fk_data: Path, tmp_path: Path):
    wsp = fk_data / "simple_diamond_example/test_data_diamond_biex_rect.wsp"
    text = wsp.read_text(encoding="utf-8").replace('eventsInside="1"', 'eventsInside="0"')
    flipped = tmp_path / "test_data_diamond_biex_rect.wsp"
    flipped.write_text(text, encoding="utf-8")
    sample = read_fcs(fk_data / "simple_diamond_example/test_data_diamond_01.fcs")
    (inside,) = read_flowjo_workspace(wsp)
    (outside,) = read_flowjo_workspace(flipped)
    assert isinstance(outside.tree.find("upper_right").gate, OutsideGate)
    a = inside.apply(sample).mask("upper_right")
    b = outside.apply(sample).mask("upper_right")
    assert np.array_equal(a, ~b)


# ------------------------------------------ 8-colour set (no FCS files) ---
@pytest.mark.parametrize("name", EIGHT_COLOR)
def test_eight_color_workspaces_load(fk_data: Path, name: str):
    ws = read_flowjo_workspace(fk_data / "8_color_data_set" / name)
    assert len(ws.samples) >= 1
    assert "All Samples" in ws.groups and set(ws.groups["All Samples"]) <= set(ws.samples)
    for wsample in ws:
        comp = wsample.strategy.compensations
        assert list(comp) == ["Acquisition-defined"]
        m = comp["Acquisition-defined"]
        assert np.allclose(np.diag(m.matrix), 1.0) and len(m.channels) >= 7
        for pop in wsample.tree.populations():
            gate = pop.gate
            if isinstance(gate, BooleanGate):
                for ref in gate.references:  # dependents are full paths that exist
                    assert wsample.tree.find(ref).path == ref
                continue
            for d in gate.dimensions:
                assert d.transform is None or d.transform in wsample.strategy.transforms
                if d.compensation is not None:
                    assert d.channel in m.channels
        assert set(wsample.flowjo_counts) <= {p.path for p in wsample.tree.populations()}


def test_eight_color_structure(fk_data: Path):
    ws = read_flowjo_workspace(fk_data / "8_color_data_set/8_color_ICS_boolean_gate_testing.wsp")
    s = ws.sample("101_DEN084Y5_15_E03_009_clean.fcs")
    gate = s.tree.find("/Time/Singlets/aAmine-/CD3+/CD4+/CD107a+ & IFNg+").gate
    assert isinstance(gate, BooleanGate) and gate.operator == "and"
    assert gate.references == (("Time", "Singlets", "aAmine-", "CD3+", "CD4+", "CD107a+"),
                               ("Time", "Singlets", "aAmine-", "CD3+", "CD4+", "IFNg+"))
    assert s.flowjo_counts[("Time", "Singlets", "aAmine-", "CD3+", "CD4+", "CD107a+ & IFNg+")] == 6
    assert s.tree.find("/Time/Singlets/aAmine-/CD3+/CD4+/IL2+-").gate.operator == "not"
    cd3 = s.tree.find("/Time/Singlets/aAmine-/CD3+").gate
    assert cd3.dimensions[0].channel == "CD3 APC-H7 FLR-A"
    assert cd3.dimensions[0].compensation == "Acquisition-defined"
    assert s.strategy.transforms[cd3.dimensions[0].transform].kind == "logicle"
    assert cd3.dimensions[1].compensation is None  # SSC-A is not in the matrix
    dot = read_flowjo_workspace(fk_data / "8_color_data_set/8_color_ICS_dot_gate_name.wsp")
    assert any(p.name == "." for p in next(iter(dot)).tree.populations())
    ell = read_flowjo_workspace(fk_data / "8_color_data_set/8_color_ICS_with_ellipse.wsp")
    assert any(isinstance(p.gate, EllipsoidGate) for p in next(iter(ell)).tree.populations())


def _flat_agreement(ours_gate, fk_gate, fk_strategy, our_transforms, rng):
    """Membership of one gate's own geometry, ours vs FlowKit's, on events spread over its box."""
    import pandas as pd

    n = 20000
    raw = {}
    for d in ours_gate.dimensions:
        xf = our_transforms.get(d.transform)
        lo, hi = (-0.1, 1.1) if xf is None or xf.kind != "biex" else (-400, 4500)
        if xf is None or xf.kind == "flin":
            raw[d] = rng.uniform(-30000, 300000, n)
        else:
            raw[d] = xf.inverse(rng.uniform(lo, hi, n))

    class Src:
        n_events = n

        def values(self, d):
            xf = our_transforms.get(d.transform)
            return raw[d] if xf is None else xf.apply(raw[d])

    ours = ours_gate.contains(Src())
    cols = {}
    for d_ours, d_fk in zip(ours_gate.dimensions, fk_gate.dimensions):
        x = raw[d_ours]
        if d_fk.transformation_ref is not None:
            x = fk_strategy.get_transform(d_fk.transformation_ref).apply(x.reshape(-1, 1)).ravel()
        cols[d_fk.id] = x
    theirs = fk_gate.apply(pd.DataFrame(cols))
    return ours, np.asarray(theirs, dtype=bool)


@pytest.mark.parametrize("name", [n for n in EIGHT_COLOR if n != "8_color_ICS_dot_gate_name.wsp"])
def test_eight_color_gates_match_flowkit_geometry(fk_data: Path, name: str):
    """Without the FCS files, compare each gate's own membership with FlowKit's gate on
    synthetic events spread over it (FlowKit refuses the '.' gate name, so that file is only loaded).
    Also the compensation matrix against FlowKit's parse."""
    fk = _fk()
    wsp = fk_data / "8_color_data_set" / name
    ws = read_flowjo_workspace(wsp)
    fws = fk.Workspace(str(wsp), load_missing_file_data=True)
    rng = np.random.default_rng(7)
    checked = 0
    for wsample in ws:
        fk_gs = fws.get_gating_strategy(wsample.name)
        fk_comp = fws.get_comp_matrix(wsample.name)
        ours_m = wsample.strategy.compensations["Acquisition-defined"]
        assert tuple(fk_comp.detectors) == ours_m.channels
        np.testing.assert_allclose(fk_comp.matrix, ours_m.matrix, rtol=0, atol=1e-12)
        for pop in wsample.tree.populations():
            if isinstance(pop.gate, BooleanGate):
                continue
            fk_gate = fk_gs.get_gate(pop.name, gate_path=("root",) + pop.parent_path)
            ours, theirs = _flat_agreement(pop.gate, fk_gate, fk_gs, wsample.strategy.transforms, rng)
            differ = np.count_nonzero(ours != theirs)
            if isinstance(pop.gate, EllipsoidGate):
                # FlowKit draws the ellipse as a 128-gon inside the true curve: only a thin rim may differ
                assert differ <= 0.01 * max(1, np.count_nonzero(ours)), pop.path_str
            else:
                assert isinstance(pop.gate, (RectangleGate, PolygonGate))
                assert differ == 0, pop.path_str
            assert 0 < np.count_nonzero(ours) < ours.size  # the synthetic events straddle the gate
            checked += 1
    assert checked >= 4


# ----------------------------------------------------------------- errors ---
def test_bad_workspaces_raise_workspace_error(tmp_path: Path, fk_data: Path):
    missing = tmp_path / "nope.wsp"
    with pytest.raises(WorkspaceError, match="nope.wsp: cannot read"):
        read_flowjo_workspace(missing)
    broken = tmp_path / "broken.wsp"
    broken.write_text("<Workspace><SampleList>", encoding="utf-8")
    with pytest.raises(WorkspaceError, match="broken.wsp: not well-formed XML"):
        read_flowjo_workspace(broken)
    bomb = tmp_path / "bomb.wsp"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE W [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
                    "<Workspace>&b;</Workspace>", encoding="utf-8")
    with pytest.raises(WorkspaceError, match="unsafe XML"):
        read_flowjo_workspace(bomb)
    xxe = tmp_path / "xxe.wsp"
    xxe.write_text('<?xml version="1.0"?><!DOCTYPE W [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                   "<Workspace>&e;</Workspace>", encoding="utf-8")
    with pytest.raises(WorkspaceError, match="unsafe XML"):
        read_flowjo_workspace(xxe)
    gml = tmp_path / "gml.wsp"
    gml.write_text("<Gating-ML/>", encoding="utf-8")
    with pytest.raises(WorkspaceError, match="not a FlowJo <Workspace>"):
        read_flowjo_workspace(gml)

    src = (fk_data / "simple_diamond_example/test_data_diamond_biex_rect.wsp").read_text(encoding="utf-8")
    odd = tmp_path / "odd_transform.wsp"
    odd.write_text(src.replace("transforms:biex", "transforms:hyperbolic"), encoding="utf-8")
    with pytest.raises(WorkspaceError, match="'hyperbolic' is not supported"):
        read_flowjo_workspace(odd)
    nan = tmp_path / "nan.wsp"
    nan.write_text(src.replace('gating:min="49058.7235978176"', 'gating:min="abc"'), encoding="utf-8")
    with pytest.raises(WorkspaceError, match="'abc' is not a number"):
        read_flowjo_workspace(nan)

    ws = read_flowjo_workspace(fk_data / "simple_diamond_example/test_data_diamond_biex_rect.wsp")
    with pytest.raises(WorkspaceError, match="no sample 'other.fcs'"):
        ws.sample("other.fcs")
    with pytest.raises(WorkspaceError, match="not 'data1.fcs'"):
        ws.sample_for_file("somewhere/data1.fcs")
    assert ws.sample_for_file("/x/TEST_DATA_DIAMOND_01.fcs").name == "test_data_diamond_01.fcs"
    assert issubclass(WorkspaceError, CD7FlowError)
