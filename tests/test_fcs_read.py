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


# ----------------------------------------------------------------------------------------------
# Synthetic files: one per known breakage
# ----------------------------------------------------------------------------------------------
RNG = np.random.default_rng(7)


def _simple(n=50, byteord="1,2,3,4", version="FCS3.1", extra=None, **build):
    """Two 16-bit channels with values < 1024 ($PnR 1024), plus the bytes and expected events."""
    cols = [RNG.integers(0, 1024, n), RNG.integers(0, 1024, n)]
    kw = int_keywords(["FSC-A", "SSC-A"], [16, 16], [1024, 1024], tot=n, byteord=byteord, extra=extra)
    data = pack_columns(cols, [2, 2], byteord)
    return build_fcs(kw, data, version=version, **build), np.column_stack(cols).astype(np.float64)


def test_bytes_bytearray_and_bytesio_inputs():
    raw, expected = _simple()
    for src in (raw, bytearray(raw), io.BytesIO(raw)):
        s = read_fcs(src, name="mem.fcs", preprocess=False)
        np.testing.assert_array_equal(s.events, expected)
        assert s.path == "mem.fcs"
    import hashlib

    assert read_fcs(raw).sha256 == hashlib.sha256(raw).hexdigest()


def test_path_input_is_memmapped_readonly(tmp_path):
    raw, expected = _simple()
    f = tmp_path / "a.fcs"
    f.write_bytes(raw)
    f.chmod(0o444)
    s = read_fcs(f, preprocess=False)
    np.testing.assert_array_equal(s.events, expected)
    assert s.path == str(f) and s.events.flags.writeable


def test_sha256_of_path_is_lazy_and_refuses_a_changed_file(tmp_path):
    import hashlib
    import os

    raw, _ = _simple()
    f = tmp_path / "a.fcs"
    f.write_bytes(raw)
    s = read_fcs(f)
    assert s.sha256 == hashlib.sha256(raw).hexdigest()
    t = read_fcs(f)
    f.write_bytes(raw + b"x")
    os.utime(f, ns=(1, 1))
    with pytest.raises(FCSError, match="changed after it was read"):
        t.sha256


def test_doubled_delimiter_is_an_escape():
    raw, _ = _simple(extra={"$P1S": "CD7/CD3 mix", "NOTE": "a//b"})
    s = read_fcs(raw)
    assert s.markers[0] == "CD7/CD3 mix"
    assert s.metadata["NOTE"] == "a//b"


def test_empty_value_written_as_doubled_delimiter():
    kw = int_keywords(["A", "B"], [16, 16], [1024, 1024], tot=1)
    text_kw = dict(kw)
    raw = build_fcs(text_kw, pack_columns([np.array([5]), np.array([7])], [2, 2], "1,2,3,4"))
    # splice an empty $P1S value in by hand: "/$P1S//" right after the opening delimiter
    start = int(raw[10:18])
    patched = raw[: start + 1] + b"$P1S//" + raw[start + 1 :]
    patched = _shift_offsets(patched, 6)
    s = read_fcs(patched)
    assert s.metadata["$P1S"] == "" and s.channels == ("A", "B")
    np.testing.assert_array_equal(s.events, [[5, 7]])


def _shift_offsets(raw: bytes, by: int) -> bytes:
    """After inserting ``by`` bytes into TEXT: move TEXT end and both DATA offset pairs."""
    h = raw[:58].decode()
    t0, t1, d0, d1 = (int(h[10 + 8 * i : 18 + 8 * i]) for i in range(4))
    head = f"{h[:10]}{t0:8d}{t1 + by:8d}{d0 + by:8d}{d1 + by:8d}{h[42:]}".encode()
    body = raw[58:]
    for key in (b"$BEGINDATA/", b"$ENDDATA/"):
        i = body.index(key) + len(key)
        j = body.index(b"/", i)
        body = body[:i] + str(int(body[i:j]) + by).rjust(j - i, "0").encode() + body[j:]
    return head + body


def test_missing_final_delimiter():
    raw, expected = _simple(final_delimiter=False)
    s = read_fcs(raw, preprocess=False)
    np.testing.assert_array_equal(s.events, expected)
    assert any("final delimiter" in w for w in s.extra["warnings"])


@pytest.mark.parametrize("header_data", ["zero", "blank"])
def test_header_data_offsets_zero_or_blank_use_text(header_data):
    raw, expected = _simple(header_data=header_data)
    s = read_fcs(raw, preprocess=False)
    np.testing.assert_array_equal(s.events, expected)
    assert s.extra["offsets"]["data_source"] == "TEXT"


