"""Gate geometry against hand-computed cases and independent references (matplotlib Path)."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from gating import ArraySource, Dimension
from gating.errors import GatingError
from gating.gates import (
    BooleanGate,
    Divider,
    EllipsoidGate,
    PolygonGate,
    Quadrant,
    QuadrantGate,
    RectangleGate,
    points_in_polygon,
)


def _src(**cols):
    names = list(cols)
    return ArraySource(np.column_stack([np.asarray(cols[n], float) for n in names]), names)


def test_rectangle_min_inclusive_max_exclusive_and_open_bounds():
    src = _src(a=[0, 1, 2, 3, np.nan], b=[5, 5, 5, 5, 5])
    g = RectangleGate("r", ["a", "b"], [1, None], [3, 6])
    assert g.contains(src).tolist() == [False, True, True, False, False]
    rng = RectangleGate("range", ["a"], [None], [2])
    assert rng.contains(src).tolist() == [True, True, False, False, False]


def test_rectangle_rejects_bad_bounds():
    with pytest.raises(GatingError, match="min 5.0 > max 1.0"):
        RectangleGate("r", ["a"], [5], [1])
    with pytest.raises(GatingError, match="neither min nor max"):
        RectangleGate("r", ["a"], [None], [None])


def test_polygon_square_boundary_rule():
    sq = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    x = np.array([0.5, 0.0, 1.0, 0.5, 0.5, 1.5, np.nan])
    y = np.array([0.5, 0.5, 0.5, 0.0, 1.0, 0.5, 0.5])
    # Gating-ML 2.0: every edge is in (left, right, bottom, top alike), outside and NaN out
    assert points_in_polygon(x, y, sq).tolist() == [True, True, True, True, True, False, False]
    # the automated gates keep the half-open rule: left and bottom edges in, right and top out
    assert points_in_polygon(x, y, sq, include_boundary=False).tolist() == [True, True, False, True, False, False, False]


def test_polygon_non_simple_even_odd():
    # a bow-tie: triangles (0,0)-(1,1)-(0,2) and (2,0)-(1,1)-(2,2)
    bow = np.array([[0, 0], [2, 2], [2, 0], [0, 2]], float)
    x = np.array([0.2, 1.8, 1.0, 1.0])
    y = np.array([1.0, 1.0, 0.5, 1.8])
    assert points_in_polygon(x, y, bow).tolist() == [True, True, False, False]
    # a pentagram drawn point to point: under the even-odd rule its centre pentagon is out
    ang = np.pi / 2 + 2 * np.pi * np.arange(5) / 5
    star = np.column_stack([np.cos(ang), np.sin(ang)])[[0, 2, 4, 1, 3]]
    tip = 0.9 * star[0]
    assert points_in_polygon(np.array([0.0, tip[0]]), np.array([0.0, tip[1]]), star).tolist() == [False, True]


def test_polygon_matches_matplotlib_on_random_points():
    rng = np.random.default_rng(7)
    verts = rng.uniform(0, 100, size=(9, 2))  # random, usually self-intersecting
    pts = rng.uniform(-10, 110, size=(200_000, 2))
    ours = PolygonGate("p", ["x", "y"], verts).contains(_src(x=pts[:, 0], y=pts[:, 1]))
    ref = MplPath(verts, closed=False).contains_points(pts)  # matplotlib uses the even-odd rule too
    # points within 1e-9 of an edge may differ by convention; there are none at this density
    assert np.count_nonzero(ours != ref) == 0
    assert 0 < ours.sum() < len(ours)


def test_polygon_validation():
    with pytest.raises(GatingError, match="at least 3"):
        PolygonGate("p", ["x", "y"], [[0, 0], [1, 1]])
    with pytest.raises(GatingError, match="needs 2 dimensions"):
        PolygonGate("p", ["x"], [[0, 0], [1, 1], [1, 0]])


def test_ellipse_hand_computed():
    # circle of radius 2 about (1, 1): covariance I, distance_square 4
    g = EllipsoidGate("e", ["x", "y"], [1, 1], np.eye(2), 4)
    src = _src(x=[1, 3, 3.01, 1, np.nan], y=[1, 1, 1, -1.0, 1])
    assert g.contains(src).tolist() == [True, True, False, True, False]
    # axis-aligned ellipse: var 4 on x, 1 on y => semi-axes 2 and 1 at d^2 = 1
    g2 = EllipsoidGate("e2", ["x", "y"], [0, 0], [[4, 0], [0, 1]], 1)
    src2 = _src(x=[2, 0, 1.9, 0], y=[0, 1, 0, 1.01])
    assert g2.contains(src2).tolist() == [True, True, True, False]


def test_ellipsoid_3d_matches_mahalanobis():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 3))
    cov = a @ a.T + np.eye(3)
    mean = np.array([1.0, -2.0, 0.5])
    pts = rng.normal(size=(5000, 3)) * 2
    g = EllipsoidGate("e3", ["a", "b", "c"], mean, cov, 3.0)
    got = g.contains(_src(a=pts[:, 0], b=pts[:, 1], c=pts[:, 2]))
    inv = np.linalg.inv(cov)
    d2 = np.array([(p - mean) @ inv @ (p - mean) for p in pts[:50]])
    assert got[:50].tolist() == (d2 <= 3.0).tolist()


def test_ellipse_singular_covariance_is_a_gating_error():
    with pytest.raises(GatingError, match="singular"):
        EllipsoidGate("e", ["x", "y"], [0, 0], [[1, 1], [1, 1]], 1)


def test_quadrants_half_open_and_partial_positions():
    q = QuadrantGate(
        "Q",
        [Divider("X", Dimension("x"), (10.0,)), Divider("Y", Dimension("y"), (20.0, 5.0))],
        [
            Quadrant("X+Ymid", {"X": 15, "Y": 10}),
            Quadrant("X-", {"X": 0}),  # unconstrained on Y
        ],
    )
    assert q.dividers[1].values == (5.0, 20.0)
    src = _src(x=[10, 9.99, 10, 10, 50], y=[5, 7, 20, 4.99, 19.99])
    assert q.quadrant_contains(src, "X+Ymid").tolist() == [True, False, False, False, True]
    assert q.quadrant_contains(src, "X-").tolist() == [False, True, False, False, False]
    assert q.contains(src).tolist() == [True, True, False, False, True]
    with pytest.raises(GatingError, match="no quadrant"):
        q.quadrant_contains(src, "nope")


def test_boolean_combine_with_complement():
    b = BooleanGate("b", "and", ["A", ("B",)])
    a = np.array([1, 1, 0, 0], bool)
    bb = np.array([1, 0, 1, 0], bool)
    assert b.combine([a, bb]).tolist() == [True, False, False, False]
    from gating.gates import GateReference

    c = BooleanGate("c", "or", [GateReference("A"), GateReference("B", complement=True)])
    assert c.combine([a, bb]).tolist() == [True, True, False, True]
    n = BooleanGate("n", "not", ["A"])
    assert n.combine([a]).tolist() == [False, False, True, True]
    with pytest.raises(GatingError, match="exactly one"):
        BooleanGate("n", "not", ["A", "B"])
    with pytest.raises(GatingError, match="inside a GatingTree"):
        b.contains(_src(x=[1]))


def test_polygon_million_events_vectorised():
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 1000, size=(1_000_000, 2))
    verts = np.array([[100, 100], [900, 150], [800, 900], [450, 500], [150, 850]], float)
    got = PolygonGate("p", ["x", "y"], verts).contains(_src(x=pts[:, 0], y=pts[:, 1]))
    ref = MplPath(verts).contains_points(pts[:20000])
    assert np.array_equal(got[:20000], ref)


def test_ellipsoid_with_indefinite_matrix_follows_the_formula():
    # The compliance suite's Ellipsoid3D uses a non-symmetric, indefinite matrix: the bounding-box
    # shortcut must not apply, the Gating-ML formula must.
    cov = np.array([[2.5, 7.5, 17.5], [7.5, 7.0, 13.5], [15.5, 13.5, 4.3]])
    mean = np.array([40.3, 30.6, 20.8])
    rng = np.random.default_rng(4)
    pts = mean + rng.normal(0, 30, size=(20_000, 3))
    got = EllipsoidGate("e", ["a", "b", "c"], mean, cov, 1.0).contains(_src(a=pts[:, 0], b=pts[:, 1], c=pts[:, 2]))
    inv = np.linalg.inv(cov)
    d = pts - mean
    ref = np.array([row @ inv @ row for row in d[:2000]]) <= 1.0
    assert np.array_equal(got[:2000], ref)
    assert 0 < got.sum() < len(got)
