"""Display transforms for cytometry data (Gating-ML 2.0 and FlowJo flavours).

Every transform maps data values (instrument units, e.g. compensated fluorescence
in arbitrary linear units of $PnR scale) to *scale* values and back:

=====================  =========================================  ==================
class                  definition                                 output scale
=====================  =========================================  ==================
LinearTransform        Gating-ML ``flin``  (x + A) / (T + A)       [-A, T] -> [0, 1]
LogTransform           Gating-ML ``flog``  1/M log10(x/T) + 1      (0, T] -> (-inf, 1]
AsinhTransform         Gating-ML ``fasinh``                        T -> 1
LogicleTransform       Gating-ML ``logicle`` (Parks 2006)          T -> 1, 0 -> W/(M+A)+A/(M+A)
HyperlogTransform      Gating-ML ``hyperlog`` (Bagwell 2005)       T -> 1
FlowJoLogTransform     FlowJo 10 ``log`` (offset, decades)         offset -> 0
FlowJoBiexTransform    FlowJo 10 ``biex`` lookup table              channels 0..4096
BoundedTransform       Gating-ML 2.0 ``boundMin``/``boundMax``      clipped inner
=====================  =========================================  ==================

FlowJo's ``fasinh`` is the Gating-ML ``fasinh`` (FlowKit reads it that way too), so
``FlowJoAsinhTransform`` is an alias of :class:`AsinhTransform`.

All transforms are vectorised over numpy arrays of any shape: float32 in gives
float32 out, anything else is computed and returned as float64. ``out=`` may be
the input itself (in place). Work is done in cache-sized chunks, so temporaries
stay small (a few hundred kB) whatever the input size; large arrays can be
split across threads (numpy releases the GIL) with CD7FLOW_NUM_THREADS=n.

Logicle and hyperlog have no closed-form forward; their inverse is closed form.
The forward uses a table indexed by the float32 bit pattern (sign, exponent and
top 10 mantissa bits, i.e. cells 2**-10 wide in relative terms, log-spaced like
the data) with linear interpolation inside each cell; table nodes are solved
exactly (Halley iteration as in Moore & Parks 2012). float32 inputs use that table.
float64 inputs use a second table indexed by the float64 bit pattern of |x| (cells
2**-10 wide in relative terms, T * 2**-30 .. T * 2**40) holding a cubic Hermite of
y - x1 per cell (exact node values and slopes), reflected with the sign of x; below
the table an inverted Taylor series, above it the logarithm plus one Halley step.
Measured against flowutils' root finder on 2,000,000 random float32 values (uniform
-5e3..3e5 plus log-normal of both signs up to ~1e8) and on a grid through 0, subnormals
and 1e-30, for logicle and hyperlog with (T, W, M, A) = (262144, 0.5, 4.5, 0),
(262144, 1, 4.5, 1), (1024, 2, 4.5, -1): max abs error 1.3e-7 (2.4e-7 where y > 2),
i.e. the float32 rounding of the result; float64 input: <= 5e-15 (cubic error ~h**4)
on 2,200,000 values per parameter set in tests (log-uniform T*1e-12..T*1e3 of both signs,
cell edges, 0 and subnormals), ~10 ms per 1,000,000 values vs ~39 ms for the former
float32-table + Halley step (one core, idle reference machine). Speed: logicle on
15,000,000 float32 values 52-60 ms on one core of the reference machine (AMD EPYC, 2 cores) when it is otherwise idle; flowutils takes ~3 s.
Non-finite input: NaN -> NaN, +-inf -> +-inf (flowutils returns -1 for all three).
With W = 0 logicle equals fasinh; flowutils' solver fails there for |x| < ~1e-20
(returns about -6.9), this module does not.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from ..errors import TransformError

__all__ = [
    "Transform",
    "LinearTransform",
    "LogTransform",
    "AsinhTransform",
    "LogicleTransform",
    "HyperlogTransform",
    "FlowJoLogTransform",
    "FlowJoAsinhTransform",
    "FlowJoBiexTransform",
    "BoundedTransform",
    "transform_from_spec",
]

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


# --------------------------------------------------------------------------- closed forms


class LinearTransform(Transform):
    """Gating-ML 2.0 ``flin``: y = (x + A) / (T + A); maps data [-A, T] onto [0, 1].

    T (data units) > 0 and T + A > 0. The spec also says 0 <= A <= T, but FlowJo
    workspaces store a negative ``minRange`` here, so only T + A > 0 is enforced.
    """

    kind = "flin"

    def __init__(self, t: float = 262144.0, a: float = 0.0, id: str | None = None):
        super().__init__(id)
        self.t = _finite("T", t, "flin")
        self.a = _finite("A", a, "flin")
        if self.t <= 0:
            raise TransformError(f"flin: T must be > 0, got {self.t}")
        if self.t + self.a <= 0:
            raise TransformError(f"flin: T + A must be > 0, got T={self.t}, A={self.a}")

    def params(self) -> dict[str, float]:
        return {"t": self.t, "a": self.a}

    def _forward_kernel(self, src, dst):
        k = src.dtype.type(1.0 / (self.t + self.a))
        np.add(src, src.dtype.type(self.a), out=dst)
        np.multiply(dst, k, out=dst)

    def _inverse_kernel(self, src, dst):
        np.multiply(src, src.dtype.type(self.t + self.a), out=dst)
        np.subtract(dst, src.dtype.type(self.a), out=dst)


class LogTransform(Transform):
    """Gating-ML 2.0 ``flog``: y = 1/M * log10(x / T) + 1.

    T (data units) > 0, M (decades) > 0. Data <= 0 has no logarithm: 0 gives -inf,
    negative values give NaN (as in flowutils/FlowKit).
    """

    kind = "flog"

    def __init__(self, t: float = 262144.0, m: float = 4.5, id: str | None = None):
        super().__init__(id)
        self.t = _finite("T", t, "flog")
        self.m = _finite("M", m, "flog")
        if self.t <= 0:
            raise TransformError(f"flog: T must be > 0, got {self.t}")
        if self.m <= 0:
            raise TransformError(f"flog: M must be > 0, got {self.m}")

    def params(self) -> dict[str, float]:
        return {"t": self.t, "m": self.m}

    def _forward_kernel(self, src, dst):
        f = src.dtype.type
        np.multiply(src, f(1.0 / self.t), out=dst)
        np.log10(dst, out=dst)
        np.multiply(dst, f(1.0 / self.m), out=dst)
        np.add(dst, f(1.0), out=dst)

    def _inverse_kernel(self, src, dst):
        f = src.dtype.type
        np.subtract(src, f(1.0), out=dst)
        np.multiply(dst, f(self.m * LN10), out=dst)
        np.exp(dst, out=dst)
        np.multiply(dst, f(self.t), out=dst)


class AsinhTransform(Transform):
    """Gating-ML 2.0 ``fasinh``: y = (asinh(x sinh(M ln10) / T) + A ln10) / ((M + A) ln10).

    T (data units) > 0, M (decades) > 0, 0 <= A <= M (extra negative decades).
    Also FlowJo 10's ``fasinh`` (its extra length/maxRange/W attributes do not change it).
    """

    kind = "fasinh"

    def __init__(self, t: float = 262144.0, m: float = 4.5, a: float = 0.0, id: str | None = None):
        super().__init__(id)
        self.t = _finite("T", t, "fasinh")
        self.m = _finite("M", m, "fasinh")
        self.a = _finite("A", a, "fasinh")
        if self.t <= 0:
            raise TransformError(f"fasinh: T must be > 0, got {self.t}")
        if self.m <= 0:
            raise TransformError(f"fasinh: M must be > 0, got {self.m}")
        if not 0 <= self.a <= self.m:
            raise TransformError(f"fasinh: A must be in [0, M={self.m}], got {self.a}")

    def params(self) -> dict[str, float]:
        return {"t": self.t, "m": self.m, "a": self.a}

    def _consts(self) -> tuple[float, float, float]:
        return math.sinh(self.m * LN10) / self.t, self.a * LN10, (self.m + self.a) * LN10

    def _forward_kernel(self, src, dst):
        f = src.dtype.type
        pre, shift, div = self._consts()
        np.multiply(src, f(pre), out=dst)
        np.arcsinh(dst, out=dst)
        np.add(dst, f(shift), out=dst)
        np.multiply(dst, f(1.0 / div), out=dst)

    def _inverse_kernel(self, src, dst):
        f = src.dtype.type
        pre, shift, div = self._consts()
        np.multiply(src, f(div), out=dst)
        np.subtract(dst, f(shift), out=dst)
        np.sinh(dst, out=dst)
        np.multiply(dst, f(1.0 / pre), out=dst)


FlowJoAsinhTransform = AsinhTransform


class FlowJoLogTransform(Transform):
    """FlowJo 10 ``log``: y = (log10(max(x, offset)) - log10(offset)) / decades.

    offset (data units) > 0: values below it are raised to it first (so y >= 0);
    decades > 0. Equal to FlowKit's WSPLogTransform. The inverse returns
    offset * 10**(y * decades) (values clipped at the offset come back as the offset).
    """

    kind = "flowjo_log"

    def __init__(self, offset: float = 1.0, decades: float = 4.5, id: str | None = None):
        super().__init__(id)
        self.offset = _finite("offset", offset, "FlowJo log")
        self.decades = _finite("decades", decades, "FlowJo log")
        if self.offset <= 0:
            raise TransformError(f"FlowJo log: offset must be > 0, got {self.offset}")
        if self.decades <= 0:
            raise TransformError(f"FlowJo log: decades must be > 0, got {self.decades}")

    def params(self) -> dict[str, float]:
        return {"offset": self.offset, "decades": self.decades}

    def _forward_kernel(self, src, dst):
        f = src.dtype.type
        np.maximum(src, f(self.offset), out=dst)
        np.multiply(dst, f(1.0 / self.offset), out=dst)
        np.log10(dst, out=dst)
        np.multiply(dst, f(1.0 / self.decades), out=dst)

    def _inverse_kernel(self, src, dst):
        f = src.dtype.type
        np.multiply(src, f(self.decades * LN10), out=dst)
        np.exp(dst, out=dst)
        np.multiply(dst, f(self.offset), out=dst)


# --------------------------------------------------------------------------- logicle / hyperlog

_SHIFT = 13  # float32 has 23 mantissa bits; keep the top 10 for the table index
_FRAC_MASK = np.uint32((1 << _SHIFT) - 1)
_HALF = 1 << (31 - _SHIFT)  # number of cells for one sign
_TAYLOR_LENGTH = 16


class _BiexponentialBase(Transform):
    """Shared machinery of logicle and hyperlog (Gating-ML 2.0 section 6).

    Both are y = root(B(y) - x) with B closed form for y >= x1 (the scale value of
    data zero) and B(y) = -B(2 x1 - y) below it. Subclasses set a, b, c, d, f, w,
    x0, x1, x2 and implement ``_b_pos``/``_b_derivs``; the Taylor series around x1
    avoids round-off near data zero (Moore & Parks 2012).
    """

    def __init__(self, t, w, m, a, id, name, w_positive):
        super().__init__(id)
        self.t = _finite("T", t, name)
        self.w = _finite("W", w, name)
        self.m = _finite("M", m, name)
        self.a = _finite("A", a, name)
        if self.t <= 0:
            raise TransformError(f"{name}: T must be > 0, got {self.t}")
        if self.m <= 0:
            raise TransformError(f"{name}: M must be > 0, got {self.m}")
        if w_positive and self.w <= 0:
            raise TransformError(f"{name}: W must be > 0, got {self.w}")
        if self.w < 0:
            raise TransformError(f"{name}: W must be >= 0, got {self.w}")
        if 2 * self.w > self.m:
            raise TransformError(f"{name}: W must be <= M/2 (M={self.m}), got {self.w}")
        if not -self.w <= self.a <= self.m - 2 * self.w:
            raise TransformError(
                f"{name}: A must be in [-W, M - 2W] = [{-self.w}, {self.m - 2 * self.w}], got {self.a}"
            )
        self._x2 = self.a / (self.m + self.a)
        self._wn = self.w / (self.m + self.a)
        self._x1 = self._x2 + self._wn
        self._x0 = self._x2 + 2 * self._wn
        self._b = (self.m + self.a) * LN10
        self._setup()
        self._x_taylor = self._x1 + self._wn / 4

    def params(self) -> dict[str, float]:
        return {"t": self.t, "w": self.w, "m": self.m, "a": self.a}

    # -- subclass hooks (float64 arrays, r >= x1)
    @abstractmethod
    def _setup(self) -> None: ...

    @abstractmethod
    def _b_pos(self, r: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _b_derivs(self, r: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B(r) - v, B'(r), B''(r)) for r >= x1."""

    def _series(self, dr: np.ndarray) -> np.ndarray:
        coef = self._taylor
        acc = np.full_like(dr, coef[-1])
        for c in coef[-2::-1]:
            acc *= dr
            acc += c
        return acc * dr

    def _inverse_pos(self, r: np.ndarray) -> np.ndarray:
        """B(r) for r >= x1 (float64), series near x1 for relative precision."""
        res = self._b_pos(r)
        near = r < self._x_taylor
        if near.any():
            res[near] = self._series(r[near] - self._x1)
        return res

    def _halley(self, r: np.ndarray, v: np.ndarray) -> np.ndarray:
        """One Halley step on B(r) = v (r >= x1, float64)."""
        fval, d1, d2 = self._b_derivs(r, v)
        return r - fval / (d1 * (1.0 - fval * d2 / (2.0 * d1 * d1)))

    def _solve_exact(self, v: np.ndarray) -> np.ndarray:
        """Scale value of data v >= 0 by Halley iteration to double precision."""
        v = np.asarray(v, dtype=np.float64)
        lin_top = float(self._inverse_pos(np.array([self._x0]))[0])
        with np.errstate(divide="ignore"):
            r = np.where(v < lin_top, self._x1 + v / self._taylor[0], np.log(np.maximum(v, 1e-300) / self._acoef) / self._b)
        r = np.maximum(r, self._x1)
        for _ in range(50):
            new = np.maximum(self._halley(r, v), self._x1)
            delta = np.abs(new - r)
            r = new
            if not np.any(delta > 3e-16 * np.maximum(1.0, np.abs(r))):
                break
        r[v == 0] = self._x1
        return r

    # -- table for the fast forward
    @functools.cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        return _cached_table(type(self), self.t, self.w, self.m, self.a)

    def _forward_kernel(self, src, dst):
        if src.dtype != np.float32:
            self._forward64(src, dst)
            return
        value, slope = self._table[0], self._table[1]
        n = src.shape[0]
        u = src.view(np.uint32)
        idx = np.empty(n, np.intp)
        np.right_shift(u, np.uint32(_SHIFT), out=idx, casting="unsafe")
        frac = np.empty(n, np.float32)
        np.copyto(frac, np.bitwise_and(u, _FRAC_MASK), casting="unsafe")
        gathered = np.empty(n, np.float32)
        np.take(slope, idx, out=gathered, mode="clip")
        np.multiply(frac, gathered, out=frac)
        np.take(value, idx, out=gathered, mode="clip")
        np.add(frac, gathered, out=dst)

    @functools.cached_property
    def _table64(self) -> tuple[np.ndarray, np.ndarray, int, float]:
        return _cached_table64(type(self), self.t, self.w, self.m, self.a)

    def _forward64(self, src: np.ndarray, dst: np.ndarray) -> None:
        """float64 forward: cubic Hermite in float64 cells 2**-10 wide (relative).

        The cell index is the bit pattern of |x| shifted right, so the lookup is one
        shift and one gather; cubic error is ~(2**-10)**4 / 384 of the fourth derivative,
        i.e. <= 5e-15 in scale units (see the module docstring). Values are interpolated
        as y - x1 and reflected with the sign of x: logicle/hyperlog are odd about x1.
        """
        rows, starts, qbase, x_hi = self._table64
        n = src.shape[0]
        ax = np.abs(src)
        q = np.empty(n, np.int64)
        np.right_shift(ax.view(np.int64), _SHIFT64, out=q)
        q -= qbase  # below the table -> cell 0 (series at 0), above -> the last (NaN) cell
        coef = np.take(rows, q, axis=0, mode="clip")
        dx = np.take(starts, q, mode="clip")
        np.subtract(ax, dx, out=dx)
        acc = np.multiply(coef[:, 3], dx)
        acc += coef[:, 2]
        acc *= dx
        acc += coef[:, 1]
        acc *= dx
        acc += coef[:, 0]
        if q.max() >= rows.shape[0] - 1:  # beyond T * 2**40, inf or NaN: rare, logarithmic there
            big = ~(ax < x_hi)
            v = ax[big]
            r = np.log(v / self._acoef) / self._b
            # one Halley step adds the terms the logarithm neglects (hyperlog's c*y is
            # ~1e-12 relative at T * 2**40 when W is large); keep r where exp overflows
            refined = self._halley(r, v)
            acc[big] = np.where(np.isfinite(refined), refined, r) - self._x1
        np.copysign(acc, src, out=acc)
        np.add(acc, self._x1, out=dst)

    def _inverse_kernel(self, src, dst):
        s = src.astype(np.float64)
        neg = s < self._x1
        r = np.where(neg, 2 * self._x1 - s, s)
        res = self._inverse_pos(r)
        np.negative(res, out=res, where=neg)
        np.copyto(dst, res, casting="same_kind")


