"""Tests of the FCS reader (cd7flow.io.fcs_read).

Two kinds: the whole reference corpus compared with flowio 1.4 and the truth
arrays shipped with flowio, and small files built byte by byte here (HEADER +
TEXT + DATA) for each known breakage, so those do not depend on the corpus.
"""
from __future__ import annotations

import io
import tracemalloc
import warnings

import numpy as np
import pytest

from cd7flow.errors import FCSDataError, FCSError, FCSTextError, FCSUnsupportedError
from cd7flow.io.fcs_read import list_datasets, read_fcs
from conftest import manifest_fcs_paths, manifest_rows

# ----------------------------------------------------------------------------------------------
# Builder for synthetic FCS bytes (also used by test_fcs_fuzz.py). It is deliberately separate
# from cd7flow's writer so a shared bug cannot hide itself.
# ----------------------------------------------------------------------------------------------

OFFSET_WIDTH = 12  # fixed width for $BEGINDATA/$ENDDATA so TEXT length does not depend on them


def pack_columns(columns: list[np.ndarray], widths_bytes: list[int], byteord: str) -> bytes:
    """Pack unsigned integer columns event by event; byte order given as in $BYTEORD."""
    order = [int(x) - 1 for x in byteord.split(",")]
    n = len(columns[0])
    stride = sum(widths_bytes)
    out = np.zeros((n, stride), dtype=np.uint8)
    pos = 0
    for col, w in zip(columns, widths_bytes):
        col = np.asarray(col, dtype=np.uint64)
        if len(order) == w:
            sig = order
        elif order == sorted(order):
            sig = list(range(w))
        else:
            sig = list(reversed(range(w)))
        for k, s in enumerate(sig):
            out[:, pos + k] = (col >> np.uint64(8 * s)) & np.uint64(0xFF)
        pos += w
    return out.tobytes()


def _escape(value: str, delim: bytes, encoding: str) -> bytes:
    raw = value.encode(encoding)
    return raw.replace(delim, delim + delim)


def build_fcs(
    keywords: dict[str, str],
    data: bytes,
    *,
    version: str = "FCS3.1",
    delim: bytes = b"/",
    text_start: int = 58,
    header_data: str | tuple[int, int] = "auto",
    text_data: str | tuple[int, int] | None = "auto",
    final_delimiter: bool = True,
    encoding: str = "utf-8",
    offset_pad: str = "0",
    trailing: bytes = b"",
) -> bytes:
    """One FCS data set as bytes.

    header_data: "auto" (true offsets), "zero", "blank", or an explicit (start, end).
    text_data: "auto" writes $BEGINDATA/$ENDDATA with the true offsets, None omits them,
    a tuple writes those values. offset_pad: "0" or " " fills the fixed-width offset values.
    """
    kw = dict(keywords)
    placeholder = "#" * OFFSET_WIDTH
    if text_data is not None:
        kw["$BEGINDATA"] = placeholder + "B"
        kw["$ENDDATA"] = placeholder + "E"
    parts = [delim]
    for k, v in kw.items():
        parts += [_escape(k, delim, encoding), delim, _escape(v, delim, encoding), delim]
    text = b"".join(parts)
    if not final_delimiter:
        text = text[:-1]
    data_start = text_start + len(text)
    data_end = data_start + len(data) - 1
    if text_data is not None:
        b, e = (data_start, data_end) if text_data == "auto" else text_data
        fmt = (lambda v: str(v).rjust(OFFSET_WIDTH + 1, offset_pad))
        text = text.replace((placeholder + "B").encode(), fmt(b).encode())
        text = text.replace((placeholder + "E").encode(), fmt(e).encode())
    if header_data == "auto":
        hd = (f"{data_start:8d}", f"{data_end:8d}")
    elif header_data == "zero":
        hd = ("       0", "       0")
    elif header_data == "blank":
        hd = (" " * 8, " " * 8)
    else:
        hd = (f"{header_data[0]:8d}", f"{header_data[1]:8d}")
    text_end = text_start + len(text) - 1
    header = f"{version}    {text_start:8d}{text_end:8d}{hd[0]}{hd[1]}{0:8d}{0:8d}".encode("ascii")
    assert len(header) == 58
    gap = b" " * (text_start - 58)
    return header + gap + text + data + trailing


def int_keywords(names, bits, ranges, *, tot, datatype="I", byteord="1,2,3,4", extra=None) -> dict[str, str]:
    kw = {"$BYTEORD": byteord, "$DATATYPE": datatype, "$MODE": "L", "$NEXTDATA": "0",
          "$PAR": str(len(names)), "$TOT": str(tot)}
    for i, (n, b, r) in enumerate(zip(names, bits, ranges), 1):
        kw[f"$P{i}N"] = n
        kw[f"$P{i}B"] = str(b)
        kw[f"$P{i}R"] = str(r)
        kw[f"$P{i}E"] = "0,0"
    kw.update(extra or {})
    return kw


