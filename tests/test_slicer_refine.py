"""Refine the selected segment in the effect (issue 11 item 4), on a real slicer-core scene:

- the real LiteMedSAM on mr-brain-tumor's tumour dilated by 2 px (another tool's too-large segment): Refine ->
  a preview of the changed slices (the same masks ``samed refine``'s core gives), the status says what the check
  decided; Dice against the undilated reference rises; nothing is written before Apply; Apply writes the refined
  segment (one undo state); Undo gives the original back voxel for voxel;
- an empty segment, a preview not applied yet, Stop while refining (stand-in backend);
- the effect's "Refine selected segment" button through the effect's Qt fakes: preview, Apply, Undo, Cancel.
"""
import time

import numpy as np
import pytest
import slicer

from slicer_scenes import (LPS, EffectHarness, ThresholdBackend, add_segmentation, add_volume,  # noqa: F401
                           ellipsoid, provider, slicer_env)
from test_slicer_key_slices import draw_box, session_on, worker  # noqa: F401

from samed.core.metrics import dice
from samed.core.refine import grow_mask, refine_mask
from samed.core.volume_session import VolumeSession
from SegmentAnythingMedLib import segment_writer, volume_bridge
from SegmentAnythingMedLib.errors import BridgeError
from SegmentAnythingMedLib.labelmaps import oriented_image_from_mask
from SegmentAnythingMedLib.refine_session import REFINED, refine_selected


def previewed(original, session):
    """The segment as Apply will leave it: the original with the previewed (changed) slices replaced."""
    out = original.copy()
    for i, m in session.masks.items():
        out[i] = m
    return out


def put_segment(segmentation, sid, volume, mask_kji):
    """Another tool's segment: the mask set into the segment directly (not through the editor: nothing to undo)."""
    labelmap = oriented_image_from_mask(mask_kji.astype(np.uint8), volume.ijk_to_ras, (0, 0, 0))
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.SetBinaryLabelmapToSegment(labelmap, segmentation, sid, logic.MODE_REPLACE)


@pytest.fixture
def dilated_tumour_scene(slicer_env, shared_data):
    from samed.core import io

    folder = shared_data / "volumes" / "mr-brain-tumor"
    node = slicer_env.logics["volumes"].AddArchetypeVolume(str(folder / "image.nrrd"), "mr-brain-tumor")
    volume = volume_bridge.volume_from_node(node)
    ref = io.resample_to(io.read_volume(folder / "label.nrrd"), io.read_volume(folder / "image.nrrd")).array == 1
    assert ref.shape == volume.array.shape[:3]
    dilated = np.stack([grow_mask(m, 2) for m in ref])  # slices along k: the axial axis of this volume
    segmentation, (sid,) = add_segmentation(slicer_env.scene, node, ("tumour (other tool)",))
    put_segment(segmentation, sid, volume, dilated)
    assert np.array_equal(segment_writer.segment_mask(segmentation, sid, volume), dilated)
    return node, segmentation, sid, volume, ref, dilated


