"""An independent CAR-T follow-up generator for tests (no code shared with cd7flow.simulate).

Differences from the demo simulator on purpose: Cytek/Aurora-like detector names ($PnN such
as "B2-A", "V7-A") in a shuffled order, $PnS "CD7 BB515"-style labels, other $PnR (1024,
262144 or 2^24, per patient), its own scatter and brightness for every population and for
the beads, bead lots of 40,000-55,000 per test, 50 or 100 uL, irregular sampling days and
random file names. Truth is the realised per-event label of every event.

``make_study(folder, seed, n_patients, events)`` writes the FCS files and manifest.csv and
returns the truth: {file: {"patient", "day", "car", "cd3", "cd7pos", "cd7neg", "beads",
"car_per_ul", "cd3_per_ul", "cd3_cd7pos_per_ul", "cd3_cd7neg_per_ul", "nk_per_ul"}} (cd7neg includes CAR).
"""
from __future__ import annotations

import csv
import datetime as dt
import uuid

import numpy as np

from cd7flow.compensation import SpilloverMatrix
from cd7flow.io.fcs_write import write_fcs
from cd7flow.sample import CaseInsensitiveDict, Sample

# detector $PnN -> marker label ($PnS); a lab's own naming
DETECTORS = {"B2-A": "CD7 BB515", "YG1-A": "CAR ProteinL-PE", "V3-A": "CD3 BV421", "V7-A": "CD45 BV510",
             "R1-A": "CD56 APC", "R7-A": "Live/Dead NIR", "B9-A": "CD19 PerCP"}
MARKER_OF = {det: label.split()[0] for det, label in DETECTORS.items()}
BASE = 262144.0
# population: (FSC mean, sd), (SSC mean, sd), {marker: (median, sd decades)}, autofluorescence
POPS = {
    "T": ((52000, 5000), (11000, 2000), {"CD45": (26000, .1), "CD3": (9000, .14), "CD7": (7000, .15)}, 22),
    "T7neg": ((52000, 5000), (11000, 2000), {"CD45": (26000, .1), "CD3": (9000, .14)}, 22),
    "car": ((60000, 7000), (13000, 2500), {"CD45": (27000, .1), "CD3": (7500, .16), "CAR": (6000, .3)}, 26),
    "NK": ((56000, 5000), (17000, 3000), {"CD45": (21000, .1), "CD56": (6000, .22), "CD7": (9000, .15)}, 24),
    "B": ((50000, 5000), (10000, 2000), {"CD45": (18000, .1), "CD19": (7000, .15)}, 20),
    "mono": ((85000, 9000), (45000, 8000), {"CD45": (12000, .1)}, 60),
    "gran": ((100000, 12000), (115000, 20000), {"CD45": (5000, .1)}, 90),
}
SPILL = {("B2-A", "YG1-A"): 0.15, ("V3-A", "V7-A"): 0.18, ("R1-A", "R7-A"): 0.08, ("YG1-A", "B9-A"): 0.1,
         ("V7-A", "B2-A"): 0.03}


def _lognormal(rng, median, sd, n):
    return 10.0 ** rng.normal(np.log10(median), sd, n)


def _tube(rng, n_events, shares, bead_ratio, scale):
    """events (n x channels, in file order of `order`), labels (population name per event)."""
    names = list(POPS) + ["bead", "debris", "dead"]
    rest = np.array([shares[p] for p in POPS], float)
    rest = rest / rest.sum() * 0.92 / (1 + bead_ratio)
    p = np.concatenate([rest, [0.92 * bead_ratio / (1 + bead_ratio), 0.05, 0.03]])
    counts = rng.multinomial(n_events, p / p.sum())
    labels = np.repeat(np.array(names), counts)
    n = labels.size
    markers = ("CD7", "CAR", "CD3", "CD45", "CD56", "Live/Dead", "CD19")
    true = {m: np.zeros(n) for m in markers}
    fsc, ssc = np.zeros(n), np.zeros(n)
    for name in POPS:
        idx = np.flatnonzero(labels == name)
        (fm, fs), (sm, ss), prof, af = POPS[name]
        fsc[idx], ssc[idx] = rng.normal(fm, fs, idx.size), np.abs(rng.normal(sm, ss, idx.size)) + 300
        auto = _lognormal(rng, af, 0.15, idx.size)
        for m in markers:
            true[m][idx] = auto + (_lognormal(rng, *prof[m], idx.size) if m in prof else 0)
    idx = np.flatnonzero(labels == "bead")
    level = _lognormal(rng, 90000, 0.02, idx.size)
    fsc[idx], ssc[idx] = rng.normal(16000, 700, idx.size), rng.normal(70000, 2500, idx.size)
    for m in markers:
        true[m][idx] = level * rng.normal(1, 0.01, idx.size)
    idx = np.flatnonzero(labels == "debris")
    fsc[idx], ssc[idx] = _lognormal(rng, 6000, .3, idx.size), _lognormal(rng, 4000, .3, idx.size)
    for m in markers:
        true[m][idx] = _lognormal(rng, 12, .3, idx.size)
    idx = np.flatnonzero(labels == "dead")
    fsc[idx], ssc[idx] = rng.normal(30000, 6000, idx.size), np.abs(rng.normal(20000, 6000, idx.size))
    for m in markers:
        true[m][idx] = _lognormal(rng, 30, .2, idx.size)
    true["CD45"][idx] += _lognormal(rng, 8000, .2, idx.size)
    true["Live/Dead"][idx] += _lognormal(rng, 30000, .2, idx.size)
    dets = list(DETECTORS)
    S = np.eye(len(dets))
    for (a, b), v in SPILL.items():
        S[dets.index(a), dets.index(b)] = v
    X = np.column_stack([true[MARKER_OF[d] if MARKER_OF[d] != "Live/Dead" else "Live/Dead"] for d in dets]) @ S
    X = X + rng.standard_normal(X.shape) * np.sqrt(30.0 ** 2 + 3.0 * np.maximum(X, 0))
    cols = {"FSC-A": fsc, "FSC-H": fsc * rng.normal(0.8, 0.02, n), "SSC-A": ssc}
    cols.update({d: X[:, j] for j, d in enumerate(dets)})
    order = rng.permutation(n)
    data = {k: np.clip(v[order] * scale, None, BASE * scale - 1) for k, v in cols.items()}
    data["Time"] = np.sort(rng.uniform(0, 2000, n))
    return data, labels[order], S, dets


