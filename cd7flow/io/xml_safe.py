"""Safe XML reading shared by the Gating-ML, FlowJo and FACSDiva readers.

defusedxml refuses entity declarations (billion-laughs bombs) and external
references (XXE); a refused, malformed or unreadable file becomes the caller's
error class naming the file. The element helpers match by *local* name because
files disagree on namespace prefixes.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import defusedxml
import defusedxml.ElementTree as SafeET

from ..errors import FileProblem


def parse_xml(path: str | os.PathLike, error_class: type[FileProblem]) -> ET.Element:
    """Root element of an XML file, parsed with entities and external references forbidden."""
    path = os.fspath(path)
    with _refusals(path, error_class):
        with open(path, "rb") as fh:
            return SafeET.parse(fh, forbid_dtd=False, forbid_entities=True, forbid_external=True).getroot()


def iterparse_xml(path: str | os.PathLike, error_class: type[FileProblem]) -> Iterator[tuple[str, ET.Element]]:
    """("start" | "end", element) pairs of an XML file as it is read, with :func:`parse_xml`'s refusals.

    For files too big to hold as one tree: the caller may remove an element from its
    parent once its "end" has been seen.
    """
    path = os.fspath(path)
    with _refusals(path, error_class):
        with open(path, "rb") as fh:
            yield from SafeET.iterparse(fh, events=("start", "end"), forbid_dtd=False,
                                        forbid_entities=True, forbid_external=True)


@contextmanager
def _refusals(path: str, error_class: type[FileProblem]) -> Iterator[None]:
    """Unsafe, malformed or unreadable XML -> ``error_class`` naming the file."""
    try:
        yield
    except defusedxml.DefusedXmlException as exc:
        raise error_class(path, f"unsafe XML refused ({type(exc).__name__}: entity declarations "
                                "and external references are not allowed)") from None
    except ET.ParseError as exc:
        raise error_class(path, f"not well-formed XML: {exc}") from None
    except OSError as exc:
        raise error_class(path, f"cannot read: {exc.strerror or exc}") from None


def local_name(tag) -> str:
    """Tag or attribute name without its namespace ('{ns}polygon' -> 'polygon')."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def attribute(el: ET.Element, name: str, default: str | None = None) -> str | None:
    """Attribute by local name, whatever its namespace prefix."""
    for key, value in el.attrib.items():
        if local_name(key) == name:
            return value
    return default


def children(el: ET.Element | None, name: str) -> list[ET.Element]:
    """Direct children with this local name (none of a missing element)."""
    return [] if el is None else [c for c in el if local_name(c.tag) == name]


def child(el: ET.Element | None, name: str) -> ET.Element | None:
    """First direct child with this local name, or None."""
    for c in el if el is not None else ():
        if local_name(c.tag) == name:
            return c
    return None


def child_text(el: ET.Element, name: str) -> str | None:
    """Stripped text of the first direct child with this local name ('' if empty), or None."""
    found = child(el, name)
    return None if found is None else (found.text or "").strip()


def _as_finite(raw: str | None) -> float | str:
    """The finite float ``raw`` spells, or what is wrong with it."""
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "is not a number"
    return value if math.isfinite(value) else "is not finite"


def finite_number(raw: str | None, what: str, fail: Callable[[str], Exception]) -> float:
    """``raw`` (attribute or element text) as a finite float; ``fail(problem)`` builds the error to raise."""
    value = _as_finite(raw)
    if isinstance(value, str):
        raise fail(f"{what}: {raw!r} {value}")
    return value


def number_attribute(el: ET.Element, name: str, what: str, fail: Callable[[str], Exception], *,
                     required: bool = True, default: float | None = None) -> float | None:
    """Attribute ``name`` (local name) of ``el`` as a finite float.

    An absent attribute gives ``default`` unless it is required and has no default;
    ``fail(problem)`` builds the error (the caller's error class naming the file).
    """
    raw = attribute(el, name)
    if raw is None:
        if default is not None or not required:
            return default
        raise fail(f"{what}: missing attribute {name!r}")
    value = _as_finite(raw)
    if isinstance(value, str):
        raise fail(f"{what}: attribute {name}={raw!r} {value}")
    return value
