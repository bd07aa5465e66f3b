"""Slicer segmentation files (samed.core.segmentation_file through samed.core.io): writing .seg.nrrd and what
3D Slicer's own reader (slicer-core) makes of the files samed writes and reads."""

import numpy as np
import pytest

from samed.core import io
from test_io import CT_PATH, SEG_PATH, ct_masks  # shared sample paths and masks (not tests)


# ----------------------------------------------------------------------------------------------- writing .seg.nrrd

def test_write_segmentation_round_trip_with_overlap(tmp_path):
    ct, box, ball = ct_masks()
    path = io.write_segmentation(tmp_path / "out.seg.nrrd", [("tumour", box, (1.0, 0.0, 0.0)), ("oedema", ball)], ct)
    seg = io.read_segmentation(path)
    assert seg.names == ["tumour", "oedema"]
    assert seg.layers.shape[0] == 2  # overlap -> second layer, as Slicer stores it
    np.testing.assert_array_equal(seg.segment_mask("tumour"), box)
    np.testing.assert_array_equal(seg.segment_mask("oedema"), ball)
    np.testing.assert_allclose(seg.ijk_to_ras, ct.ijk_to_ras)
    assert seg.segments[0].color == (1.0, 0.0, 0.0)
    # from a dict, no overlap -> one shared layer
    path2 = io.write_segmentation(tmp_path / "two.seg.nrrd", {"a": box, "b": ~box & ~ball}, ct)
    assert io.read_segmentation(path2).layers.shape[0] == 1


def test_write_segmentation_refuses_to_overwrite(tmp_path):
    ct, box, _ = ct_masks()
    path = io.write_segmentation(tmp_path / "out.seg.nrrd", {"a": box}, ct)
    with pytest.raises(FileExistsError, match="out.seg.nrrd.*overwrite=True"):
        io.write_segmentation(path, {"b": box}, ct)
    io.write_segmentation(path, {"b": box}, ct, overwrite=True)
    assert io.read_segmentation(path).names == ["b"]
    with pytest.raises(ValueError, match="shape"):
        io.write_segmentation(tmp_path / "x.seg.nrrd", {"a": box[:-1]}, ct)
    with pytest.raises(ValueError, match=r"\.seg\.nrrd"):
        io.write_segmentation(tmp_path / "x.nrrd", {"a": box}, ct)


def test_segmentation_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.seg.nrrd"):
        io.read_segmentation(tmp_path / "none.seg.nrrd")
    (tmp_path / "bad.seg.nrrd").write_bytes(b"NRRD0004\nsizes: what\n\n")
    with pytest.raises(ValueError, match="bad.seg.nrrd"):
        io.read_segmentation(tmp_path / "bad.seg.nrrd")


def slicer_read_segmentation(path):
    """(scene, segmentation node) read from ``path`` by slicer-core's own storage node."""
    import slicer
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    return scene, node


def slicer_segment_array(segmentation_node, segment_id):
    """(bool [k, j, i] mask, extent, IJK->RAS) of a segment as slicer-core holds it."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation("Binary labelmap")  # vtkOrientedImageData, possibly shared by segments
    voxels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(tuple(reversed(image.GetDimensions())))
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    ijk_to_ras_matrix = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    return voxels == segment.GetLabelValue(), image.GetExtent(), ijk_to_ras_matrix


def test_slicer_reads_written_segmentation(tmp_path):
    ct, box, ball = ct_masks()
    path = io.write_segmentation(tmp_path / "out.seg.nrrd",
                                 [("tumour", box, (1.0, 0.0, 0.0)), ("oedema", ball, (0.2, 0.4, 0.9))], ct)
    scene, node = slicer_read_segmentation(path)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    for n, (name, mask, color) in enumerate([("tumour", box, (1, 0, 0)), ("oedema", ball, (0.2, 0.4, 0.9))]):
        segment_id = segmentation.GetNthSegmentID(n)
        segment = segmentation.GetSegment(segment_id)
        assert segment.GetName() == name
        np.testing.assert_allclose(segment.GetColor(), color, atol=1e-6)
        voxels, extent, matrix = slicer_segment_array(node, segment_id)
        assert extent == (0, 127, 0, 127, 0, 33)
        np.testing.assert_allclose(matrix, ct.ijk_to_ras, atol=1e-6)
        assert voxels.sum() == mask.sum()
        np.testing.assert_array_equal(voxels, mask)
    reference = segmentation.GetConversionParameter("Reference image geometry")
    assert reference.endswith("0;127;0;127;0;33;")


def test_slicer_reads_ctchest_segmentation_like_samed():
    scene, node = slicer_read_segmentation(SEG_PATH)
    seg = io.read_segmentation(SEG_PATH)
    voxels, extent, matrix = slicer_segment_array(node, "Segment_5")
    np.testing.assert_allclose(matrix, seg.ijk_to_ras, atol=1e-5)
    i0, j0, k0 = extent[0], extent[2], extent[4]  # Slicer crops to the segment extent stored in the file
    ours = seg.segment_mask("Segment_5")[k0:k0 + voxels.shape[0], j0:j0 + voxels.shape[1], i0:i0 + voxels.shape[2]]
    np.testing.assert_array_equal(voxels, ours)



def test_slicer_made_cropped_segmentation_lands_on_the_ct(tmp_path):
    import slicer
    import vtk
    ct = io.read_volume(CT_PATH)
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    image = slicer.vtkOrientedImageData()
    image.SetExtent(10, 20, 5, 15, 2, 6)  # i, j, k voxel ranges of the CT
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(1)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, ct.ijk_to_ras[r, c])
    image.SetImageToWorldMatrix(matrix)
    segment = slicer.vtkSegment()
    segment.SetName("cube")
    segment.AddRepresentation("Binary labelmap", image)
    node.GetSegmentation().AddSegment(segment)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "cropped.seg.nrrd"))
    storage.SetCropToMinimumExtent(True)
    assert storage.WriteData(node) == 1

    mask, grid, _ = io.reference_mask(tmp_path / "cropped.seg.nrrd", "cube")
    assert grid.shape_kji == (5, 11, 11)  # Slicer cropped the file to the segment
    expected = np.zeros(ct.shape_kji, bool)
    expected[2:7, 5:16, 10:21] = True
    np.testing.assert_array_equal(io.resample_to(grid, ct).array, expected)
