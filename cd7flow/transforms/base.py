"""Transform base class and the chunk engine every transform runs on.

All transforms are vectorised over numpy arrays of any shape: float32 in gives
float32 out, anything else is computed and returned as float64. ``out=`` may be
the input itself (in place). Work is done in cache-sized chunks, so temporaries
stay small (a few hundred kB) whatever the input size; large arrays can be
split across threads (numpy releases the GIL) with CD7FLOW_NUM_THREADS=n.
Subclasses implement ``_forward_kernel``/``_inverse_kernel`` on 1-D contiguous chunks.
"""
from __future__ import annotations

import itertools
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from ..errors import TransformError

__all__ = ["Transform", "Kernel", "LN10"]

LN10 = math.log(10.0)
_CHUNK = 1 << 15  # elements per work chunk: keeps every scratch buffer inside L2
_PARALLEL_MIN = 1 << 20  # below this many elements threads cost more than they save


def _n_threads() -> int:
    """Worker threads for large arrays: CD7FLOW_NUM_THREADS, default 1.

    The table kernel is bound by memory and gathers, not arithmetic: on the 2-core
    reference machine two threads gave at best 1.1x and were up to 2x slower when the
    machine was busy (or BLAS threads were spinning), so one thread is the default.
    """
    env = os.environ.get("CD7FLOW_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 1


def _finite(name: str, value: Any, kind: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TransformError(f"{kind}: parameter {name}={value!r} is not a number") from None
    if not math.isfinite(v):
        raise TransformError(f"{kind}: parameter {name}={value!r} must be finite")
    return v


# --------------------------------------------------------------------------- chunk engine

Kernel = Callable[[np.ndarray, np.ndarray], None]
"""kernel(src, dst): 1-D C-contiguous arrays of the same length and work dtype;
dst may be the same memory as src."""


def _prepare(x: Any, out: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(x)
    if arr.dtype == np.float32:
        work = np.float32
    else:
        if arr.dtype.kind not in "biuf":
            raise TransformError(f"{what}: cannot transform values of dtype {arr.dtype} (need numbers)")
        work = np.float64
        if arr.dtype != np.float64:
            arr = arr.astype(np.float64)
    if out is None:
        out = np.empty(arr.shape, dtype=work)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != work or out.shape != arr.shape:
            raise TransformError(
                f"{what}: out= must be a {np.dtype(work).name} array of shape {arr.shape}, "
                f"got {getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
            )
    return arr, out


def _run_chunked(arr: np.ndarray, out: np.ndarray, kernel: Kernel) -> np.ndarray:
    """Apply kernel to arr -> out in chunks; handles any shape and strides."""
    if arr.size == 0:
        return out
    if arr.ndim == 0:
        src = arr.reshape(1).copy()
        kernel(src, src)
        out[...] = src[0]
        return out
    flat_ok = arr.flags.c_contiguous and out.flags.c_contiguous
    if flat_ok:
        src_flat, dst_flat = arr.reshape(-1), out.reshape(-1)
        n = src_flat.size
        starts = range(0, n, _CHUNK)

        def task(bounds: list[int]) -> None:
            with np.errstate(all="ignore"):  # errstate is per thread
                for s in bounds:
                    kernel(src_flat[s:s + _CHUNK], dst_flat[s:s + _CHUNK])
    else:
        # strided input/output (e.g. one column of an events matrix): copy one block of
        # rows at a time into a small contiguous buffer so the kernel sees fast memory
        row = int(np.prod(arr.shape[1:], dtype=np.int64)) or 1
        rows_per = max(1, _CHUNK // row)
        n = arr.shape[0] * row
        starts = range(0, arr.shape[0], rows_per)

        def task(bounds: list[int]) -> None:
            buf = np.empty(rows_per * row, dtype=out.dtype)
            with np.errstate(all="ignore"):  # errstate is per thread
                for s in bounds:
                    block = arr[s:s + rows_per]
                    m = block.size
                    view = buf[:m].reshape(block.shape)
                    np.copyto(view, block)
                    kernel(buf[:m], buf[:m])
                    np.copyto(out[s:s + rows_per], view)

    all_starts = list(starts)
    workers = min(_n_threads(), len(all_starts)) if n >= _PARALLEL_MIN else 1
    if workers <= 1:
        task(all_starts)
    else:
        # workers pull small batches of chunks from a shared counter, so a thread that the
        # OS deschedules (busy machine, BLAS threads spinning) does not hold up the others
        batch = 8
        counter = itertools.count(0, batch)  # next() on itertools.count is atomic under the GIL

        def pull() -> None:
            while True:
                i = next(counter)
                if i >= len(all_starts):
                    return
                task(all_starts[i:i + batch])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for fut in [pool.submit(pull) for _ in range(workers)]:
                fut.result()
    return out


# --------------------------------------------------------------------------- base class


class Transform(ABC):
    """A vectorised, invertible map from data values to scale values.

    ``apply(x)`` / ``inverse(y)`` accept array-likes of any shape; float32 input
    gives float32 output, anything else float64. ``out=`` receives the result
    (it may be the input array for in-place work). ``describe()`` returns the kind
    and parameters for provenance; ``transform_from_spec(**describe())`` rebuilds it.
    """

    kind: ClassVar[str] = ""

    def __init__(self, id: str | None = None):
        self.id = id

    # subclasses implement these two on 1-D contiguous chunks
    @abstractmethod
    def _forward_kernel(self, src: np.ndarray, dst: np.ndarray) -> None: ...

    @abstractmethod
    def _inverse_kernel(self, src: np.ndarray, dst: np.ndarray) -> None: ...

    @abstractmethod
    def params(self) -> dict[str, float]:
        """The defining parameters, by their Gating-ML / FlowJo names (lower case)."""

    def apply(self, x: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Data values -> scale values (see the class docstring for units)."""
        arr, out = _prepare(x, out, repr(self))
        with np.errstate(all="ignore"):
            return _run_chunked(arr, out, self._forward_kernel)

    def inverse(self, y: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Scale values -> data values."""
        arr, out = _prepare(y, out, repr(self))
        with np.errstate(all="ignore"):
            return _run_chunked(arr, out, self._inverse_kernel)

    def __call__(self, x: Any, out: np.ndarray | None = None) -> np.ndarray:
        return self.apply(x, out=out)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, **self.params()}
        if self.id is not None:
            d["id"] = self.id
        return d

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        ident = f", id={self.id!r}" if self.id is not None else ""
        return f"{type(self).__name__}({args}{ident})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.describe() == self.describe()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.describe().items()))))
