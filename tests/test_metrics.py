"""Tests for samed.core.metrics: agreement with MONAI on random blobby masks, known answers, edge cases."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

try:
    from samed.core import metrics
except ImportError:  # running from a checkout without samed installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SegmentAnythingMed"))
    from samed.core import metrics

# MONAI's own internals call one of its deprecated arguments; that is not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

# ---------------------------------------------------------------------------------------------- helpers


def blobby_pair(rng: np.random.Generator, shape, sigma, ref_fraction, pred_noise):
    """A reference blob mask and a prediction made by perturbing the same smoothed noise field."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    perturbation = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    field /= field.std()
    perturbation /= perturbation.std()
    threshold = np.quantile(field, 1.0 - ref_fraction)
    ref = field > threshold
    pred = (field + pred_noise * perturbation) > threshold
    return pred, ref


def random_pairs(seed, shape, count):
    """``count`` non-empty (pred, ref) pairs with varied smoothness, size and disagreement."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < count:
        sigma = tuple(float(rng.uniform(1.0, 4.0)) * (0.4 if n < 16 else 1.0) for n in shape)
        pred, ref = blobby_pair(
            rng, shape, sigma, ref_fraction=float(rng.uniform(0.02, 0.4)), pred_noise=float(rng.uniform(0.05, 1.0))
        )
        if pred.any() and ref.any():
            pairs.append((pred, ref))
    return pairs


def naive_surface_distances(pred, ref, spacing):
    """Uncropped reference implementation written directly from the definition."""
    pred_surface = pred ^ ndimage.binary_erosion(pred)
    ref_surface = ref ^ ndimage.binary_erosion(ref)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return to_ref[pred_surface], to_pred[ref_surface]


def disk(shape, spacing, centre_mm, radius_mm):
    """Voxels whose centre (index x spacing, mm) lies within ``radius_mm`` of ``centre_mm``."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    squared = sum((g - c) ** 2 for g, c in zip(grids, centre_mm))
    return squared <= radius_mm**2


# ---------------------------------------------------------------------------------------------- MONAI agreement

CASES = [
    # (seed, shape, spacing, tolerances in mm)
    (11, (12, 40, 40), (6.5, 0.78, 0.78), (2.0, 1.56, 6.5)),
    (12, (16, 32, 28), (1.0, 1.0, 1.0), (1.0, 2.0)),
    (13, (64, 64), (1.0, 1.0), (1.0, 2.0, 3.0)),
    (14, (48, 56), (0.5, 0.8), (0.8, 2.0)),
]


def _monai_batch(pairs):
    torch = pytest.importorskip("torch")
    pred = np.stack([p for p, _ in pairs]).astype(np.float32)
    ref = np.stack([r for _, r in pairs]).astype(np.float32)
    # one-hot (B, C=2, spatial...): channel 0 background, channel 1 foreground; include_background=False below
    pred_onehot = torch.from_numpy(np.stack([1.0 - pred, pred], axis=1))
    ref_onehot = torch.from_numpy(np.stack([1.0 - ref, ref], axis=1))
    return pred_onehot, ref_onehot


@pytest.mark.parametrize("seed,shape,spacing,tolerances", CASES)
def test_matches_monai_on_random_blobs(seed, shape, spacing, tolerances):
    monai_metrics = pytest.importorskip("monai.metrics")
    pairs = random_pairs(seed, shape, count=10)
    y_pred, y = _monai_batch(pairs)
    spacing_list = list(spacing)

    monai_dice = monai_metrics.compute_dice(y_pred, y, include_background=False, ignore_empty=False)[:, 0].numpy()
    monai_iou = monai_metrics.compute_iou(y_pred, y, include_background=False, ignore_empty=False)[:, 0].numpy()
    monai_hd95 = monai_metrics.compute_hausdorff_distance(
        y_pred, y, include_background=False, distance_metric="euclidean", percentile=95, spacing=spacing_list
    )[:, 0].numpy()

    for n, (pred, ref) in enumerate(pairs):
        assert metrics.dice(pred, ref) == pytest.approx(float(monai_dice[n]), abs=1e-6)
        assert metrics.iou(pred, ref) == pytest.approx(float(monai_iou[n]), abs=1e-6)
        # MONAI's distances are float32: allow a relative 1e-6
        assert metrics.hd95(pred, ref, spacing=spacing) == pytest.approx(float(monai_hd95[n]), rel=1e-6, abs=1e-6)

    for tolerance in tolerances:
        monai_nsd = monai_metrics.compute_surface_dice(
            y_pred,
            y,
            class_thresholds=[tolerance],
            include_background=False,
            distance_metric="euclidean",
            spacing=spacing_list,
            use_subvoxels=False,
        )[:, 0].numpy()
        for n, (pred, ref) in enumerate(pairs):
            ours = metrics.nsd(pred, ref, tolerance_mm=tolerance, spacing=spacing)
            assert ours == pytest.approx(float(monai_nsd[n]), abs=1e-6), (n, tolerance)
            everything = metrics.compute_all(pred, ref, spacing=spacing, tolerance_mm=tolerance)
            assert everything["nsd"] == ours
            assert everything["hd95"] == metrics.hd95(pred, ref, spacing=spacing)
            assert everything["dice"] == metrics.dice(pred, ref)
            assert everything["iou"] == metrics.iou(pred, ref)