@functools.lru_cache(maxsize=8)
def _cached_table(cls: type, t: float, w: float, m: float, a: float) -> tuple[np.ndarray, np.ndarray]:
    # 4 MB per parameter set, built in ~0.15 s: shared by every instance with these parameters
    return _build_table(cls(t=t, w=w, m=m, a=a))


def _build_table(xf: _BiexponentialBase) -> tuple[np.ndarray, np.ndarray]:
    """Values and per-mantissa-step slopes at every float32 cell start.

    Cell i starts at the float32 whose bits are i << 13; cell 2**18 + i is its
    negative. Solved exactly once per parameter set (cached on the instance).
    """
    starts = (np.arange(_HALF + 1, dtype=np.uint64) << np.uint64(_SHIFT)).astype(np.uint32)
    with np.errstate(invalid="ignore"):  # the NaN bit patterns of exponent 255
        x = starts.view(np.float32).astype(np.float64)
    x[_HALF] = 2.0**128  # the +inf cell: use its finite left limit so the last slope is defined
    exp255 = (np.arange(_HALF) >> 10) == 255
    x[:_HALF][exp255] = 2.0**128
    # far below T the scale is linear in the data and far above it logarithmic, both to
    # double precision (neglected terms < 1e-15 relative), so only the middle is solved
    y = np.empty_like(x)
    lo, hi = xf.t * 2.0**-60, xf.t * 2.0**40
    small, large = x < lo, x > hi
    mid = ~(small | large)
    y[small] = xf._x1 + x[small] / xf._taylor[0]
    y[large] = np.log(x[large] / xf._acoef) / xf._b
    y[mid] = xf._solve_exact(x[mid])
    value_pos = y[:_HALF].copy()
    slope_pos = (y[1:] - y[:-1]) / float(1 << _SHIFT)
    value_pos[exp255] = np.nan  # inf and NaN inputs
    slope_pos[exp255] = 0.0
    value_pos[_HALF - 1024] = np.inf  # +inf bits (cell of exponent 255, mantissa 0)
    value = np.empty(2 * _HALF, np.float32)
    slope = np.empty(2 * _HALF, np.float32)
    value[:_HALF] = value_pos
    slope[:_HALF] = slope_pos
    value[_HALF:] = 2 * xf._x1 - value_pos
    slope[_HALF:] = -slope_pos
    return value, slope


