"""Gating errors. ``cd7flow.errors.GatingError`` subclasses this class and ``CD7FlowError``,
so that ``gating`` stays importable without ``cd7flow`` (imports go one way). The cd7flow
CLI treats a bare :class:`GatingError` (e.g. a cycle of boolean gates found while a tree is
applied) as a user error: one line, exit code 2."""


class GatingError(Exception):
    """A gate or gating tree cannot be built or evaluated."""
