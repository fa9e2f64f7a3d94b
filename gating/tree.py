"""Gating hierarchy: populations, their parents, and evaluation with cached masks.

A *population* is a node of the tree: a gate applied inside its parent population
(the root is all events). Each quadrant of a :class:`~gating.gates.QuadrantGate`
is its own population under the quadrant gate's parent; the quadrant gate itself
is not a population.

Populations are addressed by name when the name is unique, else by path. An
absolute path is a string starting with "/" ("/Lymphocytes/CD3+") or a tuple of
names from the root down; a string without a leading "/" is a name or the tail of
a path ("Lymphocytes/CD3+") and must match exactly one population. An ambiguous
name raises :class:`~gating.errors.GatingError` listing the candidate paths.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .dimensions import DataSource
from .errors import GatingError
from .gates import BooleanGate, Gate, QuadrantGate

__all__ = ["Population", "GatingTree", "GatingResult", "ROOT", "ROOT_PATH", "ROOT_PATH_STR"]

ROOT = "root"
"""Name of the root population (all events); accepted wherever a population name is."""
ROOT_PATH: tuple[str, ...] = ()
"""Path of the root population (populations' paths start below it)."""
ROOT_PATH_STR = "/"
"""The root's path as a string, as :attr:`Population.path_str` spells paths."""

PathLike = str | Sequence[str]


@dataclass(frozen=True)
class Population:
    """One node: ``path`` (names from the root's child down), its gate and, for quadrants, the quadrant id."""

    path: tuple[str, ...]
    gate: Gate
    quadrant_id: str | None = None

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def parent_path(self) -> tuple[str, ...]:
        return self.path[:-1]

    @property
    def path_str(self) -> str:
        return "/" + "/".join(self.path)


def _split(path: PathLike) -> tuple[str, ...]:
    if isinstance(path, str):
        return tuple(p for p in path.split("/") if p)
    return tuple(path)


class GatingTree:
    """A hierarchy of gates. Build with :meth:`add`; evaluate with :meth:`apply`."""

    def __init__(self) -> None:
        self._populations: dict[tuple[str, ...], Population] = {}
        self._children: dict[tuple[str, ...], list[tuple[str, ...]]] = {(): []}

    # ---- building ----------------------------------------------------------
    def add(self, gate: Gate, parent: PathLike | None = None) -> list[Population]:
        """Add ``gate`` under ``parent`` (None or "root" = all events); returns the new population(s).

        A quadrant gate adds one population per quadrant, named by quadrant id.
        """
        parent_path = self._parent_path(parent)
        names = list(gate.quadrant_ids) if isinstance(gate, QuadrantGate) else [gate.id]
        new = []
        for name in names:
            if not name or "/" in name:
                raise GatingError(f"population name {name!r} must be non-empty and contain no '/'")
            path = parent_path + (name,)
            if path in self._populations:
                raise GatingError(f"population {'/' + '/'.join(path)} already exists")
            new.append(Population(path, gate, name if isinstance(gate, QuadrantGate) else None))
        for pop in new:
            self._populations[pop.path] = pop
            self._children.setdefault(pop.path, [])
            self._children[parent_path].append(pop.path)
        return new

    def _parent_path(self, parent: PathLike | None) -> tuple[str, ...]:
        if parent is None:
            return ()
        parts = _split(parent)
        if parts in (ROOT_PATH, (ROOT,)):
            return ()
        return self.find(parts).path

    # ---- lookup ------------------------------------------------------------
    def find(self, name_or_path: PathLike) -> Population:
        """The population with this unique name, or at this path (string or tuple)."""
        parts = _split(name_or_path)
        if not parts:
            raise GatingError("empty population name")
        absolute = not isinstance(name_or_path, str) or name_or_path.startswith("/")
        if absolute:
            try:
                return self._populations[parts]
            except KeyError:
                raise GatingError(f"no population at path {'/' + '/'.join(parts)!r} in the gating tree") from None
        # A name (or a path's tail) that is unique anywhere in the tree.
        hits = [p for path, p in self._populations.items() if path[-len(parts):] == parts]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise GatingError(f"no population {'/'.join(parts)!r} in the gating tree")
        options = ", ".join(sorted(h.path_str for h in hits))
        raise GatingError(f"population name {'/'.join(parts)!r} is ambiguous; use a path: {options}")

    def __contains__(self, name_or_path: object) -> bool:
        try:
            self.find(name_or_path)  # type: ignore[arg-type]
        except GatingError:
            return False
        return True

    def children(self, name_or_path: PathLike | None = None) -> list[Population]:
        key = self._parent_path(name_or_path)
        return [self._populations[p] for p in self._children.get(key, [])]

    def populations(self) -> Iterator[Population]:
        """Every population, depth-first in insertion order (parents before children)."""
        stack = list(reversed(self._children[()]))
        while stack:
            path = stack.pop()
            yield self._populations[path]
            stack.extend(reversed(self._children[path]))

    def __iter__(self) -> Iterator[Population]:
        return self.populations()

    def __len__(self) -> int:
        return len(self._populations)

    def gates(self) -> list[Gate]:
        """Distinct gates in tree order (a quadrant gate once)."""
        seen: dict[int, Gate] = {}
        for pop in self.populations():
            seen.setdefault(id(pop.gate), pop.gate)
        return list(seen.values())

    # ---- evaluation --------------------------------------------------------
    def apply(self, source: DataSource) -> "GatingResult":
        """Evaluate every population on ``source`` (parents first, masks cached)."""
        result = GatingResult(self, source)
        for pop in self.populations():
            result.mask(pop.path)
        return result


class GatingResult:
    """Masks and counts of every population of a tree on one data source.

    Masks are computed lazily and cached; ``mask``, ``count``, ``percent_of_parent``
    and ``percent_of_total`` accept a name or a path. Percentages are in percent
    (0-100); a population whose parent is empty has NaN % of parent.
    """

    def __init__(self, tree: GatingTree, source: DataSource):
        self.tree = tree
        self.source = source
        self.n_events = int(source.n_events)
        self._masks: dict[tuple[str, ...], np.ndarray] = {}
        self._gate_masks: dict[int, np.ndarray] = {}
        self._in_progress: set[tuple[str, ...]] = set()

    def _own(self, pop: Population) -> np.ndarray:
        gate = pop.gate
        if isinstance(gate, QuadrantGate):
            return gate.quadrant_contains(self.source, pop.quadrant_id)  # type: ignore[arg-type]
        if isinstance(gate, BooleanGate):
            return gate.contains(self.source, resolve=lambda ref: self.mask(ref))
        key = id(gate)
        cached = self._gate_masks.get(key)
        if cached is None:
            cached = np.asarray(gate.contains(self.source), dtype=bool)
            if cached.shape != (self.n_events,):
                raise GatingError(f"gate {gate.id!r} returned a mask of shape {cached.shape}")
            self._gate_masks[key] = cached
        return cached

    def mask(self, name_or_path: PathLike) -> np.ndarray:
        """Bool mask of the population (its own gate and all its ancestors)."""
        if _split(name_or_path) in (ROOT_PATH, (ROOT,)):
            return np.ones(self.n_events, dtype=bool)
        pop = self.tree.find(name_or_path)
        cached = self._masks.get(pop.path)
        if cached is not None:
            return cached
        if pop.path in self._in_progress:
            raise GatingError(f"population {pop.path_str} depends on itself (boolean gate cycle)")
        self._in_progress.add(pop.path)
        try:
            own = self._own(pop)
            parent = self.mask(pop.parent_path) if pop.parent_path else None
            mask = own if parent is None else (own & parent)
        finally:
            self._in_progress.discard(pop.path)
        mask.setflags(write=False)
        self._masks[pop.path] = mask
        return mask

    def count(self, name_or_path: PathLike) -> int:
        return int(np.count_nonzero(self.mask(name_or_path)))

    def parent_count(self, name_or_path: PathLike) -> int:
        pop = self.tree.find(name_or_path)
        return self.count(pop.parent_path) if pop.parent_path else self.n_events

    def percent_of_parent(self, name_or_path: PathLike) -> float:
        parent = self.parent_count(name_or_path)
        return float("nan") if parent == 0 else 100.0 * self.count(name_or_path) / parent

    def percent_of_total(self, name_or_path: PathLike) -> float:
        return float("nan") if self.n_events == 0 else 100.0 * self.count(name_or_path) / self.n_events

    def __iter__(self) -> Iterator[tuple[Population, np.ndarray]]:
        """(population, mask) in tree order."""
        for pop in self.tree.populations():
            yield pop, self.mask(pop.path)

    def counts(self) -> dict[str, int]:
        """Path string -> event count, in tree order."""
        return {pop.path_str: int(np.count_nonzero(m)) for pop, m in self}