_SHIFT64 = 42  # float64 has 52 mantissa bits; keep the top 10 for the table index
_LO64, _HI64 = -30, 40  # the float64 table spans T * 2**-30 .. T * 2**40 (binades)


@functools.lru_cache(maxsize=8)
def _cached_table64(cls: type, t: float, w: float, m: float, a: float):
    # 70 binades x 1024 cells x 40 bytes = 2.9 MB, built in ~0.02 s
    return _build_table64(cls(t=t, w=w, m=m, a=a))


def _build_table64(xf: _BiexponentialBase) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Cubic Hermite coefficients of y - x1 per float64 cell, cell starts, index base, top.

    Row 0 serves every |x| below the table: the inverted Taylor series around data 0
    (y - x1 = s1 x + s2 x**2 + s3 x**3; the next term is < 1e-25 there). Rows 1..M are
    the cells whose starts are float64s with the low 42 mantissa bits zero; the nodes are
    solved exactly and the slopes are 1/B'(y), so the cubic matches value and slope at
    both ends. The last row is NaN: |x| beyond the table is handled by the caller.
    """
    bits = np.array([xf.t * 2.0**_LO64, xf.t * 2.0**_HI64]).view(np.int64) >> _SHIFT64
    q_lo, q_hi = int(bits[0]), int(bits[1]) + 1
    nodes = (np.arange(q_lo, q_hi + 1, dtype=np.int64) << _SHIFT64).view(np.float64)
    y = xf._solve_exact(nodes)
    slope = 1.0 / xf._b_derivs(y, np.zeros_like(y))[1]
    h = np.diff(nodes)
    secant = np.diff(y) / h
    n_cells = q_hi - q_lo
    rows = np.full((n_cells + 2, 4), np.nan)
    starts = np.full(n_cells + 2, np.nan)
    rows[1:-1, 0] = y[:-1] - xf._x1
    rows[1:-1, 1] = slope[:-1]
    rows[1:-1, 2] = (3 * secant - 2 * slope[:-1] - slope[1:]) / h
    rows[1:-1, 3] = (slope[:-1] + slope[1:] - 2 * secant) / (h * h)
    starts[1:-1] = nodes[:-1]
    t0, t1, t2 = xf._taylor[:3]
    rows[0] = [0.0, 1 / t0, -t1 / t0**3, (2 * t1 * t1 - t0 * t2) / t0**5]
    starts[0] = 0.0
    return rows, starts, q_lo - 1, float(nodes[-1])


class LogicleTransform(_BiexponentialBase):
    """Gating-ML 2.0 ``logicle`` (Parks, Roederer & Moore 2006; Moore & Parks 2012).

    T: top of scale (data units) > 0; W: linearisation width (decades), 0 <= W <= M/2;
    M: decades at the top of scale > 0; A: extra negative decades, -W <= A <= M - 2W.
    Data T maps to 1, data 0 to (W + A)/(M + A); output is unbounded (x > T gives y > 1).
    Accuracy vs flowutils: see the module docstring.
    """

    kind = "logicle"

    def __init__(self, t: float = 262144.0, w: float = 0.5, m: float = 4.5, a: float = 0.0,
                 id: str | None = None):
        super().__init__(t, w, m, a, id, "logicle", w_positive=False)

    def _setup(self) -> None:
        b, w, x0, x1 = self._b, self._wn, self._x0, self._x1
        d = _logicle_d(b, w)
        c_a = math.exp(x0 * (b + d))
        mf_a = math.exp(b * x1) - c_a / math.exp(d * x1)
        a = self.t / ((math.exp(b) - mf_a) - c_a / math.exp(d))
        self._d, self._acoef, self._c, self._f = d, a, c_a * a, -mf_a * a
        pos, neg = a * math.exp(b * x1), -self._c / math.exp(d * x1)
        taylor = []
        for i in range(_TAYLOR_LENGTH):
            pos *= b / (i + 1)
            neg *= -d / (i + 1)
            taylor.append(pos + neg)
        taylor[1] = 0.0  # exactly zero by the logicle condition
        self._taylor = np.array(taylor)

    def _b_pos(self, r):
        return (self._acoef * np.exp(self._b * r) + self._f) - self._c * np.exp(-self._d * r)

    def _b_derivs(self, r, v):
        ae = self._acoef * np.exp(self._b * r)
        ce = self._c * np.exp(-self._d * r)
        fval = (ae + self._f) - (ce + v)
        near = r < self._x_taylor
        if near.any():
            fval[near] = self._series(r[near] - self._x1) - v[near]
        return fval, self._b * ae + self._d * ce, self._b * self._b * ae - self._d * self._d * ce


def _logicle_d(b: float, w: float) -> float:
    """Root d of 2 (ln d - ln b) + w (b + d) = 0 in (0, b] (safeguarded Newton)."""
    if w == 0:
        return b
    lo, hi = 0.0, b
    d = b / 2
    for _ in range(200):
        fval = 2 * (math.log(d) - math.log(b)) + w * (b + d)
        if fval == 0:
            return d
        if fval < 0:
            lo = d
        else:
            hi = d
        step = fval / (2 / d + w)
        new = d - step
        if not lo < new < hi:
            new = (lo + hi) / 2
        if abs(new - d) <= 2 * b * np.finfo(float).eps:
            return new
        d = new
    return d


class HyperlogTransform(_BiexponentialBase):
    """Gating-ML 2.0 ``hyperlog`` (Bagwell 2005): root of EH(y) = a e^(by) + c y - f.

    T: top of scale (data units) > 0; W: linear-region width (decades), 0 < W <= M/2;
    M: decades > 0; A: extra negative decades, -W <= A <= M - 2W. Data T maps to 1.
    """

    kind = "hyperlog"

    def __init__(self, t: float = 262144.0, w: float = 0.5, m: float = 4.5, a: float = 0.0,
                 id: str | None = None):
        super().__init__(t, w, m, a, id, "hyperlog", w_positive=True)

    def _setup(self) -> None:
        b, w, x0, x1 = self._b, self._wn, self._x0, self._x1
        c_a = math.exp(b * x0) / w
        f_a = math.exp(b * x1) + c_a * x1
        a = self.t / (math.exp(b) + c_a - f_a)
        self._acoef, self._c, self._f = a, c_a * a, f_a * a
        coef = a * math.exp(b * x1)
        taylor = []
        for i in range(_TAYLOR_LENGTH):
            coef *= b / (i + 1)
            taylor.append(coef)
        taylor[0] += self._c
        self._taylor = np.array(taylor)

    def _b_pos(self, r):
        return (self._acoef * np.exp(self._b * r) + self._c * r) - self._f

    def _b_derivs(self, r, v):
        ae = self._acoef * np.exp(self._b * r)
        fval = (ae + self._c * r) - (self._f + v)
        near = r < self._x_taylor
        if near.any():
            fval[near] = self._series(r[near] - self._x1) - v[near]
        return fval, self._b * ae + self._c, self._b * self._b * ae


# --------------------------------------------------------------------------- FlowJo biex


def _flowjo_log_root(b: float, w: float) -> float:
    """Root of 2 ln(d) - 2 ln(b) + w (b + d)... FlowJo's negative-range solve (cytolib port)."""
    if w == 0:
        return b
    lo, hi = 0.0, b
    d = (lo + hi) / 2
    fb = -2 * math.log(b) + w * b
    f = 2 * math.log(d) + w * d + fb
    df = 2 / d + w
    dx_last = abs(hi - lo)
    for _ in range(100):
        if ((d - hi) * df - f) - ((d - lo) * df - f) > 0 or abs(2 * f) > abs(dx_last * df):
            dx = (hi - lo) / 2
            d = lo + dx
            if d == lo:
                return d
        else:
            dx = f / df
            prev = d
            d -= dx
            if d == prev:
                return d
        if abs(dx) < 1e-12:
            return d
        dx_last = dx
        f = 2 * math.log(d) + w * d + fb
        df = 2 / d + w
        if f < 0:
            lo = d
        else:
            hi = d
    return d


