"""write_fcs: round trips through flowio, flowkit and cd7flow's own reader; layout; atomicity."""
from __future__ import annotations

import os
from pathlib import Path

import flowio
import numpy as np
import pytest

from cd7flow.errors import CD7FlowError, FCSError
from cd7flow.io import fcs_write
from cd7flow.io.fcs_write import write_fcs
from cd7flow.sample import CaseInsensitiveDict, Sample

CHANNELS = ["FSC-A", "SSC-A", "FITC-A", "PE-A", "APC-A", "Time"]
MARKERS = ["", "", "CD7", "CD3", "CAR", ""]
SPILL_CH = ["FITC-A", "PE-A", "APC-A"]
SPILL = np.array([[1.0, 0.21, 0.003], [0.012, 1.0, 0.0645], [0.0, 0.0171, 1.0]])


def _events(n=2000, seed=1):
    rng = np.random.default_rng(seed)
    ev = rng.normal(500.0, 2000.0, size=(n, len(CHANNELS))).astype(np.float32)
    ev[:, -1] = np.sort(rng.uniform(0, 600, n)).astype(np.float32)
    return ev


def _flowio_events(path: Path) -> np.ndarray:
    fd = flowio.FlowData(str(path))
    return np.reshape(np.asarray(fd.events, dtype=np.float32), (-1, fd.channel_count))


def _sample(ev) -> Sample:
    md = CaseInsensitiveDict({"$CYT": "FACSCanto II", "$P3V": "512", "$P4V": "430", "SPILL": "junk", "$TOT": "9"})
    return Sample(
        events=ev, channels=tuple(CHANNELS), markers=tuple(MARKERS), metadata=md,
        ranges=np.full(len(CHANNELS), 262144.0), spillover=(SPILL_CH, SPILL),
        path="/data/pt01_screen.fcs", sha256="ab" * 32,
    )


def test_array_round_trip_flowio(tmp_path):
    ev = _events()
    out = write_fcs(tmp_path / "a.fcs", ev, channels=CHANNELS, markers=MARKERS,
                    ranges=[262144] * 6, spillover=(SPILL_CH, SPILL))
    np.testing.assert_array_equal(_flowio_events(out), ev)
    fd = flowio.FlowData(str(out))
    assert [fd.channels[i + 1]["pnn"] for i in range(6)] == CHANNELS
    assert fd.text["datatype"] == "F" and fd.text["byteord"] == "1,2,3,4"
    assert fd.text["p3s"] == "CD7" and "p1s" not in fd.text  # empty marker left out, not written empty
    assert fd.text["p1r"] == "262144" and fd.text["p2b"] == "32" and fd.text["p2e"] == "0,0"
    assert fd.text["tot"] == str(len(ev)) and fd.text["par"] == "6"


def test_header_offsets_match_text_and_file_size(tmp_path):
    ev = _events(777)
    out = write_fcs(tmp_path / "h.fcs", ev, channels=CHANNELS)
    raw = out.read_bytes()
    assert raw[:10] == b"FCS3.1    "
    t0, t1, d0, d1, a0, a1 = (int(raw[10 + 8 * i: 18 + 8 * i]) for i in range(6))
    assert (t0, a0, a1) == (58, 0, 0)
    assert d0 == t1 + 1 and d1 == len(raw) - 1 and d1 - d0 + 1 == 777 * 6 * 4
    fd = flowio.FlowData(str(out))
    assert int(fd.text["begindata"]) == d0 and int(fd.text["enddata"]) == d1
    # The DATA segment is exactly the little-endian float32 rows.
    np.testing.assert_array_equal(np.frombuffer(raw[d0:d1 + 1], "<f4").reshape(777, 6), ev)


def test_huge_data_offsets_go_to_text_only():
    # Hand-computed: DATA ending past 99,999,999 must put zeros in the HEADER (FCS 3.1 sec 3.1).
    header = fcs_write._header(1000, 1058, 150_000_000)
    assert header[26:42] == b"       0       0"
    assert header[10:26] == b"      58    1057"
    keywords = fcs_write._layout_keywords(["A"], [""], [1.0], 37_500_000, None)
    text, d0, d1 = fcs_write._assemble_text(Path("x.fcs"), keywords, "/", 150_000_000)
    body = text.decode()
    assert f"/$BEGINDATA/{d0}/" in body and f"/$ENDDATA/{d1}/" in body
    assert d0 == 58 + len(text) and d1 == d0 + 150_000_000 - 1