# ----------------------------------------------------------------------------------------------
# Reference corpus
# ----------------------------------------------------------------------------------------------
CORRUPTED = "fcsparser/fcsparser/tests/data/FlowCytometers/corrupted/corrupted.fcs"
HEADER_ONLY = "fcsparser/fcsparser/tests/data/FlowCytometers/cytek-nl-2000/sample_header.fcs"
BROKEN = {CORRUPTED, HEADER_ONLY}
CORPUS = manifest_fcs_paths()
CORPUS_AND_BROKEN = CORPUS + [p for p in [CORRUPTED] if p not in CORPUS]
MULTI = "flowkit/data/multi_dataset_fcs/coulter.lmd"
FC500 = "cytoflow/cytoflow/tests/data/instruments/Beckman Coulter - Cytomics FC500.LMD"


def _flowio_sets(path):
    """flowio's data sets for a file, or None when flowio cannot read it."""
    import flowio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            flowio.FlowData(str(path), only_text=True, ignore_offset_discrepancy=True)
            multi = False
        except flowio.exceptions.MultipleDataSetsError:
            multi = True
        except Exception:
            return None
        try:
            if multi:
                sets = flowio.read_multiple_data_sets(str(path), ignore_offset_error=True)
            else:
                sets = [flowio.FlowData(str(path), ignore_offset_error=True, ignore_offset_discrepancy=True)]
            arrays = [s.as_array(preprocess=False) for s in sets]
        except Exception:
            return None
    return list(zip(sets, arrays))


@pytest.mark.parametrize("rel", CORPUS_AND_BROKEN)
def test_corpus_file_reads_or_fails_cleanly(shared_data, rel):
    path = shared_data / rel
    if rel in BROKEN:
        with pytest.raises(FCSError) as info:
            read_fcs(path)
        assert path.name in str(info.value)
        return
    infos = list_datasets(path)
    for k, info in enumerate(infos):
        s = read_fcs(path, dataset=k, preprocess=False)
        assert s.events.shape == (info.tot, info.par)
        assert s.events.dtype == (np.float32 if info.datatype == "F" else np.float64)
        assert s.events.flags.c_contiguous and s.events.flags.writeable
        assert len(s.channels) == len(set(c.lower() for c in s.channels)) == info.par
        assert s.extra["version"] == info.version and s.dataset == k
        assert len(s.sha256) == 64
        assert np.isfinite(s.events).all() or info.datatype != "I"


def test_corpus_count(shared_data):
    """78 of the 79 manifest FCS files read; the header-only file (and corrupted.fcs) do not."""
    read, failed = 0, []
    for rel in CORPUS:
        try:
            read_fcs(shared_data / rel, preprocess=False)
            read += 1
        except FCSError:
            failed.append(rel)
    assert len(CORPUS) == 79
    assert failed == [HEADER_ONLY]
    assert read == 78


@pytest.mark.parametrize("rel", [p for p in CORPUS if p not in BROKEN])
def test_corpus_matches_flowio(shared_data, rel):
    path = shared_data / rel
    sets = _flowio_sets(path)
    if sets is None:
        pytest.skip("flowio 1.4 cannot read this file (checked by the independent decoders below)")
    for k, (fd, stored) in enumerate(sets):
        ours = read_fcs(path, dataset=k, preprocess=False)
        assert ours.n_events == fd.event_count
        np.testing.assert_array_equal(ours.events.astype(np.float64), stored)
        if len(fd.pnn_labels) == len(ours.channels):  # flowio misparses empty TEXT values in some 2.0 files
            assert list(ours.extra.get("original_channels", ours.channels)) == fd.pnn_labels
        # Preprocessed: compare where flowio applies the same convention (it also log-decodes
        # float data and gain-scales log channels; cd7flow does neither, per the FCS standard).
        pre = read_fcs(path, dataset=k, preprocess=True).events
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = fd.as_array(preprocess=True)
        except ValueError:  # unparseable $TIMESTEP: flowio gives up, we leave time unscaled
            expected = None
        if expected is None:
            continue
        for j, ch in fd.channels.items():
            decades, _ = ch["pne"]
            if decades > 0 and (fd.data_type != "I" or ch["png"] not in (0.0, 1.0)):
                continue
            np.testing.assert_allclose(pre[:, j - 1], expected[:, j - 1], rtol=2e-7, atol=0)