def test_leading_spaces_in_offsets_and_values():
    raw, expected = _simple(offset_pad=" ", extra={"$TOT": "   50", "$PAR": " 2"})
    np.testing.assert_array_equal(read_fcs(raw, preprocess=False).events, expected)


def test_end_offset_one_past_eof():
    raw, expected = _simple()
    n = len(raw)
    d0 = int(raw[26:34])
    fixed = _rewrite_data_offsets(raw, (d0, n), (d0, n))
    s = read_fcs(fixed, preprocess=False)
    np.testing.assert_array_equal(s.events, expected)
    assert any("one past the end of file" in w for w in s.extra["warnings"])


def _rewrite_data_offsets(raw: bytes, header: tuple[int, int], text: tuple[int, int]) -> bytes:
    h = raw[:58].decode()
    head = f"{h[:26]}{header[0]:8d}{header[1]:8d}{h[42:]}".encode()
    body = raw[58:]
    for key, value in ((b"$BEGINDATA/", text[0]), (b"$ENDDATA/", text[1])):
        i = body.index(key) + len(key)
        j = body.index(b"/", i)
        body = body[:i] + str(value).rjust(j - i, "0").encode() + body[j:]
    return head + body


@pytest.mark.parametrize("version, wrong", [("FCS3.1", "header"), ("FCS3.1", "text"), ("FCS2.0", "header"),
                                            ("FCS2.0", "text")])
def test_conflicting_offsets_pick_the_span_that_matches(version, wrong):
    raw, expected = _simple(version=version, trailing=b"\0" * 400)
    d0, d1 = int(raw[26:34]), int(raw[34:42])
    bad = (d0 - 40, d1 + 250)  # wrong start and a span that does not match $TOT x 4
    header, text = (bad, (d0, d1)) if wrong == "header" else ((d0, d1), bad)
    s = read_fcs(_rewrite_data_offsets(raw, header, text), preprocess=False)
    np.testing.assert_array_equal(s.events, expected)
    assert s.extra["offsets"]["data_source"] == ("TEXT" if wrong == "header" else "HEADER")
    assert any("disagree" in w for w in s.extra["warnings"])


def test_10bit_values_in_16bit_words_are_masked():
    n = 40
    vals = [RNG.integers(0, 1024, n), RNG.integers(0, 1024, n)]
    junk = [v | (RNG.integers(0, 64, n) << 10) for v in vals]  # flags in bits 10-15 (Coulter XL)
    kw = int_keywords(["FS", "SS"], [10, 10], [1024, 1024], tot=n, byteord="1,2")
    s = read_fcs(build_fcs(kw, pack_columns(junk, [2, 2], "1,2"), version="FCS2.0"), preprocess=False)
    np.testing.assert_array_equal(s.events, np.column_stack(vals))


def test_packed_10bit_data_is_unsupported():
    kw = int_keywords(["FS", "SS"], [10, 10], [1024, 1024], tot=8, byteord="1,2")
    with pytest.raises(FCSUnsupportedError, match="packed"):
        read_fcs(build_fcs(kw, b"\0" * 20, version="FCS2.0"))


