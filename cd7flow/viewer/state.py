"""Plain state records of the viewer: one plot's axes and zoom, one line of the population tree."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from gating.gates import Gate
from gating.tree import ROOT_PATH

PopulationPath = tuple[str, ...]
ROOT: PopulationPath = ROOT_PATH
PLOT_MODES = ("density", "dots", "histogram")
MAX_PLOTS = 4


def path_str(path: PopulationPath) -> str:
    return "/" + "/".join(path) if path else "/"


@dataclass
class PlotState:
    """One plot of the layout. Ranges are in display units; None = the channel's full scale.

    ``population``: the population the plot shows (None: the selected one). ``x_kind_set`` /
    ``y_kind_set``: the user chose the transform (else it follows the channel: scatter
    linear, fluorescence logicle).
    """

    x_channel: str | None = None
    y_channel: str | None = None
    x_transform: str = "logicle"
    y_transform: str = "logicle"
    mode: str = "density"
    population: PopulationPath | None = None
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("population", "x_range", "y_range"):
            d[k] = None if d[k] is None else list(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict) -> "PlotState":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("population", "x_range", "y_range"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


@dataclass(frozen=True)
class PopulationRow:
    """One line of the population tree. Percentages are in percent (0-100).

    ``count`` is None when the population cannot be evaluated on this sample (a gate
    naming a channel it lacks); ``blank_reason`` says why.
    """

    path: PopulationPath
    depth: int
    count: int | None
    percent_of_parent: float
    percent_of_total: float
    gate: Gate | None
    automated: bool = False
    adjusted: bool = False
    blank_reason: str = ""

    @property
    def name(self) -> str:
        return self.path[-1] if self.path else "All events"
