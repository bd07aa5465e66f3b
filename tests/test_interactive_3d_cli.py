"""``samed evaluate VOLUME_SET --prompt interactive-3d:N`` as a user runs it: a real process, the real model,
a shared volume; and its bad-input messages."""
from __future__ import annotations

import csv
import json

import pytest

from samed.evaluation.interactive_3d import interactive_3d_user, parse_interactive_3d
from test_cli import samed


def test_parse_interactive_3d():
    assert parse_interactive_3d("box-all") is None
    assert parse_interactive_3d("interactive-3d:3") == 3 and parse_interactive_3d(" interactive-3d ") == 5
    assert parse_interactive_3d("interactive-3d-points:4") == 4
    assert interactive_3d_user("interactive-3d:3") == "box" and interactive_3d_user("interactive-3d-points") == "points"
    for bad, message in [("box-all,interactive-3d:3", "alone"), ("interactive-3d:0", "1..50"),
                         ("interactive-3d:x", "1..50")]:
        with pytest.raises(ValueError, match=message):
            parse_interactive_3d(bad)


@pytest.mark.parametrize("prompt, dataset, message", [
    ("box-all,interactive-3d:3", "volumes/mr-brain-tumor", "alone"),
    ("interactive-3d:3", "images/us-breast-lesion", "needs a 3D dataset"),
    ("interactive-3d-points:2", "volumes/mr-breast-tumor", "does not take point prompts"),  # LiteMedSAM: boxes
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


def test_the_point_user_through_the_evaluation_job(tmp_path):
    """evaluate_interactive_3d with user="points" on a written 3D set (a fake point-taking model): rows, summary
    and report say clicks, and the curve reaches the reference."""
    import numpy as np

    from samed.core import io
    from samed.core.geometry import Volume
    from samed.evaluation.interactive_3d_job import evaluate_interactive_3d
    from test_interactive_3d import BrightRegionPointBackend
    from test_key_slices import disk

    values = np.zeros((8, 64, 64), np.float32)
    label = np.zeros(values.shape, np.uint8)
    for k in range(2, 6):
        values[k][disk(10)] = 200
        label[k][disk(10)] = 1
    folder = tmp_path / "set"
    folder.mkdir()
    grid = np.diag([1.0, 1.0, 2.0, 1.0])
    io.write_volume(Volume(values, grid), folder / "image.nrrd")
    io.write_volume(Volume(label, grid), folder / "label.nrrd")
    (folder / "labels.json").write_text(json.dumps({"1": "ball"}))
    summary = evaluate_interactive_3d(BrightRegionPointBackend(), folder, 2, tmp_path / "out", "minmax",
                                      user="points", seed=3)
    assert summary["prompt"] == "interactive-3d-points:2" and summary["user"] == "points"
    (entry,) = summary["structures"].values()
    assert entry["actions"][0] == "include point 3" and entry["dice"][0] == 1.0
    with open(tmp_path / "out" / "interactive_3d.csv") as f:
        methods = [row["method"] for row in csv.DictReader(f)]
    assert methods == ["oracle", "interactive-3d-points:1", "interactive-3d-points:2"]
    assert "simulated clicks" in (tmp_path / "out" / "interactive_3d.html").read_text()
