"""Persistence benchmark: one patient, 10 CAR tubes of 1,000,000 events, through `run_persistence`.

Not a test. Run from the repository root:

    .venv/bin/python benchmarks/bench_persistence.py [--events 1000000] [--tubes 10]

The tubes are generated with cd7flow.simulate (blood CAR panel, counting beads, days 0-180)
into a temporary folder (deleted afterwards, never committed). The analysis runs in a
child process so its peak RSS (getrusage ru_maxrss) is the analysis alone; the child also
reports its RSS after imports (psutil), so the growth attributable to the data is visible.
Seconds per tube = analysis wall time / tubes (the day-0 tube is gated once: its record and the
patient's CAR threshold come from the same gating). Writes benchmarks/results_persistence.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results_persistence.md"
DAYS = (0, 4, 7, 10, 14, 21, 28, 60, 90, 180)


def generate(folder: Path, n_events: int, n_tubes: int) -> None:
    from cd7flow.io.fcs_write import write_fcs
    from cd7flow.simulate import PB_CAR_PANEL, TubeSpec, simulate_tube
    from cd7flow.simulate.study import CAR_OF_T, T_SHARE, WBC_PER_UL

    rows = ["file,patient,tube,collection_date,infusion_date,beads_per_test,sample_volume_ul"]
    infusion = dt.date(2025, 3, 3)
    for k, day in enumerate(DAYS[:n_tubes]):
        spec = TubeSpec(name=f"bench D{day}", n_events=n_events, panel=PB_CAR_PANEL,
                        composition={"T": T_SHARE[day], "NK": 0.03, "B": 0.03, "mono": 0.08,
                                     "gran": 1 - T_SHARE[day] - 0.14},
                        car_fraction_of_t=CAR_OF_T[day], beads_per_test=50000, sample_volume_ul=50.0,
                        wbc_per_ul=WBC_PER_UL[day], event_rate_per_s=20000.0)
        sample, _, _ = simulate_tube(spec, 1000 + k)
        name = f"tube{k:02d}.fcs"
        write_fcs(folder / name, sample)
        rows.append(f"{name},B01,car,{infusion + dt.timedelta(days=day)},{infusion},50000,50")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")


def analyse(folder: Path) -> dict:
    import psutil

    from cd7flow.assays.persistence import run_persistence

    proc = psutil.Process()
    base = proc.memory_info().rss
    stamps: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_persistence(folder / "manifest.csv", progress=lambda _m: stamps.append(time.perf_counter()))
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"total_s": total, "cpu_s": cpu, "base_rss": base, "peak_rss": peak, "tubes": len(res.samples),
            "problems": [str(p) for p in res.problems], "cmax": res.kinetics[0]["cmax_per_ul"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--tubes", type=int, default=10)
    ap.add_argument("--analyse", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.analyse:
        print(json.dumps(analyse(args.analyse)))
        return
    with tempfile.TemporaryDirectory(prefix="cd7flow_bench_persist_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        generate(folder, args.events, args.tubes)
        gen_s = time.perf_counter() - t0
        load = os.getloadavg()
        out = subprocess.run([sys.executable, __file__, "--analyse", str(folder)], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        load_after = os.getloadavg()
    n_channels = 11
    matrix = args.events * n_channels * 4
    per_tube = r["total_s"] / r["tubes"]
    text = f"""# Persistence benchmark: one patient, {args.tubes} CAR tubes of {args.events:,} events

Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; load average before / after
the run {load[0]:.1f} / {load_after[0]:.1f} (other work shared the cores). Tubes: cd7flow.simulate blood CAR
panel ({n_channels} channels, counting beads), generated in {gen_s:.0f} s to a temporary folder.

| quantity | value | aim |
|---|---:|---:|
| seconds per tube (wall, {r['tubes']} tubes) | {per_tube:.2f} | <= 1.5 |
| CPU seconds per tube (all threads of the process) | {r['cpu_s'] / r['tubes']:.2f} | |
| total analysis time (s) | {r['total_s']:.1f} | |
| one tube's float32 matrix (MB) | {matrix / 1e6:.1f} | |
| peak RSS of the analysis process (MB) | {r['peak_rss'] / 1e6:.0f} | <= {3 * matrix / 1e6:.0f} (3x matrix) |
| RSS after imports, before the first file (MB) | {r['base_rss'] / 1e6:.0f} | |
| peak RSS growth over that (MB) = x matrix | {(r['peak_rss'] - r['base_rss']) / 1e6:.0f} = {(r['peak_rss'] - r['base_rss']) / matrix:.1f}x | <= 3x |

Rows skipped: {len(r['problems'])}; Cmax {r['cmax']:.1f} cells/uL.
"""
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
