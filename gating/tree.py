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

from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np

from .dimensions import DataSource
from .errors import GatingError
from .gates import BooleanGate, Gate, GateReference, QuadrantGate

__all__ = ["Population", "GatingTree", "GatingResult", "ROOT", "ROOT_PATH", "ROOT_PATH_STR", "MASK_CACHE_BYTES",
           "PACKED_CACHE_BYTES"]

ROOT = "root"
"""Name of the root population (all events); accepted wherever a population name is."""
ROOT_PATH: tuple[str, ...] = ()
"""Path of the root population (populations' paths start below it)."""
ROOT_PATH_STR = "/"
"""The root's path as a string, as :attr:`Population.path_str` spells paths."""

MASK_CACHE_BYTES = 512 * 2**20
"""Bytes of population masks a :class:`GatingResult` keeps as bool arrays (least recently used go first).

A mask pushed out is kept bit-packed (8 times smaller) within :data:`PACKED_CACHE_BYTES`,
beyond that recomputed from its gate and parent when asked for again: a tree of 200,000
gates costs memory for its gates, not 200,000 event-length masks.
"""
PACKED_CACHE_BYTES = 256 * 2**20
"""Bytes of bit-packed masks a :class:`GatingResult` keeps after they leave the bool cache."""

PathLike = str | Sequence[str]


class Population:
    """One node: a gate (for quadrants, one quadrant of it) inside its parent population.

    Nodes link to their parent instead of storing their path, so a deeply nested
    tree costs memory linear in its size; :attr:`path` is built when asked for.
    """

    __slots__ = ("name", "gate", "quadrant_id", "parent", "_children")

    def __init__(self, name: str, gate: Gate, quadrant_id: str | None = None, parent: Population | None = None):
        self.name = name
        self.gate = gate
        self.quadrant_id = quadrant_id
        self.parent = parent
        self._children: dict[str, Population] = {}

    @property
    def path(self) -> tuple[str, ...]:
        """Names from the root's child down to this population."""
        names = []
        node: Population | None = self
        while node is not None:
            names.append(node.name)
            node = node.parent
        return tuple(reversed(names))

    @property
    def parent_path(self) -> tuple[str, ...]:
        return self.parent.path if self.parent is not None else ROOT_PATH

    @property
    def path_str(self) -> str:
        return "/" + "/".join(self.path)

    def _ends_with(self, parts: tuple[str, ...]) -> bool:
        """True when the path's last names are ``parts``."""
        node: Population | None = self
        for name in reversed(parts):
            if node is None or node.name != name:
                return False
            node = node.parent
        return True

    def __repr__(self) -> str:
        return f"Population({self.path_str!r}, {self.gate!r})"


def _split(path: PathLike) -> tuple[str, ...]:
    if isinstance(path, str):
        return tuple(p for p in path.split("/") if p)
    return tuple(path)


