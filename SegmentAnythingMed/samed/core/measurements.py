"""Measurements of one segment on its volume's grid, as a radiologist reports them: volume (mL), voxel count,
largest 3D diameter, RECIST long axis and its perpendicular short axis, intensity statistics, surface area.

Every length is in mm in patient space: voxel centres go through the volume's IJK -> RAS matrix (spacing and
direction, oblique grids included), so the numbers do not depend on how the grid is oriented.

Libraries (no hand-written geometry where a field library does it):
- ``scipy.spatial.ConvexHull`` (Qhull) + ``scipy.spatial.distance.pdist``: the largest distance between two voxel
  centres of the segment lies between two convex-hull vertices (3D diameter; 2D long axis on a slice).
- ``scipy.ndimage.binary_erosion``: only boundary voxels go to the hull.
- SimpleITK ``LabelShapeStatisticsImageFilter``: the surface area is its ``GetPerimeter()`` (for a 3D label ITK
  estimates the surface area by counting the object's intercepts with lines along the grid directions, Crofton's
  formula, on the physical spacing). ITK's filter also gives the physical size and the Feret diameter that the
  tests compare with ours.

The diameters are between voxel centres (as Slicer's Segment Statistics "Feret diameter" and ITK do), so a
segment one voxel wide measures 0 along that direction.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from .geometry import Volume, ijk_to_ras, numpy_axis

SURFACE_AREA_METHOD = "SimpleITK LabelShapeStatisticsImageFilter perimeter (Crofton intercept count)"


@dataclass
class SegmentMeasurements:
    """One segment's measurements. Lengths in mm, areas in mm^2, volume in mL; None where a value does not exist
    (an empty segment, no intensities given)."""

    name: str
    voxel_count: int
    volume_ml: float
    max_diameter_mm: Optional[float] = None
    recist_long_axis_mm: Optional[float] = None
    recist_short_axis_mm: Optional[float] = None
    recist_slice: Optional[int] = None          # slice index along ``recist_axis``
    recist_axis: str = "axial"
    recist_long_axis_ras: Optional[list] = None  # the long axis' two end points (RAS mm)
    intensity_mean: Optional[float] = None
    intensity_sd: Optional[float] = None
    intensity_min: Optional[float] = None
    intensity_max: Optional[float] = None
    intensity_unit: Optional[str] = None
    surface_area_mm2: Optional[float] = None
    surface_area_method: str = SURFACE_AREA_METHOD

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def voxel_volume_mm3(ijk_to_ras_matrix) -> float:
    """Volume of one voxel (mm^3): the determinant of the matrix' 3x3 part (true for oblique grids too)."""
    return float(abs(np.linalg.det(np.asarray(ijk_to_ras_matrix, dtype=float)[:3, :3])))


def boundary_voxels(mask: np.ndarray) -> np.ndarray:
    """The mask's voxels that touch the background (6-connectivity), as a bool array of the mask's shape."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    inner = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)
    return mask & ~inner


def max_distance(points: np.ndarray) -> Tuple[float, Optional[Tuple[np.ndarray, np.ndarray]]]:
    """Largest distance between two of ``points`` (N, D) and the pair: over the convex hull's vertices (Qhull);
    flat or collinear sets are measured in the subspace they span."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist, squareform

    pts = np.unique(np.asarray(points, dtype=float), axis=0)
    if len(pts) < 2:
        return 0.0, None
    candidates = pts
    if len(pts) > 64:
        centred = pts - pts.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        rank = int(np.sum(s > 1e-9 * max(s[0], 1e-300)))
        if rank >= 2:
            coords = centred @ vt[:rank].T  # isometric coordinates in the subspace the points span
            try:
                candidates = pts[ConvexHull(coords).vertices]
            except QhullError:  # nearly degenerate: fall back to all points
                candidates = pts
        else:  # collinear: the two ends along the line
            t = centred @ vt[0]
            candidates = pts[[int(np.argmin(t)), int(np.argmax(t))]]
    d = squareform(pdist(candidates))
    a, b = np.unravel_index(int(np.argmax(d)), d.shape)
    return float(d[a, b]), (candidates[a], candidates[b])


def _ras_points(indices_kji: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return ijk_to_ras(indices_kji[:, ::-1], matrix)


def recist_axes(mask: np.ndarray, volume: Volume, axis: str = "axial"):
    """(long mm, short mm, slice index, (end RAS, end RAS)) on the slice along ``axis`` where the long axis is
    largest. Long axis: the largest in-plane distance between voxel centres. Short axis: the longest chord
    perpendicular to it (voxel centres within half a pixel of each perpendicular line), as RECIST 1.1 asks."""
    np_axis = numpy_axis(axis, volume.ijk_to_ras)
    m = volume.ijk_to_ras
    best = (0.0, 0.0, None, None)
    edge = boundary_voxels_2d_stack(mask, np_axis)
    occupied = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != np_axis)))
    for index in occupied:
        sl = [slice(None)] * 3
        sl[np_axis] = int(index)
        kji = np.argwhere(edge[tuple(sl)])
        kji = np.insert(kji, np_axis, index, axis=1)
        ras = _ras_points(kji, m)
        long_mm, ends = max_distance(ras)
        if long_mm < best[0] - 1e-9 or best[2] is not None and abs(long_mm - best[0]) <= 1e-9:
            continue
        all_kji = np.insert(np.argwhere(mask[tuple(sl)]), np_axis, index, axis=1)
        short_mm = _perpendicular_chord(_ras_points(all_kji, m), ends, volume, np_axis)
        best = (long_mm, short_mm, int(index), ends)
    return best


