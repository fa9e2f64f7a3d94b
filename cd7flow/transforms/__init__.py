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
float32 out, anything else float64; ``out=`` may be the input (in place).

Modules: ``base`` (Transform, dtype/out= handling, chunking and threads), ``scale``
(flin, flog, fasinh), ``biexponential`` (logicle/hyperlog solver and tables, with
their measured accuracy and speed), ``logicle``, ``hyperlog``, ``flowjo`` (FlowJo
log, biex, fasinh), ``bounded`` (boundMin/boundMax), ``spec`` (transform_from_spec).
"""
from __future__ import annotations

from .base import Transform
from .bounded import BoundedTransform
from .flowjo import FlowJoAsinhTransform, FlowJoBiexTransform, FlowJoLogTransform
from .hyperlog import HyperlogTransform
from .logicle import LogicleTransform
from .scale import AsinhTransform, LinearTransform, LogTransform
from .spec import transform_from_spec

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