class GatingTree:
    """A hierarchy of gates. Build with :meth:`add`; evaluate with :meth:`apply`."""

    def __init__(self) -> None:
        self._top: dict[str, Population] = {}  # the root's children by name
        self._by_name: dict[str, list[Population]] = {}
        self._size = 0

    # ---- building ----------------------------------------------------------
    def add(self, gate: Gate, parent: PathLike | Population | None = None) -> list[Population]:
        """Add ``gate`` under ``parent`` (a name, path or Population; None or "root" = all events).

        Returns the new population(s).
        A quadrant gate adds one population per quadrant, named by quadrant id.
        """
        parent_pop = self._parent_node(parent)
        siblings = self._top if parent_pop is None else parent_pop._children
        names = list(gate.quadrant_ids) if isinstance(gate, QuadrantGate) else [gate.id]
        new = []
        for name in names:
            if not name or "/" in name:
                raise GatingError(f"population name {name!r} must be non-empty and contain no '/'")
            if name in siblings or any(p.name == name for p in new):
                where = parent_pop.path_str if parent_pop is not None else ""
                raise GatingError(f"population {where}/{name} already exists")
            new.append(Population(name, gate, name if isinstance(gate, QuadrantGate) else None, parent_pop))
        for pop in new:
            siblings[pop.name] = pop
            self._by_name.setdefault(pop.name, []).append(pop)
        self._size += len(new)
        return new

    def add_siblings(self, gates: Sequence[Gate], parent: PathLike | None = None) -> list[Population]:
        """Add ``gates`` in order under one ``parent``; returns the new populations.

        A boolean gate's operand naming another gate of the group (by id) refers to that
        sibling population: the operand is rewritten to its absolute path, so a name used
        elsewhere in the tree can never be picked up instead.
        """
        parent_path = self._parent_path(parent)
        ids = {g.id for g in gates}
        new: list[Population] = []
        for gate in gates:
            if isinstance(gate, BooleanGate) and any(o.ref in ids for o in gate.operands if isinstance(o.ref, str)):
                gate = BooleanGate(gate.id, gate.operator, [
                    GateReference(parent_path + (o.ref,), o.complement) if isinstance(o.ref, str) and o.ref in ids
                    else o for o in gate.operands])
            new.extend(self.add(gate, parent_path or None))
        return new

    def _parent_path(self, parent: PathLike | None) -> tuple[str, ...]:
        node = self._parent_node(parent)
        return node.path if node is not None else ROOT_PATH

    def _parent_node(self, parent: PathLike | Population | None) -> Population | None:
        if parent is None or isinstance(parent, Population):
            return parent
        parts = _split(parent)
        if parts in (ROOT_PATH, (ROOT,)):
            return None
        return self.find(parts)

    # ---- lookup ------------------------------------------------------------
    def find(self, name_or_path: PathLike) -> Population:
        """The population with this unique name, or at this path (string or tuple)."""
        parts = _split(name_or_path)
        if not parts:
            raise GatingError("empty population name")
        absolute = not isinstance(name_or_path, str) or name_or_path.startswith("/")
        if absolute:
            siblings, node = self._top, None
            for name in parts:
                node = siblings.get(name)
                if node is None:
                    raise GatingError(f"no population at path {'/' + '/'.join(parts)!r} in the gating tree")
                siblings = node._children
            return node  # type: ignore[return-value]
        # A name (or a path's tail) that is unique anywhere in the tree.
        hits = [p for p in self._by_name.get(parts[-1], ()) if p._ends_with(parts)]
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
        node = self._parent_node(name_or_path)
        return list((self._top if node is None else node._children).values())

    def populations(self) -> Iterator[Population]:
        """Every population, depth-first in insertion order (parents before children)."""
        stack = list(reversed(self._top.values()))
        while stack:
            pop = stack.pop()
            yield pop
            stack.extend(reversed(pop._children.values()))

    def __iter__(self) -> Iterator[Population]:
        return self.populations()

    def __len__(self) -> int:
        return self._size

    def gates(self) -> list[Gate]:
        """Distinct gates in tree order (a quadrant gate once)."""
        seen: dict[int, Gate] = {}
        for pop in self.populations():
            seen.setdefault(id(pop.gate), pop.gate)
        return list(seen.values())

    # ---- evaluation --------------------------------------------------------
    def apply(self, source: DataSource) -> "GatingResult":
        """Evaluate every population on ``source`` (parents first; counts kept, masks cached)."""
        result = GatingResult(self, source)
        for pop in self.populations():
            result.population_mask(pop)
        return result


