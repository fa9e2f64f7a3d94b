"""Batch benchmark: files/s of `cd7flow batch` over generated screening tubes, peak memory per worker,
report time, and the peak RSS of `cd7flow screen` on one large tube.

Not a test. Run from the repository root:

    .venv/bin/python benchmarks/bench_batch.py [--files 200] [--events 100000] [--large 1000000]

Tubes are simulated (cd7flow.simulate, marrow screening tubes with 40% blasts, 14 channels)
into a temporary folder that is deleted afterwards. Each configuration runs the whole
batch (QC + screening + tables + HTML/PDF report) into a fresh output folder:

- 1 worker (in-process), 2 worker processes, and a 2-worker Dask LocalCluster (processes);
- peak RSS per worker: the largest RSS any worker process reached (psutil, polled every 0.1 s);
- report time: a second run over the same output folder, where every result is reused, so it
  is planning + input hashing + tables + HTML + PDF;
- large file: `cd7flow screen` on one tube of --large events in a fresh process (peak RSS of that process).

The machine's load average is recorded: other jobs on the machine slow every figure.
Prints a markdown table and writes it to benchmarks/results_batch.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results_batch.md"


def make_tubes(folder: Path, n_files: int, n_events: int) -> None:
    from cd7flow.io.fcs_write import write_fcs
    from cd7flow.simulate.study import MARROW
    from cd7flow.simulate.tube import TubeSpec, simulate_tube

    for k in range(n_files):
        spec = TubeSpec(name="screening", n_events=n_events, composition=MARROW, blast_pct=40.0,
                        metadata={"TUBE NAME": "screening", "$SRC": f"B{k:03d} BM", "$DATE": "01-MAR-2024"})
        sample, _, _ = simulate_tube(spec, 1000 + k)
        write_fcs(folder / f"B{k:03d}_screening_BM.fcs", sample)


class PeakRSS:
    """Largest RSS (MB) of any child process of this one while running."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        import psutil

        while not self._stop.is_set():
            for child in self.me.children(recursive=True):
                try:
                    self.peak = max(self.peak, child.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(folder: Path, out: Path, **kw) -> tuple[float, float, int]:
    from cd7flow.batch import run_batch

    with PeakRSS() as mem:
        t0 = time.perf_counter()
        outcome = run_batch(folder, out, show_progress=False, **kw)
        dt = time.perf_counter() - t0
    assert not outcome.errors, outcome.errors
    return dt, mem.peak, len(outcome.files)


def self_rss_run(folder: Path, out: Path) -> tuple[float, float, int]:
    """The 1-worker run in a fresh process, so its peak RSS is that worker's own."""
    code = ("import sys, time, resource; sys.path.insert(0, %r); from cd7flow.batch import run_batch; "
            "t=time.perf_counter(); o=run_batch(%r, %r, jobs=1, show_progress=False); "
            "u=resource.getrusage(resource.RUSAGE_SELF); "
            "print(time.perf_counter()-t, u.ru_maxrss/1024, len(o.files), u.ru_utime+u.ru_stime)"
            % (str(HERE.parent), str(folder), str(out)))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dt, rss, n, cpu = res.stdout.split()
    self_rss_run.cpu_s = float(cpu)  # the worker's CPU seconds (imports included): load-independent
    return float(dt), float(rss), int(n)


def large_screen(folder: Path, n_events: int) -> tuple[float, float, float]:
    """(seconds, peak RSS MB, float32 matrix MB) of `cd7flow screen` on one tube of n_events."""
    make_tubes_big = folder / "large"
    make_tubes_big.mkdir()
    make_tubes(make_tubes_big, 1, n_events)
    path = next(make_tubes_big.iterdir())
    code = ("import subprocess, sys, time, resource; t=time.perf_counter(); "
            "subprocess.run([sys.executable, '-m', 'cd7flow.cli', 'screen', %r], check=True, capture_output=True); "
            "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024)" % str(path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=HERE.parent)
    dt, rss = res.stdout.split()
    return float(dt), float(rss), n_events * 14 * 4 / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--no-dask", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cd7flow-bench-batch-") as tmp:
        tmp = Path(tmp)
        study = tmp / "study"
        study.mkdir()
        t0 = time.perf_counter()
        make_tubes(study, args.files, args.events)
        gen = time.perf_counter() - t0
        dt1, rss1, n = self_rss_run(study, tmp / "out1")
        rows.append(("1 worker (in-process)", n, dt1, n / dt1, rss1))
        dt2, rss2, n = run(study, tmp / "out2", jobs=2)
        rows.append(("2 worker processes", n, dt2, n / dt2, rss2))
        if not args.no_dask:
            from distributed import LocalCluster

            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
                dt3, rss3, n = run(study, tmp / "out3", scheduler=cluster.scheduler_address)
            rows.append(("Dask LocalCluster, 2 worker processes", n, dt3, n / dt3, rss3))
        t0 = time.perf_counter()
        run(study, tmp / "out2", jobs=2)
        report_s = time.perf_counter() - t0
        big = large_screen(tmp, args.large) if args.large else None
    load1 = os.getloadavg()
    lines = [
        "# Batch benchmark (`benchmarks/bench_batch.py`)",
        "",
        f"{args.files} simulated screening tubes of {args.events:,} events x 14 channels (float32, "
        f"{args.events * 14 * 4 / 2**20:.1f} MB of events each); every run does QC + CD7 screening (with plots) on each "
        "file, then the tables and the HTML/PDF report. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; load average "
        f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end (other jobs share the cores: figures are lower bounds).",
        f"Generating the tubes took {gen:.0f} s. The 1-worker process used {self_rss_run.cpu_s:.0f} CPU s "
        f"({self_rss_run.cpu_s / max(args.files, 1):.2f} per file, imports and report included): the figure "
        "a busy machine does not distort.",
        "",
        "| configuration | files | wall s | files/s | speed-up | peak RSS per worker (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, n, dt, rate, rss in rows:
        lines.append(f"| {name} | {n} | {dt:.1f} | {rate:.2f} | {rate / rows[0][3]:.2f}x | {rss:.0f} |")
    lines += ["", f"Report time (every result reused: planning, input sha256, tables, Excel, HTML, PDF): {report_s:.1f} s "
              f"for {args.files} files."]
    if big:
        lines += ["", f"`cd7flow screen` on one {args.large:,} x 14 tube ({big[2]:.0f} MB float32): {big[0]:.1f} s, "
                  f"peak RSS {big[1]:.0f} MB ({big[1] / big[2]:.1f}x the float32 matrix). Screening itself is not "
                  "restructured here (the protocol pipeline is being refactored separately)."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