def boundary_voxels_2d_stack(mask: np.ndarray, np_axis: int) -> np.ndarray:
    """Per-slice (2D) boundary voxels of a 3D mask along ``np_axis``."""
    from scipy import ndimage

    structure = np.zeros((3, 3, 3), dtype=bool)
    centre = [1, 1, 1]
    structure[tuple(centre)] = True
    for a in range(3):
        if a == np_axis:
            continue
        for off in (0, 2):
            c = list(centre)
            c[a] = off
            structure[tuple(c)] = True
    inner = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~inner


def _perpendicular_chord(ras: np.ndarray, ends, volume: Volume, np_axis: int) -> float:
    if ends is None:
        return 0.0
    u = (ends[1] - ends[0]) / np.linalg.norm(ends[1] - ends[0])
    normal = volume.ijk_to_ras[:3, 2 - np_axis]  # the slice's normal: its own voxel axis
    v = np.cross(normal, u)
    v /= np.linalg.norm(v)
    along = (ras - ends[0]) @ u
    across = (ras - ends[0]) @ v
    # voxel centres within half a (larger) pixel of one perpendicular line share a bin: every line crossing the
    # segment then meets voxel centres near both of its ends, whatever its angle to the grid
    pixel = float(max(s for a, s in enumerate(volume.spacing_kji) if a != np_axis))
    bins = np.round(along / pixel).astype(int)
    order = np.argsort(bins, kind="stable")
    bins, across = bins[order], across[order]
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    widths = np.maximum.reduceat(across, starts) - np.minimum.reduceat(across, starts)
    return float(widths.max())


def surface_area_mm2(mask: np.ndarray, volume: Volume) -> float:
    """Surface area (mm^2) by SimpleITK's LabelShapeStatisticsImageFilter (its perimeter of a 3D label)."""
    import SimpleITK as sitk

    from .io import _sitk_from_volume

    image = _sitk_from_volume(volume, np.asarray(mask, dtype=np.uint8))
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.ComputePerimeterOn()
    stats.Execute(image)
    return float(stats.GetPerimeter(1)) if stats.HasLabel(1) else 0.0


def measure(mask: np.ndarray, volume: Volume, name: str = "Segment_1", axis: str = "axial",
            intensities: Optional[np.ndarray] = None, intensity_unit: Optional[str] = None,
            surface: bool = True) -> SegmentMeasurements:
    """Measurements of the bool ``mask`` ``[k, j, i]`` on ``volume``'s grid. ``intensities``: the image voxels
    (default ``volume.array`` when it is 3D scalar); ``intensity_unit`` e.g. "HU" for CT."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != volume.shape_kji:
        raise ValueError(f"mask {name!r} has shape {mask.shape}, the volume's grid is {volume.shape_kji} ([k, j, i])")
    count = int(mask.sum())
    out = SegmentMeasurements(name=name, voxel_count=count,
                              volume_ml=count * voxel_volume_mm3(volume.ijk_to_ras) / 1000.0, recist_axis=axis)
    values = volume.array if intensities is None else np.asarray(intensities)
    if count == 0:
        return out
    out.max_diameter_mm, _ = max_distance(_ras_points(np.argwhere(boundary_voxels(mask)), volume.ijk_to_ras))
    long_mm, short_mm, index, ends = recist_axes(mask, volume, axis)
    out.recist_long_axis_mm, out.recist_short_axis_mm, out.recist_slice = long_mm, short_mm, index
    out.recist_long_axis_ras = [list(map(float, e)) for e in ends] if ends is not None else None
    if values is not None and values.shape[:3] == mask.shape and values.ndim == 3:
        inside = values[mask].astype(np.float64)
        finite = inside[np.isfinite(inside)]
        if finite.size:
            out.intensity_mean, out.intensity_sd = float(finite.mean()), float(finite.std())
            out.intensity_min, out.intensity_max = float(finite.min()), float(finite.max())
            out.intensity_unit = intensity_unit
    if surface:
        out.surface_area_mm2 = surface_area_mm2(mask, volume)
    return out


def intensity_unit_of(volume: Volume) -> Optional[str]:
    """"HU" when the volume says it is CT (a DICOM Modality, or a header field naming it), else None."""
    modality = str(volume.metadata.get("modality") or "").upper()
    return "HU" if modality == "CT" else None
