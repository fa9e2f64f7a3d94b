"""The desktop viewer's Qt-free model (``from cd7flow.viewer import ViewerModel``).

state (plots, population rows), scales (the protocols' logicle, full-scale ranges,
ticks), overlays (gate geometry on a plot), results (a missing channel blanks only its
gate), statistics, history (undo/redo, manual-adjustment log), editing and actions
(file I/O) make up :class:`ViewerModel`; events are psygnal signals.
"""
from .events import ViewerEvents
from .history import GateEntry, History
from .binning import histogram2d
from .model import MAX_DISPLAY_DOTS, ViewerModel
from .overlays import GateOverlay, ellipse_outline
from .scales import TRANSFORM_KINDS, channel_label, marker_label
from .state import MAX_PLOTS, PLOT_MODES, ROOT, PlotState, PopulationPath, PopulationRow, path_str
from .statistics import format_number

__all__ = [
    "ViewerModel", "ViewerEvents", "GateEntry", "History", "GateOverlay", "PlotState", "PopulationRow",
    "PopulationPath", "ROOT", "MAX_DISPLAY_DOTS", "MAX_PLOTS", "PLOT_MODES", "TRANSFORM_KINDS",
    "channel_label", "marker_label", "path_str", "ellipse_outline", "histogram2d", "format_number",
]
