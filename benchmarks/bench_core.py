"""FCS-core benchmark: read + compensate (15 x 15) + logicle, cd7flow vs FlowKit.

Not a test. Run from the repository root:

    .venv/bin/python benchmarks/bench_core.py [--events 1000000] [--runs 3]

It writes benchmarks/_work/bench_core.fcs (FCS 3.1, float32, 20 channels: 4 scatter,
15 fluorescence with $SPILLOVER, Time) once, then times each side in fresh
subprocesses so that every run is cold (imports done, nothing cached: cd7flow's
logicle table is built inside the timed region) and peak RSS is the process's own.
Memory is reported two ways: total peak RSS (ru_maxrss), and the increase over the
RSS measured in the same process after the imports and before any work.
Prints a markdown table and writes it to benchmarks/results_core.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
REPO = HERE.parent
WORK = HERE / "_work"
RESULTS = HERE / "results_core.md"

SCATTER = ["FSC-A", "FSC-H", "SSC-A", "SSC-H"]
FLUOR = [f"{c}-A" for c in ("BUV395", "BUV737", "BV421", "BV510", "BV605", "BV650", "BV711",
                            "BV786", "FITC", "PerCP-Cy5.5", "PE", "PE-CF594", "PE-Cy7",
                            "APC", "APC-Cy7")]
CHANNELS = SCATTER + FLUOR + ["Time"]
TOP = 262144.0
LOGICLE = dict(t=TOP, w=0.5, m=4.5, a=0.0)


def _rss_now_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


# ----------------------------------------------------------------------------- the file


def build_file(path: Path, n_events: int) -> None:
    """Write a deterministic 1M x 20 float32 FCS 3.1 file with a 15 x 15 $SPILLOVER."""
    import numpy as np

    from cd7flow.io.fcs_write import write_fcs

    rng = np.random.default_rng(20261125)
    k = len(FLUOR)
    spill = np.eye(k)
    for i in range(k):  # spill mostly into the next two detectors, a little elsewhere
        for j, frac in ((i + 1, 0.12), (i + 2, 0.03)):
            if j < k:
                spill[i, j] = frac
    spill += np.triu(rng.uniform(0, 0.005, (k, k)), 1) * (spill == 0)
    events = np.empty((n_events, len(CHANNELS)), dtype=np.float32)
    events[:, 0] = rng.normal(60000, 15000, n_events)
    events[:, 1] = events[:, 0] * rng.normal(0.85, 0.03, n_events)
    events[:, 2] = rng.lognormal(10, 0.5, n_events)
    events[:, 3] = events[:, 2] * rng.normal(0.8, 0.03, n_events)
    # each marker: a negative population around 0 and a positive one 1-3 decades up
    positive = rng.random((n_events, k)) < rng.uniform(0.1, 0.6, k)
    true = rng.normal(0, 150, (n_events, k))
    true += positive * rng.lognormal(rng.uniform(6, 10, k), 0.6, (n_events, k))
    events[:, 4:4 + k] = true @ spill
    events[:, -1] = np.sort(rng.uniform(0, 600, n_events))
    np.clip(events[:, :-1], -TOP, TOP - 1, out=events[:, :-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_fcs(path, events, channels=CHANNELS, ranges=[TOP] * (len(CHANNELS) - 1) + [600.0],
              spillover=(FLUOR, spill), metadata={"$CYT": "cd7flow benchmark"})


# ----------------------------------------------------------------------------- workers


def worker_cd7flow(path: str) -> dict:
    import numpy as np

    import cd7flow
    from cd7flow.compensation import compensate
    from cd7flow.transforms import LogicleTransform

    base = _rss_now_kb()
    t0 = time.perf_counter()
    sample = cd7flow.read_fcs(path)
    t1 = time.perf_counter()
    compensate(sample, inplace=True)
    t2 = time.perf_counter()
    cols = [sample.channels.index(c) for c in sample.spillover.channels]
    lo, hi = min(cols), max(cols) + 1
    xf = LogicleTransform(**LOGICLE)
    if cols == list(range(lo, hi)):  # adjacent columns: one strided block, transformed in place
        block = sample.events[:, lo:hi]
        xf.apply(block, out=block)
    else:
        for c in cols:
            xf.apply(sample.events[:, c], out=sample.events[:, c])
    t3 = time.perf_counter()
    ev = sample.events
    return {
        "read_s": t1 - t0, "comp_s": t2 - t1, "xform_s": t3 - t2, "total_s": t3 - t0,
        "base_kb": base, "peak_kb": _peak_rss_kb(), "dtype": str(ev.dtype), "shape": list(ev.shape),
        "check": _checksum(np, ev, cols),
    }


def worker_flowkit(path: str) -> dict:
    import flowkit
    import numpy as np

    base = _rss_now_kb()
    t0 = time.perf_counter()
    sample = flowkit.Sample(path)
    t1 = time.perf_counter()
    spill_text = sample.metadata.get("spillover") or sample.metadata.get("spill")
    sample.apply_compensation(spill_text)
    t2 = time.perf_counter()
    xf = flowkit.transforms.LogicleTransform(param_t=LOGICLE["t"], param_w=LOGICLE["w"],
                                             param_m=LOGICLE["m"], param_a=LOGICLE["a"])
    sample.apply_transform(xf)
    ev = sample.get_events(source="xform")
    t3 = time.perf_counter()
    cols = [sample.pnn_labels.index(c) for c in FLUOR]
    return {
        "read_s": t1 - t0, "comp_s": t2 - t1, "xform_s": t3 - t2, "total_s": t3 - t0,
        "base_kb": base, "peak_kb": _peak_rss_kb(), "dtype": str(ev.dtype), "shape": list(ev.shape),
        "check": _checksum(np, ev, cols),
    }


def _checksum(np, ev, cols) -> list[float]:
    """A few numbers that both sides must agree on (same data, same pipeline)."""
    sel = ev[::9973][:, cols].astype(np.float64)
    return [float(sel.mean()), float(np.abs(sel).max()), float(ev[:, cols[0]].astype(np.float64).mean())]


def worker_bare(kind: str) -> dict:
    """RSS of an interpreter that has only done the imports of one side."""
    import numpy  # noqa: F401

    if kind == "cd7flow":
        import cd7flow.compensation  # noqa: F401
        import cd7flow.io.fcs_read  # noqa: F401
        import cd7flow.transforms  # noqa: F401
    else:
        import flowkit  # noqa: F401
    return {"rss_kb": _rss_now_kb(), "peak_kb": _peak_rss_kb()}


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def _warm_page_cache(path: Path) -> None:
    """Read the file once so every timed run, ours and FlowKit's, starts with it in the page cache.

    This machine reclaims idle file pages (kdamond), so without this whichever run comes
    first after a pause pays for the disk (measured: read 0.27 s cold vs 0.04 s warm).
    """
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def _run_worker(*args: str, extra_env: dict[str, str] | None = None) -> dict:
    if len(args) > 1:
        _warm_page_cache(Path(args[1]))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra_env or {})
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5, help="cd7flow runs (median reported)")
    ap.add_argument("--flowkit-runs", type=int, default=1)
    ap.add_argument("--rebuild", action="store_true", help="rewrite the FCS file")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        kind, *rest = args.worker
        result = {"cd7flow": worker_cd7flow, "flowkit": worker_flowkit}[kind](*rest) if rest else worker_bare(kind)
        print(json.dumps(result))
        return

    path = WORK / f"bench_core_{args.events}.fcs"
    if args.rebuild or not path.is_file():
        t = time.perf_counter()
        build_file(path, args.events)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s")
    matrix_mb = args.events * len(CHANNELS) * 4 / 1e6

    load_before = _loadavg()
    ours = [_run_worker("cd7flow", str(path)) for _ in range(args.runs)]
    # diagnostic: the same runs with OpenBLAS held to one thread (its idle threads spin and
    # compete for the 2 cores with everything else; see benchmarks/README.md)
    one_blas = [_run_worker("cd7flow", str(path), extra_env={"OPENBLAS_NUM_THREADS": "1"})
                for _ in range(args.runs)]
    theirs = [_run_worker("flowkit", str(path)) for _ in range(args.flowkit_runs)]
    bare = {k: _run_worker(k) for k in ("cd7flow", "flowkit")}

    a = ours[0]["check"]
    b = theirs[0]["check"]
    agree = all(abs(x - y) <= 1e-4 * max(1.0, abs(y)) for x, y in zip(a, b))

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    def mb(kb):  # ru_maxrss is in KiB; report decimal MB like the matrix size
        return kb * 1024 / 1e6

    o_total, f_total = med(ours, "total_s"), med(theirs, "total_s")
    o_peak, f_peak = med(ours, "peak_kb"), med(theirs, "peak_kb")
    o_inc = med([{"v": r["peak_kb"] - r["base_kb"]} for r in ours], "v")
    f_inc = med([{"v": r["peak_kb"] - r["base_kb"]} for r in theirs], "v")
    lines = [
        f"# FCS-core benchmark ({args.events:,} events x {len(CHANNELS)} channels, float32; "
        f"15 x 15 $SPILLOVER; logicle T=262144 W=0.5 M=4.5 A=0 on the 15 fluorescence channels)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. "
        f"Event matrix: {matrix_mb:.0f} MB. Each run is a fresh process (cold: imports done, "
        f"nothing cached in the process; the FCS file is in the OS page cache for every run of both tools); cd7flow median of {args.runs}, FlowKit {args.flowkit_runs} run(s). "
        f"Load average before/after: {load_before} / {_loadavg()} (other work on the machine "
        f"inflates times).",
        "",
        "| step | cd7flow median (s) | cd7flow best (s) | FlowKit (s) | ratio (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in (("read_s", "read"), ("comp_s", "compensate"), ("xform_s", "logicle"),
                       ("total_s", "**total**")):
        o, f = med(ours, key), med(theirs, key)
        best = min(r[key] for r in ours)
        lines.append(f"| {label} | {o:.3f} | {best:.3f} | {f:.3f} | {f / o:.1f}x |")
    lines += [
        "",
        "| memory | cd7flow (MB) | FlowKit (MB) |",
        "|---|---:|---:|",
        f"| RSS after imports (bare interpreter + imports) | {mb(bare['cd7flow']['rss_kb']):.0f} "
        f"| {mb(bare['flowkit']['rss_kb']):.0f} |",
        f"| peak RSS, total | {mb(o_peak):.0f} | {mb(f_peak):.0f} |",
        f"| peak RSS increase over the imports baseline | {mb(o_inc):.0f} "
        f"({mb(o_inc) / matrix_mb:.2f}x the matrix) | {mb(f_inc):.0f} "
        f"({mb(f_inc) / matrix_mb:.2f}x) |",
        "",
        f"Speed-up (total): **{f_total / o_total:.1f}x** (target >= 15x). "
        f"cd7flow peak increase {mb(o_inc):.0f} MB vs target <= {2.5 * matrix_mb:.0f} MB "
        f"(2.5x the float32 matrix). Outputs agree: {'yes' if agree else 'NO'} "
        f"(checksums cd7flow {a}, FlowKit {b}).",
        "",
        f"Diagnostic, same cd7flow runs with OPENBLAS_NUM_THREADS=1: total median "
        f"{med(one_blas, 'total_s'):.3f} s (compensate {med(one_blas, 'comp_s'):.3f} s, logicle "
        f"{med(one_blas, 'xform_s'):.3f} s), {f_total / med(one_blas, 'total_s'):.1f}x FlowKit.",
        "",
        "cd7flow runs (total s): " + ", ".join(f"{r['total_s']:.3f}" for r in ours)
        + f"; FlowKit events dtype {theirs[0]['dtype']}, cd7flow {ours[0]['dtype']}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, RESULTS)


if __name__ == "__main__":
    main()
