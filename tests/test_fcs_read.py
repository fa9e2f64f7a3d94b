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


def test_sha256_is_of_the_bytes_read_and_never_reread(tmp_path):
    import hashlib

    raw, _ = _simple()
    f = tmp_path / "a.fcs"
    f.write_bytes(raw)
    s = read_fcs(f)
    assert s.sha256 == hashlib.sha256(raw).hexdigest()
    f.write_bytes(raw + b"x")  # changed (or gone) after reading: the hash is still of what was read
    f.unlink()
    assert s.sha256 == hashlib.sha256(raw).hexdigest()
    assert s.subset(s.events[:, 0] > 0).sha256 == s.sha256


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


def test_ascii_fixed_width_data():
    """$DATATYPE A, $PnB = characters per value (deprecated in FCS 3.1 but readable)."""
    kw = int_keywords(["A", "B", "C"], [4, 6, 3], [10000, 1000000, 1024], tot=3, datatype="A",
                      extra={"$P3E": "3,1"})
    data = b"0012" + b"  4567" + b"512" + b"9999" + b"000000" + b"  0" + b"   7" + b"      " + b"999"
    s = read_fcs(build_fcs(kw, data, version="FCS3.0"), preprocess=False)
    np.testing.assert_array_equal(s.events, [[12, 4567, 512], [9999, 0, 0], [7, 0, 999]])
    assert s.extra["layout"] == "ascii" and s.events.dtype == np.float64
    pre = read_fcs(build_fcs(kw, data, version="FCS3.0"))  # ASCII values are integers: log decoded
    np.testing.assert_allclose(pre.events[:, 2], 10 ** (3 * np.array([512, 0, 999]) / 1024), rtol=1e-14)
    with pytest.raises(FCSDataError, match="not a digit"):
        read_fcs(build_fcs(kw, data.replace(b"9999", b"9x99"), version="FCS3.0"), name="a.fcs")


def test_ascii_free_format_data():
    kw = int_keywords(["A", "B"], ["*", "*"], [1024, 1024], tot=3, datatype="A")
    data = b"12,7\t 3\r\n\n0 1023,,5\n"
    s = read_fcs(build_fcs(kw, data, version="FCS2.0"), preprocess=False)
    np.testing.assert_array_equal(s.events, [[12, 7], [3, 0], [1023, 5]])
    with pytest.raises(FCSDataError, match="holds 5 values"):
        read_fcs(build_fcs(kw, b"1 2 3 4 5", version="FCS2.0"))
    with pytest.raises(FCSDataError, match="not a number"):
        read_fcs(build_fcs(kw, b"1 2 3 4 5 x", version="FCS2.0"))
    with pytest.raises(FCSDataError, match="no DATA offsets"):
        read_fcs(build_fcs(kw, b"1 2 3 4 5 6", version="FCS2.0", header_data=(9000, 9100), text_data=(9000, 9100)))
    mixed = int_keywords(["A", "B"], ["*", "4"], [1024, 1024], tot=1, datatype="A")
    with pytest.raises(FCSUnsupportedError, match=r"\$PnB \*"):
        read_fcs(build_fcs(mixed, b"1 2", version="FCS2.0"))


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


# ----------------------------------------------------------------------------------------------
# Standard completeness: FCS 3.1 / 3.2 rules, each on a file built here byte by byte
# ----------------------------------------------------------------------------------------------
def pack_bits(columns: list[np.ndarray], bits: list[int], big_endian: bool) -> bytes:
    """A continuous bit stream, built with Python integers (independent of the reader's numpy code).

    Little-endian: the stream's bit 0 is the least significant bit of byte 0 and each field
    starts with its least significant bit. Big-endian: the stream starts at the most
    significant bit of byte 0 and each field starts with its most significant bit.
    """
    n = len(columns[0])
    total_bits = n * sum(bits)
    nbytes = (total_bits + 7) // 8
    if big_endian:
        text = "".join(format(int(col[e]), f"0{b}b") for e in range(n) for col, b in zip(columns, bits))
        text += "0" * (8 * nbytes - total_bits)
        return int(text, 2).to_bytes(nbytes, "big") if text else b""
    acc, pos = 0, 0
    for e in range(n):
        for col, b in zip(columns, bits):
            acc |= int(col[e]) << pos
            pos += b
    return acc.to_bytes(nbytes, "little")


