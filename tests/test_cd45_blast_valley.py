"""CD45/SSC blasts only when a CD45-dim cluster is a separate mode from the lymphocytes.

A lymphocyte population with a continuous dim tail (no second mode) must not grow a
"blast" cluster; a real CD45-dim population with a density valley must still be found.
"""
from __future__ import annotations

import numpy as np
import pytest

from gating.auto import CD45SSCPopulations

LMD = "cytoflow/cytoflow/tests/data/instruments/System II listmode with extra info in bits D10-D15.LMD"


def _with_dim_tail(rng, tail_sd: float):
    """Lymphocytes (CD45 0.78 +- 0.035) with a half-normal dim tail, monocytes, granulocytes.

    Returns X (CD45, SSC) and labels (0 lymphocytes incl. tail, 1 monocytes, 2 granulocytes)."""
    n = 20000
    cd45 = np.r_[rng.normal(0.78, 0.035, n), 0.78 - np.abs(rng.normal(0.0, tail_sd, n // 3))]
    lymph = np.c_[cd45, rng.normal(0.25, 0.04, cd45.size)]
    mono = np.c_[rng.normal(0.74, 0.035, 2000), rng.normal(0.45, 0.04, 2000)]
    gran = np.c_[rng.normal(0.60, 0.04, 6000), rng.normal(0.72, 0.05, 6000)]
    X = np.r_[lymph, mono, gran]
    return X, np.repeat([0, 1, 2], [len(lymph), len(mono), len(gran)])


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_lymphocytes_dim_tail_is_not_blasts(seed):
    rng = np.random.default_rng(seed)
    X, labels = _with_dim_tail(rng, tail_sd=0.12)
    est = CD45SSCPopulations(("CD45", "SSC-A"), require_population=False, random_state=0).fit(X)
    masks = est.predict_populations(X)
    assert "blasts" not in masks and not est.predict(X).any()
    # The tail's components were tested and found continuous with the lymphocytes.
    assert est.blast_valley_ and min(est.blast_valley_.values()) >= est.blast_valley_ratio
    tail = (labels == 0) & (X[:, 0] < 0.78 - 3 * 0.035)
    assert masks["lymphocytes"][labels == 0].mean() > 0.95
    assert masks["lymphocytes"][tail].mean() > 0.8


def test_without_the_valley_test_the_tail_is_blasts():
    # blast_valley_ratio above 1 switches the separation test off: the same tail is then "blasts"
    # (what the leukocytes protocol did before 1.2.0), so the test above can fail.
    X, _ = _with_dim_tail(np.random.default_rng(1), tail_sd=0.12)
    est = CD45SSCPopulations(("CD45", "SSC-A"), blast_valley_ratio=1.5, require_population=False).fit(X)
    assert 0.05 < est.predict(X).mean() < 0.25


def test_separate_dim_cluster_next_to_a_tail_is_still_blasts():
    rng = np.random.default_rng(7)
    X, labels = _with_dim_tail(rng, tail_sd=0.05)
    blasts = np.c_[rng.normal(0.45, 0.04, 8000), rng.normal(0.30, 0.05, 8000)]
    X = np.r_[X, blasts]
    labels = np.r_[labels, np.full(len(blasts), 3)]
    est = CD45SSCPopulations(("CD45", "SSC-A"), random_state=0).fit(X)
    found = est.predict(X)
    recall = found[labels == 3].mean()
    precision = (labels[found] == 3).mean()
    assert recall > 0.9 and precision > 0.95
    assert max(est.blast_valley_[k] for k, v in est.blast_valley_.items()
               if est.labels_[k[0]] == "blasts") < est.blast_valley_ratio


def test_real_leukemia_tube_cd45_dim_mode_has_a_valley(shared_data):
    """Coulter XL "LEUKEMIA CD45E GATE" tube (CD41/CD7/CD45/CD33): at the lymphocytes' SSC
    the CD45 histogram is bimodal (dim mode ~0.29, bright ~0.49, valley ~0.41), so its
    CD45-dim SSC-low/intermediate population (CD33+) is a separate mode and stays blasts."""
    from cd7flow.assays.protocol_gating import run_protocol_gates
    from cd7flow.io.fcs_read import read_fcs
    from cd7flow.protocol import load_protocol

    path = shared_data / LMD
    if not path.is_file():
        pytest.skip(f"{path} not in the corpus")
    sample = read_fcs(path)
    g = run_protocol_gates(sample, load_protocol("leukocytes"))
    cells = g.masks["cells"]
    X = np.c_[g.values("CD45"), g.values("ssc_a")][cells]
    # Independent check of the biology: a histogram valley between the modes at lymphocyte SSC.
    low_ssc = X[:, 1] < 150
    h, edges = np.histogram(X[low_ssc, 0], bins=24, range=(0.18, 0.59))
    centre = (edges[:-1] + edges[1:]) / 2
    dim_peak, bright_peak = h[centre < 0.36].max(), h[centre > 0.44].max()
    valley = h[(centre > 0.36) & (centre < 0.44)].min()
    assert valley < 0.25 * min(dim_peak, bright_peak)
    est = CD45SSCPopulations(("CD45", "SSC-A"), random_state=0).fit(X)
    blast_valleys = [v for k, v in est.blast_valley_.items() if est.labels_[k[0]] == "blasts"]
    assert blast_valleys and max(blast_valleys) < 0.5
    assert 100 * g.count("blasts") / sample.n_events == pytest.approx(79.83, abs=0.5)
    assert 100 * g.count("lymphocytes") / sample.n_events == pytest.approx(5.46, abs=0.5)
