"""A gating strategy: the gate tree plus the transforms, compensations and ratios its dimensions name.

Every reader of gating files (Gating-ML, FlowJo 10 and 7-9 workspaces, FACSDiva
exports; see :func:`cd7flow.io.open_gating`) returns one, the protocol pipeline
exports one, and the CLI and the viewer apply one to a :class:`~cd7flow.sample.Sample`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from gating.dimensions import FCS_COMPENSATION, RatioDimension, is_uncompensated
from gating.tree import GatingResult, GatingTree

from .compensation.spectrum import SpectrumMatrix
from .datasource import SampleSource
from .errors import GatingError
from .sample import ChannelNotFound, Sample

__all__ = ["GatingStrategy"]


@dataclass
class GatingStrategy:
    """Gates (as a tree) plus everything needed to compute their dimensions.

    transforms : id -> transform (``apply(x)``), e.g. a :class:`~cd7flow.transforms.LogicleTransform`.
    compensations : id -> SpilloverMatrix or SpectrumMatrix ("FCS"/"uncompensated" are implicit).
    derived : id -> RatioDimension (Gating-ML fratio).
    source_path : the gating file it was read from (named in errors), if any.
    sample_name : for a workspace, the sample whose gates these are.
    """

    tree: GatingTree = field(default_factory=GatingTree)
    transforms: dict[str, Any] = field(default_factory=dict)
    compensations: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, RatioDimension] = field(default_factory=dict)
    source_path: str | None = None
    sample_name: str | None = None

    def source(self, sample: Sample) -> SampleSource:
        return SampleSource(sample, self.compensations, self.transforms, self.derived)

    def apply(self, sample: Sample) -> GatingResult:
        return self.tree.apply(self.source(sample))

    def check_channels(self, sample: Sample) -> None:
        """Raise GatingError unless ``sample`` has every channel a gate (or a ratio or matrix it uses) names.

        Done before gating so that the error names the gating file, the gate and the
        channel, rather than surfacing from deep inside an evaluation.
        """
        where = os.fspath(self.source_path) if self.source_path else "gating strategy"

        def need(channel: str, gate_id: str) -> None:
            try:
                sample.channel(channel)
            except ChannelNotFound:
                raise GatingError(
                    f"{where}: gate {gate_id!r} uses channel {channel!r}, which {sample.name} does not have "
                    f"(channels: {', '.join(sample.channels)})"
                ) from None

        def need_under(channel: str, compensation: str | None, gate_id: str) -> None:
            if is_uncompensated(compensation) or compensation == FCS_COMPENSATION:
                need(channel, gate_id)
                return
            matrix = self.compensations.get(compensation)
            if not (isinstance(matrix, SpectrumMatrix) and matrix.output_index(channel) is not None):
                need(channel, gate_id)  # a spectrum-matrix output (fluorochrome) is not an FCS channel
            for det in getattr(matrix, "detectors", None) or getattr(matrix, "channels", ()):
                need(det, gate_id)

        for gate in self.tree.gates():
            for dim in gate.dimensions:
                ratio = self.derived.get(dim.channel)
                if ratio is not None:
                    need_under(ratio.numerator, dim.compensation, gate.id)
                    need_under(ratio.denominator, dim.compensation, gate.id)
                else:
                    need_under(dim.channel, dim.compensation, gate.id)
