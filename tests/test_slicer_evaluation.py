"""Evaluation through the bridge: a segment against a reference segment or a labelmap volume (also on another
grid) -> metrics table node, per-slice Dice table + plot chart/series nodes, CSV export."""
import csv
import math

import numpy as np
import pytest
import slicer
import slicer.util
import vtk

from slicer_scenes import LPS, add_segmentation, add_volume, ellipsoid, slicer_env  # noqa: F401

from samed.core.metrics import compute_all, per_slice_dice
from SegmentAnythingMedLib import evaluation_bridge, segment_writer, volume_bridge
from SegmentAnythingMedLib.errors import BridgeError


@pytest.fixture
def case(slicer_env):
    image, truth = ellipsoid((12, 24, 26), (6, 12, 13), (4, 8, 9))
    node = add_volume(slicer_env.scene, image, (0.7, 0.8, 2.0), LPS, (1.0, 2.0, 3.0))
    volume = volume_bridge.volume_from_node(node)
    pred = truth.copy()
    pred[:, :, :10] = False  # a cut-off prediction
    pred[2, 5:8, 5:8] = True  # and a stray blob
    segmentation, (result, reference) = add_segmentation(slicer_env.scene, node, ("result", "reference"))
    segmentation.GetDisplayNode().SetOpacity(0.5)
    target = segment_writer.LogicEditTarget.create(slicer_env.scene, segmentation, node, result,
                                                   application_logic=slicer_env.app_logic)
    target.segment_editor_node().SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)
    segment_writer.write_masks(target, {k: pred[k] for k in range(12)}, 0, volume)
    target.segment_editor_node().SetSelectedSegmentID(reference)
    segment_writer.write_masks(target, {k: truth[k] for k in range(12)}, 0, volume)
    return slicer_env, node, volume, segmentation, result, reference, pred, truth


def test_metrics_against_a_reference_segment_fill_table_and_chart(case):
    env, node, volume, segmentation, result, reference, pred, truth = case
    evaluation = evaluation_bridge.evaluate_segment(segmentation, result, segmentation, reference, volume)
    expected = compute_all(pred, truth, volume.spacing_kji, 2.0)
    for key in ("dice", "iou", "nsd", "hd95", "pred_volume_mm3", "ref_volume_mm3"):
        assert evaluation.metrics[key] == pytest.approx(expected[key])
    assert evaluation.per_slice == per_slice_dice(pred, truth, 0)
    table = env.scene.AddNewNodeByClass("vtkMRMLTableNode", "evaluation")
    evaluation_bridge.append_summary(table, evaluation)
    rows = evaluation_bridge.table_rows(table)
    assert list(rows[0]) == list(evaluation_bridge.SUMMARY_COLUMNS)
    assert rows[0]["Segment"] == "Segmentation/result" and rows[0]["Reference"] == "Segmentation/reference"
    assert rows[0]["Dice"] == pytest.approx(expected["dice"])
    assert rows[0]["Volume (mL)"] == pytest.approx(expected["pred_volume_mm3"] / 1000)
    evaluation_bridge.append_summary(table, evaluation)  # a second evaluation adds a row
    assert table.GetNumberOfRows() == 2
    slices = env.scene.AddNewNodeByClass("vtkMRMLTableNode", "per slice")
    evaluation_bridge.write_per_slice(slices, evaluation)
    chart, series = evaluation_bridge.per_slice_chart(env.scene, slices, evaluation)
    assert slices.GetNumberOfRows() == len(evaluation.per_slice)
    assert series.GetTableNodeID() == slices.GetID() and series.GetYColumnName() == "Dice"
    assert chart.GetNumberOfPlotSeriesNodes() == 1 and chart.GetPlotSeriesNode() is series
    assert tuple(chart.GetYAxisRange()) == (0.0, 1.0)
    dice_column = slicer.util.arrayFromTableColumn(slices, "Dice")
    assert np.allclose(dice_column, [d for _, d in evaluation.per_slice])


