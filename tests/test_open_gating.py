"""cd7flow.io.open_gating: one entry for Gating-ML, FlowJo 10 / 7-9 and FACSDiva files, used by
the CLI and by the viewer (the viewer's counts are checked against the counts the
workspace itself stored, an independent reference)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cd7flow.errors import CD7FlowError, GatingError, GatingMLError, WorkspaceError
from cd7flow.io import open_gating
from cd7flow.io.fcs_read import read_fcs
from cd7flow.strategy import GatingStrategy
from cd7flow.viewer import ViewerModel


@pytest.fixture(scope="module")
def diamond(shared_data: Path) -> Path:
    return shared_data / "flowkit" / "data" / "simple_diamond_example"


@pytest.fixture(scope="module")
def diva(shared_data: Path) -> Path:
    return shared_data / "flowworkspacedata" / "inst" / "extdata" / "diva"


def test_each_format_opens_to_a_strategy(shared_data: Path, diamond: Path, diva: Path):
    gml = open_gating(shared_data / "flowkit" / "data" / "gate_ref" / "gml" / "gml_rect1_gate.xml")
    assert isinstance(gml, GatingStrategy) and [p.name for p in gml.tree] == ["Rectangle1"]
    assert gml.sample_name is None
    wsp = open_gating(diamond / "test_data_diamond_biex_rect.wsp")  # the workspace's only sample
    assert wsp.sample_name == "test_data_diamond_01.fcs" and len(wsp.tree) > 0
    tube = open_gating(diva / "PE_2.xml", fcs=diva / "124500.fcs")
    assert tube.sample_name == "124500.fcs" and [p.name for p in tube.tree] == ["P1", "P2", "P3", "P4", "P5"]
    assert open_gating(diva / "PE_2.xml", sample="_001").tree.gates()[0].id == "P1"


def test_open_gating_errors_name_the_file(tmp_path: Path, diva: Path):
    with pytest.raises(GatingMLError, match="missing.xml: gates file not found"):
        open_gating(tmp_path / "missing.xml")
    with pytest.raises(WorkspaceError, match=r"PE_2.xml: holds 13 samples"):
        open_gating(diva / "PE_2.xml")
    gml = tmp_path / "g.xml"
    gml.write_text('<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"/>')
    with pytest.raises(GatingMLError, match="only applies to workspaces"):
        open_gating(gml, sample="x")


def test_check_channels_names_gate_file_and_channel(shared_data: Path):
    ref = shared_data / "flowkit" / "data" / "gate_ref"
    strategy = open_gating(ref / "gml" / "gml_rect1_gate.xml")
    sample = read_fcs(ref / "data1.fcs")
    strategy.check_channels(sample)  # data1.fcs has FSC-H and SSC-H
    renamed = dataclasses.replace(sample, channels=tuple("X" + c for c in sample.channels))
    with pytest.raises(GatingError, match=r"gml_rect1_gate.xml: gate 'Rectangle1' uses channel '(SSC|FSC)-H'"):
        strategy.check_channels(renamed)
    assert isinstance(GatingError("x"), CD7FlowError)


def test_viewer_opens_a_flowjo_workspace(diamond: Path):
    m = ViewerModel()
    assert m.open_files([diamond / "test_data_diamond_01.fcs"]) == []
    wsp = diamond / "test_data_diamond_biex_rect.wsp"
    n = m.load_gating(wsp)
    stored = open_gating(wsp)
    from cd7flow.io.flowjo import read_flowjo_workspace

    flowjo_counts = next(iter(read_flowjo_workspace(wsp))).flowjo_counts
    assert n == len(stored.tree.gates()) and flowjo_counts
    shown = {r.path: r.count for r in m.populations()}
    for path, count in flowjo_counts.items():
        assert shown[path] == count, path  # rectangles: FlowJo's own counts, exactly


def test_viewer_opens_a_diva_export(diva: Path):
    m = ViewerModel()
    assert m.open_files([diva / "124500.fcs"]) == []
    assert m.load_gating(diva / "PE_2.xml") == 5  # the tube whose FCS file is the current sample
    shown = {r.path: r.count for r in m.populations()}
    from cd7flow.io.diva import read_diva_xml

    stored = read_diva_xml(diva / "PE_2.xml").sample("_001").flowjo_counts
    assert stored
    for path, count in stored.items():
        if path:
            assert abs(shown[path] - count) <= 0.005 * count, path  # DiVa counts on its 4096-channel raster