def test_flowkit_reads_events_markers_and_compensation(tmp_path):
    flowkit = pytest.importorskip("flowkit")
    ev = _events()
    out = write_fcs(tmp_path / "k.fcs", _sample(ev))
    s = flowkit.Sample(str(out))
    assert s.pnn_labels == CHANNELS
    assert s.pns_labels == MARKERS
    np.testing.assert_array_equal(s.get_events("raw").astype(np.float32), ev)
    s.apply_compensation(s.metadata["spillover"])
    assert list(s.compensation.detectors) == SPILL_CH
    idx = [CHANNELS.index(c) for c in SPILL_CH]
    expected = ev[:, idx].astype(np.float64) @ np.linalg.inv(SPILL)
    np.testing.assert_allclose(s.get_events("comp")[:, idx], expected, rtol=1e-9, atol=1e-6)


def test_sample_keywords_provenance_and_dropped_layout(tmp_path):
    ev = _events(50)
    out = write_fcs(tmp_path / "p.fcs", _sample(ev), metadata={"$DATE": "05-MAR-2024"})
    t = flowio.FlowData(str(out)).text
    assert t["cyt"] == "FACSCanto II" and t["p3v"] == "512" and t["date"] == "05-MAR-2024"
    assert t["cd7flow_source"] == "pt01_screen.fcs" and t["cd7flow_source_sha256"] == "ab" * 32
    assert t["originality"] == "NonDataModified" and "cd7flow_version" in t
    assert "spill" not in t and t["tot"] == "50"  # the source's stale layout/spill keywords are not copied
    assert t["spillover"].startswith("3,FITC-A,PE-A,APC-A,1,0.21,0.003,0.012,1,0.0645,0,0.0171,1")


def test_subset_export_by_mask_and_channel_selection(tmp_path):
    ev = _events(1000)
    mask = ev[:, 2] > 1000
    out = write_fcs(tmp_path / "s.fcs", _sample(ev), mask=mask, channels=["CD3", "FITC-A", "Time"],
                    metadata={"CD7FLOW_SUBSET": "Lymphocytes/Singlets/CD7+"})
    got = _flowio_events(out)
    np.testing.assert_array_equal(got, ev[mask][:, [3, 2, 5]])
    fd = flowio.FlowData(str(out))
    t = fd.text
    assert [fd.channels[i]["pnn"] for i in (1, 2, 3)] == ["PE-A", "FITC-A", "Time"]
    assert t["p1s"] == "CD3" and t["p2s"] == "CD7"
    # Per-parameter keywords follow their channel to its new number.
    assert t["p1v"] == "430" and t["p2v"] == "512" and "p3v" not in t
    assert t["cd7flow_subset"] == "Lymphocytes/Singlets/CD7+" and t["originality"] == "DataModified"
    # Spillover restricted to the written channels, in the matrix's own order.
    assert t["spillover"] == "2,FITC-A,PE-A,1,0.21,0.012,1"


def test_default_subset_description(tmp_path):
    ev = _events(100)
    mask = np.zeros(100, bool)
    mask[::4] = True
    out = write_fcs(tmp_path / "d.fcs", _sample(ev), mask=mask)
    assert flowio.FlowData(str(out)).text["cd7flow_subset"] == "25 of 100 events"


def test_special_characters_doubled_delimiter(tmp_path):
    ev = _events(10)
    values = {"GATE": "Lymphs/Single Cells/CD3+", "NOTE": "CD7 dim µ-level, 5% < x", "EMPTY": ""}
    out = write_fcs(tmp_path / "x.fcs", ev, channels=CHANNELS, metadata=values, delimiter="/")
    raw = out.read_bytes()
    assert b"/GATE/Lymphs//Single Cells//CD3+/" in raw
    assert "/NOTE/CD7 dim µ-level, 5% < x/".encode("utf-8") in raw
    assert b"/EMPTY/ /" in raw and b"//EMPTY" not in raw  # never an empty value
    t = flowio.FlowData(str(out)).text
    assert t["gate"] == values["GATE"] and t["note"] == values["NOTE"]
    np.testing.assert_array_equal(_flowio_events(out), ev)


