"""Undo/redo of gate edits, and the audit log of manual changes to automated gates.

The gate list of the model is an immutable tuple of :class:`GateEntry`; every edit
swaps it for a new tuple, so a history step is just (label, before, after) and undo
costs nothing but a pointer. No Qt here: the window binds Ctrl+Z / Ctrl+Shift+Z to
:meth:`History.undo` / :meth:`History.redo` through the model.
"""
from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from datetime import datetime, timezone

from gating.gates import Gate

PopulationPath = tuple[str, ...]


@dataclass(frozen=True)
class GateEntry:
    """One gate of the model's tree. ``automated``: fitted by a protocol (``source`` names it);
    ``fitted`` keeps the gate as fitted, so a manual adjustment can be told apart."""

    gate: Gate
    parent: PopulationPath
    automated: bool = False
    source: str = ""
    fitted: Gate | None = None

    @property
    def path(self) -> PopulationPath:
        return self.parent + (self.gate.id,)


Gates = tuple[GateEntry, ...]


@dataclass(frozen=True)
class Step:
    label: str
    before: Gates
    after: Gates


@dataclass
class History:
    """A linear undo/redo stack of gate-list snapshots (a new edit drops the redo branch)."""

    limit: int = 500
    _done: list[Step] = field(default_factory=list)
    _undone: list[Step] = field(default_factory=list)

    def record(self, label: str, before: Gates, after: Gates) -> None:
        if before == after:
            return
        self._done.append(Step(label, before, after))
        del self._done[: -self.limit]
        self._undone.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    def undo_label(self) -> str:
        return self._done[-1].label if self._done else ""

    def redo_label(self) -> str:
        return self._undone[-1].label if self._undone else ""

    def undo(self) -> Step | None:
        if not self._done:
            return None
        step = self._done.pop()
        self._undone.append(step)
        return step

    def redo(self) -> Step | None:
        if not self._undone:
            return None
        step = self._undone.pop()
        self._done.append(step)
        return step

    def clear(self) -> None:
        self._done.clear()
        self._undone.clear()


def gate_geometry(gate: Gate) -> dict:
    """A JSON-able description of a gate's geometry (for the audit log)."""
    out: dict = {"type": type(gate).__name__, "dimensions": [str(d) for d in getattr(gate, "dimensions", ())]}
    for attr in ("mins", "maxs", "distance_square"):
        if hasattr(gate, attr):
            out[attr] = getattr(gate, attr)
    for attr in ("vertices", "mean", "covariance"):
        if hasattr(gate, attr):
            out[attr] = [list(map(float, r)) if hasattr(r, "__len__") else float(r) for r in getattr(gate, attr)]
    if hasattr(gate, "dividers"):
        out["dividers"] = {d.id: list(d.values) for d in gate.dividers}
    return out


def edit_record(path: PopulationPath, old: Gate, new: Gate, action: str = "edit") -> dict:
    """One entry of the manual-adjustment log: who, when (UTC ISO 8601), which gate, old -> new."""
    return {
        "who": getpass.getuser(),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "action": action,
        "path": "/" + "/".join(path),
        "old": gate_geometry(old),
        "new": gate_geometry(new),
    }
