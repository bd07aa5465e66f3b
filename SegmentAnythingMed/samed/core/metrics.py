"""Overlap and surface metrics between a predicted and a reference binary mask: Dice, IoU, NSD, HD95.

Inputs are 2D or 3D numpy arrays of any dtype; nonzero is foreground. ``spacing`` is the voxel size in mm in
numpy axis order (for a ``[k, j, i]`` volume that is ``(slice thickness, row spacing, column spacing)``);
``None`` means 1.0 mm along every axis.

Definitions (they reproduce MONAI's ``compute_dice``, ``compute_iou``, ``compute_surface_dice`` with
``use_subvoxels=False`` and ``compute_hausdorff_distance(percentile=95)`` with the euclidean distance):

- Dice = 2 |P & R| / (|P| + |R|); IoU = |P & R| / |P | R|.
- Surface of a mask = mask XOR ``scipy.ndimage.binary_erosion(mask)`` with scipy's default structuring element
  (face connectivity) and ``border_value=0``, as MONAI's ``get_mask_edges``. Foreground voxels on the array
  border are therefore surface voxels (outside the array counts as background). Each surface voxel counts as one
  boundary element (no sub-voxel areas).
- Surface distance of a voxel of one surface = euclidean distance in mm (voxel centres, ``spacing`` applied) to
  the nearest voxel of the other surface, via ``scipy.ndimage.distance_transform_edt(sampling=spacing)``.
- NSD (normalized surface Dice, Nikolov et al. 2021) = (#pred-surface voxels with distance <= tolerance +
  #ref-surface voxels with distance <= tolerance) / (#pred-surface voxels + #ref-surface voxels). As in MONAI,
  distances are compared with the tolerance in single precision, so a distance that equals the tolerance up to
  rounding (e.g. 2 x 0.78 mm against 1.56 mm) counts as within it.
- HD95 = max(95th percentile of pred->ref distances, 95th percentile of ref->pred distances), percentiles with
  linear interpolation (``numpy.percentile``'s default, the same as ``torch.quantile`` in MONAI).

Empty masks (where MONAI returns NaN for some of these, samed defines every case):

==========================  =====  =====  =====  =====
case                        dice   iou    nsd    hd95
==========================  =====  =====  =====  =====
both empty                  1.0    1.0    1.0    0.0
exactly one empty           0.0    0.0    0.0    inf
==========================  =====  =====  =====  =====

``hd95`` may be ``float('inf')``; ``json_safe`` turns inf and NaN into ``None`` before writing JSON.

All surface computations work on the joint bounding box of both masks plus a one-voxel margin, so large volumes
with small objects are cheap; the crop does not change any result.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

__all__ = [
    "dice",
    "iou",
    "nsd",
    "hd95",
    "surface_distances",
    "compute_all",
    "per_slice_dice",
    "json_safe",
]

_CROP_MARGIN = 1


# ---------------------------------------------------------------------------------------------- validation


def _as_masks(pred: Any, ref: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Both masks as boolean arrays of the same 2D or 3D shape (no copy for boolean input)."""
    pred_array = np.asarray(pred)
    ref_array = np.asarray(ref)
    if pred_array.shape != ref_array.shape:
        raise ValueError(
            f"pred and ref masks must have the same shape, got pred {pred_array.shape} and ref {ref_array.shape}"
        )
    if pred_array.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D arrays, got {pred_array.ndim}D with shape {pred_array.shape}")
    pred_mask = pred_array if pred_array.dtype == bool else pred_array != 0
    ref_mask = ref_array if ref_array.dtype == bool else ref_array != 0
    return pred_mask, ref_mask


def _as_spacing(spacing: Optional[Sequence[float]], ndim: int) -> Tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.ndim(spacing) != 1:
        raise ValueError(f"spacing must be a sequence of {ndim} numbers (mm, numpy axis order), got {spacing!r}")
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim:
        raise ValueError(f"spacing must have one value per mask axis ({ndim}), got {len(values)}: {values}")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be positive and finite (mm), got {values}")
    return values


def _check_tolerance(tolerance_mm: float) -> float:
    value = float(tolerance_mm)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"tolerance_mm must be a positive finite number of mm, got {tolerance_mm!r}")
    return value