@pytest.mark.parametrize("byteord", ["1,2,3,4", "4,3,2,1"])
def test_mixed_widths_8_16_24_32(byteord):
    n = 64
    bits = [8, 16, 24, 32, 16]
    ranges = [256, 65536, 2**24, 2**32, 1000]  # last one needs the 1023 mask
    cols = [RNG.integers(0, 2**b, n, dtype=np.uint64) for b in bits]
    kw = int_keywords([f"C{i}" for i in range(5)], bits, ranges, tot=n, byteord=byteord)
    s = read_fcs(build_fcs(kw, pack_columns(cols, [b // 8 for b in bits], byteord)), preprocess=False)
    expected = np.column_stack(cols).astype(np.float64)
    expected[:, 4] = np.bitwise_and(np.column_stack(cols)[:, 4], 1023)
    np.testing.assert_array_equal(s.events, expected)


@pytest.mark.parametrize("byteord", ["3,4,1,2", "2,1,4,3", "1,2,3,4", "4,3,2,1"])
def test_odd_byte_orders_int32_and_float32(byteord):
    n = 30
    ints = RNG.integers(0, 2**32, n, dtype=np.uint64)
    kw = int_keywords(["X"], [32], [2**32], tot=n, byteord=byteord)
    s = read_fcs(build_fcs(kw, pack_columns([ints], [4], byteord)), preprocess=False)
    np.testing.assert_array_equal(s.events[:, 0], ints.astype(np.float64))

    floats = RNG.normal(size=n).astype(np.float32)
    kwf = int_keywords(["Y"], [32], [1024], tot=n, byteord=byteord, datatype="F")
    s = read_fcs(build_fcs(kwf, pack_columns([floats.view(np.uint32)], [4], byteord)), preprocess=False)
    assert s.events.dtype == np.float32
    np.testing.assert_array_equal(s.events[:, 0], floats)


def test_double_data():
    values = RNG.normal(size=(25, 3))
    kw = int_keywords(["A", "B", "C"], [64] * 3, [1] * 3, tot=25, datatype="D", byteord="4,3,2,1")
    s = read_fcs(build_fcs(kw, values.astype(">f8").tobytes()))
    assert s.events.dtype == np.float64
    np.testing.assert_array_equal(s.events, values)


def test_pnb_star_for_float_data():
    values = RNG.normal(size=(10, 2)).astype(np.float32)
    kw = int_keywords(["A", "B"], ["*", "*"], [1, 1], tot=10, datatype="F")
    np.testing.assert_array_equal(read_fcs(build_fcs(kw, values.astype("<f4").tobytes())).events, values)


def test_latin1_text_never_crashes():
    raw, _ = _simple(extra={"$P1S": "CD7 \u00b5-chain", "$CYT": "Cytom\u00e8tre"}, encoding="latin-1")
    s = read_fcs(raw)
    assert s.markers[0] == "CD7 \u00b5-chain" and s.metadata["$cyt"] == "Cytom\u00e8tre"
    assert any("latin-1" in w for w in s.extra["warnings"])
    utf8, _ = _simple(extra={"$P1S": "CD7 \u00b5-chain"})
    assert read_fcs(utf8).markers[0] == "CD7 \u00b5-chain"


def test_duplicate_pnn_made_unique():
    kw = int_keywords(["FL1", "FL1", "fl1_2"], [16] * 3, [1024] * 3, tot=2)
    s = read_fcs(build_fcs(kw, b"\0" * 12))
    assert s.channels == ("FL1", "FL1_3", "fl1_2")
    assert s.extra["original_channels"] == ("FL1", "FL1", "fl1_2")
    assert s.metadata["$P2N"] == "FL1"


def test_ascii_datatype_is_unsupported():
    kw = int_keywords(["A"], [8], [1024], tot=1, datatype="A")
    with pytest.raises(FCSUnsupportedError, match="ASCII"):
        read_fcs(build_fcs(kw, b"12345678"), name="ascii.fcs")


def test_oversize_tot_rejected_before_allocation():
    kw = int_keywords(["A", "B"], [32, 32], [2**32, 2**32], tot=10**12, datatype="F")
    raw = build_fcs(kw, b"\0" * 80)
    tracemalloc.start()
    try:
        with pytest.raises(FCSDataError, match=r"declares 1,000,000,000,000 events of 8 bytes .* holds 80 bytes"):
            read_fcs(raw, name="huge.fcs")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_supplemental_text_is_merged():
    raw, expected = _simple(extra={"$BEGINSTEXT": "0" * 8, "$ENDSTEXT": "0" * 8})
    stext = b"/SUPPL KEY/hello/$CYT/From STEXT/"
    s0 = len(raw)
    patched = raw.replace(b"$BEGINSTEXT/00000000", f"$BEGINSTEXT/{s0:08d}".encode()).replace(
        b"$ENDSTEXT/00000000", f"$ENDSTEXT/{s0 + len(stext) - 1:08d}".encode()
    ) + stext
    s = read_fcs(patched, preprocess=False)
    np.testing.assert_array_equal(s.events, expected)
    assert s.metadata["suppl key"] == "hello" and s.metadata["$CYT"] == "From STEXT"


def test_text_at_unusual_offset():
    raw, expected = _simple(text_start=311)
    np.testing.assert_array_equal(read_fcs(raw, preprocess=False).events, expected)


def test_multi_dataset_follows_nextdata():
    first, e1 = _simple(n=10)
    second, e2 = _simple(n=7, version="FCS3.0")
    third, e3 = _simple(n=3)
    first, second = _set_nextdata(first, 0), _set_nextdata(second, 0)  # widen the field first
    first = _set_nextdata(first, len(first))
    second = _set_nextdata(second, len(second))
    raw = first + second + third
    infos = list_datasets(raw)
    assert [i.offset for i in infos] == [0, len(first), len(first) + len(second)]
    assert [i.tot for i in infos] == [10, 7, 3]
    for k, expected in enumerate((e1, e2, e3)):
        s = read_fcs(raw, dataset=k, preprocess=False)
        np.testing.assert_array_equal(s.events, expected)
        assert s.dataset == k
    with pytest.raises(FCSError, match="has 3 data set"):
        read_fcs(raw, dataset=3)


def _set_nextdata(raw: bytes, value: int) -> bytes:
    """Set $NEXTDATA in place (same width: pads the original '0' field to 10 digits first)."""
    i = raw.index(b"$NEXTDATA/") + len(b"$NEXTDATA/")
    j = raw.index(b"/", i)
    width = 10
    grown = raw[:i] + b"0" * width + raw[j:]
    grown = _shift_offsets(grown, width - (j - i))
    return grown[:i] + str(value).zfill(width).encode() + grown[i + width :]


def test_nextdata_zero_padded_garbage_or_beyond_file_are_ignored():
    raw, _ = _simple(n=5)
    assert len(list_datasets(_set_nextdata(raw, 0))) == 1  # zero-padded $NEXTDATA means none
    garbage = _set_nextdata(raw, 0).replace(b"$NEXTDATA/0000000000", b"$NEXTDATA/-000000001")
    assert len(list_datasets(garbage)) == 1
    assert any("not a number" in w for w in read_fcs(garbage).extra["warnings"])
    beyond = _set_nextdata(raw, 10**9)
    infos = list_datasets(beyond)
    assert len(infos) == 1
    assert any("beyond" in w for w in read_fcs(beyond).extra["warnings"])


def test_preprocess_log_gain_and_timestep():
    n = 20
    x = RNG.integers(0, 1024, (n, 3))
    kw = int_keywords(["FL1-H", "FSC-H", "Time"], [16] * 3, [1024] * 3, tot=n,
                      extra={"$P1E": "4,0", "$P2G": "2.5", "$P3G": "4", "$TIMESTEP": "0.01"})
    data = pack_columns([x[:, 0], x[:, 1], x[:, 2]], [2, 2, 2], "1,2,3,4")
    s = read_fcs(build_fcs(kw, data))
    np.testing.assert_allclose(s.events[:, 0], 10 ** (4 * x[:, 0] / 1024), rtol=1e-14)  # f2=0 -> 1
    np.testing.assert_allclose(s.events[:, 1], x[:, 1] / 2.5, rtol=1e-14)
    np.testing.assert_allclose(s.events[:, 2], x[:, 2] * 0.01, rtol=1e-14)  # time: never gain-scaled


@pytest.mark.parametrize(
    "mutation, error",
    [
        (lambda r: r[:30], FCSError),
        (lambda r: b"XYZ" + r[3:], FCSError),
        (lambda r: r.replace(b"$DATATYPE/I", b"$DATATYPE/Q"), FCSTextError),
        (lambda r: r.replace(b"$PAR/2", b"$PAR/x"), FCSTextError),
        (lambda r: r.replace(b"$BYTEORD/1,2,3,4", b"$BYTEORD/1,1,3,4"), FCSTextError),
        (lambda r: r[:-10], FCSDataError),
    ],
)
def test_bad_files_raise_fcs_errors_naming_the_file(mutation, error):
    raw, _ = _simple()
    with pytest.raises(error) as info:
        read_fcs(mutation(raw), name="bad.fcs")
    assert str(info.value).startswith("bad.fcs: ")


def test_spillover_read_and_bad_matrix_does_not_stop_reading(shared_data):
    pytest.importorskip("cd7flow.compensation")
    good = read_fcs(shared_data / "flowkit/data/test_comp_example.fcs")
    assert good.spillover is not None and "PE-A" in good.spillover.channels
    bad = "fcsparser/fcsparser/tests/data/FlowCytometers/MiltenyiBiotec/FCS3.1/EY_2013-07-19_PBS_FCS_3.1_Well_A1.001.fcs"
    with pytest.warns(UserWarning, match="spillover matrix ignored"):
        s = read_fcs(shared_data / bad)  # its $SPILLOVER lists 6 names and no values
    assert s.spillover is None and "spillover_error" in s.extra and s.n_events == 10000
