"""Compensation: parsing (keywords, files), validation, applying, estimating.

Oracles: FlowKit (Sample + Matrix) for compensated events, flowutils' $SPILL parser
(what FlowKit uses) for keyword matrices, flowCore's reference matrices for the
single-stain estimate, and hand-computed values for Beckman $DFCiTOj.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import cd7flow.compensation.matrix as matrix_mod
from cd7flow.compensation import (SpilloverMatrix, compensate, compute_spillover, read_matrix_file,
                                  spillover_from_metadata)
from cd7flow.errors import CompensationError
from cd7flow.sample import CaseInsensitiveDict, Sample
from conftest import manifest_rows

flowio = pytest.importorskip("flowio")


def _text_of(path):
    """TEXT keywords of every data set of an FCS/LMD file (flowio as the independent reader)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sets = flowio.read_multiple_data_sets(str(path), ignore_offset_error=True,
                                                  ignore_offset_discrepancy=True, only_text=True)
        except Exception as exc:  # flowio cannot parse some vendor files at all
            pytest.skip(f"flowio cannot read {path.name}: {exc}")
    return [fd.text for fd in sets]


def _pnn(text):
    return tuple(text.get(f"p{i}n", f"P{i}") for i in range(1, int(text["par"]) + 1))


def _fk_sample(path):
    fk = pytest.importorskip("flowkit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fk.Sample(str(path), ignore_offset_error=True)


def _read(path) -> Sample:
    """Our reader when it is there (it attaches the file's matrix); FlowKit's events otherwise."""
    try:
        from cd7flow.io.fcs_read import read_fcs
    except ImportError:
        return _as_sample(_fk_sample(path))
    return read_fcs(path)


def _as_sample(fks) -> Sample:
    return Sample(events=fks.get_events(source="raw"), channels=tuple(fks.pnn_labels),
                  markers=tuple(fks.pns_labels), metadata=CaseInsensitiveDict(fks.metadata),
                  ranges=np.zeros(len(fks.pnn_labels)), path=fks.original_filename)


# ------------------------------------------------------------------ applying

def test_equals_flowkit_on_test_comp_example(shared_data):
    fk = pytest.importorskip("flowkit")
    csv = shared_data / "flowkit/data/comp_complete_example.csv"
    fks = _fk_sample(shared_data / "flowkit/data/test_comp_example.fcs")
    spill = read_matrix_file(csv, channels=fks.pnn_labels)
    fks.apply_compensation(fk.Matrix(str(csv), list(spill.channels)))
    expected = fks.get_events(source="comp")
    raw = fks.get_events(source="raw")
    mine = compensate(raw, spill, list(fks.pnn_labels))
    rel = np.abs(mine - expected) / np.maximum(np.abs(expected), 1.0)
    assert rel.max() < 1e-9
    assert np.abs(mine - raw).max() > 1.0  # the matrix really changed something
    # the same through our reader's Sample: float32 stays float32 within float32 precision
    sample32 = _read(shared_data / "flowkit/data/test_comp_example.fcs")
    assert sample32.events.dtype == np.float32 and sample32.channels == tuple(fks.pnn_labels)
    before = sample32.events.copy()
    out32 = compensate(sample32, spill)
    assert out32.events.dtype == np.float32
    assert (np.abs(out32.events - expected) / np.maximum(np.abs(expected), 1.0)).max() < 2e-7
    assert out32.events is not sample32.events
    np.testing.assert_array_equal(sample32.events, before)  # input untouched
    if sample32.spillover is not None:  # the file's own SPILL, as FlowKit reads it
        fk_spill = fk.Matrix(fks.metadata["spill"], list(fks.pnn_labels)).matrix
        np.testing.assert_allclose(sample32.spillover.matrix, fk_spill, rtol=0, atol=1e-15)


def _random_case(n_events=1000, seed=1):
    rng = np.random.default_rng(seed)
    names = ["FSC-A", "B", "SSC-A", "D", "E", "Time", "A", "C"]
    chans = ("A", "B", "C", "D", "E")
    S = np.eye(5) + (1 - np.eye(5)) * rng.uniform(0, 0.3, (5, 5))
    events = rng.gamma(2.0, 500.0, (n_events, len(names)))
    return names, SpilloverMatrix(chans, S, "test"), events


def test_matches_direct_formula_with_scattered_columns_and_chunks(monkeypatch):
    names, spill, events = _random_case(n_events=1001)
    monkeypatch.setattr(matrix_mod, "CHUNK_ROWS", 64)  # many blocks and a ragged last one
    idx = [names.index(c) for c in spill.channels]
    expected = events.copy()
    expected[:, idx] = events[:, idx] @ np.linalg.inv(spill.matrix)
    out = compensate(events, spill, names)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-9)
    untouched = [i for i, n in enumerate(names) if n not in spill.channels]
    np.testing.assert_array_equal(out[:, untouched], events[:, untouched])


