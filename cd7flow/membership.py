"""Per-event gate membership as CSV: one 0/1 column per gate, one row per event, in event order.

Shared by ``cd7flow gate`` and ``cd7flow autogate``. The file is written to a
temporary name in the destination folder and renamed, so a reader never sees a
half-written table. Rows are formatted with numpy in blocks (no per-event Python).
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping

import numpy as np

from .outputs import atomic_output
from .errors import CD7FlowError

__all__ = ["write_membership_csv", "membership_columns"]

_BLOCK_ROWS = 1 << 16  # rows formatted per write: bounds the temporary text to a few MB
_BLOCK_BYTES = 64 << 20  # ... and to 64 MB however many columns there are


def _csv_field(name: str) -> str:
    """RFC 4180 quoting for a header field (gate names may hold commas or quotes)."""
    if any(ch in name for ch in ',"\r\n'):
        return '"' + name.replace('"', '""') + '"'
    return name


def write_membership_csv(path: str | os.PathLike, columns: Mapping[str, np.ndarray]) -> None:
    """Write ``columns`` (header -> bool mask, all the same length) as a 0/1 CSV, atomically.

    The header row holds the column names in the mapping's order; each following
    row is one event (row k = event k of the file), ``1`` = inside the population.
    Raises :class:`~cd7flow.errors.CD7FlowError` for no columns, duplicate names,
    masks of different lengths, or a folder that cannot be written.
    """
    path = os.fspath(path)
    if not columns:
        raise CD7FlowError(f"{path}: no gate columns to write")
    names = [str(k) for k in columns]
    if len(set(names)) != len(names):
        dup = sorted(n for n, k in Counter(names).items() if k > 1)
        raise CD7FlowError(f"{path}: duplicate membership column names: {', '.join(dup)}")
    masks = [np.asarray(m) for m in columns.values()]
    lengths = {m.shape for m in masks}
    if len(lengths) != 1 or len(masks[0].shape) != 1:
        raise CD7FlowError(f"{path}: membership columns must be 1-D and of equal length, got shapes {sorted(lengths)}")
    n = masks[0].shape[0]
    # one byte per cell: '0'/'1' followed by ',' or '\n'; rows per block bound the text in memory
    rows = max(1, min(_BLOCK_ROWS, _BLOCK_BYTES // (2 * len(masks))))
    sep = np.full(len(masks), ord(","), dtype=np.uint8)
    sep[-1] = ord("\n")
    header = (",".join(_csv_field(nm) for nm in names) + "\n").encode("utf-8")

    with atomic_output(path, "wb") as fh:
        fh.write(header)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            out = np.empty((stop - start, len(masks) * 2), dtype=np.uint8)
            for j, m in enumerate(masks):
                out[:, 2 * j] = m[start:stop].astype(bool, copy=False)
            out[:, 0::2] += ord("0")
            out[:, 1::2] = sep
            fh.write(out.tobytes())


def membership_columns(result) -> dict[str, np.ndarray]:
    """Header -> mask for every population of a :class:`gating.tree.GatingResult`, in tree order.

    The header is the population's name (the gate id; the quadrant id for a
    quadrant). A name used by several populations (same gate name under different
    parents) is written as its path ("/A/B") instead, so every column is unique.
    """
    pops = list(result.tree.populations())
    uses = Counter(p.name for p in pops)
    return {(pop.name if uses[pop.name] == 1 else pop.path_str): result.population_mask(pop) for pop in pops}
