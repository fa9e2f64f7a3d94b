"""The model's signals (psygnal): observers are held by weak reference, as in napari.

A bound method connected to a signal does not keep its object alive, and a dead
observer is dropped instead of being called. Observers re-read the model state they
care about; no signal carries data.
"""
from __future__ import annotations

from psygnal import Signal


class ViewerEvents:
    """Signals of one :class:`~cd7flow.viewer.ViewerModel`.

    samples: the sample list changed. sample_changed (alias ``current``): another sample
    is shown. view: axes, transforms, compensation, zoom, plot mode or layout changed.
    gates_changed (alias ``gates``): gates added, edited, renamed or removed (counts
    changed). selection: another population is selected. history: undo/redo availability
    or the unsaved-work flag changed.
    """

    samples = Signal()
    sample_changed = Signal()
    view = Signal()
    gates_changed = Signal()
    selection = Signal()
    history = Signal()

    @property
    def current(self):
        return self.sample_changed

    @property
    def gates(self):
        return self.gates_changed
