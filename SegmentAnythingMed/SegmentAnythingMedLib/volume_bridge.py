"""Volume nodes -> samed volumes, and which voxel slice a slice view shows.

Coordinates: ``ijk_to_world`` is the 4x4 matrix from a volume's voxel indices (i, j, k) to world RAS, through the
node's own IJK -> RAS matrix and any linear parent transforms. Markups, clicks (``xyToRas``) and ROIs are world RAS,
so every conversion to slice pixels goes through this one matrix and ``samed.core.geometry``.

A slice view shows a voxel slice of the source volume only when its plane is parallel to one of the volume's voxel
planes. :func:`view_slice` finds that voxel axis and the slice index under the view, or raises
:class:`~SegmentAnythingMedLib.errors.ObliqueViewError` with what to do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import vtk
from vtk.util import numpy_support

from samed.core.geometry import Volume

from .errors import BridgeError, ObliqueViewError

# RAS component closest to a view's normal -> the view's anatomical name
ORIENTATION_OF_RAS_COMPONENT = {0: "sagittal", 1: "coronal", 2: "axial"}
VOXEL_AXIS_NAMES = ("k", "j", "i")  # by numpy axis
OBLIQUE_TOLERANCE_DEG = 0.5


def matrix_to_array(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def array_to_matrix(array) -> "vtk.vtkMatrix4x4":
    m = vtk.vtkMatrix4x4()
    a = np.asarray(array, dtype=float)
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def node_to_world(node) -> np.ndarray:
    """4x4 matrix from a transformable node's own coordinates to world (identity without a parent transform)."""
    transform_node = node.GetParentTransformNode() if node is not None else None
    if transform_node is None:
        return np.eye(4)
    if not transform_node.IsTransformToWorldLinear():
        raise BridgeError(
            f"node {node.GetName()!r} is under the non-linear transform {transform_node.GetName()!r}: harden the "
            f"transform (Data module, right-click > Harden transform) before segmenting it")
    m = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformToWorld(m)
    return matrix_to_array(m)


def ijk_to_world(volume_node) -> np.ndarray:
    """IJK -> world RAS of a volume node, parent transforms included."""
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return node_to_world(volume_node) @ matrix_to_array(m)


def array_from_volume_node(volume_node, copy: bool = True) -> np.ndarray:
    """Voxels ``[k, j, i]`` (``[k, j, i, c]`` for multi-component images) of a volume node."""
    image = volume_node.GetImageData() if volume_node is not None else None
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        name = volume_node.GetName() if volume_node is not None else "(none)"
        raise BridgeError(f"volume {name!r} has no voxels: load an image into it first")
    dims = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    components = scalars.GetNumberOfComponents()
    shape = (dims[2], dims[1], dims[0]) if components == 1 else (dims[2], dims[1], dims[0], components)
    array = numpy_support.vtk_to_numpy(scalars).reshape(shape)
    return array.copy() if copy else array


def volume_from_node(volume_node, copy: bool = True) -> Volume:
    """A :class:`samed.core.geometry.Volume` of a volume node in world coordinates.

    ``copy`` (default) detaches the voxels from the node so that a worker thread may read them while the user
    goes on editing the scene.
    """
    array = array_from_volume_node(volume_node, copy=copy)
    metadata = {"node_id": volume_node.GetID(), "name": volume_node.GetName()}
    modality = volume_node.GetAttribute("DICOM.Modality") if hasattr(volume_node, "GetAttribute") else None
    if modality:
        metadata["modality"] = modality
    return Volume(array, ijk_to_world(volume_node), metadata)


@dataclass(frozen=True)
class ViewSlice:
    """The voxel slice a view shows: numpy axis of the ``[k, j, i]`` array (0 = k, 1 = j, 2 = i) and index."""

    np_axis: int
    index: int
    orientation: str = ""  # axial / coronal / sagittal: the RAS axis closest to the view's normal
    view_name: str = ""

    @property
    def axis_name(self) -> str:
        """The voxel axis name ("k", "j" or "i") that ``samed.core`` takes for this slicing direction."""
        return VOXEL_AXIS_NAMES[self.np_axis]

    def describe(self) -> str:
        where = f"{self.orientation} " if self.orientation else ""
        return f"{where}slice {self.index} (voxel axis {self.axis_name})"


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n == 0:
        raise BridgeError("a slice view has a degenerate orientation matrix")
    return v / n