def test_matches_monai_when_masks_touch_the_border():
    monai_metrics = pytest.importorskip("monai.metrics")
    shape, spacing = (10, 30, 30), (2.5, 0.9, 0.9)
    ref = np.zeros(shape, bool)
    ref[:, :12, 5:20] = True  # touches three faces of the array
    pred = np.zeros(shape, bool)
    pred[2:, :14, 3:30] = True  # touches four faces
    pred[0, 25:, 25:] = True
    y_pred, y = _monai_batch([(pred, ref)])
    monai_nsd = monai_metrics.compute_surface_dice(
        y_pred, y, class_thresholds=[2.0], spacing=list(spacing), use_subvoxels=False
    )[0, 0].item()
    monai_hd95 = monai_metrics.compute_hausdorff_distance(y_pred, y, percentile=95, spacing=list(spacing))[0, 0].item()
    assert metrics.nsd(pred, ref, 2.0, spacing) == pytest.approx(monai_nsd, abs=1e-6)
    assert metrics.hd95(pred, ref, spacing) == pytest.approx(monai_hd95, rel=1e-6)


# ---------------------------------------------------------------------------------------------- known answers


def test_two_squares_exact_dice_and_iou():
    a = np.zeros((40, 40), np.uint8)
    b = np.zeros((40, 40), np.uint8)
    a[10:20, 10:20] = 1
    b[15:25, 10:20] = 1  # overlap 5 x 10 = 50 of 100 + 100
    assert metrics.dice(a, b) == 0.5
    assert metrics.iou(a, b) == pytest.approx(50 / 150, abs=1e-15)
    assert metrics.dice(a, a) == 1.0 and metrics.iou(a, a) == 1.0
    assert metrics.nsd(a, a) == 1.0 and metrics.hd95(a, a) == 0.0


def test_shifted_disk_hd95_is_the_shift_in_mm():
    spacing = (0.5, 0.7)
    shape = (120, 100)
    ref = disk(shape, spacing, centre_mm=(30.0, 35.0), radius_mm=15.0)
    shift_voxels = 4
    pred = np.zeros_like(ref)
    pred[:, shift_voxels:] = ref[:, :-shift_voxels]  # exact translation by 2.8 mm along axis 1
    shift_mm = shift_voxels * spacing[1]
    value = metrics.hd95(pred, ref, spacing=spacing)
    # a translation maps every surface voxel onto one of the other surface at exactly the shift, so HD <= shift;
    # for a disk the 95th percentile of the distances is cos(pi/40) ~ 0.997 of it
    assert 0.9 * shift_mm <= value <= shift_mm + 1e-9
    # every surface voxel is within the shift: NSD is 1 at a tolerance equal to the shift (<= counts)
    assert metrics.nsd(pred, ref, tolerance_mm=shift_mm, spacing=spacing) == 1.0
    assert metrics.nsd(pred, ref, tolerance_mm=0.5 * shift_mm, spacing=spacing) < 1.0


def test_shifted_sphere_along_thick_slices():
    spacing = (2.0, 0.8, 0.8)
    shape = (30, 50, 50)
    ref = disk(shape, spacing, centre_mm=(28.0, 20.0, 20.0), radius_mm=12.0)
    pred = np.zeros_like(ref)
    pred[2:] = ref[:-2]  # 4 mm along axis 0
    value = metrics.hd95(pred, ref, spacing=spacing)
    assert 0.85 * 4.0 <= value <= 4.0 + 1e-9


def test_single_voxels_known_distances():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[2, 5] = True
    b[5, 5] = True  # 3 rows apart at 2 mm per row = 6 mm
    spacing = (2.0, 1.0)
    to_b, to_a = metrics.surface_distances(a, b, spacing)
    np.testing.assert_array_equal(to_b, [6.0])
    np.testing.assert_array_equal(to_a, [6.0])
    assert metrics.hd95(a, b, spacing) == 6.0
    assert metrics.nsd(a, b, tolerance_mm=5.9, spacing=spacing) == 0.0
    assert metrics.nsd(a, b, tolerance_mm=6.0, spacing=spacing) == 1.0
    assert metrics.dice(a, b) == 0.0


