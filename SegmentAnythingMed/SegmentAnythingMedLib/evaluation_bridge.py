"""Compare a segment with a reference (a segment of any segmentation, or a label of a labelmap volume) and put the
numbers where a Slicer user looks: a table node (Dice, IoU, NSD, HD95, both volumes), per-slice Dice in a table
and a plot chart node, and a CSV file.

Both masks are taken on the source volume's grid (resampled nearest-neighbour when a reference lives on another
grid), so spacing-aware metrics (NSD, HD95, volumes) use the source volume's voxel size.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import vtk

from samed.core.geometry import Volume, numpy_axis
from samed.core.metrics import compute_all, per_slice_dice

from .errors import BridgeError
from .labelmaps import array_from_oriented_image, geometry_image, oriented_image_from_mask, resample_into_geometry
from .segment_writer import segment_mask
from .volume_bridge import array_from_volume_node, ijk_to_world

SUMMARY_COLUMNS = ("Segment", "Reference", "Dice", "IoU", "NSD", "HD95 (mm)", "Volume (mL)", "Reference volume (mL)")
SLICE_COLUMNS = ("Slice", "Dice")


@dataclass
class Evaluation:
    segment_name: str
    reference_name: str
    metrics: Dict[str, float]
    per_slice: List[Tuple[int, float]] = field(default_factory=list)
    np_axis: int = 0
    tolerance_mm: float = 2.0

    def summary_row(self) -> Dict[str, object]:
        m = self.metrics
        return {"Segment": self.segment_name, "Reference": self.reference_name, "Dice": m["dice"],
                "IoU": m["iou"], "NSD": m["nsd"], "HD95 (mm)": m["hd95"],
                "Volume (mL)": m["pred_volume_mm3"] / 1000.0, "Reference volume (mL)": m["ref_volume_mm3"] / 1000.0}

    def describe(self) -> str:
        m = self.metrics
        hd = "inf" if math.isinf(m["hd95"]) else f"{m['hd95']:.1f} mm"
        return (f"{self.segment_name} vs {self.reference_name}: Dice {m['dice']:.3f}, IoU {m['iou']:.3f}, "
                f"NSD@{self.tolerance_mm:g}mm {m['nsd']:.3f}, HD95 {hd}")


def labelmap_mask(labelmap_node, label_value: int, volume: Volume) -> np.ndarray:
    """Voxels of ``labelmap_node`` equal to ``label_value``, on ``volume``'s grid."""
    labels = array_from_volume_node(labelmap_node, copy=False)
    matrix = ijk_to_world(labelmap_node)
    if labels.shape[:3] == volume.array.shape[:3] and np.allclose(matrix, volume.ijk_to_ras, atol=1e-6):
        return labels == label_value
    image = oriented_image_from_mask(labels == label_value, matrix)
    resampled = resample_into_geometry(image, geometry_image(volume.ijk_to_ras, volume.array.shape))
    out = np.zeros(volume.array.shape[:3], dtype=bool)
    if resampled is not None:
        x0, x1, y0, y1, z0, z1 = resampled.GetExtent()
        out[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = array_from_oriented_image(resampled) > 0
    return out


def reference_mask(reference_node, reference: object, volume: Volume) -> Tuple[np.ndarray, str]:
    """(mask, name) of a reference: a segmentation node with a segment ID, or a labelmap volume with a label value."""
    if reference_node is None:
        raise BridgeError("choose a reference: a segment of a segmentation, or a labelmap volume and its label")
    if reference_node.IsA("vtkMRMLSegmentationNode"):
        segment = reference_node.GetSegmentation().GetSegment(str(reference))
        if segment is None:
            raise BridgeError(f"segmentation {reference_node.GetName()!r} has no segment {reference!r}")
        return segment_mask(reference_node, str(reference), volume), f"{reference_node.GetName()}/{segment.GetName()}"
    if reference_node.IsA("vtkMRMLLabelMapVolumeNode") or reference_node.IsA("vtkMRMLScalarVolumeNode"):
        value = int(reference)
        mask = labelmap_mask(reference_node, value, volume)
        return mask, f"{reference_node.GetName()} = {value}"
    raise BridgeError(f"node {reference_node.GetName()!r} is neither a segmentation nor a labelmap volume")


def evaluate_masks(pred: np.ndarray, ref: np.ndarray, volume: Volume, segment_name: str, reference_name: str,
                   np_axis: Optional[int] = None, tolerance_mm: float = 2.0) -> Evaluation:
    axis = numpy_axis("axial", volume.ijk_to_ras) if np_axis is None else int(np_axis)
    metrics = compute_all(pred, ref, volume.spacing_kji, tolerance_mm)
    return Evaluation(segment_name, reference_name, metrics, per_slice_dice(pred, ref, axis), axis, tolerance_mm)


def evaluate_segment(segmentation_node, segment_id: str, reference_node, reference: object, volume: Volume,
                     np_axis: Optional[int] = None, tolerance_mm: float = 2.0) -> Evaluation:
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id) if segment_id else None
    if segment is None:
        raise BridgeError(f"choose the segment to evaluate: {segmentation_node.GetName()!r} has no segment "
                          f"{segment_id!r}")
    pred = segment_mask(segmentation_node, segment_id, volume)
    ref, ref_name = reference_mask(reference_node, reference, volume)
    return evaluate_masks(pred, ref, volume, f"{segmentation_node.GetName()}/{segment.GetName()}", ref_name,
                          np_axis, tolerance_mm)


