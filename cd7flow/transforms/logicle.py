"""Gating-ML 2.0 ``logicle`` (Parks, Roederer & Moore 2006; Moore & Parks 2012).

With W = 0 logicle equals fasinh; flowutils' solver fails there for |x| < ~1e-20
(returns about -6.9), this module does not. Accuracy and speed of the forward:
see :mod:`cd7flow.transforms.biexponential`.
"""
from __future__ import annotations

import math

import numpy as np

from .biexponential import _TAYLOR_LENGTH, _BiexponentialBase

__all__ = ["LogicleTransform"]


class LogicleTransform(_BiexponentialBase):
    """Gating-ML 2.0 ``logicle`` (Parks, Roederer & Moore 2006; Moore & Parks 2012).

    T: top of scale (data units) > 0; W: linearisation width (decades), 0 <= W <= M/2;
    M: decades at the top of scale > 0; A: extra negative decades, -W <= A <= M - 2W.
    Data T maps to 1, data 0 to (W + A)/(M + A); output is unbounded (x > T gives y > 1).
    Accuracy vs flowutils: see :mod:`cd7flow.transforms.biexponential`.
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