class GatingResult:
    """Masks and counts of every population of a tree on one data source.

    Masks are computed lazily; ``mask``, ``count``, ``percent_of_parent`` and
    ``percent_of_total`` accept a name or a path. Counts are kept for every
    population; masks up to :data:`MASK_CACHE_BYTES` (a mask let go is recomputed
    from its gate and parent when asked for again). Percentages are in percent
    (0-100); a population whose parent is empty has NaN % of parent.
    """

    def __init__(self, tree: GatingTree, source: DataSource, cache_bytes: int = MASK_CACHE_BYTES,
                 packed_bytes: int = PACKED_CACHE_BYTES):
        self.tree = tree
        self.source = source
        self.n_events = int(source.n_events)
        self._masks: OrderedDict[Population, np.ndarray] = OrderedDict()
        self._packed: OrderedDict[Population, np.ndarray] = OrderedDict()
        self._counts: dict[Population, int] = {}
        self._cache_bytes = cache_bytes
        self._packed_bytes = packed_bytes
        self._in_progress: set[Population] = set()

    def _own(self, pop: Population) -> np.ndarray:
        gate = pop.gate
        if isinstance(gate, QuadrantGate):
            return gate.quadrant_contains(self.source, pop.quadrant_id)  # type: ignore[arg-type]
        if isinstance(gate, BooleanGate):
            return gate.contains(self.source, resolve=lambda ref: self.mask(ref))
        own = np.asarray(gate.contains(self.source), dtype=bool)
        if own.shape != (self.n_events,):
            raise GatingError(f"gate {gate.id!r} returned a mask of shape {own.shape}")
        return own

    def mask(self, name_or_path: PathLike) -> np.ndarray:
        """Bool mask of the population (its own gate and all its ancestors), read-only."""
        if _split(name_or_path) in (ROOT_PATH, (ROOT,)):
            return np.ones(self.n_events, dtype=bool)
        return self.population_mask(self.tree.find(name_or_path))

    def population_mask(self, pop: Population) -> np.ndarray:
        """:meth:`mask` of a population of this tree given as the object."""
        cached = self._cached(pop)
        if cached is not None:
            return cached
        # this population and its ancestors without a cached mask, nearest first
        # (a loop, not recursion: a Gating-ML file may nest gates thousands deep)
        todo = [pop]
        while todo[-1].parent is not None and self._cached(todo[-1].parent) is None:
            todo.append(todo[-1].parent)
        top_parent = todo[-1].parent
        mask = self._cached(top_parent) if top_parent is not None else None
        for node in reversed(todo):
            mask = self._compute(node, mask)
        return mask  # type: ignore[return-value]

    def _cached(self, pop: Population) -> np.ndarray | None:
        mask = self._masks.get(pop)
        if mask is not None:
            self._masks.move_to_end(pop)
            return mask
        packed = self._packed.pop(pop, None)
        if packed is None:
            return None
        mask = np.unpackbits(packed, count=self.n_events).view(bool)
        mask.setflags(write=False)
        self._keep(pop, mask)
        return mask

    def _keep(self, pop: Population, mask: np.ndarray) -> None:
        """Cache ``mask``; over budget, the least recently used masks are packed, then dropped."""
        self._masks[pop] = mask
        budget = max(self._cache_bytes // max(mask.nbytes, 1), 1)
        while len(self._masks) > budget:
            old, old_mask = self._masks.popitem(last=False)
            self._packed[old] = np.packbits(old_mask)
        packed_budget = self._packed_bytes // max((self.n_events + 7) // 8, 1)
        while len(self._packed) > packed_budget:
            self._packed.popitem(last=False)

    def _compute(self, pop: Population, parent: np.ndarray | None) -> np.ndarray:
        """Mask of ``pop`` given its parent's mask (None under the root); counted and cached."""
        if pop in self._in_progress:
            raise GatingError(f"population {pop.path_str} depends on itself (boolean gate cycle)")
        self._in_progress.add(pop)
        try:
            own = self._own(pop)
            mask = own if parent is None else (own & parent)
        finally:
            self._in_progress.discard(pop)
        mask.setflags(write=False)
        self._counts[pop] = int(np.count_nonzero(mask))
        self._keep(pop, mask)
        return mask

    def _count(self, pop: Population) -> int:
        count = self._counts.get(pop)
        if count is None:
            self.population_mask(pop)
            count = self._counts[pop]
        return count

    def count(self, name_or_path: PathLike) -> int:
        if _split(name_or_path) in (ROOT_PATH, (ROOT,)):
            return self.n_events
        return self._count(self.tree.find(name_or_path))

    def parent_count(self, name_or_path: PathLike) -> int:
        pop = self.tree.find(name_or_path)
        return self._count(pop.parent) if pop.parent is not None else self.n_events

    def percent_of_parent(self, name_or_path: PathLike) -> float:
        pop = self.tree.find(name_or_path)
        parent = self._count(pop.parent) if pop.parent is not None else self.n_events
        return float("nan") if parent == 0 else 100.0 * self._count(pop) / parent

    def percent_of_total(self, name_or_path: PathLike) -> float:
        return float("nan") if self.n_events == 0 else 100.0 * self.count(name_or_path) / self.n_events

    def __iter__(self) -> Iterator[tuple[Population, np.ndarray]]:
        """(population, mask) in tree order."""
        for pop in self.tree.populations():
            yield pop, self.population_mask(pop)

    def counts(self) -> dict[str, int]:
        """Path string -> event count, in tree order."""
        return {pop.path_str: self._count(pop) for pop in self.tree.populations()}
