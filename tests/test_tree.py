"""GatingTree: parents first, paths vs names, quadrants as populations, boolean references."""
from __future__ import annotations

import numpy as np
import pytest

from gating import ArraySource, Dimension
from gating.errors import GatingError
from gating.gates import BooleanGate, Divider, GateReference, Quadrant, QuadrantGate, RectangleGate
from gating.tree import GatingTree


@pytest.fixture
def source():
    x = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], float)
    y = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], float)
    return ArraySource(np.column_stack([x, y]), ["x", "y"])


def _tree():
    t = GatingTree()
    t.add(RectangleGate("Big", ["x"], [2], [None]))  # x >= 2: 8 events
    t.add(RectangleGate("Low", ["y"], [None], [5]), parent="Big")  # y < 5 -> x >= 5: 5 events
    t.add(RectangleGate("Low", ["y"], [None], [3]))  # a second 'Low' at the root: y < 3 -> 3 events
    t.add(
        QuadrantGate(
            "Q",
            [Divider("X", Dimension("x"), (7.0,)), Divider("Y", Dimension("y"), (4.0,))],
            [Quadrant("X+Y-", {"X": 8, "Y": 0}), Quadrant("X-Y+", {"X": 0, "Y": 8})],
        ),
        parent="Big",
    )
    return t


def test_parent_masks_and_percentages(source):
    r = _tree().apply(source)
    assert r.count("Big") == 8
    assert r.count("/Big/Low") == 5
    assert r.percent_of_parent("/Big/Low") == pytest.approx(100 * 5 / 8)
    assert r.percent_of_total("/Big/Low") == pytest.approx(50.0)
    assert r.mask(("Low",)).tolist() == [False] * 7 + [True] * 3
    # quadrants live under the quadrant gate's parent
    assert r.mask("X+Y-").tolist() == [False] * 7 + [True] * 3
    assert r.mask("/Big/X-Y+").tolist() == [False, False, True, True, True, True, False, False, False, False]
    assert list(r.counts()) == ["/Big", "/Big/Low", "/Big/X+Y-", "/Big/X-Y+", "/Low"]


def test_ambiguous_name_needs_a_path(source):
    t = _tree()
    with pytest.raises(GatingError, match=r"ambiguous; use a path: /Big/Low, /Low"):
        t.find("Low")
    assert t.find("Big/Low").path == ("Big", "Low")
    assert t.find(("Low",)).path == ("Low",)
    with pytest.raises(GatingError, match="no population"):
        t.find("Nope")
    with pytest.raises(GatingError, match="already exists"):
        t.add(RectangleGate("Big", ["x"], [0], [1]))


def test_boolean_gates_use_referenced_populations_with_parents(source):
    t = _tree()
    t.add(BooleanGate("Either", "or", [GateReference("/Big/Low"), GateReference("/Low")]))
    t.add(BooleanGate("NotQ", "and", [GateReference("Big"), GateReference("X+Y-", complement=True)]))
    t.add(BooleanGate("Not", "not", [GateReference("Big")]), parent="/Low")
    r = t.apply(source)
    assert r.count("Either") == 5
    assert r.mask("NotQ").tolist() == [False, False] + [True] * 5 + [False] * 3
    assert r.count("/Low/Not") == 0  # inside /Low everything has x >= 7 so is in Big


def test_boolean_cycle_is_reported(source):
    t = GatingTree()
    t.add(BooleanGate("A", "and", ["B", "B2"]))
    t.add(BooleanGate("B", "not", ["A"]))
    t.add(RectangleGate("B2", ["x"], [0], [1]))
    with pytest.raises(GatingError, match="depends on itself"):
        t.apply(source)


def test_empty_parent_percent_is_nan(source):
    t = GatingTree()
    t.add(RectangleGate("None", ["x"], [100], [None]))
    t.add(RectangleGate("Child", ["y"], [0], [None]), parent="None")
    r = t.apply(source)
    assert r.count("Child") == 0
    assert np.isnan(r.percent_of_parent("Child"))


def test_masks_are_cached_and_read_only(source):
    r = _tree().apply(source)
    m = r.mask("Big")
    assert r.mask("/Big") is m
    with pytest.raises(ValueError):
        m[0] = True