def test_distance_equal_to_tolerance_up_to_rounding_counts_as_within():
    # 3 voxels x 0.1 mm is 0.30000000000000004 in double precision; MONAI compares in float32, so it is within 0.3
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[1, 2] = True
    b[4, 2] = True
    spacing = (0.1, 0.1)
    assert metrics.surface_distances(a, b, spacing)[0][0] > 0.3
    assert metrics.nsd(a, b, tolerance_mm=0.3, spacing=spacing) == 1.0
    assert metrics.nsd(a, b, tolerance_mm=0.2999, spacing=spacing) == 0.0
    monai_metrics = pytest.importorskip("monai.metrics")
    y_pred, y = _monai_batch([(a, b)])
    assert monai_metrics.compute_surface_dice(y_pred, y, [0.3], spacing=list(spacing))[0, 0].item() == 1.0


def test_nsd_counts_surface_voxels_by_hand():
    # ref: 3x3 square; pred: the same square plus one column to the right
    ref = np.zeros((9, 9), bool)
    ref[3:6, 3:6] = True
    pred = np.zeros((9, 9), bool)
    pred[3:6, 3:7] = True
    # pred surface: 3x4 block minus its eroded interior (row 4, cols 4-5) = 10 voxels; ref surface: 8 voxels.
    # ref surface voxels all lie on pred's surface or within 1 voxel of it -> distance <= 1.
    # pred surface voxels in column 6 are 1 voxel from ref's column 5; the others lie on ref's surface.
    # ref's (4,5) is on ref's surface but inside pred (not on pred's surface): 1 voxel from pred's (3,5).
    to_ref, to_pred = metrics.surface_distances(pred, ref)
    assert to_ref.size == 10 and to_pred.size == 8
    assert metrics.nsd(pred, ref, tolerance_mm=1.0) == 1.0
    # at 0.5 mm only exact coincidences count: pred column 6 (3 voxels) misses; ref (4,5) misses
    assert metrics.nsd(pred, ref, tolerance_mm=0.5) == pytest.approx((7 + 7) / 18)


# ---------------------------------------------------------------------------------------------- empty masks


@pytest.mark.parametrize("ndim", [2, 3])
def test_both_empty(ndim):
    empty = np.zeros((6,) * ndim, np.int16)
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.iou(empty, empty) == 1.0
    assert metrics.nsd(empty, empty) == 1.0
    assert metrics.hd95(empty, empty) == 0.0
    result = metrics.compute_all(empty, empty)
    assert result["dice"] == 1.0 and result["nsd"] == 1.0 and result["hd95"] == 0.0
    assert result["pred_voxels"] == 0 and result["ref_volume_mm3"] == 0.0
    assert metrics.per_slice_dice(empty, empty) == []


@pytest.mark.parametrize("pred_is_empty", [True, False])
def test_exactly_one_empty(pred_is_empty):
    full = np.zeros((8, 8, 8), bool)
    full[2:5, 2:6, 3:7] = True
    empty = np.zeros_like(full)
    pred, ref = (empty, full) if pred_is_empty else (full, empty)
    assert metrics.dice(pred, ref) == 0.0
    assert metrics.iou(pred, ref) == 0.0
    assert metrics.nsd(pred, ref, 100.0) == 0.0
    assert metrics.hd95(pred, ref) == math.inf
    result = metrics.compute_all(pred, ref, spacing=(1.0, 2.0, 3.0))
    assert result["hd95"] == float("inf") and result["nsd"] == 0.0 and result["dice"] == 0.0
    assert json.loads(json.dumps(metrics.json_safe(result)))["hd95"] is None


# ---------------------------------------------------------------------------------------------- cropping


def test_cropping_does_not_change_results_on_border_touching_masks():
    rng = np.random.default_rng(5)
    spacing = (3.0, 0.7, 0.9)
    for pred, ref in random_pairs(21, (14, 36, 30), count=4):
        pred = pred.copy()
        pred[0, :, :4] = True  # force the prediction onto two faces of the array
        pred[:, -1, -3:] = True
        ref = ref.copy()
        ref[rng.integers(0, 14), rng.integers(0, 36), 29] = True  # an isolated voxel on the last face
        cropped = metrics.surface_distances(pred, ref, spacing, crop=True)
        uncropped = metrics.surface_distances(pred, ref, spacing, crop=False)
        naive = naive_surface_distances(pred, ref, spacing)
        for got, full, expected in zip(cropped, uncropped, naive):
            np.testing.assert_array_equal(got, full)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_cropping_small_object_in_large_volume():
    shape = (60, 200, 200)
    spacing = (2.0, 0.5, 0.5)
    ref = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    ref[30:34, 100:120, 100:118] = True
    pred[31:35, 101:121, 100:118] = True
    pred[30, 180, 20] = True  # a stray voxel far away widens the box
    cropped = metrics.surface_distances(pred, ref, spacing)
    naive = naive_surface_distances(pred, ref, spacing)
    for got, expected in zip(cropped, naive):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
