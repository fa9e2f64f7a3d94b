"""The accuracy check shared by the foreign-generator screening tests."""
from __future__ import annotations

from pathlib import Path

from cd7flow.assays.screening import screen_file


def assert_screen_matches_truth(name: str, path: Path, truth: dict, protocol) -> None:
    """Screen one generated tube: right verdict under the protocol's rule, % CD7+ within 2 points."""
    rec = screen_file(path, protocol)
    expected = "positive" if protocol.rule.passes(truth["cd7_pos_pct"]) else "negative"
    print(name, "truth", round(truth["cd7_pos_pct"], 2), "blasts", truth["blasts"], "->",
          rec["cd7_pos_pct"], rec["blasts"], rec["verdict"], rec["reason"], rec["gates"])
    assert rec["verdict"] == expected, rec["reason"]
    assert abs(rec["cd7_pos_pct"] - truth["cd7_pos_pct"]) < 2.0
    # borderline exactly when the verdict's 95% interval straddles the rule's cut-off (rule "> x")
    lo, hi = rec["cd7_pos_ci95"]
    assert rec["borderline"] == (lo <= protocol.rule.value < hi)
    assert ("borderline" in rec["reason"]) == rec["borderline"]
