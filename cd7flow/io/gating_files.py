"""Open any gating file cd7flow reads: Gating-ML 2.0, FlowJo 10 / 7-9 workspaces, FACSDiva exports.

:func:`open_gating` tells the format apart by the XML root element (a FlowJo 10
``.wsp`` also by its extension) and returns the :class:`~cd7flow.strategy.GatingStrategy`,
so the CLI and the viewer open the same files the same way.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import GatingMLError, WorkspaceError
from ..strategy import GatingStrategy
from .diva import read_diva_xml
from .flowjo import read_flowjo_workspace
from .gatingml import read_gatingml

__all__ = ["GATING_FORMATS", "gating_format", "open_gating", "root_element"]

GATING_FORMATS = ("gatingml", "flowjo", "diva")
"""What :func:`gating_format` answers: Gating-ML, a FlowJo workspace (10 or 7-9), a FACSDiva export."""

_HEAD_BYTES = 65536


def root_element(path: str | os.PathLike) -> str:
    """Local name of the document's root element, from the first 64 kB ('' if none is found there).

    Skips the XML declaration, comments, processing instructions and the DOCTYPE, so a
    FlowJo 9 file (``<!DOCTYPE Workspace><Workspace ...>``) and a Gating-ML file whose root
    is ``<gating:Gating-ML>`` are told apart by what they are, not by a string anywhere.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError:
        return ""
    head = re.sub(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>\[]*(\[.*?\])?\s*>", b"", head, flags=re.S)
    m = re.search(rb"<([A-Za-z_][\w.:-]*)", head)
    return m.group(1).decode("ascii", "replace").rsplit(":", 1)[-1] if m else ""


def gating_format(path: str | os.PathLike) -> str:
    """One of :data:`GATING_FORMATS`: ``<bdfacs>`` is DiVa, ``<Workspace>`` (or a .wsp) FlowJo, else Gating-ML."""
    root = root_element(path)
    if root == "bdfacs":
        return "diva"
    if Path(path).suffix.lower() == ".wsp" or root == "Workspace":
        return "flowjo"
    return "gatingml"


def open_gating(path: str | os.PathLike, sample: str | None = None,
                fcs: str | os.PathLike | None = None) -> GatingStrategy:
    """Read a gating file of any supported format into a GatingStrategy.

    path : Gating-ML 2.0 (.xml), FlowJo 10 (.wsp) or 7-9 (XML) workspace, FACSDiva XML export.
    sample : for a workspace, the sample (or DiVa tube) whose gates to use.
    fcs : for a workspace without ``sample``, the FCS file whose name picks the sample;
        with neither, a workspace must hold exactly one sample.
    The strategy's ``source_path`` is ``path`` and, for a workspace, ``sample_name`` the
    sample used. Raises a :class:`~cd7flow.errors.CD7FlowError` naming the file
    (GatingMLError, WorkspaceError) for a missing, unreadable or invalid file, or a sample it lacks.
    """
    path = Path(path)
    if not path.is_file():
        raise GatingMLError(path, "gates file not found" if not path.exists() else "is not a file")
    kind = gating_format(path)
    if kind == "gatingml":
        if sample:
            raise GatingMLError(path, "--sample only applies to workspaces (FlowJo .wsp, FACSDiva)")
        return read_gatingml(path)
    ws = read_diva_xml(path) if kind == "diva" else read_flowjo_workspace(path)
    if sample:
        wsample = ws.sample(sample)
    elif fcs is not None:
        wsample = ws.sample_for_file(fcs)
    elif len(ws.samples) == 1:
        wsample = next(iter(ws.samples.values()))
    else:
        raise WorkspaceError(path, f"holds {len(ws.samples)} samples ({', '.join(ws.samples)}); name one")
    wsample.strategy.sample_name = wsample.name
    return wsample.strategy