def test_inplace_float32_and_channel_subset():
    names, spill, events = _random_case()
    ev32 = events.astype(np.float32)
    expected = compensate(ev32.astype(np.float64), spill, names)
    same = compensate(ev32, spill, names, inplace=True)
    assert same is ev32 and ev32.dtype == np.float32
    assert np.abs(ev32 - expected).max() / np.abs(expected).max() < 1e-6

    sample = Sample(events=events.copy(), channels=tuple(names), markers=("",) * len(names),
                    metadata=CaseInsensitiveDict({}), ranges=np.zeros(len(names)), spillover=spill)
    sub = compensate(sample, None, ["A", "C"])
    ia, ic = names.index("A"), names.index("C")
    inv = np.linalg.inv(spill.matrix[np.ix_([0, 2], [0, 2])])
    np.testing.assert_allclose(sub.events[:, [ia, ic]], events[:, [ia, ic]] @ inv, rtol=1e-12)
    others = [i for i in range(len(names)) if i not in (ia, ic)]
    np.testing.assert_array_equal(sub.events[:, others], events[:, others])
    assert compensate(sample, inplace=True) is sample
    np.testing.assert_allclose(sample.events, compensate(events, spill, names), rtol=1e-12)


def test_inverse_cached_and_text_round_trip():
    names, spill, _ = _random_case()
    assert spill.inverse is spill.inverse
    np.testing.assert_allclose(spill.inverse @ spill.matrix, np.eye(5), atol=1e-12)
    back = spillover_from_metadata({"$SPILLOVER": spill.to_text()}, names)
    assert back == spill
    assert spill.reorder(["E", "D", "C", "B", "A"]).subset(["A", "B", "C", "D", "E"]) == spill


# ------------------------------------------------------------------ keywords

SPILL_FILES = [r["path"] for r in manifest_rows() if r.get("has_spill") in ("SPILL", "$SPILLOVER")]


@pytest.mark.parametrize("rel", SPILL_FILES or ["<no corpus>"])
def test_spill_keywords_match_flowutils(shared_data, rel):
    from flowutils.compensate import get_spill

    for text in _text_of(shared_data / rel):
        key = next((k for k in ("spillover", "spill", "$spill") if k in text), None)
        if key is None:
            continue
        channels = _pnn(text)
        try:
            ref_matrix, ref_names = get_spill(text[key])
        except Exception:
            # flowutils refuses it too: it must be a malformed keyword (Miltenyi writes
            # names without values); ours must say so, not crash
            with pytest.raises(CompensationError, match="fields are needed"):
                spillover_from_metadata(text, channels, path=rel)
            continue
        spill = spillover_from_metadata(CaseInsensitiveDict(text), channels, path=rel)
        assert spill is not None
        ref_names = [n.strip() for n in ref_names]
        if all(n.isdigit() for n in ref_names):  # Accuri C6 numbers its channels: $PnN
            ref_names = [channels[int(n) - 1] for n in ref_names]
        assert list(spill.channels) == ref_names
        np.testing.assert_allclose(spill.matrix, np.asarray(ref_matrix, dtype=float), rtol=0, atol=1e-15)
        assert rel in spill.source


