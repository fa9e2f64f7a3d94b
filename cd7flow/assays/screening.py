"""CD7 screening assay: is the leukaemia CD7-positive, under a named, versioned rule?

``screen_file(path, protocol)`` reads an FCS file, gates it with the protocol's
automated gate sequence (:mod:`cd7flow.assays.protocol_gating`), and returns one plain
record (see :data:`RESULT_KEYS`); ``plots_dir`` adds PNGs (:mod:`.screening_plots`).
Fitting and computing are separate steps: :func:`screening_record` recomputes the record
from a gated sample's current (possibly hand-edited) tree, as the viewer's panel does. Intensities (``*_mfi``) are medians of compensated
fluorescence in the file's linear channel units; percentages are 0-100. A result
that cannot be trusted is ``verdict = "not_evaluable"`` with a ``reason``, never a guess.

How a file is gated (nothing depends on channel order, fluorochrome or scale range):

1. markers are found by $PnS (aliases; :func:`cd7flow.protocol.resolve_markers`), the
   file's own spillover compensates them, and each fluorescence channel gets a logicle
   with T = its $PnR and W from its negative spread;
2. the protocol's gates are fitted in order on their parent's events: time-clean,
   cells (mixture on FSC/SSC), singlets (A/H band), viable (dye valley), CD45/SSC
   populations found relative to the lymphocytes, B and T/NK cells (robust reference
   thresholds against granulocytes), lineage refinement of the blasts;
3. two percentages of CD7+ blasts: ``cd7_pos_pct_threshold``, the conventional share at or
   above the protocol's percentile of CD7 on the negative reference populations (B cells,
   monocytes, granulocytes, minus anything CD3+ or CD56+) or of the FMO tube's blasts (Wilson
   CI); and ``cd7_pos_pct_expressing``, the share of blasts that *express* CD7
   (:mod:`gating.expressing`, reference chosen in :mod:`.screening_expressing`: the FMO's
   blasts with ``--fmo``, else the negative reference matched to the blasts' SSC and spill-in;
   percentile-bootstrap CI). A dim population straddles any cut, so the first reads low on
   it. ``[positivity].estimate`` names the one the verdict uses (``cd7_method``); it is
   ``cd7_pos_pct`` / ``cd7_pos_ci95``. The verdict applies the protocol's rule to it, and
   ``borderline`` is true (and the reason says so) when its 95% CI straddles the cut-off:
   the verdict keeps its side.

Record fields beyond :data:`RESULT_KEYS`: ``cd45_pos`` (denominator of ``blast_pct``),
``cd7_threshold`` (linear units) and ``cd7_threshold_scale`` (gating scale),
``threshold_reference``, ``expressing_reference`` and ``expressing_detail`` (the mixture's
components), ``gates`` (event count per population), ``channels`` (marker ->
$PnN), ``transforms``, ``notes`` (skipped gates, warnings), ``time_loss_pct``,
``sample_date`` ($DATE), ``path``, ``cd7flow_version``, ``plots``.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from gating.auto import PercentileThreshold
from gating.errors import GatingError
from gating.expressing import DEFAULT_METHOD as DEFAULT_ESTIMATE
from gating.expressing import borderline

from .. import __version__
from ..errors import NotEvaluable, ProtocolError
from ..protocol import Protocol, load_protocol, resolve_markers
from ..sample import Sample
from .protocol_gating import GatedSample, fitted_strategy, logicle_width, run_protocol_gates, sample_notes
from .screening_expressing import expressing_estimate
from .screening_plots import write_plots

# Gate fitting and plots live in their own modules; these names stay importable from here
# because callers (cd7flow.cli_screen, the tests) import them from the assay.
__all__ = [
    "RESULT_KEYS", "result_keys", "FMOTube", "NotEvaluable", "GatedSample", "run_protocol_gates", "fitted_strategy", "logicle_width",
    "write_plots", "screen_file", "screen_sample", "screening_record", "adjusted_gates", "reference_masks", "intensity_word", "wilson_interval", "robust_sd",
    "separation_index",
]


def result_keys(marker: str = "CD7") -> tuple[str, ...]:
    """Keys of every screening record for the screened ``marker`` (``[positivity].marker``), in
    output order (more keys follow: gates, channels, notes...). Marker keys are prefixed with the
    marker's name in lower case: ``cd7_pos_pct`` for CD7."""
    m = marker.lower()
    return (
        "file", "sha256", "protocol", "protocol_version", "protocol_sha256", "events", "viable_singlets", "cd45_pos",
        "blasts", "blast_pct", f"{m}_pos", f"{m}_pos_pct", f"{m}_pos_ci95", f"{m}_method", f"{m}_pos_pct_threshold",
        f"{m}_pos_ci95_threshold", f"{m}_pos_pct_expressing", f"{m}_pos_ci95_expressing", f"{m}_threshold",
        f"{m}_mfi_blasts", f"{m}_mfi_pos_blasts", "neg_ref_mfi", "neg_ref_events", "pos_ref_mfi", "pos_ref_events",
        "neg_ref_ratio", "pos_ref_ratio", "rd_fmo", "fmo_file", "fmo_sha256", "intensity", "rule", "verdict",
        "borderline", "reason",
    )


