"""File formats: FCS read/write, Gating-ML, FlowJo and FACSDiva workspaces.

``open_gating(path, sample=None, fcs=None)`` reads any gating file (see
:mod:`cd7flow.io.gating_files`). It is resolved on first use so that importing
the FCS reader does not load the XML readers.
"""
from __future__ import annotations

__all__ = ["open_gating"]


def __getattr__(name: str):
    if name == "open_gating":
        from .gating_files import open_gating

        return open_gating
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