def test_refine_a_dilated_tumour_with_litemedsam_preview_apply_undo(slicer_env, worker, dilated_tumour_scene,
                                                                    lite_backend, capsys):
    node, segmentation, sid, volume, ref, dilated = dilated_tumour_scene
    session, target = session_on(slicer_env, worker, node, segmentation, sid, lite_backend)
    t0 = time.perf_counter()
    refine_selected(session)
    assert session.busy and session.status.startswith("refining")
    status = session.wait(600)[-1]
    seconds = time.perf_counter() - t0
    assert "model agreement" in status and "corrected" in status and "Apply" in status, status
    refined = previewed(dilated, session)
    changed = sorted(session.masks)
    assert changed and set(session.slice_kinds.values()) == {REFINED} and sorted(session.slice_kinds) == changed
    assert session.preview.node is not None and session.preview.slices == [i for i in changed
                                                                            if session.masks[i].any()]
    # the same masks as samed refine's core, called as the CLI calls it
    cli_session = VolumeSession(volume, lite_backend, "axial")
    expected, _ = refine_mask(lite_backend, cli_session.picture, dilated, 0)
    assert np.array_equal(refined, expected)
    d_before, d_after = dice(dilated, ref), dice(refined, ref)
    assert d_after > d_before + 0.03, (d_before, d_after)
    assert np.array_equal(segment_writer.segment_mask(segmentation, sid, volume), dilated)  # nothing before Apply
    report = session.apply(target)
    written = segment_writer.segment_mask(segmentation, sid, volume)
    with capsys.disabled():
        print(f"\nmr-brain-tumor tumour dilated 2 px, LiteMedSAM, Refine selected segment in {seconds:.1f} s: "
              f"{status}\n  Dice vs reference {d_before:.3f} -> {d_after:.3f}; {report.describe()}")
    assert report.mode == "replace" and report.slices == changed
    assert np.array_equal(written, refined)
    assert not session.has_preview and session.preview.node is None and session.slice_kinds == {}
    how = segment_writer.segment_provenance(segmentation, sid)  # it says it was refined, where and how
    assert how.propagation["mode"] == "refine" and how.propagation["changed"] == changed and how.model == "litemedsam"
    target.undo()  # one undo state: the original, voxel for voxel
    assert np.array_equal(segment_writer.segment_mask(segmentation, sid, volume), dilated)


def ball_scene(env, grow_px=2):
    image, truth = ellipsoid((20, 30, 40), (10, 15, 20), (6, 8, 10))
    node = add_volume(env.scene, image, (0.8, 0.9, 2.5), LPS, (10.0, 20.0, 30.0))
    segmentation, (sid, empty) = add_segmentation(env.scene, node, ("ball (other tool)", "nothing yet"))
    volume = volume_bridge.volume_from_node(node)
    dilated = np.stack([grow_mask(m, grow_px) for m in truth])
    put_segment(segmentation, sid, volume, dilated)
    return node, segmentation, sid, empty, volume, truth, dilated


def test_an_empty_segment_a_pending_preview_and_no_segment_are_refused_before_any_work(slicer_env, worker):
    node, segmentation, sid, empty, volume, truth, dilated = ball_scene(slicer_env)
    session, target = session_on(slicer_env, worker, node, segmentation, empty, ThresholdBackend())
    with pytest.raises(BridgeError, match=r"segment 'nothing yet' of 'Segmentation' is empty.*nothing to refine"):
        refine_selected(session)
    assert not session.busy
    session.set_source(node, segmentation, "")
    with pytest.raises(BridgeError, match="select the segment to refine"):
        refine_selected(session)
    session.set_source(node, segmentation, sid)
    draw_box(slicer_env, session, 10, (5, 3, 36, 28))  # a preview of a prompt, not applied yet
    with pytest.raises(BridgeError, match="Apply or Cancel the preview first"):
        refine_selected(session)
    assert session.has_preview and not session.busy


def test_stop_while_refining_leaves_everything_as_it_was(slicer_env, worker):
    node, segmentation, sid, empty, volume, truth, dilated = ball_scene(slicer_env)
    backend = ThresholdBackend(delay=0.05)
    session, target = session_on(slicer_env, worker, node, segmentation, sid, backend)
    refine_selected(session)
    deadline = time.monotonic() + 30
    while not (session.progress and session.progress[0] >= 2) and time.monotonic() < deadline:
        session.poll()
        time.sleep(0.01)
    assert session.busy and session.progress[0] >= 2
    session.cancel_running()  # the effect's Stop button
    assert session.wait(30)[-1] == "refinement cancelled: the preview is as it was"
    assert not session.has_preview and session.masks == {} and session.preview.node is None
    assert np.array_equal(segment_writer.segment_mask(segmentation, sid, volume), dilated)


