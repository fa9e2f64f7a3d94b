"""The screening assay on tubes from a second independent generator.

Different on purpose from cd7flow.simulate and from tests/test_screening_foreign.py
(arcsinh-Gaussian clusters, BD detectors, neighbour spill <= 25%):

* every population's marker is log-normal in LINEAR space with a wide CV (40-80%, drawn
  per population and marker), its median given in decades above the electronic noise SD
  (``sigma_e`` = range x 10^-decades); unstained cells are a log-normal autofluorescence
  (brighter for granulocytes and monocytes) plus Gaussian electronic noise, so negatives
  spread into negative values after compensation;
* bone-marrow proportions (granulocytes 40-60% of normal cells, lymphocytes 10-20%,
  monocytes 3-8%), blasts whose CD45 (CV 60-80%) overlaps monocytes and lymphocytes;
* scatter log-normal on a 262,144 or 1,048,576 linear range with wide CVs, so the
  FSC/SSC clusters overlap more;
* fluorescence on 262,144 / 1,048,576 / 16,777,216 (spectral-style) / 1,024 ranges, with
  detector sets named like BD ("BV421-A"), Cytek ("B1-A", "YG1-A") or "FL1-A";
* a $SPILLOVER whose neighbour off-diagonals reach 0.5, spill applied to the true signal,
  then photon (Poisson-like) noise and electronic noise;
* a viability dye with 5-20% dead cells, doublets, debris, optional Time.

Truth is per event: a blast is a live single event drawn as a blast, CD7-positive when
drawn from the blasts' CD7-positive component. The assay must give % CD7+ of blasts
within 2 percentage points of the truth and the verdict of the shipped rule.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from cd7flow.io.fcs_write import write_fcs
from cd7flow.protocol import load_protocol
from screening_check import assert_screen_matches_truth

MARKERS = ["CD45", "CD7", "CD3", "CD5", "CD34", "CD33", "CD19", "CD56", "Viability"]
DETECTOR_SETS = {
    "bd": ["BUV395-A", "BUV737-A", "BV421-A", "BV510-A", "BV605-A", "BV786-A", "FITC-A", "PE-A",
           "PE-Cy5-A", "PE-Cy7-A", "APC-A", "APC-R700-A"],
    "cytek": ["UV7-A", "V1-A", "V3-A", "V7-A", "V10-A", "B1-A", "B4-A", "YG1-A", "YG4-A", "YG9-A", "R1-A", "R7-A"],
    "fl": [f"FL{i}-A" for i in range(1, 13)],
}

# Positive-component medians in decades above the electronic noise SD.
BRIGHT, MID, DIM = 3.0, 2.6, 2.2


@dataclass
class Tube:
    """One generated screening tube."""

    name: str
    lineage: str                    # "T-ALL" or "AML"
    blast_frac: float               # live single blasts / live single leukocytes
    cd7_frac: float                 # fraction of blasts drawn from the CD7-positive component
    cd7_level: float                # its median (decades above sigma_e)
    fl_range: float = 262144.0
    scatter_range: float = 262144.0
    decades: float = 4.5            # sigma_e = fl_range * 10**-decades
    detectors: str = "bd"
    dead_frac: float = 0.1
    blast_cd45: float = 2.3         # lymphocytes 3.0, monocytes 2.75, granulocytes 2.35
    n_events: int = 20000
    time: bool = True
    seed: int = 0


def _cv_sigma(cv):
    """Sigma of ln(x) for a log-normal of the given CV (linear space)."""
    return np.sqrt(np.log1p(np.square(cv)))


def _populations(tube: Tube, rng) -> dict[str, dict]:
    """Marker medians (decades above sigma_e; a (fraction, level) pair = partial expression),
    scatter medians (fraction of the scatter range) and autofluorescence (decades)."""
    blasts = {"CD45": tube.blast_cd45, "CD7": (tube.cd7_frac, tube.cd7_level), "fsc": 0.30, "ssc": 0.085,
              "af": 0.6, "cd45_cv": rng.uniform(0.6, 0.8)}
    if tube.lineage == "T-ALL":
        blasts.update(CD3=2.3, CD5=2.5, CD34=(0.4, 2.3))
    else:
        blasts.update(CD34=2.5, CD33=2.2)
    return {
        "T": {"CD45": 3.0, "CD3": 2.6, "CD5": 2.7, "CD7": (0.93, 2.8), "fsc": 0.22, "ssc": 0.06, "af": 0.5},
        "NK": {"CD45": 2.9, "CD56": 2.4, "CD7": 2.6, "fsc": 0.24, "ssc": 0.07, "af": 0.5},
        "B": {"CD45": 2.8, "CD19": 2.5, "fsc": 0.21, "ssc": 0.055, "af": 0.5},
        "mono": {"CD45": 2.75, "CD33": 2.6, "fsc": 0.38, "ssc": 0.19, "af": 0.85},
        "gran": {"CD45": 2.35, "CD33": 1.7, "fsc": 0.42, "ssc": 0.42, "af": 0.95},
        "blast": blasts,
    }


def _counts(tube: Tube, n_live: int, rng) -> dict[str, int]:
    n_blast = int(round(tube.blast_frac * n_live))
    mix = {"gran": rng.uniform(0.45, 0.6), "mono": rng.uniform(0.04, 0.08), "T": rng.uniform(0.08, 0.14),
           "NK": rng.uniform(0.01, 0.03), "B": rng.uniform(0.02, 0.05)}
    total = sum(mix.values())
    n_normal = n_live - n_blast
    counts = {k: int(round(n_normal * v / total)) for k, v in mix.items()}
    counts["gran"] += n_normal - sum(counts.values())
    counts["blast"] = n_blast
    return counts


def generate(tube: Tube, path) -> dict:
    """Write ``tube`` as an FCS file at ``path``; return the truth."""
    rng = np.random.default_rng(tube.seed)
    pops = _populations(tube, rng)
    n = tube.n_events
    n_debris, n_doublet = int(0.05 * n), int(0.03 * n)
    n_dead = int(tube.dead_frac * (n - n_debris - n_doublet))
    n_live = n - n_debris - n_doublet - n_dead
    counts = _counts(tube, n_live, rng)
    sigma_e = tube.fl_range * 10 ** -tube.decades

    fl, sc, t_blast, t_cd7 = [], [], [], []
    for pop, k in counts.items():
        p = pops[pop]
        x = np.empty((k, len(MARKERS)))
        cd7_pos = np.zeros(k, bool)
        for m, name in enumerate(MARKERS):
            af = sigma_e * 10 ** p["af"] * rng.lognormal(0, _cv_sigma(0.6), k)
            spec = p.get(name)
            if spec is None:
                x[:, m] = af
                continue
            frac, level = spec if isinstance(spec, tuple) else (1.0, spec)
            on = rng.random(k) < frac
            cv = p["cd45_cv"] if (name == "CD45" and "cd45_cv" in p) else rng.uniform(0.4, 0.8)
            pos = sigma_e * 10 ** level * rng.lognormal(0, _cv_sigma(cv), k)
            x[:, m] = np.where(on, pos, 0.0) + af
            if name == "CD7":
                cd7_pos = on
        fl.append(x)
        scat = np.column_stack([p["fsc"] * rng.lognormal(0, _cv_sigma(rng.uniform(0.15, 0.25)), k),
                                p["ssc"] * rng.lognormal(0, _cv_sigma(rng.uniform(0.3, 0.45)), k)])
        sc.append(scat)
        t_blast.append(np.full(k, pop == "blast"))
        t_cd7.append(cd7_pos & (pop == "blast"))
    live_fl, live_sc = np.vstack(fl), np.vstack(sc)
    n_real = live_fl.shape[0]
    live_h = live_sc[:, 0] / rng.normal(1.15, 0.04, n_real)

    # Dead cells: live cells that lost scatter and half their antigen, dye-bright.
    src = rng.integers(0, n_real, n_dead)
    d_fl = live_fl[src] * 0.5
    d_fl[:, MARKERS.index("Viability")] = sigma_e * 10 ** 2.6 * rng.lognormal(0, _cv_sigma(0.5), n_dead)
    d_sc = live_sc[src] * [0.65, 1.1]
    d_h = d_sc[:, 0] / rng.normal(1.15, 0.04, n_dead)
    # Doublets: two live cells, area adds, height less.
    a, b = rng.integers(0, n_real, (2, n_doublet))
    db_fl, db_sc = live_fl[a] + live_fl[b], live_sc[a] + live_sc[b]
    db_h = np.maximum(live_sc[a, 0], live_sc[b, 0]) / 1.15 * rng.normal(1.1, 0.05, n_doublet)
    # Debris: small, dim, some dye uptake.
    de_sc = np.column_stack([rng.lognormal(np.log(0.04), 0.5, n_debris), rng.lognormal(np.log(0.03), 0.6, n_debris)])
    de_fl = sigma_e * 10 ** rng.uniform(0, 1.8, (n_debris, len(MARKERS)))
    de_h = de_sc[:, 0] / rng.normal(1.15, 0.1, n_debris)

    true_fl = np.vstack([live_fl, d_fl, db_fl, de_fl])
    scatter = np.vstack([live_sc, d_sc, db_sc, de_sc]) * tube.scatter_range
    fsc_h = np.concatenate([live_h, d_h, db_h, de_h]) * tube.scatter_range
    pad = np.zeros(n_dead + n_doublet + n_debris, bool)
    is_blast, is_cd7 = np.concatenate(t_blast + [pad]), np.concatenate(t_cd7 + [pad])

    # Detectors: 9 of 12 in spectral order; a marker's neighbours spill into it up to 0.5.
    pool = DETECTOR_SETS[tube.detectors]
    slots = np.sort(rng.choice(len(pool), size=len(MARKERS), replace=False))
    det = [pool[i] for i in rng.permutation(slots)]
    pos_of = {d: pool.index(d) for d in det}
    spill = np.eye(len(MARKERS))
    for i in range(len(MARKERS)):
        for k in range(len(MARKERS)):
            gap = pos_of[det[k]] - pos_of[det[i]]
            if gap == 1:
                spill[i, k] = rng.uniform(0.1, 0.5)
            elif gap == -1 or gap == 2:
                spill[i, k] = rng.uniform(0.01, 0.12)
            elif i != k and rng.random() < 0.25:
                spill[i, k] = rng.uniform(0.0, 0.04)
    observed = true_fl @ spill
    observed += rng.normal(0, 1, observed.shape) * np.sqrt(np.abs(observed) * sigma_e * 0.5)  # photon noise
    observed += rng.normal(0, sigma_e, observed.shape)                                      # electronic noise
    observed = np.minimum(observed, tube.fl_range)
    scatter = np.clip(scatter + rng.normal(0, 1e-4 * tube.scatter_range, scatter.shape), 0, tube.scatter_range)
    fsc_h = np.clip(fsc_h, 0, tube.scatter_range)

    columns = {"FSC-A": scatter[:, 0], "FSC-H": fsc_h, "SSC-A": scatter[:, 1]}
    names = {"FSC-A": "", "FSC-H": "", "SSC-A": ""}
    ranges = {"FSC-A": tube.scatter_range, "FSC-H": tube.scatter_range, "SSC-A": tube.scatter_range}
    for m, name in enumerate(MARKERS):
        columns[det[m]], names[det[m]], ranges[det[m]] = observed[:, m], name, tube.fl_range
    order = rng.permutation(observed.shape[0])
    columns = {ch: v[order] for ch, v in columns.items()}
    meta = {"$CYT": "Second independent generator"}
    if tube.time:
        columns["Time"] = np.sort(rng.uniform(0, 90.0, observed.shape[0])) / 0.001
        names["Time"], ranges["Time"] = "", 262144.0
        meta["$TIMESTEP"] = "0.001"
    # Scatter first, then fluorescence in detector order (as instruments write them), Time last.
    channels = ["FSC-A", "FSC-H", "SSC-A"] + sorted(det, key=pool.index) + (["Time"] if tube.time else [])
    data = np.column_stack([columns[ch] for ch in channels]).astype(np.float32)
    write_fcs(path, data, channels=channels, markers=[names[ch] for ch in channels],
              ranges=[ranges[ch] for ch in channels], spillover=(det, spill), metadata=meta)
    blasts = int(is_blast.sum())
    return {"blasts": blasts, "cd7_pos_pct": 100.0 * is_cd7.sum() / blasts,
            "is_blast": is_blast[order], "is_cd7": is_cd7[order]}


# Known failures (measured 2026-11-25, protocol screening 1.3.0; unchanged at 1.4.0 and 1.5.0). strict=True: a fix makes
# them XPASS and fail, so each mark must be removed with the fix.
_NO_BLASTS = pytest.mark.xfail(strict=True, reason="6% blasts under a wide granulocyte/lymphocyte continuum: "
                               "no blast cluster found on CD45/SSC (not_evaluable, not a wrong verdict)")

CASES = [
    Tube("tall_bright_85", "T-ALL", 0.55, 0.85, BRIGHT, seed=11),
    Tube("tall_dim_35_spectral", "T-ALL", 0.35, 0.35, DIM, fl_range=16777216.0, scatter_range=1048576.0,
         decades=5.0, detectors="cytek", seed=12),
    Tube("aml_negative_5", "AML", 0.60, 0.05, MID, fl_range=1048576.0, scatter_range=1048576.0, seed=13),
    Tube("aml_partial_28_fl1024", "AML", 0.25, 0.28, MID, fl_range=1024.0, decades=3.8, detectors="fl",
         time=False, seed=14),
    pytest.param(Tube("aml_low_blasts_6", "AML", 0.06, 0.60, BRIGHT, n_events=40000, detectors="cytek",
                      fl_range=4194304.0, seed=15), marks=_NO_BLASTS),
    # Was +2.2 points (xfail) at 1.4.0: 34.0% above the threshold. At 1.5.0 the verdict's % is the
    # expressing fraction, 33.7% (+1.9): the blast gate still holds events of the T cells, whose CD45
    # (blasts' CV 60-80%) and CD3 overlap the blasts' here (blast precision 0.944, recall 0.966), and
    # the mature-T exclusion finds no region of the blast gate that is >= 80% T cells in this tube.
    Tube("tall_near_cut_32_dim", "T-ALL", 0.45, 0.32, DIM, dead_frac=0.05, seed=16),
    Tube("aml_near_egil_22", "AML", 0.40, 0.22, MID, detectors="cytek", fl_range=1048576.0, seed=17),
    Tube("tall_high_blasts_60_dead20", "T-ALL", 0.60, 0.60, MID, dead_frac=0.2, scatter_range=1048576.0,
         seed=18),
    # Was -2.2 points at 1.3.0 (CD33-bright monocytes kept by the myeloid refinement); 1.4.0 refines on CD34.
    Tube("aml_cd45_overlap_40", "AML", 0.30, 0.40, MID, blast_cd45=2.55, detectors="fl", seed=19),
]


def _name(case):
    return (case.values[0] if hasattr(case, "values") else case).name


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("screening")


@pytest.mark.parametrize("tube", CASES, ids=[_name(c) for c in CASES])
def test_foreign2_tube_within_2_points_of_truth(tube, protocol, tmp_path):
    path = tmp_path / f"{tube.name}.fcs"
    truth = generate(tube, path)
    assert_screen_matches_truth(tube.name, path, truth, protocol)