RESULT_KEYS = result_keys("CD7")
"""Keys of a CD7 screening record, in output order (see :func:`result_keys`)."""

Z95 = 1.959963984540054
DEFAULT_BOOTSTRAP = 200


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------
def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes of n, as percentages (0-100)."""
    if n <= 0:
        raise ValueError("Wilson interval needs n > 0")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def robust_sd(x: np.ndarray) -> float:
    """Robust SD: half the distance between the 15.87th and 84.13th percentiles (= SD for a normal)."""
    lo, hi = np.percentile(x, [15.865525393145708, 84.13447460685429])
    return float(hi - lo) / 2


def separation_index(stained: np.ndarray, fmo: np.ndarray) -> float:
    """RD = (MFI_stained - MFI_FMO) / (rSD_stained + rSD_FMO), medians and robust SDs in linear units."""
    spread = robust_sd(stained) + robust_sd(fmo)
    if spread <= 0:
        raise NotEvaluable("RD undefined: zero spread in the stained and FMO blasts")
    return (float(np.median(stained)) - float(np.median(fmo))) / spread


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


# ----------------------------------------------------------------------------------------------
# The assay
# ----------------------------------------------------------------------------------------------
def _marker(protocol: Protocol) -> str:
    return protocol.settings["positivity"]["marker"]


def _blank(sample_path: str, sha: str | None, protocol: Protocol) -> dict[str, Any]:
    marker = _marker(protocol)
    rec: dict[str, Any] = {k: None for k in result_keys(marker)}
    rec.update(file=os.path.basename(sample_path), sha256=sha, protocol=protocol.name,
               protocol_version=protocol.version, protocol_sha256=protocol.sha256,
               rule=f"{marker}+ blasts {protocol.rule.text} ({protocol.name} v{protocol.version})")
    rec.update(path=os.path.abspath(sample_path), cd7flow_version=__version__, notes=[], gates={}, channels={})
    return rec


def unreadable_record(path: str | os.PathLike, protocol: Protocol, error: Exception) -> dict[str, Any]:
    """The record of a file that could not be read at all, so a batch can go on and still list it.

    The verdict is "not_evaluable" with the read error as the reason; ``error`` holds the
    same text for scripts that tell "unreadable" from "not evaluable after gating".
    """
    rec = _blank(os.fspath(path), None, protocol)
    rec.update(verdict="not_evaluable", reason=f"file could not be read: {error}", error=str(error))
    return _round(rec)


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.6g}") if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_round(x) for x in v]
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return v


def screen_sample(sample: Sample, protocol: Protocol, fmo: "Sample | FMOTube | None" = None,
                  plots_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Screen one sample (and its FMO tube, if given). Returns the result record.

    Give a batch one :class:`FMOTube` so the FMO is gated once, not once per sample.
    """
    rec, fmo = _start(sample, protocol, fmo)
    try:
        g = _fit(sample, protocol, rec)
        _compute(g, protocol, fmo, rec, plots_dir)
    except NotEvaluable as exc:
        rec["verdict"] = "not_evaluable"
        rec["reason"] = str(exc)
    return _round(rec)


def _start(sample: Sample, protocol: Protocol, fmo: "Sample | FMOTube | None") -> tuple[dict, "FMOTube | None"]:
    """The record's sample-level fields (before any gate), and the FMO as an :class:`FMOTube`."""
    if protocol.assay != "screening" or protocol.rule is None:
        raise ProtocolError(protocol.path, f"protocol {protocol.name} is a {protocol.assay!r} protocol, "
                                           "not a screening one")
    if isinstance(fmo, Sample):
        fmo = FMOTube(fmo, protocol)
    rec = _blank(sample.path or sample.name, sample.sha256, protocol)
    rec["events"] = sample.n_events
    rec["sample_date"] = sample.metadata.get("$DATE")
    if fmo is not None:
        rec["fmo_file"] = os.path.basename(fmo.sample.path or fmo.sample.name)
        rec["fmo_sha256"] = fmo.sample.sha256
    return rec, fmo


