"""Geometry through the Slicer bridge on a real MRML scene: views -> voxel slices, markups and clicks -> slice
prompts, masks -> segment voxels, on volumes with non-identity directions, anisotropic spacing and transforms.

Expected positions are computed here from the numbers the scene was built with (not through the bridge), so an
off-by-one anywhere between IJK and RAS fails :func:`check_markup_geometry`; the last tests inject such faults and
show that the check catches them.
"""
import numpy as np
import pytest
import slicer
import slicer.util
import vtk

from slicer_scenes import LPS, SAGITTAL, TILTED, add_segmentation, add_volume, slicer_env  # noqa: F401

from samed.core.prompts import PromptError
from SegmentAnythingMedLib import labelmaps, markup_bridge, segment_writer, volume_bridge
from SegmentAnythingMedLib.errors import BridgeError, ObliqueViewError

GEOMETRIES = {  # name: (shape kji, spacing ijk, directions, origin, world translation of the volume's transform)
    "lps-anisotropic": ((9, 12, 14), (0.7, 0.9, 3.0), LPS, (12.0, -30.0, 5.0), None),
    "sagittal-acquisition": ((10, 11, 13), (1.2, 0.8, 2.5), SAGITTAL, (-4.0, 7.0, 60.0), None),
    "tilted-transformed": ((8, 13, 12), (0.8, 1.1, 2.0), TILTED, (3.0, 2.0, -1.0), (5.0, -7.5, 11.0)),
}


