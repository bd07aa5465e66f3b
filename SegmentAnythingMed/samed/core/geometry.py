"""Volume geometry: voxel (IJK) <-> patient (RAS) coordinates, and 2D slices along a voxel axis.

Conventions used everywhere in samed:
- A volume's voxels are a numpy array indexed ``[k, j, i]`` (as Slicer's ``arrayFromVolume`` and SimpleITK's
  ``GetArrayFromImage``). ``ijk_to_ras`` is the 4x4 matrix that maps homogeneous ``(i, j, k, 1)`` to ``(r, a, s, 1)``.
- A slice is ``np.take(array, index, axis)`` for a numpy axis (0 = k, 1 = j, 2 = i). Its pixel coordinates are
  ``xy``: ``x`` is the column (the last remaining voxel axis), ``y`` is the row (the first remaining one).
  For an axial slice of a standard volume that is ``x = i``, ``y = j``.
- View names map to the voxel axis whose direction is closest to the anatomical axis: axial -> S, coronal -> A,
  sagittal -> R. ``k``, ``j``, ``i`` name a voxel axis directly.

All conversions between coordinate spaces live in this module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

# numpy axis of the [k, j, i] array for each voxel axis name
VOXEL_AXIS_NUMPY = {"k": 0, "j": 1, "i": 2}
# RAS component (0 = R, 1 = A, 2 = S) that each anatomical view is perpendicular to
VIEW_RAS_COMPONENT = {"sagittal": 0, "coronal": 1, "axial": 2}
AXIS_NAMES = ("axial", "coronal", "sagittal", "k", "j", "i")

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class GeometryError(ValueError):
    """A coordinate, slice index or matrix that does not fit the volume."""


@dataclass
class Volume:
    """Voxel array ``[k, j, i]`` and its IJK -> RAS matrix. ``metadata`` keeps format-specific fields."""

    array: np.ndarray
    ijk_to_ras: np.ndarray = field(default_factory=lambda: np.eye(4))
    metadata: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=float)
        if self.ijk_to_ras.shape != (4, 4):
            raise GeometryError(f"ijk_to_ras must be 4x4, got {self.ijk_to_ras.shape}")
        if abs(np.linalg.det(self.ijk_to_ras[:3, :3])) < 1e-12:
            raise GeometryError("ijk_to_ras is singular (a spacing is 0?)")

    @property
    def shape_kji(self) -> Tuple[int, ...]:
        return tuple(self.array.shape[:3])

    @property
    def spacing_ijk(self) -> np.ndarray:
        """Voxel size in mm along i, j, k."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def spacing_kji(self) -> np.ndarray:
        """Voxel size in mm in numpy axis order (k, j, i), as metrics want it."""
        return self.spacing_ijk[::-1].copy()

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    def with_array(self, array: np.ndarray) -> "Volume":
        """A volume on the same grid with other voxels (e.g. a mask)."""
        if tuple(array.shape[:3]) != self.shape_kji:
            raise GeometryError(f"array shape {array.shape} does not match the volume grid {self.shape_kji}")
        return Volume(array, self.ijk_to_ras.copy(), dict(self.metadata))


def ijk_to_ras(points_ijk, ijk_to_ras_matrix) -> np.ndarray:
    """Map (N, 3) IJK points (continuous voxel indices) to RAS mm."""
    pts = np.atleast_2d(np.asarray(points_ijk, dtype=float))
    hom = np.c_[pts, np.ones(len(pts))]
    return (hom @ np.asarray(ijk_to_ras_matrix, dtype=float).T)[:, :3]


def ras_to_ijk(points_ras, ijk_to_ras_matrix) -> np.ndarray:
    """Map (N, 3) RAS mm points to continuous IJK voxel indices."""
    pts = np.atleast_2d(np.asarray(points_ras, dtype=float))
    hom = np.c_[pts, np.ones(len(pts))]
    return (hom @ np.linalg.inv(np.asarray(ijk_to_ras_matrix, dtype=float)).T)[:, :3]


def matrix_from_lps(origin_lps, spacing, direction_lps) -> np.ndarray:
    """IJK -> RAS matrix from ITK-style (LPS) origin, spacing (i, j, k) and 3x3 direction (columns = axes)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction_lps, dtype=float).reshape(3, 3) @ np.diag(np.asarray(spacing, dtype=float))
    m[:3, 3] = np.asarray(origin_lps, dtype=float)
    return LPS_TO_RAS @ m


def matrix_to_lps(ijk_to_ras_matrix) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin_lps, spacing_ijk, direction_lps 3x3) of an IJK -> RAS matrix."""
    m = LPS_TO_RAS @ np.asarray(ijk_to_ras_matrix, dtype=float)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    direction = m[:3, :3] / spacing
    return m[:3, 3].copy(), spacing, direction