def voxel_axis_of_normal(normal_ras: Sequence[float], ijk_to_world_matrix: np.ndarray,
                         tolerance_deg: float = OBLIQUE_TOLERANCE_DEG) -> Optional[int]:
    """numpy axis whose voxel direction is parallel to ``normal_ras`` within ``tolerance_deg``; None if oblique."""
    n = _unit(np.asarray(normal_ras, dtype=float)[:3])
    m = np.asarray(ijk_to_world_matrix, dtype=float)[:3, :3]
    directions = m / np.linalg.norm(m, axis=0)
    cosines = np.abs(directions.T @ n)  # per voxel axis i, j, k
    best = int(np.argmax(cosines))
    if cosines[best] < math.cos(math.radians(tolerance_deg)):
        return None
    return 2 - best


def view_slice(slice_node, volume: Volume, volume_name: str = "") -> ViewSlice:
    """The voxel slice of ``volume`` that ``slice_node`` (a vtkMRMLSliceNode) shows.

    Raises ObliqueViewError if the view's plane is not a voxel plane of the volume, BridgeError if the view is
    off the volume.
    """
    slice_to_ras = matrix_to_array(slice_node.GetSliceToRAS())
    normal = slice_to_ras[:3, 2]
    view = slice_node.GetName() or slice_node.GetLayoutName() or "slice"
    name = volume_name or str(volume.metadata.get("name", "the source volume"))
    np_axis = voxel_axis_of_normal(normal, volume.ijk_to_ras)
    if np_axis is None:
        n = _unit(normal)
        m = volume.ijk_to_ras[:3, :3]
        directions = m / np.linalg.norm(m, axis=0)
        off = math.degrees(math.acos(min(1.0, float(np.max(np.abs(directions.T @ n))))))
        raise ObliqueViewError(
            f"the {view} view is oblique to volume {name!r} ({off:.1f} degrees off its voxel planes): Segment "
            f"Anything works on the volume's own slices. Set the view to axial, coronal or sagittal and, if the "
            f"volume itself is tilted, use the view menu's 'Rotate to volume plane'.")
    ijk = np.linalg.inv(volume.ijk_to_ras) @ np.r_[slice_to_ras[:3, 3], 1.0]
    position = float(ijk[2 - np_axis])
    index = int(math.floor(position + 0.5))
    n_slices = int(volume.array.shape[np_axis])
    if not 0 <= index < n_slices:
        raise BridgeError(
            f"the {view} view is at slice position {position:.1f} of volume {name!r}, outside its slices "
            f"0..{n_slices - 1}: scroll the view onto the volume")
    orientation = ORIENTATION_OF_RAS_COMPONENT[int(np.argmax(np.abs(normal)))]
    return ViewSlice(np_axis, index, orientation, view)


def slice_position_ras(volume: Volume, np_axis: int, index: int) -> np.ndarray:
    """World RAS of the centre of voxel slice ``index`` along ``np_axis`` (to move a view onto it)."""
    centre_kji = (np.asarray(volume.array.shape[:3], dtype=float) - 1) / 2
    centre_kji[np_axis] = index
    return (volume.ijk_to_ras @ np.r_[centre_kji[::-1], 1.0])[:3]


def slice_normal_ras(volume: Volume, np_axis: int) -> np.ndarray:
    """Unit vector of the voxel axis ``np_axis`` in world RAS."""
    return _unit(volume.ijk_to_ras[:3, 2 - np_axis])


def slice_under_view(volume_node, slice_node):
    """(ViewSlice, 2D voxel array) of the source volume's slice that a slice view shows, rows and columns as
    ``samed.core.geometry`` orders them (the picture the model gets, before intensity preprocessing)."""
    volume = volume_from_node(volume_node, copy=False)
    view = view_slice(slice_node, volume, volume_node.GetName())
    return view, np.take(volume.array, view.index, axis=view.np_axis).copy()
