"""cd7flow <-> FlowKit and AnnData on real instrument files (cd7flow.interchange).

References are the other libraries' own readers: flowkit.Sample (on flowio) for events,
names and ranges, flowutils.compensate.get_spill for the spillover matrix text.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

import cd7flow
from cd7flow.errors import CD7FlowError
from cd7flow.io.fcs_read import read_fcs

flowkit = pytest.importorskip("flowkit", reason="flowkit is not installed (the interchange/test extra)")
fu_comp = pytest.importorskip("flowutils.compensate", reason="flowutils is not installed (the test extra)")

# Integer and float data, FCS 2.0 to 3.1, log-encoded channels, $SPILL and $SPILLOVER, a Time channel.
CORPUS = [
    "flowio/data/fcs_files/G11.fcs",
    "flowio/data/fcs_files/B01 KC-A-W---91-US.fcs",
    "flowkit/data/gate_ref/data1.fcs",
    "fcsparser/fcsparser/tests/data/FlowCytometers/FACS_Diva/facs_diva_test.fcs",
    "flowkit/data/100715.fcs",
    "flowcal/test/Data001.fcs",
    "cytoflow/cytoflow/tests/data/instruments/Cytek NL-2000.fcs",
]


@pytest.fixture(params=CORPUS, ids=lambda p: p.rsplit("/", 1)[-1])
def corpus_file(request, shared_data):
    path = shared_data / request.param
    if not path.is_file():
        pytest.skip(f"{request.param} not in the reference corpus at {shared_data}")
    return path


def _spill_reference(fk_sample):
    """(matrix, channels) parsed by flowutils from the file's own keyword, or None."""
    text = next((fk_sample.metadata[k] for k in ("spillover", "spill") if k in fk_sample.metadata), None)
    if text is None:
        return None
    matrix, channels = fu_comp.get_spill(text)
    return np.asarray(matrix, dtype=np.float64), [str(c) for c in channels]


def _assert_spill(spill, ref):
    if ref is None:
        assert spill is None
        return
    matrix, channels = ref
    assert spill is not None
    assert list(spill.channels) == channels
    np.testing.assert_array_equal(spill.matrix, matrix)


def test_raw_events_names_and_ranges_match_flowkit(corpus_file):
    """Unpreprocessed: FlowKit's events, $PnN, $PnS and $PnR, exactly, both ways."""
    ref = flowkit.Sample(str(corpus_file), preprocess=False)
    ours = read_fcs(corpus_file, preprocess=False)
    np.testing.assert_array_equal(ours.events, ref.get_events(source="raw"))

    got = cd7flow.from_flowkit(ref)
    np.testing.assert_array_equal(got.events, ref.get_events(source="raw"))
    assert got.channels == tuple(ref.pnn_labels) == ours.channels
    assert got.markers == tuple((m or "").strip() for m in ref.pns_labels) == ours.markers  # ' ' = no marker
    np.testing.assert_array_equal(got.ranges, np.asarray(ref.channels["pnr"], dtype=float))
    np.testing.assert_array_equal(got.ranges, ours.ranges)
    assert got.extra["preprocessed"] is False
    assert got.metadata["$TOT"].strip() == str(ref.event_count)
    assert got.metadata["$P1N"] == ref.pnn_labels[0]
    _assert_spill(got.spillover, _spill_reference(ref))


