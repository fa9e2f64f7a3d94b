"""One simulated tube: TubeSpec -> (Sample, truth, EventLabels)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import SimulationError
from ..sample import CaseInsensitiveDict, Sample
from . import model as M

_POP = {name: i for i, name in enumerate(M.POPULATIONS)}
_MARK = {name: i for i, name in enumerate(M.MARKERS)}

DEFAULT_COMPOSITION = {"T": 0.22, "NK": 0.06, "B": 0.05, "mono": 0.08, "gran": 0.59}
"""Shares of non-leukemic viable leukocytes in normal blood (normalised on use)."""


@dataclass(frozen=True)
class ClogSpec:
    """A clog: no events for ``gap_s`` seconds after ``at`` (fraction of events), then
    ``burst_fraction`` of all events arrive ``burst_speedup`` times faster."""

    at: float = 0.55
    gap_s: float = 6.0
    burst_fraction: float = 0.06
    burst_speedup: float = 12.0


@dataclass(frozen=True)
class TubeSpec:
    """Everything that defines one tube. Fractions are 0-1, percentages 0-100.

    panel : (channel $PnN, marker) pairs in file order; scatter channels FSC-A, FSC-H,
        SSC-A and Time are recognised by name, the others are fluorescence detectors.
    composition : shares of non-leukemic viable leukocytes (T, NK, B, mono, gran).
    blast_pct : blasts as % of viable leukocytes.
    cd7_intensity : "bright", "dim", "faint" or "negative" for the CD7-expressing blasts
        (levels in ``model.CD7_LEVELS``).
    car_fraction_of_t, t_cd7neg_fraction : shares of T cells (CAR-T are CD7 knock-out;
        t_cd7neg_fraction is of the non-CAR T cells).
    debris_fraction, doublet_fraction, dead_fraction : shares of all events.
    beads_per_test, sample_volume_ul, wbc_per_ul : counting beads in the tube (None = no
        beads); bead events per leukocyte event = beads_per_test / (wbc_per_ul x volume).
    unstained : markers whose reagent is left out (FMO); their $PnS is written empty.
    scale_range : $PnR of scatter and fluorescence channels (intensities scale with it).
    spillover : matrix over the panel's fluorescence channels (default from the table).
    """

    name: str = "tube"
    n_events: int = 20000
    panel: tuple[tuple[str, str], ...] = M.FULL_PANEL
    composition: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_COMPOSITION))
    blast_pct: float = 0.0
    lineage: str = "T-ALL"
    cd7_fraction: float = 0.98
    cd7_intensity: str = "bright"
    cd34_fraction: float = 0.5
    t_cd7neg_fraction: float = 0.05
    car_fraction_of_t: float = 0.0
    debris_fraction: float = 0.04
    doublet_fraction: float = 0.03
    dead_fraction: float = 0.03
    beads_per_test: int | None = None
    sample_volume_ul: float = 50.0
    wbc_per_ul: float = 5000.0
    unstained: tuple[str, ...] = ()
    scale_range: float = M.BASE_RANGE
    spillover: np.ndarray | None = None
    clog: ClogSpec | None = None
    event_rate_per_s: float = 1500.0
    timestep_s: float = 0.01
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass
class EventLabels:
    """Per-event truth in file order. ``population`` indexes POPULATIONS.

    ``cd7_positive``: the event was drawn as CD7-expressing (realised label; False for
    every event when the tube has no CD7 reagent). ``cd7_above_threshold``: its true CD7
    is above ``cd7_threshold`` (the conventional cut, for comparison only).
    """

    population: np.ndarray
    cd7_positive: np.ndarray
    car_positive: np.ndarray
    in_clog_burst: np.ndarray
    cd7_threshold: float
    cd7_above_threshold: np.ndarray | None = None
    names: tuple[str, ...] = M.POPULATIONS

    def mask(self, *names: str) -> np.ndarray:
        """Bool mask of events in any of the named populations."""
        bad = [n for n in names if n not in _POP]
        if bad:
            raise SimulationError(f"unknown population(s) {bad}; known: {', '.join(M.POPULATIONS)}")
        return np.isin(self.population, [_POP[n] for n in names])


def _validate(spec: TubeSpec) -> None:
    def bad(msg: str) -> SimulationError:
        return SimulationError(f"tube {spec.name!r}: {msg}")

    if spec.n_events < 1 or spec.n_events > 5_000_000:
        raise bad(f"n_events must be 1..5,000,000, got {spec.n_events}")
    shares = (spec.debris_fraction, spec.doublet_fraction, spec.dead_fraction)
    if min(shares) < 0 or sum(shares) >= 1:
        raise bad("debris, doublet and dead fractions must be >= 0 and sum below 1")
    for label, v in (("cd7_fraction", spec.cd7_fraction), ("cd34_fraction", spec.cd34_fraction),
                     ("t_cd7neg_fraction", spec.t_cd7neg_fraction), ("car_fraction_of_t", spec.car_fraction_of_t)):
        if not 0 <= v <= 1:
            raise bad(f"{label} must be within 0..1, got {v}")
    if not 0 <= spec.blast_pct <= 100:
        raise bad(f"blast_pct must be within 0..100, got {spec.blast_pct}")
    if spec.lineage not in M.BLAST_PROFILES:
        raise bad(f"lineage must be one of {sorted(M.BLAST_PROFILES)}, got {spec.lineage!r}")
    if spec.cd7_intensity not in (*M.CD7_LEVELS, "negative"):
        raise bad(f"cd7_intensity must be {', '.join(M.CD7_LEVELS)} or negative, got {spec.cd7_intensity!r}")
    unknown = [k for k in spec.composition if k not in ("T", "NK", "B", "mono", "gran")]
    if unknown or any(v < 0 for v in spec.composition.values()) or sum(spec.composition.values()) <= 0:
        raise bad(f"composition needs non-negative shares of T, NK, B, mono, gran (got {dict(spec.composition)})")
    if spec.blast_pct < 100 and sum(spec.composition.values()) <= 0:
        raise bad("composition is empty")
    if not spec.scale_range > 1:
        raise bad(f"scale_range must be > 1, got {spec.scale_range}")
    if spec.beads_per_test is not None and (spec.beads_per_test <= 0 or spec.sample_volume_ul <= 0 or spec.wbc_per_ul <= 0):
        raise bad("beads_per_test, sample_volume_ul and wbc_per_ul must be positive")
    names = [c for c, _ in spec.panel]
    if len(set(names)) != len(names):
        raise bad(f"panel has duplicate channels: {names}")
    for ch, marker in spec.panel:
        if marker and marker not in _MARK:
            raise bad(f"channel {ch}: unknown marker {marker!r} (known: {', '.join(M.MARKERS)})")
    if "Time" not in names:
        raise bad("panel needs a Time channel")


def _event_probabilities(spec: TubeSpec) -> np.ndarray:
    """Probability of each POPULATIONS category for one event."""
    comp = {k: float(v) for k, v in spec.composition.items()}
    total = sum(comp.values())
    leuk = {k: (1 - spec.blast_pct / 100) * comp.get(k, 0.0) / total for k in ("T", "NK", "B", "mono", "gran")}
    t = leuk.pop("T")
    leuk["car_t"] = t * spec.car_fraction_of_t
    leuk["T_cd7neg"] = t * (1 - spec.car_fraction_of_t) * spec.t_cd7neg_fraction
    leuk["T"] = t * (1 - spec.car_fraction_of_t) * (1 - spec.t_cd7neg_fraction)
    leuk["blast"] = spec.blast_pct / 100
    rest = 1 - spec.debris_fraction - spec.doublet_fraction - spec.dead_fraction
    ratio = spec.beads_per_test / (spec.wbc_per_ul * spec.sample_volume_ul) if spec.beads_per_test else 0.0
    p = np.zeros(len(M.POPULATIONS))
    p[_POP["debris"]] = spec.debris_fraction
    p[_POP["doublet"]] = spec.doublet_fraction
    p[_POP["dead"]] = spec.dead_fraction
    p[_POP["bead"]] = rest * ratio / (1 + ratio)
    for k, v in leuk.items():
        p[_POP[k]] = rest / (1 + ratio) * v
    return p / p.sum()


def _lognormal(rng, median_sd, n) -> np.ndarray:
    median, sd = median_sd
    return 10.0 ** rng.normal(np.log10(median), sd, n)


def _cells(rng, spec: TubeSpec, pop: str, n: int):
    """True marker intensities (n x MARKERS), FSC-A, SSC-A and the CD7-expression flag of n cells.

    The flag is the realised label: True for a cell drawn as CD7-expressing (a blast of
    the expressing share, or a normal CD7+ population), whatever its drawn intensity.
    """
    af = _lognormal(rng, (M.AUTOFLUORESCENCE[pop], M.AF_SD), n)
    true = np.repeat(af[:, None], len(M.MARKERS), axis=1)  # one autofluorescence per cell, all detectors
    if pop == "blast":
        profile = dict(M.BLAST_PROFILES[spec.lineage])
        cd34 = profile.pop("CD34")
        has34 = rng.random(n) < spec.cd34_fraction
        true[:, _MARK["CD34"]] += np.where(has34, _lognormal(rng, cd34, n), 0.0)
        level = M.CD7_LEVELS.get(spec.cd7_intensity)
        expr = np.zeros(n, bool)
        if level is not None:
            expr = rng.random(n) < spec.cd7_fraction
            true[:, _MARK["CD7"]] += np.where(expr, _lognormal(rng, level, n), 0.0)
    else:
        profile = M.PROFILES[pop]
        expr = np.full(n, "CD7" in profile)
    for marker, median_sd in profile.items():
        true[:, _MARK[marker]] += _lognormal(rng, median_sd, n)
    (fm, fs), (sm, ss) = M.SCATTER[pop]
    fsc = rng.normal(fm, fs, n)
    ssc = np.abs(rng.normal(sm, ss, n)) + 500.0
    return true, fsc, ssc, expr


def _draw_cells(rng, spec: TubeSpec, probs: np.ndarray, n: int):
    """n cells drawn from the tube's leukocyte mix (for dead cells and doublet partners)."""
    cell_idx = [_POP[p] for p in M.CELL_POPULATIONS]
    w = probs[cell_idx]
    counts = rng.multinomial(n, w / w.sum()) if w.sum() > 0 else np.zeros(len(cell_idx), int)
    parts = [_cells(rng, spec, p, c) for p, c in zip(M.CELL_POPULATIONS, counts) if c]
    if not parts:
        return np.zeros((0, len(M.MARKERS))), np.zeros(0), np.zeros(0), np.zeros(0, bool)
    true, fsc, ssc, expr = (np.concatenate([p[k] for p in parts]) for k in range(4))
    order = rng.permutation(n)
    return true[order], fsc[order], ssc[order], expr[order]


