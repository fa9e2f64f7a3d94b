"""Gating-ML 2.0 ``hyperlog`` (Bagwell 2005); accuracy: see :mod:`cd7flow.transforms.biexponential`."""
from __future__ import annotations

import math

import numpy as np

from .biexponential import _TAYLOR_LENGTH, _BiexponentialBase

__all__ = ["HyperlogTransform"]


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
