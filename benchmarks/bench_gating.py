"""Gating benchmark: a 10-gate Gating-ML tree on 1,000,000 events, cd7flow vs FlowKit 1.3.2.

Not a test. Run from the repository root:

    .venv/bin/python benchmarks/bench_gating.py [--events 1000000] [--runs 3]

Writes benchmarks/_work/bench_gating.fcs (FCS 3.1 float32: FSC-A, SSC-A, FL1-A..FL4-A,
Time; clustered populations so every gate holds events) and bench_gating.xml (written
with our Gating-ML writer): polygon, rectangle, range, ellipse, 2 more polygons, a
quadrant gate (4 quadrants), and boolean and/or/not; fluorescence gates are on a
logicle scale. Both tools read the same FCS file once outside the timed region; the
timed region is "compute every population's membership" (cd7flow:
GatingStrategy.apply + counting every mask; FlowKit: Session.analyze_samples,
single process). Counts must be identical per population. Prints a markdown table
and writes it to benchmarks/results_gating.md.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
WORK = HERE / "_work"
RESULTS = HERE / "results_gating.md"
CHANNELS = ["FSC-A", "SSC-A", "FL1-A", "FL2-A", "FL3-A", "FL4-A", "Time"]


def make_events(n: int, seed: int = 11) -> np.ndarray:
    """Clustered events (linear units, 0..262144) so that every gate below is populated."""
    from cd7flow.transforms import LogicleTransform

    rng = np.random.default_rng(seed)
    lg = LogicleTransform(262144.0, 0.5, 4.5, 0.0)
    k = rng.integers(0, 4, n)
    fsc_c = np.array([40000, 90000, 120000, 70000])[k]
    ssc_c = np.array([20000, 30000, 80000, 150000])[k]
    ev = np.empty((n, len(CHANNELS)), dtype=np.float32)
    ev[:, 0] = rng.normal(fsc_c, 12000)
    ev[:, 1] = rng.normal(ssc_c, 10000)
    centres = np.array([[0.25, 0.7, 0.3, 0.8], [0.7, 0.3, 0.75, 0.25], [0.45, 0.45, 0.5, 0.5], [0.8, 0.8, 0.2, 0.3]])
    fl = rng.normal(centres[k], 0.08)
    ev[:, 2:6] = lg.inverse(fl)
    ev[:, 6] = np.sort(rng.uniform(0, 600, n))
    return ev


def make_strategy():
    """The 10-gate tree (11 populations + 3 more quadrants) as a cd7flow GatingStrategy."""
    from cd7flow.strategy import GatingStrategy
    from cd7flow.transforms import LogicleTransform
    from gating.dimensions import Dimension
    from gating.gates import (BooleanGate, Divider, EllipsoidGate, GateReference, PolygonGate, Quadrant,
                              QuadrantGate, RectangleGate)

    s = GatingStrategy()
    s.transforms["logicle"] = LogicleTransform(262144.0, 0.5, 4.5, 0.0, id="logicle")

    def fl(i: int) -> Dimension:
        return Dimension(f"FL{i}-A", None, "logicle")

    t = s.tree
    t.add(PolygonGate("Cells", ["FSC-A", "SSC-A"],
                      [[15000, 5000], [150000, 5000], [170000, 60000], [160000, 120000], [100000, 130000],
                       [40000, 90000], [10000, 40000], [12000, 10000]]))
    t.add(RectangleGate("Small", ["FSC-A", "SSC-A"], [20000, 0], [110000, 60000]), "/Cells")
    t.add(EllipsoidGate("FL1loFL2hi", [fl(1), fl(2)], [0.25, 0.7], [[0.01, 0.002], [0.002, 0.012]], 4.0), "/Cells/Small")
    t.add(QuadrantGate("Q", [Divider("d3", fl(3), (0.5,)), Divider("d4", fl(4), (0.55,))],
                       [Quadrant("FL3N-FL4N", {"d3": 0.2, "d4": 0.2}), Quadrant("FL3N-FL4P", {"d3": 0.2, "d4": 0.8}),
                        Quadrant("FL3P-FL4N", {"d3": 0.8, "d4": 0.2}), Quadrant("FL3P-FL4P", {"d3": 0.8, "d4": 0.8})]),
          "/Cells/Small")
    t.add(PolygonGate("FL1hiFL3hi", [fl(1), fl(3)], [[0.55, 0.55], [0.95, 0.55], [0.95, 0.95], [0.6, 0.9]]), "/Cells")
    t.add(RectangleGate("FL2lo", [fl(2)], [None], [0.4]), "/Cells")
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    t.add(PolygonGate("FL2FL4blob", [fl(2), fl(4)],
                      np.column_stack([0.45 + 0.15 * np.cos(angles) * (1 + 0.3 * np.sin(3 * angles)),
                                       0.5 + 0.18 * np.sin(angles)])), "/Cells")
    t.add(BooleanGate("And1", "and", [GateReference("FL1hiFL3hi"), GateReference("FL2lo")]))
    t.add(BooleanGate("Or1", "or", [GateReference("FL1loFL2hi"), GateReference("FL2FL4blob")]))
    t.add(BooleanGate("Not1", "not", [GateReference("Cells")]))
    return s


def time_cd7flow(strategy, sample, runs: int):
    times, counts = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = strategy.apply(sample)  # fresh source: compensation/transform caches start empty
        counts = {p.name: result.count(p.path) for p in result.tree.populations()}
        times.append(time.perf_counter() - t0)
    return times, counts


def time_flowkit(gml: Path, fcs: Path, runs: int):
    import flowkit as fk

    warnings.filterwarnings("ignore")
    session = fk.Session(gating_strategy=str(gml), fcs_samples=[str(fcs)])
    sid = session.get_sample_ids()[0]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.analyze_samples(sample_id=sid, use_mp=False)
        report = session.get_gating_results(sid).report
        times.append(time.perf_counter() - t0)
    counts = {row["gate_name"]: int(row["count"]) for _, row in report.iterrows()}
    return times, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    import flowkit

    from cd7flow.io.fcs_read import read_fcs
    from cd7flow.io.fcs_write import write_fcs
    from cd7flow.io.gatingml import read_gatingml, write_gatingml

    WORK.mkdir(exist_ok=True)
    fcs = WORK / "bench_gating.fcs"
    gml = WORK / "bench_gating.xml"
    write_fcs(fcs, make_events(args.events), channels=CHANNELS, ranges=[262144.0] * 6 + [600.0])
    write_gatingml(make_strategy(), gml)
    strategy = read_gatingml(gml)  # gate exactly what FlowKit reads
    sample = read_fcs(fcs)

    ours_t, ours_c = time_cd7flow(strategy, sample, args.runs)
    fk_t, fk_c = time_flowkit(gml, fcs, args.runs)
    names = list(ours_c)
    same = all(ours_c[n] == fk_c.get(n) for n in names) and set(fk_c) == set(names)
    ours_best, fk_best = min(ours_t), min(fk_t)
    ratio = fk_best / ours_best

    lines = [
        f"# Gating benchmark: {args.events:,} events, 10 gates ({len(names)} populations)",
        "",
        f"Python {platform.python_version()}, numpy {np.__version__}, FlowKit {flowkit.__version__}, "
        f"{platform.machine()}; best of {args.runs} runs (median in brackets); timed region = every "
        "population's membership from the events already in memory (transforms included).",
        "",
        "| tool | time (s) | speed-up |",
        "|---|---:|---:|",
        f"| cd7flow (GatingStrategy.apply) | {ours_best:.3f} ({statistics.median(ours_t):.3f}) | {ratio:.1f}x |",
        f"| FlowKit (Session.analyze_samples, use_mp=False) | {fk_best:.3f} ({statistics.median(fk_t):.3f}) | 1.0x |",
        "",
        f"Counts identical for every population: **{'yes' if same else 'NO'}**",
        "",
        "| population | cd7flow | FlowKit |",
        "|---|---:|---:|",
        *[f"| {n} | {ours_c[n]:,} | {fk_c.get(n, 'missing')} |" for n in names],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(RESULTS)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
