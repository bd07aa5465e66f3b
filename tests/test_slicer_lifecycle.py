"""The effect's life in the Segment Editor (tests/slicer_fake_editor.py replays qMRMLSegmentEditorWidget): Slicer
deactivates it when the user leaves the module, places markups (qSlicerSegmentEditorAbstractEffect::
interactionNodeModified selects no effect) or switches segmentation. The preview and a running propagation stay,
as Fill between slices / Grow from seeds keep theirs; Apply or Cancel decide. Also: an error while showing a result
(defect 10) and the view "Segment from markups" prompts in."""
import numpy as np
import pytest
import slicer
import vtk

import slicer_fakes
from slicer_fake_editor import GENERATIONS
from slicer_scenes import (LPS, EffectHarness, ThresholdBackend, add_segmentation, add_volume, ellipsoid,  # noqa: F401
                           provider, slicer_env)

from SegmentAnythingMedLib import segment_writer, volume_bridge
from SegmentAnythingMedLib.markup_bridge import box_around_slice_mask, place_roi
from SegmentAnythingMedLib.preview import SegmentPreview


def build(slicer_env, generation=None):
    image, truth = ellipsoid((20, 30, 40), (10, 15, 20), (6, 8, 10))
    node = add_volume(slicer_env.scene, image, (0.8, 0.9, 2.5), LPS, (10.0, 20.0, 30.0))
    segmentation, (sid,) = add_segmentation(slicer_env.scene, node, ("ball",))
    h = EffectHarness(slicer_env, node, segmentation, sid, generation)
    h.node, h.segmentation, h.sid, h.truth = node, segmentation, sid, truth
    h.volume = volume_bridge.volume_from_node(node)
    h.slice_node = slicer_env.slice_node("Axial")
    h.slice_node.JumpSliceByCentering(*volume_bridge.slice_position_ras(h.volume, 0, 10))
    return h


@pytest.fixture
def harness(slicer_env, provider):
    h = build(slicer_env)
    yield h
    h.effect.cleanup()


def preview_slice_10(h):
    session = h.effect._session()
    a, b = [tuple((h.volume.ijk_to_ras @ p)[:3]) for p in ([5, 3, 10, 1.0], [36, 28, 10, 1.0])]
    h.effect._run(lambda: session.set_box(a, b, session.view_of(h.slice_node)))
    finish(h)
    assert np.array_equal(session.masks[10], h.truth[10])
    return session.preview.node


def finish(h):
    h.effect.session.wait(30)
    h.effect.timer.fire()


def written(segmentation, sid, volume):
    return segment_writer.segment_mask(segmentation, sid, volume)


def reactivate_and_apply(h):
    h.editor.setActiveEffectByName("Segment Anything")
    assert h.editor.active is h.adaptor and h.effect.applyButton.enabled
    h.effect.applyButton.click()
    assert "applied" in h.effect.statusLabel.text, h.effect.statusLabel.text


def test_leaving_the_segment_editor_keeps_the_preview(harness):
    h = harness
    preview = preview_slice_10(h)
    h.editor.module_exit()
    assert h.editor.active is None
    assert preview.GetScene() is h.env.scene and h.effect.session.has_preview, "deactivation dropped the preview"
    reactivate_and_apply(h)
    assert np.array_equal(written(h.segmentation, h.sid, h.volume)[10], h.truth[10])


def test_placing_markups_deactivates_the_effect_and_keeps_the_preview(harness):
    h = harness
    preview = preview_slice_10(h)
    interaction = h.env.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    interaction.SetCurrentInteractionMode(slicer.vtkMRMLInteractionNode.Place)  # e.g. placing the ROI
    assert h.editor.active is None  # the base class selected no effect: we do not override it
    assert preview.GetScene() is h.env.scene and h.effect.session.has_preview, "markups placement dropped the preview"
    reactivate_and_apply(h)  # activation returns the mouse to ViewTransform, as qMRMLSegmentEditorWidget does
    assert interaction.GetCurrentInteractionMode() == slicer.vtkMRMLInteractionNode.ViewTransform
    assert np.array_equal(written(h.segmentation, h.sid, h.volume)[10], h.truth[10])


