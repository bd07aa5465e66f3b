"""The effect's and the module's own code (SegmentEditorEffect.py, SegmentAnythingMed.py) on a real scene, with
only qt / ctk / slicer.app and the scripted base classes faked (tests/slicer_fakes.py): registration at start-up,
option widgets -> parameters -> session options, view events -> prompts, preview, Apply (undo) and Cancel, the
module panel's backend settings, connection test, installation prompt and evaluation."""
import time

import numpy as np
import pytest
import slicer
import vtk

import slicer_fakes
from slicer_scenes import (LPS, TILTED, EffectHarness, ThresholdBackend, add_segmentation, add_volume,  # noqa: F401
                           ellipsoid, provider, slicer_env)

from SegmentAnythingMedLib import segment_writer, volume_bridge
from SegmentAnythingMedLib.backend_settings import SETTINGS_PREFIX, BackendSettings
from SegmentAnythingMedLib.preview import PREVIEW_ATTRIBUTE

C = vtk.vtkCommand


@pytest.fixture
def harness(slicer_env, provider):
    image, truth = ellipsoid((20, 30, 40), (10, 15, 20), (6, 8, 10))
    node = add_volume(slicer_env.scene, image, (0.8, 0.9, 2.5), LPS, (10.0, 20.0, 30.0))
    segmentation, (sid,) = add_segmentation(slicer_env.scene, node, ("ball",))
    h = EffectHarness(slicer_env, node, segmentation, sid)
    h.node, h.segmentation, h.sid, h.truth = node, segmentation, sid, truth
    h.volume = volume_bridge.volume_from_node(node)
    h.slice_node = slicer_env.slice_node("Axial")
    h.slice_node.JumpSliceByCentering(*volume_bridge.slice_position_ras(h.volume, 0, 10))
    h.view = slicer_fakes.FakeSliceWidget(h.slice_node)
    yield h
    h.effect.cleanup()


def display_xy(h, i, j, k):
    """Where voxel (i, j, k) is on the view's screen (inverse of the slice node's XY -> RAS)."""
    xy_to_ras = volume_bridge.matrix_to_array(h.slice_node.GetXYToRAS())
    return (np.linalg.inv(xy_to_ras) @ h.volume.ijk_to_ras @ [i, j, k, 1.0])[:2]


def event(h, event_id, xy, control=False):
    return h.effect.processInteractionEvents(slicer_fakes.interactor(*xy, control=control), event_id, h.view)


def drag_box(h, a, b):
    assert event(h, C.LeftButtonPressEvent, a)
    assert event(h, C.MouseMoveEvent, b)
    band = h.effect.rubberBands[h.view]  # the box being dragged is drawn in the view
    assert band.actor.GetVisibility() and band.corners()[2] == pytest.approx(tuple(int(v) for v in b))
    assert event(h, C.LeftButtonReleaseEvent, b)
    assert not band.actor.GetVisibility()


def finish(h):
    h.effect.session.wait(30)
    h.effect.timer.fire()


def written(h):
    return segment_writer.segment_mask(h.segmentation, h.sid, h.volume)


def test_the_module_registers_the_effect_at_startup(slicer_env, provider):
    import SegmentAnythingMed as module

    factory = slicer.qSlicerSegmentEditorEffectFactory.instance()
    factory.effects.clear()
    parent = type("ModuleParent", (), {"path": module.__file__})()
    module.SegmentAnythingMed(parent)
    assert parent.categories == ["Segmentation"] and not factory.effects  # registered only at start-up
    slicer_env.app.emit("startupCompleted()")
    (effect,) = factory.effects
    assert effect.name == "Segment Anything" and effect.perSegment and effect.requireSegments
    python_effect = effect.self()
    assert python_effect.icon().path.endswith("SegmentEditorEffect.png") and not python_effect.icon().isNull()
    clone = python_effect.clone()
    assert clone.self().__class__.__name__ == "SegmentEditorEffect" and clone.self() is not python_effect
    assert "box" in python_effect.helpText()


def test_options_are_kept_as_parameters_and_reach_the_session(harness):
    effect, node = harness.effect, harness.editor_node
    assert node.GetAttribute("Segment Anything.IntensityMode") == "auto"
    effect.intensityCombo.currentIndex = effect.intensityCombo.findData("window")
    effect.windowSpin.setValue(350.0)
    effect.rangeCombo.currentIndex = effect.rangeCombo.findData("set")
    effect.firstSpin.setValue(12)
    effect.lastSpin.setValue(7)
    effect.applyModeCombo.currentIndex = effect.applyModeCombo.findData("replace")
    effect.allSlicesCheckBox.click()
    assert node.GetAttribute("Segment Anything.IntensityMode") == "window"
    assert node.GetAttribute("Segment Anything.Window") == "350.0"
    assert node.GetAttribute("Segment Anything.MarkupsAllSlices") == "1"
    assert effect.windowSpin.enabled and effect.firstSpin.enabled
    options = effect._session().options
    assert (options.intensity_mode, options.window, options.range_mode, options.set_range, options.apply_mode) == \
        ("window", 350.0, "set", (7, 12), "replace")
    effect.updateGUIFromMRML()  # and back from the node into the widgets
    assert effect.intensityCombo.itemData(effect.intensityCombo.currentIndex) == "window"
    assert effect.rangeCombo.itemData(effect.rangeCombo.currentIndex) == "set"


