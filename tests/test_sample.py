"""Sample: identity equality with an explicit content comparison, sha256 from the bytes read
(never a hidden re-read), inputs left as they were, and per-channel ChannelInfo records."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cd7flow.compensation import SpilloverMatrix, compensate
from cd7flow.io.fcs_read import read_fcs
from cd7flow.io.fcs_write import write_fcs
from cd7flow.sample import CaseInsensitiveDict, ChannelInfo, Sample


def _sample(events=None) -> Sample:
    ev = np.array([[1.0, 2.0, 10.0], [3.0, 4.0, 20.0], [5.0, 6.0, 30.0]]) if events is None else events
    spill = SpilloverMatrix(("FL1-A", "FL2-A"), np.array([[1.0, 0.1], [0.05, 1.0]]), source="test")
    return Sample(ev, ("FL1-A", "FL2-A", "Time"), ("CD7", "", ""), CaseInsensitiveDict({"$TOT": "3"}),
                  np.array([1024.0, 1024.0, 4096.0]), spillover=spill)


def test_equality_is_identity_and_equals_compares_content():
    a, b = _sample(), _sample()
    assert a == a and a != b and not (a == b)  # no "truth value of an array is ambiguous"
    assert a in [a] and len({a, b}) == 2  # hashable by identity
    assert a.equals(b) and b.equals(a)
    c = _sample(np.where(np.eye(3, dtype=bool), np.nan, 1.0))
    assert c.equals(_sample(np.where(np.eye(3, dtype=bool), np.nan, 1.0)))  # NaN == NaN in content
    assert not a.equals(c) and not a.equals("a sample")


def test_inputs_are_not_mutated():
    ranges = np.array([1024.0, 1024.0, 4096.0])
    events = np.arange(9, dtype=np.float64).reshape(3, 3)
    s = Sample(events.copy(), ("FL1-A", "FL2-A", "Time"), ("", "", ""), CaseInsensitiveDict({}), ranges)
    assert ranges.flags.writeable and not s.ranges.flags.writeable
    before = s.events.copy()
    spill = SpilloverMatrix(("FL1-A", "FL2-A"), np.array([[1.0, 0.1], [0.05, 1.0]]))
    out = compensate(s, spill)
    assert np.array_equal(s.events, before) and out is not s and out.events is not s.events
    want = before[:, :2] @ np.linalg.inv(spill.matrix)
    np.testing.assert_allclose(out.events[:, :2], want, rtol=1e-12)
    sub = s.subset(np.array([True, False, True]))
    assert sub.n_events == 2 and np.array_equal(s.events, before) and sub.extra is not s.extra


def test_sha256_is_computed_once_from_the_bytes_read(tmp_path: Path, monkeypatch):
    f = write_fcs(tmp_path / "a.fcs", _sample())
    s = read_fcs(f)
    assert s.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()
    f.unlink()  # compensating, subsetting and asking for the hash again must not touch the file
    import builtins

    real_open = builtins.open

    def guarded_open(file, *a, **k):
        if str(file) == str(f):
            raise AssertionError("the FCS file was opened again")
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded_open)
    assert compensate(s).sha256 == s.sha256
    assert s.subset(np.ones(s.n_events, dtype=bool)).sha256 == s.sha256


def test_compute_sha256_is_explicit():
    s = _sample()
    assert s.sha256 is None
    assert s.compute_sha256(b"abc") == hashlib.sha256(b"abc").hexdigest() == s.sha256


def test_channel_info_records(tmp_path: Path):
    s = read_fcs(write_fcs(tmp_path / "b.fcs", _sample()))
    info = s.channel_info
    assert [c.name for c in info] == list(s.channels) == ["FL1-A", "FL2-A", "Time"]
    assert [c.marker for c in info] == list(s.markers) == ["CD7", "", ""]
    assert [c.range for c in info] == list(s.ranges) == [1024.0, 1024.0, 4096.0]
    assert [c.index for c in info] == [0, 1, 2] and [c.is_time for c in info] == [False, False, True]
    assert info[0].label == "FL1-A (CD7)" and info[1].label == "FL2-A"
    assert info[0].details["range"] == 1024.0 and "datatype" in info[0].details
    with pytest.raises(TypeError):
        info[0].details["range"] = 1.0  # read-only
    with pytest.raises(AttributeError):
        info[0].name = "x"  # frozen
    assert isinstance(info[0], ChannelInfo)
    memory = _sample().channel_info  # built in memory: no file details
    assert memory[2].file_name == "Time" and dict(memory[2].details) == {}