def _height(rng, fsc_a):
    return fsc_a * M.FSC_HEIGHT_RATIO * rng.normal(1.0, 0.03, fsc_a.shape[0])


def _generate(rng, spec: TubeSpec, counts: np.ndarray, probs: np.ndarray):
    """True intensities, FSC-A, FSC-H, SSC-A and CD7-expression labels, grouped by POPULATIONS order.

    A doublet expresses CD7 when either cell does; debris and beads never do.
    """
    blocks = []
    for pop, n in zip(M.POPULATIONS, counts):
        if n == 0:
            continue
        if pop in M.CELL_POPULATIONS:
            true, fsc, ssc, expr = _cells(rng, spec, pop, n)
            fsh = _height(rng, fsc)
        elif pop == "dead":
            true, fsc, ssc, expr = _draw_cells(rng, spec, probs, n)
            true[:, _MARK["Viability"]] += _lognormal(rng, M.DEAD_VIABILITY, n)
            true[:, _MARK["CD45"]] *= 0.7  # dying cells lose antigen
            fsc, ssc = fsc * 0.55, ssc * 1.15
            fsh = _height(rng, fsc)
        elif pop == "doublet":
            t1, f1, s1, e1 = _draw_cells(rng, spec, probs, n)
            t2, f2, s2, e2 = _draw_cells(rng, spec, probs, n)
            true, fsc, ssc, expr = t1 + t2, f1 + f2, s1 + s2, e1 | e2
            # Two cells side by side: the pulse is twice as long, not twice as high.
            fsh = np.maximum(_height(rng, f1), _height(rng, f2)) * rng.uniform(1.0, 1.15, n)
        elif pop == "debris":
            true = np.repeat(_lognormal(rng, (M.AUTOFLUORESCENCE["debris"], 0.3), n)[:, None], len(M.MARKERS), 1)
            frag = rng.random(n) < 0.5  # fragments of dead cells keep the viability dye
            true[:, _MARK["Viability"]] += np.where(frag, _lognormal(rng, (3000.0, 0.5), n), 0.0)
            fsc, ssc = _lognormal(rng, (9000.0, 0.3), n), _lognormal(rng, (6000.0, 0.35), n)
            fsh = _height(rng, fsc)
            expr = np.zeros(n, bool)
        else:  # bead
            true = _lognormal(rng, M.BEAD_INTENSITY, n)[:, None] * rng.normal(1.0, 0.01, (n, len(M.MARKERS)))
            (fm, fs), (sm, ss) = M.SCATTER["bead"]
            fsc, ssc = rng.normal(fm, fs, n), rng.normal(sm, ss, n)
            fsh = _height(rng, fsc)
            expr = np.zeros(n, bool)
        blocks.append((true, fsc, fsh, ssc, expr))
    return [np.concatenate([b[k] for b in blocks]) for k in range(5)]


