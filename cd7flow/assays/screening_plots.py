"""PNG gating plots of one screening result: CD45/SSC with the blast gate, CD7 histograms.

Axes are on the gating scale (the protocol's transform of each channel: logicle 0-1
for fluorescence, SSC as the protocol sets it); the CD7 threshold is drawn there, converted
from the record's ``cd7_threshold`` (linear channel units). Histograms are densities
(area 1 per population). matplotlib's Agg backend only: nothing here needs a display.
"""
from __future__ import annotations

import os

import numpy as np

from ..outputs import atomic_output
from ..protocol import Protocol
from .protocol_gating import GatedSample

PNG_DPI = 110


def _save_atomic(fig, path: str) -> None:
    with atomic_output(path, "wb") as fh:
        fig.savefig(fh, dpi=PNG_DPI, format="png")


def write_plots(g: GatedSample, protocol: Protocol, rec: dict, blasts: np.ndarray, neg_mask: np.ndarray,
                pos_mask: np.ndarray, plots_dir) -> list[str]:
    """CD45/SSC with the blast gate, and CD7 histograms of blasts vs references with the threshold."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    os.makedirs(plots_dir, exist_ok=True)
    stem = os.path.splitext(rec["file"])[0]
    written = []
    cd45_gate = next(x for x in protocol.gates if x.method == "cd45_ssc")
    parent = g.masks[cd45_gate.parent]
    x, y = g.values("CD45"), g.values("ssc_a")
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    ax.scatter(x[parent], y[parent], s=1, c="0.6", alpha=0.4, rasterized=True, label=f"{cd45_gate.parent} events")
    ax.scatter(x[blasts], y[blasts], s=1, c="tab:red", alpha=0.4, rasterized=True, label="blasts")
    est = g.estimators.get(cd45_gate.id)
    for pop, gate in (getattr(est, "gates_", None) or {}).items():
        v = np.vstack([gate.vertices, gate.vertices[:1]])
        ax.plot(v[:, 0], v[:, 1], lw=1.2, label=f"{pop} gate")
    ax.set_xlabel(f"CD45 ({g.channels['CD45']}, {g.transforms['CD45'].get('kind')})")
    ax.set_ylabel(f"SSC ({g.channels['ssc_a']}, {g.transforms.get('ssc_a', {}).get('kind', 'linear')})")
    ax.set_title(f"{rec['file']}: blasts {rec['blasts']} ({(rec['blast_pct'] or 0):.1f}% of viable CD45+)", fontsize=9)
    ax.legend(fontsize=7, markerscale=5, loc="upper left")
    path = os.path.join(plots_dir, f"{stem}_cd45_ssc.png")
    _save_atomic(fig, path)
    written.append(path)

    marker = protocol.settings["positivity"]["marker"]
    xs = g.values(marker)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    finite = np.isfinite(xs)
    lo, hi = np.percentile(xs[finite & (blasts | neg_mask | pos_mask)], [0.1, 99.9])
    bins = np.linspace(lo, hi, 120)
    for mask, label, colour in ((blasts, f"blasts (n={rec['blasts']})", "tab:red"),
                                (neg_mask, f"negative ref (n={rec['neg_ref_events']})", "tab:blue"),
                                (pos_mask, f"positive ref (n={rec['pos_ref_events']})", "tab:green")):
        if mask.any():
            ax.hist(xs[mask & finite], bins=bins, histtype="step", density=True, color=colour, label=label)
    if rec.get("cd7_threshold") is not None:
        xf = g.source.transforms.get(g.dimensions[marker].transform)
        t = float(xf.apply(np.array([rec["cd7_threshold"]]))[0]) if xf is not None else rec["cd7_threshold"]
        ax.axvline(t, color="k", ls="--", lw=1, label="threshold")
    ax.set_xlabel(f"{marker} ({g.channels[marker]}, {g.transforms[marker].get('kind')})")
    ax.set_ylabel("density")
    ax.set_title(f"{rec['file']}: {rec['cd7_pos_pct']:.1f}% {marker}+ blasts, {rec['verdict']} "
                 f"({protocol.rule.text})", fontsize=9)
    ax.legend(fontsize=7)
    path = os.path.join(plots_dir, f"{stem}_{marker.lower()}_hist.png")
    _save_atomic(fig, path)
    written.append(path)
    return written
