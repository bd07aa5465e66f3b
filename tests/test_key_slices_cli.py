"""``samed segment`` with several --box/--slice pairs (key slices), as a user runs it: a real process, the
real model, CTChest4's right lung and its Slicer-made reference."""
from __future__ import annotations

import json

import numpy as np
import pytest

from samed.core import io
from samed.core.prompts import box_from_mask
from test_cli import samed


def _reference_boxes(ct, seg, slices):
    volume = io.read_volume(ct)
    mask, grid, _ = io.reference_mask(seg, "right lung")
    ref = io.resample_to(grid.with_array(mask.astype(np.uint8)), volume).array > 0
    return [",".join(str(int(v)) for v in box_from_mask(ref[k])) for k in slices]


@pytest.mark.parametrize("args, message", [
    (["--box", "55,36,106,98", "--box", "55,36,106,98", "--slice", "20"], "one --slice K per --box"),
    (["--box", "55,36,106,98", "--box", "55,36,106,98", "--slice", "20", "--slice", "20"], "given twice"),
    (["--box", "55,36,106,98", "--box", "55,36,106,98", "--slice", "20", "--slice", "40"], "slices 0..33"),
    (["--box", "55,36,106,98", "--box", "55,36,106,98", "--slice", "20", "--slice", "22", "--point", "60,60"],
     "boxes only"),
])
def test_bad_key_slice_prompts_end_with_one_clear_message(args, message, ctchest, tmp_path):
    ct, _ = ctchest
    r = samed("segment", ct, *args, "--out", tmp_path / "o.seg.nrrd")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and message in r.stderr, r.stderr


def test_boxes_on_two_key_slices_fill_the_slices_between(ctchest, tmp_path):
    ct, seg = ctchest
    keys = [12, 28]
    boxes = _reference_boxes(ct, seg, keys)
    out, report = tmp_path / "lung.seg.nrrd", tmp_path / "lung.json"
    r = samed("segment", ct, "--slice", keys[0], "--box", boxes[0], "--slice", keys[1], "--box", boxes[1],
              "--intensity", "minmax", "--reference", seg, "--reference-label", "right lung", "--out", out,
              "--report", report)
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    assert "interpolated slices: 13, 14," in r.stdout
    result = json.loads(report.read_text())
    assert result["slices_segmented"] == list(range(12, 29))  # no --propagate: nothing beyond the key slices
    assert result["segmented_slices"]["dice"] > 0.85
