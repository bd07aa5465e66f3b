"""The ``samed`` command line as a user runs it: a real process, real files, the real model."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from samed.core import io


def samed(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "samed.cli.main", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, message", [
    (["segment", "missing.nrrd", "--box", "1,1,5,5", "--slice", "0", "--out", "{tmp}/o.seg.nrrd"], "not found"),
    (["segment", "{ct}", "--box", "500,500,600,600", "--slice", "20", "--out", "{tmp}/o.seg.nrrd"],
     "outside the slice"),
    (["segment", "{ct}", "--box", "10,10,50,50", "--slice", "34", "--out", "{tmp}/o.seg.nrrd"], "slices 0..33"),
    (["segment", "{ct}", "--box", "10,10,50,50", "--slice", "3", "--out", "{tmp}/o.seg.nrrd", "--reference",
      "{seg}", "--reference-label", "spleen"], "right lung"),
    (["segment", "{ct}", "--box", "10,10,50", "--slice", "3", "--out", "{tmp}/o.seg.nrrd"], "4 comma-separated"),
    (["segment", "{ct}", "--box", "10,10,50,50", "--slice", "3", "--out", "{tmp}/o.seg.nrrd", "--model", "sam_vit_q"],
     "invalid choice"),
    (["segment", "{ct}", "--box", "10,10,50,50", "--slice", "3", "--out", "{tmp}/o.seg.nrrd", "--model", "sam_vit_b"],
     "needs a checkpoint file"),
    (["segment", "{ct}", "--slice", "3", "--out", "{tmp}/o.seg.nrrd"], "no prompt"),
    (["evaluate", "{tmp}", "--out", "{tmp}/ev"], "dataset"),
])
def test_bad_input_ends_with_one_clear_message(args, message, ctchest, tmp_path):
    ct, seg = ctchest
    args = [a.format(ct=ct, seg=seg, tmp=tmp_path) for a in args]
    r = samed(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3, r.stderr  # argparse adds its usage line


def test_existing_output_is_not_overwritten(ctchest, tmp_path):
    ct, _ = ctchest
    out = tmp_path / "mine.seg.nrrd"
    out.write_text("the user's work")
    r = samed("segment", ct, "--box", "55,36,106,98", "--slice", "20", "--out", out)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert out.read_text() == "the user's work"


# ---------------------------------------------------------------------------------------------- the README's job
def test_readme_demo_segments_and_propagates_the_right_lung(ctchest, tmp_path):
    """The README's main job: a box on one slice of CTChest4 (LPS directions), propagated, scored, saved."""
    ct, seg = ctchest
    out, report = tmp_path / "right_lung.seg.nrrd", tmp_path / "right_lung.json"
    r = samed("segment", ct, "--slice", "20", "--box", "55,36,106,98", "--propagate", "--intensity", "minmax",
              "--reference", seg, "--reference-label", "right lung", "--out", out, "--report", report)
    assert r.returncode == 0, r.stderr
    assert "whole volume (3D)" in r.stdout and "Dice" in r.stdout
    result = json.loads(report.read_text())
    dice = result["whole_volume"]["dice"]
    print(r.stdout)
    assert dice > 0.8, f"3D Dice of the propagated right lung {dice:.3f}"
    assert len(result["slices_segmented"]) >= 12

    # Slicer's own reader loads the file with the segment name, on the CT's geometry, on the right voxels
    import slicer
    from vtk.util.numpy_support import vtk_to_numpy

    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(out))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetNthSegment(0)
    assert segment.GetName() == "right lung"
    labelmap = segment.GetRepresentation("Binary labelmap")
    extent = labelmap.GetExtent()
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    voxels = vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1]) == segment.GetLabelValue()
    full = np.zeros((34, 128, 128), bool)
    full[extent[4]:extent[5] + 1, extent[2]:extent[3] + 1, extent[0]:extent[1] + 1] = voxels
    ours = io.read_segmentation(out).segment_mask("right lung")
    assert np.array_equal(full, ours)
    import vtk

    m = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(m)
    matrix = np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])
    assert np.allclose(matrix, io.read_volume(ct).ijk_to_ras, atol=1e-4)
    # and the right lung is on the patient's right (R > 0 in RAS) as in the reference
    centre_ijk = np.argwhere(full).mean(axis=0)[::-1]
    assert (matrix @ np.r_[centre_ijk, 1])[0] > 0


def test_evaluate_box_all_writes_results_and_summary(shared_data, tmp_path):
    r = samed("evaluate", shared_data / "images" / "ct-abdomen-slices", "--prompt", "box-all", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("dice", "iou", "nsd"):
        assert 0 <= summary["mean"][key] <= 1
    assert summary["mean"]["dice"] > 0.6  # the shared data's README measured 0.653 with SamPredictor
    assert summary["seconds_per_image"] > 0
    assert set(summary["classes"]["liver"]) >= {"dice", "iou", "nsd", "n"}
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].startswith("dataset,image,slice,class_id,class_name,prompt")
    assert len(rows) - 1 == sum(c["n"] for c in summary["classes"].values())
    assert "mean (all tasks)" in r.stdout


def test_segment_and_propagate_through_the_service_equals_in_process(samed_service, ctchest, tmp_path):
    """`samed segment --backend URL --propagate` runs the walk as a job on the real service; same masks."""
    import os

    ct, _ = ctchest
    common = ["segment", ct, "--slice", "20", "--box", "55,36,106,98", "--propagate", "--max-slices", "2"]
    remote = samed(*common, "--out", tmp_path / "remote.seg.nrrd", "--backend", samed_service.url)
    assert remote.returncode == 0, remote.stderr
    local = subprocess.run([sys.executable, "-m", "samed.cli.main", *map(str, common), "--out",
                            str(tmp_path / "local.seg.nrrd")], capture_output=True, text=True, timeout=900,
                           env={**os.environ, "SAMED_ENGINE": "torch"})  # the service fixture runs torch too
    assert local.returncode == 0, local.stderr
    a = io.read_segmentation(tmp_path / "remote.seg.nrrd").segment_mask("Segment_1")
    b = io.read_segmentation(tmp_path / "local.seg.nrrd").segment_mask("Segment_1")
    assert a.any() and np.array_equal(a, b)
    assert np.count_nonzero(a.any(axis=(1, 2))) == 5  # slices 18..22
