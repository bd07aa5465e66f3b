"""Segment measurements -> a table node, as Slicer's Segment Statistics module shows them: one row per segment,
columns with units and descriptions (``vtkMRMLTableNode.SetColumnUnitLabel`` / ``SetColumnDescription``, as
SegmentStatistics.py's ``getTable`` sets them).

The numbers come from :mod:`samed.core.measurements` (the same code as ``samed segment --report``); each segment is
read on the volume's grid through :func:`segment_writer.segment_mask` (transforms applied, other geometries
resampled).
"""
from __future__ import annotations

from typing import Iterable, List, Optional

import slicer
import vtk

from samed.core.measurements import SegmentMeasurements, intensity_unit_of, measure

from .errors import BridgeError
from .segment_writer import segment_mask
from .volume_bridge import volume_from_node

MEASURED_SEGMENTATION_ATTRIBUTE = "SegmentAnythingMed.MeasurementsOf"  # on the table node: the segmentation's ID

# (column name, SegmentMeasurements field, unit, description)
COLUMNS = (
    ("Segment", "name", "", "Segment name"),
    ("Number of voxels", "voxel_count", "voxels", "Number of voxels in the segment"),
    ("Volume mL", "volume_ml", "mL", "Segment volume (voxel count times the voxel's volume)"),
    ("Maximum 3D diameter mm", "max_diameter_mm", "mm",
     "Largest distance between two voxel centres of the segment (Feret diameter)"),
    ("RECIST long axis mm", "recist_long_axis_mm", "mm", "Longest in-plane diameter, on the slice where it is largest"),
    ("RECIST short axis mm", "recist_short_axis_mm", "mm", "Longest diameter perpendicular to the long axis"),
    ("RECIST slice", "recist_slice", "", "Slice index (along the RECIST axis) of the long axis"),
    ("Mean", "intensity_mean", "", "Mean voxel intensity in the segment"),
    ("Standard deviation", "intensity_sd", "", "Standard deviation of the voxel intensities in the segment"),
    ("Minimum", "intensity_min", "", "Minimum voxel intensity in the segment"),
    ("Maximum", "intensity_max", "", "Maximum voxel intensity in the segment"),
    ("Surface area mm2", "surface_area_mm2", "mm2",
     "Surface area (SimpleITK LabelShapeStatisticsImageFilter perimeter of the 3D label)"),
)


def measure_segments(segmentation_node, volume_node, segment_ids: Optional[Iterable[str]] = None,
                     axis: str = "axial") -> List[SegmentMeasurements]:
    """Measurements of ``segment_ids`` (default: every segment) of ``segmentation_node`` over ``volume_node``."""
    if segmentation_node is None or volume_node is None:
        raise BridgeError("choose a segmentation and a volume to measure")
    segmentation = segmentation_node.GetSegmentation()
    ids = list(segment_ids) if segment_ids is not None else [
        segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    volume = volume_from_node(volume_node)
    unit = intensity_unit_of(volume)
    out = []
    for segment_id in ids:
        segment = segmentation.GetSegment(segment_id)
        if segment is None:
            raise BridgeError(f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}")
        mask = segment_mask(segmentation_node, segment_id, volume)
        out.append(measure(mask, volume, segment.GetName(), axis=axis, intensity_unit=unit))
    return out


def fill_table(table_node, measurements: List[SegmentMeasurements]):
    """Replace ``table_node``'s contents with one row per segment; returns the node."""
    table = table_node.GetTable()
    table.Initialize()
    units = {m.intensity_unit for m in measurements if m.intensity_unit}
    intensity_unit = units.pop() if len(units) == 1 else ""
    for name, attr, unit, description in COLUMNS:
        column = vtk.vtkStringArray() if attr == "name" else vtk.vtkDoubleArray()
        column.SetName(name)
        table.AddColumn(column)
        if attr.startswith("intensity_") and intensity_unit:
            unit = intensity_unit
        table_node.SetColumnUnitLabel(name, unit)
        table_node.SetColumnDescription(name, description)
    for m in measurements:
        row = table.InsertNextBlankRow()
        for name, attr, _, _ in COLUMNS:
            value = getattr(m, attr)
            if attr == "name":
                table.SetValueByName(row, name, vtk.vtkVariant(str(value)))
            else:  # a value that does not exist (an empty segment) is NaN, as Segment Statistics leaves it blank
                table.SetValueByName(row, name, vtk.vtkVariant(float("nan") if value is None else float(value)))
    table.Modified()
    table_node.Modified()
    return table_node


def measurements_table(scene, segmentation_node, volume_node, table_node=None,
                       segment_ids: Optional[Iterable[str]] = None, axis: str = "axial"):
    """Measure the segments and show them in ``table_node`` (a new "<segmentation> measurements" table node when
    None); returns the table node."""
    rows = measure_segments(segmentation_node, volume_node, segment_ids, axis)
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{segmentation_node.GetName()} measurements")
    return fill_table(table_node, rows)


def measurements_table_of(scene, segmentation_node):
    """The measurements table made earlier for ``segmentation_node`` (found by its attribute), or None."""
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLTableNode")
        if node.GetAttribute(MEASURED_SEGMENTATION_ATTRIBUTE) == segmentation_node.GetID():
            return node
    return None


def update_measurements_table(scene, segmentation_node, volume_node, table_node=None):
    """Measure every segment into ``table_node``, else the segmentation's measurements table made earlier, else a new
    one (so that measuring again after an edit refreshes the same table); returns the table node."""
    if segmentation_node is None:
        raise BridgeError("choose the segmentation whose segments to measure")
    if table_node is None or table_node.GetScene() is not scene:
        table_node = measurements_table_of(scene, segmentation_node)
    table_node = measurements_table(scene, segmentation_node, volume_node, table_node)
    table_node.SetAttribute(MEASURED_SEGMENTATION_ATTRIBUTE, segmentation_node.GetID())
    return table_node


def show_table(table_node) -> None:
    """Show ``table_node`` as Segment Statistics shows its table (Modules/Scripted/SegmentStatistics/
    SegmentStatistics.py, ``showTable``): switch to the layout with a table view that the Tables module's logic picks
    for the current one, select the table and propagate the selection to the table views. Without a main window
    (``slicer.app.layoutManager()`` is None) the layout stays as it is."""
    layout_manager = slicer.app.layoutManager()
    if layout_manager is not None:
        layout_manager.setLayout(slicer.modules.tables.logic().GetLayoutWithTable(layout_manager.layout))
    application_logic = slicer.app.applicationLogic()
    application_logic.GetSelectionNode().SetActiveTableID(table_node.GetID())
    application_logic.PropagateTableSelection()
