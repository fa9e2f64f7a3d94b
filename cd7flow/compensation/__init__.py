"""Spillover matrices: parse them (FCS keywords, matrix files), estimate them, apply them.

Public API: :class:`SpilloverMatrix`, :func:`spillover_from_metadata`,
:func:`read_matrix_file`, :func:`compensate`, :func:`compute_spillover`; Gating-ML
spectrum (unmixing) matrices: :class:`SpectrumMatrix`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import CompensationError
from ..sample import Sample
from .estimate import compute_spillover
from .matrix import CHUNK_ROWS, SpilloverMatrix
from .parse import read_matrix_file, spillover_from_metadata
from .spectrum import SpectrumMatrix

__all__ = ["CHUNK_ROWS", "SpectrumMatrix", "SpilloverMatrix", "compensate", "compute_spillover",
           "read_matrix_file", "spillover_from_metadata"]


def compensate(sample_or_events, spillover: SpilloverMatrix | None = None,
               channels: Sequence[str] | None = None, *, inplace: bool = False):
    """Compensate a Sample or an events array; only the matrix channels change.

    sample_or_events : a Sample, or an (n_events, n_columns) float array.
    spillover : the matrix; for a Sample, None means the file's own (``sample.spillover``).
    channels : for an array, the name of every column (required). For a Sample, an
        optional subset of matrix channels to compensate (the sub-matrix is used, as if
        the other fluorochromes were absent); default all matrix channels.
    inplace : overwrite the input's events (no copy; float32 stays float32). Otherwise a
        new Sample / array is returned and the input is untouched.

    Returns the compensated Sample (sharing everything but ``events``) or array.
    """
    if isinstance(sample_or_events, Sample):
        sample = sample_or_events
        spill = spillover if spillover is not None else sample.spillover
        if spill is None:
            raise CompensationError(sample.path, "no spillover matrix given and the file carries none")
        if channels is not None:
            spill = spill.subset(channels)
        missing = [c for c in spill.channels if c not in sample.channels]
        if missing:
            raise CompensationError(sample.path, f"spillover channels not in the sample ({spill.source}): "
                                    f"{', '.join(missing)}")
        out = sample.events if inplace else None
        events = spill.compensate(sample.events, sample.channels, out=out)
        if inplace:
            return sample
        return sample.with_events(events)
    if spillover is None:
        raise CompensationError(None, "compensate(events, ...) needs a spillover matrix")
    if channels is None:
        raise CompensationError(spillover.source, "compensate(events, ...) needs the column names (channels=)")
    events = np.asarray(sample_or_events)
    if inplace and (events is not sample_or_events or events.dtype.kind != "f" or not events.flags.writeable):
        raise CompensationError(spillover.source, "in-place compensation needs a writable float numpy array")
    return spillover.compensate(events, channels, out=events if inplace else None)