@pytest.mark.parametrize("byteord, version", [("1,2,3,4", "FCS3.0"), ("4,3,2,1", "FCS3.0"), ("1,2", "FCS2.0"),
                                              ("2,1", "FCS2.0")])
def test_packed_bit_stream_is_unpacked(byteord, version):
    n = 37  # 37 x 35 bits: the stream ends in the middle of a byte
    bits = [10, 10, 12, 3]
    ranges = [1024, 1000, 100, 8]  # 1000 -> 10 bits (no change); 100 -> 7 bits of the 12 stored
    cols = [RNG.integers(0, 2**b, n, dtype=np.uint64) for b in bits]
    kw = int_keywords(["FS", "SS", "FL1", "FLAG"], bits, ranges, tot=n, byteord=byteord)
    raw = build_fcs(kw, pack_bits(cols, bits, big_endian=byteord.startswith(("4", "2"))), version=version)
    s = read_fcs(raw, preprocess=False)
    expected = np.column_stack(cols).astype(np.int64)
    expected[:, 2] &= 127
    np.testing.assert_array_equal(s.events, expected)
    assert s.extra["layout"] == "packed"
    assert any("packed bit stream of 35 bits" in w for w in s.extra["warnings"])


def test_packed_fields_up_to_57_bits_and_one_byte_too_long_span():
    n = 21
    bits = [57, 5, 33, 1]
    cols = [RNG.integers(0, 2**b, n, dtype=np.uint64) for b in bits]
    kw = int_keywords(["A", "B", "C", "D"], bits, [2**b for b in bits], tot=n, byteord="4,3,2,1")
    data = pack_bits(cols, bits, big_endian=True)
    raw = build_fcs(kw, data, version="FCS3.0", trailing=b"\0")
    d0, d1 = int(raw[26:34]), int(raw[34:42])
    raw = _rewrite_data_offsets(raw, (d0, d1 + 1), (d0, d1 + 1))  # the common "end one past" error
    s = read_fcs(raw, preprocess=False)
    assert s.extra["layout"] == "packed"
    # float64 holds every value below 2**53 exactly; compare the 57-bit column as integers
    np.testing.assert_array_equal(s.events[:, 1:], np.column_stack(cols[1:]).astype(np.float64))
    np.testing.assert_array_equal(s.events[:, 0], cols[0].astype(np.float64))


def test_packed_with_a_mixed_byte_order_is_refused():
    bits = [10, 10]
    cols = [RNG.integers(0, 1024, 8, dtype=np.uint64) for _ in bits]
    kw = int_keywords(["FS", "SS"], bits, [1024, 1024], tot=8, byteord="3,4,1,2")
    with pytest.raises(FCSUnsupportedError, match="packed bit stream") as info:
        read_fcs(build_fcs(kw, pack_bits(cols, bits, False), version="FCS3.0"), name="p.fcs")
    assert str(info.value).startswith("p.fcs: ")


def test_odd_pnb_without_a_matching_span_is_read_as_words_or_rejected():
    kw = int_keywords(["FS", "SS"], [10, 10], [1024, 1024], tot=8, byteord="1,2")
    raw = build_fcs(kw, b"\0" * 7, version="FCS2.0")  # neither 32 (words) nor 20 (packed) bytes
    with pytest.raises(FCSDataError):
        read_fcs(raw, name="short.fcs")


