"""Build a transform from its kind and parameters (protocol files, Gating-ML, ``describe()``)."""
from __future__ import annotations

from typing import Any

from ..errors import TransformError
from .base import Transform
from .bounded import BoundedTransform
from .flowjo import FlowJoBiexTransform, FlowJoLogTransform
from .hyperlog import HyperlogTransform
from .logicle import LogicleTransform
from .scale import AsinhTransform, LinearTransform, LogTransform

__all__ = ["transform_from_spec"]

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
