"""The demo study: which tubes exist, their calendar, and writing them to a folder."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..outputs import atomic_output, ensure_output_dir
from . import model as M
from .tube import ClogSpec, TubeSpec, check_seed, simulate_tube

SCHEMA_VERSION = 2
"""2: CD7+ = realised expression labels (1: a threshold on the true values); new
``cd7_above_threshold_true*`` fields keep the threshold count for comparison."""

SIMULATOR_VERSION = "1.0"

CAR_DAYS = (0, 4, 7, 10, 14, 21, 28, 60, 90, 180)
BEADS_PER_TEST = 50000
BLOOD_VOLUME_UL = 50.0
EVENTS = {"screening": 25000, "fmo": 25000, "mrd": 40000, "car": 7000, "screening_extra": 10000}
"""Events per tube: keeps every file <= 60,000 events and the folder under 25 MB
("screening_extra": the screening-only patients added for dim and partial CD7)."""

MARROW = {"T": 0.10, "NK": 0.03, "B": 0.05, "mono": 0.08, "gran": 0.74}

# Blood after the infusion, by day: leukocytes/uL, T and NK shares of leukocytes,
# CAR+ share of T (patient-scaled), CD7-negative share of the other T cells.
# Lymphodepletion empties the blood at days 0-4; CAR-T expand to a peak at day 10-14;
# CD7+ T and NK cells fall (fratricide) while CD7-negative T cells expand.
WBC_PER_UL = {0: 600, 4: 400, 7: 900, 10: 2200, 14: 3500, 21: 4200, 28: 4800, 60: 5500, 90: 5800, 180: 6200}
T_SHARE = {0: 0.10, 4: 0.12, 7: 0.25, 10: 0.45, 14: 0.50, 21: 0.40, 28: 0.32, 60: 0.25, 90: 0.22, 180: 0.22}
NK_SHARE = {0: 0.05, 4: 0.04, 7: 0.03, 10: 0.02, 14: 0.015, 21: 0.015, 28: 0.02, 60: 0.03, 90: 0.04, 180: 0.05}
CAR_OF_T = {0: 0.0, 4: 0.02, 7: 0.18, 10: 0.48, 14: 0.62, 21: 0.40, 28: 0.25, 60: 0.10, 90: 0.05, 180: 0.02}
CD7NEG_OF_T = {0: 0.05, 4: 0.06, 7: 0.10, 10: 0.18, 14: 0.25, 21: 0.32, 28: 0.38, 60: 0.45, 90: 0.45, 180: 0.40}


@dataclass(frozen=True)
class Patient:
    pid: str
    diagnosis: str  # "T-ALL" | "AML"
    screening_blast_pct: float
    cd7_fraction: float
    cd7_intensity: str
    screening_date: dt.date
    infusion_date: dt.date | None
    car_scale: float = 1.0
    # day -> (blast % of leukocytes, CD7+ fraction of those blasts) in blood after the infusion
    blood_blasts: tuple[tuple[int, float, float], ...] = ()
    mrd: tuple[float, float, str, bool] | None = None  # (blast %, CD7+ fraction, intensity, clog)
    screening_events: int = EVENTS["screening"]


PATIENTS = (
    Patient("P01", "T-ALL", 62.0, 0.98, "bright", dt.date(2024, 2, 12), dt.date(2024, 3, 4), 1.0,
            blood_blasts=((90, 3.0, 0.0), (180, 9.0, 0.0)),  # CD7-negative relapse (antigen escape)
            mrd=(0.05, 0.10, "bright", False)),
    Patient("P02", "T-ALL", 48.0, 0.45, "bright", dt.date(2024, 3, 25), dt.date(2024, 4, 15), 0.8,
            mrd=(1.5, 0.20, "bright", True)),
    Patient("P03", "AML", 55.0, 0.30, "dim", dt.date(2024, 4, 29), dt.date(2024, 5, 20), 0.5,
            mrd=(12.0, 0.30, "dim", False)),
    Patient("P04", "AML", 70.0, 0.03, "bright", dt.date(2024, 6, 10), None),  # CD7-negative: not infused
    # Screening only (appended, so every earlier file keeps its bytes): CD7 that straddles
    # the conventional cut. "faint" = median ~10x the negative spread (issue 9's dim).
    Patient("P05", "AML", 60.0, 0.92, "faint", dt.date(2024, 7, 8), None,
            screening_events=EVENTS["screening_extra"]),  # dim, nearly all blasts express CD7
    Patient("P06", "AML", 50.0, 0.31, "faint", dt.date(2024, 8, 5), None,
            screening_events=EVENTS["screening_extra"]),  # dim and partial, next to a "> 30" cut-off
    Patient("P07", "T-ALL", 45.0, 0.60, "dim", dt.date(2024, 9, 2), None,
            screening_events=EVENTS["screening_extra"]),  # partial, dim
)


@dataclass(frozen=True)
class StudyTube:
    file: str
    patient: Patient
    tube: str
    specimen: str
    collection_date: dt.date
    spec: TubeSpec

    @property
    def study_day(self) -> int | None:
        inf = self.patient.infusion_date
        return None if inf is None else (self.collection_date - inf).days


def study_tubes() -> list[StudyTube]:
    """Every tube of the demo study, in a fixed order."""
    tubes: list[StudyTube] = []
    for p in PATIENTS:
        screen = TubeSpec(
            name="screening", n_events=p.screening_events, composition=MARROW, blast_pct=p.screening_blast_pct,
            lineage=p.diagnosis, cd7_fraction=p.cd7_fraction, cd7_intensity=p.cd7_intensity,
            cd34_fraction=0.4 if p.diagnosis == "T-ALL" else 0.9,
        )
        tubes.append(StudyTube(f"{p.pid}_screening_BM.fcs", p, "screening", "BM", p.screening_date, screen))
        if p.pid == "P01":
            fmo = replace(screen, name="FMO CD7", n_events=EVENTS["fmo"], unstained=("CD7",))
            tubes.append(StudyTube(f"{p.pid}_FMO-CD7_BM.fcs", p, "fmo", "BM", p.screening_date, fmo))
        if p.infusion_date is None:
            continue
        blood_blasts = {day: (pct, frac) for day, pct, frac in p.blood_blasts}
        for day in CAR_DAYS:
            pct, frac = blood_blasts.get(day, (0.0, 0.0))
            t_share, nk_share = T_SHARE[day], NK_SHARE[day]
            spec = TubeSpec(
                name=f"CAR D{day}", n_events=EVENTS["car"], panel=M.PB_CAR_PANEL,
                composition={"T": t_share, "NK": nk_share, "B": 0.03, "mono": 0.08,
                             "gran": 1 - t_share - nk_share - 0.11},
                blast_pct=pct, lineage=p.diagnosis, cd7_fraction=frac, cd7_intensity="bright",
                car_fraction_of_t=min(0.9, CAR_OF_T[day] * p.car_scale), t_cd7neg_fraction=CD7NEG_OF_T[day],
                beads_per_test=BEADS_PER_TEST, sample_volume_ul=BLOOD_VOLUME_UL, wbc_per_ul=WBC_PER_UL[day],
                debris_fraction=0.03, doublet_fraction=0.02, dead_fraction=0.03,
            )
            date = p.infusion_date + dt.timedelta(days=day)
            tubes.append(StudyTube(f"{p.pid}_CAR_PB_D{day:03d}.fcs", p, "car", "PB", date, spec))
        if p.mrd is not None:
            pct, frac, intensity, clog = p.mrd
            spec = TubeSpec(
                name="MRD D28", n_events=EVENTS["mrd"], composition=MARROW, blast_pct=pct, lineage=p.diagnosis,
                cd7_fraction=frac, cd7_intensity=intensity, car_fraction_of_t=0.3,
                t_cd7neg_fraction=0.35, clog=ClogSpec() if clog else None,
            )
            date = p.infusion_date + dt.timedelta(days=28)
            tubes.append(StudyTube(f"{p.pid}_MRD_BM_D028.fcs", p, "mrd", "BM", date, spec))
    return tubes


def tube_seed(seed: int, file: str) -> int:
    """A per-tube seed from the study seed and the file name (adding a tube moves no other)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(file.encode())]).generate_state(1)[0])