class FlowJoBiexTransform(Transform):
    """FlowJo 10 ``biex``: piecewise-linear lookup table, data -> channels 0..channel_range.

    negative: extra negative decades (>= 0 effective); width: FlowJo width basis (< 0,
    e.g. -10 ... -1000; larger magnitude compresses more data around zero); positive:
    decades (> 0); max_value: top of scale in data units (> 0); length: FlowJo's
    ``length`` attribute, only 256 exists in FlowJo files. Output is the FlowJo
    channel 0..4096 (as FlowKit's WSPBiexTransform), data beyond the table is clipped
    to its ends. The table follows FlowJo's (via cytolib) construction; it reproduces
    FlowJo's exported table for width -7.943282, negative 1 to < 0.01 % mean error.
    """

    kind = "biex"
    channel_range: ClassVar[int] = 4096

    def __init__(self, negative: float = 0.0, width: float = -10.0, positive: float = 4.418540,
                 max_value: float = 262144.0, length: int = 256, id: str | None = None):
        super().__init__(id)
        self.negative = _finite("negative", negative, "biex")
        self.width = _finite("width", width, "biex")
        self.positive = _finite("positive", positive, "biex")
        self.max_value = _finite("max_value", max_value, "biex")
        self.length = int(_finite("length", length, "biex"))
        if self.width >= 0:
            raise TransformError(f"biex: width basis must be < 0, got {self.width}")
        if self.positive <= 0:
            raise TransformError(f"biex: positive decades must be > 0, got {self.positive}")
        if self.max_value <= 0:
            raise TransformError(f"biex: max_value must be > 0, got {self.max_value}")
        if self.length != 256:
            raise TransformError(f"biex: only FlowJo's length=256 is defined, got {self.length}")
        if math.log10(-self.width) / 2 >= self.positive:
            raise TransformError(f"biex: width {self.width} too wide for {self.positive} positive decades")
        self._data, self._channels = self._lut()

    def params(self) -> dict[str, float]:
        return {"negative": self.negative, "width": self.width, "positive": self.positive,
                "max_value": self.max_value, "length": self.length}

    @property
    def data_range(self) -> tuple[float, float]:
        """(lowest, highest) data value on the table; apply() clips data outside it."""
        return float(self._data[0]), float(self._data[-1])

    def _lut(self) -> tuple[np.ndarray, np.ndarray]:
        n_ch = self.channel_range
        width = math.log10(-self.width)
        decades = self.positive - width / 2
        extra = max(self.negative, 0.0) + width / 2
        zero_point = int(extra * n_ch / (extra + decades))
        zero_point = int(min(zero_point, n_ch / 2))
        if zero_point > 0:
            decades = extra * n_ch / zero_point
        width = width / (2 * decades)
        positive_range = LN10 * decades
        minimum = self.max_value / math.exp(positive_range)
        negative_range = _flowjo_log_root(positive_range, width)
        n_points = n_ch + 1
        steps = np.arange(n_points, dtype=np.float64)
        positive = np.exp(steps / n_points * positive_range)
        negative = np.exp(steps / n_points * -negative_range)
        negative *= math.exp((positive_range + negative_range) * (width + extra / decades))
        s = positive[zero_point] - negative[zero_point]
        positive[zero_point:] = minimum * ((positive[zero_point:] - negative[zero_point:]) - s)
        below = np.arange(zero_point)
        positive[below] = -positive[2 * zero_point - below]
        return positive, steps

    def _forward_kernel(self, src, dst):
        np.copyto(dst, np.interp(src, self._data, self._channels), casting="same_kind")

    def _inverse_kernel(self, src, dst):
        np.copyto(dst, np.interp(src, self._channels, self._data), casting="same_kind")


