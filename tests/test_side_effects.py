"""Library calls leave the process as they found it: the BLAS thread count and ElementTree's
namespace-prefix map are the same after compensating and writing Gating-ML."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
from threadpoolctl import threadpool_info

from cd7flow.compensation import SpilloverMatrix
from cd7flow.io.gatingml import read_gatingml, write_gatingml
from cd7flow.strategy import GatingStrategy
from gating.gates import RectangleGate


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]


def test_compensation_restores_the_blas_thread_count():
    before = _blas_threads()
    spill = SpilloverMatrix(("A", "B"), np.array([[1.0, 0.2], [0.1, 1.0]]))
    events = np.random.default_rng(0).normal(size=(200_000, 2))
    out = spill.compensate(events, ["A", "B"])
    np.testing.assert_allclose(out, events @ np.linalg.inv(spill.matrix), rtol=1e-12, atol=1e-12)
    assert _blas_threads() == before


def test_writing_gatingml_registers_no_namespace(tmp_path):
    before = dict(ET._namespace_map)  # the process-wide map ET.register_namespace writes into
    strategy = GatingStrategy()
    strategy.tree.add(RectangleGate("R", ["FSC-H"], [1.0], [2.0]))
    out = tmp_path / "g.xml"
    write_gatingml(strategy, out)
    assert dict(ET._namespace_map) == before
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<?xml version='1.0' encoding='UTF-8'?>\n<gating:Gating-ML xmlns:data-type=")
    assert 'gating:RectangleGate gating:id="R"' in text
    again = read_gatingml(out).tree.find("R").gate
    assert (again.mins, again.maxs) == ((1.0,), (2.0,))
