"""cd7flow: flow cytometry for a CD7 CAR-T trial.

Public entry points are imported lazily so that ``import cd7flow`` stays cheap
for the CLI and never drags in Qt.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "read_fcs": "cd7flow.io.fcs_read",
    "list_datasets": "cd7flow.io.fcs_read",
    "write_fcs": "cd7flow.io.fcs_write",
    "Sample": "cd7flow.sample",
    "SpilloverMatrix": "cd7flow.compensation",
    "compensate": "cd7flow.compensation",
    "to_flowkit": "cd7flow.interchange",
    "from_flowkit": "cd7flow.interchange",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cd7flow' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = ["__version__", *_LAZY]