def _fit(sample: Sample, protocol: Protocol, rec: dict) -> GatedSample:
    """Fit the protocol's gates (the file's notes go into ``rec``); NotEvaluable when a required marker is missing."""
    rec["notes"] = sample_notes(sample, protocol)
    _mapping, missing = resolve_markers(sample, protocol)
    required = [m for m in protocol.markers.values() if m.required and m.name in missing]
    if required:
        raise NotEvaluable(f"marker missing: {', '.join(m.name for m in required)} (not found in $PnS of "
                           f"{sample.name})")
    return run_protocol_gates(sample, protocol)


def screening_record(gated: GatedSample, protocol: Protocol | None = None, fmo: "Sample | FMOTube | None" = None,
                     adjusted: "list[str] | tuple[str, ...]" = ()) -> dict[str, Any]:
    """The screening record computed from ``gated``'s *current* tree (e.g. after a gate was edited).

    Nothing is refitted: counts, references, thresholds and percentages come from the masks of
    ``gated.tree`` (its cache is dropped first, so an edited tree is re-evaluated). The record
    is :func:`screen_sample`'s plus ``manually_adjusted`` and ``adjusted_gates``: the paths
    ("/a/b") whose gate differs from what the protocol fitted (:func:`adjusted_gates`), and
    any path given in ``adjusted`` (e.g. the viewer's edit log). A protocol population whose
    gate was removed from the tree makes the record not evaluable, with that reason.
    """
    protocol = protocol or gated.protocol
    rec, fmo = _start(gated.sample, protocol, fmo)
    rec["notes"] = sample_notes(gated.sample, protocol)
    gated.invalidate()
    changed = sorted(set(adjusted_gates(gated)) | set(adjusted))
    try:
        _compute(gated, protocol, fmo, rec, None)
    except NotEvaluable as exc:
        rec["verdict"] = "not_evaluable"
        rec["reason"] = str(exc)
    except GatingError as exc:  # a protocol population's gate is gone from the edited tree
        rec["verdict"] = "not_evaluable"
        rec["reason"] = f"gates edited: {exc}"
    rec["manually_adjusted"] = bool(changed)
    rec["adjusted_gates"] = changed
    if changed and rec["reason"]:
        rec["reason"] += f"; manually adjusted gates: {', '.join(changed)}"
    return _round(rec)


def adjusted_gates(gated: GatedSample) -> list[str]:
    """Paths ("/a/b") of the tree's gates whose geometry differs from what the protocol's
    estimators fitted (a gate the user dragged), in tree order; gates the protocol did not
    fit (drawn by hand) are not listed, nor boolean gates (no geometry: the tree rewrites
    their operands as paths, and an edit reaches them through their operands)."""
    fitted: dict[str, object] = {}
    for gate_id, est in gated.estimators.items():
        tree_gates = getattr(est, "tree_gates", None)
        try:
            for gate in (tree_gates(gate_id) if tree_gates else []):
                fitted[gate.id] = gate
        except (GatingError, ValueError):
            continue
    return [pop.path_str for pop in gated.tree.populations()
            if pop.gate.dimensions and pop.gate.id in fitted and not _same_geometry(pop.gate, fitted[pop.gate.id])]


def _same_geometry(a: object, b: object) -> bool:
    """Same gate class and the same attribute values (arrays compared by value)."""
    if a is b:
        return True
    if type(a) is not type(b) or vars(a).keys() != vars(b).keys():
        return False
    for key, va in vars(a).items():
        vb = vars(b)[key]
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            if not np.array_equal(np.asarray(va), np.asarray(vb)):
                return False
        elif va is not vb:
            try:
                if va != vb:
                    return False
            except ValueError:  # a container of arrays: not one the fit shares, so rebuilt
                return False
    return True