def test_apply_after_a_refinement_stores_a_refine_provenance_and_undo_takes_it_back(slicer_env, worker):
    node, segmentation, sid, empty, volume, truth, dilated = ball_scene(slicer_env)
    session, target = session_on(slicer_env, worker, node, segmentation, sid, ThresholdBackend())
    refine_selected(session)
    session.wait(30)
    changed = sorted(session.masks)
    refined = previewed(dilated, session)
    assert changed and not np.array_equal(refined, dilated)
    assert segment_writer.segment_provenance(segmentation, sid) is None  # another tool's segment: none yet
    session.apply(target)
    how = segment_writer.segment_provenance(segmentation, sid)
    assert how is not None and how.propagation is not None, "Apply after Refine recorded no refinement"
    walk = how.propagation
    assert walk["mode"] == "refine" and walk["changed"] == changed, walk
    assert walk["source"] == {"segmentation": "Segmentation", "segment": "ball (other tool)", "segment_id": sid}
    assert walk["settings"]["box_margin_px"] == 2.0 and "model_bias_px" in walk["settings"]
    assert "model agreement" in walk["check"] and how.prompts == [] and how.axis == "k"
    how.check_grid(volume.shape_kji, volume.ijk_to_ras, "the ball")
    target.undo()  # the refined voxels and their provenance go back together
    assert np.array_equal(segment_writer.segment_mask(segmentation, sid, volume), dilated)
    assert segment_writer.segment_provenance(segmentation, sid) is None, "Undo left the refinement's provenance"
    # a later prompt's Apply is not called a refinement (the record went with the refinement's preview)
    draw_box(slicer_env, session, 10, (5, 3, 36, 28))
    session.apply(target)
    how = segment_writer.segment_provenance(segmentation, sid)
    assert how.propagation is None and [p.slice for p in how.prompts] == [10]


@pytest.fixture
def ball_harness(slicer_env, provider):
    node, segmentation, sid, empty, volume, truth, dilated = ball_scene(slicer_env)
    h = EffectHarness(slicer_env, node, segmentation, sid)
    h.segmentation, h.sid, h.volume, h.truth, h.dilated = segmentation, sid, volume, truth, dilated
    yield h
    h.effect.cleanup()


def test_the_refine_button_previews_then_apply_writes_and_undo_restores(ball_harness):
    h, effect = ball_harness, ball_harness.effect
    assert effect.refineButton.enabled and effect.refineButton.text == "Refine selected segment"
    effect.refineButton.click()
    assert effect.timer.active and not effect.refineButton.enabled and effect.stopButton.enabled
    h.effect.session.wait(30)
    h.effect.timer.fire()
    assert "model agreement" in effect.statusLabel.text and "corrected" in effect.statusLabel.text
    assert effect.applyButton.enabled and effect.cancelButton.enabled and not effect.refineButton.enabled
    refined = previewed(h.dilated, effect.session)
    assert not np.array_equal(refined, h.dilated) and dice(refined, h.truth) > dice(h.dilated, h.truth)
    assert np.array_equal(segment_writer.segment_mask(h.segmentation, h.sid, h.volume), h.dilated)
    effect.applyButton.click()
    assert "applied: replaced" in effect.statusLabel.text
    assert np.array_equal(segment_writer.segment_mask(h.segmentation, h.sid, h.volume), refined)
    assert segment_writer.segment_provenance(h.segmentation, h.sid).propagation["mode"] == "refine"
    assert effect.refineButton.enabled
    h.logic.Undo()
    assert np.array_equal(segment_writer.segment_mask(h.segmentation, h.sid, h.volume), h.dilated)
    assert segment_writer.segment_provenance(h.segmentation, h.sid) is None
    effect.refineButton.click()  # again, then Cancel: nothing written
    h.effect.session.wait(30)
    h.effect.timer.fire()
    effect.cancelButton.click()
    assert effect.session.preview.node is None and not effect.applyButton.enabled
    assert np.array_equal(segment_writer.segment_mask(h.segmentation, h.sid, h.volume), h.dilated)


def test_the_refine_button_says_why_an_empty_segment_cannot_be_refined(ball_harness):
    h, effect = ball_harness, ball_harness.effect
    h.editor_node.SetSelectedSegmentID(h.segmentation.GetSegmentation().GetSegmentIdBySegmentName("nothing yet"))
    effect.refineButton.click()
    assert "is empty" in effect.statusLabel.text and not effect.timer.active and not effect.session.busy
