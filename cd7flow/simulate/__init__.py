"""Deterministic simulator of the demo study (screening, CAR-T follow-up, MRD tubes).

``cd7flow simulate OUTDIR --seed N`` writes FCS 3.1 files shaped like a BD cytometer's
plus ``manifest.csv`` and ``truth.json``; the same seed gives byte-identical files
(nothing is taken from the clock: $DATE/$BTIM come from the study calendar).
In Python, :func:`simulate_tube` makes one tube from a :class:`TubeSpec` (any channel
order, fluorochromes, scale range, proportions) and returns per-event labels.

How a tube is made
------------------
1. Event categories are drawn with one multinomial: debris, doublets, dead cells,
   counting beads and viable single leukocytes split by the tube's composition
   (T, NK, B, mono, gran, blast, CAR-T...).
2. Each event gets a *true* (unmixed) intensity per marker: autofluorescence for a
   negative marker, log-normal around the population's median for a positive one.
   Intensities are in channel units of a 262,144 scale; other $PnR scales multiply.
3. Fluorescence is mixed with the spillover matrix (``raw = true @ S``, row = spilling
   fluorochrome) and detector noise is added (electronic Gaussian + photon-count
   variance proportional to the signal), so compensated negatives spread around 0 with
   negative values, as on real instruments. $SPILLOVER holds S; compensating with it
   recovers the truth up to that noise. Values above $PnR - 1 are clipped (margin events).
4. Events are acquired in random order at a steady rate; the Time channel is in units
   of $TIMESTEP (0.01 s). A clog is a gap with no events followed by a burst.

CD7 positivity (what the labels and truth call "CD7+")
------------------------------------------------------
An event is CD7-positive when it was *drawn* as CD7-expressing: blasts express CD7 with
probability ``cd7_fraction`` (drawn per cell), normal T and NK cells always, CD7-negative
T cells, CAR-T, B cells, monocytes and granulocytes never; a doublet when either cell
does. Truth reports this realised fraction: the fraction of blasts that express CD7,
whatever their intensity. A tube without CD7 reagent (FMO) has no CD7-positive event.
For comparison, ``cd7_threshold_true`` is the 99.5th percentile of the true CD7 of the
tube's negative reference populations (B cells, monocytes, granulocytes, in the tube's
proportions; exact, from the model) and ``cd7_above_threshold_true`` counts blasts above
it (the conventional cut, applied to noiseless values). Bright CD7 (T-ALL, normal T/NK)
sits ~45x above that cut and "dim" ~5x, so both counts agree there; "faint" CD7 (median
~10x the compensated negative spread of the blasts, issue 9's dim) straddles a cut on
measured values, where the share above it undercounts the expressing blasts.

truth.json schema (schema_version 2; version 1 defined CD7+ by the threshold)
------------------------------------
Top level::

    {"schema_version": 1, "simulator": "cd7flow.simulate", "simulator_version": str,
     "seed": int, "files": {file_name: <tube truth>, ...}}

<tube truth> (counts are event counts in the file; percentages are 0-100 floats)::

    file, patient, tube ("screening" | "fmo" | "car" | "mrd"), specimen ("PB" | "BM"),
    diagnosis ("T-ALL" | "AML"), collection_date (ISO), infusion_date (ISO or null),
    study_day (int days from infusion, negative before; null for screening without
    an infusion), panel (name), seed (the tube's own seed),
    total_events,
    counts: {debris, doublets, dead, beads, viable_singlets,
             T, T_cd7_positive, T_cd7_negative, car_t, NK, B, mono, gran, blasts}
        viable_singlets = every live single leukocyte (beads, debris, doublets and
        dead cells excluded); all of them are CD45+ (blasts CD45-dim), so it is also
        the "viable CD45+" denominator. T = all non-leukemic CD3+ T cells
        = T_cd7_positive + T_cd7_negative + car_t (normal CD7-negative T cells are
        T_cd7_negative; CAR-T cells are CD7 knock-out and counted only in car_t).
    blasts: {count, pct_of_viable_cd45, requested_pct_of_viable_cd45, lineage,
             cd7_positive, cd7_positive_pct_of_blasts, requested_cd7_fraction,
             cd7_intensity ("bright" | "dim" | "faint" | "negative"), cd7_threshold_true,
             cd7_above_threshold_true, cd7_above_threshold_true_pct_of_blasts}
        cd7_positive = blasts drawn CD7-expressing (the realised labels above);
        percentages are null when there are no blasts.
    car: {car_t, cd3_t, car_pct_of_cd3, bead_events, beads_per_test,
          sample_volume_ul, car_t_per_ul, cd3_t_per_ul, t_cd7_negative_per_ul,
          t_cd7_positive_per_ul}
        *_per_ul = (cell events / bead events) x (beads_per_test / sample_volume_ul),
        from the realised counts; null without beads (screening/MRD tubes).
        car_pct_of_cd3 = 100 x car_t / T (null when T is 0).
    clog: null, or {gap_start_s, gap_end_s, burst_end_s, burst_events,
          gap_start_time, gap_end_time, burst_end_time} (seconds from the start of
          acquisition, and the same in Time-channel units).
    spillover: {channels: [$PnN...], matrix: [[row]...]} exactly as in $SPILLOVER.
    channels: [$PnN...], markers: [$PnS...] as written (unstained channels: "").

Per-event labels (:class:`EventLabels`, only from :func:`simulate_tube`): population
code per event in file order (names in ``POPULATIONS``), ``cd7_positive`` (realised
labels above), ``cd7_above_threshold`` (the threshold rule), ``car_positive``, ``in_clog_burst``.
"""
from __future__ import annotations

from .model import FULL_PANEL, PB_CAR_PANEL, POPULATIONS, spillover_for  # noqa: E402
from .study import SCHEMA_VERSION, SIMULATOR_VERSION, simulate_study, study_tubes  # noqa: E402
from .tube import ClogSpec, EventLabels, TubeSpec, simulate_tube  # noqa: E402

__all__ = ["SCHEMA_VERSION", "SIMULATOR_VERSION", "TubeSpec", "ClogSpec", "EventLabels", "simulate_tube",
           "simulate_study", "study_tubes", "POPULATIONS", "FULL_PANEL", "PB_CAR_PANEL", "spillover_for"]
