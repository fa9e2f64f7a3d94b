"""Gating-ML 2.0 constructs: spectrumMatrix outputs named by fluorochrome, and polygon boundaries.

From the standard's text:
- a ``spectrumMatrix`` lists fluorochromes and detectors; its compensated (unmixed)
  dimensions are the fluorochromes, and a gate dimension, quadrant divider or
  fratio argument with ``compensation-ref`` = the matrix names them (here also in
  the ``Comp-<fluorochrome>`` spelling analysis programs use). Unmixing solves
  observed = true x spectra, by least squares when there are more detectors.
- a polygon gate includes its boundary: an event exactly on an edge or a vertex is in.

Each case is a hand-built FCS file plus a Gating-ML document, with counts checked
against a numpy computation done here, independently of the library.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cd7flow.errors import GatingError
from cd7flow.io.fcs_read import read_fcs
from cd7flow.io.fcs_write import write_fcs
from cd7flow.io.gatingml import read_gatingml, write_gatingml

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<gating:Gating-ML
 xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"
 xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
 xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">
"""


def _doc(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "g.xml"
    p.write_text(HEAD + body + "\n</gating:Gating-ML>\n", encoding="utf-8")
    return p


def _dims(names) -> str:
    return "".join(f'<data-type:fcs-dimension data-type:name="{n}"/>' for n in names)


def _matrix_xml(mid: str, fluoro, detectors, spectra: np.ndarray) -> str:
    rows = "".join(
        "<transforms:spectrum>"
        + "".join(f'<transforms:coefficient transforms:value="{float(v)!r}"/>' for v in r)
        + "</transforms:spectrum>" for r in spectra)
    return (f'<transforms:spectrumMatrix transforms:id="{mid}">'
            f"<transforms:fluorochromes>{_dims(fluoro)}</transforms:fluorochromes>"
            f"<transforms:detectors>{_dims(detectors)}</transforms:detectors>{rows}"
            "</transforms:spectrumMatrix>")


def _polygon_xml(gid: str, comp: str, x: str, y: str, vertices) -> str:
    verts = "".join(f'<gating:vertex><gating:coordinate data-type:value="{a:g}"/>'
                    f'<gating:coordinate data-type:value="{b:g}"/></gating:vertex>' for a, b in vertices)
    dims = "".join(f'<gating:dimension gating:compensation-ref="{comp}"><data-type:fcs-dimension '
                   f'data-type:name="{n}"/></gating:dimension>' for n in (x, y))
    return f'<gating:PolygonGate gating:id="{gid}">{dims}{verts}</gating:PolygonGate>'


def _gates_on(mid: str, fitc: str, pe: str) -> str:
    """Rectangle, polygon, quadrant and fratio gates on the matrix's two outputs."""
    return f"""
 <transforms:transformation transforms:id="PEoverFITC">
  <transforms:fratio transforms:A="1" transforms:B="0" transforms:C="0">{_dims([pe, fitc])}</transforms:fratio>
 </transforms:transformation>
 <gating:RectangleGate gating:id="PEpos">
  <gating:dimension gating:compensation-ref="{mid}" gating:min="400"><data-type:fcs-dimension data-type:name="{pe}"/></gating:dimension>
 </gating:RectangleGate>
 {_polygon_xml("Tri", mid, fitc, pe, [(0, 0), (1200, 0), (0, 900)])}
 <gating:QuadrantGate gating:id="Q">
  <gating:divider gating:id="F" gating:compensation-ref="{mid}"><data-type:fcs-dimension data-type:name="{fitc}"/><gating:value>500</gating:value></gating:divider>
  <gating:divider gating:id="P" gating:compensation-ref="{mid}"><data-type:fcs-dimension data-type:name="{pe}"/><gating:value>300</gating:value></gating:divider>
  <gating:Quadrant gating:id="FposPpos"><gating:position gating:divider_ref="F" gating:location="600"/><gating:position gating:divider_ref="P" gating:location="400"/></gating:Quadrant>
  <gating:Quadrant gating:id="FnegPpos"><gating:position gating:divider_ref="F" gating:location="100"/><gating:position gating:divider_ref="P" gating:location="400"/></gating:Quadrant>
 </gating:QuadrantGate>
 <gating:RectangleGate gating:id="Ratio">
  <gating:dimension gating:compensation-ref="{mid}" gating:min="1"><data-type:new-dimension data-type:transformation-ref="PEoverFITC"/></gating:dimension>
 </gating:RectangleGate>"""


def _expected(true: np.ndarray) -> dict[str, int]:
    """Counts computed here with numpy from the unmixed (FITC, PE) values."""
    f, p = true[:, 0], true[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = p / f
    return {
        "PEpos": int(np.count_nonzero(p >= 400)),
        # triangle x >= 0, y >= 0, x/1200 + y/900 <= 1 (margin: no event sits near the edge here)
        "Tri": int(np.count_nonzero((f >= 0) & (p >= 0) & (f / 1200 + p / 900 <= 1))),
        "FposPpos": int(np.count_nonzero((f >= 500) & (p >= 300))),
        "FnegPpos": int(np.count_nonzero((f < 500) & (p >= 300))),
        "Ratio": int(np.count_nonzero(ratio >= 1)),
    }


def _events(n_fluoro_detectors: tuple[int, int], seed: int):
    rng = np.random.default_rng(seed)
    true = np.column_stack([rng.uniform(-50, 1100, 3000), rng.uniform(-50, 1000, 3000)])
    return rng, true


@pytest.mark.parametrize("fitc, pe", [("Comp-FITC", "Comp-PE"), ("FITC", "PE"), ("comp-FITC", "PE")])
def test_square_spectrum_matrix_outputs_resolve_by_fluorochrome_name(tmp_path, fitc, pe):
    spectra = np.array([[1.0, 0.25], [0.08, 1.0]])  # 2 fluorochromes x 2 detectors
    rng, true = _events((2, 2), 11)
    scatter = rng.uniform(1e4, 2e5, 3000)
    observed = true @ spectra
    fcs = write_fcs(tmp_path / "s.fcs", np.column_stack([scatter, observed]), channels=["FSC-A", "FL1-A", "FL2-A"])
    sample = read_fcs(fcs)
    obs = np.column_stack([sample.values("FL1-A"), sample.values("FL2-A")]).astype(np.float64)
    unmixed = np.linalg.solve(spectra.T, obs.T).T  # independent solve of observed = true @ spectra
    strategy = read_gatingml(_doc(tmp_path, _matrix_xml("Spec", ["FITC", "PE"], ["FL1-A", "FL2-A"], spectra)
                                  + _gates_on("Spec", fitc, pe)))
    strategy.check_channels(sample)  # was: "gate uses channel 'Comp-PE', which ... does not have"
    result = strategy.apply(sample)
    want = _expected(unmixed)
    assert all(0 < v < 3000 for v in want.values())
    assert {g: result.count(g) for g in want} == want
    # the written document reads back to the same membership
    write_gatingml(strategy, tmp_path / "w.xml")
    again = read_gatingml(tmp_path / "w.xml").apply(sample)
    assert {g: again.count(g) for g in want} == want


def test_non_square_spectrum_matrix_unmixes_by_least_squares_under_comp_names(tmp_path):
    spectra = np.array([[1.0, 0.3, 0.1], [0.2, 1.0, 0.45]])  # 2 fluorochromes x 3 detectors
    rng, true = _events((2, 3), 12)
    observed = true @ spectra + rng.normal(0, 3, size=(3000, 3))
    fcs = write_fcs(tmp_path / "s.fcs", observed, channels=["D1", "D2", "D3"])
    sample = read_fcs(fcs)
    obs = np.column_stack([sample.values(c) for c in ("D1", "D2", "D3")]).astype(np.float64)
    unmixed = np.linalg.lstsq(spectra.T, obs.T, rcond=None)[0].T
    strategy = read_gatingml(_doc(tmp_path, _matrix_xml("Unmix", ["FITC", "PE"], ["D1", "D2", "D3"], spectra)
                                  + _gates_on("Unmix", "Comp-FITC", "Comp-PE")))
    strategy.check_channels(sample)
    result = strategy.apply(sample)
    want = _expected(unmixed)
    assert {g: result.count(g) for g in want} == want


def test_unknown_fluorochrome_or_missing_detector_is_named(tmp_path):
    spectra = np.array([[1.0, 0.2], [0.1, 1.0]])
    fcs = write_fcs(tmp_path / "s.fcs", np.ones((5, 2)), channels=["FL1-A", "FL2-A"])
    sample = read_fcs(fcs)
    body = _matrix_xml("Spec", ["FITC", "PE"], ["FL1-A", "FL2-A"], spectra) + """
 <gating:RectangleGate gating:id="R">
  <gating:dimension gating:compensation-ref="Spec" gating:min="1"><data-type:fcs-dimension data-type:name="Comp-APC"/></gating:dimension>
 </gating:RectangleGate>"""
    with pytest.raises(GatingError, match="'Comp-APC'"):
        read_gatingml(_doc(tmp_path, body)).check_channels(sample)
    body = _matrix_xml("Spec", ["FITC", "PE"], ["FL1-A", "FL3-A"], spectra) + """
 <gating:RectangleGate gating:id="R">
  <gating:dimension gating:compensation-ref="Spec" gating:min="1"><data-type:fcs-dimension data-type:name="Comp-PE"/></gating:dimension>
 </gating:RectangleGate>"""
    with pytest.raises(GatingError, match="'FL3-A'"):
        read_gatingml(_doc(tmp_path, body)).check_channels(sample)


POLY = _polygon_xml("P", "uncompensated", "X", "Y", [(0, 0), (200000, 100000), (200000, 200000), (0, 200000)])


def test_events_on_a_polygon_edge_or_vertex_are_in_the_gate(tmp_path):
    # edge (0,0)-(200000,100000): every event with x = 2y on it is in; so are the vertical edge
    # x = 200000, the top edge y = 200000, the left edge x = 0 and the four vertices.
    on_slope_y = np.arange(0, 100001, 2500, dtype=float)
    on = [(2 * y, y) for y in on_slope_y]
    on += [(200000.0, y) for y in (100000, 150000, 200000)]
    on += [(x, 200000.0) for x in (0, 50000, 199999)]
    on += [(0.0, y) for y in (0, 1, 123456)]
    # just outside each edge (1 unit), and one interior point
    off = [(2 * y + 2, y) for y in on_slope_y[1:-1]]
    off += [(200001.0, 150000.0), (50000.0, 200001.0), (-1.0, 5.0)]
    pts = np.array(on + off + [(100000.0, 150000.0)])
    fcs = write_fcs(tmp_path / "p.fcs", pts, channels=["X", "Y"], ranges=[262144, 262144])
    sample = read_fcs(fcs)
    assert np.array_equal(np.column_stack([sample.values("X"), sample.values("Y")]), pts)  # exact in float32
    mask = read_gatingml(_doc(tmp_path, POLY)).apply(sample).mask("P")
    assert mask.tolist() == [True] * len(on) + [False] * len(off) + [True]


def test_boundary_rule_keeps_even_odd_holes_and_vectorised_agreement():
    from gating.gates import points_in_polygon

    # bow-tie (self-intersecting): the crossing point and the edges are in, the "hole" regions out
    bow = np.array([[0, 0], [2, 2], [2, 0], [0, 2]], float)
    x = np.array([1.0, 0.5, 0.0, 2.0, 1.0, 1.0, 1.0])
    y = np.array([1.0, 0.5, 1.0, 1.0, 0.5, 1.5, 0.0])
    assert points_in_polygon(x, y, bow).tolist() == [True, True, True, True, False, False, False]
    # on a grid of integer points the fast path gives the same answer as a plain per-point check
    verts = np.array([[0, 0], [8, 4], [8, 8], [4, 6], [0, 8]], float)
    gx, gy = np.meshgrid(np.arange(-1, 10, 0.5), np.arange(-1, 10, 0.5))
    px, py = gx.ravel(), gy.ravel()

    def on_boundary(a, b):
        for (x1, y1), (x2, y2) in zip(verts, np.roll(verts, -1, axis=0)):
            if ((x2 - x1) * (b - y1) - (a - x1) * (y2 - y1) == 0
                    and min(x1, x2) <= a <= max(x1, x2) and min(y1, y2) <= b <= max(y1, y2)):
                return True
        return False

    def crossing(a, b):
        inside = False
        for (x1, y1), (x2, y2) in zip(verts, np.roll(verts, -1, axis=0)):
            if (y1 > b) != (y2 > b) and a < x1 + (b - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside

    ref = [on_boundary(a, b) or crossing(a, b) for a, b in zip(px, py)]
    got = points_in_polygon(px, py, verts)
    assert got.tolist() == ref
    assert 0 < sum(on_boundary(a, b) for a, b in zip(px, py)) < len(px)


def test_half_open_polygons_cd7flow_wrote_come_back_half_open(tmp_path):
    """An automated hull (half-open) written to Gating-ML re-applies to the same events; the
    declaration is a custom_info other readers skip, and without it the standard's closed rule holds."""
    from cd7flow.io.gatingml import write_gatingml
    from gating.gates import PolygonGate
    from cd7flow.strategy import GatingStrategy
    from gating.tree import GatingTree

    square = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
    pts = np.array([(0.0, 5.0), (10.0, 5.0), (5.0, 0.0), (5.0, 10.0), (5.0, 5.0), (11.0, 5.0)])
    fcs = write_fcs(tmp_path / "s.fcs", pts, channels=["X", "Y"], ranges=[1024, 1024])
    sample = read_fcs(fcs)
    for closed, expected in ((False, [True, False, True, False, True, False]),   # left/bottom in
                             (True, [True, True, True, True, True, False])):     # whole boundary in
        tree = GatingTree()
        tree.add(PolygonGate("P", ["X", "Y"], square, include_boundary=closed))
        out = tmp_path / f"p_{closed}.xml"
        write_gatingml(GatingStrategy(tree=tree), out)
        text = out.read_text()
        assert ("half-open" in text) is (not closed)
        back = read_gatingml(out)
        assert back.tree.find("P").gate.include_boundary is closed
        assert back.apply(sample).mask("P").tolist() == expected