def numpy_axis(axis: str, ijk_to_ras_matrix: Optional[np.ndarray] = None) -> int:
    """numpy axis (0 = k, 1 = j, 2 = i) of a view name or voxel axis name.

    View names pick the voxel axis most aligned with the view's normal (axial -> S, coronal -> A, sagittal -> R),
    so a volume acquired sagittally still gives a true axial slice for ``axial``.
    """
    name = str(axis).lower()
    if name in VOXEL_AXIS_NUMPY:
        return VOXEL_AXIS_NUMPY[name]
    if name not in VIEW_RAS_COMPONENT:
        raise GeometryError(f"unknown axis {axis!r}: use one of {', '.join(AXIS_NAMES)}")
    m = np.eye(4) if ijk_to_ras_matrix is None else np.asarray(ijk_to_ras_matrix, dtype=float)
    direction = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)
    ijk_index = int(np.argmax(np.abs(direction[VIEW_RAS_COMPONENT[name], :])))  # 0 = i, 1 = j, 2 = k
    return 2 - ijk_index


def slice_count(shape_kji: Sequence[int], np_axis: int) -> int:
    return int(shape_kji[np_axis])


def check_slice_index(shape_kji: Sequence[int], np_axis: int, index: int) -> int:
    n = slice_count(shape_kji, np_axis)
    if not isinstance(index, (int, np.integer)) or not 0 <= int(index) < n:
        raise GeometryError(f"slice index {index} is outside the volume: this axis has slices 0..{n - 1}")
    return int(index)


def extract_slice(array: np.ndarray, np_axis: int, index: int) -> np.ndarray:
    """The 2D slice ``array`` at ``index`` along numpy axis ``np_axis`` (rows, cols) = (y, x)."""
    check_slice_index(array.shape, np_axis, index)
    return np.take(array, int(index), axis=np_axis)


def insert_slice(array: np.ndarray, np_axis: int, index: int, slice2d: np.ndarray) -> None:
    """Write a 2D slice back into ``array`` in place (the inverse of :func:`extract_slice`)."""
    check_slice_index(array.shape, np_axis, index)
    sl = [slice(None)] * 3
    sl[np_axis] = int(index)
    array[tuple(sl)] = slice2d


def masks_to_volume(masks, shape_kji: Sequence[int], np_axis: int, consume: bool = False) -> np.ndarray:
    """Per-slice masks (slice index -> (H, W)) along ``np_axis`` as one bool volume of ``shape_kji``. ``consume``:
    empty ``masks`` while copying, so that a whole-volume result never exists twice (each slice is freed as it is
    copied, if nothing else holds it)."""
    vol = np.zeros(tuple(shape_kji[:3]), dtype=bool)
    for index in list(masks):
        mask = masks.pop(index) if consume else masks[index]
        insert_slice(vol, np_axis, index, mask)
        del mask
    return vol


def _remaining_axes(np_axis: int) -> Tuple[int, int]:
    rest = [a for a in (0, 1, 2) if a != np_axis]
    return rest[0], rest[1]  # (row axis, column axis)


def slice_xy_to_kji(points_xy, np_axis: int, index: float) -> np.ndarray:
    """(N, 2) slice pixel coordinates (x = column, y = row) -> (N, 3) continuous [k, j, i] indices."""
    pts = np.atleast_2d(np.asarray(points_xy, dtype=float))
    row_axis, col_axis = _remaining_axes(np_axis)
    out = np.zeros((len(pts), 3))
    out[:, np_axis] = index
    out[:, row_axis] = pts[:, 1]
    out[:, col_axis] = pts[:, 0]
    return out


def kji_to_slice_xy(points_kji, np_axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3) [k, j, i] -> ((N, 2) slice xy, (N,) continuous slice position along ``np_axis``)."""
    pts = np.atleast_2d(np.asarray(points_kji, dtype=float))
    row_axis, col_axis = _remaining_axes(np_axis)
    return np.c_[pts[:, col_axis], pts[:, row_axis]], pts[:, np_axis].copy()


def ras_to_slice_xy(points_ras, ijk_to_ras_matrix, np_axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """RAS mm points -> (slice xy, slice position) on slices along ``np_axis``."""
    ijk = ras_to_ijk(points_ras, ijk_to_ras_matrix)
    return kji_to_slice_xy(ijk[:, ::-1], np_axis)


def slice_xy_to_ras(points_xy, ijk_to_ras_matrix, np_axis: int, index: float) -> np.ndarray:
    kji = slice_xy_to_kji(points_xy, np_axis, index)
    return ijk_to_ras(kji[:, ::-1], ijk_to_ras_matrix)


def slice_spacing(spacing_kji: Sequence[float], np_axis: int) -> Tuple[float, float]:
    """Pixel size (row, column) in mm of a slice along ``np_axis``."""
    row_axis, col_axis = _remaining_axes(np_axis)
    return float(spacing_kji[row_axis]), float(spacing_kji[col_axis])