def _mixed_file(byteord="1,2,3,4", version="FCS3.2", datatype="I", n=33, extra=None):
    """FCS 3.2 mixed columns: I16, F32, D64, I8, I32 (with $PnR masks on the integer ones)."""
    big = byteord == "4,3,2,1"
    e = ">" if big else "<"
    i16 = RNG.integers(0, 2**16, n).astype(np.uint16)
    f32 = RNG.normal(0, 5000, n).astype(np.float32)
    d64 = RNG.normal(0, 1e6, n)
    i8 = RNG.integers(0, 256, n).astype(np.uint8)
    i32 = RNG.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    rec = np.zeros(n, dtype=[("a", e + "u2"), ("b", e + "f4"), ("c", e + "f8"), ("d", "u1"), ("e", e + "u4")])
    rec["a"], rec["b"], rec["c"], rec["d"], rec["e"] = i16, f32, d64, i8, i32
    kw = int_keywords(["FSC-A", "CD7", "Ratio", "Flag", "Time"], [16, 32, 64, 8, 32],
                      [1000, 1024, 1, 256, 2**32], tot=n, byteord=byteord, datatype=datatype)
    del kw["$MODE"]  # FCS 3.2 removed $MODE
    kw.update({"$P1DATATYPE": "I", "$P2DATATYPE": "F", "$P3DATATYPE": "D", "$P4DATATYPE": "I", "$P5DATATYPE": "I",
               "$CYT": "Synthetic 3.2"})
    kw.update(extra or {})
    expected = np.column_stack([i16.astype(np.float64) .astype(np.int64) & 1023, f32.astype(np.float64), d64,
                                i8.astype(np.float64), i32.astype(np.float64)])
    return build_fcs(kw, rec.tobytes(), version=version, header_data="zero"), expected


@pytest.mark.parametrize("byteord", ["1,2,3,4", "4,3,2,1"])
@pytest.mark.parametrize("datatype", ["I", "F", "A"])
def test_pndatatype_mixes_integer_and_float_columns(byteord, datatype):
    raw, expected = _mixed_file(byteord, datatype=datatype)
    s = read_fcs(raw, preprocess=False)
    assert s.events.dtype == np.float64 and s.events.flags.c_contiguous
    np.testing.assert_array_equal(s.events, expected)  # the F column keeps values above its $PnR (no mask)
    assert s.extra["column_types"] == ("I", "F", "D", "I", "I")
    assert s.extra["offsets"]["data_source"] == "TEXT"  # FCS 3.2: HEADER DATA offsets may be 0
    assert [c["datatype"] for c in s.extra["channel_info"]] == ["I", "F", "D", "I", "I"]


def test_pndatatype_float_everywhere_keeps_the_float32_path():
    values = RNG.normal(size=(12, 2)).astype(np.float32)
    kw = int_keywords(["A", "B"], [32, 32], [1024, 1024], tot=12, datatype="I",
                      extra={"$P1DATATYPE": "F", "$P2DATATYPE": "f"})
    s = read_fcs(build_fcs(kw, values.astype("<f4").tobytes(), version="FCS3.2"), preprocess=False)
    assert s.events.dtype == np.float32
    np.testing.assert_array_equal(s.events, values)


def test_pndatatype_problems():
    raw, _ = _mixed_file(extra={"$P3DATATYPE": "Q"})
    with pytest.raises(FCSTextError, match=r"\$P3DATATYPE"):
        read_fcs(raw, name="q.fcs")
    kw = int_keywords(["A", "B"], [8, 8], [256, 256], tot=2, datatype="A", extra={"$P1DATATYPE": "I"})
    with pytest.raises(FCSUnsupportedError, match="ASCII"):
        read_fcs(build_fcs(kw, b"1234", version="FCS3.2"))
    old, expected = _mixed_file(version="FCS3.1")  # honoured, with a warning, outside 3.2
    s = read_fcs(old, preprocess=False)
    np.testing.assert_array_equal(s.events, expected)
    assert any("FCS 3.2 keyword" in w for w in s.extra["warnings"])


