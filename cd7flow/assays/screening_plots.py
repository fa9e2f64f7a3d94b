"""PNG gating plots of one screening result: the leukocyte gate's plot (CD45/SSC) with the blast
gate, and histograms of the screened marker.

Axes are on the gating scale (the protocol's transform of each channel: logicle 0-1
for fluorescence, SSC as the protocol sets it); the threshold is drawn there, converted
from the record's ``<marker>_threshold`` (linear channel units). Histograms are densities
(area 1 per population). Each figure draws on its own Agg canvas (no pyplot, no
``matplotlib.use``): nothing here needs a display or changes the process's backend.
"""
from __future__ import annotations

import os

import numpy as np

from ..outputs import atomic_output
from ..protocol import Protocol
from .protocol_gating import GatedSample

PNG_DPI = 110


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save_atomic(fig, path: str) -> None:
    with atomic_output(path, "wb") as fh:
        fig.savefig(fh, dpi=PNG_DPI, format="png")


def write_plots(g: GatedSample, protocol: Protocol, rec: dict, blasts: np.ndarray, neg_mask: np.ndarray,
                pos_mask: np.ndarray, plots_dir) -> list[str]:
    """The blast gate's plot (CD45/SSC) and histograms of the screened marker on blasts vs references
    with the threshold. Channels come from the protocol: the cd45_ssc gate's dimensions and
    ``[positivity].marker``."""
    os.makedirs(plots_dir, exist_ok=True)
    stem = os.path.splitext(rec["file"])[0]
    written = []
    cd45_gate = next(x for x in protocol.gates if x.method == "cd45_ssc")
    x_key, y_key = cd45_gate.dimensions
    parent = g.masks[cd45_gate.parent]
    x, y = g.values(x_key), g.values(y_key)
    fig = _figure((5.5, 5))
    ax = fig.add_subplot()
    ax.scatter(x[parent], y[parent], s=1, c="0.6", alpha=0.4, rasterized=True, label=f"{cd45_gate.parent} events")
    ax.scatter(x[blasts], y[blasts], s=1, c="tab:red", alpha=0.4, rasterized=True, label="blasts")
    est = g.estimators.get(cd45_gate.id)
    for pop, gate in (getattr(est, "population_gates_", None) or {}).items():
        v = np.vstack([gate.vertices, gate.vertices[:1]])
        ax.plot(v[:, 0], v[:, 1], lw=1.2, label=f"{pop} gate")
    ax.set_xlabel(f"{x_key} ({g.channels[x_key]}, {g.transforms.get(x_key, {}).get('kind', 'linear')})")
    ax.set_ylabel(f"{y_key} ({g.channels[y_key]}, {g.transforms.get(y_key, {}).get('kind', 'linear')})")
    ax.set_title(f"{rec['file']}: blasts {rec['blasts']} ({(rec['blast_pct'] or 0):.1f}% of viable CD45+)", fontsize=9)
    ax.legend(fontsize=7, markerscale=5, loc="upper left")
    path = os.path.join(plots_dir, f"{stem}_cd45_ssc.png")
    _save_atomic(fig, path)
    written.append(path)

    marker = protocol.settings["positivity"]["marker"]
    xs = g.values(marker)
    fig = _figure((6, 4))
    ax = fig.add_subplot()
    finite = np.isfinite(xs)
    lo, hi = np.percentile(xs[finite & (blasts | neg_mask | pos_mask)], [0.1, 99.9])
    bins = np.linspace(lo, hi, 120)
    for mask, label, colour in ((blasts, f"blasts (n={rec['blasts']})", "tab:red"),
                                (neg_mask, f"negative ref (n={rec['neg_ref_events']})", "tab:blue"),
                                (pos_mask, f"positive ref (n={rec['pos_ref_events']})", "tab:green")):
        if mask.any():
            ax.hist(xs[mask & finite], bins=bins, histtype="step", density=True, color=colour, label=label)
    threshold = rec.get(f"{marker.lower()}_threshold")
    if threshold is not None:
        xf = g.source.transforms.get(g.dimensions[marker].transform)
        t = float(xf.apply(np.array([threshold]))[0]) if xf is not None else threshold
        ax.axvline(t, color="k", ls="--", lw=1, label="threshold")
    ax.set_xlabel(f"{marker} ({g.channels[marker]}, {g.transforms[marker].get('kind')})")
    ax.set_ylabel("density")
    m = marker.lower()
    ci = rec.get(f"{m}_pos_ci95") or [float("nan")] * 2
    title = (f"{rec['file']}: {rec[f'{m}_pos_pct']:.1f}% {marker}+ blasts ({rec.get(f'{m}_method')}, 95% CI "
             f"{ci[0]:.1f}-{ci[1]:.1f}), {rec['verdict']} ({protocol.rule.text})")
    if rec.get(f"{m}_pos_pct_threshold") is not None and rec.get(f"{m}_method") != "threshold":
        title += f"\nabove threshold: {rec[f'{m}_pos_pct_threshold']:.1f}%"
    if rec.get("borderline"):
        title += "; BORDERLINE: the 95% CI straddles the cut-off"
    ax.set_title(title, fontsize=8, color="darkmagenta" if rec.get("borderline") else "black")
    ax.legend(fontsize=7)
    path = os.path.join(plots_dir, f"{stem}_{marker.lower()}_hist.png")
    _save_atomic(fig, path)
    written.append(path)
    return written
