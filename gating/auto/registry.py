"""The one map from a protocol's gate ``method`` to its estimator, and how it is used.

Protocol validation (allowed parameters, parameter values, dimension counts) and the
protocol pipeline (building, fitting and adding gates to the tree) both read
:data:`METHODS`; a new method is one :func:`register` call. A method whose estimator
only needs its parent's events needs nothing else: the pipeline fits it on the parent
population and adds :meth:`~gating.auto._base.AutoGate.tree_gates` under it.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._base import AutoGate
from .beads import BeadGate
from .leukocytes import POPULATIONS, CD45SSCPopulations, LineageGate
from .positive import MarkerPositive
from .qc import TimeCleanGate, ViabilityGate
from .scatter import CellsGate, SingletGate

__all__ = ["GateMethod", "METHODS", "register"]

# Constructor arguments the pipeline sets itself (never protocol parameters).
_PIPELINE_ARGS = frozenset({"self", "dimension", "dimensions", "gate_id", "shape_dimensions"})


@dataclass(frozen=True)
class GateMethod:
    """How one gate method is fitted.

    estimator : the AutoGate subclass; protocol ``params`` are its constructor arguments.
    partial_dimensions : fitted on whichever of its dimensions the sample has (a marker
        absent from the tube drops out) instead of needing all of them.
    populations : named populations it adds besides its own (validated against the
        protocol gate's ``populations``).
    fixed : constructor arguments the method sets (not protocol parameters).
    marker_params : constructor arguments the protocol gives as marker names (a list, or a
        list of lists) and the estimator takes as column indices; absent markers drop out.
    fit_inputs : fit keyword -> how the pipeline fills it from other populations:
        "reference" (the population named by params.reference, minus events positive in the
        marker tests named by params.reference_exclude; too few events is an error),
        "fitted_reference" (that population only when it was fitted, not skipped; else
        None), "against" (params.against's events, only when the parent gate's fit puts
        them inside the parent population), "mature" (params.mature's events, all columns,
        when that population was fitted; else None).
    context_params : protocol parameters the pipeline reads for ``fit_inputs``.
    shape_dimensions : the estimator gets the dimensions of the gate that made its parent
        population (e.g. CD45/SSC for blasts) as ``shape_dimensions``.
    marker_test : its ``predict`` on every event is a marker test (CD3+ or CD56+) that
        references may exclude.
    """

    estimator: type[AutoGate]
    partial_dimensions: bool = False
    populations: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    marker_params: tuple[str, ...] = ()
    fit_inputs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    context_params: tuple[str, ...] = ()
    shape_dimensions: bool = False
    marker_test: bool = False

    def params(self) -> set[str]:
        """Parameter names a protocol may give this method."""
        names = set(inspect.signature(self.estimator.__init__).parameters) - _PIPELINE_ARGS - set(self.fixed)
        return names | set(self.context_params)

    def build(self, dimensions: Sequence, keys: Sequence[str], gate_id: str, params: Mapping[str, Any],
              shape_dimensions: Sequence | None = None) -> AutoGate:
        """An unfitted estimator for dimensions named ``keys`` (marker names / scatter keys)."""
        kwargs = {k: v for k, v in params.items() if k not in self.context_params}
        for name in self.marker_params:
            if name in kwargs:
                kwargs[name] = _as_indices(kwargs[name], list(keys))
        kwargs.update(self.fixed)
        dims = list(dimensions)
        if self.estimator.n_dims == 1:
            kwargs["dimension"] = dims[0]
        else:
            kwargs["dimensions"] = dims
        if self.shape_dimensions and shape_dimensions:
            kwargs["shape_dimensions"] = list(shape_dimensions)
        return self.estimator(gate_id=gate_id, **kwargs)


def _as_indices(value, keys: list[str]):
    """Marker names -> column indices; names not among ``keys`` drop out, and so do groups left
    empty (a lineage with none of its markers in the tube is no candidate); nothing left: None."""
    if value and all(isinstance(v, (list, tuple)) for v in value):
        groups = [[keys.index(m) for m in grp if m in keys] for grp in value]
        return [g for g in groups if g] or None
    return [keys.index(m) for m in value if m in keys] or None


METHODS: dict[str, GateMethod] = {}


def register(name: str, method: GateMethod) -> None:
    """Make ``name`` a gate method of protocols (validation and fitting)."""
    METHODS[name] = method


register("time_clean", GateMethod(TimeCleanGate))
register("cells", GateMethod(CellsGate))
register("singlets", GateMethod(SingletGate))
register("viability", GateMethod(ViabilityGate))
# "No blasts" is a finding (reported as too few blasts), not a gating failure.
register("cd45_ssc", GateMethod(CD45SSCPopulations, populations=POPULATIONS,
                                fixed=MappingProxyType({"require_population": False, "population": "blasts"})))
register("positive", GateMethod(MarkerPositive, partial_dimensions=True, marker_test=True,
                                fit_inputs=MappingProxyType({"reference": "fitted_reference"}),
                                context_params=("reference",)))
register("lineage", GateMethod(LineageGate, partial_dimensions=True, shape_dimensions=True,
                               marker_params=("groups", "primary", "mature_markers"),
                               fit_inputs=MappingProxyType({"reference": "reference", "against": "against",
                                                            "mature": "mature"}),
                               context_params=("reference", "reference_exclude", "against", "mature")))
# Counting beads leave the sequence before the cells gate; a tube without beads passes whole.
register("beads", GateMethod(BeadGate))
