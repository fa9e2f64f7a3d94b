"""Fuzzing the FCS reader: whatever the bytes, the only exception is an FCSError.

Mutations (fixed seed, so CI is reproducible) of a few small corpus files and of
a synthetic file: truncation, flipped bytes in HEADER and TEXT, keyword values
replaced by garbage / negative / huge numbers or removed; plus hypothesis-built
TEXT segments. Successful reads are fine, but they must give a well-formed Sample.
The number of cases run is N_MUTATION_CASES + N_HYPOTHESIS_CASES (quote it).
"""
from __future__ import annotations

import random
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cd7flow.errors import FCSError
from cd7flow.io.fcs_read import list_datasets, read_fcs
from test_fcs_read import build_fcs, int_keywords, pack_bits, pack_columns

SEED = 20240607
CASES_PER_SOURCE = 450
N_HYPOTHESIS_CASES = 400
CORPUS_FILES = [
    "flowkit/data/gate_ref/data1.fcs",
    "flowkit/data/multi_dataset_fcs/coulter.lmd",
    "flowio/data/fcs_files/variable_int_example.fcs",
    "fcsparser/fcsparser/tests/data/FlowCytometers/cyflow_cube_8/cyflow_cube_8.fcs",
    "cytoflow/cytoflow/tests/data/module_examples/stabilize.fcs",
    "flowkit/data/noncompliant/data_stop_offset_discrepancy_example.fcs",
]
# Sources: the corpus files above plus three synthetic files (plain, FCS 3.2 mixed types, bit-packed).
N_MUTATION_CASES = CASES_PER_SOURCE * (len(CORPUS_FILES) + 3)

KEYWORDS = [b"$TOT", b"$PAR", b"$P1B", b"$P2B", b"$BYTEORD", b"$BEGINDATA", b"$ENDDATA", b"$DATATYPE",
            b"$NEXTDATA", b"$P1R", b"$P1E", b"$P1N", b"$MODE", b"$TIMESTEP", b"$BEGINSTEXT", b"$P2G",
            b"$P1DATATYPE", b"$P2DATATYPE", b"$P1TYPE", b"$P2DISPLAY", b"$P1L", b"$UNSTAINEDCENTERS"]
GARBAGE = [b"", b" ", b"-1", b"0", b"x", b"*", b"99999999999999999999999", b"1e5", b"2147483648",
           b"18446744073709551616", b"4,3", b"1,2,3,4,5", b"0,0,0", b"nan", b"inf", b"-5,2", b"A", b"D",
           b"C", b"3", b"7", b"\xff\xfe", b"1,,2", b"10,", b"64", b"65", b"12"]


def _synthetic() -> bytes:
    rng = np.random.default_rng(1)
    cols = [rng.integers(0, 1024, 40) for _ in range(3)]
    kw = int_keywords(["FSC-A", "SSC-A", "Time"], [16, 16, 32], [1024, 1024, 4096], tot=40,
                      extra={"$P1E": "4,1", "$P2G": "2", "$TIMESTEP": "0.1"})
    return build_fcs(kw, pack_columns(cols, [2, 2, 4], "1,2,3,4"))


def _synthetic_32() -> bytes:
    """FCS 3.2 with $PnDATATYPE (I16, F32, I32) and $PnTYPE/$PnDISPLAY/$UNSTAINEDCENTERS."""
    rng = np.random.default_rng(2)
    rec = np.zeros(30, dtype=[("a", "<u2"), ("b", "<f4"), ("c", "<u4")])
    rec["a"], rec["b"], rec["c"] = rng.integers(0, 1024, 30), rng.normal(size=30), rng.integers(0, 4096, 30)
    kw = int_keywords(["FSC-A", "CD7", "Clock"], [16, 32, 32], [1024, 1024, 4096], tot=30, extra={
        "$P2DATATYPE": "F", "$P3TYPE": "Time", "$P2DISPLAY": "LOG,1,1000", "$P1L": "488",
        "$UNSTAINEDCENTERS": "1,CD7,3.5", "$TIMESTEP": "0.01", "$P1E": "3,1"})
    del kw["$MODE"]
    return build_fcs(kw, rec.tobytes(), version="FCS3.2", header_data="zero")


def _synthetic_packed() -> bytes:
    rng = np.random.default_rng(3)
    bits = [10, 10, 12]
    cols = [rng.integers(0, 2**b, 24) for b in bits]
    kw = int_keywords(["FS", "SS", "FL1"], bits, [1024, 1000, 4096], tot=24, byteord="4,3,2,1")
    return build_fcs(kw, pack_bits(cols, bits, big_endian=True), version="FCS2.0")


def _text_span(raw: bytes) -> tuple[int, int]:
    try:
        return int(raw[10:18]), int(raw[18:26])
    except ValueError:
        return 58, min(len(raw) - 1, 600)


