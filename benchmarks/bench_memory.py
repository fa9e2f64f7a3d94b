"""Peak memory of `cd7flow screen` on large tubes (1M and 5M events x 14 channels; --wide 20000000: 20M x 40).

Not a test. Run from the repository root:

    .venv/bin/python benchmarks/bench_memory.py [--events 1000000 5000000] [--wide 20000000]

Each tube is simulated once (cd7flow.simulate, the 14-channel screening panel, marrow with 30%
CD7+ T-ALL blasts) into benchmarks/_work/ (not committed; reused when present), then screened in a
fresh subprocess that runs the `cd7flow screen --json` command in-process and reports its peak RSS
(getrusage ru_maxrss), its RSS after the imports (psutil) and its wall and CPU time. The aim
(issue 10, item 5) is a peak <= 2.5x the tube's float32 matrix (events x channels x 4 bytes).
Writes benchmarks/results_memory.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
WORK = HERE / "_work"
RESULTS = HERE / "results_memory.md"
N_CHANNELS = 14


PIECE = 5_000_000  # events simulated at a time for the wide tubes


def tube_path(n_events: int, n_channels: int = N_CHANNELS) -> Path:
    suffix = "" if n_channels == N_CHANNELS else f"x{n_channels}"
    return WORK / f"bench_screen_{n_events}{suffix}.fcs"


def _spec(n_events: int):
    from cd7flow.simulate import FULL_PANEL, TubeSpec

    return TubeSpec(name=f"bench screen {n_events}", n_events=n_events, panel=FULL_PANEL, blast_pct=30.0,
                    lineage="T-ALL", cd7_fraction=0.9, event_rate_per_s=50000.0)


def generate(n_events: int, n_channels: int = N_CHANNELS) -> Path:
    """The simulated tube; with more than 14 channels, a spectral-sized file: the screening panel
    plus (n_channels - 14) unused fluorescence detectors (background noise, each in the
    spillover matrix with no spill, so the file carries an n x n matrix as spectral instruments
    do), simulated 5,000,000 events at a time (time carried on from piece to piece)."""
    from cd7flow.io.fcs_write import write_fcs
    from cd7flow.simulate import simulate_tube

    path = tube_path(n_events, n_channels)
    if path.exists():
        return path
    WORK.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if n_channels == N_CHANNELS:
        sample, _, _ = simulate_tube(_spec(n_events), 7)
        assert len(sample.channels) == N_CHANNELS
        write_fcs(tmp, sample)
        os.replace(tmp, path)
        return path
    import numpy as np

    extra = n_channels - N_CHANNELS
    events = np.empty((n_events, n_channels), dtype=np.float32)
    rng = np.random.default_rng(11)
    time_offset = 0.0
    for k, start in enumerate(range(0, n_events, PIECE)):
        stop = min(start + PIECE, n_events)
        piece, _, _ = simulate_tube(_spec(stop - start), 7 + k)
        events[start:stop, :N_CHANNELS] = piece.events
        t = piece.channel("Time")
        events[start:stop, t] += np.float32(time_offset)
        time_offset = float(events[stop - 1, t]) + 1.0
        for j in range(extra):
            events[start:stop, N_CHANNELS + j] = rng.normal(150.0, 80.0, stop - start)
        template = piece
        del piece
    names = list(template.channels) + [f"SP{j + 1}-A" for j in range(extra)]
    markers = list(template.markers) + [""] * extra
    ranges = list(template.ranges) + [262144.0] * extra
    spill = template.spillover
    channels = list(spill.channels) + names[N_CHANNELS:]
    matrix = np.eye(len(channels))
    matrix[:len(spill.channels), :len(spill.channels)] = spill.matrix
    write_fcs(tmp, events, channels=names, markers=markers, ranges=ranges, spillover=(channels, matrix),
              metadata={"$TIMESTEP": template.metadata.get("$TIMESTEP", "0.0001")})
    os.replace(tmp, path)
    return path


def screen(path: Path) -> dict:
    """In the child: `cd7flow screen --json path`, measured."""
    import contextlib
    import io

    import psutil
    import cd7flow.assays.protocol_gating  # noqa: F401  (the modules screening loads: before the baseline)
    import cd7flow.assays.screening  # noqa: F401
    import cd7flow.io.fcs_read  # noqa: F401
    from cd7flow.cli import app

    base = psutil.Process().memory_info().rss
    t0, c0 = time.perf_counter(), time.process_time()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            app(["screen", "--json", str(path)], standalone_mode=False)
        except SystemExit as exc:  # noqa: PERF203
            if exc.code not in (0, None):
                raise
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = json.loads(out.getvalue())
    result = result[0] if isinstance(result, list) else result
    summary = {k: result.get(k) for k in ("verdict", "cd7_pos_pct", "blast_events", "status") if k in result}
    return {"wall_s": wall, "cpu_s": cpu, "base_rss": base, "peak_rss": peak, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--wide", type=int, nargs="*", default=[],
                    help="also these event counts with --wide-channels channels (e.g. 20000000)")
    ap.add_argument("--wide-channels", type=int, default=40)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(screen(args.child)))
        return
    rows = []
    cases = [(n, N_CHANNELS) for n in args.events] + [(n, args.wide_channels) for n in args.wide]
    for n, n_channels in cases:
        path = generate(n, n_channels)
        load = os.getloadavg()[0]
        out = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        matrix = n * n_channels * 4
        rows.append(f"| {n:,} x {n_channels} | {matrix / 1e6:.0f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['base_rss'] / 1e6:.0f} "
                    f"| {r['peak_rss'] / 1e6:.0f} = {r['peak_rss'] / matrix:.2f}x "
                    f"| {(r['peak_rss'] - r['base_rss']) / 1e6:.0f} = {(r['peak_rss'] - r['base_rss']) / matrix:.2f}x "
                    f"| {load:.1f} | {json.dumps(r['summary'])} |")
        print(rows[-1], flush=True)
    text = f"""# Memory benchmark: `cd7flow screen` on large tubes

Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, shared with other work (load
average at the start of each run in the table). Tubes: cd7flow.simulate screening panel ({N_CHANNELS} channels),
marrow with 30% T-ALL blasts; the wide tubes add unused detectors (see `generate`). Peak = the screening process's ru_maxrss; "after imports" = its RSS
before the file is read. Aim (issue 10): peak <= 2.5x the float32 matrix.

| events x channels | float32 matrix (MB) | wall (s) | CPU (s) | RSS after imports (MB) | peak RSS (MB) = x matrix | peak growth (MB) = x matrix | load | result |
|---:|---:|---:|---:|---:|---:|---:|---:|---|
""" + "\n".join(rows) + "\n"
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