def test_clicks_with_a_box_only_model_ask_for_a_box_then_a_drag_segments(harness):
    h, effect = harness, harness.effect
    centre = display_xy(h, 20, 15, 10)
    assert event(h, C.LeftButtonPressEvent, centre)
    assert event(h, C.LeftButtonReleaseEvent, centre)
    assert "does not take point prompts" in effect.statusLabel.text and "box" in effect.statusLabel.text
    assert not effect.timer.active
    drag_box(h, display_xy(h, 5, 3, 10), display_xy(h, 36, 28, 10))
    assert effect.timer.active and not effect.applyButton.enabled  # working off the GUI thread
    finish(h)
    assert not effect.timer.active
    assert "candidate 1 of 1" in effect.candidateLabel.text and effect.applyButton.enabled
    assert np.array_equal(effect.session.masks[10], h.truth[10])
    assert not written(h).any()  # preview only
    preview = effect.session.preview.node
    assert preview.GetAttribute(PREVIEW_ATTRIBUTE) == "1"
    effect.applyButton.click()
    assert "applied" in effect.statusLabel.text
    assert np.array_equal(written(h)[10], h.truth[10]) and written(h).sum() == h.truth[10].sum()
    assert preview.GetScene() is None  # the preview node left the scene
    h.logic.Undo()
    assert not written(h).any()


def test_exclude_clicks_candidates_and_cancel_with_a_point_model(harness, provider):
    h, effect = harness, harness.effect
    provider.update(BackendSettings(model="sam_vit_b", checkpoint="sam_vit_b.pth"))
    provider.use(ThresholdBackend(("point", "box"), "sam_vit_b"))
    centre = display_xy(h, 20, 15, 10)
    event(h, C.LeftButtonPressEvent, centre)
    event(h, C.LeftButtonReleaseEvent, centre)
    finish(h)
    assert effect.nextCandidateButton.enabled and "1 of 3" in effect.candidateLabel.text
    effect.nextCandidateButton.click()
    assert "2 of 3" in effect.candidateLabel.text
    side = display_xy(h, 24, 15, 10)
    event(h, C.LeftButtonPressEvent, side, control=True)  # ctrl-click: exclude
    event(h, C.LeftButtonReleaseEvent, side, control=True)
    assert event(h, C.RightButtonPressEvent, side)  # the effect takes the whole right click (as Draw does) ...
    assert event(h, C.RightButtonReleaseEvent, side)  # ... it is an exclude point
    sp = effect.session.slice_prompt
    assert len(sp.include_xy) == 1 and len(sp.exclude_xy) == 2
    assert sp.exclude_xy[0] == pytest.approx((24, 15), abs=0.6)
    finish(h)
    effect.cancelButton.click()
    assert effect.session.preview.node is None and not effect.applyButton.enabled
    assert not written(h).any()


def test_propagate_previews_everything_before_apply_and_markups_prompt(harness):
    h, effect = harness, harness.effect
    from SegmentAnythingMedLib.markup_bridge import box_around_slice_mask, place_roi

    roi = h.env.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "around the ball")
    place_roi(roi, *box_around_slice_mask(h.volume, h.truth, 0, 10, 7, 13))
    effect.roiSelector.setCurrentNode(roi)
    effect.onSegmentFromMarkups(h.slice_node)
    finish(h)
    assert effect.propagateButton.enabled
    effect.propagateButton.click()
    assert effect.stopButton.enabled
    finish(h)
    assert sorted(effect.session.masks) == list(range(7, 14))
    assert not written(h).any()
    effect.applyButton.click()
    assert written(h)[7:14].sum() == h.truth[7:14].sum() and written(h).sum() == h.truth[7:14].sum()


def test_an_oblique_view_is_reported_not_raised_and_the_preview_stays(harness, slicer_env):
    h = harness
    drag_box(h, display_xy(h, 5, 3, 10), display_xy(h, 36, 28, 10))
    finish(h)
    h.slice_node.SetSliceToRASByNTP(0.0, 0.3, 0.95, 1, 0, 0, *volume_bridge.slice_position_ras(h.volume, 0, 10), 0)
    drag_box(h, (100, 100), (150, 150))
    assert "oblique" in h.effect.statusLabel.text and "Rotate to volume plane" in h.effect.statusLabel.text
    assert not h.effect.timer.active
    assert h.effect.applyButton.enabled and h.effect.session.has_preview  # the earlier result is still there


