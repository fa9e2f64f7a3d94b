"""One PNG per patient: CAR+ cells/uL on a log axis over days (95% bars), the LLOQ, CD7+/CD7- T cells, escape.

Figures are matplotlib ``Figure`` objects (no pyplot state, no backend switch), written atomically.
"""
from __future__ import annotations

import io
from pathlib import Path

from ..outputs import atomic_output


def patient_figure(patient: str, course: list[dict], kinetics: dict, lloq_per_ul: float | None = None):
    """The patient's course as a Figure (see the module doc). ``course``: car-tube records."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    pts = [c for c in course if c.get("car_per_ul") is not None]
    floor = 0.05  # log axis: a zero value is drawn at this floor (the value itself is in samples.csv)
    if pts:
        days = [c["day"] for c in pts]
        val = [max(c["car_per_ul"], floor) for c in pts]
        lo = [max(v - max(c["car_per_ul_low"], floor), 0) for v, c in zip(val, pts)]
        hi = [max(max(c["car_per_ul_high"], floor) - v, 0) for v, c in zip(val, pts)]
        ax.errorbar(days, val, yerr=[lo, hi], fmt="o-", color="tab:red", capsize=3, label="CAR+ T cells/uL (95% CI)")
        for key, color, label in (("cd3_cd7pos_per_ul", "tab:blue", "CD3+CD7+ T/uL"),
                                  ("cd3_cd7neg_per_ul", "tab:green", "CD3+CD7- T/uL (incl. CAR+)")):
            ys = [(c["day"], c[key]) for c in pts if c.get(key)]
            if ys:
                ax.plot([d for d, _ in ys], [v for _, v in ys], "s--", color=color, ms=4, label=label)
        below = [(c["day"], max(c["car_per_ul"], floor)) for c in pts if c.get("flags")]
        if below:
            ax.plot([d for d, _ in below], [v for _, v in below], "o", mfc="white", mec="tab:red", zorder=4,
                    label="flagged (below LOD/LLOQ)")
    if lloq_per_ul:
        ax.axhline(lloq_per_ul, color="grey", ls=":", label=f"LLOQ (~{lloq_per_ul:.2g}/uL at median beads)")
    for ev in kinetics.get("escape_evidence") or []:
        if ev.get("cd7_negative") and kinetics.get("antigen_escape"):
            ax.axvline(ev["day"], color="black", ls="-.", lw=1)
            ax.annotate(f"CD7- blasts ({ev['blast_events']})", (ev["day"], 1), rotation=90, fontsize=7,
                        xycoords=("data", "axes fraction"), va="top", ha="right")
    ax.set_yscale("log")
    ax.set_xlabel("days from infusion")
    ax.set_ylabel("cells / uL blood")
    esc = kinetics.get("antigen_escape")
    ax.set_title(f"{patient}: Cmax {kinetics.get('cmax_per_ul') or 0:.4g} /uL at day {kinetics.get('tmax_day')}"
                 f"{' - ANTIGEN ESCAPE' if esc else ''}", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def write_patient_png(path: str | Path, fig) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_output(path) as fh:
        fh.write(buf.getvalue())