def _acquisition_times(rng, spec: TubeSpec, n: int):
    """Seconds from the start for each event in acquisition order, the burst mask and clog info."""
    gaps = rng.exponential(1.0 / spec.event_rate_per_s, n)
    burst = np.zeros(n, bool)
    clog = None
    if spec.clog is not None and n > 10:
        c = spec.clog
        k = int(n * c.at)
        m = max(1, int(n * c.burst_fraction))
        gaps[k] += c.gap_s
        gaps[k + 1: k + 1 + m] /= c.burst_speedup
        burst[k: k + m] = True
        t = np.cumsum(gaps)
        clog = {"gap_start_s": float(t[k - 1]), "gap_end_s": float(t[k]),
                "burst_end_s": float(t[min(k + m, n) - 1]), "burst_events": int(burst.sum())}
        for key in ("gap_start", "gap_end", "burst_end"):
            clog[f"{key}_time"] = clog[f"{key}_s"] / spec.timestep_s
        return t, burst, clog
    return np.cumsum(gaps), burst, clog


def check_seed(seed) -> int:
    """``seed`` as an int; SimulationError unless it is a whole number >= 0 (what numpy's
    SeedSequence accepts)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimulationError(f"seed must be a whole number >= 0, got {seed!r}")
    return int(seed)


def simulate_tube(spec: TubeSpec, seed: int):
    """Simulate one tube. Returns ``(Sample, truth, EventLabels)``.

    The Sample holds float32 events in channel units (scatter and fluorescence on
    ``spec.scale_range``, Time in ``spec.timestep_s`` units), its spillover as a
    ``SpilloverMatrix`` and the TEXT keywords the study writer puts in the file.
    ``truth`` follows the per-tube schema in :mod:`cd7flow.simulate` (without the
    study fields patient/tube/dates, which :func:`simulate_study` adds).
    """
    from ..compensation import SpilloverMatrix

    _validate(spec)
    rng = np.random.default_rng(check_seed(seed))
    probs = _event_probabilities(spec)
    counts = rng.multinomial(spec.n_events, probs)
    true, fsc_a, fsc_h, ssc_a, cd7_pos = _generate(rng, spec, counts, probs)
    population = np.repeat(np.arange(len(M.POPULATIONS), dtype=np.int8), counts)

    shares = {k: probs[_POP[k]] for k in M.NEGATIVE_REFERENCE}
    threshold = M.cd7_threshold(shares)
    # The conventional cut on the true values, kept for comparison with the labels: a dim
    # population straddles it, so the share above it is not the share that expresses CD7.
    above_threshold = true[:, _MARK["CD7"]] > threshold
    # Every cell is negative for some marker, so its smallest true value is its own
    # autofluorescence: what an unstained (FMO) or unlabelled detector sees.
    baseline = true.min(axis=1)
    for marker in spec.unstained:
        true[:, _MARK[marker]] = baseline
    if "CD7" in spec.unstained:  # no CD7 reagent: no event carries detectable CD7
        cd7_pos = np.zeros_like(cd7_pos)
        above_threshold = true[:, _MARK["CD7"]] > threshold

    names = [c for c, _ in spec.panel]
    fl = [(i, c, m) for i, (c, m) in enumerate(spec.panel) if c not in M.SCATTER_CHANNELS and c != "Time"]
    fl_names = [c for _, c, _ in fl]
    spill = np.asarray(spec.spillover, float) if spec.spillover is not None else M.spillover_for(fl_names)
    if spill.shape != (len(fl), len(fl)):
        raise SimulationError(f"tube {spec.name!r}: spillover is {spill.shape} for {len(fl)} fluorescence channels")
    # Unlabelled detectors see autofluorescence only.
    true_fl = np.column_stack([true[:, _MARK[m]] if m else baseline for _, _, m in fl]) if fl else np.zeros((len(true), 0))
    raw = true_fl @ spill
    sd = np.sqrt(M.ELECTRONIC_SD ** 2 + M.PHOTON_VARIANCE_PER_UNIT * np.maximum(raw, 0.0))
    raw = raw + rng.standard_normal(raw.shape) * sd

    order = rng.permutation(spec.n_events)
    t_s, burst, clog = _acquisition_times(rng, spec, spec.n_events)
    scale = spec.scale_range / M.BASE_RANGE
    top = spec.scale_range - 1
    events = np.empty((spec.n_events, len(names)), np.float32)
    scatter = {"FSC-A": fsc_a, "FSC-H": fsc_h, "SSC-A": ssc_a}
    for j, name in enumerate(names):
        if name in scatter:
            col = np.clip((scatter[name] + rng.normal(0, 250, spec.n_events)) * scale, 0, top)
            events[:, j] = col[order]
    for k, (j, _, _) in enumerate(fl):
        events[:, j] = np.minimum(raw[order, k] * scale, top)
    time_range = M.BASE_RANGE
    events[:, names.index("Time")] = np.round(t_s / spec.timestep_s, 1)
    if t_s[-1] / spec.timestep_s > time_range:
        raise SimulationError(f"tube {spec.name!r}: acquisition longer than the Time range; raise event_rate_per_s")

    markers = [("" if m in spec.unstained else m) for _, m in spec.panel]
    ranges = np.array([time_range if c == "Time" else spec.scale_range for c in names])
    meta = _keywords(spec, names, t_s[-1])
    sample = Sample(
        events=events, channels=tuple(names), markers=tuple(markers), metadata=CaseInsensitiveDict(meta),
        ranges=ranges, spillover=SpilloverMatrix(tuple(fl_names), spill, source=f"simulated {spec.name}"),
    )
    labels = EventLabels(
        population=population[order], cd7_positive=cd7_pos[order],
        car_positive=(population == _POP["car_t"])[order], in_clog_burst=burst, cd7_threshold=threshold,
        cd7_above_threshold=above_threshold[order],
    )
    truth = tube_truth(spec, labels, clog)
    truth.update(channels=list(names), markers=markers,
                 spillover={"channels": fl_names, "matrix": spill.tolist()}, seed=int(seed))
    return sample, truth, labels


def _keywords(spec: TubeSpec, names: list[str], duration_s: float) -> dict[str, str]:
    meta = {"$CYT": "LSRFortessa", "$CYTSN": "R6560123", "$TIMESTEP": repr(spec.timestep_s),
            "TUBE NAME": spec.name, "CREATOR": "cd7flow simulator"}
    for i, name in enumerate(names, start=1):
        if name in M.VOLTAGES:
            meta[f"$P{i}V"] = str(M.VOLTAGES[name])
    meta.update(spec.metadata)
    return meta


def _pct(num: int, den: int) -> float | None:
    return None if den == 0 else round(100.0 * num / den, 6)


def tube_truth(spec: TubeSpec, labels: EventLabels, clog: dict | None) -> dict:
    """Counts and percentages of one tube from its labels (see the schema in the package doc)."""
    pop = labels.population
    n = {name: int(np.count_nonzero(pop == i)) for i, name in enumerate(M.POPULATIONS)}
    t_normal = labels.mask("T", "T_cd7neg")
    blasts = labels.mask("blast")
    cd3_t = n["T"] + n["T_cd7neg"] + n["car_t"]
    viable = sum(n[p] for p in M.CELL_POPULATIONS)
    counts = {
        "debris": n["debris"], "doublets": n["doublet"], "dead": n["dead"], "beads": n["bead"],
        "viable_singlets": viable, "T": cd3_t,
        "T_cd7_positive": int(np.count_nonzero(t_normal & labels.cd7_positive)),
        "T_cd7_negative": int(np.count_nonzero(t_normal & ~labels.cd7_positive)),
        "car_t": n["car_t"], "NK": n["NK"], "B": n["B"], "mono": n["mono"], "gran": n["gran"],
        "blasts": n["blast"],
    }
    blast_pos = int(np.count_nonzero(blasts & labels.cd7_positive))
    above = labels.cd7_above_threshold
    blast_above = int(np.count_nonzero(blasts & above)) if above is not None else None
    blast_info = {
        "count": n["blast"], "pct_of_viable_cd45": _pct(n["blast"], viable),
        "requested_pct_of_viable_cd45": spec.blast_pct, "lineage": spec.lineage,
        "cd7_positive": blast_pos, "cd7_positive_pct_of_blasts": _pct(blast_pos, n["blast"]),
        "requested_cd7_fraction": spec.cd7_fraction,
        "cd7_intensity": "negative" if "CD7" in spec.unstained else spec.cd7_intensity,
        "cd7_threshold_true": labels.cd7_threshold,
        "cd7_above_threshold_true": blast_above,
        "cd7_above_threshold_true_pct_of_blasts": None if blast_above is None else _pct(blast_above, n["blast"]),
    }
    car = {"car_t": n["car_t"], "cd3_t": cd3_t, "car_pct_of_cd3": _pct(n["car_t"], cd3_t),
           "bead_events": n["bead"], "beads_per_test": spec.beads_per_test,
           "sample_volume_ul": spec.sample_volume_ul if spec.beads_per_test else None}
    per_ul = {"car_t_per_ul": n["car_t"], "cd3_t_per_ul": cd3_t,
              "t_cd7_negative_per_ul": counts["T_cd7_negative"], "t_cd7_positive_per_ul": counts["T_cd7_positive"]}
    for key, events in per_ul.items():
        car[key] = (events / n["bead"] * spec.beads_per_test / spec.sample_volume_ul
                    if spec.beads_per_test and n["bead"] else None)
    return {"total_events": int(pop.shape[0]), "counts": counts, "blasts": blast_info, "car": car, "clog": clog}
