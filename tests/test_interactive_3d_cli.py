"""``samed evaluate VOLUME_SET --prompt interactive-3d:N`` as a user runs it: a real process, the real model,
a shared volume; and its bad-input messages."""
from __future__ import annotations

import csv
import json

import pytest

from samed.evaluation.interactive_3d import parse_interactive_3d
from test_cli import samed


def test_parse_interactive_3d():
    assert parse_interactive_3d("box-all") is None
    assert parse_interactive_3d("interactive-3d:3") == 3 and parse_interactive_3d(" interactive-3d ") == 5
    for bad, message in [("box-all,interactive-3d:3", "alone"), ("interactive-3d:0", "1..50"),
                         ("interactive-3d:x", "1..50")]:
        with pytest.raises(ValueError, match=message):
            parse_interactive_3d(bad)


@pytest.mark.parametrize("prompt, dataset, message", [
    ("box-all,interactive-3d:3", "volumes/mr-brain-tumor", "alone"),
    ("interactive-3d:3", "images/us-breast-lesion", "needs a 3D dataset"),
])
def test_bad_interactive_3d_requests_end_with_one_clear_message(prompt, dataset, message, shared_data, tmp_path):
    r = samed("evaluate", shared_data / dataset, "--prompt", prompt, "--out", tmp_path / "ev")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and message in r.stderr, r.stderr


def test_interactive_3d_on_the_brain_tumour(shared_data, tmp_path):
    out = tmp_path / "ev"
    r = samed("evaluate", shared_data / "volumes" / "mr-brain-tumor", "--prompt", "interactive-3d:2", "--out", out)
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    assert "3D Dice after 1..2 simulated boxes" in r.stdout
    summary = json.loads((out / "interactive_3d.json").read_text())
    (entry,) = summary["structures"].values()
    assert entry["slices"] == 7 and len(entry["dice"]) == 2 and entry["oracle"]["dice"] > 0.8
    rows = list(csv.DictReader((out / "interactive_3d.csv").open()))
    assert [r["method"] for r in rows] == ["oracle", "interactive-3d:1", "interactive-3d:2"]
    assert rows[1]["action"] == "box" and rows[1]["slice"] == "14"  # the seed slice: the middle of 11..17
    assert float(rows[2]["dice"]) == pytest.approx(entry["dice"][1])
    assert "<img" in (out / "interactive_3d.html").read_text()
