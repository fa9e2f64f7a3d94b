"""Gating errors. ``cd7flow.errors.GatingError`` is this same class re-exported,
so that ``gating`` stays importable without ``cd7flow`` (imports go one way)."""


class GatingError(Exception):
    """A gate or gating tree cannot be built or evaluated."""
