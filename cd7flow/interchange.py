"""Move samples to and from FlowKit and AnnData (scverse: scanpy, pytometry).

These are optional: each function imports its library when called, and a missing
library is a :class:`~cd7flow.errors.CD7FlowError` naming the extra that brings it
(``pip install 'cd7flow[interchange]'``). Nothing here is used by cd7flow's own
pipeline; it exists so that users of those tools can hand data in and out.

What travels: the events (same values), $PnN channel names, $PnS markers, $PnR
ranges, the spillover matrix and the TEXT keywords.
"""
from __future__ import annotations

import re
import tempfile
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CD7FlowError, CompensationError, FCSError

if TYPE_CHECKING:
    from .sample import Sample

EXTRA = "interchange"
# flowio keeps TEXT keywords lowercased with the '$' stripped; the '$' goes back on the
# keywords of flowio's standard list and on every $PnX (standard whatever X is).
_PARAM_KEYWORD = re.compile(r"^P\d+[A-Z]+$")


def _require(module: str) -> ModuleType:
    """Import an optional library or say which extra installs it."""
    try:
        return import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise CD7FlowError(f"{top} is not installed ({exc}); install it with: "
                           f"pip install 'cd7flow[{EXTRA}]'") from None


# ---------------------------------------------------------------- FlowKit
def to_flowkit(sample: "Sample", sample_id: str | None = None):
    """A ``flowkit.Sample`` holding this sample's events, channels, markers, ranges and keywords.

    The events are the cd7flow Sample's as they stand (already preprocessed when it
    was read with ``preprocess=True``), so the FlowKit Sample is built with
    ``preprocess=False`` and its ``get_events("raw")`` equals ``sample.events``.
    The spillover matrix travels as $SPILLOVER (``fk_sample.metadata["spillover"]``, which
    ``apply_compensation`` accepts); the FlowKit Sample is left uncompensated, like ours.
    A Time channel in seconds (preprocessed) is labelled $TIMESTEP 1.
    sample_id : FlowKit's id; default the file name of the sample.
    """
    flowkit = _require("flowkit")
    from .io.fcs_write import write_fcs

    # FlowKit builds a Sample only from FCS data, so go through cd7flow's writer (which
    # keeps keywords, $PnR and $SPILLOVER). It stores float32: float64 events (integer
    # and log-decoded files) are then put back at full precision.
    with tempfile.TemporaryDirectory(prefix="cd7flow-flowkit-") as tmp:
        path = Path(tmp) / "sample.fcs"
        try:
            write_fcs(path, sample, ranges=list(sample.ranges))  # $PnR as read, also for a Time in seconds
        except FCSError as exc:  # name the sample, not the temporary file
            raise CD7FlowError(f"{sample.name}: cannot be handed to FlowKit: {exc.problem}") from None
        fk_sample = flowkit.Sample(str(path), sample_id=sample_id or sample.name, preprocess=False)
    if sample.events.dtype != np.float32:
        fk_sample._raw_events = np.array(sample.events, dtype=np.float64)  # FlowKit's raw-event store
    return fk_sample


def from_flowkit(fk_sample) -> "Sample":
    """A cd7flow Sample from a ``flowkit.Sample``: its raw events (as FlowKit holds them), names, keywords.

    Events are ``fk_sample.get_events("raw")`` (float64; preprocessed when FlowKit
    read the file with ``preprocess=True``, recorded in ``extra["preprocessed"]``).
    The spillover is the matrix applied in FlowKit if any, else the file's $SPILLOVER.
    A malformed $SPILLOVER leaves ``spillover`` None and the reason in
    ``extra["spillover_error"]``, as :func:`cd7flow.read_fcs` does.
    """
    _require("flowkit")
    from .compensation import SpilloverMatrix, spillover_from_metadata
    from .sample import CaseInsensitiveDict, Sample

    name = str(getattr(fk_sample, "id", None) or getattr(fk_sample, "current_filename", None) or "flowkit.Sample")
    channels = tuple(str(c) for c in fk_sample.pnn_labels)
    markers = tuple(str(m or "").strip() for m in fk_sample.pns_labels)  # a blank $PnS names no marker
    ranges = np.asarray(fk_sample.channels["pnr"], dtype=np.float64)
    metadata = CaseInsensitiveDict({_fcs_keyword(k): str(v) for k, v in fk_sample.metadata.items()})
    events = np.array(fk_sample.get_events(source="raw"), dtype=np.float64)
    extra: dict[str, Any] = {"preprocessed": bool(getattr(fk_sample, "is_preprocessed", True)),
                             "source": f"flowkit.Sample {name}"}
    spillover = None
    matrix = getattr(fk_sample, "compensation", None)
    if matrix is not None and hasattr(matrix, "detectors"):
        spillover = SpilloverMatrix(tuple(matrix.detectors), np.asarray(matrix.matrix), source=f"FlowKit {name}")
    else:
        try:
            spillover = spillover_from_metadata(metadata, channels, name)
        except CompensationError as exc:
            extra["spillover_error"] = str(exc)
    return Sample(events=events, channels=channels, markers=markers, metadata=metadata, ranges=ranges,
                  spillover=spillover, path=None, extra=extra)


def _fcs_keyword(key: str) -> str:
    """flowio's 'p1n' / 'spillover' / 'cytnum' back to '$P1N' / '$SPILLOVER' / '$CYTNUM'; others upper-cased."""
    from flowio.fcs_keywords import FCS_STANDARD_KEYWORDS

    bare = str(key).lstrip("$")
    upper = bare.upper()
    if bare.lower() in FCS_STANDARD_KEYWORDS or _PARAM_KEYWORD.match(upper):
        return "$" + upper
    return upper


# ---------------------------------------------------------------- AnnData
def to_anndata(sample: "Sample"):
    """An ``anndata.AnnData`` with one observation per event and one variable per channel.

    X : the events (float32 or float64, as the sample holds them; a copy).
    obs : index "0".."n-1" (event number in file order).
    var : index $PnN; columns "$PnN", "$PnS" (marker, '' when none), "$PnR" (float).
    uns["meta"] : every TEXT keyword (str -> str), plus "spill": the spillover matrix as a
        DataFrame (rows = spilling channel, columns = detector), the layout readfcs and
        pytometry use; absent when the sample has no matrix.
    """
    anndata = _require("anndata")
    import pandas as pd

    var = pd.DataFrame({"$PnN": list(sample.channels), "$PnS": list(sample.markers),
                        "$PnR": np.asarray(sample.ranges, dtype=np.float64)},
                       index=pd.Index(list(sample.channels), name="channel"))
    obs = pd.DataFrame(index=pd.Index([str(i) for i in range(sample.n_events)], name="event"))
    meta: dict[str, Any] = {str(k): str(v) for k, v in sample.metadata.items()}
    if sample.spillover is not None:
        spill = sample.spillover
        meta["spill"] = pd.DataFrame(np.array(spill.matrix), index=list(spill.channels), columns=list(spill.channels))
    return anndata.AnnData(X=np.array(sample.events), obs=obs, var=var, uns={"meta": meta})


__all__ = ["from_flowkit", "to_anndata", "to_flowkit"]