# ---------------------------------------------------------------------------------------------- overlap


def _overlap_counts(pred: np.ndarray, ref: np.ndarray) -> Tuple[int, int, int]:
    """(|P|, |R|, |P & R|) for boolean masks."""
    return int(np.count_nonzero(pred)), int(np.count_nonzero(ref)), int(np.count_nonzero(pred & ref))


def _dice_from_counts(n_pred: int, n_ref: int, n_both: int) -> float:
    total = n_pred + n_ref
    return 1.0 if total == 0 else 2.0 * n_both / total


def _iou_from_counts(n_pred: int, n_ref: int, n_both: int) -> float:
    union = n_pred + n_ref - n_both
    return 1.0 if union == 0 else n_both / union


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient 2|P & R| / (|P| + |R|); 1.0 when both masks are empty."""
    pred_mask, ref_mask = _as_masks(pred, ref)
    return _dice_from_counts(*_overlap_counts(pred_mask, ref_mask))


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union |P & R| / |P | R|; 1.0 when both masks are empty."""
    pred_mask, ref_mask = _as_masks(pred, ref)
    return _iou_from_counts(*_overlap_counts(pred_mask, ref_mask))


# ---------------------------------------------------------------------------------------------- surfaces


def _joint_bounding_box(pred: np.ndarray, ref: np.ndarray, margin: int) -> Optional[Tuple[slice, ...]]:
    """Slices of the smallest box holding both masks' foreground, grown by ``margin`` (clipped to the array)."""
    box = []
    for axis in range(pred.ndim):
        other_axes = tuple(a for a in range(pred.ndim) if a != axis)
        occupied = np.any(pred, axis=other_axes) | np.any(ref, axis=other_axes)
        indices = np.flatnonzero(occupied)
        if indices.size == 0:
            return None
        start = max(int(indices[0]) - margin, 0)
        stop = min(int(indices[-1]) + 1 + margin, pred.shape[axis])
        box.append(slice(start, stop))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: mask XOR its erosion (face connectivity, outside the array is background), as MONAI."""
    return mask ^ ndimage.binary_erosion(mask)


def _distances_to(surface_from: np.ndarray, surface_to: np.ndarray, spacing: Tuple[float, ...]) -> np.ndarray:
    """For each voxel of ``surface_from`` (C order), the distance in mm to the nearest voxel of ``surface_to``."""
    n_from = int(np.count_nonzero(surface_from))
    if n_from == 0:
        return np.zeros(0, dtype=np.float64)
    if not surface_to.any():
        return np.full(n_from, np.inf, dtype=np.float64)
    distance_map = ndimage.distance_transform_edt(~surface_to, sampling=spacing)
    return np.asarray(distance_map[surface_from], dtype=np.float64)


def _surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Tuple[float, ...], crop: bool
) -> Tuple[np.ndarray, np.ndarray]:
    if crop:
        box = _joint_bounding_box(pred, ref, _CROP_MARGIN)
        if box is None:
            empty = np.zeros(0, dtype=np.float64)
            return empty, empty.copy()
        pred, ref = pred[box], ref[box]
    pred_surface = _surface(pred)
    ref_surface = _surface(ref)
    return _distances_to(pred_surface, ref_surface, spacing), _distances_to(ref_surface, pred_surface, spacing)


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Optional[Sequence[float]] = None, crop: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """Surface distances in mm: ``(pred_to_ref, ref_to_pred)``.

    ``pred_to_ref[n]`` is the distance from the n-th surface voxel of ``pred`` (C order) to the nearest surface
    voxel of ``ref``, and the other way round. An empty mask has no surface voxels (an empty array); if the
    other mask is empty, the distances of a non-empty one are all ``inf``. ``crop=False`` computes on the full
    arrays (slower, identical results; kept for verification).
    """
    pred_mask, ref_mask = _as_masks(pred, ref)
    return _surface_distances(pred_mask, ref_mask, _as_spacing(spacing, pred_mask.ndim), crop)


def _nsd_from_distances(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray, tolerance_mm: float) -> float:
    total = pred_to_ref.size + ref_to_pred.size
    if total == 0:
        return 1.0  # both masks empty
    # Compare in float32 as MONAI does (its distances are float32 and torch casts the threshold to match).
    tolerance = np.float32(tolerance_mm)
    within = np.count_nonzero(pred_to_ref.astype(np.float32) <= tolerance) + np.count_nonzero(
        ref_to_pred.astype(np.float32) <= tolerance
    )
    return float(within) / float(total)


def _hd95_from_distances(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray) -> float:
    if pred_to_ref.size == 0 and ref_to_pred.size == 0:
        return 0.0  # both masks empty
    if pred_to_ref.size == 0 or ref_to_pred.size == 0:
        return math.inf  # exactly one mask empty
    return float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)))


def nsd(
    pred: np.ndarray, ref: np.ndarray, tolerance_mm: float = 2.0, spacing: Optional[Sequence[float]] = None
) -> float:
    """Normalized surface Dice at ``tolerance_mm`` (see the module docstring); 1.0 both empty, 0.0 one empty."""
    tolerance = _check_tolerance(tolerance_mm)
    return _nsd_from_distances(*surface_distances(pred, ref, spacing), tolerance)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Optional[Sequence[float]] = None) -> float:
    """95th percentile symmetric Hausdorff distance in mm; 0.0 both empty, ``inf`` exactly one empty."""
    return _hd95_from_distances(*surface_distances(pred, ref, spacing))


# ---------------------------------------------------------------------------------------------- summaries


def compute_all(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Optional[Sequence[float]] = None,
    tolerance_mm: float = 2.0,
) -> Dict[str, float]:
    """All metrics at once, sharing one surface computation.

    Keys: ``dice``, ``iou``, ``nsd``, ``hd95`` (mm), ``pred_voxels``, ``ref_voxels`` (ints),
    ``pred_volume_mm3``, ``ref_volume_mm3`` (voxel count x voxel volume; for 2D masks this is an area in mm2,
    the key names stay the same).
    """
    pred_mask, ref_mask = _as_masks(pred, ref)
    spacing_mm = _as_spacing(spacing, pred_mask.ndim)
    tolerance = _check_tolerance(tolerance_mm)
    box = _joint_bounding_box(pred_mask, ref_mask, _CROP_MARGIN)
    if box is not None:  # every foreground voxel is inside the box
        pred_mask, ref_mask = pred_mask[box], ref_mask[box]
    n_pred, n_ref, n_both = _overlap_counts(pred_mask, ref_mask)
    pred_to_ref, ref_to_pred = _surface_distances(pred_mask, ref_mask, spacing_mm, crop=False)
    voxel_volume = float(np.prod(spacing_mm))
    return {
        "dice": _dice_from_counts(n_pred, n_ref, n_both),
        "iou": _iou_from_counts(n_pred, n_ref, n_both),
        "nsd": _nsd_from_distances(pred_to_ref, ref_to_pred, tolerance),
        "hd95": _hd95_from_distances(pred_to_ref, ref_to_pred),
        "pred_voxels": n_pred,
        "ref_voxels": n_ref,
        "pred_volume_mm3": n_pred * voxel_volume,
        "ref_volume_mm3": n_ref * voxel_volume,
    }


def per_slice_dice(pred: np.ndarray, ref: np.ndarray, axis: int = 0) -> List[Tuple[int, float]]:
    """``[(index, dice), ...]`` for every slice along numpy ``axis`` where pred or ref has foreground."""
    pred_mask, ref_mask = _as_masks(pred, ref)
    ndim = pred_mask.ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for {ndim}D masks of shape {pred_mask.shape}")
    axis = axis % ndim
    other_axes = tuple(a for a in range(ndim) if a != axis)
    n_pred = np.count_nonzero(pred_mask, axis=other_axes)
    n_ref = np.count_nonzero(ref_mask, axis=other_axes)
    n_both = np.count_nonzero(pred_mask & ref_mask, axis=other_axes)
    return [
        (int(index), _dice_from_counts(int(n_pred[index]), int(n_ref[index]), int(n_both[index])))
        for index in np.flatnonzero((n_pred + n_ref) > 0)
    ]


def json_safe(value: Any) -> Any:
    """``value`` ready for ``json.dump``: inf and NaN become ``None``, numpy scalars and arrays become Python
    numbers and lists; dicts, lists and tuples are converted recursively (tuples become lists)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return [json_safe(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
