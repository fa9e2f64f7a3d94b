"""Viewer sessions (cd7flow/workstation/session.py and File > Open/Save session).

References: counts of the reloaded gates against the gates that were saved, re-applied by
``GatingStrategy.apply`` (the CLI's ``gate`` path); sha256 against hashlib over the file's bytes.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cd7flow.errors import CD7FlowError, SessionError
from cd7flow.io.fcs_read import read_fcs
from cd7flow.workstation.autogate import run_autogate
from cd7flow.workstation.session import (
    SCHEMA_VERSION, GateSet, Session, load_session, read_session, sample_entry, save_session, strategy_to_gatingml,
)

REPO = Path(__file__).resolve().parents[1]
SCREENING = REPO / "sample_fcs" / "P01_screening_BM.fcs"
CAR = REPO / "sample_fcs" / "P01_CAR_PB_D014.fcs"


@pytest.fixture
def study(tmp_path) -> dict[str, Path]:
    """Copies of two demo tubes (the tests move and change them; the demo study stays as it is)."""
    folder = tmp_path / "study"
    folder.mkdir()
    return {p.name: Path(shutil.copy(p, folder / p.name)) for p in (SCREENING, CAR)}


@pytest.fixture(scope="module")
def fitted():
    return run_autogate(read_fcs(SCREENING))


def _session(study, fitted) -> Session:
    samples = [sample_entry(read_fcs(p)) for p in study.values()]
    gml = strategy_to_gatingml(fitted.strategy)
    entries = [{"path": pop.path_str, "automated": True, "source": "screening"} for pop in fitted.tree.populations()]
    return Session(samples, 0, GateSet(gml, entries, gml, 0, fitted.provenance()), [], {"plots": []}, "screening")


def test_saved_session_reloads_files_and_the_same_gates(study, fitted, tmp_path):
    out = save_session(_session(study, fitted), tmp_path / "s.cd7session.json")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # atomic: no temporary left
    data = json.loads(out.read_text())
    assert data["schema"] == "cd7flow-session" and data["schema_version"] == SCHEMA_VERSION
    for row, path in zip(data["samples"], study.values()):
        assert row["path"] == str(path.absolute())
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_session(out)
    assert [s.path for s in loaded.samples] == [str(p) for p in study.values()]
    result = loaded.gates.apply(loaded.samples[0])
    expected = fitted.counts()
    assert {pop.path: result.count(pop.path) for pop in loaded.gates.tree.populations()} == expected
    assert expected[("time_clean", "cells", "singlets", "viable", "blasts")] == 13_795
    assert loaded.fitted is not None and loaded.session.gates.protocol["protocol"] == "screening"


def test_a_moved_file_is_named_and_nothing_loads(study, fitted, tmp_path):
    out = save_session(_session(study, fitted), tmp_path / "s.json")
    moved = study["P01_CAR_PB_D014.fcs"]
    moved.rename(tmp_path / "elsewhere.fcs")
    with pytest.raises(SessionError) as err:
        load_session(out)
    msg = str(err.value)
    assert msg.startswith(f"{moved}: is missing (moved or deleted)") and str(out) in msg
    assert err.value.path == str(moved)


def test_a_changed_file_is_named(study, fitted, tmp_path):
    out = save_session(_session(study, fitted), tmp_path / "s.json")
    changed = study["P01_screening_BM.fcs"]
    before = hashlib.sha256(changed.read_bytes()).hexdigest()
    with open(changed, "ab") as fh:  # trailing bytes: still a readable FCS file, but not the one saved
        fh.write(b"\0" * 16)
    assert read_fcs(changed).n_events == 25_000
    with pytest.raises(SessionError, match="has changed since the session") as err:
        load_session(out)
    assert err.value.path == str(changed)
    assert before[:12] in str(err.value)


def test_two_bad_files_are_both_named_by_the_session(study, fitted, tmp_path):
    out = save_session(_session(study, fitted), tmp_path / "s.json")
    for p in study.values():
        p.unlink()
    with pytest.raises(SessionError, match="2 data files cannot be restored") as err:
        load_session(out)
    assert all(str(p) in str(err.value) for p in study.values())


@pytest.mark.parametrize("text, problem", [
    ("{not json", "invalid JSON at line 1"),
    ('{"schema": "something-else"}', "not a cd7flow session"),
    ('{"schema": "cd7flow-session", "schema_version": 99, "samples": []}', "written by a newer cd7flow"),
    ('{"schema": "cd7flow-session", "schema_version": 1, "samples": [{"path": "rel.fcs", "sha256": "00"}]}',
     "is not absolute"),
    ('{"schema": "cd7flow-session", "schema_version": 1, "samples": [], "gates": {"gatingml": 3}}',
     "Gating-ML text"),
])
def test_bad_session_files_say_what_is_wrong(tmp_path, text, problem):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(SessionError, match=problem) as err:
        read_session(bad)
    assert str(err.value).startswith(str(bad))


def test_corrupt_saved_gates_are_a_session_error(study, fitted, tmp_path):
    session = _session(study, fitted)
    session.gates.gatingml = session.gates.gatingml.replace("</gating:Gating-ML>", "")
    out = save_session(session, tmp_path / "s.json")
    with pytest.raises(SessionError, match=r"\(gates\): its saved gates cannot be read"):
        load_session(out)


def test_sample_made_in_memory_cannot_be_saved(fitted):
    s = fitted.sample
    from cd7flow.sample import Sample

    mem = Sample(np.asarray(s.events), s.channels, s.markers, s.metadata, s.ranges)
    with pytest.raises(CD7FlowError, match="made in memory"):
        sample_entry(mem)
