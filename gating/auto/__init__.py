"""Automated gates as small estimators: fit(events) learns a geometry, predict() gives a mask.

Every estimator takes its parameters in the constructor, is deterministic given
``random_state`` (where it samples or fits a mixture), and exposes the fitted
geometry as an ordinary gate in ``gate_`` (RectangleGate / PolygonGate), so it can be
drawn, exported as Gating-ML and re-applied.
"""
from .beads import BeadGate
from .leukocytes import POPULATIONS, CD45SSCPopulations, LineageGate
from .qc import TimeCleanGate, ViabilityGate
from .scatter import CellsGate, SingletGate
from .thresholds import DensityThreshold, PercentileThreshold, RobustReferenceThreshold, density_1d

__all__ = [
    "BeadGate",
    "POPULATIONS",
    "CD45SSCPopulations",
    "CellsGate",
    "DensityThreshold",
    "LineageGate",
    "PercentileThreshold",
    "RobustReferenceThreshold",
    "SingletGate",
    "TimeCleanGate",
    "ViabilityGate",
    "density_1d",
]
