"""Gating-ML 2.0 ``boundMin``/``boundMax``: an inner transform clipped on its scale."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import TransformError
from .base import Transform

__all__ = ["BoundedTransform"]


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
