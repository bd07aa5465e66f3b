"""The module panel's "Measure segments" button (issue 15, Measurements: a Slicer table like Segment Statistics'), on
a real slicer-core scene with the module's widget (qt faked): one row per segment of the chosen segmentation over the
chosen volume, the same table node refreshed when measured again, and the table shown as Segment Statistics shows
its own (a layout with a table view, the table selected there)."""
import pytest
import slicer

import slicer_fakes
from slicer_scenes import LPS, add_segmentation, add_volume, ellipsoid, provider, slicer_env  # noqa: F401

from samed.core.measurements import measure
from SegmentAnythingMedLib import evaluation_bridge, segment_writer, volume_bridge


class LayoutManager:
    """``slicer.app.layoutManager()`` as far as showing a table needs it, per Slicer's
    Libs/MRML/Widgets/qMRMLLayoutManager.cxx (main): ``layout`` is the layout node's view arrangement
    (SlicerLayoutNone without one); ``setLayout`` does nothing for the current layout, replaces a layout that has no
    description by the conventional one, clears maximized views and sets the layout node's view arrangement (the
    real vtkMRMLLayoutLogic then creates the views the layout names)."""

    def __init__(self, layout_logic):
        self.logic = layout_logic  # qMRMLLayoutManager keeps its vtkMRMLLayoutLogic (MRMLLayoutLogic)
        self.node = layout_logic.GetLayoutNode()

    @property
    def layout(self):
        return self.node.GetViewArrangement() if self.node else slicer.vtkMRMLLayoutNode.SlicerLayoutNone

    def setLayout(self, layout):
        if self.layout == layout or not self.node:
            return
        if not self.node.IsLayoutDescription(layout):
            layout = slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView
        self.node.RemoveAllMaximizedViewNodes()
        self.node.SetViewArrangement(layout)


@pytest.fixture
def panel(slicer_env, provider, monkeypatch):
    import SegmentAnythingMed as module

    slicer_fakes.install()
    image, truth = ellipsoid((12, 24, 30), (6, 12, 15), (4, 8, 12), inside=40, outside=-1000)
    node = add_volume(slicer_env.scene, image, (0.7, 0.8, 2.0), LPS, (1.0, 2.0, 3.0), name="CT")
    segmentation, (ball, empty) = add_segmentation(slicer_env.scene, node, ("ball", "nothing"), name="Result")
    volume = volume_bridge.volume_from_node(node)
    target = segment_writer.LogicEditTarget.create(slicer_env.scene, segmentation, node, ball,
                                                   application_logic=slicer_env.app_logic)
    segment_writer.write_masks(target, {k: truth[k] for k in range(12)}, 0, volume)
    layout_logic = slicer.vtkMRMLLayoutLogic()  # what Slicer's layout manager keeps the views with
    layout_logic.SetMRMLScene(slicer_env.scene)
    layout_node = layout_logic.GetLayoutNode()
    layout_node.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    manager = LayoutManager(layout_logic)
    monkeypatch.setattr(slicer_env.app, "layoutManager", lambda: manager)
    widget = module.SegmentAnythingMedWidget()
    widget.setup()
    widget.refreshButton.click()
    return widget, slicer_env, segmentation, node, volume, truth, layout_node, target


def test_measure_segments_fills_a_table_and_shows_it_in_a_table_layout(panel):
    widget, env, segmentation, node, volume, truth, layout_node, target = panel
    assert widget.measureButton.text == "Measure segments"
    widget.segmentationCombo.currentIndex = widget.segmentationCombo.findData(segmentation.GetID())
    widget.gridCombo.currentIndex = widget.gridCombo.findData(node.GetID())
    widget.measureButton.click()
    table = widget.logic.measurementsTableNode
    assert table is not None and table.GetName() == "Result measurements"
    assert "Measured 2 segments of 'Result' on 'CT'" in widget.evaluationLabel.text
    rows = evaluation_bridge.table_rows(table)
    assert [r["Segment"] for r in rows] == ["ball", "nothing"]
    expected = measure(truth, volume, "ball")
    assert rows[0]["Number of voxels"] == truth.sum() and rows[0]["Volume mL"] == pytest.approx(expected.volume_ml)
    assert rows[1]["Number of voxels"] == 0
    # shown as Segment Statistics shows its table: a layout with a table view, the table selected in it
    tables = env.logics["tables"]
    four_up = slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    assert layout_node.GetViewArrangement() == tables.GetLayoutWithTable(four_up) != four_up
    assert env.app_logic.GetSelectionNode().GetActiveTableID() == table.GetID()
    views = [env.scene.GetNthNodeByClass(i, "vtkMRMLTableViewNode")
             for i in range(env.scene.GetNumberOfNodesByClass("vtkMRMLTableViewNode"))]
    assert views and all(v.GetTableNodeID() == table.GetID() for v in views)
    # measured again after an edit: the same node, refreshed, no second table
    target.undo()
    widget.measureButton.click()
    assert widget.logic.measurementsTableNode is table
    assert env.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    assert [r["Number of voxels"] for r in evaluation_bridge.table_rows(table)] == [0, 0]


def test_measure_segments_says_what_to_choose_and_works_without_a_main_window(panel, monkeypatch):
    widget, env, segmentation, node = panel[:4]
    env.scene.RemoveNode(node)
    widget.refreshButton.click()  # no volume left to choose
    widget.measureButton.click()
    assert widget.evaluationLabel.text.startswith("Cannot measure: choose the volume"), widget.evaluationLabel.text
    assert widget.logic.measurementsTableNode is None
    # without a main window (slicer.app.layoutManager() is None) the table is still made and selected
    monkeypatch.setattr(env.app, "layoutManager", lambda: None)
    other = add_volume(env.scene, ellipsoid((12, 24, 30), (6, 12, 15), (4, 8, 12))[0], name="other")
    table = widget.logic.measure(segmentation, other)
    assert env.app_logic.GetSelectionNode().GetActiveTableID() == table.GetID()