def test_dfc_percentages_beckman_fc500(shared_data):
    rel = "fcsparser/fcsparser/tests/data/FlowCytometers/fake_bitmask_error/fcs1_cleaned.lmd"
    text = _text_of(shared_data / rel)[0]
    spill = spillover_from_metadata(text, _pnn(text), path=rel)
    assert spill.channels == ("FL1 INT LOG", "FL2 INT LOG", "FL3 INT LOG", "FL4 INT LOG", "FL5 INT LOG")
    S = spill.matrix
    assert S[1, 2] == pytest.approx(0.448)   # $DFC2TO3 = 44.8 (PE into FL3)
    assert S[0, 1] == pytest.approx(0.134)   # $DFC1TO2 = 13.4 (FITC into FL2)
    assert S[2, 3] == pytest.approx(0.292)
    assert S[4, 0] == pytest.approx(0.001)
    np.testing.assert_array_equal(np.diag(S), 1.0)  # the file writes 0 on the diagonal
    assert np.count_nonzero(S - np.eye(5)) == 16


def test_dfc_other_beckman_files(shared_data):
    sysii = "cytoflow/cytoflow/tests/data/instruments/System II listmode with extra info in bits D10-D15.LMD"
    text = _text_of(shared_data / sysii)[0]
    spill = spillover_from_metadata(text, _pnn(text))
    assert spill.channels == ("FL1 LOG", "FL2 LOG", "FL3 LOG", "FL4 LOG")
    assert spill.matrix[2, 3] == pytest.approx(0.511) and spill.matrix[1, 0] == pytest.approx(0.010)
    fc500 = "cytoflow/cytoflow/tests/data/instruments/Beckman Coulter - Cytomics FC500.LMD"
    first, second = _text_of(shared_data / fc500)[:2]
    spill = spillover_from_metadata(first, _pnn(first))
    assert spill.channels == ("FL1 Log", "FL2 Log")
    np.testing.assert_allclose(spill.matrix, [[1, 0.112], [0.009, 1]])
    assert spillover_from_metadata(second, _pnn(second)) is None


def test_number_indexed_spillover_gallios(shared_data):
    rel = "cytoflow/cytoflow/tests/data/instruments/Beckman Coulter - Gallios.LMD"
    texts = _text_of(shared_data / rel)
    text = texts[1]
    assert text["spillover"].startswith("2,3,4,")
    spill = spillover_from_metadata(text, _pnn(text))
    assert spill.channels == ("FL1-A", "FL2-A")  # $P3N, $P4N
    np.testing.assert_array_equal(spill.matrix, np.eye(2))
    # data set 0 writes every $DFCiTOj as 0.0: an identity over its FL detectors
    # (FL1 INT LOG comes before FL1 INT LIN, so it represents FL1)
    zero = spillover_from_metadata(texts[0], _pnn(texts[0]))
    assert zero.channels == ("FL1 INT LOG", "FL2 INT LOG")
    np.testing.assert_array_equal(zero.matrix, np.eye(2))


def test_number_indexed_and_comp_keyword_by_hand():
    chans = ("FSC", "SSC", "FL1", "FL2")
    spill = spillover_from_metadata({"SPILL": "2,3,4,1,0.25,0.1,1"}, chans)
    assert spill.channels == ("FL1", "FL2")
    np.testing.assert_allclose(spill.matrix, [[1, 0.25], [0.1, 1]])
    # $COMP is the compensation matrix (inverse of spillover), with or without names
    S = np.array([[1, 0.25], [0.1, 1]])
    C = np.linalg.inv(S)
    vals = ",".join(repr(float(v)) for v in C.ravel())
    named = spillover_from_metadata({"$COMP": f"2,FL1,FL2,{vals}"}, chans)
    np.testing.assert_allclose(named.matrix, S, atol=1e-14)
    unnamed = spillover_from_metadata({"$comp": f"2,{vals}"}, chans)
    assert unnamed.channels == ("FSC", "SSC")
    assert spillover_from_metadata({"$FIL": "x"}, chans) is None