# ------------------------------------------------------------------------------------------------ MRML output


def _ensure_columns(table, names, text_columns=("Segment", "Reference")) -> None:
    if table.GetNumberOfColumns() == len(names) and all(table.GetColumnName(i) == n for i, n in enumerate(names)):
        return
    table.Initialize()
    for name in names:
        column = vtk.vtkStringArray() if name in text_columns else vtk.vtkDoubleArray()
        column.SetName(name)
        table.AddColumn(column)


def append_summary(table_node, evaluation: Evaluation, replace_rows: bool = False) -> int:
    """Add one row for ``evaluation`` (or make it the only row); returns the row index."""
    table = table_node.GetTable()
    _ensure_columns(table, SUMMARY_COLUMNS)
    if replace_rows:
        table.SetNumberOfRows(0)
    row = table.InsertNextBlankRow()
    for name, value in evaluation.summary_row().items():
        table.SetValueByName(row, name, vtk.vtkVariant(value if isinstance(value, str) else float(value)))
    table.Modified()
    table_node.Modified()
    return row


def write_per_slice(table_node, evaluation: Evaluation) -> None:
    table = table_node.GetTable()
    _ensure_columns(table, SLICE_COLUMNS, text_columns=())
    table.SetNumberOfRows(0)
    for index, value in evaluation.per_slice:
        row = table.InsertNextBlankRow()
        table.SetValueByName(row, "Slice", vtk.vtkVariant(float(index)))
        table.SetValueByName(row, "Dice", vtk.vtkVariant(float(value)))
    table.Modified()
    table_node.Modified()


def per_slice_chart(scene, table_node, evaluation: Evaluation, chart_node=None, series_node=None):
    """A plot chart of Dice per slice (a line with markers over the table's columns); returns (chart, series)."""
    if series_node is None:
        series_node = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"Dice per slice {evaluation.segment_name}")
    series_node.SetAndObserveTableNodeID(table_node.GetID())
    series_node.SetXColumnName("Slice")
    series_node.SetYColumnName("Dice")
    series_node.SetPlotType(series_node.PlotTypeScatter)
    series_node.SetMarkerStyle(series_node.MarkerStyleCircle)
    if chart_node is None:
        chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "Dice per slice")
    if chart_node.GetPlotSeriesNodeIndexFromID(series_node.GetID()) < 0:
        chart_node.AddAndObservePlotSeriesNodeID(series_node.GetID())
    chart_node.SetTitle(f"Dice per slice: {evaluation.segment_name} vs {evaluation.reference_name}")
    chart_node.SetXAxisTitle(f"slice index (voxel axis {'kji'[evaluation.np_axis]})")
    chart_node.SetYAxisTitle("Dice")
    chart_node.SetYAxisRangeAuto(False)
    chart_node.SetYAxisRange(0.0, 1.0)
    return chart_node, series_node


def table_rows(table_node) -> List[Dict[str, object]]:
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c, name in enumerate(names):
            v = table.GetValue(r, c)
            row[name] = v.ToString() if v.IsString() else v.ToDouble()
        rows.append(row)
    return rows


def export_csv(table_node, path) -> Path:
    """Write a table node as CSV (numbers in full precision; infinite HD95 as "inf")."""
    p = Path(path)
    rows = table_rows(table_node)
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    if p.parent and not p.parent.exists():
        raise BridgeError(f"folder {p.parent} does not exist: choose another place for the CSV file")
    with p.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return p
