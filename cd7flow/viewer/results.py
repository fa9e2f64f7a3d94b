"""Gating results for the viewer: a gate the sample cannot evaluate blanks only its own branch.

A gate loaded from a file may name a channel (or compensation, or transform) the
current sample lacks. The engine raises for it; the viewer instead marks that
population and its descendants as not computable ("blank", count None) and keeps
counting every other population, "All events" included.
"""
from __future__ import annotations

import numpy as np

from gating.errors import GatingError
from gating.gates import BooleanGate
from gating.tree import GatingResult, GatingTree, Population


class ViewerResult(GatingResult):
    """A :class:`GatingResult` whose populations that cannot be evaluated are empty and listed in
    :attr:`blanked` (population -> reason) instead of raising."""

    def __init__(self, tree: GatingTree, source, **kwargs):
        super().__init__(tree, source, **kwargs)
        self.blanked: dict[Population, str] = {}

    def _own(self, pop: Population) -> np.ndarray:
        parent = pop.parent
        if parent is not None and parent in self.blanked:
            self.blanked[pop] = f"its parent {parent.path_str} cannot be evaluated"
            return np.zeros(self.n_events, dtype=bool)
        try:
            return super()._own(pop)
        except GatingError as exc:
            self.blanked[pop] = str(exc)
            return np.zeros(self.n_events, dtype=bool)

    def is_blank(self, path) -> bool:
        pop = self.tree.find(path)
        self.population_mask(pop)
        return pop in self.blanked

    def blank_reason(self, path) -> str:
        pop = self.tree.find(path)
        return self.blanked.get(pop, "")


def seeded_result(tree: GatingTree, source, previous: GatingResult | None, changed: tuple[str, ...]) -> ViewerResult:
    """A result for ``tree`` that reuses ``previous``'s masks of populations outside ``changed``'s
    subtree (same path, same gate object): a drag re-evaluates one gate and its children only."""
    result = ViewerResult(tree, source)
    if previous is None:
        return result
    old = {pop.path: pop for pop in previous.tree.populations()}
    # [autogate] a boolean gate may name the changed population (the protocols' cd45_ssc = blasts or
    # lymphocytes or ...): it and its children are recomputed too
    stale = [changed] + [pop.path for pop in tree.populations() if isinstance(pop.gate, BooleanGate)]
    for pop in tree.populations():
        if any(pop.path[: len(p)] == p for p in stale):
            continue
        before = old.get(pop.path)
        if before is None or before.gate is not pop.gate:
            continue
        if isinstance(previous, ViewerResult) and before in previous.blanked:
            continue
        mask = previous._cached(before)
        if mask is not None:
            result._counts[pop] = previous._counts[before]
            result._keep(pop, mask)
    return result