def world_matrix(spacing, directions, origin, translation):
    """IJK -> world from the construction numbers (independent of the bridge)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(directions) @ np.diag(spacing)
    m[:3, 3] = origin
    if translation is not None:
        t = np.eye(4)
        t[:3, 3] = translation
        m = t @ m
    return m


def build(env, name):
    shape, spacing, directions, origin, translation = GEOMETRIES[name]
    rng = np.random.default_rng(0)
    node = add_volume(env.scene, rng.integers(0, 100, shape).astype(np.int16), spacing, directions, origin)
    if translation is not None:
        transform = env.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        matrix = vtk.vtkMatrix4x4()
        for r in range(3):
            matrix.SetElement(r, 3, translation[r])
        transform.SetMatrixTransformToParent(matrix)
        node.SetAndObserveTransformNodeID(transform.GetID())
    return node, world_matrix(spacing, directions, origin, translation), shape


def voxel_world(matrix, i, j, k):
    return (matrix @ [i, j, k, 1.0])[:3]


def check_markup_geometry(env, name):
    node, matrix, shape = build(env, name)
    volume = volume_bridge.volume_from_node(node)
    scene = env.scene
    # include / exclude point lists at voxel centres
    include_ijk = [(2, 3, 4), (5, 1, 4)]
    exclude_ijk = [(7, 8, 4)]
    include = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
    exclude = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "exclude")
    for plist, points in ((include, include_ijk), (exclude, exclude_ijk)):
        for ijk in points:
            plist.AddControlPoint(*voxel_world(matrix, *ijk))
    prompts = markup_bridge.prompts_from_markup_nodes(volume, 0, [include], [exclude])
    assert prompts.indices() == [4]
    np.testing.assert_allclose(prompts.prompts[4].include_points_xy, [[2, 3], [5, 1]], atol=1e-4)
    np.testing.assert_allclose(prompts.prompts[4].exclude_points_xy, [[7, 8]], atol=1e-4)
    # the same points on slices along j: x = i, y = k
    by_j = markup_bridge.prompts_from_markup_nodes(volume, 1, [include], [])
    assert by_j.indices() == [1, 3]
    np.testing.assert_allclose(by_j.prompts[3].include_points_xy, [[2, 4]], atol=1e-4)
    # an ROI around voxels i 3..8, j 2..6, k 2..5, aligned with the voxel axes (edges a quarter voxel out)
    lo, hi = np.array([3, 2, 2]) - 0.25, np.array([8, 6, 5]) + 0.25
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    markup_bridge.place_roi(roi, voxel_world(matrix, *(lo + hi) / 2), (hi - lo) * spacing, matrix[:3, :3] / spacing)
    with_roi = markup_bridge.prompts_from_markup_nodes(volume, 0, [], [], [roi])
    assert with_roi.roi_range == (2, 5)
    assert with_roi.indices() == [2, 3, 4, 5]
    np.testing.assert_allclose(with_roi.prompts[3].box_xy, [2.75, 1.75, 8.25, 6.25], atol=1e-4)
    # the voxel slice a view shows, and a click on it
    slice_node = env.slice_node("Axial" if name != "sagittal-acquisition" else "Coronal")
    centre = voxel_world(matrix, 6, 5, 3)
    normal = matrix[:3, 2] / np.linalg.norm(matrix[:3, 2])
    slice_node.SetSliceToRASByNTP(*normal, *matrix[:3, 0], *centre, 0)
    view = volume_bridge.view_slice(slice_node, volume)
    assert (view.np_axis, view.index) == (0, 3)
    np.testing.assert_allclose(markup_bridge.ras_to_view_xy(voxel_world(matrix, 9, 10, 3), volume, view),
                               [[9, 10]], atol=1e-4)
    # a mask written through the bridge lands on the same voxels (read back by Slicer's own export)
    mask = np.zeros(shape[1:], bool)
    mask[2:5, 3:9] = True
    mask[7, 1] = True
    segmentation, (segment_id,) = add_segmentation(scene, node)
    target = segment_writer.LogicEditTarget.create(scene, segmentation, node, segment_id, application_logic=env.app_logic)
    segment_writer.write_masks(target, {3: mask}, 0, volume)
    written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, node) > 0
    expected = np.zeros(shape, bool)
    expected[3] = mask
    assert np.array_equal(written, expected)
    assert np.array_equal(segment_writer.segment_mask(segmentation, segment_id, volume), expected)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_markups_clicks_views_and_masks_map_to_the_right_voxels(slicer_env, name):
    check_markup_geometry(slicer_env, name)


def shifted_origin(original):
    def faulty(volume_node):
        m = original(volume_node)
        m[:3, 3] += m[:3, 0]  # one voxel along i: the classic off-by-one between index and position
        return m

    return faulty


def shifted_extent(original):
    def faulty(mask_kji, image_to_world, offset_kji=(0, 0, 0)):
        k0, j0, i0 = offset_kji
        return original(mask_kji, image_to_world, (k0, j0, i0 + 1))

    return faulty


@pytest.mark.parametrize("fault", ["ijk_to_world origin off by one voxel", "labelmap extent off by one voxel"])
def test_the_geometry_check_catches_an_injected_off_by_one(slicer_env, monkeypatch, fault):
    if fault.startswith("ijk_to_world"):
        monkeypatch.setattr(volume_bridge, "ijk_to_world", shifted_origin(volume_bridge.ijk_to_world))
    else:
        monkeypatch.setattr(segment_writer, "oriented_image_from_mask",
                            shifted_extent(labelmaps.oriented_image_from_mask))
    with pytest.raises(AssertionError):
        check_markup_geometry(slicer_env, "lps-anisotropic")


def test_views_in_each_orientation_find_their_voxel_axis(slicer_env):
    node, matrix, shape = build(slicer_env, "sagittal-acquisition")  # i -> A, j -> -S, k -> -R
    volume = volume_bridge.volume_from_node(node)
    slice_node = slicer_env.slice_node("Axial")
    expected = {"Axial": 1, "Coronal": 2, "Sagittal": 0}
    for orientation, np_axis in expected.items():
        slice_node.SetOrientation(orientation)
        index = shape[np_axis] // 2 - 1
        slice_node.JumpSliceByCentering(*volume_bridge.slice_position_ras(volume, np_axis, index))
        view = volume_bridge.view_slice(slice_node, volume)
        assert (view.np_axis, view.index, view.orientation) == (np_axis, index, orientation.lower())
        view, pixels = volume_bridge.slice_under_view(node, slice_node)  # the voxels of that slice
        assert np.array_equal(pixels, np.take(slicer.util.arrayFromVolume(node), index, axis=np_axis))
    # between two slices the nearer one is shown
    slice_node.SetOrientation("Sagittal")
    between = (volume_bridge.slice_position_ras(volume, 0, 4) * 0.7 + volume_bridge.slice_position_ras(volume, 0, 5) * 0.3)
    slice_node.JumpSliceByCentering(*between)
    assert volume_bridge.view_slice(slice_node, volume).index == 4


def test_an_oblique_view_gets_a_clear_message(slicer_env):
    node, _, _ = build(slicer_env, "tilted-transformed")  # tilted 20 degrees about S
    volume = volume_bridge.volume_from_node(node)
    slice_node = slicer_env.slice_node("Axial")
    slice_node.JumpSliceByCentering(*volume_bridge.slice_position_ras(volume, 0, 3))
    assert volume_bridge.view_slice(slice_node, volume).np_axis == 0  # axial is still a voxel plane
    slice_node.SetOrientation("Coronal")
    with pytest.raises(ObliqueViewError, match="oblique.*Rotate to volume plane"):
        volume_bridge.view_slice(slice_node, volume)


def test_a_view_off_the_volume_and_points_outside_it_are_named(slicer_env):
    node, matrix, shape = build(slicer_env, "lps-anisotropic")
    volume = volume_bridge.volume_from_node(node)
    slice_node = slicer_env.slice_node("Axial")
    slice_node.JumpSliceByCentering(*voxel_world(matrix, 3, 3, shape[0] + 5))
    with pytest.raises(BridgeError, match="outside its slices"):
        volume_bridge.view_slice(slice_node, volume)
    points = slicer_env.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
    points.AddControlPoint(*voxel_world(matrix, -3, 2, 2))
    with pytest.raises(PromptError, match="'include' is outside the volume"):
        markup_bridge.prompts_from_markup_nodes(volume, 0, [points])
    empty = slicer_env.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "nothing")
    with pytest.raises(BridgeError, match="no placed points and no ROI"):
        markup_bridge.prompts_from_markup_nodes(volume, 0, [empty])


def test_a_non_linear_transform_is_refused_with_what_to_do(slicer_env):
    node, _, _ = build(slicer_env, "lps-anisotropic")
    grid = slicer_env.scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    node.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(BridgeError, match="Harden transform"):
        volume_bridge.ijk_to_world(node)