def test_value_starting_with_delimiter_is_refused(tmp_path):
    with pytest.raises(FCSError, match="starts with the TEXT delimiter"):
        write_fcs(tmp_path / "bad.fcs", _events(5), channels=CHANNELS, metadata={"X": "/root"}, delimiter="/")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metadata": {"$TOT": "5"}}, "set by the writer"),
        ({"metadata": {"$P1N": "x"}}, "set by the writer"),
        ({"metadata": {"SPILL": "x"}}, "spillover="),
        ({"channels": ["A", "B"]}, "2 channels given for 6 columns"),
        ({"channels": ["A,B", "B", "C", "D", "E", "F"]}, "comma"),
        ({"channels": ["A", "A", "C", "D", "E", "F"]}, "not unique"),
        ({"mask": np.ones(3, bool)}, "mask must be"),
        ({"ranges": [0, 1, 1, 1, 1, 1]}, "positive"),
        ({"spillover": (["FITC-A"], np.eye(2))}, "spillover matrix"),
    ],
)
def test_bad_arguments_raise_fcs_error_and_write_nothing(tmp_path, kwargs, message):
    kwargs.setdefault("channels", CHANNELS)
    with pytest.raises(FCSError, match=message) as info:
        write_fcs(tmp_path / "bad.fcs", _events(5), **kwargs)
    assert "bad.fcs" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_not_an_event_matrix(tmp_path):
    with pytest.raises(CD7FlowError, match="2-D"):
        write_fcs(tmp_path / "v.fcs", np.zeros(5))
    with pytest.raises(CD7FlowError, match="missing"):
        write_fcs(tmp_path / "missing" / "v.fcs", np.zeros((5, 2)))


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "keep.fcs"
    write_fcs(target, _events(20), channels=CHANNELS)
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fcs_write.os, "fsync", boom)
    with pytest.raises(FCSError, match="No space left"):
        write_fcs(target, _events(30, seed=2), channels=CHANNELS)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.fcs"]


def test_interrupt_mid_write_cleans_temp(tmp_path, monkeypatch):
    real = fcs_write.os.replace

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fcs_write.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_fcs(tmp_path / "i.fcs", _events(20), channels=CHANNELS)
    monkeypatch.setattr(fcs_write.os, "replace", real)
    assert list(tmp_path.iterdir()) == []


def test_zero_events(tmp_path):
    from cd7flow.io.fcs_read import read_fcs

    out = write_fcs(tmp_path / "z.fcs", np.zeros((0, 3), np.float32), channels=["A", "B", "C"])
    raw = out.read_bytes()
    # FCS 3.1: an absent segment has offsets 0, in HEADER and in TEXT
    assert int(raw[26:34]) == 0 and int(raw[34:42]) == 0
    assert b"$TOT\x0c0\x0c" in raw and b"$BEGINDATA\x0c0\x0c" in raw and b"$ENDDATA\x0c0\x0c" in raw
    assert len(raw) == int(raw[18:26]) + 1  # nothing after TEXT
    back = read_fcs(out)
    assert back.n_events == 0 and back.events.shape == (0, 3) and back.channels == ("A", "B", "C")
    assert back.extra["warnings"] == []
    # flowio reads begin 0 / end 0 as a one-byte span, off by one: it needs its tolerance option
    with pytest.warns(UserWarning, match="incorrect data offset"):
        fd = flowio.FlowData(str(out), ignore_offset_error=True)
    assert fd.event_count == 0 and len(fd.events) == 0


def test_zero_event_subset_export_round_trip(tmp_path):
    from cd7flow.io.fcs_read import read_fcs

    src = write_fcs(tmp_path / "src.fcs", _sample(_events(50)))
    sample = read_fcs(src)
    empty = write_fcs(tmp_path / "none.fcs", sample, mask=np.zeros(50, bool))
    back = read_fcs(empty)
    assert back.n_events == 0 and back.channels == sample.channels and back.markers == sample.markers
    assert back.metadata["CD7FLOW_SUBSET"] == "0 of 50 events"
    again = write_fcs(tmp_path / "again.fcs", back)  # what `cd7flow export` does with it
    assert read_fcs(again).n_events == 0


