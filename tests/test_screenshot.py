"""``cd7flow-gui PATH --screenshot OUT.png [--size WxH]`` (gui/_qt/screenshot.py).

The PNG is read back with Pillow (not Qt) and must have the asked size and real content:
pixel variance > 0 and many colours (the density plots and the back-gating red).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed (the gui extra)")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (the test extra)")
Image = pytest.importorskip("PIL.Image", reason="Pillow (a matplotlib dependency) is not installed")

from gui._qt.screenshot import UsageError, parse_args  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "sample_fcs"


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("target, size", [(DEMO / "P01_screening_BM.fcs", "1000x700"),
                                          (DEMO / "manifest.csv", "1280x800")])
def test_screenshot_writes_a_png_of_the_asked_size(qapp, tmp_path, capsys, target, size):
    from gui.app import main

    out = tmp_path / "shot.png"
    assert main([str(target), "--screenshot", str(out), "--size", size]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} ({size})" in printed and "P01_screening_BM.fcs auto-gated with protocol screening" in printed
    px = _pixels(out)
    w, h = map(int, size.split("x"))
    assert px.shape == (h, w, 3)
    assert px.astype(float).var() > 100  # not blank
    colours = np.unique(px.reshape(-1, 3), axis=0)
    assert len(colours) > 200
    # the auto-gate grid paints the parent's events grey and back-gated events red-ish:
    assert ((px[..., 0] > 180) & (px[..., 1] < 120) & (px[..., 2] < 100)).sum() > 50
    assert [p.name for p in tmp_path.iterdir()] == ["shot.png"]  # atomic: no temporary left


@pytest.mark.parametrize("args, problem", [
    (["x.fcs", "--screenshot", "out.png", "--size", "big"], "expected WIDTHxHEIGHT"),
    (["x.fcs", "--screenshot", "out.png", "--size", "10x10"], "each side must be"),
    (["--screenshot", "out.png"], "exactly one PATH"),
    (["a.fcs", "b.fcs", "--screenshot", "out.png"], "exactly one PATH"),
    (["x.fcs", "--screenshot", "out.jpg"], "must be a .png file"),
    (["x.fcs", "--screenshot"], "--screenshot needs a value"),
    (["x.fcs", "--screenshot", "out.png", "--zoom", "2"], "unknown option --zoom"),
    (["missing.fcs", "--screenshot", "out.png"], "missing.fcs: no such file or folder"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, monkeypatch, capsys, args, problem):
    from gui.app import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.fcs").write_bytes((DEMO / "P01_screening_BM.fcs").read_bytes())
    (tmp_path / "a.fcs").write_bytes(b"")
    (tmp_path / "b.fcs").write_bytes(b"")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cd7flow-gui: ") and problem in err
    assert not (tmp_path / "out.png").exists()


def test_an_unreadable_input_is_exit_2(qapp, tmp_path, capsys):
    from gui.app import main

    bad = tmp_path / "broken.fcs"
    bad.write_bytes(b"FCS3.1    not really")
    assert main([str(bad), "--screenshot", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "no FCS file could be opened" in err.splitlines()[-1] and str(bad) in err
    assert not (tmp_path / "o.png").exists()


def test_parse_args_defaults(tmp_path):
    (tmp_path / "s.fcs").write_bytes(b"")
    a = parse_args([str(tmp_path / "s.fcs"), f"--screenshot={tmp_path / 'o.png'}"])
    assert a.size == (1600, 1000) and a.out == tmp_path / "o.png"
    with pytest.raises(UsageError, match="given twice"):
        parse_args([str(tmp_path / "s.fcs"), "--screenshot", "a.png", "--screenshot", "b.png"])


