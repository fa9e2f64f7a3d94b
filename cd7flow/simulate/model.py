"""What the simulator knows about cells, fluorochromes and detectors.

All intensities are *true* (unmixed) values in channel units of a 262,144 scale
(an 18-bit BD digital instrument); a tube with another $PnR scales them linearly.
Positive markers are log-normal: (median, sd in decades). Negative markers carry only
autofluorescence, itself log-normal per population.
"""
from __future__ import annotations

import numpy as np
from scipy import optimize, stats

BASE_RANGE = 262144.0

POPULATIONS = ("debris", "doublet", "dead", "bead", "T", "T_cd7neg", "car_t", "NK", "B", "mono", "gran", "blast")
"""Population names; EventLabels.population holds the index into this tuple."""
CELL_POPULATIONS = ("T", "T_cd7neg", "car_t", "NK", "B", "mono", "gran", "blast")
NEGATIVE_REFERENCE = ("B", "mono", "gran")
MARKERS = ("CD45", "CD7", "CD3", "CD5", "CD34", "CD33", "CD19", "CD56", "CAR", "Viability")

# Scatter (linear channel units on the 262,144 scale): mean and sd of FSC-A and SSC-A.
SCATTER = {
    "T": ((62000, 7000), (14000, 3000)),
    "T_cd7neg": ((62000, 7000), (14000, 3000)),
    "car_t": ((70000, 9000), (16000, 3500)),  # activated CAR-T cells are a little larger
    "NK": ((66000, 7000), (21000, 4000)),
    "B": ((58000, 6000), (13000, 3000)),
    "mono": ((96000, 11000), (52000, 9000)),
    "gran": ((112000, 14000), (125000, 22000)),
    "blast": ((76000, 9000), (19000, 4500)),
    "bead": ((24000, 1200), (41000, 1800)),
}
FSC_HEIGHT_RATIO = 0.82  # FSC-H / FSC-A for single cells

# Autofluorescence median (channel units) per population; sd 0.15 decades.
AUTOFLUORESCENCE = {"T": 18, "T_cd7neg": 18, "car_t": 22, "NK": 20, "B": 18, "mono": 50, "gran": 80,
                    "blast": 25, "debris": 10}
AF_SD = 0.15

BRIGHT_CD7 = (9000.0, 0.18)
DIM_CD7 = (1000.0, 0.15)
# "Faint": dim as issue 9 defines it, median ~10x the compensated CD7 spread of negative
# blasts (~45 channel units), sd 0.2 decades (0.46 in natural log): it straddles the cut.
FAINT_CD7 = (450.0, 0.2)
CD7_LEVELS = {"bright": BRIGHT_CD7, "dim": DIM_CD7, "faint": FAINT_CD7}

# Positive markers per population: marker -> (median, sd decades).
PROFILES: dict[str, dict[str, tuple[float, float]]] = {
    "T": {"CD45": (22000, 0.12), "CD3": (6500, 0.15), "CD7": BRIGHT_CD7, "CD5": (7000, 0.15)},
    "T_cd7neg": {"CD45": (22000, 0.12), "CD3": (6500, 0.15), "CD5": (6000, 0.15)},
    "car_t": {"CD45": (24000, 0.12), "CD3": (5500, 0.18), "CD5": (6500, 0.15), "CAR": (4000, 0.3)},
    "NK": {"CD45": (19000, 0.12), "CD56": (4500, 0.25), "CD7": (11000, 0.18)},
    "B": {"CD45": (16000, 0.12), "CD19": (5200, 0.18)},
    "mono": {"CD45": (11000, 0.12), "CD33": (9000, 0.18)},
    "gran": {"CD45": (4500, 0.12), "CD33": (1100, 0.2)},
}
BLAST_PROFILES = {
    # Cytoplasmic CD3 is treated as surface here; CD34 is carried by a per-patient fraction.
    "T-ALL": {"CD45": (1600, 0.15), "CD3": (2800, 0.2), "CD5": (4200, 0.2), "CD34": (3200, 0.2)},
    "AML": {"CD45": (1500, 0.15), "CD34": (5200, 0.2), "CD33": (4200, 0.2)},
}
DEAD_VIABILITY = (25000.0, 0.2)
BEAD_INTENSITY = (120000.0, 0.03)  # bright and tight in every fluorescence detector

# Detector noise on the 262,144 scale: electronic sd, and photon variance per unit signal.
ELECTRONIC_SD = 35.0
PHOTON_VARIANCE_PER_UNIT = 4.0

# BD-like detectors: name -> fluorochrome family used for the spillover table.
DETECTORS = ("FITC-A", "PE-A", "PerCP-Cy5.5-A", "PE-Cy7-A", "APC-A", "APC-R700-A", "APC-Cy7-A",
             "BV421-A", "BV510-A", "BV605-A")
