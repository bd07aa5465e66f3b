"""samed.core.markups: Slicer point lists and ROIs (.mrk.json, .fcsv), in RAS."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
try:
    import samed  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))

from samed.core import markups as mk  # noqa: E402


def rotation_s(degrees):
    a = np.radians(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


INCLUDE = mk.PointList("include points", [[1.5, -2.0, 3.0], [-40.0, 25.5, -100.25]])
EXCLUDE = mk.PointList("Exclude", [[7.0, 8.0, 9.0]])
BOX = mk.Roi("tumour box", [10.0, -20.0, 30.0], [4.0, 6.0, 8.0], rotation_s(30))


def test_json_round_trip_in_ras_with_lps_on_disk(tmp_path):
    path = mk.write_markups_json(tmp_path / "prompts.mrk.json", [INCLUDE, EXCLUDE], [BOX])
    document = json.loads(path.read_text())
    assert [m["coordinateSystem"] for m in document["markups"]] == ["LPS"] * 3
    assert document["markups"][0]["controlPoints"][0]["position"] == [-1.5, 2.0, 3.0]
    assert "markups-schema" in document["@schema"]

    back = mk.read_markups(path)
    assert [p.name for p in back.point_lists] == ["include points", "Exclude"]
    assert [p.exclude for p in back.point_lists] == [False, True]
    np.testing.assert_allclose(back.point_lists[0].points_ras, INCLUDE.points_ras)
    np.testing.assert_allclose(back.exclude_points_ras(), [[7.0, 8.0, 9.0]])
    np.testing.assert_allclose(back.include_points_ras(), INCLUDE.points_ras)
    roi = back.rois[0]
    assert roi.name == "tumour box"
    np.testing.assert_allclose(roi.center_ras, BOX.center_ras)
    np.testing.assert_allclose(roi.size_mm, BOX.size_mm)
    np.testing.assert_allclose(roi.orientation, BOX.orientation, atol=1e-12)
    np.testing.assert_allclose(roi.corners_ras(), BOX.corners_ras(), atol=1e-12)


def test_ras_coordinate_system_is_read_without_flip(tmp_path):
    orientation = rotation_s(90)
    document = {"@schema": mk.MARKUPS_SCHEMA, "markups": [
        {"type": "Fiducial", "coordinateSystem": "RAS",
         "controlPoints": [{"position": [1, 2, 3]}, {"position": [9, 9, 9], "positionStatus": "missing"}]},
        {"type": "ROI", "coordinateSystem": "RAS", "roiType": "Box", "center": [5, 6, 7], "size": [2, 4, 6],
         "orientation": orientation.ravel().tolist(), "controlPoints": []}]}
    path = tmp_path / "ras.mrk.json"
    path.write_text(json.dumps(document))
    m = mk.read_markups(path)
    assert [p.name for p in m.point_lists] == ["ras_1"]  # no "name": from the file name, numbered
    np.testing.assert_allclose(m.point_lists[0].points_ras, [[1, 2, 3]])  # the missing point is skipped
    np.testing.assert_allclose(m.rois[0].center_ras, [5, 6, 7])
    np.testing.assert_allclose(m.rois[0].orientation, orientation)
    lo, hi = m.rois[0].bounds_ras()  # rotated 90 deg about S: the 4 mm edge lies along A, the 2 mm edge along R
    np.testing.assert_allclose(lo, [3, 5, 4], atol=1e-12)
    np.testing.assert_allclose(hi, [7, 7, 10], atol=1e-12)


def test_roi_corners_follow_orientation():
    roi = mk.Roi("r", [10, 0, 0], [2, 4, 6], rotation_s(45))
    corners = roi.corners_ras()
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners.mean(axis=0), [10, 0, 0], atol=1e-12)
    axis_x, axis_y = rotation_s(45)[:, 0], rotation_s(45)[:, 1]
    np.testing.assert_allclose(corners[1] - corners[0], 2 * axis_x, atol=1e-12)  # bit 0: +x edge
    np.testing.assert_allclose(corners[2] - corners[0], 4 * axis_y, atol=1e-12)  # bit 1: +y edge
    np.testing.assert_allclose(corners[4] - corners[0], [0, 0, 6], atol=1e-12)  # bit 2: +z edge
    np.testing.assert_allclose(np.ptp(corners[:, 2]), 6)
    identity = mk.Roi("i", [0, 0, 0], [2, 4, 6])
    lo, hi = identity.bounds_ras()
    np.testing.assert_allclose(lo, [-1, -2, -3])
    np.testing.assert_allclose(hi, [1, 2, 3])


@pytest.mark.parametrize("name, exclude", [("F", False), ("Exclude", True), ("my NEGATIVE clicks", True),
                                           ("excluded-region", True), ("include", False), ("neg", False)])
def test_exclude_follows_the_name(name, exclude):
    assert mk.PointList(name, np.zeros((0, 3))).exclude is exclude


def test_exclude_name_from_file_name(tmp_path):
    document = {"markups": [{"type": "Fiducial", "coordinateSystem": "LPS",
                             "controlPoints": [{"position": [1, 2, 3]}]}]}
    (tmp_path / "Negative.mrk.json").write_text(json.dumps(document))
    m = mk.read_markups(tmp_path / "Negative.mrk.json")
    assert m.point_lists[0].name == "Negative" and m.point_lists[0].exclude
    np.testing.assert_allclose(m.point_lists[0].points_ras, [[-1, -2, 3]])


def test_exclude_flag_survives_writing(tmp_path):
    flagged = mk.PointList("clicks", [[1, 2, 3]], exclude=True)
    back = mk.read_markups(mk.write_markups_json(tmp_path / "a.mrk.json", [flagged])).point_lists[0]
    assert back.exclude and back.name == "clicks (exclude)"
    with pytest.raises(ValueError, match="rename"):
        mk.write_markups_json(tmp_path / "b.mrk.json", [mk.PointList("exclude", [[1, 2, 3]], exclude=False)])


def test_fcsv_point_list():
    import slicerio
    m = mk.read_markups(slicerio.get_testdata_file("F_1.fcsv"))  # LPS, extra trailing columns
    points = m.point_lists[0]
    assert points.name == "F_1" and not points.exclude and len(points.points_ras) == 12
    np.testing.assert_allclose(points.points_ras[0], [6.282824184397157, 51.06216973995272, -10.2143])
    assert points.labels[3] == "Different name"


def test_old_fcsv_variants(tmp_path):
    (tmp_path / "old.fcsv").write_text("# Markups fiducial file version = 4.6\n# CoordinateSystem = 0\n"
                                       "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
                                       "vtkMRMLMarkupsFiducialNode_0,1,2,3,0,0,0,1,1,1,0,\"a, b\",,\n")
    np.testing.assert_allclose(mk.read_markups(tmp_path / "old.fcsv").point_lists[0].points_ras, [[1, 2, 3]])
    assert mk.read_markups(tmp_path / "old.fcsv").point_lists[0].labels == ["a, b"]
    (tmp_path / "bare exclude.fcsv").write_text("1,4,5,6,0,0,0,1,1,1,0,F-1,,\n")  # no header: RAS
    bare = mk.read_markups(tmp_path / "bare exclude.fcsv").point_lists[0]
    assert bare.exclude
    np.testing.assert_allclose(bare.points_ras, [[4, 5, 6]])
    (tmp_path / "lps.fcsv").write_text("# CoordinateSystem = 1\n1,4,5,6\n")
    np.testing.assert_allclose(mk.read_markups(tmp_path / "lps.fcsv").point_lists[0].points_ras, [[-4, -5, 6]])
    (tmp_path / "bad.fcsv").write_text("# columns = id,x,y,z\n1,a,b,c\n")
    with pytest.raises(ValueError, match="bad.fcsv"):
        mk.read_markups(tmp_path / "bad.fcsv")


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.mrk.json"):
        mk.read_markups(tmp_path / "none.mrk.json")
    (tmp_path / "broken.mrk.json").write_text("{\"markups\": [")
    with pytest.raises(ValueError, match="broken.mrk.json"):
        mk.read_markups(tmp_path / "broken.mrk.json")
    (tmp_path / "other.mrk.json").write_text(json.dumps({"markups": [{"type": "Banana", "controlPoints": []}]}))
    with pytest.raises(ValueError, match=r"other.mrk.json.*Banana"):
        mk.read_markups(tmp_path / "other.mrk.json")
    (tmp_path / "nolist.json").write_text(json.dumps({"points": []}))
    with pytest.raises(ValueError, match="nolist.json"):
        mk.read_markups(tmp_path / "nolist.json")
    (tmp_path / "points.mrk.json").write_text(json.dumps({"markups": [{"type": "Fiducial", "controlPoints": [3]}]}))
    with pytest.raises(ValueError, match="points.mrk.json"):
        mk.read_markups(tmp_path / "points.mrk.json")
    (tmp_path / "roi.mrk.json").write_text(json.dumps({"markups": [{"type": "ROI", "center": [0, 0, 0]}]}))
    with pytest.raises(ValueError, match="roi.mrk.json.*size"):
        mk.read_markups(tmp_path / "roi.mrk.json")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match=r"\.mrk\.json"):
        mk.read_markups(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="nothing to write"):
        mk.write_markups_json(tmp_path / "empty.mrk.json")


def test_other_slicer_markups_are_skipped(tmp_path):
    document = {"markups": [{"type": "Line", "name": "ruler", "controlPoints": [{"position": [0, 0, 0]}]},
                            {"type": "Fiducial", "name": "F", "controlPoints": [{"position": [0, 0, 1]}]}]}
    (tmp_path / "mixed.mrk.json").write_text(json.dumps(document))
    m = mk.read_markups(tmp_path / "mixed.mrk.json")
    assert m.skipped == [("Line", "ruler")] and len(m.point_lists) == 1


# ----------------------------------------------------------------------------------------------- with slicer-core

@pytest.fixture(scope="module")
def slicer():
    return pytest.importorskip("slicer")


def matrix_array(vtk_matrix, n=4):
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(n)] for r in range(n)])


def test_slicer_loads_written_file(tmp_path, slicer):
    path = mk.write_markups_json(tmp_path / "prompts.mrk.json", [INCLUDE, EXCLUDE], [BOX])
    scene = slicer.vtkMRMLScene()
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    types = []
    storage.GetMarkupsTypesInFile(str(path), types)
    assert types == ["Fiducial", "Fiducial", "ROI"]
    # as Slicer's markups logic does: a storage node of the markup's type reads markup number n of the file
    roi_storage = slicer.vtkMRMLMarkupsROIJsonStorageNode()
    scene.AddNode(roi_storage)
    nodes = [(roi_storage if kind == "ROI" else storage).AddNewMarkupsNodeFromFile(str(path), "", n)
             for n, kind in enumerate(types)]
    assert [n.GetClassName() for n in nodes] == ["vtkMRMLMarkupsFiducialNode"] * 2 + ["vtkMRMLMarkupsROINode"]
    assert [n.GetName() for n in nodes] == ["include points", "Exclude", "tumour box"]
    for node, expected in zip(nodes[:2], (INCLUDE, EXCLUDE)):
        positions = np.array([node.GetNthControlPointPosition(i) for i in range(node.GetNumberOfControlPoints())])
        np.testing.assert_allclose(positions, expected.points_ras)
    roi = nodes[2]
    np.testing.assert_allclose(roi.GetCenter(), BOX.center_ras)
    np.testing.assert_allclose(roi.GetSize(), BOX.size_mm)
    np.testing.assert_allclose(matrix_array(roi.GetObjectToNodeMatrix())[:3, :3], BOX.orientation, atol=1e-9)
    bounds = [0.0] * 6
    roi.GetRASBounds(bounds)
    lo, hi = BOX.bounds_ras()
    np.testing.assert_allclose(bounds[0::2], lo, atol=1e-9)
    np.testing.assert_allclose(bounds[1::2], hi, atol=1e-9)

    # one node read straight into an existing node, as Slicer's "Add data" does for a single-markup file
    single = mk.write_markups_json(tmp_path / "single.mrk.json", [INCLUDE])
    node = slicer.vtkMRMLMarkupsFiducialNode()
    scene.AddNode(node)
    storage.SetFileName(str(single))
    assert storage.ReadData(node) == 1
    assert node.GetNumberOfControlPoints() == 2


def test_reads_what_slicer_writes(tmp_path, slicer):
    import vtk
    scene = slicer.vtkMRMLScene()
    points = slicer.vtkMRMLMarkupsFiducialNode()
    points.SetName("negative clicks")
    scene.AddNode(points)
    for p in INCLUDE.points_ras:
        points.AddControlPoint(vtk.vtkVector3d(*p), "")
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "negative clicks.mrk.json"))  # Slicer names files after their node
    assert storage.WriteData(points) == 1

    roi = slicer.vtkMRMLMarkupsROINode()
    roi.SetName("box")
    scene.AddNode(roi)
    object_to_node = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            object_to_node.SetElement(r, c, BOX.orientation[r, c])
    roi.GetObjectToNodeMatrix().DeepCopy(object_to_node)
    roi.SetCenter(*BOX.center_ras)
    roi.SetSize(*BOX.size_mm)
    roi_storage = slicer.vtkMRMLMarkupsROIJsonStorageNode()
    scene.AddNode(roi_storage)
    roi_storage.SetFileName(str(tmp_path / "slicer_roi.mrk.json"))
    assert roi_storage.WriteData(roi) == 1

    read_points = mk.read_markups(tmp_path / "negative clicks.mrk.json").point_lists[0]
    np.testing.assert_allclose(read_points.points_ras, INCLUDE.points_ras)
    assert read_points.exclude and read_points.name == "negative clicks"  # Slicer writes no "name": file name
    read_roi = mk.read_markups(tmp_path / "slicer_roi.mrk.json").rois[0]
    np.testing.assert_allclose(read_roi.center_ras, BOX.center_ras, atol=1e-9)
    np.testing.assert_allclose(read_roi.size_mm, BOX.size_mm)
    np.testing.assert_allclose(read_roi.orientation, BOX.orientation, atol=1e-9)


def test_fcsv_agrees_with_slicer(slicer):
    import slicerio
    path = slicerio.get_testdata_file("F_1.fcsv")
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLMarkupsFiducialNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLMarkupsFiducialStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(path)
    assert storage.ReadData(node) == 1
    theirs = np.array([node.GetNthControlPointPosition(i) for i in range(node.GetNumberOfControlPoints())])
    np.testing.assert_allclose(mk.read_markups(path).point_lists[0].points_ras, theirs)
