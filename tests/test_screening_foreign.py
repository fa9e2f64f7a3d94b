"""The screening assay on tubes from an independent generator (not cd7flow.simulate).

cd7flow's own simulator shares assumptions with its gates (log-normal populations in
linear space, one spillover model, one detector set). The generator below is written
separately and models things differently on purpose, so a gate that only works on the
demo study fails here:

* every population is a Gaussian cluster in arcsinh space, u = asinh(x / c), with the
  cofactor c set by the tube's dynamic range (c = range x 10^-decades): negatives are
  symmetric around 0 and spread into negative values, positives are log-like;
* a detector set of its own (BD-style $PnN), markers assigned to detectors per tube, a
  random (seeded) spillover matrix with neighbour spill of 1-25%, photon-like spreading
  noise added after spill (so compensated negatives of a bright neighbour get wider);
* FSC-A / FSC-H / SSC-A named as BD does, scatter on its own range (1,024 to 4,194,304),
  channels in shuffled order, Time optional, a viability dye with dead cells, debris,
  doublets, CD45-negative erythroid events;
* T (CD3+CD5+CD7-bright, ~5% CD7-), NK (CD56+CD7+), B (CD19+CD7-), monocytes (CD33+,
  SSC mid), granulocytes (SSC high, CD45 mid, CD33 dim), blasts CD45-dim SSC-low with a
  T-ALL (CD3+ CD5+ CD34+/-) or AML (CD34+ CD33+) phenotype and a CD7-positive component
  of a chosen fraction and intensity.

Truth is per event: an event is a blast when it was drawn as a live single blast, and
CD7-positive when it was drawn from the blasts' CD7-positive component. The assay must
report % CD7+ of blasts within 2 percentage points of that truth, with the right verdict.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from cd7flow.io.fcs_write import write_fcs
from cd7flow.protocol import load_protocol
from screening_check import assert_screen_matches_truth

MARKERS = ["CD45", "CD7", "CD3", "CD5", "CD34", "CD33", "CD19", "CD56", "Viability"]
DETECTORS = ["BUV395-A", "BV421-A", "BV510-A", "BV650-A", "FITC-A", "PE-A", "PE-CF594-A", "PerCP-Cy5-5-A",
             "PE-Cy7-A", "APC-A", "Alexa Fluor 700-A", "APC-H7-A"]

# Expression levels as a fraction of the top of the arcsinh scale (0 = unstained/autofluorescence).
NEG, DIM, MID, BRIGHT = 0.0, 0.42, 0.6, 0.8


@dataclass
class Tube:
    """One generated screening tube (all the knobs of the generator)."""

    name: str
    lineage: str                  # "T-ALL" or "AML"
    blast_frac: float             # live single blasts / live single leukocytes
    cd7_frac: float               # CD7-positive component of the blasts
    cd7_level: float              # level of that component (DIM ... BRIGHT)
    fl_range: float = 262144.0    # $PnR of fluorescence channels
    scatter_range: float = 262144.0
    decades: float = 4.5          # dynamic range: cofactor c = fl_range * 10**-decades
    n_events: int = 20000
    time: bool = True
    blast_cd45: float = 0.45      # blast CD45 level (lymphocytes ~0.85, granulocytes ~gran_cd45)
    gran_cd45: float = 0.62
    seed: int = 0
    normal_mix: dict = field(default_factory=lambda: {"T": 0.25, "NK": 0.05, "B": 0.08, "mono": 0.12,
                                                     "gran": 0.50})


def _population_table(tube: Tube, rng) -> dict[str, dict]:
    """Per population: marker levels (fraction of scale), CD45, FSC/SSC (fraction of range)."""
    j = lambda v, s=0.03: v + rng.normal(0, s)  # noqa: E731 - per-tube jitter of a level
    blasts = {"CD45": j(tube.blast_cd45), "fsc": j(0.30, 0.02), "ssc": j(0.07, 0.008)}
    if tube.lineage == "T-ALL":
        blasts.update(CD3=j(MID), CD5=j(MID), CD34=("partial", 0.5, j(MID)))
    else:
        blasts.update(CD34=j(0.65), CD33=j(MID))
    return {
        "T": {"CD45": j(0.85), "CD3": j(0.7), "CD5": j(0.72), "CD7": ("partial", 0.95, j(0.74)),
              "fsc": j(0.24, 0.01), "ssc": j(0.05, 0.005)},
        "NK": {"CD45": j(0.82), "CD56": j(0.65), "CD7": j(0.68), "fsc": j(0.26, 0.01), "ssc": j(0.06, 0.005)},
        "B": {"CD45": j(0.78), "CD19": j(0.66), "fsc": j(0.23, 0.01), "ssc": j(0.05, 0.005)},
        "mono": {"CD45": j(0.74), "CD33": j(0.72), "fsc": j(0.40, 0.02), "ssc": j(0.17, 0.01), "af": 0.5},
        "gran": {"CD45": j(tube.gran_cd45), "CD33": j(0.35), "fsc": j(0.45, 0.02), "ssc": j(0.38, 0.02), "af": 0.8},
        "ery": {"CD45": 0.0, "fsc": j(0.18, 0.01), "ssc": j(0.03, 0.004)},
        "blast": blasts,
    }


def generate(tube: Tube, path) -> dict:
    """Write ``tube`` as an FCS file at ``path``; return the truth (blast count, % CD7+ of blasts)."""
    rng = np.random.default_rng(tube.seed)
    pops = _population_table(tube, rng)
    n = tube.n_events
    # Event classes: debris, doublets, dead cells, then live single cells of each population.
    n_debris, n_doublet, n_dead = int(0.06 * n), int(0.03 * n), int(0.07 * n)
    n_live = n - n_debris - n_doublet - n_dead
    n_ery = int(0.03 * n_live)
    n_blast = int(round(tube.blast_frac * (n_live - n_ery)))
    mix = tube.normal_mix
    total = sum(mix.values())
    n_normal = n_live - n_ery - n_blast
    counts = {k: int(round(n_normal * v / total)) for k, v in mix.items()}
    counts["blast"], counts["ery"] = n_blast, n_live - n_blast - sum(counts.values())

    u_top = np.arcsinh(10 ** tube.decades)  # asinh(range / c)
    c = tube.fl_range * 10 ** -tube.decades

    def draw(pop: str, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """k cells of a population: (fluorescence truth, linear; n x markers), (fsc, ssc), CD7+ label."""
        p = pops[pop]
        u = np.empty((k, len(MARKERS)))
        cd7_pos = np.zeros(k, bool)
        for m, name in enumerate(MARKERS):
            spec = p.get(name, NEG)
            frac = 1.0
            if name == "CD7" and pop == "blast":
                spec = ("partial", tube.cd7_frac, tube.cd7_level)
            if isinstance(spec, tuple):
                _, frac, spec = spec
            on = rng.random(k) < frac
            if name == "CD7":
                cd7_pos = on if spec > 0 else np.zeros(k, bool)
            level = np.where(on, spec, NEG) * u_top
            # Negatives: Gaussian around the population's autofluorescence in asinh units
            # (sd 0.7: spread into negative values); positives: sd 0.3 (about 0.13 decades).
            sd = np.where(level > 0, 0.3, 0.7)
            u[:, m] = rng.normal(level + np.where(level > 0, 0, p.get("af", 0.2)), sd)
        fluor = c * np.sinh(u)
        fsc = rng.normal(p["fsc"], 0.12 * p["fsc"], k)
        ssc = np.abs(rng.normal(p["ssc"], 0.22 * p["ssc"], k))
        return fluor, np.column_stack([fsc, ssc]), cd7_pos

    fl, sc, truth_blast, truth_cd7 = [], [], [], []
    for pop, k in counts.items():
        f, s, pos = draw(pop, k)
        fl.append(f)
        sc.append(s)
        truth_blast.append(np.full(k, pop == "blast"))
        truth_cd7.append(pos & (pop == "blast"))
    live_fl, live_sc = np.vstack(fl), np.vstack(sc)
    n_real = live_fl.shape[0]
    ratio = rng.normal(1.18, 0.03, n_real)  # FSC-A / FSC-H of a singlet (BD-like)
    fsc_h = live_sc[:, 0] / ratio

    # Dead cells: copies of random live cells, viability-dye bright, smaller, markers dimmer.
    src = rng.integers(0, n_real, n_dead)
    d_fl = live_fl[src] * 0.5
    d_fl[:, MARKERS.index("Viability")] = c * np.sinh(rng.normal(0.75 * u_top, 0.3, n_dead))
    d_sc = live_sc[src] * [0.7, 1.2]
    d_h = d_sc[:, 0] / rng.normal(1.18, 0.03, n_dead)
    # Doublets: two random live cells summed; area adds, height grows less.
    a, b = rng.integers(0, n_real, (2, n_doublet))
    db_fl = live_fl[a] + live_fl[b]
    db_sc = live_sc[a] + live_sc[b]
    db_h = np.maximum(live_sc[a, 0], live_sc[b, 0]) / 1.18 * rng.normal(1.1, 0.04, n_doublet)
    # Debris: small FSC, scattered SSC, dim everything, some viability dye.
    de_sc = np.column_stack([np.abs(rng.normal(0.04, 0.02, n_debris)), np.abs(rng.normal(0.04, 0.03, n_debris))])
    de_fl = c * np.sinh(rng.normal(0.1 * u_top, 0.15 * u_top, (n_debris, len(MARKERS))))
    de_h = de_sc[:, 0] / rng.normal(1.18, 0.1, n_debris)

    true_fl = np.vstack([live_fl, d_fl, db_fl, de_fl])
    scatter = np.vstack([live_sc, d_sc, db_sc, de_sc]) * tube.scatter_range
    fsc_h_all = np.concatenate([fsc_h, d_h, db_h, de_h]) * tube.scatter_range
    is_blast = np.concatenate(truth_blast + [np.zeros(n_dead + n_doublet + n_debris, bool)])
    is_cd7 = np.concatenate(truth_cd7 + [np.zeros(n_dead + n_doublet + n_debris, bool)])

    # Detectors for this tube: 9 of 12, shuffled, CD45 wherever it lands.
    det = list(rng.choice(DETECTORS, size=len(MARKERS), replace=False))
    spill = np.eye(len(MARKERS))
    for i in range(len(MARKERS)):
        for k in range(len(MARKERS)):
            if i != k and abs(DETECTORS.index(det[i]) - DETECTORS.index(det[k])) == 1:
                spill[i, k] = rng.uniform(0.01, 0.25)
            elif i != k and rng.random() < 0.2:
                spill[i, k] = rng.uniform(0.0, 0.03)
    observed = true_fl @ spill
    # Photon-like spreading: noise that grows with the square root of the detected signal.
    observed += rng.normal(0, 1, observed.shape) * np.sqrt(np.abs(observed) * c * 0.05)
    observed = np.minimum(observed, tube.fl_range)
    scatter = np.clip(scatter, 0, tube.scatter_range)
    fsc_h_all = np.clip(fsc_h_all, 0, tube.scatter_range)

    columns = {"FSC-A": scatter[:, 0], "FSC-H": fsc_h_all, "SSC-A": scatter[:, 1]}
    names = {"FSC-A": "", "FSC-H": "", "SSC-A": ""}
    ranges = {"FSC-A": tube.scatter_range, "FSC-H": tube.scatter_range, "SSC-A": tube.scatter_range}
    for m, name in enumerate(MARKERS):
        columns[det[m]] = observed[:, m]
        names[det[m]] = name
        ranges[det[m]] = tube.fl_range
    # Events in random order (acquisition mixes populations); channels shuffled.
    order = rng.permutation(observed.shape[0])
    columns = {ch: v[order] for ch, v in columns.items()}
    if tube.time:  # a steady run of 120 s in 10 ms units, in file order
        columns["Time"] = np.sort(rng.uniform(0, 120.0, observed.shape[0])) / 0.01
        names["Time"], ranges["Time"] = "", 12000.0
    channels = list(columns)
    rng.shuffle(channels)
    data = np.column_stack([columns[ch] for ch in channels]).astype(np.float32)
    write_fcs(path, data, channels=channels, markers=[names[ch] for ch in channels],
              ranges=[ranges[ch] for ch in channels], spillover=(det, spill),
              metadata={"$CYT": "Independent generator", "$TIMESTEP": "0.01"} if tube.time else
              {"$CYT": "Independent generator"})
    blasts = int(is_blast.sum())
    return {"blasts": blasts, "cd7_pos_pct": 100.0 * is_cd7.sum() / blasts,
            "is_blast": is_blast[order], "is_cd7": is_cd7[order]}


CASES = [
    Tube("tall_bright_95", "T-ALL", 0.55, 0.95, BRIGHT, seed=1),
    Tube("tall_partial_50", "T-ALL", 0.40, 0.50, BRIGHT, fl_range=1024.0, scatter_range=1024.0, seed=2),
    Tube("aml_dim_35", "AML", 0.45, 0.35, DIM, seed=3),
    Tube("aml_negative_5", "AML", 0.60, 0.05, MID, fl_range=4194304.0, seed=4),
    Tube("aml_low_blasts_5", "AML", 0.05, 0.70, MID, n_events=40000, seed=5),
    Tube("tall_high_blasts_85", "T-ALL", 0.85, 0.80, BRIGHT, scatter_range=4194304.0, fl_range=4194304.0, seed=6),
    Tube("aml_3_5_decades_40", "AML", 0.35, 0.40, MID, decades=3.5, time=False, seed=7),
    Tube("tall_5_decades_25", "T-ALL", 0.30, 0.25, MID, decades=5.0, seed=8),
    Tube("aml_near_cut_40_dim", "AML", 0.50, 0.40, DIM, fl_range=1024.0, scatter_range=262144.0, seed=9),
    Tube("tall_near_cut_25_dim", "T-ALL", 0.50, 0.25, DIM, decades=4.0, seed=10),
    # granulocytes nearly as CD45-bright as monocytes, 10-bit scales, no Time (regression:
    # monocytes were taken for the top of the blast group)
    Tube("aml_bright_granulocytes_25", "AML", 0.44, 0.25, DIM, fl_range=1024.0, scatter_range=1024.0,
         decades=3.37, time=False, blast_cd45=0.47, gran_cd45=0.69, seed=1006),
]


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("screening")


@pytest.mark.parametrize("tube", CASES, ids=[t.name for t in CASES])
def test_foreign_tube_within_2_points_of_truth(tube, protocol, tmp_path):
    path = tmp_path / f"{tube.name}.fcs"
    truth = generate(tube, path)
    assert_screen_matches_truth(tube.name, path, truth, protocol)