# Spillover fraction of the fluorochrome read in detector A into detector B (FACSDiva-like values).
SPILL_TABLE = {
    ("FITC-A", "PE-A"): 0.21, ("FITC-A", "PerCP-Cy5.5-A"): 0.03,
    ("PE-A", "FITC-A"): 0.012, ("PE-A", "PerCP-Cy5.5-A"): 0.16, ("PE-A", "PE-Cy7-A"): 0.025,
    ("PE-A", "BV605-A"): 0.06,
    ("PerCP-Cy5.5-A", "PE-Cy7-A"): 0.12, ("PerCP-Cy5.5-A", "APC-R700-A"): 0.09, ("PerCP-Cy5.5-A", "APC-A"): 0.02,
    ("PE-Cy7-A", "APC-Cy7-A"): 0.06, ("PE-Cy7-A", "PerCP-Cy5.5-A"): 0.01,
    ("APC-A", "APC-R700-A"): 0.30, ("APC-A", "APC-Cy7-A"): 0.04, ("APC-A", "PerCP-Cy5.5-A"): 0.005,
    ("APC-R700-A", "APC-Cy7-A"): 0.18, ("APC-R700-A", "APC-A"): 0.03,
    ("APC-Cy7-A", "APC-R700-A"): 0.05, ("APC-Cy7-A", "PE-Cy7-A"): 0.02,
    ("BV421-A", "BV510-A"): 0.22, ("BV421-A", "BV605-A"): 0.015, ("BV421-A", "FITC-A"): 0.02,
    ("BV510-A", "BV605-A"): 0.09, ("BV510-A", "FITC-A"): 0.07, ("BV510-A", "PE-A"): 0.02,
    ("BV605-A", "PE-A"): 0.04, ("BV605-A", "PerCP-Cy5.5-A"): 0.05,
}
VOLTAGES = {"FSC-A": 420, "FSC-H": 420, "SSC-A": 260, "FITC-A": 480, "PE-A": 430, "PerCP-Cy5.5-A": 560,
            "PE-Cy7-A": 590, "APC-A": 540, "APC-R700-A": 600, "APC-Cy7-A": 610, "BV421-A": 400,
            "BV510-A": 450, "BV605-A": 500}

# Panels: (channel $PnN, marker) in BD order (scatter, blue, yellow-green, red, violet, Time).
FULL_PANEL = (
    ("FSC-A", ""), ("FSC-H", ""), ("SSC-A", ""),
    ("FITC-A", "CD7"), ("PE-A", "CAR"), ("PerCP-Cy5.5-A", "CD5"), ("PE-Cy7-A", "CD34"),
    ("APC-A", "CD33"), ("APC-R700-A", "CD19"), ("APC-Cy7-A", "Viability"),
    ("BV421-A", "CD3"), ("BV510-A", "CD45"), ("BV605-A", "CD56"), ("Time", ""),
)
"""14 channels for screening, FMO and bone-marrow MRD tubes."""
PB_CAR_PANEL = (
    ("FSC-A", ""), ("FSC-H", ""), ("SSC-A", ""),
    ("FITC-A", "CD7"), ("PE-A", "CAR"), ("APC-R700-A", "CD19"), ("APC-Cy7-A", "Viability"),
    ("BV421-A", "CD3"), ("BV510-A", "CD45"), ("BV605-A", "CD56"), ("Time", ""),
)
"""11 channels for the blood CAR-T follow-up tubes (with counting beads)."""
SCATTER_CHANNELS = ("FSC-A", "FSC-H", "SSC-A")


def spillover_for(detectors: list[str]) -> np.ndarray:
    """Spillover matrix (unit diagonal, row = spilling fluorochrome) for these detectors.

    Detectors not in the table neither give nor receive spillover.
    """
    n = len(detectors)
    m = np.eye(n)
    for i, a in enumerate(detectors):
        for j, b in enumerate(detectors):
            if i != j:
                m[i, j] = SPILL_TABLE.get((a, b), 0.0)
    return m


def cd7_threshold(weights: dict[str, float]) -> float:
    """99.5th percentile of true CD7 among the negative reference populations (channel units).

    ``weights``: share of each of B, mono and gran in the tube (only their ratio matters;
    equal shares when all are zero). The true CD7 of these cells is autofluorescence,
    a log-normal per population, so the mixture quantile is solved exactly.
    """
    w = np.array([max(0.0, float(weights.get(p, 0.0))) for p in NEGATIVE_REFERENCE])
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))
    mu = np.array([np.log10(AUTOFLUORESCENCE[p]) for p in NEGATIVE_REFERENCE])

    def cdf_gap(log_x: float) -> float:
        return float(np.sum(w * stats.norm.cdf((log_x - mu) / AF_SD))) - 0.995

    log_x = optimize.brentq(cdf_gap, mu.min() - 2, mu.max() + 3, xtol=1e-12)
    return float(10.0 ** log_x)
