"""A third, independent generator of CD7 screening tubes (shares no code with
``cd7flow.simulate`` nor with the generators in ``tests/test_screening_foreign*.py``).

Physics, in the order it is applied
-----------------------------------
1. Cells: populations (T-ALL or AML blasts, mature T cells, NK, B, monocytes,
   granulocytes) plus dead cells, debris and doublets. Antigen abundance per cell is
   log-normal in *natural-log* units (``sigma`` = SD of ln), with a per-tube CV factor.
   Mature T cells are CD45-bright, CD3-bright, CD5+, CD7-bright, SSC-low, so a T-ALL tube
   holds normal T cells sharing CD3/CD5/CD7 with the blasts.
2. Stain: abundance x the fluorochrome's brightness gives fluorochrome signal in channel
   units of a 262,144 scale. CD7-expressing blasts are drawn per cell (probability =
   the expressing fraction); their CD7 is bright (median ~30x the negative spread), or
   *dim*: median = ``dim_factor`` (8-15) x the CD7 detector's negative spread, measured
   on a pilot of CD7-negative blasts pushed through the same detectors and compensation.
3. Detectors: each detector sees every fluorochrome times its spillover fraction (a
   literature-like table, each entry perturbed per tube) plus the cell's
   autofluorescence, which depends on the population and on the laser (violet > blue >
   yellow-green > red). Photon statistics: a detector counts photoelectrons, Poisson
   with mean signal / ``units_per_pe`` (2-6 units each), plus electronic noise; so after
   compensation a negative marker spreads more on cells bright in the spilling channels.
4. File: $PnN from one of three naming schemes (BD fluorochrome names, Cytek-style
   "B2-A", Beckman-style "FL3-A"), channels in shuffled order, $PnR per tube from 1,024 to
   4,194,304 (values scale linearly), $SPILLOVER = the true matrix; FCS 3.1 float32.

Truth is per event: ``population`` (names in :data:`POPS`) and ``cd7_expressing`` (drawn
as a CD7-expressing blast, or a CD7+ normal cell). The expressing fraction of the blasts
is ``cd7_expressing[blast].mean()``, not a threshold on any value.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

POPS = ("blast", "T", "NK", "B", "mono", "gran", "dead", "debris", "doublet")
MARKERS = ("CD45", "CD7", "CD3", "CD5", "CD34", "CD33", "CD19", "CD56", "Viability")
FLUORS = ("BV421", "BV510", "BV605", "BV786", "FITC", "PE", "PE-CF594", "PerCP-Cy5.5", "PE-Cy7", "APC",
          "AF700", "APC-Cy7")
LASER = {"BV421": "V", "BV510": "V", "BV605": "V", "BV786": "V", "FITC": "B", "PerCP-Cy5.5": "B",
         "PE": "YG", "PE-CF594": "YG", "PE-Cy7": "YG", "APC": "R", "AF700": "R", "APC-Cy7": "R"}
BRIGHTNESS = {"BV421": 1.5, "BV510": 0.5, "BV605": 1.1, "BV786": 0.7, "FITC": 0.6, "PE": 1.6, "PE-CF594": 1.1,
              "PerCP-Cy5.5": 0.5, "PE-Cy7": 1.0, "APC": 1.3, "AF700": 0.4, "APC-Cy7": 0.7}
AF_LASER = {"V": 2.5, "B": 1.5, "YG": 1.0, "R": 0.3}  # autofluorescence seen per laser
# Spill of fluorochrome (row) into the detector of fluorochrome (column), as a fraction of its own signal.
SPILL = {
    ("FITC", "PE"): 0.18, ("FITC", "PerCP-Cy5.5"): 0.025, ("FITC", "PE-CF594"): 0.06,
    ("PE", "FITC"): 0.01, ("PE", "PE-CF594"): 0.35, ("PE", "PerCP-Cy5.5"): 0.12, ("PE", "PE-Cy7"): 0.03,
    ("PE", "BV605"): 0.08,
    ("PE-CF594", "PE"): 0.12, ("PE-CF594", "PerCP-Cy5.5"): 0.2, ("PE-CF594", "BV605"): 0.18,
    ("PE-CF594", "APC"): 0.04,
    ("PerCP-Cy5.5", "PE-Cy7"): 0.15, ("PerCP-Cy5.5", "AF700"): 0.22, ("PerCP-Cy5.5", "APC"): 0.04,
    ("PerCP-Cy5.5", "BV786"): 0.02,
    ("PE-Cy7", "APC-Cy7"): 0.1, ("PE-Cy7", "BV786"): 0.12, ("PE-Cy7", "PE"): 0.02,
    ("APC", "AF700"): 0.25, ("APC", "APC-Cy7"): 0.06, ("APC", "PerCP-Cy5.5"): 0.02,
    ("AF700", "APC-Cy7"): 0.2, ("AF700", "APC"): 0.04,
    ("APC-Cy7", "AF700"): 0.04, ("APC-Cy7", "PE-Cy7"): 0.03, ("APC-Cy7", "BV786"): 0.05,
    ("BV421", "BV510"): 0.15, ("BV421", "FITC"): 0.015,
    ("BV510", "FITC"): 0.12, ("BV510", "BV605"): 0.05, ("BV510", "PE"): 0.02,
    ("BV605", "PE-CF594"): 0.25, ("BV605", "PE"): 0.05, ("BV605", "PerCP-Cy5.5"): 0.04,
    ("BV786", "PE-Cy7"): 0.06, ("BV786", "APC-Cy7"): 0.04,
}
NAMING = {
    "bd": {f: f"{f}-A" for f in FLUORS},
    "cytek": {"BV421": "V1-A", "BV510": "V3-A", "BV605": "V7-A", "BV786": "V15-A", "FITC": "B2-A", "PE": "YG1-A",
              "PE-CF594": "YG3-A", "PerCP-Cy5.5": "B8-A", "PE-Cy7": "YG9-A", "APC": "R1-A", "AF700": "R4-A",
              "APC-Cy7": "R7-A"},
    "beckman": {f: f"FL{i}-A" for i, f in enumerate(FLUORS, start=1)},
}
# Marker -> fluorochrome. CD7 always sits where bright CD45/CD3/CD5 spill in (spreading).
LAYOUTS = {
    "fitc": {"CD7": "FITC", "CD45": "BV510", "CD3": "BV421", "CD5": "PE-CF594", "CD34": "PerCP-Cy5.5",
             "CD33": "PE-Cy7", "CD19": "AF700", "CD56": "BV605", "Viability": "APC-Cy7"},
    "pe": {"CD7": "PE", "CD45": "FITC", "CD3": "BV605", "CD5": "PE-CF594", "CD34": "APC", "CD33": "PE-Cy7",
           "CD19": "BV786", "CD56": "AF700", "Viability": "BV510"},
    "apc": {"CD7": "APC", "CD45": "AF700", "CD3": "PerCP-Cy5.5", "CD5": "PE-CF594", "CD34": "PE",
            "CD33": "BV421", "CD19": "BV510", "CD56": "PE-Cy7", "Viability": "APC-Cy7"},
}
BASE = 262144.0

# Antigen abundance (median, units before fluorochrome brightness); absent = not expressed.
ANTIGENS = {
    "T": {"CD45": 22000, "CD3": 9000, "CD5": 8000, "CD7": 9000},
    "NK": {"CD45": 16000, "CD56": 6000, "CD7": 10000},
    "B": {"CD45": 18000, "CD19": 7000},
    "mono": {"CD45": 14000, "CD33": 12000},
    "gran": {"CD45": 7000, "CD33": 1800},
    "T-ALL": {"CD45": 1500, "CD3": 1500, "CD5": 5000, "CD34": 4000},
    "AML": {"CD45": 1400, "CD34": 5000, "CD33": 3500},
}
AUTOFLUORESCENCE = {"T": 30, "NK": 35, "B": 30, "mono": 70, "gran": 110, "blast": 45, "debris": 15}
SCATTER = {  # (FSC-A, SSC-A) medians on the 262,144 scale
    "T": (55000, 12000), "NK": (60000, 18000), "B": (52000, 11000), "mono": (92000, 50000),
    "gran": (105000, 115000), "T-ALL": (66000, 15000), "AML": (72000, 22000),
}


@dataclass(frozen=True)
class Spec:
    """One tube. Fractions 0-1; ``composition`` = shares of non-blast leukocytes."""

    name: str
    lineage: str = "AML"             # "AML" | "T-ALL"
    blast_frac: float = 0.5          # of live single leukocytes
    cd7_frac: float = 0.9            # expressing fraction of the blasts (drawn per cell)
    cd7_mode: str = "bright"         # "bright" | "dim"
    dim_factor: float = 10.0         # dim: median / negative spread of the CD7 detector
    cd7_sigma: float = 0.4           # SD of ln(CD7) of the expressing blasts
    composition: tuple[tuple[str, float], ...] = (("T", 0.15), ("NK", 0.04), ("B", 0.06), ("mono", 0.1),
                                                  ("gran", 0.65))
    layout: str = "fitc"
    naming: str = "bd"
    fl_range: float = BASE
    scatter_range: float = BASE
    cv_factor: float = 1.0           # widens every antigen's log-normal
    n_events: int = 20000
    fmo: bool = False                # CD7 reagent left out (an FMO tube of the same sample)


@dataclass
class Tube:
    spec: Spec
    channels: list[str]              # $PnN in file order
    markers: list[str]               # $PnS in file order
    ranges: np.ndarray
    events: np.ndarray               # float32, channel units, file order
    fl_channels: list[str]           # fluorescence $PnN, the order of ``spill``
    spill: np.ndarray
    population: np.ndarray           # indices into POPS
    cd7_expressing: np.ndarray       # bool
    cd7_negative_spread: float       # robust SD of compensated CD7 on CD7-negative blasts (channel units)

    def is_(self, *names: str) -> np.ndarray:
        return np.isin(self.population, [POPS.index(n) for n in names])

    def compensated(self) -> np.ndarray:
        """Fluorescence columns (order of ``fl_channels``) compensated with the true matrix."""
        idx = [self.channels.index(c) for c in self.fl_channels]
        return self.events[:, idx].astype(float) @ np.linalg.inv(self.spill)

    def channel_of(self, marker: str) -> str:
        return self.channels[self.markers.index(marker)]

    @property
    def expressing_pct(self) -> float:
        blasts = self.is_("blast")
        return 100.0 * float(self.cd7_expressing[blasts].mean())

    def write(self, path: str | Path) -> Path:
        from cd7flow.io.fcs_write import write_fcs

        return write_fcs(path, self.events, channels=self.channels, markers=self.markers,
                         ranges=list(self.ranges), spillover=(self.fl_channels, self.spill),
                         metadata={"$CYT": f"gen3 {self.spec.naming}", "$TIMESTEP": "0.01",
                                   "TUBE NAME": self.spec.name})


def _spill_matrix(fluors: list[str], rng) -> np.ndarray:
    m = np.eye(len(fluors))
    for i, a in enumerate(fluors):
        for j, b in enumerate(fluors):
            if i != j and (a, b) in SPILL:
                m[i, j] = SPILL[(a, b)] * float(np.exp(rng.normal(0, 0.2)))
    return m


def _cells(rng, spec: Spec, kind: str, n: int, layout: dict[str, str], cd7_median: float | None):
    """Fluorochrome signals (n x fluors in layout order), autofluorescence, FSC, SSC, CD7 flag."""
    antigens = ANTIGENS[spec.lineage if kind == "blast" else kind]
    signal = np.zeros((n, len(MARKERS)))
    for k, marker in enumerate(MARKERS):
        median = antigens.get(marker)
        if median is not None and not (marker == "CD7" and spec.fmo):
            sigma = 0.35 * spec.cv_factor
            signal[:, k] = median * np.exp(rng.normal(0, sigma, n)) * BRIGHTNESS[layout[marker]]
    expressing = np.zeros(n, bool)
    if kind == "blast":
        if spec.lineage == "AML":  # CD34 on most, not all, myeloid blasts
            signal[:, MARKERS.index("CD34")] *= rng.random(n) < 0.85
        expressing = rng.random(n) < spec.cd7_frac
        if cd7_median is not None and not spec.fmo:
            cd7 = cd7_median * np.exp(rng.normal(0, spec.cd7_sigma, n))
            signal[:, MARKERS.index("CD7")] = np.where(expressing, cd7, 0.0)
    elif "CD7" in antigens:
        expressing[:] = True
    af = AUTOFLUORESCENCE[kind] * np.exp(rng.normal(0, 0.3, n))
    fsc_m, ssc_m = SCATTER[spec.lineage if kind == "blast" else kind]
    fsc = fsc_m * np.exp(rng.normal(0, 0.12 * spec.cv_factor, n))
    ssc = ssc_m * np.exp(rng.normal(0, 0.22 * spec.cv_factor, n))
    return signal, af, fsc, ssc, expressing


def _detect(rng, signal, af, layout, fluors, spill, units_per_pe, electronic):
    """Detector readings (n x fluors): spill-mixed signal + autofluorescence, photon-counted."""
    order = [MARKERS.index(next(m for m, f in layout.items() if f == fl)) for fl in fluors]
    mixed = signal[:, order] @ spill + af[:, None] * np.array([AF_LASER[LASER[f]] for f in fluors])
    photons = rng.poisson(np.maximum(mixed, 0) / units_per_pe)
    return photons * units_per_pe + rng.normal(0, 1, mixed.shape) * electronic


def make_tube(spec: Spec, seed: int, instrument_seed: int | None = None) -> Tube:
    """Generate one tube (deterministic for the seeds).

    ``instrument_seed`` (default ``seed``) draws the instrument: spillover, photoelectron
    gain and electronic noise per detector. Tubes of one sample acquired together (stained
    and FMO) share it, as they share the cytometer's settings.
    """
    rng = np.random.default_rng(seed)
    inst = np.random.default_rng(seed if instrument_seed is None else instrument_seed)
    layout = LAYOUTS[spec.layout]
    fluors = [layout[m] for m in MARKERS]
    spill = _spill_matrix(fluors, inst)
    units_per_pe = inst.uniform(2.0, 6.0, len(fluors))
    electronic = inst.uniform(15.0, 40.0, len(fluors))
    cd7 = MARKERS.index("CD7")

    # Pilot: the CD7 detector's spread on CD7-negative blasts sets what "dim" means.
    pilot = replace(spec, cd7_frac=0.0, fmo=False)
    sig, af, _, _, _ = _cells(np.random.default_rng([seed, 1]), pilot, "blast", 4000, layout, None)
    comp = _detect(np.random.default_rng([seed, 2]), sig, af, layout, fluors, spill, units_per_pe, electronic)
    q16, q84 = np.percentile((comp @ np.linalg.inv(spill))[:, cd7], [15.87, 84.13])
    spread = float((q84 - q16) / 2)
    cd7_median = spread * (spec.dim_factor if spec.cd7_mode == "dim" else 30.0)

    leuk = dict(spec.composition)
    shares = np.array([spec.blast_frac] + [(1 - spec.blast_frac) * leuk[p] / sum(leuk.values())
                                           for p in ("T", "NK", "B", "mono", "gran")])
    n_other = {"dead": int(0.03 * spec.n_events), "debris": int(0.04 * spec.n_events),
               "doublet": int(0.02 * spec.n_events)}
    n_single = rng.multinomial(spec.n_events - sum(n_other.values()), shares)
    parts = [_cells(rng, spec, kind, n, layout, cd7_median)
             for kind, n in zip(("blast", "T", "NK", "B", "mono", "gran"), n_single)]
    labels = np.repeat(np.arange(6), n_single)
    signal, af, fsc, ssc, expressing = (np.concatenate([p[i] for p in parts]) for i in range(5))
    fsc_h = fsc * 0.85 * np.exp(rng.normal(0, 0.03, fsc.size))

    # Dead cells: drawn from the singlets, shrunk, viability-bright. Debris: small, dim.
    pick = rng.integers(0, labels.size, n_other["dead"])
    d_sig = signal[pick] * 0.6
    d_sig[:, MARKERS.index("Viability")] = 40000 * np.exp(rng.normal(0, 0.3, pick.size))
    d_af, d_fsc, d_ssc = af[pick], fsc[pick] * 0.55, ssc[pick] * 1.2
    n_deb = n_other["debris"]
    b_sig = np.zeros((n_deb, len(MARKERS)))
    b_af = AUTOFLUORESCENCE["debris"] * np.exp(rng.normal(0, 0.4, n_deb))
    b_fsc, b_ssc = 9000 * np.exp(rng.normal(0, 0.4, n_deb)), 7000 * np.exp(rng.normal(0, 0.5, n_deb))
    a, b = rng.integers(0, labels.size, (2, n_other["doublet"]))
    u_sig, u_af, u_fsc, u_ssc = signal[a] + signal[b], af[a] + af[b], fsc[a] + fsc[b], ssc[a] + ssc[b]
    u_fsch = np.maximum(fsc_h[a], fsc_h[b]) * rng.uniform(1.0, 1.15, a.size)

    signal = np.concatenate([signal, d_sig, b_sig, u_sig])
    af = np.concatenate([af, d_af, b_af, u_af])
    fsc = np.concatenate([fsc, d_fsc, b_fsc, u_fsc])
    fsc_h = np.concatenate([fsc_h, d_fsc * 0.85, b_fsc * 0.85, u_fsch])
    ssc = np.concatenate([ssc, d_ssc, b_ssc, u_ssc])
    population = np.concatenate([labels, np.full(n_other["dead"], POPS.index("dead")),
                                 np.full(n_deb, POPS.index("debris")), np.full(a.size, POPS.index("doublet"))])
    expressing = np.concatenate([expressing, np.zeros(sum(n_other.values()), bool)])
    readings = _detect(rng, signal, af, layout, fluors, spill, units_per_pe, electronic)

    names = NAMING[spec.naming]
    fl_channels = [names[f] for f in fluors]
    columns = {"FSC-A": fsc, "FSC-H": fsc_h, "SSC-A": ssc}
    columns = {k: (v + rng.normal(0, 300, v.size)) * spec.scatter_range / BASE for k, v in columns.items()}
    columns.update({c: readings[:, i] * spec.fl_range / BASE for i, c in enumerate(fl_channels)})
    columns["Time"] = np.sort(rng.uniform(0, 60000, population.size))
    channel_order = list(rng.permutation([c for c in columns if c != "Time"])) + ["Time"]
    shuffle = rng.permutation(population.size)
    events = np.column_stack([columns[c][shuffle] if c != "Time" else columns[c] for c in channel_order])
    ranges = np.array([262144.0 if c == "Time" else spec.scatter_range if c in ("FSC-A", "FSC-H", "SSC-A")
                       else spec.fl_range for c in channel_order])
    events = np.minimum(events, ranges - 1).astype(np.float32)
    by_channel = dict(zip(fl_channels, MARKERS))
    markers = ["" if c in ("FSC-A", "FSC-H", "SSC-A", "Time") or (by_channel[c] == "CD7" and spec.fmo)
               else by_channel[c] for c in channel_order]
    return Tube(spec, [str(c) for c in channel_order], markers, ranges, events, fl_channels, spill,
                population[shuffle], expressing[shuffle], spread * spec.fl_range / BASE)


CASES = (
    Spec("aml_bright_98", "AML", 0.55, 0.98, "bright", layout="fitc", naming="bd"),
    Spec("tall_bright_95", "T-ALL", 0.45, 0.95, "bright", layout="pe", naming="cytek", fl_range=4194304.0),
    Spec("tall_partial_45", "T-ALL", 0.5, 0.45, "bright", layout="apc", naming="beckman", fl_range=1024.0,
         scatter_range=1024.0, cv_factor=1.4),
    Spec("aml_partial_60", "AML", 0.6, 0.60, "bright", layout="pe", naming="bd", fl_range=65536.0),
    Spec("aml_dim_99", "AML", 0.6, 0.99, "dim", dim_factor=8.0, cd7_sigma=0.5, layout="fitc", naming="cytek"),
    Spec("tall_dim_85", "T-ALL", 0.5, 0.85, "dim", dim_factor=9.0, cd7_sigma=0.45, layout="fitc", naming="bd",
         fl_range=1048576.0),
    Spec("aml_dim_31", "AML", 0.55, 0.31, "dim", dim_factor=10.0, cd7_sigma=0.45, layout="pe", naming="beckman",
         cv_factor=1.3),
    Spec("aml_dim_55", "AML", 0.5, 0.55, "dim", dim_factor=12.0, cd7_sigma=0.4, layout="fitc", naming="bd",
         fl_range=4096.0, scatter_range=4096.0),
    Spec("tall_dim_70", "T-ALL", 0.45, 0.70, "dim", dim_factor=15.0, cd7_sigma=0.5, layout="pe", naming="cytek",
         fl_range=65536.0),
    Spec("tall_tcells_bright_34", "T-ALL", 0.3, 0.34, "bright", layout="fitc", naming="cytek",
         composition=(("T", 0.45), ("NK", 0.05), ("B", 0.05), ("mono", 0.08), ("gran", 0.37))),
)
"""The test cases: bright, partial and dim CD7 across layouts, names, ranges and CVs."""