# --------------------------------------------------------------------------- bounded


class BoundedTransform(Transform):
    """Gating-ML 2.0 bounded transformation: y = max(min(inner(x), upper), lower).

    In Gating-ML 2.0 (Transformations.v2.0.xsd) every ``transforms:transformation``
    may carry optional ``boundMin``/``boundMax`` attributes; the result of the inner
    function is clipped to [boundMin, boundMax] (defaults -inf/+inf) and boundMin
    must not exceed boundMax. Bounds are in the inner transform's *scale* units.
    The inverse clips its input to the same interval and inverts the inner transform,
    so clipped values come back as the data value of the bound.
    """

    def __init__(self, inner: Transform, lower: float | None = None, upper: float | None = None,
                 id: str | None = None):
        super().__init__(id if id is not None else inner.id)
        if not isinstance(inner, Transform):
            raise TransformError(f"bounded transform needs a Transform, got {type(inner).__name__}")
        self.inner = inner
        self.lower = -math.inf if lower is None else float(lower)
        self.upper = math.inf if upper is None else float(upper)
        if math.isnan(self.lower) or math.isnan(self.upper):
            raise TransformError("bounded transform: boundMin/boundMax must be numbers")
        if self.lower > self.upper:
            raise TransformError(f"bounded transform: boundMin {self.lower} > boundMax {self.upper}")

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    def params(self) -> dict[str, Any]:
        return {**self.inner.params(), "bound_min": self.lower, "bound_max": self.upper}

    def _forward_kernel(self, src, dst):
        self.inner._forward_kernel(src, dst)
        np.clip(dst, self.lower, self.upper, out=dst)

    def _inverse_kernel(self, src, dst):
        np.clip(src, self.lower, self.upper, out=dst)
        self.inner._inverse_kernel(dst, dst)

    def __repr__(self) -> str:
        return f"BoundedTransform({self.inner!r}, lower={self.lower}, upper={self.upper})"


