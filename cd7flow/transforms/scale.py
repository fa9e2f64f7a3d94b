"""Gating-ML 2.0 closed-form scales: ``flin``, ``flog`` and ``fasinh``."""
from __future__ import annotations

import math

import numpy as np

from ..errors import TransformError
from .base import LN10, Transform, _finite

__all__ = ["LinearTransform", "LogTransform", "AsinhTransform"]


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