# ------------------------------------------------------------------ files

def test_matrix_files(shared_data):
    fk_csv = read_matrix_file(shared_data / "flowkit/data/comp_complete_example.csv")
    assert fk_csv.n == 14 and fk_csv.matrix[0, 1] == 0.2986 and fk_csv.matrix[1, 0] == 0.007
    den = read_matrix_file(shared_data / "flowkit/data/8_color_data_set/den_comp.csv")  # '#' header
    assert den.channels[0] == "TNFa FITC FLR-A" and den.n == 8 and den.matrix[0, 1] == 0.014139
    comp = shared_data / "flowcore/inst/extdata/compdata"
    old_flowjo = read_matrix_file(comp / "compmatrix")  # CR line ends, title and prefix lines
    assert old_flowjo.channels == ("FL1-H", "FL2-H", "FL3-H", "FL4-H")
    assert old_flowjo.matrix[2, 3] == 0.21 and old_flowjo.matrix[3, 0] == 7.95e-4
    ref1 = read_matrix_file(comp / "compref1")  # quoted names, row labels
    assert ref1.matrix[2, 3] == 0.229593859843027


def test_mtx_xml(tmp_path):
    mtx = tmp_path / "comp.mtx"
    mtx.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<CompensationMatrix name="c">'
                   '<Channel name="Fluor"><ChannelValue name="Fluor" value="1"/><ChannelValue name="PE" value="0.16"/></Channel>'
                   '<Channel name="PE"><ChannelValue name="Fluor" value="0.017"/><ChannelValue name="PE" value="1.0"/></Channel>'
                   '</CompensationMatrix>')
    spill = read_matrix_file(mtx)
    assert spill.channels == ("Fluor", "PE")
    np.testing.assert_array_equal(spill.matrix, [[1, 0.16], [0.017, 1]])


# ------------------------------------------------------------------ validation

def test_missing_row_file_is_a_clear_error(shared_data):
    path = shared_data / "flowutils/tests/test_data/test_comp_matrix_missing_row.csv"
    with pytest.raises(CompensationError, match=r"13 rows of values for 14 channels") as err:
        read_matrix_file(path)
    assert "test_comp_matrix_missing_row.csv" in str(err.value)


def test_matrix_file_channels_must_be_in_sample(shared_data):
    with pytest.raises(CompensationError, match="matrix channels not in the sample: PE-A, PE-TR-A"):
        read_matrix_file(shared_data / "flowkit/data/comp_complete_example.csv", channels=["Ax488-A"])


def test_swapped_rows_name_the_bad_diagonal(shared_data):
    with pytest.raises(CompensationError, match=r"diagonal must be 1: entry \[FL3-H, FL3-H\] is 0.0032"):
        read_matrix_file(shared_data / "flowcore/inst/extdata/compdata/compref2")


@pytest.mark.parametrize("channels, values, message", [
    (("A", "B"), [[1, 0.1, 0], [0, 1, 0]], "not square"),
    (("A", "B", "C"), [[1, 0.1], [0, 1]], "3 channel names for a 2x2"),
    (("A", "B"), [[1, 0.1], [0.2, 0.9]], r"entry \[B, B\] is 0.9"),
    (("A", "B"), [[1, np.nan], [0, 1]], r"\[A, B\] is not finite"),
    (("A", "B"), [[1, 1], [1, 1]], "singular"),
    (("A", "A"), [[1, 0], [0, 1]], "duplicate channel names.*A"),
    (("A", "B"), [[1, "x"], [0, 1]], "not numbers"),
])
def test_validation_errors(channels, values, message):
    with pytest.raises(CompensationError, match=message) as err:
        SpilloverMatrix(channels, values, "my-matrix.csv")
    assert str(err.value).startswith("my-matrix.csv: ")


