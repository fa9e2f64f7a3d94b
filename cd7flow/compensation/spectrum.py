"""Gating-ML ``spectrumMatrix``: unmixing by fluorochrome spectra over detectors.

Unlike a :class:`~cd7flow.compensation.SpilloverMatrix` (square, detector-named),
a spectrum matrix names its outputs after fluorochromes and may have more
detectors than fluorochromes (unmixing is then least squares).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GatingError

__all__ = ["SpectrumMatrix"]


@dataclass(frozen=True, eq=False)
class SpectrumMatrix:
    """A Gating-ML ``spectrumMatrix``: one spectrum (row) per fluorochrome over the detectors.

    ``matrix`` is (n_fluorochromes, n_detectors): observed detectors = true @ matrix.
    Unmixing is ordinary least squares, true = observed @ pinv(matrix), which is
    inv(matrix) when it is square. With ``inverted_already`` the file gave the
    unmixing matrix itself, (n_detectors, n_fluorochromes), used as is.
    """

    id: str
    fluorochromes: tuple[str, ...]
    detectors: tuple[str, ...]
    matrix: np.ndarray
    inverted_already: bool = False

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        f, d = len(self.fluorochromes), len(self.detectors)
        want = (d, f) if self.inverted_already else (f, d)
        if m.shape != want:
            raise GatingError(
                f"spectrum matrix {self.id!r}: expected {want[0]}x{want[1]} coefficients "
                f"for {f} fluorochromes and {d} detectors, got {m.shape}"
            )
        if not np.all(np.isfinite(m)):
            raise GatingError(f"spectrum matrix {self.id!r} has non-finite coefficients")
        if f > d:
            raise GatingError(f"spectrum matrix {self.id!r}: more fluorochromes ({f}) than detectors ({d})")
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    def output_index(self, name: str) -> int | None:
        """Column of the unmixed output that ``name`` refers to, or None.

        Gating-ML names a spectrum matrix's outputs by its fluorochromes; a gate (or
        an fratio argument) with this matrix as its compensation-ref may also spell
        them with the ``Comp-`` prefix that analysis programs put on compensated
        parameters (``Comp-PE`` for fluorochrome ``PE``). An exact fluorochrome name wins.
        """
        if name in self.fluorochromes:
            return self.fluorochromes.index(name)
        if name[:5].lower() == "comp-" and name[5:] in self.fluorochromes:
            return self.fluorochromes.index(name[5:])
        return None

    @property
    def unmixing(self) -> np.ndarray:
        """(n_detectors, n_fluorochromes) matrix U with true = observed @ U."""
        if self.inverted_already:
            return self.matrix
        if self.matrix.shape[0] == self.matrix.shape[1]:
            try:
                return np.linalg.inv(self.matrix)
            except np.linalg.LinAlgError:
                raise GatingError(f"spectrum matrix {self.id!r} is singular") from None
        return np.linalg.pinv(self.matrix)

    def unmix(self, detector_values: np.ndarray) -> np.ndarray:
        """(n_events, n_detectors) observed values -> (n_events, n_fluorochromes), float64."""
        return np.asarray(detector_values, dtype=np.float64) @ self.unmixing