def _edit_keyword(raw: bytes, rnd: random.Random) -> bytes:
    t0, t1 = _text_span(raw)
    if t1 >= len(raw) or t0 >= t1:
        return raw
    delim = raw[t0 : t0 + 1]
    key = rnd.choice(KEYWORDS)
    m = re.search(re.escape(key + delim) + b"([^" + re.escape(delim) + b"]*)" + re.escape(delim), raw[t0 : t1 + 1],
                  re.IGNORECASE)
    if m is None:
        return raw
    lo, hi = t0 + m.start(1), t0 + m.end(1)
    if rnd.random() < 0.15:  # drop the keyword and its value
        return raw[: t0 + m.start()] + raw[hi + 1 :]
    return raw[:lo] + rnd.choice(GARBAGE) + raw[hi:]


def _mutate(raw: bytes, rnd: random.Random) -> bytes:
    kind = rnd.randrange(5)
    if kind == 0:  # truncation at a random point
        return raw[: rnd.randrange(len(raw))]
    data = bytearray(raw)
    if kind == 1:  # flipped HEADER bytes
        for _ in range(rnd.randint(1, 3)):
            data[rnd.randrange(58)] = rnd.randrange(256)
        return bytes(data)
    if kind == 2:  # flipped TEXT bytes
        t0, t1 = _text_span(raw)
        t1 = min(t1, len(raw) - 1)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randint(min(t0, t1), t1)] = rnd.randrange(256)
        return bytes(data)
    # edited keyword values (one to three edits)
    out = raw
    for _ in range(rnd.randint(1, 3)):
        out = _edit_keyword(out, rnd)
    return out


def _check(raw: bytes, name: str) -> str:
    """Read every way a caller would; return 'ok' or 'error'. Any non-FCSError propagates."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n_sets = len(list_datasets(raw, name=name))
            for k in range(min(n_sets, 3)):
                for pre in (False, True):
                    s = read_fcs(raw, dataset=k, preprocess=pre, name=name)
                    assert s.events.ndim == 2 and s.events.shape[1] == len(s.channels) == len(s.markers)
                    assert s.events.dtype in (np.float32, np.float64)
    except FCSError as exc:
        assert str(exc).startswith(f"{name}: ")
        return "error"
    return "ok"


def _sources(shared_data):
    out = [("synthetic.fcs", _synthetic()), ("mixed32.fcs", _synthetic_32()), ("packed.fcs", _synthetic_packed())]
    for rel in CORPUS_FILES:
        out.append((rel.rsplit("/", 1)[-1], (shared_data / rel).read_bytes()))
    return out


def test_mutations_only_raise_fcs_errors(shared_data):
    rnd = random.Random(SEED)
    outcomes = {"ok": 0, "error": 0}
    cases = 0
    for name, raw in _sources(shared_data):
        assert _check(raw, name) == "ok"
        for i in range(CASES_PER_SOURCE):
            mutated = _mutate(raw, rnd)
            try:
                outcomes[_check(mutated, name)] += 1
            except Exception as exc:  # report the reproducible case, then fail
                pytest.fail(f"case {i} of {name} (seed {SEED}) raised {type(exc).__name__}: {exc}")
            cases += 1
    assert cases == N_MUTATION_CASES
    print(f"fuzz: {cases} mutation cases, {outcomes['ok']} read, {outcomes['error']} FCSError")
    # The mutations must exercise both outcomes, or they are not testing much.
    assert outcomes["ok"] > cases // 10 and outcomes["error"] > cases // 10


_key = st.sampled_from([k.decode() for k in KEYWORDS] + ["$P3N", "$CYT", "SPILL", "$PAR", "$TOT", "$P3DATATYPE"])
_value = st.one_of(
    st.sampled_from([g.decode("latin-1") for g in GARBAGE]),
    st.integers(-10, 10**12).map(str),
    st.text(min_size=0, max_size=12),
)


@settings(max_examples=N_HYPOTHESIS_CASES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=st.lists(st.tuples(_key, _value), max_size=25),
    delim=st.sampled_from([b"/", b"|", b"\\", b"\x0c", b"*", b" "]),
    data=st.binary(max_size=300),
    header_data=st.sampled_from(["auto", "zero", "blank", (58, 10**7), (10**7, 5)]),
    version=st.sampled_from(["FCS2.0", "FCS3.0", "FCS3.1", "FCS3.2", "FCS4.0"]),
    final=st.booleans(),
)
def test_hypothesis_text_segments_only_raise_fcs_errors(pairs, delim, data, header_data, version, final):
    base = int_keywords(["A", "B"], [16, 16], [1024, 1024], tot=len(data) // 4)
    base.update(dict(pairs))
    raw = build_fcs(base, data, delim=delim, header_data=header_data, version=version, final_delimiter=final,
                    text_data=None if "$BEGINDATA" in dict(pairs) else "auto")
    _check(raw, "hyp.fcs")


@settings(max_examples=N_HYPOTHESIS_CASES // 4, derandomize=True, deadline=None)
@given(text=st.binary(min_size=0, max_size=400), tail=st.binary(max_size=64))
def test_hypothesis_raw_text_bytes_only_raise_fcs_errors(text, tail):
    header = f"FCS3.1    {58:8d}{57 + max(len(text), 1):8d}{0:8d}{0:8d}{0:8d}{0:8d}".encode()
    _check(header + text + tail, "raw.fcs")