# --------------------------------------------------------------------------- factory

_KINDS: dict[str, type[Transform]] = {
    "flin": LinearTransform, "linear": LinearTransform, "lin": LinearTransform,
    "flog": LogTransform, "log": LogTransform,
    "fasinh": AsinhTransform, "asinh": AsinhTransform, "arcsinh": AsinhTransform,
    "logicle": LogicleTransform,
    "hyperlog": HyperlogTransform,
    "biex": FlowJoBiexTransform, "flowjo_biex": FlowJoBiexTransform,
    "flowjo_log": FlowJoLogTransform,
    "flowjo_asinh": AsinhTransform,
}


def transform_from_spec(kind: str, **params: Any) -> Transform:
    """Build a transform by name, e.g. ``transform_from_spec("logicle", t=262144, w=0.5, m=4.5, a=0)``.

    Names: flin/linear, flog/log, fasinh/asinh, logicle, hyperlog, biex (FlowJo),
    flowjo_log, flowjo_asinh. Parameter names are case-insensitive (T or t).
    ``bound_min``/``bound_max`` (or boundMin/boundMax) wrap the result in a
    :class:`BoundedTransform`. ``describe()`` output is accepted back.
    """
    if not isinstance(kind, str) or kind.strip().lower() not in _KINDS:
        raise TransformError(f"unknown transform kind {kind!r}; known: {', '.join(sorted(_KINDS))}")
    cls = _KINDS[kind.strip().lower()]
    norm: dict[str, Any] = {}
    for key, value in params.items():
        k = key if key == "max_value" else key.lower()
        k = {"boundmin": "bound_min", "boundmax": "bound_max", "maxvalue": "max_value",
             "maxrange": "max_value", "neg": "negative", "pos": "positive"}.get(k, k)
        norm[k] = value
    lower, upper = norm.pop("bound_min", None), norm.pop("bound_max", None)
    try:
        xf = cls(**norm)
    except TypeError as exc:
        raise TransformError(f"{kind}: bad parameters {sorted(params)}: {exc}") from None
    if lower is not None or upper is not None:
        xf = BoundedTransform(xf, lower, upper)
    return xf
