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


# ---- --markups with several ROIs: one box per key slice (a Slicer .mrk.json written here as Slicer writes it) ----
def _roi(volume, name, box_xy, k, slices_thick=0.0):
    """An ROI around voxel box (x0, y0, x1, y1) on axial slice ``k``, ``slices_thick`` slices thick (0: flat)."""
    from samed.core.markups import Roi

    m = volume.ijk_to_ras
    x0, y0, x1, y1 = box_xy
    centre = (m @ [(x0 + x1) / 2, (y0 + y1) / 2, k, 1.0])[:3]
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    size = [(x1 - x0) * spacing[0], (y1 - y0) * spacing[1], slices_thick * spacing[2]]
    return Roi(name, centre, size, m[:3, :3] / spacing)


def _markups_file(path, ct, rois, points=()):
    from samed.core.markups import PointList, write_markups_json

    volume = io.read_volume(ct)
    made = [_roi(volume, *r) for r in rois]
    lists = [PointList("include", np.array([(volume.ijk_to_ras @ [x, y, k, 1.0])[:3] for x, y, k in points]))] \
        if points else []
    return write_markups_json(path, lists, made)


@pytest.mark.parametrize("rois, points, message", [
    ([("a", (55, 36, 106, 98), 20), ("b", (60, 40, 100, 90), 20)], (), "'a' and 'b' both lie on slice 20"),
    ([("a", (55, 36, 106, 98), 14), ("b", (60, 40, 100, 90), 20, 3.0)], (), "'b' spans slices 19..21"),
    ([("a", (55, 36, 106, 98), 14), ("b", (60, 40, 100, 90), 20)], [(70, 60, 14)], "give no point lists"),
])
def test_ambiguous_markups_with_several_rois_end_with_one_clear_message(rois, points, message, ctchest, tmp_path):
    ct, _ = ctchest
    markups = _markups_file(tmp_path / "boxes.mrk.json", ct, [r if len(r) == 4 else (*r, 0.0) for r in rois],
                            points)
    r = samed("segment", ct, "--markups", markups, "--out", tmp_path / "o.seg.nrrd")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and message in r.stderr, r.stderr
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_rois_on_two_slices_of_a_mrk_json_are_key_slices_like_repeated_box_slice(ctchest, tmp_path):
    ct, seg = ctchest
    keys = [14, 18]
    boxes = _reference_boxes(ct, seg, keys)
    rois = [(f"key {k}", tuple(int(v) for v in b.split(",")), k, 0.0) for k, b in zip(keys, boxes)]
    markups = _markups_file(tmp_path / "lung boxes.mrk.json", ct, rois)
    by_markups, by_options = tmp_path / "markups.seg.nrrd", tmp_path / "options.seg.nrrd"
    r = samed("segment", ct, "--markups", markups, "--intensity", "minmax", "--engine", "torch", "--out", by_markups)
    assert r.returncode == 0, r.stderr
    assert "key slices: 14, 18" in r.stdout and "interpolated slices: 15, 16, 17" in r.stdout, r.stdout
    r2 = samed("segment", ct, "--slice", keys[0], "--box", boxes[0], "--slice", keys[1], "--box", boxes[1],
               "--intensity", "minmax", "--engine", "torch", "--out", by_options)
    assert r2.returncode == 0, r2.stderr
    a, b = io.read_segmentation(by_markups), io.read_segmentation(by_options)
    mask_a, mask_b = a.segment_mask(a.segments[0]), b.segment_mask(b.segments[0])
    assert mask_a.any() and np.array_equal(mask_a, mask_b)
    assert sorted(np.flatnonzero(mask_a.any(axis=(1, 2))).tolist()) == list(range(14, 19))