def test_keyword_errors_and_missing_channels():
    with pytest.raises(CompensationError, match=r"x.fcs SPILL: declares 2 channels.*found 4"):
        spillover_from_metadata({"SPILL": "2,A,B,1"}, ("A", "B"), path="x.fcs")
    with pytest.raises(CompensationError, match="'q' is not a number"):
        spillover_from_metadata({"SPILL": "2,A,B,1,q,0,1"}, ("A", "B"))
    with pytest.raises(CompensationError, match="channel number 9 is outside 1..2"):
        spillover_from_metadata({"SPILL": "2,1,9,1,0,0,1"}, ("A", "B"))
    with pytest.raises(CompensationError, match=r"DFC1TO7 = 3.0 refers to FL7"):
        spillover_from_metadata({"$DFC1TO7": "3.0", "$DFC1TO2": "1"}, ("FL1", "FL2"))
    names, spill, events = _random_case()
    with pytest.raises(CompensationError, match="missing from the data: A, C"):
        compensate(events[:, :5], spill, names[:5])
    with pytest.raises(CompensationError, match="not in the spillover matrix: Z"):
        spill.subset(["A", "Z"])
    with pytest.raises(CompensationError, match="needs a writable float"):
        compensate(events.astype(np.int32), spill, names, inplace=True)


# ------------------------------------------------------------------ estimating

def _flowcore_controls(shared_data):
    comp = shared_data / "flowcore/inst/extdata/compdata"
    rows = [line.strip().split(",") for line in (comp / "comp_match").read_text().splitlines()[1:] if line.strip()]
    unstained, singles = None, {}
    for filename, channel in rows:
        sample = _read(comp / "data" / filename)
        if channel == "unstained":
            unstained = sample
        else:
            singles[channel] = sample
    return comp, unstained, singles


def test_compute_spillover_matches_flowcore(shared_data):
    comp, unstained, singles = _flowcore_controls(shared_data)
    ref = read_matrix_file(comp / "compref1")  # flowStats spillover(method="median", no pre-gate)
    spill = compute_spillover(unstained, singles, ref.channels)
    assert np.abs(spill.matrix - ref.matrix).max() < 1e-9
    # The instrument's own matrix is rounded to 2-3 significant digits and differs most in
    # FL3->FL4 (0.21 vs 0.2296); measured largest difference 0.0196.
    instrument = read_matrix_file(comp / "compmatrix")
    assert np.abs(spill.matrix - instrument.matrix).max() < 0.02
    # A positive gate changes the estimate but keeps it a valid spillover matrix.
    gated = compute_spillover(unstained, singles, ref.channels, gate=75)
    assert 0.005 < np.abs(gated.matrix - ref.matrix).max() < 0.1


def test_compute_spillover_recovers_a_known_matrix_and_rejects_mismatch():
    rng = np.random.default_rng(3)
    S = np.array([[1, 0.2, 0.05], [0.01, 1, 0.3], [0.0, 0.02, 1]])
    background = np.array([50.0, 40.0, 30.0])
    unstained = background + rng.normal(0, 1, (5000, 3))
    singles = {}
    for i, name in enumerate("XYZ"):
        true = np.zeros((5000, 3))
        true[:, i] = rng.lognormal(8, 0.3, 5000)
        singles[name] = true @ S + background + rng.normal(0, 1, (5000, 3))
    est = compute_spillover(unstained, singles, "XYZ")
    assert np.abs(est.matrix - S).max() < 0.002
    swapped = {"X": singles["Y"], "Y": singles["X"], "Z": singles["Z"]}
    with pytest.raises(CompensationError, match="brightest in Y, not in its own detector"):
        compute_spillover(unstained, swapped, "XYZ")
