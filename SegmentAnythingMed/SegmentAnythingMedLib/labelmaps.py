"""Binary masks (numpy ``[k, j, i]`` on a volume's grid) <-> ``vtkOrientedImageData`` labelmaps.

A mask travels as its bounding box only: :func:`oriented_image_from_mask` keeps the voxel indices of the full grid
(the image's extent starts at the box's corner) so that the labelmap needs no copy of the empty rest of the volume.
:func:`resample_into_geometry` brings such a labelmap into another labelmap's geometry (the segmentation's),
nearest-neighbour, over just the region the mask covers.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .volume_bridge import array_to_matrix, matrix_to_array


def foreground_box(mask: np.ndarray) -> Optional[Tuple[slice, slice, slice]]:
    """numpy slices of the smallest box holding the mask's voxels; None for an empty mask."""
    m = np.asarray(mask).astype(bool)
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(m.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def oriented_image_from_mask(mask_kji: np.ndarray, image_to_world: np.ndarray,
                             offset_kji: Sequence[int] = (0, 0, 0)) -> "slicer.vtkOrientedImageData":
    """An unsigned-char labelmap (1 inside) whose voxel ``[k, j, i]`` is ``mask_kji[k - k0, j - j0, i - i0]``
    and whose voxel indices map to world through ``image_to_world`` (the full grid's IJK -> RAS)."""
    mask = np.ascontiguousarray(np.asarray(mask_kji).astype(np.uint8))
    k0, j0, i0 = (int(v) for v in offset_kji)
    nk, nj, ni = mask.shape
    image = slicer.vtkOrientedImageData()
    image.SetExtent(i0, i0 + ni - 1, j0, j0 + nj - 1, k0, k0 + nk - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    array_from_oriented_image(image)[:] = mask
    image.SetGeometryFromImageToWorldMatrix(array_to_matrix(image_to_world))
    return image


def cropped_labelmap(mask_kji: np.ndarray, image_to_world: np.ndarray) -> Optional["slicer.vtkOrientedImageData"]:
    """:func:`oriented_image_from_mask` of the mask's bounding box; None for an empty mask."""
    box = foreground_box(mask_kji)
    if box is None:
        return None
    return oriented_image_from_mask(np.asarray(mask_kji)[box], image_to_world, [s.start for s in box])


def geometry_image(image_to_world: np.ndarray, shape_kji: Sequence[int]) -> "slicer.vtkOrientedImageData":
    """An image without voxels that describes a grid: ``shape_kji`` voxels mapped to world by ``image_to_world``."""
    image = slicer.vtkOrientedImageData()
    nk, nj, ni = (int(v) for v in shape_kji[:3])
    image.SetExtent(0, ni - 1, 0, nj - 1, 0, nk - 1)
    image.SetGeometryFromImageToWorldMatrix(array_to_matrix(image_to_world))
    return image


def array_from_oriented_image(image) -> np.ndarray:
    """The voxels of a single-component image as a writable ``[k, j, i]`` view (indices relative to its extent)."""
    scalars = image.GetPointData().GetScalars()
    if scalars is None:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    return numpy_support.vtk_to_numpy(scalars).reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)


def image_to_world(image) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    return matrix_to_array(m)


def is_empty_extent(extent: Sequence[int]) -> bool:
    return extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]


def covering_extent(image, geometry_image) -> Optional[Tuple[int, ...]]:
    """Extent, in ``geometry_image``'s voxel grid and clipped to its extent, that covers every voxel of ``image``."""
    src_extent = image.GetExtent()
    if is_empty_extent(src_extent):
        return None
    to_target = np.linalg.inv(image_to_world(geometry_image)) @ image_to_world(image)
    corners = np.array([[x, y, z, 1.0] for x in (src_extent[0] - 0.5, src_extent[1] + 0.5)
                        for y in (src_extent[2] - 0.5, src_extent[3] + 0.5)
                        for z in (src_extent[4] - 0.5, src_extent[5] + 0.5)])
    ijk = (corners @ to_target.T)[:, :3]
    lo = np.floor(ijk.min(axis=0) + 0.5).astype(int)  # voxel centres inside the box
    hi = np.ceil(ijk.max(axis=0) - 0.5).astype(int)
    limit = geometry_image.GetExtent()
    out = []
    for axis in range(3):
        out += [max(int(lo[axis]), limit[2 * axis]), min(int(hi[axis]), limit[2 * axis + 1])]
    return None if is_empty_extent(out) else tuple(out)


def resample_into_geometry(image, geometry_image) -> Optional["slicer.vtkOrientedImageData"]:
    """``image`` resampled (nearest neighbour) onto ``geometry_image``'s grid over the part ``image`` covers.

    When both grids coincide (the usual case: the segmentation's geometry is the source volume's) this is an exact
    copy. None if ``image`` lies outside ``geometry_image``'s extent.
    """
    extent = covering_extent(image, geometry_image)
    if extent is None:
        return None
    reference = slicer.vtkOrientedImageData()
    reference.SetExtent(*extent)
    reference.SetGeometryFromImageToWorldMatrix(array_to_matrix(image_to_world(geometry_image)))
    output = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            image, reference, output, False):
        raise RuntimeError("resampling the mask into the segmentation's geometry failed")
    return output


def with_world_transform(image, world_to_local: np.ndarray) -> "slicer.vtkOrientedImageData":
    """A copy of ``image`` whose geometry is expressed in other coordinates (e.g. a transformed segmentation's)."""
    out = slicer.vtkOrientedImageData()
    out.DeepCopy(image)
    out.SetGeometryFromImageToWorldMatrix(array_to_matrix(np.asarray(world_to_local) @ image_to_world(image)))
    return out
