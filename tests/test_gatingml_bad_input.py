"""Gating-ML files a demanding user might feed in: each is refused with one line naming the
file and the gate (GatingMLError, CLI exit 2), and big files cost memory linear in their size."""
from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cd7flow.errors import CD7FlowError, GatingMLError
from cd7flow.io.gatingml import MAX_NESTING, read_gatingml
from gating.dimensions import ArraySource
from gating.gates import BooleanGate, RectangleGate
from gating.tree import GatingResult, GatingTree

HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
        'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">\n')
TAIL = "</gating:Gating-ML>\n"


def _dim(channel: str, lo: float | None = None, hi: float | None = None) -> str:
    bounds = "".join(f' gating:{k}="{v}"' for k, v in (("min", lo), ("max", hi)) if v is not None)
    return (f'<gating:dimension gating:compensation-ref="uncompensated"{bounds}>'
            f'<data-type:fcs-dimension data-type:name="{channel}"/></gating:dimension>')


def _rect(gid: str, parent: str | None = None, lo: float = 0, hi: float = 500) -> str:
    par = f' gating:parent_id="{parent}"' if parent else ""
    return f'<gating:RectangleGate gating:id="{gid}"{par}>{_dim("FSC-H", lo, hi)}</gating:RectangleGate>\n'


def _bool(gid: str, op: str, *refs: str, parent: str | None = None) -> str:
    par = f' gating:parent_id="{parent}"' if parent else ""
    ops = "".join(f'<gating:gateReference gating:ref="{r}"/>' for r in refs)
    return f'<gating:BooleanGate gating:id="{gid}"{par}><gating:{op}>{ops}</gating:{op}></gating:BooleanGate>\n'


def _write(tmp_path: Path, body: str, name: str = "bad.xml") -> Path:
    p = tmp_path / name
    p.write_text(HEAD + body + TAIL, encoding="utf-8")
    return p


POLYGON_2 = ('<gating:PolygonGate gating:id="Tiny">' + _dim("FSC-H") + _dim("SSC-H")
             + '<gating:vertex><gating:coordinate data-type:value="1"/><gating:coordinate data-type:value="2"/>'
             '</gating:vertex><gating:vertex><gating:coordinate data-type:value="3"/>'
             '<gating:coordinate data-type:value="4"/></gating:vertex></gating:PolygonGate>\n')

BAD = {
    "polygon_two_vertices": (POLYGON_2, r"bad.xml: polygon gate 'Tiny' needs at least 3"),
    "rectangle_min_above_max": (_rect("Upside", lo=500, hi=100), r"bad.xml: gate 'Upside': .* min 500.0 > max 100.0"),
    "boolean_cycle": (_bool("A", "and", "B", "B") + _bool("B", "or", "A", "A"),
                      r"bad.xml: boolean gates depend on themselves .*: (A -> B -> A|B -> A -> B)"),
    "boolean_needs_own_child": (_bool("A", "not", "C") + _rect("C", parent="A"),
                                r"bad.xml: boolean gates depend on themselves .*A"),
    "deep_nesting": ("<a>" * 100_000 + "</a>" * 100_000, rf"nested more than {MAX_NESTING} deep"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_gatingml_is_a_gatingml_error(tmp_path: Path, case: str):
    body, message = BAD[case]
    with pytest.raises(GatingMLError, match=message) as info:
        read_gatingml(_write(tmp_path, body))
    assert isinstance(info.value, CD7FlowError)


@pytest.mark.parametrize("case", ["polygon_two_vertices", "rectangle_min_above_max", "boolean_cycle", "deep_nesting"])
def test_cli_prints_one_line_and_exits_2(tmp_path: Path, shared_data: Path, case: str):
    fcs = shared_data / "flowkit" / "data" / "gate_ref" / "data1.fcs"
    gates = _write(tmp_path, BAD[case][0])
    run = subprocess.run([sys.executable, "-m", "cd7flow.cli", "gate", str(fcs), "--gates", str(gates)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    lines = [ln for ln in (run.stderr + run.stdout).splitlines() if ln.strip()]
    assert len(lines) == 1 and "bad.xml" in lines[0], lines


def test_gates_before_their_parents_keep_the_sweep_order(tmp_path: Path):
    # C waits for P (defined after it), D and E do not: P's children are D, E, then C
    # (the order main's repeated sweeps gave; memberships' column order depends on it)
    doc = _rect("C", parent="P") + _rect("P") + _rect("D", parent="P") + _rect("E", parent="P") + _rect("Q")
    tree = read_gatingml(_write(tmp_path, doc, "order.xml")).tree
    assert [p.path for p in tree] == [("P",), ("P", "D"), ("P", "E"), ("P", "C"), ("Q",)]
    # two levels of waiting: G under F under P, all before P
    doc = _rect("G", parent="F") + _rect("F", parent="P") + _rect("P") + _rect("H", parent="F")
    tree = read_gatingml(_write(tmp_path, doc, "order2.xml")).tree
    assert [p.path for p in tree] == [("P",), ("P", "F"), ("P", "F", "H"), ("P", "F", "G")]


def test_deep_chain_costs_memory_linear_in_gates(tmp_path: Path):
    """A chain of 4,000 nested gates: each population used to hold its full path (16 MB of
    tuples here, growing with the square of the depth); now nodes link to their parent."""
    n = 4000
    body = _rect("g0") + "".join(_rect(f"g{i}", parent=f"g{i - 1}") for i in range(1, n))
    path = _write(tmp_path, body, "chain.xml")
    tracemalloc.start()
    try:
        strategy = read_gatingml(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    deepest = strategy.tree.find("g3999")
    assert len(deepest.path) == n and deepest.path[:2] == ("g0", "g1")
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MB"  # the XML tree itself is ~5 MB
    x = np.arange(1000, dtype=float)
    result = strategy.tree.apply(ArraySource(x[:, None], ["FSC-H"]))
    assert result.count("g3999") == 500 and result.count("g0") == 500


def test_masks_beyond_the_cache_are_recomputed_identically():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5000, 2))
    tree = GatingTree()
    tree.add(RectangleGate("A", ["x"], [-1.0], [None]))
    tree.add(RectangleGate("B", ["y"], [None], [0.5]), "A")
    tree.add(RectangleGate("C", ["x"], [None], [1.0]), "/A/B")
    tree.add(BooleanGate("notC", "not", ["C"]), "A")
    src = ArraySource(x, ["x", "y"])
    full = GatingResult(tree, src)
    tiny = GatingResult(tree, src, cache_bytes=1, packed_bytes=0)  # keeps one mask at a time
    packed = GatingResult(tree, src, cache_bytes=1)  # the others bit-packed
    for _ in range(2):
        for pop in tree:
            for other in (tiny, packed):
                assert np.array_equal(full.mask(pop.path), other.mask(pop.path)), pop.path_str
                assert full.count(pop.path) == other.count(pop.path)
    assert len(packed._packed) == len(tree) - 1 and not tiny._packed
    expected_c = (x[:, 0] >= -1) & (x[:, 1] < 0.5) & (x[:, 0] < 1)
    assert tiny.count("C") == int(expected_c.sum())
    assert tiny.count("notC") == int(((x[:, 0] >= -1) & ~expected_c).sum())
    assert len(tiny._masks) == 1
