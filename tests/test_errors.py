"""One error hierarchy: every exception cd7flow defines is a CD7FlowError, and no CLI command
given a missing input shows a traceback."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cd7flow.errors import CD7FlowError
from conftest import REPO
from gating.errors import GatingError as GatingErrorBase

# Exceptions that are deliberately not CD7FlowErrors, and why.
NOT_CD7FLOW_ERRORS = {
    # ``gating`` may not import ``cd7flow``; cd7flow.errors.GatingError subclasses both,
    # and cd7flow.cli.main maps a bare one to one line and exit code 2.
    "gating.errors.GatingError",
}

_CLASS = re.compile(r"^\s*class\s+(\w+)\s*\(([^)]*)\)\s*:", re.M)


def _defined_exceptions() -> list[str]:
    """Dotted names of classes in cd7flow/ and gating/ that look like exceptions:
    named *Error, or with Exception / an *Error among their bases."""
    found = []
    for package in ("cd7flow", "gating"):
        for path in sorted((REPO / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            for name, bases in _CLASS.findall(path.read_text(encoding="utf-8")):
                if name.endswith("Error") or re.search(r"\b(Exception|\w+Error|\w+Problem)\b", bases):
                    found.append(f"{module}.{name}")
    return found


def test_every_exception_cd7flow_defines_is_a_cd7flow_error():
    found = _defined_exceptions()
    assert "cd7flow.errors.OutputError" in found and "cd7flow.sample.ChannelNotFound" in found
    outside = []
    for dotted in found:
        module, name = dotted.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        assert isinstance(cls, type) and issubclass(cls, BaseException), dotted
        # gating's own errors (gating may not import cd7flow) are mapped by cd7flow.cli.main
        # like CD7FlowErrors, so a subclass of gating.errors.GatingError is covered too.
        if not issubclass(cls, (CD7FlowError, GatingErrorBase)) or dotted in NOT_CD7FLOW_ERRORS:
            outside.append(dotted)
    assert sorted(set(outside) - NOT_CD7FLOW_ERRORS) == []


def test_output_error_lives_in_errors_and_outputs_reexports_it():
    from cd7flow import errors, outputs

    assert outputs.OutputError is errors.OutputError and errors.OutputError.__module__ == "cd7flow.errors"


# ---------------------------------------------------------------- every command, a missing input

# Each command with inputs that are missing; {tmp} is a folder holding good.fcs, gates.xml and
# a_file (a plain file), {demo} a demo screening tube.
MISSING_INPUT_CASES = {
    "summary": [["{tmp}/missing.fcs"]],
    "simulate": [["{tmp}/a_file/study"]],
    "export": [["{tmp}/missing.fcs", "{tmp}/out.fcs"]],
    "gate": [["{tmp}/missing.fcs", "--gates", "{tmp}/gates.xml"], ["{tmp}/good.fcs", "--gates", "{tmp}/missing.xml"]],
    "screen": [["{tmp}/missing.fcs"], ["{demo}", "--fmo", "{tmp}/missing.fcs"],
               ["{demo}", "--protocol", "{tmp}/missing.toml"]],
    "autogate": [["{tmp}/missing.fcs"], ["{demo}", "--protocol", "{tmp}/missing.toml"]],
    "persistence": [["{tmp}/missing.fcs", "--out", "{tmp}/out"]],
    "qc": [["{tmp}/missing.fcs"], ["{demo}", "--protocol", "{tmp}/missing.toml"]],
    "batch": [["{tmp}/missing.fcs", "--out", "{tmp}/out"], ["{tmp}", "--out", "{tmp}/out", "--protocol-dir", "{tmp}/missing.toml"]],
    "demo": [["--out", "{tmp}/a_file/results"]],
}


def test_every_cli_command_has_a_missing_input_case():
    from typer.main import get_command

    from cd7flow.cli import app

    assert set(get_command(app).commands) == set(MISSING_INPUT_CASES), "add a case for every CLI command"


@pytest.mark.parametrize("command, args", [(c, a) for c, arg_sets in MISSING_INPUT_CASES.items() for a in arg_sets])
def test_a_missing_input_prints_one_line_and_no_traceback(tmp_path, sample_fcs_dir, command, args):
    from cd7flow.io.fcs_write import write_fcs

    write_fcs(tmp_path / "good.fcs", np.ones((10, 2), np.float32), channels=["FSC-A", "SSC-A"])
    (tmp_path / "gates.xml").write_text("<x/>")
    (tmp_path / "a_file").write_text("x")
    demo = sample_fcs_dir / "P01_screening_BM.fcs"
    argv = [a.format(tmp=tmp_path, demo=demo) for a in args]
    out = subprocess.run([sys.executable, "-m", "cd7flow.cli", command, *argv],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert re.search(r"missing\.(fcs|xml|toml)|a_file", lines[0]), lines[0]
