"""Gate geometry, gating trees and automated gating on numpy arrays.

Arrays and channel names in, boolean masks and statistics out: nothing here reads
files, compensates, or imports Qt.
"""
from .dimensions import ArraySource, DataSource, Dimension

__all__ = ["ArraySource", "DataSource", "Dimension"]
