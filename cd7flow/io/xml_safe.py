"""Safe XML reading shared by the Gating-ML, FlowJo and FACSDiva readers.

defusedxml refuses entity declarations (billion-laughs bombs) and external
references (XXE); a refused, malformed or unreadable file becomes the caller's
error class naming the file. The element helpers match by *local* name because
files disagree on namespace prefixes.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import defusedxml
import defusedxml.ElementTree as SafeET

from ..errors import FileProblem


def parse_xml(path: str | os.PathLike, error_class: type[FileProblem]) -> ET.Element:
    """Root element of an XML file, parsed with entities and external references forbidden."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            return SafeET.parse(fh, forbid_dtd=False, forbid_entities=True, forbid_external=True).getroot()
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


def children(el: ET.Element, name: str) -> list[ET.Element]:
    """Direct children with this local name."""
    return [c for c in el if local_name(c.tag) == name]


def child(el: ET.Element, name: str) -> ET.Element | None:
    """First direct child with this local name, or None."""
    for c in el:
        if local_name(c.tag) == name:
            return c
    return None