def _compute(g: GatedSample, protocol: Protocol, fmo: "FMOTube | None", rec: dict, plots_dir) -> None:
    """Every gate-dependent field of the record, from the masks of ``g``'s tree."""
    s = protocol.settings
    pos_cfg, inten, qc = s["positivity"], s["intensity"], s["qc"]
    sample = g.sample
    rec["channels"] = g.channels
    rec["transforms"] = g.transforms
    rec["gates"] = {name: g.count(name) for name in g.masks if name != "root"}
    rec["notes"] += [f"gate {k} skipped: {v}" for k, v in g.skipped.items()]
    singlet_gates = [x for x in protocol.gates if x.method == "singlets"]
    if singlet_gates and all(x.id in g.skipped for x in singlet_gates):
        rec["notes"].append("no doublet discrimination: doublets in the reference populations can raise the "
                            "positivity threshold")

    viable_key = _last_of(protocol, ("viability", "singlets"))
    rec["viable_singlets"] = g.count(viable_key)
    cd45_pos = g.masks[viable_key] & ~g.masks.get("cd45_negative", np.zeros(sample.n_events, bool))
    rec["cd45_pos"] = int(np.count_nonzero(cd45_pos))
    time_gate = next((x for x in protocol.gates if x.method == "time_clean"), None)
    if time_gate is not None and time_gate.id not in g.skipped:
        loss = 100.0 * (1 - g.count(time_gate.id) / max(sample.n_events, 1))
        rec["time_loss_pct"] = loss
        if loss > qc["max_time_loss_pct"]:
            raise NotEvaluable(f"failed QC: the time gate dropped {loss:.1f}% of events "
                               f"(> {qc['max_time_loss_pct']}%)")
    if rec["viable_singlets"] < qc["min_viable_singlets"]:
        raise NotEvaluable(f"failed QC: {rec['viable_singlets']} viable singlets (< {qc['min_viable_singlets']:g})")

    population = pos_cfg["population"]
    blasts = g.masks[population]
    rec["blast_population"] = population
    rec["blasts"] = int(np.count_nonzero(blasts))
    rec["blast_pct"] = 100.0 * rec["blasts"] / rec["cd45_pos"] if rec["cd45_pos"] else None
    if rec["blasts"] < qc["min_blasts"]:
        raise NotEvaluable(f"too few blasts: {rec['blasts']} gated (< {qc['min_blasts']:g})")

    marker = pos_cfg["marker"]
    marker_linear = g.linear(marker)
    marker_blasts = marker_linear[blasts]
    neg_mask, pos_mask = reference_masks(g, pos_cfg, blasts)
    for p in pos_cfg["negative_reference"] + pos_cfg["positive_reference"]:
        if p in g.skipped:
            rec["notes"].append(f"reference {p} unavailable: {g.skipped[p]}")
    rec["neg_ref_events"] = int(np.count_nonzero(neg_mask))
    rec["pos_ref_events"] = int(np.count_nonzero(pos_mask))
    min_ref = int(pos_cfg.get("min_reference_events", 100))

    fmo_blasts = fmo_scale = None
    if fmo is not None:
        fmo_blasts, fmo_scale = fmo.blast_values(g)
        rec["rd_fmo"] = separation_index(marker_blasts, fmo_blasts)
        rec["fmo_blasts"] = int(fmo_blasts.size)

    pct = pos_cfg["percentile"]
    scale = g.values(marker)  # the gating scale (transformed): thresholds live there, like any gate
    if pos_cfg["method"] == "fmo_percentile":
        if fmo_blasts is None:
            raise NotEvaluable("the protocol sets positivity by an FMO tube, and none was given (--fmo)")
        reference = fmo_scale
        rec["threshold_reference"] = f"{pct}th percentile of {marker} on FMO blasts ({fmo_blasts.size} events)"
    else:
        if rec["neg_ref_events"] < min_ref:
            raise NotEvaluable(f"negative reference ({' + '.join(pos_cfg['negative_reference'])}) has "
                               f"{rec['neg_ref_events']} events (< {min_ref})")
        reference = scale[neg_mask]
        rec["threshold_reference"] = (f"{pct}th percentile of {marker} on "
                                      f"{' + '.join(pos_cfg['negative_reference'])} ({reference.size} events)")
    thr = PercentileThreshold(g.dimensions[marker], percentile=pct, min_reference_events=min(min_ref, 50),
                              gate_id=f"{marker}_positive")
    thr.fit(reference)
    positive = thr.predict(scale[blasts])
    k, n = int(np.count_nonzero(positive)), int(marker_blasts.size)
    m = marker.lower()  # record keys follow the screened marker: cd7_pos_pct for CD7
    xf = g.source.transforms.get(g.dimensions[marker].transform)
    rec[f"{m}_threshold"] = float(xf.inverse(np.array([thr.threshold_]))[0]) if xf is not None else thr.threshold_
    rec[f"{m}_threshold_scale"] = thr.threshold_
    rec[f"{m}_pos"] = k
    rec[f"{m}_pos_pct_threshold"] = 100.0 * k / n
    rec[f"{m}_pos_ci95_threshold"] = list(wilson_interval(k, n))
    estimate = pos_cfg.get("estimate", DEFAULT_ESTIMATE)
    expressing, described = expressing_estimate(
        g, marker, blasts, neg_mask, fmo_blasts, estimate if estimate != "threshold" else DEFAULT_ESTIMATE,
        int(pos_cfg.get("bootstrap", DEFAULT_BOOTSTRAP)), min_ref)
    rec[f"{m}_pos_pct_expressing"] = expressing.pct
    rec[f"{m}_pos_ci95_expressing"] = list(expressing.ci95)
    rec["expressing_reference"] = described
    rec["expressing_detail"] = {"method": expressing.method, **expressing.detail}
    rec[f"{m}_method"] = estimate
    used = "threshold" if estimate == "threshold" else "expressing"
    rec[f"{m}_pos_pct"] = rec[f"{m}_pos_pct_{used}"]
    rec[f"{m}_pos_ci95"] = rec[f"{m}_pos_ci95_{used}"]
    rec[f"{m}_mfi_blasts"] = float(np.median(marker_blasts))
    rec[f"{m}_mfi_pos_blasts"] = float(np.median(marker_blasts[positive])) if k else None
    rec["neg_ref_mfi"] = float(np.median(marker_linear[neg_mask])) if rec["neg_ref_events"] else None
    rec["pos_ref_mfi"] = float(np.median(marker_linear[pos_mask])) if rec["pos_ref_events"] else None
    rec["neg_ref_ratio"] = _ratio(rec[f"{m}_mfi_blasts"], rec["neg_ref_mfi"])
    rec["pos_ref_ratio"] = _ratio(rec[f"{m}_mfi_blasts"], rec["pos_ref_mfi"])
    if rec["pos_ref_events"] < min_ref:
        rec["notes"].append(f"positive reference has {rec['pos_ref_events']} events (< {min_ref}): "
                            "intensity is judged without it")
    rec["intensity"] = intensity_word(rec[f"{m}_pos_pct"], rec[f"{m}_mfi_pos_blasts"],
                                      rec["pos_ref_mfi"] if rec["pos_ref_events"] >= min_ref else None, inten)
    rec["verdict"] = "positive" if protocol.rule.passes(rec[f"{m}_pos_pct"]) else "negative"
    rec["borderline"] = borderline(rec[f"{m}_pos_ci95"], protocol.rule)
    what = {"threshold": f"above the {pct}th percentile of the reference",
            "mixture": "expressing, two-component mixture", "overton": "expressing, Overton subtraction"}[estimate]
    rec["reason"] = (f"{rec[f'{m}_pos_pct']:.1f}% {marker}+ blasts ({what}; 95% CI {rec[f'{m}_pos_ci95'][0]:.1f}-"
                     f"{rec[f'{m}_pos_ci95'][1]:.1f}) {'meets' if rec['verdict'] == 'positive' else 'fails'} "
                     f"rule {protocol.rule.text}")
    if rec["borderline"]:
        rec["reason"] += (f"; borderline: the 95% CI straddles the cut-off {protocol.rule.value:g}%, "
                          f"so the call could go either way")
    if plots_dir is not None:
        rec["plots"] = write_plots(g, protocol, rec, blasts, neg_mask, pos_mask, plots_dir)


