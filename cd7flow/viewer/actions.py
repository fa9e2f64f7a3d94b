"""File actions of the viewer model: open FCS files, load/save gates, export populations and statistics."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gating.dimensions import FCS_COMPENSATION, Dimension

from ..errors import CD7FlowError, FileProblem
from ..io import open_gating
from ..io.fcs_read import read_fcs
from ..outputs import write_csv
from .scales import marker_label
from .state import PopulationPath, path_str
from .statistics import column_statistics


class FileActions:
    """Mixin of :class:`~cd7flow.viewer.ViewerModel`: everything that reads or writes a file."""

    def open_files(self, paths: Sequence[str | os.PathLike]) -> list[CD7FlowError]:
        """Read each file and add it; returns the errors of files that could not be read.

        The last file read becomes current. Errors name the file and the problem.
        """
        errors: list[CD7FlowError] = []
        for p in paths:
            path = Path(p)
            try:
                sample = read_fcs(path)
            except CD7FlowError as exc:
                errors.append(exc)
                continue
            except (OSError, ValueError) as exc:  # a reader bug must not crash the viewer
                errors.append(FileProblem(path, f"cannot be read: {exc}"))
                continue
            self.add_sample(sample)
        return errors

    def load_gating(self, path: str | os.PathLike, sample: str | None = None) -> int:
        """Replace the gates with those of a gating file (one undoable step); returns the number of gates.

        The file may be Gating-ML 2.0, a FlowJo 10 or 7-9 workspace or a FACSDiva export
        (:func:`cd7flow.io.open_gating`). For a workspace, ``sample`` names the sample
        whose gates to use; by default the one whose FCS file name is the current
        sample's (or the workspace's only sample).
        """
        current = self.sample.path if self.sample is not None and self.sample.path else None
        strategy = open_gating(path, sample=sample, fcs=current if sample is None else None)
        self._compensations = dict(strategy.compensations)
        self._derived = dict(strategy.derived)
        self._register_transforms(dict(strategy.transforms))
        self._reset_sources()
        self.set_tree(strategy.tree, automated=False, source=str(path))
        self.selected = ()
        self.events.selection.emit()
        self.dirty = False
        self.events.history.emit()
        return self.n_gates

    load_gatingml = load_gating  # the Gating-ML menu's name for it

    def save_gatingml(self, path: str | os.PathLike) -> Path:
        """Write the gates (and the transforms they use) as Gating-ML 2.0, atomically."""
        from ..io.gatingml import write_gatingml

        write_gatingml(self.strategy(), path)
        self.dirty = False
        self.events.history.emit()
        return Path(path)

    def export_population_fcs(self, out_path: str | os.PathLike, path: PopulationPath | None = None) -> Path:
        """Write the events of a population (all channels, stored values) to an FCS 3.1 file."""
        from ..io.fcs_write import write_fcs

        path = self.selected if path is None else tuple(path)
        s = self._need_sample()
        mask = np.asarray(self.population_mask(path), dtype=bool)
        return write_fcs(out_path, s, mask=mask,
                         metadata={"CD7FLOW_SUBSET": f"{path_str(path)}: {int(mask.sum())} of {s.n_events} events"})

    def statistics_table(self, all_samples: bool = True) -> pd.DataFrame:
        """Tidy statistics (sample, population, statistic, channel, value) of every population
        of every open sample (or the current one): count, % of parent, % of total, and per
        channel (named "CD7 (FITC-A), comp=FCS") median, mean, sd, geometric mean over the
        values > 0 with geometric_mean_n, CV and robust CV (percent). A population a
        sample cannot evaluate has no rows for that sample."""
        samples = list(range(len(self.samples))) if all_samples else [self.current_index]
        rows: list[tuple] = []
        keep = self.current_index
        for i in samples:
            s = self.samples[i]
            result = self._result_for(i)
            src = result.source
            comp = set(s.spillover.channels) if (self.compensated and s.spillover is not None) else set()
            dims = [Dimension(ch, FCS_COMPENSATION if ch in comp else None, None) for ch in s.channels]
            cols = [np.asarray(src.values(d)) for d in dims]
            labels = [marker_label(s, d.channel, d.compensation) for d in dims]
            paths = [()] + [pop.path for pop in result.tree.populations()]
            for path in paths:
                if path and result.is_blank(path):
                    continue
                mask = result.mask(path)
                n = int(np.count_nonzero(mask))
                parent = result.parent_count(path) if path else n
                name = path_str(path)
                rows.append((s.name, name, "count", "", float(n)))
                rows.append((s.name, name, "percent_of_parent", "", float("nan") if parent == 0 else 100.0 * n / parent))
                rows.append((s.name, name, "percent_of_total", "",
                             float("nan") if s.n_events == 0 else 100.0 * n / s.n_events))
                for label, col in zip(labels, cols):
                    for stat, value in column_statistics(col[mask]).items():
                        rows.append((s.name, name, stat, label, value))
            if i != keep:
                src.clear_cache()  # statistics of another sample: do not keep its columns
        return pd.DataFrame(rows, columns=["sample", "population", "statistic", "channel", "value"])

    def export_statistics_csv(self, out_path: str | os.PathLike, all_samples: bool = True) -> Path:
        """Write :meth:`statistics_table` (every open sample by default) to CSV, atomically."""
        return write_csv(self.statistics_table(all_samples), out_path)