def test_a_labelmap_reference_on_another_grid_and_csv_export(case, tmp_path):
    env, node, volume, segmentation, result, reference, pred, truth = case
    same_grid = add_volume(env.scene, truth.astype(np.int16) * 3, (0.7, 0.8, 2.0), LPS, (1.0, 2.0, 3.0),
                           name="labels", labelmap=True)
    evaluation = evaluation_bridge.evaluate_segment(segmentation, result, same_grid, 3, volume)
    assert evaluation.reference_name == "labels = 3"
    assert evaluation.metrics["dice"] == pytest.approx(compute_all(pred, truth, volume.spacing_kji)["dice"])
    # the same labels, stored on a grid shifted by exactly two voxels along i, with the origin adjusted
    shifted = np.zeros((12, 24, 28), np.int16)
    shifted[:, :, 2:] = truth * 3
    other = add_volume(env.scene, shifted, (0.7, 0.8, 2.0), LPS,
                       tuple(volume.ijk_to_ras[:3, 3] - 2 * volume.ijk_to_ras[:3, 0]), name="labels shifted",
                       labelmap=True)
    moved = evaluation_bridge.evaluate_segment(segmentation, result, other, 3, volume)
    assert moved.metrics["dice"] == pytest.approx(evaluation.metrics["dice"])
    table = env.scene.AddNewNodeByClass("vtkMRMLTableNode", "evaluation")
    evaluation_bridge.append_summary(table, moved)
    empty = np.zeros_like(truth)
    nothing = evaluation_bridge.evaluate_masks(pred, empty, volume, "result", "empty")
    evaluation_bridge.append_summary(table, nothing)
    path = evaluation_bridge.export_csv(table, tmp_path / "evaluation.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["Reference"] == "labels shifted = 3"
    assert float(rows[0]["Dice"]) == pytest.approx(moved.metrics["dice"])
    assert rows[1]["HD95 (mm)"] == "inf" and math.isinf(float(rows[1]["HD95 (mm)"]))
    assert "Dice" in nothing.describe()


def test_wrong_choices_are_named(case):
    env, node, volume, segmentation, result, reference, pred, truth = case
    with pytest.raises(BridgeError, match="no segment 'nope'"):
        evaluation_bridge.evaluate_segment(segmentation, result, segmentation, "nope", volume)
    with pytest.raises(BridgeError, match="choose the segment"):
        evaluation_bridge.evaluate_segment(segmentation, "", segmentation, reference, volume)
    with pytest.raises(BridgeError, match="choose a reference"):
        evaluation_bridge.evaluate_segment(segmentation, result, None, reference, volume)


def test_a_closed_surface_reference_is_converted_not_read_as_empty(case):
    """Issue 10, defect 6: GetBinaryLabelmapRepresentation returns False for a segmentation whose source
    representation is a closed surface (e.g. imported from STL/OBJ; planar contours, from SlicerRT, likewise) and converts nothing
    (vtkMRMLSegmentationNode::GetBinaryLabelmapRepresentation, Libs/MRML/Core); the reference read as empty gave
    Dice 0. Slicer's Segment Statistics converts first (CreateBinaryLabelmapRepresentation)."""
    env, node, volume, segmentation, result, reference, pred, truth = case
    segmentation.CreateClosedSurfaceRepresentation()
    surface = vtk.vtkPolyData()
    assert segmentation.GetClosedSurfaceRepresentation(reference, surface) and surface.GetNumberOfPoints() > 0
    imported = env.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "imported surface")
    closed = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    imported.GetSegmentation().SetSourceRepresentationName(closed)
    segment = slicer.vtkSegment()
    segment.SetName("reference surface")
    segment.AddRepresentation(closed, surface)
    imported.GetSegmentation().AddSegment(segment, "surface")
    assert not imported.GetSegmentation().ContainsRepresentation(
        slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName())
    mask = segment_writer.segment_mask(imported, "surface", volume)
    dice_with_truth = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice_with_truth > 0.85, dice_with_truth
    evaluation = evaluation_bridge.evaluate_segment(segmentation, result, imported, "surface", volume)
    direct = evaluation_bridge.evaluate_segment(segmentation, result, segmentation, reference, volume)
    assert abs(evaluation.metrics["dice"] - direct.metrics["dice"]) < 0.05
