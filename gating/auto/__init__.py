"""Automated gates as small scikit-learn estimators: fit(events) learns a geometry, predict() gives a mask.

Every estimator subclasses :class:`sklearn.base.BaseEstimator` (``clone``, ``get_params``
work; ``__init__`` only stores), is deterministic given ``random_state`` (where it
samples or fits a mixture), and exposes the fitted geometry as an ordinary gate in
``gate_`` (RectangleGate / PolygonGate / BooleanGate over ``gates_``), so it can be drawn,
exported as Gating-ML and re-applied. :data:`METHODS` maps protocol gate methods to them.
"""
from ._base import AutoGate, ParameterError
from .beads import BeadGate
from .leukocytes import POPULATIONS, CD45SSCPopulations, LineageGate
from .positive import MarkerPositive
from .qc import TimeCleanGate, ViabilityGate
from .registry import METHODS, GateMethod, register
from .scatter import CellsGate, SingletGate
from .thresholds import DensityThreshold, PercentileThreshold, RobustReferenceThreshold, density_1d

__all__ = [
    "BeadGate",
    "METHODS",
    "POPULATIONS",
    "AutoGate",
    "CD45SSCPopulations",
    "CellsGate",
    "DensityThreshold",
    "GateMethod",
    "LineageGate",
    "MarkerPositive",
    "ParameterError",
    "PercentileThreshold",
    "RobustReferenceThreshold",
    "SingletGate",
    "TimeCleanGate",
    "ViabilityGate",
    "density_1d",
    "register",
]
