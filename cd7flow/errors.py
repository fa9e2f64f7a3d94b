"""One exception hierarchy for the whole package.

Every error a user can cause (a bad file, a bad protocol, a gate that cannot be
evaluated) is a subclass of :class:`CD7FlowError`. The CLI turns these into one
clear line and exit code 2; anything else is a bug and keeps its traceback.

``gating`` may not import ``cd7flow``, so its own :class:`gating.errors.GatingError`
is not a subclass of :class:`CD7FlowError`; :class:`GatingError` here subclasses
both, and the CLI treats a bare ``gating.errors.GatingError`` as a user error too.
"""
from __future__ import annotations

import os

from gating.errors import GatingError as _GatingErrorBase


class CD7FlowError(Exception):
    """Base class of every error cd7flow raises on purpose."""


class FileProblem(CD7FlowError):
    """An error about one input file; the message always names the file."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}")


class OutputError(FileProblem):
    """An output file or folder cannot be written (missing folder, no permission, disk full,
    a file where a folder should be, two outputs given the same path)."""


class FCSError(FileProblem):
    """An FCS file cannot be read (or written) as asked."""


class FCSHeaderError(FCSError):
    """The 58-byte HEADER segment is missing, truncated or nonsensical."""


class FCSTextError(FCSError):
    """The TEXT segment cannot be parsed, or a required keyword is missing or invalid."""


class FCSDataError(FCSError):
    """The DATA segment does not match what TEXT declares (size, offsets, widths)."""


class FCSUnsupportedError(FCSError):
    """The file is valid but uses a feature cd7flow does not read (e.g. $DATATYPE A)."""


class CompensationError(FileProblem):
    """A spillover/compensation matrix is malformed, singular or does not fit the sample."""


class TransformError(CD7FlowError):
    """A transform has invalid parameters."""


class GatingError(CD7FlowError, _GatingErrorBase):
    """A gate or gating tree cannot be built or evaluated (also catchable as gating.errors.GatingError)."""


class GatingMLError(FileProblem):
    """A Gating-ML document is invalid, unsafe or uses something unsupported."""


class WorkspaceError(FileProblem):
    """A FlowJo workspace cannot be read or does not match its samples."""


class ProtocolError(FileProblem):
    """A protocol file is invalid (unknown key, bad threshold, missing marker...)."""


class SimulationError(CD7FlowError):
    """The demo-study simulator was given impossible settings."""


class NotEvaluable(CD7FlowError):
    """A sample cannot give a trustworthy answer (required marker or gate missing, too few events,
    compensation the protocol requires cannot be applied). Assays turn it into
    ``verdict = "not_evaluable"`` with the message as the reason."""


class SessionError(FileProblem):
    """A saved viewer session cannot be restored: the session file is unreadable or of another
    schema, or a data file it names has moved, disappeared or changed since it was saved."""
