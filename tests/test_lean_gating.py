"""The shared gating path's memory and thread behaviour (benchmarks/results_persistence.md).

Compensation works in place on its own float64 block; a gate fit gets only its parent's rows;
the bead gate's column-by-column statistics equal the whole-matrix ones; the gate fits run with
one BLAS/OpenMP thread and the caller's limits come back afterwards.
"""
from __future__ import annotations

import tracemalloc
from unittest import mock

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from cd7flow.assays.protocol_gating import run_protocol_gates
from cd7flow.compensation.matrix import SpilloverMatrix
from cd7flow.datasource import SampleSource
from cd7flow.io.fcs_read import read_fcs
from cd7flow.protocol import load_protocol
from cd7flow.sample import Sample
from gating.auto import METHODS
from gating.auto.beads import MAD_TO_SD, BeadGate
from gating.dimensions import Dimension


def _float32_sample(n_events: int, n_fluor: int) -> Sample:
    rng = np.random.default_rng(3)
    names = [f"FL{i}-A" for i in range(n_fluor)]
    events = rng.gamma(2.0, 500.0, size=(n_events, n_fluor + 1)).astype(np.float32)
    spill = np.eye(n_fluor) + 0.05 * np.tri(n_fluor, k=-1).T  # each detector spills into the next ones
    return Sample(events=events, channels=(*names, "Time"), markers=("",) * (n_fluor + 1),
                  metadata={}, ranges=np.full(n_fluor + 1, 262144.0),
                  spillover=SpilloverMatrix(tuple(names), spill, "test"))


def test_compensation_holds_one_float64_block_and_equals_the_matrix_product():
    sample = _float32_sample(400_000, 8)
    source = SampleSource(sample)
    block_bytes = 400_000 * 8 * 8
    tracemalloc.start()
    try:
        got = source.channel_values("FL3-A", "FCS")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one float64 block of the matrix channels, then either the float32 columns it is read from
    # (0.5x) or two 65,536-row product buffers (8.4 MB); a second block (compensating a copy of
    # the block) would be 2.5x
    assert peak < 1.7 * block_bytes, peak
    assert source.cached_bytes == block_bytes
    expected = sample.events[:, :8].astype(np.float64) @ np.linalg.inv(sample.spillover.matrix)
    np.testing.assert_allclose(got, expected[:, 3], rtol=1e-12)


def test_bead_gate_centre_and_spread_are_those_of_the_candidate_rows():
    rng = np.random.default_rng(5)
    cells = rng.normal([0.3, 0.3, 0.2, 0.2], 0.05, size=(20_000, 4))
    beads = rng.normal([0.6, 0.1, 0.9, 0.85], 0.01, size=(3_001, 4))
    X = np.vstack([cells, beads])
    gate = BeadGate(["fsc", "ssc", "a", "b"]).fit(X)
    assert gate.found_
    cand = X[np.min(X[:, 2:], axis=1) >= gate.score_threshold_]
    center = np.median(cand, axis=0)
    np.testing.assert_array_equal(gate.center_, center)
    np.testing.assert_array_equal(gate.half_width_, 6.0 * (MAD_TO_SD * np.median(np.abs(cand - center), axis=0)))
    inside = np.all(np.abs(cand - center) <= gate.half_width_, axis=1)
    assert gate.n_beads_ == np.count_nonzero(inside) == 3_001
    assert np.count_nonzero(gate.beads(X)) == 3_001


@pytest.fixture(scope="module")
def car_tube(sample_fcs_dir):
    return read_fcs(sample_fcs_dir / "P01_CAR_PB_D014.fcs")


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info()]


def test_gates_are_fitted_on_their_parents_rows_with_one_thread(car_tube):
    seen = []
    original = BeadGate.fit

    def recording(self, X, y=None):
        seen.append((X.shape, max(_blas_threads(), default=1)))
        return original(self, X, y)

    before = _blas_threads()
    with mock.patch.object(BeadGate, "fit", recording):
        g = run_protocol_gates(car_tube, load_protocol("car"))
    assert _blas_threads() == before  # the caller's limits are back
    assert METHODS["beads"].estimator is BeadGate
    (shape, threads), = seen
    assert threads == 1
    # the bead gate's parent is time_clean: exactly its events, one row each
    assert shape == (g.count("time_clean"), len(g.estimators["no_beads"].dimensions_))
    assert g.count("time_clean") < car_tube.n_events or shape[0] == car_tube.n_events


def test_rows_of_a_fit_equal_the_parent_events_of_the_stacked_columns(car_tube):
    calls = []
    cls = METHODS["cd45_ssc"].estimator
    original = cls.fit

    def recording(self, X, *args, **kwargs):
        calls.append(np.array(X, copy=True))
        return original(self, X, *args, **kwargs)

    with mock.patch.object(cls, "fit", recording):
        g = run_protocol_gates(car_tube, load_protocol("car"))
    (X,) = calls
    dims = [g.dimensions[k] for k in ("CD45", "ssc_a")]
    full = np.column_stack([g.source.values(d) for d in dims])
    np.testing.assert_array_equal(X, full[g.masks["viable"]])
    assert all(isinstance(d, Dimension) for d in dims)