def test_data1_truth_arrays(shared_data):
    path = shared_data / "flowkit/data/gate_ref/data1.fcs"
    truth = shared_data / "flowio/data/truth"
    raw = read_fcs(path, preprocess=False)
    pre = read_fcs(path, preprocess=True)
    np.testing.assert_array_equal(raw.events, np.load(truth / "data1_original_events.npy"))
    np.testing.assert_allclose(pre.events, np.load(truth / "data1_preprocessed.npy"), rtol=1e-12)
    assert raw.channels[:3] == ("FSC-H", "SSC-H", "FL1-H")
    assert raw.extra["version"] == "FCS2.0"


def test_b01_truth_array(shared_data):
    path = shared_data / "flowio/data/fcs_files/B01 KC-A-W---91-US.fcs"
    expected = np.load(shared_data / "flowio/data/truth/B01 KC-A-W---91-US_preprocessed_events.npy")
    s = read_fcs(path)
    np.testing.assert_allclose(s.events, expected, rtol=1e-12)
    assert s.extra["version"] == "FCS3.1"


def _reference_ints(path, start, n, widths, big_endian):
    """Independent integer decode via Python's int.from_bytes on the first ``n`` events."""
    raw = path.read_bytes()
    rows = []
    pos = start
    for _ in range(n):
        row = []
        for w in widths:
            row.append(int.from_bytes(raw[pos : pos + w], "big" if big_endian else "little"))
            pos += w
        rows.append(row)
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize(
    "rel, width, big",
    [
        ("flowcal/test/Data003.fcs", 3, True),
        ("flowcal/examples/FCFiles/sample001.fcs", 3, True),
        ("flowcal/examples/FCFiles/min/sample004.fcs", 3, True),
        ("cytoflow/cytoflow/tests/data/instruments/Partec - CyFlow v2.9.fcs", 2, False),
        ("cytoflow/docs/examples-basic/data/genome_size/PU87@10+B200.fcs", 2, False),
    ],
)
def test_files_flowio_cannot_read_match_int_from_bytes(shared_data, rel, width, big):
    """flowio fails on 24-bit integers and on these Partec TEXTs; check against int.from_bytes + $PnR masks."""
    path = shared_data / rel
    s = read_fcs(path, preprocess=False)
    start = s.extra["offsets"]["data"][0]
    assert s.extra["offsets"]["data"][1] - start + 1 == s.n_events * width * len(s.channels)
    ref = _reference_ints(path, start, 500, [width] * len(s.channels), big_endian=big)
    masks = np.array([2 ** int(np.ceil(np.log2(r))) - 1 for r in s.ranges])
    np.testing.assert_array_equal(s.events[:500], np.bitwise_and(ref.astype(np.int64), masks))
    assert s.events.max() > 255  # really multi-byte words, not a misread


def test_blank_header_offsets_match_original(shared_data):
    """fake_large_fcs.fcs is the Fortessa file with HEADER DATA offsets blanked: same events."""
    base = "fcsparser/fcsparser/tests/data/FlowCytometers/"
    fake = read_fcs(shared_data / base / "fake_large_fcs/fake_large_fcs.fcs")
    orig = read_fcs(shared_data / base / "Fortessa/FCS_3.0_Fortessa_PBS_Specimen_001_A1_A01.fcs")
    np.testing.assert_array_equal(fake.events, orig.events)
    assert fake.extra["offsets"]["data_source"] == "TEXT"


def test_fc500_10bit_in_16bit_words(shared_data):
    path = shared_data / FC500
    s = read_fcs(path, preprocess=False)
    assert [int(s.metadata[f"$P{i}B"]) for i in (1, 2, 3, 4)] == [10] * 4
    assert s.n_events == 27072
    start = s.extra["offsets"]["data"][0]
    ref = _reference_ints(path, start, 500, [2] * 4, big_endian=False)
    np.testing.assert_array_equal(s.events[:500], np.bitwise_and(ref.astype(np.int64), 1023))
    assert any("16-bit words" in w for w in s.extra["warnings"])
    infos = list_datasets(path)
    assert [(i.version, i.par, i.tot) for i in infos] == [("FCS2.0", 4, 27072), ("FCS3.0", 8, 27072)]


def test_multi_dataset_lmd(shared_data):
    path = shared_data / MULTI
    infos = list_datasets(path)
    assert len(infos) == 2 and infos[0].offset == 0 and infos[1].offset == 363602
    second = read_fcs(path, dataset=1)
    assert second.dataset == 1 and second.extra["version"] == "FCS3.0" and second.n_events == 18110
    with pytest.raises(FCSError, match="data set 2 does not exist"):
        read_fcs(path, dataset=2)


def test_manifest_versions_agree(shared_data):
    by_path = {r["path"]: r for r in manifest_rows() if r.get("fcs_version")}
    for rel, row in by_path.items():
        if rel in BROKEN:
            continue
        info = list_datasets(shared_data / rel)[0]
        assert info.version == row["fcs_version"], rel
        assert info.datatype == row["datatype"] and info.par == int(row["par"]), rel
