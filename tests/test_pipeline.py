"""The protocol pipeline: one gating tree, one method registry, scikit-learn estimators, bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from sklearn.base import clone

from cd7flow.assays import protocol_gating, screening
from cd7flow.assays.protocol_gating import run_protocol_gates
from cd7flow.assays.screening import FMOTube, screen_file, screen_sample
from cd7flow.errors import CD7FlowError, NotEvaluable, ProtocolError
from cd7flow.io.fcs_read import read_fcs
from cd7flow.io.gatingml import read_gatingml, write_gatingml
from cd7flow.protocol import load_protocol
from gating.auto import METHODS, DensityThreshold, GateMethod, TimeCleanGate, register
from gating.gates import BooleanGate
from gating.tree import GatingTree


@pytest.fixture(scope="module")
def p01(sample_fcs_dir):
    return read_fcs(sample_fcs_dir / "P01_screening_BM.fcs")


# ---------------------------------------------------------------------------------------------
# scikit-learn contract, over every registered estimator fitted as the pipeline fits it
# ---------------------------------------------------------------------------------------------
def test_every_registered_estimator_clones_and_refits_to_the_same_mask(p01):
    calls = []
    classes = {m.estimator for m in METHODS.values()}
    patches = []
    for cls in classes:
        original = cls.fit

        def recorder(self, X, *args, _original=original, **kwargs):
            X = np.array(X, copy=True)
            out = _original(self, X, *args, **kwargs)  # a fit that fails (an optional gate) is not checked
            calls.append((self, X, kwargs))
            return out

        patches.append(mock.patch.object(cls, "fit", recorder))
    for p in patches:
        p.start()
    try:
        g = run_protocol_gates(p01, load_protocol("screening"))
        car = run_protocol_gates(read_fcs(Path(p01.path).parent / "P01_CAR_PB_D014.fcs"), load_protocol("car"))
    finally:
        for p in patches:
            p.stop()
    fitted = {type(est) for est, _, _ in calls}
    assert fitted == classes  # a screening and a CAR tube exercise every registered method
    assert set(g.skipped) <= {"singlets_ssc"} and "no_beads" not in car.skipped  # the demo tubes have no SSC-H
    for est, X, kwargs in calls:
        params = est.get_params(deep=False)
        rebuilt = type(est)(**params)
        for key, value in rebuilt.get_params(deep=False).items():
            assert value is params[key], f"{type(est).__name__}.__init__ changed {key}"
        twin = clone(est)  # scikit-learn's own check: its parameters come back as given
        assert not hasattr(twin, "gate_") and not hasattr(twin, "n_fit_events_")
        twin.fit(X, **kwargs)
        np.testing.assert_array_equal(twin.predict(X), est.predict(X))
        state = {k: v for k, v in vars(est).items() if k not in params}
        assert all(k.endswith("_") for k in state), sorted(state)  # fitted state only, named with "_"
        # No training data kept: no array with one row per fitted event (or per reference event).
        rows = {X.shape[0]} | {np.shape(v)[0] for v in kwargs.values() if v is not None}
        kept = [k for k, v in state.items() if isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[0] in rows]
        assert not kept, kept


def test_set_params_then_fit_validates_and_bad_values_name_the_parameter():
    est = DensityThreshold("CD7").set_params(fallback_fraction=2.0)
    assert est.fallback_fraction == 2.0  # stored unchanged; fit validates
    with pytest.raises(Exception, match="fallback_fraction"):
        est.fit(np.random.default_rng(0).normal(size=500))


def test_time_clean_gate_is_the_union_predict_uses():
    rng = np.random.default_rng(3)
    # Steady acquisition with a clog (no events) in the middle: two good intervals.
    t = np.sort(np.r_[rng.uniform(0, 40, 40_000), rng.uniform(60, 100, 40_000)])
    est = TimeCleanGate("Time").fit(t)
    assert len(est.intervals_) == 2
    assert isinstance(est.gate_, BooleanGate) and est.gate_.operator == "or" and len(est.gates_) == 2
    tree = GatingTree()
    tree.add_siblings(est.tree_gates(), None)

    class Columns:
        n_events = t.size

        def values(self, dimension):
            return t

    np.testing.assert_array_equal(tree.apply(Columns()).mask("time_clean"), est.predict(t))
    assert est.predict(t).sum() > 0.9 * t.size


# ---------------------------------------------------------------------------------------------
# one gating tree: masks, counts and Gating-ML are the same object
# ---------------------------------------------------------------------------------------------
def test_masks_come_from_the_tree_that_is_exported(p01, tmp_path):
    g = run_protocol_gates(p01, load_protocol("screening"))
    assert g.strategy.tree is g.tree
    write_gatingml(g.strategy, tmp_path / "fitted.xml")
    again = read_gatingml(tmp_path / "fitted.xml").apply(p01)
    for pop, where in g.locations.items():
        if where:
            np.testing.assert_array_equal(again.mask(where), g.masks[pop])
            assert g.count(pop) == int(again.count(where))
    # Populations are nested: every mask lies inside its parent's.
    spec = {s.id: s for s in load_protocol("screening").gates}
    for gid, s in spec.items():
        assert not (g.masks[gid] & ~g.masks[s.parent]).any()
    assert g.count("blasts_refined") <= g.count("blasts") < g.count("cd45_ssc") < p01.n_events


def test_a_new_method_is_one_registration(p01, tmp_path):
    """A method only needs its estimator registered: the protocol accepts it, the pipeline fits it
    on its parent's events and its population lands in the tree and the masks."""
    register("fsc_bright", GateMethod(DensityThreshold))
    try:
        base = Path(protocol_gating.__file__).parents[1] / "protocols" / "leukocytes.toml"
        text = base.read_text() + ('\n[[gates]]\nid = "big"\nmethod = "fsc_bright"\nparent = "cells"\n'
                                   'dimensions = ["fsc_a"]\nparams = { min_peak_height = 0.05 }\n')
        (tmp_path / "p.toml").write_text(text)
        proto = load_protocol(tmp_path / "p.toml")
        g = run_protocol_gates(p01, proto)
        threshold = g.estimators["big"].threshold_
        expected = g.masks["cells"] & (p01.values(g.channels["fsc_a"]) >= threshold)
        np.testing.assert_array_equal(g.masks["big"], expected)
        assert "big" in g.tree and 0 < g.count("big") < g.count("cells")
    finally:
        del METHODS["fsc_bright"]