def test_a_segmentation_switch_keeps_the_preview_and_apply_writes_into_the_new_segment(harness):
    h = harness
    preview = preview_slice_10(h)
    other, (other_sid,) = add_segmentation(h.env.scene, h.node, ("other ball",), name="Other")
    h.editor.setSegmentationNode(other)
    assert h.editor.active is None
    assert preview.GetScene() is h.env.scene and h.effect.session.has_preview, "the switch dropped the preview"
    h.editor_node.SetAndObserveSegmentationNode(other)
    h.editor_node.SetSelectedSegmentID(other_sid)
    reactivate_and_apply(h)
    assert np.array_equal(written(other, other_sid, h.volume)[10], h.truth[10])
    assert not written(h.segmentation, h.sid, h.volume).any()


def test_a_running_propagation_goes_on_while_the_effect_is_inactive(harness, provider):
    h = harness
    preview_slice_10(h)
    provider.use(ThresholdBackend(delay=0.05))
    h.effect.rangeCombo.currentIndex = h.effect.rangeCombo.findData("volume")
    h.effect.propagateButton.click()
    h.editor.module_exit()
    assert h.effect.session.busy and h.effect.timer.isActive(), "deactivation stopped the propagation"
    finish(h)
    assert not h.effect.timer.isActive()
    assert set(range(6, 15)) <= set(h.effect.session.masks) and "preview on" in h.effect.statusLabel.text


def test_an_error_while_showing_a_result_is_reported_and_the_result_kept(harness, monkeypatch):
    h = harness
    failures = []
    real_show = SegmentPreview.show

    def show_once_broken(self, *args, **kwargs):
        if not failures:
            failures.append(1)
            raise RuntimeError("segmentation node was removed")
        return real_show(self, *args, **kwargs)

    monkeypatch.setattr(SegmentPreview, "show", show_once_broken)
    session = h.effect._session()
    a, b = [tuple((h.volume.ijk_to_ras @ p)[:3]) for p in ([5, 3, 10, 1.0], [36, 28, 10, 1.0])]
    h.effect._run(lambda: session.set_box(a, b, session.view_of(h.slice_node)))
    session.wait(30)
    h.effect.timer.fire()  # Qt calls onPoll; an exception there would be lost in the event loop
    text = h.effect.statusLabel.text
    assert "segmenting" not in text and "could not be shown" in text and "segmentation node was removed" in text
    assert not h.effect.timer.isActive()
    assert np.array_equal(session.masks[10], h.truth[10]) and h.effect.applyButton.enabled
    h.effect.applyButton.click()
    assert np.array_equal(written(h.segmentation, h.sid, h.volume)[10], h.truth[10])


def test_segment_from_markups_prompts_in_the_view_the_user_last_worked_in(harness):
    h = harness
    red = slicer_fakes.FakeSliceWidget(h.slice_node)
    yellow_node = h.env.slice_node("Sagittal", name="Yellow")
    yellow_node.JumpSliceByCentering(*volume_bridge.slice_position_ras(h.volume, 2, 20))
    yellow = slicer_fakes.FakeSliceWidget(yellow_node)
    roi = h.env.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "around the ball")
    place_roi(roi, *box_around_slice_mask(h.volume, h.truth, 0, 10, 7, 13))
    h.effect.roiSelector.setCurrentNode(roi)
    for view in (red, yellow):  # the mouse crosses Red, then works in Yellow, then goes to the button
        h.effect.processInteractionEvents(slicer_fakes.interactor(100, 100), vtk.vtkCommand.MouseMoveEvent, view)
    h.effect.markupsButton.click()
    finish(h)
    prompted = h.effect.session.slice_prompt.view
    assert (prompted.np_axis, prompted.view_name) == (2, "Yellow"), f"prompted in {prompted.view_name}"


@pytest.mark.parametrize("generation", GENERATIONS)
def test_deleting_the_effect_removes_its_preview(slicer_env, provider, generation):
    """Nothing can Apply a deleted effect's preview: 5.10+ call cleanup() first, 5.2-5.8 only delete it."""
    h = build(slicer_env, generation)
    preview = preview_slice_10(h)
    h.editor.destroy()
    assert preview.GetScene() is None and not h.effect.timer.isActive()
