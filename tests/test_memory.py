"""The protocol pipeline's lean data source: same populations as the float64 block, bounded memory.

On a large tube the pipeline (cd7flow.assays.protocol_gating) reads values through a lean
:class:`~cd7flow.datasource.SampleSource` (the tests lower the size limit to use it on a 200k tube): each column computed for the step that needs it, a
block of rows at a time, with the arithmetic of the default (float64, whole compensated block)
mode, in a bounded cache. These tests check that it changes no number (every population, every
fitted threshold, the screening record: identical, not within a tolerance) and that gating a tube
never holds the compensated block or a float64 copy of the event matrix (tracemalloc bound).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import cd7flow.assays.protocol_gating as protocol_gating
from cd7flow.assays.screening import screen_sample
from cd7flow.datasource import SampleSource
from cd7flow.protocol import load_protocol
from cd7flow.simulate import FULL_PANEL, TubeSpec, simulate_tube
from cd7flow.transforms import transform_from_spec
from gating.dimensions import Dimension

N_EVENTS = 200_000


@pytest.fixture(scope="module")
def tube():
    spec = TubeSpec(name="lean memory tube", n_events=N_EVENTS, panel=FULL_PANEL, blast_pct=30.0,
                    lineage="T-ALL", cd7_fraction=0.9, event_rate_per_s=50000.0)
    sample, _, _ = simulate_tube(spec, 7)
    assert sample.events.dtype == np.float32 and sample.spillover is not None
    return sample


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("screening")


def _float64_source(sample, *args, lean=False, cache_bytes=None, **kw):
    return SampleSource(sample, *args, **kw)  # the pre-lean pipeline: whole compensated block, all cached


def _same(a, b) -> bool:
    """Equal to the last bit, through dicts, lists and arrays."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and not isinstance(b, np.ndarray):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_lean_columns_are_the_float64_block_to_the_last_bit(tube):
    xf = transform_from_spec("logicle", t=262144.0, m=4.5, w=0.8, a=0.0)
    exact = SampleSource(tube, transforms={"L": xf})
    lean = SampleSource(tube, transforms={"L": xf}, lean=True, cache_bytes=0)
    rows = np.random.default_rng(3).random(tube.n_events) < 0.3
    dims = [Dimension(ch, comp, t) for ch in (*tube.spillover.channels[:4], "SSC-A", "Time")
            for comp in ("FCS", None) for t in ("L", None)]
    for d in dims:
        assert np.array_equal(exact.values(d), lean.values(d)), d
    table = lean.rows_table(dims, rows)
    assert np.array_equal(table, np.column_stack([exact.values(d)[rows] for d in dims]))
    assert not lean._compensated  # never the whole compensated block
    assert lean.cached_bytes <= max(lean.cache_limit, tube.n_events * 8)


def test_pipeline_populations_and_record_identical_to_the_float64_block(tube, protocol, monkeypatch):
    monkeypatch.setattr(protocol_gating, "LEAN_ABOVE_BYTES", 0)  # lean as for a large tube
    lean_g = protocol_gating.run_protocol_gates(tube, protocol)
    lean_rec = screen_sample(tube, protocol)
    assert lean_g.source.lean and not lean_g.source._compensated
    with monkeypatch.context() as m:
        m.setattr(protocol_gating, "SampleSource", _float64_source)
        exact_g = protocol_gating.run_protocol_gates(tube, protocol)
        exact_rec = screen_sample(tube, protocol)
    assert not exact_g.source.lean
    assert list(lean_g.masks) == list(exact_g.masks)
    for name in exact_g.masks:
        assert np.array_equal(lean_g.masks[name], exact_g.masks[name]), name
    for name, est in exact_g.estimators.items():
        for attr in ("threshold_", "thresholds_", "vertices_", "ratio_low_", "ratio_high_"):
            if hasattr(est, attr):
                assert _same(getattr(lean_g.estimators[name], attr), getattr(est, attr)), (name, attr)
    assert lean_rec == exact_rec
    assert lean_rec["verdict"] == "positive" and lean_rec["blasts"] > 10_000


def _gating_peak(tube, protocol) -> tuple[int, object]:
    protocol_gating.run_protocol_gates(tube, protocol)  # warm-up: imports, caches
    tracemalloc.start()
    try:
        g = protocol_gating.run_protocol_gates(tube, protocol)
        return tracemalloc.get_traced_memory()[1], g
    finally:
        tracemalloc.stop()


def test_gating_a_tube_holds_no_float64_copy_of_the_matrix(tube, protocol, monkeypatch):
    """With the cache of a large tube (a couple of columns), the lean pipeline's peak allocation is
    well below the float64 block pipeline's, by more than half a float64 copy of the event
    matrix: the block and the transformed columns are never all held; columns come and go with
    the step that needs them, fits copy only their rows. (Fixed costs, e.g. the logicle lookup
    tables, are in both peaks.)"""
    float64_matrix = tube.n_events * len(tube.channels) * 8
    monkeypatch.setattr(protocol_gating, "LEAN_ABOVE_BYTES", 0)  # lean as for a large tube
    monkeypatch.setattr(SampleSource, "lean_cache_bytes", staticmethod(lambda sample: 2 * sample.n_events * 8))
    lean_peak, g = _gating_peak(tube, protocol)
    assert g.count("blasts_refined") > 10_000 and not g.source._compensated
    with monkeypatch.context() as m:
        m.setattr(protocol_gating, "SampleSource", _float64_source)
        block_peak, exact = _gating_peak(tube, protocol)
    assert not exact.source.lean
    assert exact.count("blasts_refined") == g.count("blasts_refined")
    print(f"gating peak: lean {lean_peak / float64_matrix:.2f}x, float64 block {block_peak / float64_matrix:.2f}x "
          "a float64 copy of the event matrix")
    assert lean_peak < block_peak - 0.5 * float64_matrix