# ---------------------------------------------------------------------------------------------
# protocol values that used to pass validation and crash later
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, key", [
    ("[positivity]\npercentile = nan\n", "positivity.percentile"),
    ('[[gates]]\nid = "cells"\nparams = { n_components = -4 }\n', "gates.cells.params.n_components"),
    ('[[gates]]\nid = "blasts_refined"\nparams = { percentile = -1.0 }\n', "gates.blasts_refined.params.percentile"),
    ('[[gates]]\nid = "blasts_refined"\nparams = { percentile = nan }\n', "gates.blasts_refined.params.percentile"),
    ('[[gates]]\nid = "time_clean"\nparams = { n_bins = 2 }\n', "gates.time_clean.params.n_bins"),
])
def test_bad_estimator_values_fail_at_load_naming_file_and_key(tmp_path, extra, key):
    path = tmp_path / "lab.toml"
    path.write_text('extends = "screening"\n' + extra)
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    assert str(path) in str(info.value) and f"key '{key}'" in str(info.value)


# ---------------------------------------------------------------------------------------------
# compensation the protocol requires, and $PnR
# ---------------------------------------------------------------------------------------------
def _edited(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    raw = src.read_bytes()
    assert len(old) == len(new) and old in raw  # same length: every offset stays valid
    dst.write_bytes(raw.replace(old, new, 1))
    return dst


@pytest.mark.parametrize("old, new, why", [
    (b",0.21,", b", nan,", "unusable"),                                        # NaN coefficient
    (b"$SPILLOVER\x0c10,", b"$SPILLOVER\x0c11,", "unusable"),                  # wrong channel count
    (b"$SPILLOVER", b"$XPILLOVER", "carries no spillover matrix"),             # absent
])
def test_uncompensable_file_is_not_evaluable_unless_the_protocol_allows_none(sample_fcs_dir, tmp_path, old, new,
                                                                            why):
    bad = _edited(sample_fcs_dir / "P03_screening_BM.fcs", tmp_path / "bad.fcs", old, new)
    with pytest.warns(UserWarning) if why == "unusable" else _nothing():
        rec = screen_file(bad, "screening")
    assert rec["verdict"] == "not_evaluable" and why in rec["reason"] and rec["cd7_pos_pct"] is None
    (tmp_path / "none.toml").write_text('extends = "screening"\n[protocol]\nname = "uncomp"\nversion = "1.0.0"\n'
                                        'assay = "screening"\n[compensation]\nsource = "none"\n')
    with pytest.warns(UserWarning) if why == "unusable" else _nothing():
        allowed = screen_file(bad, load_protocol(tmp_path / "none.toml"))
    assert allowed["verdict"] in ("positive", "negative")
    ignored = [n for n in allowed["notes"] if "spillover matrix ignored" in n]
    assert len(ignored) == (1 if why == "unusable" else 0)  # the user sees it in the record, not only on stderr


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_autogate_on_a_file_without_its_spillover_is_one_line_exit_2(sample_fcs_dir, tmp_path):
    bad = _edited(sample_fcs_dir / "P03_screening_BM.fcs", tmp_path / "nospill.fcs", b"$SPILLOVER", b"$XPILLOVER")
    out = subprocess.run([sys.executable, "-m", "cd7flow.cli", "autogate", str(bad)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "nospill.fcs" in out.stderr and "no spillover matrix" in out.stderr


@pytest.mark.parametrize("value", [b"000000", b"-26214", b"nan   "])
def test_bad_range_is_not_evaluable_and_a_batch_goes_on(sample_fcs_dir, tmp_path, value):
    bad = _edited(sample_fcs_dir / "P03_screening_BM.fcs", tmp_path / "badrange.fcs",
                  b"$P4R\x0c262144", b"$P4R\x0c" + value)
    out = subprocess.run([sys.executable, "-m", "cd7flow.cli", "screen", str(bad),
                          str(sample_fcs_dir / "P01_screening_BM.fcs"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert "Traceback" not in out.stderr and out.returncode == 0
    import json

    bad_rec, good_rec = json.loads(out.stdout)
    assert bad_rec["file"] == "badrange.fcs" and bad_rec["verdict"] == "not_evaluable"
    assert "channel FITC-A (CD7): $PnR is" in bad_rec["reason"]
    assert good_rec["verdict"] == "positive" and good_rec["cd7_pos_pct"] > 90


# ---------------------------------------------------------------------------------------------
# FMO: read and gated once per batch, never modified; record keys follow the marker
# ---------------------------------------------------------------------------------------------
def test_fmo_is_gated_once_for_a_batch_and_left_unmodified(sample_fcs_dir):
    proto = load_protocol("screening")
    fmo = read_fcs(sample_fcs_dir / "P01_FMO-CD7_BM.fcs")
    markers = fmo.markers
    tube = FMOTube(fmo, proto)
    gated = []

    def counting(sample, protocol, channels=None):
        gated.append(sample.name)
        return run_protocol_gates(sample, protocol, channels)

    with mock.patch.object(screening, "run_protocol_gates", counting):
        recs = [screen_sample(read_fcs(sample_fcs_dir / "P01_screening_BM.fcs"), proto, tube) for _ in range(2)]
    assert gated.count(fmo.name) == 1
    assert fmo.markers == markers
    assert recs[0]["rd_fmo"] == recs[1]["rd_fmo"] > 1.5
    # Same answer as the FMO read for this file alone.
    alone = screen_file(sample_fcs_dir / "P01_screening_BM.fcs", proto,
                        fmo_path=sample_fcs_dir / "P01_FMO-CD7_BM.fcs")
    assert alone["rd_fmo"] == recs[0]["rd_fmo"]


def test_batch_with_an_unreadable_file_named_like_the_fmo_goes_on(sample_fcs_dir, tmp_path):
    # The old CLI stopped the batch when an error message merely contained the FMO's path.
    fmo = tmp_path / "fmo.fcs"
    fmo.write_bytes((sample_fcs_dir / "P01_FMO-CD7_BM.fcs").read_bytes())
    (tmp_path / "fmo.fcs_old").mkdir()
    broken = tmp_path / "fmo.fcs_old" / "broken.fcs"
    broken.write_bytes(b"FCS3.1    garbage")
    out = subprocess.run([sys.executable, "-m", "cd7flow.cli", "screen", str(broken),
                          str(sample_fcs_dir / "P01_screening_BM.fcs"), "--fmo", str(fmo), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "Traceback" not in out.stderr  # 1: a file of the batch was unreadable
    import json

    recs = json.loads(out.stdout)
    assert recs[0]["error"] and recs[1]["verdict"] == "positive" and recs[1]["rd_fmo"] > 1.5


def test_record_keys_follow_the_screened_marker():
    assert screening.result_keys("CD7") == screening.RESULT_KEYS
    keys = screening.result_keys("CD33")
    assert "cd33_pos_pct" in keys and "cd33_mfi_blasts" in keys and not any(k.startswith("cd7_") for k in keys)


def test_not_evaluable_is_a_cd7flow_error():
    assert issubclass(NotEvaluable, CD7FlowError)
    assert screening.NotEvaluable is NotEvaluable and protocol_gating.NotEvaluable is NotEvaluable


def test_plots_leave_the_process_backend_alone(sample_fcs_dir, tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    try:
        rec = screen_file(sample_fcs_dir / "P01_screening_BM.fcs", "screening", plots_dir=tmp_path)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before, force=True)
    assert len(rec["plots"]) == 2
    for p in rec["plots"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
