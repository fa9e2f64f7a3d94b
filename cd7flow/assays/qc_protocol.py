"""The QC protocol file (``cd7flow/protocols/qc.toml``): every limit the QC checks use.

:func:`load_qc_protocol` reads a shipped name (``"qc"``) or a path, checks that every
section and limit is there with a sensible value, and returns a :class:`QCProtocol`
whose ``sha256`` is that of the file's bytes (recorded with every QC result). Every
problem is a :class:`~cd7flow.errors.ProtocolError` naming the file and the key.
"""
from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ProtocolError
from ..protocol import PROTOCOL_DIR

# section -> {key: (lowest allowed, highest allowed)}; None = unbounded. Strings are listed apart.
_NUMBERS: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "events": {"warn_below": (0, None), "fail_below": (0, None), "viable_singlets_warn_below": (0, None),
               "viable_singlets_fail_below": (0, None)},
    "time": {"n_bins": (5, 100000), "n_mad": (0, None), "min_relative_change": (0, None), "guard_bins": (0, 100),
             "removed_warn_above_pct": (0, 100), "removed_fail_above_pct": (0, 100), "gap_warn_above_s": (0, None),
             "gap_fail_above_s": (0, None), "rate_drift_warn_above_pct": (0, None),
             "rate_drift_fail_above_pct": (0, None)},
    "margin": {"warn_above_pct": (0, 100), "fail_above_pct": (0, 100)},
    "doublets": {"n_mad_low": (0, None), "n_mad_high": (0, None), "warn_above_pct": (0, 100),
                 "fail_above_pct": (0, 100)},
    "viability": {"warn_below_pct": (0, 100), "fail_below_pct": (0, 100), "logicle_m": (1, 10)},
    "signal_drift": {"n_segments": (2, 1000), "min_segment_events": (1, None), "cofactor": (0, None),
                     "warn_above": (0, None), "fail_above": (0, None)},
    "compensation": {"condition_warn_above": (1, None), "condition_fail_above": (1, None)},
    "age": {"warn_above_days": (0, None), "fail_above_days": (0, None)},
}
_CHOICES = {("time", "action"): ("remove", "keep"), ("compensation", "missing_status"): ("PASS", "WARN", "FAIL")}
_CHANNEL_KEYS = ("fsc_a", "fsc_h", "ssc_a", "time", "viability")


@dataclass(frozen=True)
class QCProtocol:
    """A validated QC protocol: ``limits[section][key]`` and the channel name lists."""

    name: str
    version: str
    path: str
    sha256: str
    channels: dict[str, tuple[str, ...]]
    limits: dict[str, dict[str, Any]]

    def provenance(self) -> dict[str, str]:
        return {"protocol": self.name, "protocol_version": self.version, "protocol_sha256": self.sha256,
                "protocol_path": self.path}


def qc_protocol_path(name_or_path: str | os.PathLike = "qc", protocol_dir: str | os.PathLike | None = None) -> Path:
    """Where a QC protocol lives: a path as given, else ``protocol_dir/NAME.toml`` if it exists, else shipped."""
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or "/" in text or os.sep in text:
        return Path(text)
    if protocol_dir is not None and (Path(protocol_dir) / f"{text}.toml").is_file():
        return Path(protocol_dir) / f"{text}.toml"
    return PROTOCOL_DIR / f"{text}.toml"


def load_qc_protocol(name_or_path: str | os.PathLike = "qc", protocol_dir: str | os.PathLike | None = None) -> QCProtocol:
    """Read and validate a QC protocol (see the module doc)."""
    path = qc_protocol_path(name_or_path, protocol_dir)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProtocolError(path, f"cannot read QC protocol: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProtocolError(path, f"invalid TOML: {exc}") from None
    head = data.get("protocol", {})
    if head.get("assay") != "qc":
        raise ProtocolError(path, f"protocol.assay must be 'qc' for a QC protocol, got {head.get('assay')!r}")
    for key in ("name", "version"):
        if not isinstance(head.get(key), str) or not head[key]:
            raise ProtocolError(path, f"protocol.{key}: missing or not a string")
    limits: dict[str, dict[str, Any]] = {}
    for section, keys in _NUMBERS.items():
        table = data.get(section)
        if not isinstance(table, dict):
            raise ProtocolError(path, f"[{section}]: missing section")
        for key, (lo, hi) in keys.items():
            value = table.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ProtocolError(path, f"{section}.{key}: missing or not a number ({value!r})")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ProtocolError(path, f"{section}.{key} = {value} is outside [{lo}, {hi if hi is not None else 'inf'}]")
        limits[section] = dict(table)
    for (section, key), allowed in _CHOICES.items():
        if limits[section].get(key) not in allowed:
            raise ProtocolError(path, f"{section}.{key} must be one of {', '.join(allowed)}, got {limits[section].get(key)!r}")
    chan_table = data.get("channels", {})
    channels = {}
    for key in _CHANNEL_KEYS:
        names = chan_table.get(key)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ProtocolError(path, f"channels.{key}: must be a non-empty list of channel / marker names")
        channels[key] = tuple(names)
    return QCProtocol(head["name"], head["version"], str(path), hashlib.sha256(raw).hexdigest(), channels, limits)
