"""The workspace model shared by the FlowJo 10, FlowJo 7-9 and FACSDiva readers.

A :class:`Workspace` holds :class:`WorkspaceSample` s by name, each carrying a
:class:`~cd7flow.strategy.GatingStrategy` built for *our* engine plus the event
counts the other program stored for every population (so re-computed counts can
be compared with them). The readers (:mod:`.flowjo`, :mod:`.flowjo9`, :mod:`.diva`)
build on this module and never on each other.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from gating.tree import GatingResult, GatingTree

from ..datasource import SampleSource
from ..errors import WorkspaceError
from ..sample import Sample
from ..strategy import GatingStrategy

__all__ = ["Workspace", "WorkspaceSample", "build_workspace", "population_count"]


@dataclass
class WorkspaceSample:
    """One sample of a workspace.

    name : the sample's name (normally the FCS file name).
    uri : the DataSet location the workspace recorded (may point to another machine).
    strategy : gates, transforms and compensations, ready for :meth:`apply`.
    flowjo_counts : population path (tuple of names) -> event count the workspace stored
        (populations never computed, count -1, are left out).
    event_count : events in the sample according to the workspace (None if unknown).
    """

    sample_id: str
    name: str
    uri: str | None
    strategy: GatingStrategy
    keywords: dict[str, str] = field(default_factory=dict)
    flowjo_counts: dict[tuple[str, ...], int] = field(default_factory=dict)
    event_count: int | None = None
    groups: list[str] = field(default_factory=list)

    @property
    def tree(self) -> GatingTree:
        return self.strategy.tree

    def source(self, sample: Sample) -> SampleSource:
        return self.strategy.source(sample)

    def apply(self, sample: Sample) -> GatingResult:
        """Gate ``sample`` (the FCS events of this workspace sample) with our engine."""
        return self.strategy.apply(sample)


@dataclass
class Workspace:
    """A parsed workspace: samples by name and groups (name -> sample names)."""

    path: str
    flowjo_version: str
    samples: dict[str, WorkspaceSample]
    groups: dict[str, list[str]]

    def __iter__(self) -> Iterator[WorkspaceSample]:
        return iter(self.samples.values())

    def sample(self, name: str) -> WorkspaceSample:
        """The sample with this name (or FCS file name, case-insensitively)."""
        if name in self.samples:
            return self.samples[name]
        hits = [s for s in self.samples.values() if name.lower() in (s.name.lower(), uri_name(s.uri).lower())]
        if len(hits) == 1:
            return hits[0]
        known = ", ".join(self.samples) or "none"
        raise WorkspaceError(self.path, f"no sample {name!r} in the workspace (samples: {known})")

    def sample_for_file(self, fcs_path: str | os.PathLike) -> WorkspaceSample:
        """The sample whose name or DataSet file name is the FCS file's name."""
        base = os.path.basename(os.fspath(fcs_path)).lower()
        hits = [s for s in self.samples.values() if base in (s.name.lower(), uri_name(s.uri).lower())]
        if len(hits) == 1:
            return hits[0]
        if len(self.samples) == 1 and not hits:
            only = next(iter(self.samples.values()))
            raise WorkspaceError(self.path, f"its only sample is {only.name!r}, not {os.path.basename(os.fspath(fcs_path))!r}"
                                 " (pass --sample to use it anyway)")
        known = ", ".join(self.samples) or "none"
        what = "several samples match" if hits else "no sample matches"
        raise WorkspaceError(self.path, f"{what} FCS file {os.path.basename(os.fspath(fcs_path))!r} "
                                        f"(samples: {known}); name one")

    def fcs_path(self, sample: WorkspaceSample) -> str | None:
        """Where the sample's FCS file is: the recorded URI if it exists, else next to the workspace."""
        candidates = []
        if sample.uri:
            parsed = urlparse(sample.uri)
            if parsed.scheme in ("file", ""):
                p = unquote(parsed.path)
                if re.match(r"^/[A-Za-z]:/", p):  # file:/C:/... from Windows
                    p = p[1:]
                if not os.path.isabs(p):
                    p = os.path.join(os.path.dirname(self.path), p)
                candidates.append(p)
        folder = os.path.dirname(os.path.abspath(self.path))
        for name in (uri_name(sample.uri), sample.name):
            if name:
                candidates.append(os.path.join(folder, name))
        for c in candidates:
            if os.path.isfile(c):
                return c
        return None


def build_workspace(path: str, version: str, samples: Iterable[WorkspaceSample],
                    groups: Iterable[tuple[str, Iterable[str]]], fail: Callable[[str], Exception],
                    name_note: str = "") -> Workspace:
    """A Workspace from its samples and its groups given as (group name, member sample ids).

    Refuses a sample id used twice and two samples of one name (``name_note`` says why
    names may clash); a group lists each member once, and each sample its groups.
    """
    by_id: dict[str, WorkspaceSample] = {}
    for ws in samples:
        if ws.sample_id in by_id:
            raise fail(f"sample id {ws.sample_id} is used twice")
        by_id[ws.sample_id] = ws
    members_of: dict[str, list[str]] = {}
    for gname, ids in groups:
        members: list[str] = []
        for sid in ids:
            ws = by_id.get(sid)
            if ws is not None and ws.name not in members:
                members.append(ws.name)
                ws.groups.append(gname)
        members_of[gname] = members
    by_name: dict[str, WorkspaceSample] = {}
    for ws in by_id.values():
        if ws.name in by_name:
            raise fail(f"two samples are named {ws.name!r}{name_note}")
        by_name[ws.name] = ws
    return Workspace(path, version, by_name, members_of)


def uri_name(uri: str | None) -> str:
    """File name at the end of a DataSet URI ('' for none); Windows separators count."""
    if not uri:
        return ""
    return os.path.basename(unquote(urlparse(uri).path).replace("\\", "/"))


def population_count(raw: str | None) -> int | None:
    """A stored population/sample event count, or None when absent or negative (never computed)."""
    if raw is not None and raw.lstrip("-").isdigit() and int(raw) >= 0:
        return int(raw)
    return None