def test_preprocessed_sample_round_trips_through_flowkit(corpus_file):
    ours = read_fcs(corpus_file)  # $PnE decoded, $PnG divided, Time in seconds
    fk_sample = cd7flow.to_flowkit(ours)
    assert isinstance(fk_sample, flowkit.Sample)
    assert fk_sample.id == corpus_file.name
    # the events FlowKit holds are ours, value for value, in float64
    np.testing.assert_array_equal(fk_sample.get_events(source="raw"), ours.events)
    assert fk_sample.event_count == ours.n_events
    assert list(fk_sample.pnn_labels) == list(ours.channels)
    assert [(m or "").strip() for m in fk_sample.pns_labels] == list(ours.markers)
    np.testing.assert_array_equal(np.asarray(fk_sample.channels["pnr"], dtype=float), ours.ranges)

    # ... and they are what FlowKit's own preprocessing gives (Time: float32 files are scaled
    # by $TIMESTEP in float32 here, in float64 there)
    ref = flowkit.Sample(str(corpus_file))
    time = [i for i, c in enumerate(ours.channels) if c.lower() == "time"]
    others = [i for i in range(len(ours.channels)) if i not in time]
    np.testing.assert_array_equal(ours.events[:, others], ref.get_events(source="raw")[:, others])
    np.testing.assert_allclose(ours.events[:, time], ref.get_events(source="raw")[:, time], rtol=1e-6)

    # the spillover travels as $SPILLOVER and comes back with the same entries
    _assert_spill(ours.spillover, _spill_reference(ref))
    back = cd7flow.from_flowkit(fk_sample)
    _assert_spill(back.spillover, _spill_reference(fk_sample))
    if ours.spillover is not None:
        assert back.spillover == ours.spillover
    np.testing.assert_array_equal(back.events, ours.events)
    assert back.channels == ours.channels and back.markers == ours.markers
    for key in ("$CYT", "$DATE", "$BTIM"):
        if key in ours.metadata:
            assert back.metadata[key] == ours.metadata[key]


def test_to_anndata_carries_events_channels_and_spillover(corpus_file, tmp_path):
    anndata = pytest.importorskip("anndata", reason="anndata is not installed (the interchange/test extra)")
    ours = read_fcs(corpus_file)
    ad = ours.to_anndata()
    assert isinstance(ad, anndata.AnnData)
    assert ad.shape == ours.events.shape
    np.testing.assert_array_equal(ad.X, ours.events)
    assert list(ad.var_names) == list(ad.var["$PnN"]) == list(ours.channels)
    assert list(ad.var["$PnS"]) == list(ours.markers)
    np.testing.assert_array_equal(ad.var["$PnR"].to_numpy(), ours.ranges)
    meta = ad.uns["meta"]
    assert meta["$PAR"].strip() == str(len(ours.channels))
    ref = _spill_reference(flowkit.Sample(str(corpus_file), preprocess=False))
    if ref is None:
        assert "spill" not in meta
    else:
        assert list(meta["spill"].columns) == list(meta["spill"].index) == ref[1]
        np.testing.assert_array_equal(meta["spill"].to_numpy(), ref[0])
    # what scanpy users do next: save and load it
    out = tmp_path / "sample.h5ad"
    ad.write_h5ad(out)
    again = anndata.read_h5ad(out)
    np.testing.assert_array_equal(again.X, ours.events)
    assert list(again.var["$PnS"]) == list(ours.markers)


def test_events_stay_independent_of_the_sample():
    s = read_fcs(_demo_file())
    ad = s.to_anndata()
    ad.X[0, 0] = -12345.0
    assert s.events[0, 0] != -12345.0


def _demo_file():
    from conftest import SAMPLE_FCS

    path = SAMPLE_FCS / "P01_screening_BM.fcs"
    if not path.is_file():
        pytest.skip("sample_fcs/ demo study not generated")
    return path


@pytest.mark.parametrize("module, call", [
    ("flowkit", lambda s: cd7flow.to_flowkit(s)),
    ("flowkit", lambda s: cd7flow.from_flowkit(object())),
    ("anndata", lambda s: s.to_anndata()),
])
def test_missing_library_names_the_extra(monkeypatch, module, call):
    s = read_fcs(_demo_file())
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(CD7FlowError, match=rf"{module} is not installed.*pip install 'cd7flow\[interchange\]'"):
        call(s)


def test_raw_log_encoded_sample_cannot_go_to_flowkit_and_says_why(shared_data):
    path = shared_data / "flowkit/data/gate_ref/data1.fcs"
    raw = read_fcs(path, preprocess=False)  # FL1-H is $P3E 4,0: channel numbers, not linear values
    with pytest.raises(CD7FlowError, match=r"data1\.fcs: cannot be handed to FlowKit: .*log-encoded"):
        cd7flow.to_flowkit(raw)