MANIFEST_COLUMNS = ("file", "patient", "tube", "specimen", "collection_date", "infusion_date", "study_day",
                    "beads_per_test", "sample_volume_ul", "diagnosis", "panel")


def simulate_study(outdir: str | os.PathLike, seed: int = 7) -> dict:
    """Write every study tube, manifest.csv and truth.json into ``outdir``; return the truth.

    Deterministic: the same seed gives byte-identical files. The seed is checked
    before the folder is created, so a bad seed leaves nothing behind.
    """
    from .. import __version__
    from ..io.fcs_write import write_fcs

    seed = check_seed(seed)
    out = ensure_output_dir(outdir)
    files: dict[str, dict] = {}
    rows = []
    for k, st in enumerate(study_tubes()):
        s_seed = tube_seed(seed, st.file)
        btim = dt.datetime.combine(st.collection_date, dt.time(9, 0)) + dt.timedelta(minutes=7 * (k % 40))
        spec = replace(st.spec, metadata={
            "$DATE": st.collection_date.strftime("%d-%b-%Y").upper(), "$BTIM": btim.strftime("%H:%M:%S"),
            "$FIL": st.file, "$SRC": f"{st.patient.pid} {st.specimen}", "$INST": "cd7flow demo laboratory",
            "EXPERIMENT NAME": f"CD7 CAR-T demo {st.patient.pid}", "$SMNO": f"{st.patient.pid}-{st.tube}",
        })
        sample, truth, _ = simulate_tube(spec, s_seed)
        duration = float(sample.values("Time").max()) * spec.timestep_s
        etim = btim + dt.timedelta(seconds=int(np.ceil(duration)))
        write_fcs(out / st.file, sample, metadata={
            "$ETIM": etim.strftime("%H:%M:%S"), "$ORIGINALITY": "Original",
            "CD7FLOW_SIMULATOR": f"cd7flow.simulate {SIMULATOR_VERSION} (cd7flow {__version__})",
            "CD7FLOW_SIM_SEED": f"{seed}/{s_seed}",
        })
        panel = "PB CAR 11-colour" if st.spec.panel == M.PB_CAR_PANEL else "BM 14-colour"
        row = {
            "file": st.file, "patient": st.patient.pid, "tube": st.tube, "specimen": st.specimen,
            "collection_date": st.collection_date.isoformat(),
            "infusion_date": st.patient.infusion_date.isoformat() if st.patient.infusion_date else "",
            "study_day": "" if st.study_day is None else st.study_day,
            "beads_per_test": spec.beads_per_test or "", "sample_volume_ul": spec.sample_volume_ul if spec.beads_per_test else "",
            "diagnosis": st.patient.diagnosis, "panel": panel,
        }
        rows.append(row)
        files[st.file] = {
            "file": st.file, "patient": st.patient.pid, "tube": st.tube, "specimen": st.specimen,
            "diagnosis": st.patient.diagnosis, "collection_date": row["collection_date"],
            "infusion_date": row["infusion_date"] or None, "study_day": st.study_day, "panel": panel, **truth,
        }
    truth_all = {"schema_version": SCHEMA_VERSION, "simulator": "cd7flow.simulate", "simulator_version": SIMULATOR_VERSION,
                 "seed": seed, "files": files}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_text(out / "manifest.csv", buf.getvalue())
    _atomic_text(out / "truth.json", json.dumps(truth_all, indent=1) + "\n")
    return truth_all


def _atomic_text(path: Path, text: str) -> None:
    with atomic_output(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
