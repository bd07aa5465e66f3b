"""NaN voxels (float volumes from reconstructions, resampling outside the field of view): a slice with no finite
voxel is refused (there is nothing for the model to see; it would still return a confident mask on the black
picture), some NaN voxels are shown as the window's lowest value with one warning, and a propagation does not
walk into slices without finite voxels. Real CTChest4 voxels as float32, the real model."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from samed.core import io
from samed.core.geometry import numpy_axis

BOX = ["--box", "55,36,106,98"]


def samed(*args):
    return subprocess.run([sys.executable, "-m", "samed.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


@pytest.fixture()
def float_ct(ctchest, tmp_path):
    """(writer, axial numpy axis): writes CTChest4 as float32 with a change applied to its voxels."""
    ct = io.read_volume(ctchest[0])
    axis = numpy_axis("axial", ct.ijk_to_ras)

    def write(change, name="f.nrrd"):
        a = ct.array.astype(np.float32)
        change(np.moveaxis(a, axis, 0))  # a view: change(v) sees axial slices first
        path = tmp_path / name
        io.write_volume(ct.with_array(a), path)
        return path
    return write


def test_a_slice_without_finite_voxels_is_refused(float_ct, tmp_path):
    def all_nan(v):
        v[20] = np.nan
    path = float_ct(all_nan)
    r = samed("segment", path, "--slice", "20", *BOX, "--out", tmp_path / "o.seg.nrrd")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "slice 20" in r.stderr and "no finite" in r.stderr, r.stderr
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_some_nan_voxels_give_one_warning_and_a_mask(float_ct, tmp_path):
    def corner_nan(v):
        v[:, :10, :10] = np.nan  # outside the field of view, away from the lung
    path = float_ct(corner_nan)
    r = samed("segment", path, "--slice", "20", *BOX, "--out", tmp_path / "o.seg.nrrd")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "NaN" in line]
    assert len(warnings) == 1 and "warning" in warnings[0].lower(), r.stderr
    assert io.read_segmentation(tmp_path / "o.seg.nrrd").segment_mask("Segment_1").sum() > 500


def test_propagation_stops_before_slices_without_finite_voxels(float_ct, tmp_path, ctchest):
    def nan_from_23(v):
        v[23:] = np.nan
    path = float_ct(nan_from_23)
    out = tmp_path / "o.seg.nrrd"
    r = samed("segment", path, "--slice", "20", *BOX, "--propagate", "--out", out)
    assert r.returncode == 0, r.stderr
    mask = io.read_segmentation(out).segment_mask("Segment_1")
    axis = numpy_axis("axial", io.read_volume(ctchest[0]).ijk_to_ras)
    per_slice = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).sum(axis=1)
    assert per_slice[20] > 0 and per_slice[22] > 0
    assert per_slice[23:].sum() == 0, per_slice