def make_study(folder, seed: int = 11, n_patients: int = 2, events: int = 5000, days=None) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict] = {}
    rows = []
    for k in range(n_patients):
        pid = f"pt-{rng.integers(100, 999)}"
        infusion = dt.date(2025, 1, 6) + dt.timedelta(days=int(rng.integers(0, 200)))
        visit_days = days or sorted({0, *rng.choice(np.arange(2, 60), 6, replace=False).tolist()})
        scale = float([2 ** 24, 1024, 262144][k % 3]) / BASE
        peak_day, peak_car = float(rng.uniform(9, 15)), float(rng.uniform(300, 1500))
        beads_per_test, volume = int(rng.integers(40000, 55001)), [50.0, 100.0][k % 2]
        for day in visit_days:
            car = 0.0 if day == 0 else peak_car * np.exp(-((np.log((day + 1) / (peak_day + 1))) ** 2) / 0.35)
            t_other = 150 + 8 * day  # CD3+ non-CAR T cells per uL recover after lymphodepletion
            cells = {"car": car, "T": t_other * 0.8, "T7neg": t_other * 0.2, "NK": 40 + day, "B": 30,
                     "mono": 200 + 10 * day, "gran": 600 + 60 * day}
            wbc = sum(cells.values())
            shares = {p: v / wbc for p, v in cells.items()}
            data, labels, S, dets = _tube(rng, events, shares, beads_per_test / (wbc * volume), scale)
            names = ["Time"] + [c for c in rng.permutation([c for c in data if c != "Time"])]
            sample = Sample(
                events=np.column_stack([data[c] for c in names]).astype(np.float32), channels=tuple(names),
                markers=tuple(DETECTORS.get(c, "") for c in names),
                metadata=CaseInsensitiveDict({"$TIMESTEP": "0.01", "$CYT": "Aurora-like test generator"}),
                ranges=np.array([262144.0 if c == "Time" else BASE * scale for c in names]),
                spillover=SpilloverMatrix(tuple(dets), S, source="gen_car_study"))
            fname = f"{uuid.UUID(int=int(rng.integers(0, 2 ** 63))).hex[-12:]}.fcs"
            write_fcs(folder / fname, sample)
            n = {p: int(np.count_nonzero(labels == p)) for p in ("car", "T", "T7neg", "bead", "NK")}
            per = beads_per_test / volume / n["bead"]
            cd3 = n["car"] + n["T"] + n["T7neg"]
            truth[fname] = {"patient": pid, "day": day, "car": n["car"], "cd3": cd3, "beads": n["bead"],
                            "car_per_ul": n["car"] * per, "cd3_per_ul": cd3 * per,
                            "cd3_cd7pos_per_ul": n["T"] * per, "cd3_cd7neg_per_ul": (n["T7neg"] + n["car"]) * per,
                            "nk_per_ul": n["NK"] * per}
            date = infusion + dt.timedelta(days=day)
            rows.append({"File": fname, "Patient": pid, "Tube": "CAR", "Collection_Date": date.isoformat(),
                         "Infusion_Date": infusion.isoformat(), "Beads_Per_Test": beads_per_test,
                         "Sample_Volume_uL": volume})
    order = rng.permutation(len(rows))
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[i] for i in order)
    return truth
