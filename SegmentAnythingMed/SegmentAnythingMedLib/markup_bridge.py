"""Markups nodes and view clicks -> prompts in slice pixel coordinates.

Point lists and ROIs are read in world RAS (their parent transforms applied) and handed to
``samed.core.markup_prompts``, which maps them through the volume's RAS -> IJK matrix: any direction matrix,
anisotropic spacing and linear transforms of either node hold. An ROI's box is its extent on the slice; its extent
along the slicing axis comes back as ``SlicePrompts.roi_range`` and limits propagation.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import vtk

from samed.core.geometry import Volume, ras_to_slice_xy
from samed.core.markup_prompts import SlicePrompts, prompts_from_markups
from samed.core.markups import PointList, Roi

from .errors import BridgeError
from .volume_bridge import ViewSlice, matrix_to_array

POSITION_DEFINED = 2  # vtkMRMLMarkupsNode::PositionDefined


def point_list_from_node(node, exclude: Optional[bool] = None) -> PointList:
    """A markups point list node's placed points in world RAS. ``exclude`` None: decided by the node's name."""
    points = []
    for n in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(n) != POSITION_DEFINED:
            continue
        p = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(n, p)
        points.append(p)
    return PointList(node.GetName(), np.array(points).reshape(-1, 3), exclude)


def roi_from_node(node) -> Roi:
    """A markups ROI node as a box in world RAS (centre, edge lengths, axes), parent transforms applied."""
    if node.GetNumberOfControlPoints() == 0 or node.GetNthControlPointPositionStatus(0) != POSITION_DEFINED:
        raise BridgeError(f"ROI {node.GetName()!r} is not placed yet: place it around the structure first")
    object_to_world = matrix_to_array(node.GetObjectToWorldMatrix())
    axes = object_to_world[:3, :3]
    scale = np.linalg.norm(axes, axis=0)
    size = np.asarray(node.GetSize(), dtype=float) * scale
    if np.any(size <= 0):
        raise BridgeError(f"ROI {node.GetName()!r} has zero size along an axis: give it a size in all three directions")
    return Roi(node.GetName(), object_to_world[:3, 3], size, axes / scale)


def prompts_from_markup_nodes(volume: Volume, np_axis: int, include_nodes: Iterable = (),
                              exclude_nodes: Iterable = (), roi_nodes: Iterable = ()) -> SlicePrompts:
    """Prompts per slice along ``np_axis`` from include point lists, exclude point lists and ROIs (any may be empty).

    Points go to the slice nearest them; an ROI gives a box on every slice it crosses and ``roi_range``.
    """
    lists = [point_list_from_node(n, exclude=False) for n in include_nodes if n is not None]
    lists += [point_list_from_node(n, exclude=True) for n in exclude_nodes if n is not None]
    rois = [roi_from_node(n) for n in roi_nodes if n is not None]
    if not any(len(p.points_ras) for p in lists) and not rois:
        raise BridgeError("the selected markups hold no placed points and no ROI: place include points, exclude "
                          "points or an ROI first")
    return prompts_from_markups(lists, rois, volume, np_axis)


def ras_to_view_xy(points_ras, volume: Volume, view: ViewSlice, inside: bool = True) -> np.ndarray:
    """World RAS points (e.g. clicks from ``xyToRas``) -> (N, 2) pixel coordinates on the view's voxel slice.

    Raises BridgeError for a point off that slice's plane (by more than half a voxel) or, with ``inside``, outside
    the slice (box corners may lie outside: the box is clipped).
    """
    pts = np.atleast_2d(np.asarray(points_ras, dtype=float))
    xy, position = ras_to_slice_xy(pts, volume.ijk_to_ras, view.np_axis)
    h, w = [s for a, s in enumerate(volume.array.shape[:3]) if a != view.np_axis]
    for (x, y), p, ras in zip(xy, position, pts):
        if abs(p - view.index) > 0.5 + 1e-6:
            raise BridgeError(f"point ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}) is on slice position {p:.1f}, "
                              f"not on {view.describe()}")
        if inside and not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
            raise BridgeError(f"point ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}) is outside the image: click on "
                              f"the source volume")
    return xy


def box_around_slice_mask(volume: Volume, mask_kji: np.ndarray, np_axis: int, index: int, first: int, last: int,
                          margin_vox: float = 3.0):
    """(centre RAS, size mm, axes 3x3) of a box aligned with the volume's voxel axes: in-plane around the mask on
    slice ``index`` grown by ``margin_vox`` voxels, along the slicing axis from slice ``first`` to ``last``
    (edges a quarter voxel beyond their centres). For placing an ROI around a structure in scripts and tests."""
    sl = [slice(None)] * 3
    sl[np_axis] = index
    plane = np.asarray(mask_kji)[tuple(sl)]
    if not plane.any():
        raise BridgeError(f"the mask is empty on slice {index}")
    lo, hi = np.zeros(3), np.zeros(3)  # in k, j, i
    rest = [a for a in range(3) if a != np_axis]
    for axis2d, axis3d in enumerate(rest):
        hits = np.flatnonzero(plane.any(axis=1 - axis2d))
        lo[axis3d], hi[axis3d] = hits[0] - margin_vox, hits[-1] + margin_vox
    lo[np_axis], hi[np_axis] = first - 0.25, last + 0.25
    m = volume.ijk_to_ras
    centre = (m @ np.r_[((lo + hi) / 2)[::-1], 1.0])[:3]
    spacing = np.linalg.norm(m[:3, :3], axis=0)  # i, j, k
    size = (hi - lo)[::-1] * spacing
    axes = m[:3, :3] / spacing
    return centre, size, axes


def place_roi(roi_node, centre_ras, size_mm, axes=None) -> None:
    """Set a markups ROI node's centre, edge lengths and (optionally) axes (3x3, columns) in its coordinates."""
    matrix = vtk.vtkMatrix4x4()
    a = np.eye(3) if axes is None else np.asarray(axes, dtype=float)
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(a[r, c]))
        matrix.SetElement(r, 3, float(centre_ras[r]))
    roi_node.SetAndObserveObjectToNodeMatrix(matrix)
    roi_node.SetSize(*[float(s) for s in size_mm])
