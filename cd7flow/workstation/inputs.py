"""What a path given to the viewer means: one FCS file, a folder of them, or a study manifest."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import FileProblem


def expand_inputs(path: str | os.PathLike) -> list[Path]:
    """The FCS files behind ``path``, in the order a technician expects to see them.

    A folder is searched recursively (the same scan as the CLI: files recognised by their
    FCS magic, hidden files skipped), sorted by path; a ``.csv`` file is read as a study
    manifest (:func:`cd7flow.io.manifest.read_manifest`) and gives its usable rows' files in
    row order; anything else is taken as one FCS file. Raises a :class:`FileProblem` naming
    ``path`` when it does not exist or holds no FCS file.
    """
    p = Path(path)
    if not p.exists():
        raise FileProblem(p, "no such file or folder")
    if p.is_dir():
        from ..cli import find_fcs_files

        files = find_fcs_files([p])
        if not files:
            raise FileProblem(p, "the folder holds no FCS files (.fcs, .lmd or FCS-format data)")
        return files
    if p.suffix.lower() == ".csv":
        from ..io.manifest import read_manifest

        rows, _problems = read_manifest(p)
        files = [r.path for r in rows]
        if not files:
            raise FileProblem(p, "the manifest lists no usable FCS file")
        return files
    return [p]

