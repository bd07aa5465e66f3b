"""Tests for samed.core.metrics' API: dtypes, the dict compute_all returns, per-slice Dice, and the errors bad
input gets (shapes, spacing, tolerance, dimensions). Numerical agreement is in test_metrics.py."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from samed.core import metrics

def test_any_dtype_nonzero_is_foreground():
    labels = np.zeros((5, 7), np.int32)
    labels[1:3, 2:5] = 7
    labels[4, 0] = -1
    as_bool = labels != 0
    as_float = labels.astype(np.float64) * 0.25
    assert metrics.compute_all(labels, as_bool) == metrics.compute_all(as_bool, as_bool)
    assert metrics.compute_all(as_float, labels) == metrics.compute_all(as_bool, as_bool)


def test_compute_all_keys_and_volumes():
    pred = np.zeros((4, 10, 10), bool)
    ref = np.zeros((4, 10, 10), bool)
    pred[1:3, 2:6, 2:6] = True  # 32 voxels
    ref[1:3, 2:6, 2:8] = True  # 48 voxels
    result = metrics.compute_all(pred, ref, spacing=(2.0, 0.5, 0.25))
    assert set(result) == {
        "dice", "iou", "nsd", "hd95", "pred_voxels", "ref_voxels", "pred_volume_mm3", "ref_volume_mm3"
    }
    assert result["pred_voxels"] == 32 and result["ref_voxels"] == 48
    assert result["pred_volume_mm3"] == pytest.approx(32 * 0.25)
    assert result["ref_volume_mm3"] == pytest.approx(48 * 0.25)
    assert result["dice"] == pytest.approx(64 / 80)
    area = metrics.compute_all(pred[1], ref[1], spacing=(0.5, 0.4))  # 2D: an area in mm2 under the same key
    assert area["pred_volume_mm3"] == pytest.approx(16 * 0.2)


def test_per_slice_dice():
    pred = np.zeros((5, 6, 6), bool)
    ref = np.zeros((5, 6, 6), bool)
    pred[1, 1:3, 1:3] = True  # 4 voxels, 2 shared
    ref[1, 1:3, 2:4] = True
    ref[3, 0, 0] = True  # only in ref
    pred[4, 5, 5] = True
    ref[4, 5, 5] = True
    assert metrics.per_slice_dice(pred, ref) == [(1, 0.5), (3, 0.0), (4, 1.0)]
    by_column = metrics.per_slice_dice(pred, ref, axis=2)
    assert by_column == metrics.per_slice_dice(pred, ref, axis=-1)
    for index, value in by_column:
        assert value == metrics.dice(pred[:, :, index], ref[:, :, index])
    assert [i for i, _ in by_column] == [0, 1, 2, 3, 5]
    with pytest.raises(ValueError, match="axis"):
        metrics.per_slice_dice(pred, ref, axis=3)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError) as error:
        metrics.dice(np.zeros((4, 5)), np.zeros((4, 6)))
    assert "(4, 5)" in str(error.value) and "(4, 6)" in str(error.value)
    with pytest.raises(ValueError, match=r"\(3, 4, 5\).*\(3, 4, 4\)"):
        metrics.compute_all(np.zeros((3, 4, 5)), np.zeros((3, 4, 4)))


@pytest.mark.parametrize(
    "spacing", [(1.0, 1.0), (1.0, 1.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -2.0, 1.0), (1.0, math.nan, 1.0),
                (math.inf, 1.0, 1.0), 1.0]
)
def test_bad_spacing(spacing):
    mask = np.ones((3, 3, 3), bool)
    with pytest.raises(ValueError, match="spacing"):
        metrics.compute_all(mask, mask, spacing=spacing)
    with pytest.raises(ValueError, match="spacing"):
        metrics.hd95(mask, mask, spacing=spacing)


@pytest.mark.parametrize("tolerance", [0.0, -1.0, math.nan, math.inf])
def test_bad_tolerance(tolerance):
    mask = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="tolerance"):
        metrics.nsd(mask, mask, tolerance_mm=tolerance)
    with pytest.raises(ValueError, match="tolerance"):
        metrics.compute_all(mask, mask, tolerance_mm=tolerance)


def test_rejects_1d_and_4d_masks():
    with pytest.raises(ValueError, match="2D or 3D"):
        metrics.dice(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="2D or 3D"):
        metrics.dice(np.ones((2, 2, 2, 2)), np.ones((2, 2, 2, 2)))


def test_json_safe():
    value = {
        "hd95": float("inf"),
        "nsd": float("nan"),
        "dice": np.float32(0.5),
        "voxels": np.int64(3),
        "slices": [(1, 0.5), (2, np.float64(-np.inf))],
        "array": np.array([1.0, np.nan]),
        "name": "liver",
        "flag": True,
    }
    safe = metrics.json_safe(value)
    assert safe == {
        "hd95": None,
        "nsd": None,
        "dice": 0.5,
        "voxels": 3,
        "slices": [[1, 0.5], [2, None]],
        "array": [1.0, None],
        "name": "liver",
        "flag": True,
    }
    assert type(safe["voxels"]) is int
    json.dumps(safe, allow_nan=False)
