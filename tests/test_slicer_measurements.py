"""The Slicer bridge on a real slicer-core scene: a measurements table node (one row per segment, as Segment
Statistics shows them) and the segment's provenance tag written on Apply (kept by undo/redo, saved by Slicer's own
storage node, read back by samed)."""
import math

import numpy as np
import pytest
import vtk

from slicer_scenes import LPS, ThresholdBackend, add_segmentation, add_volume, ellipsoid, slicer_env  # noqa: F401

from samed.core import io
from samed.core.measurements import measure
from samed.core.prompts import Prompt
from samed.core.provenance import PROVENANCE_TAG, provenance_of, read_segment_provenance
from SegmentAnythingMedLib import evaluation_bridge, measurements_table, segment_writer, volume_bridge
from SegmentAnythingMedLib.errors import BridgeError


@pytest.fixture
def case(slicer_env):
    # an ellipsoid of semi-axes 12 x 8 x 4 voxels, on 0.7 x 0.8 x 2 mm voxels with LPS directions
    image, truth = ellipsoid((12, 24, 30), (6, 12, 15), (4, 8, 12), inside=40, outside=-1000)
    node = add_volume(slicer_env.scene, image, (0.7, 0.8, 2.0), LPS, (1.0, 2.0, 3.0))
    node.SetAttribute("DICOM.Modality", "CT")
    volume = volume_bridge.volume_from_node(node)
    segmentation, (tumour, empty) = add_segmentation(slicer_env.scene, node, ("tumour", "empty"))
    target = segment_writer.LogicEditTarget.create(slicer_env.scene, segmentation, node, tumour,
                                                   application_logic=slicer_env.app_logic)
    return slicer_env, node, volume, segmentation, tumour, empty, target, truth


def test_measurements_table_has_one_row_per_segment_with_units(case):
    env, node, volume, segmentation, tumour, empty, target, truth = case
    segment_writer.write_masks(target, {k: truth[k] for k in range(12)}, 0, volume)
    table_node = measurements_table.measurements_table(env.scene, segmentation, node)
    assert table_node.IsA("vtkMRMLTableNode") and env.scene.IsNodePresent(table_node)
    rows = evaluation_bridge.table_rows(table_node)
    assert [r["Segment"] for r in rows] == ["tumour", "empty"]
    row = rows[0]
    expected = measure(truth, volume, "tumour", intensity_unit="HU")
    assert row["Number of voxels"] == truth.sum() == expected.voxel_count
    assert row["Volume mL"] == pytest.approx(truth.sum() * 0.7 * 0.8 * 2.0 / 1000)
    # the long axis: the largest distance between two voxel centres of the equator slice (brute force)
    from scipy.spatial.distance import pdist

    assert row["RECIST long axis mm"] == pytest.approx(pdist(np.argwhere(truth[6]) * [0.8, 0.7]).max())
    assert row["RECIST short axis mm"] == pytest.approx(14 * 0.8, abs=0.8)
    assert row["RECIST slice"] == 6
    assert row["Maximum 3D diameter mm"] == pytest.approx(expected.max_diameter_mm)
    assert (row["Mean"], row["Minimum"], row["Maximum"], row["Standard deviation"]) == (40, 40, 40, 0)
    assert row["Surface area mm2"] == pytest.approx(expected.surface_area_mm2)
    assert table_node.GetColumnUnitLabel("Volume mL") == "mL" and table_node.GetColumnUnitLabel("Mean") == "HU"
    assert "Feret" in table_node.GetColumnDescription("Maximum 3D diameter mm")
    assert rows[1]["Number of voxels"] == 0 and math.isnan(rows[1]["RECIST long axis mm"])
    # measuring again refreshes the same node (no duplicate rows)
    measurements_table.measurements_table(env.scene, segmentation, node, table_node, [tumour])
    assert [r["Segment"] for r in evaluation_bridge.table_rows(table_node)] == ["tumour"]
    with pytest.raises(BridgeError, match="no segment 'nope'"):
        measurements_table.measure_segments(segmentation, node, ["nope"])


def test_apply_tags_the_segment_with_its_provenance_and_slicer_saves_it(case, tmp_path):
    env, node, volume, segmentation, tumour, empty, target, truth = case
    prompts = {6: Prompt(box_xy=[2, 3, 28, 20]), 7: Prompt([[15, 12]], [[1, 1]])}
    prov = provenance_of(ThresholdBackend(), "k", prompts, volume)
    segment_writer.write_masks(target, {k: truth[k] for k in range(12)}, 0, volume, provenance=prov)
    assert segment_writer.segment_provenance(segmentation, tumour).as_dict() == prov.as_dict()
    assert segment_writer.segment_provenance(segmentation, empty) is None
    assert prov.tool.startswith("3D Slicer") and [p.kind for p in prov.prompts] == ["box", "points"]
    prov.check_grid(volume.shape_kji, volume.ijk_to_ras, "the volume")
    # undo takes the segment (and its tag) back as it was; redo restores both
    target.undo()
    assert segment_writer.segment_provenance(segmentation, tumour) is None
    target.redo()
    assert segment_writer.segment_provenance(segmentation, tumour).as_dict() == prov.as_dict()
    # Slicer's storage node writes the tag; samed reads it back from the file
    storage = env.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    path = tmp_path / "tagged.seg.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentation) == 1
    assert read_segment_provenance(io.read_segmentation(path), "tumour").as_dict() == prov.as_dict()
    value = vtk.reference("")
    assert segmentation.GetSegmentation().GetSegment(tumour).GetTag(PROVENANCE_TAG, value) and "|" not in str(value)