def test_module_panel_settings_connection_install_and_evaluation(slicer_env, provider, tmp_path):
    import SegmentAnythingMed as module

    qt = slicer_fakes.install()
    qt.QSettings.store.clear()
    widget = module.SegmentAnythingMedWidget()
    widget.setup()
    assert widget.whereCombo.currentIndex == 0 and not widget.urlEdit.enabled
    widget.whereCombo.currentIndex = 1
    widget.urlEdit.setText("gpu-server:8000")
    widget.useButton.click()
    assert "neither 'local' nor a service URL" in widget.backendLabel.text
    widget.urlEdit.setText("http://gpu-server:8000")
    widget.tokenEdit.setText("secret")
    widget.useButton.click()
    assert qt.QSettings.store[SETTINGS_PREFIX + "where"] == "http://gpu-server:8000"
    assert provider.settings.where == "http://gpu-server:8000" and provider.settings.token == "secret"
    assert module.SegmentAnythingMedLogic().restoreSettings(qt.QSettings().value).where == "http://gpu-server:8000"
    widget.whereCombo.currentIndex = 0
    widget.useButton.click()
    provider.use(ThresholdBackend())
    widget.testButton.click()
    for _ in range(500):  # what the event loop does while the worker loads / reaches the backend
        widget.pollTimer.fire()
        if widget.connectionJob is None:
            break
        time.sleep(0.01)
    assert "stub 0" in widget.backendLabel.text and "model litemedsam (prompts: box)" in widget.backendLabel.text
    # installation asks first; "No" installs nothing
    widget.logic.missingPackages = lambda: ["torch", "segment_anything"]
    qt.QMessageBox.answer = qt.QMessageBox.No
    widget.onInstall()
    assert qt.QMessageBox.shown[-1][0] == "question" and "PyTorch extension" in qt.QMessageBox.shown[-1][2]
    assert "Nothing installed" in widget.backendLabel.text
    # evaluation from the panel
    widget.refreshButton.click()
    assert widget.onEvaluate() is None and "choose the segmentation" in widget.evaluationLabel.text
    image, truth = ellipsoid((10, 20, 20), (5, 10, 10), (3, 6, 6))
    node = add_volume(slicer_env.scene, image, (1.0, 1.0, 2.0), LPS)
    segmentation, (a, b) = add_segmentation(slicer_env.scene, node, ("mine", "reference"))
    target = segment_writer.LogicEditTarget.create(slicer_env.scene, segmentation, node, a)
    target.segment_editor_node().SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)
    volume = volume_bridge.volume_from_node(node)
    segment_writer.write_masks(target, {k: truth[k] for k in range(10)}, 0, volume)
    target.segment_editor_node().SetSelectedSegmentID(b)
    segment_writer.write_masks(target, {k: truth[k] for k in range(5, 10)}, 0, volume)
    widget.refreshButton.click()
    widget.segmentCombo.currentIndex = widget.segmentCombo.findData(a)
    widget.referenceItemCombo.currentIndex = widget.referenceItemCombo.findData(b)
    evaluation = widget.onEvaluate()
    assert "Dice" in widget.evaluationLabel.text and 0.5 < evaluation.metrics["dice"] < 1.0
    assert widget.logic.summaryTableNode.GetNumberOfRows() == 1 and widget.logic.chartNode is not None
    qt.QFileDialog.next_path = str(tmp_path / "out.csv")
    assert widget.onExport() == tmp_path / "out.csv" and (tmp_path / "out.csv").read_text().startswith("Segment,")


def test_install_plan_adds_the_cpu_speed_engines_only_when_installing_anyway(monkeypatch):
    import importlib.util

    from SegmentAnythingMedLib import backend_settings as bs

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in bs.SPEED_PACKAGES
                        else real(name, *a))
    plan = bs.install_plan(["torch", "segment_anything"])
    assert plan["torch"] and plan["pip"][0].startswith("segment-anything")
    assert {p.split(">")[0] for p in plan["pip"][1:]} == {"onnxruntime", "onnx", "openvino"}
    assert "openvino" in bs.describe_plan(plan)
    assert bs.install_plan([]) == {"torch": False, "pip": []}  # nothing missing: nothing is pushed on the user


def test_controls_follow_the_session_state():
    from types import SimpleNamespace

    from samed.core.prompts import Prediction
    from SegmentAnythingMedLib.effect_controls import controls
    from SegmentAnythingMedLib.session_types import Candidates

    assert controls(None) == controls(None, "") and not controls(None).apply and controls(None).status is None
    three = Candidates(10, Prediction(np.zeros((3, 4, 4), bool), [0.9, 0.6, 0.3]))
    state = dict(busy=False, has_preview=True, candidates=three, progress=None, status="slice 10: ...")
    c = controls(SimpleNamespace(**state))
    assert (c.next_candidate, c.propagate, c.stop, c.apply, c.cancel) == (True, True, False, True, True)
    assert c.candidate_text.startswith("candidate 1 of 3") and c.status == "slice 10: ..." and c.progress is None
    busy = controls(SimpleNamespace(**{**state, "busy": True, "progress": (2, 0)}), "propagating")
    assert (busy.propagate, busy.stop, busy.apply, busy.cancel, busy.progress, busy.status) == \
        (False, True, False, True, (2, 1), "propagating")