def test_zero_event_file_written_by_flowio_reads(tmp_path):
    from cd7flow.io.fcs_read import read_fcs

    path = tmp_path / "flowio_empty.fcs"
    with open(path, "wb") as fh:
        flowio.create_fcs(fh, [], ["A", "B"])  # flowio writes $ENDDATA = $BEGINDATA - 1
    back = read_fcs(path)
    assert back.n_events == 0 and back.events.shape == (0, 2)


def test_float64_input_written_as_float32(tmp_path):
    ev = np.array([[1.5, -2.25e5], [3.0000001, 1e-7]], dtype=np.float64)
    out = write_fcs(tmp_path / "f.fcs", ev)
    np.testing.assert_array_equal(_flowio_events(out), ev.astype(np.float32))
    t = flowio.FlowData(str(out)).text
    assert t["p1n"] == "P1" and t["p1r"] == "4" and t["p2r"] == "1"


def test_round_trip_through_cd7flow_reader(tmp_path):
    fcs_read = pytest.importorskip("cd7flow.io.fcs_read", reason="cd7flow.read_fcs not merged yet")
    ev = _events(500)
    out = write_fcs(tmp_path / "r.fcs", _sample(ev), metadata={"NOTE": "a/b"}, delimiter="/")
    s = fcs_read.read_fcs(out)
    np.testing.assert_array_equal(s.events, ev)
    assert s.events.dtype == np.float32
    assert s.channels == tuple(CHANNELS) and s.markers == tuple(MARKERS)
    assert s.metadata["NOTE"] == "a/b"
    assert list(s.spillover.channels) == SPILL_CH
    np.testing.assert_array_equal(np.asarray(s.spillover.matrix), SPILL)
    np.testing.assert_array_equal(s.ranges, np.full(6, 262144.0))


def test_rewrite_of_a_real_file(tmp_path, shared_data):
    src = shared_data / "flowkit/data/gate_ref/data1.fcs"
    fd = flowio.FlowData(str(src))
    ev = np.reshape(np.asarray(fd.events, dtype=np.float32), (-1, fd.channel_count))
    names = [fd.channels[i + 1]["pnn"] for i in range(fd.channel_count)]
    out = write_fcs(tmp_path / "data1_f32.fcs", ev, channels=names)
    np.testing.assert_array_equal(_flowio_events(out), ev)
    assert os.path.getsize(out) == 58 + len(_text_of(out)) + ev.size * 4


def _text_of(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[int(raw[10:18]): int(raw[18:26]) + 1]


def test_export_of_preprocessed_time_is_lossless_and_consistent(tmp_path):
    ev = _events(300)
    ev[:, -1] = np.arange(300, dtype=np.float32) * 7.3  # ticks
    src = write_fcs(tmp_path / "t.fcs", ev, channels=CHANNELS, ranges=[262144] * 6, metadata={"$TIMESTEP": "0.01"})
    fcs_read = pytest.importorskip("cd7flow.io.fcs_read")
    first = fcs_read.read_fcs(src)  # Time now in seconds
    np.testing.assert_allclose(first.values("Time"), ev[:, -1] * np.float32(0.01), rtol=1e-6)
    again = write_fcs(tmp_path / "t2.fcs", first)
    second = fcs_read.read_fcs(again)
    np.testing.assert_array_equal(second.events, first.events)
    assert second.metadata["$TIMESTEP"] == "1"
    assert second.ranges[-1] == pytest.approx(262144 * 0.01)


def test_raw_log_encoded_sample_is_refused(tmp_path):
    s = _sample(_events(10))
    s.metadata = CaseInsensitiveDict({"$P3E": "4,1"})
    s.extra["preprocessed"] = False
    with pytest.raises(FCSError, match="log-encoded"):
        write_fcs(tmp_path / "l.fcs", s)