def test_pndatatype_preprocess_logs_only_integer_columns():
    n = 16
    x = RNG.integers(0, 1024, n).astype("<u2")
    y = RNG.normal(100, 10, n).astype("<f4")
    rec = np.zeros(n, dtype=[("x", "<u2"), ("y", "<f4")])
    rec["x"], rec["y"] = x, y
    kw = int_keywords(["FL1-H", "FL2-A"], [16, 32], [1024, 1024], tot=n, datatype="I",
                      extra={"$P2DATATYPE": "F", "$P1E": "4,1", "$P2E": "4,1", "$P2G": "2"})
    s = read_fcs(build_fcs(kw, rec.tobytes(), version="FCS3.2"))
    np.testing.assert_allclose(s.events[:, 0], 10 ** (4 * x / 1024), rtol=1e-14)
    np.testing.assert_array_equal(s.events[:, 1], y.astype(np.float64))  # $PnE on F ignored, and not gain-scaled
    assert any("log decoding applies to integer data only" in w for w in s.extra["warnings"])


def test_pnr_masks_use_ceil_log2_bits_and_never_exceed_pnb():
    n = 50
    bits = [16, 16, 16, 16, 32]
    ranges = [1000, 1025, 2**20, 1024.0, 5_000_000]  # 10 bits, 11 bits, > 2**16 (no mask), 10 bits, 23 bits
    cols = [RNG.integers(0, 2**b, n, dtype=np.uint64) for b in bits]
    kw = int_keywords([f"C{i}" for i in range(5)], bits, ranges, tot=n)
    s = read_fcs(build_fcs(kw, pack_columns(cols, [b // 8 for b in bits], "1,2,3,4")), preprocess=False)
    masks = [1023, 2047, 2**16 - 1, 1023, 2**23 - 1]
    expected = np.column_stack([c & np.uint64(m) for c, m in zip(cols, masks)]).astype(np.float64)
    np.testing.assert_array_equal(s.events, expected)


def test_64_bit_integers():
    n = 20
    cols = [RNG.integers(0, 2**53, n, dtype=np.uint64), RNG.integers(0, 2**63, n, dtype=np.uint64)]
    kw = int_keywords(["Big", "Masked"], [64, 64], ["18446744073709551616", "1000"], tot=n, byteord="4,3,2,1")
    s = read_fcs(build_fcs(kw, pack_columns(cols, [8, 8], "4,3,2,1"), version="FCS3.1"), preprocess=False)
    np.testing.assert_array_equal(s.events[:, 0], cols[0].astype(np.float64))  # exact below 2**53
    np.testing.assert_array_equal(s.events[:, 1], (cols[1] & np.uint64(1023)).astype(np.float64))


def test_time_by_pntype_gain_rules_and_channel_info():
    n = 25
    x = RNG.integers(0, 1024, (n, 4))
    kw = int_keywords(["Clock", "FL1-H", "FSC-A", "SSC-A"], [16] * 4, [1024] * 4, tot=n, extra={
        "$P1TYPE": "Time", "$P1G": "3", "$TIMESTEP": "0.5",
        "$P2E": "4,0", "$P2G": "2", "$P2L": "488,405", "$P2V": "550", "$P2DISPLAY": "LOG,1,10000",
        "$P2TYPE": "Fluorescence", "$P2DET": "PMT3",
        "$P3G": "-2", "$P4G": "0", "$P4DISPLAY": "weird",
        "$CYTSN": "SN-42", "$ORIGINALITY": "Original", "$LAST_MODIFIED": "01-JAN-2024 10:00:00",
    })
    s = read_fcs(build_fcs(kw, pack_columns([x[:, k] for k in range(4)], [2] * 4, "1,2,3,4"), version="FCS3.2"))
    np.testing.assert_allclose(s.events[:, 0], x[:, 0] * 0.5, rtol=1e-15)  # time: $TIMESTEP, never $PnG
    np.testing.assert_allclose(s.events[:, 1], 10 ** (4 * x[:, 1] / 1024), rtol=1e-14)  # log: gain ignored
    np.testing.assert_array_equal(s.events[:, 2:], x[:, 2:])  # negative and zero gains ignored
    assert s.extra["time_channel"] == 0
    w = " | ".join(s.extra["warnings"])
    assert "on log-scaled FL1-H ignored" in w and "-2 on FSC-A is not a positive gain" in w and "$P4DISPLAY" in w
    info = s.extra["channel_info"][1]
    assert info["excitation_wavelengths_nm"] == (488.0, 405.0) and info["detector_voltage_v"] == 550.0
    assert info["display"] == ("LOG", 1.0, 10000.0) and info["type"] == "Fluorescence" and info["detector"] == "PMT3"
    assert info["amplification"] == (4.0, 0.0) and info["gain"] == 2.0 and info["range"] == 1024.0
    assert "display" not in s.extra["channel_info"][3]
    assert s.metadata["$cytsn"] == "SN-42" and s.metadata["$ORIGINALITY"] == "Original"


def test_unstained_centers():
    raw, _ = _simple(extra={"$UNSTAINEDCENTERS": "2,FSC-A,SSC-A,12.5,-3"})
    assert read_fcs(raw).extra["unstained_centers"] == {"FSC-A": 12.5, "SSC-A": -3.0}
    for bad in ("2,FSC-A,12.5", "1,Nope,3", "x", "1,FSC-A,abc"):
        s = read_fcs(_simple(extra={"$UNSTAINEDCENTERS": bad})[0])
        assert "unstained_centers" not in s.extra
        assert any("$UNSTAINEDCENTERS" in w for w in s.extra["warnings"])


def test_analysis_segment_and_mode_absent_in_32():
    raw, expected = _simple(version="FCS3.2", extra={"$BEGINANALYSIS": "5", "$ENDANALYSIS": "999999"},
                            trailing=b"garbage analysis")
    raw = raw.replace(b"/$MODE/L", b"/$CYT/L_")  # drop $MODE, keep the TEXT length
    s = read_fcs(raw, preprocess=False)
    np.testing.assert_array_equal(s.events, expected)
    assert "$MODE" not in s.metadata


def test_histogram_mode_is_unsupported():
    raw, _ = _simple(extra={"$MODE": "C"})
    with pytest.raises(FCSUnsupportedError, match="list mode"):
        read_fcs(raw)


def test_mixed_32_file_round_trips_through_the_writer(tmp_path):
    """write_fcs must not copy $PnDATATYPE into its all-float32 FCS 3.1 output."""
    from cd7flow.io.fcs_write import write_fcs

    raw, expected = _mixed_file()
    s = read_fcs(raw, name="mixed.fcs")
    out = write_fcs(tmp_path / "out.fcs", s)
    back = read_fcs(out)
    assert not any(k.upper().endswith("DATATYPE") and k.upper() != "$DATATYPE" for k in back.metadata)
    assert back.extra["version"] == "FCS3.1" and back.extra["column_types"] == ("F",) * 5
    np.testing.assert_array_equal(back.events, expected.astype(np.float32))
    assert back.metadata["$CYT"] == "Synthetic 3.2"


@pytest.mark.parametrize("datatype, bits", [("I", 16), ("F", 32), ("D", 64), ("A", 4), ("A", "*")])
@pytest.mark.parametrize("version", ["FCS2.0", "FCS3.0", "FCS3.1"])
def test_zero_events_with_offsets_zero(datatype, bits, version):
    # FCS 3.1 writes an absent segment's offsets as 0; a 0-event data set has no DATA segment
    kw = int_keywords(["FSC-A", "SSC-A"], [bits, bits], [1024, 1024], tot=0, datatype=datatype)
    raw = build_fcs(kw, b"", version=version, header_data="zero", text_data=(0, 0))
    s = read_fcs(raw, name="empty.fcs")
    assert s.n_events == 0 and s.events.shape == (0, 2) and s.channels == ("FSC-A", "SSC-A")


def test_events_declared_without_a_data_segment_are_still_an_error():
    kw = int_keywords(["FSC-A", "SSC-A"], [16, 16], [1024, 1024], tot=3)
    raw = build_fcs(kw, b"", header_data="zero", text_data=(0, 0))
    with pytest.raises(FCSDataError, match="neither HEADER nor TEXT"):
        read_fcs(raw, name="empty.fcs")