def reference_masks(g: GatedSample, pos_cfg: dict[str, Any], blasts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(negative, positive) reference events of the protocol's ``[positivity]``, blasts excluded."""
    neg_mask = np.logical_or.reduce([g.masks[p] for p in pos_cfg["negative_reference"]]) & ~blasts
    # A few NK or T cells inside a granulocyte/monocyte gate are enough to move a 99.5th
    # percentile: events carrying the positive reference's markers (CD3, CD56) are never
    # negative reference, wherever they sit on CD45/SSC.
    for p in pos_cfg["positive_reference"]:
        if p in g.marker_positive:
            neg_mask &= ~g.marker_positive[p]
    pos_mask = np.logical_or.reduce([g.masks[p] for p in pos_cfg["positive_reference"]]) & ~blasts
    return neg_mask, pos_mask


def intensity_word(pos_pct: float, mfi_pos_blasts: float | None, pos_ref_mfi: float | None,
                   rules: dict[str, float]) -> str:
    """Bethesda-style word from % positive blasts and the CD7+ blasts' median vs the positive reference.

    Order of the rules: too few positive blasts -> "negative"; positive blasts clearly
    dimmer than normal T/NK cells -> "dim" (whatever their fraction: a dim marker on part of
    the blasts is still reported as dim, the fraction is in cd7_pos_pct); otherwise a fraction
    below the partial cut-off -> "partial"; otherwise "bright" when the blasts are about as
    bright as normal T/NK cells, "positive" in between. Without a positive reference the
    intensity cannot be judged: "partial" or "positive" by fraction alone.
    """
    if pos_pct < rules["negative_below_pct"]:
        return "negative"
    ratio = _ratio(mfi_pos_blasts, pos_ref_mfi)
    if ratio is not None and ratio < rules["dim_below_pos_ratio"]:
        return "dim"
    if pos_pct < rules["partial_below_pct"]:
        return "partial"
    if ratio is None:
        return "positive"
    if ratio > rules["bright_above_pos_ratio"]:
        return "bright"
    return "positive"


def _last_of(protocol: Protocol, methods: tuple[str, ...]) -> str:
    for method in methods:
        for spec in reversed(protocol.gates):
            if spec.method == method:
                return spec.id
    return "root"


class FMOTube:
    """An FMO tube (the screened marker left out), read once and gated once per batch.

    The FMO's blasts are gated from its own data. Its left-out marker often has an empty
    $PnS, so the marker borrows the stained tube's $PnN (the sample itself is never
    modified); the gated result is kept per borrowed channel, so a batch gates the FMO once.
    """

    def __init__(self, sample: Sample, protocol: Protocol):
        self.sample = sample
        self.protocol = protocol
        self._gated: dict[str | None, GatedSample | NotEvaluable] = {}

    def gated(self, stained: GatedSample) -> GatedSample:
        marker = _marker(self.protocol)
        mapping, missing = resolve_markers(self.sample, self.protocol)
        borrowed = stained.channels.get(marker) if marker in missing else None
        if borrowed not in self.sample.channels:
            borrowed = None
        if borrowed not in self._gated:
            try:
                self._gated[borrowed] = run_protocol_gates(self.sample, self.protocol,
                                                           {marker: borrowed} if borrowed else None)
            except NotEvaluable as exc:
                self._gated[borrowed] = NotEvaluable(f"FMO {self.sample.name}: {exc}")
        found = self._gated[borrowed]
        if isinstance(found, NotEvaluable):
            raise found
        return found

    def blast_values(self, stained: GatedSample) -> tuple[np.ndarray, np.ndarray]:
        """The marker on the FMO's blasts: (linear, compensated) and on the stained tube's gating
        scale (its transform, so thresholds compare like for like)."""
        marker = _marker(self.protocol)
        g = self.gated(stained)
        if marker not in g.dimensions:
            raise NotEvaluable(f"FMO {self.sample.name}: no channel for {marker}")
        vals = g.linear(marker)[g.masks[self.protocol.settings["positivity"]["population"]]]
        if vals.size < self.protocol.settings["qc"]["min_blasts"]:
            raise NotEvaluable(f"FMO {self.sample.name}: too few blasts ({vals.size})")
        xf = stained.source.transforms.get(stained.dimensions[marker].transform)
        return vals, (np.asarray(xf.apply(vals), dtype=np.float64) if xf is not None else vals)


def screen_file(path: str | os.PathLike, protocol: Protocol | str = "screening", fmo_path=None,
                plots_dir=None, fmo: FMOTube | None = None) -> dict[str, Any]:
    """Read and screen one FCS file (and its FMO: ``fmo_path``, or an :class:`FMOTube` already
    read, which a batch shares). Unreadable files raise FCSError."""
    from ..io.fcs_read import read_fcs

    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    if fmo is None and fmo_path is not None:
        fmo = FMOTube(read_fcs(fmo_path), protocol)
    sample = read_fcs(path)
    rec = screen_sample(sample, protocol, fmo, plots_dir)
    rec["sha256"] = sample.sha256
    if fmo is not None:
        rec["fmo_sha256"] = fmo.sample.sha256
    return rec

