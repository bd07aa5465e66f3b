"""The effect's decisions without Qt (SegmentAnythingMedLib.session, gestures, worker), with a stand-in backend on
a real scene: clicks and boxes -> prompts, unsupported prompts, candidates, preview, propagation (nothing written
before Apply), correction and re-propagation, cancel, and the worker thread."""
import threading
import time

import numpy as np
import pytest

from slicer_scenes import LPS, ThresholdBackend, add_segmentation, add_volume, ellipsoid, slicer_env  # noqa: F401

from samed.core.geometry import slice_xy_to_ras
from samed.core.prompts import Prediction
from SegmentAnythingMedLib import segment_writer, volume_bridge
from SegmentAnythingMedLib.backend_settings import BackendProvider, BackendSettings
from SegmentAnythingMedLib.errors import BridgeError
from SegmentAnythingMedLib.gestures import BOX, POINT, SliceGestures
from SegmentAnythingMedLib.markup_bridge import box_around_slice_mask, place_roi
from SegmentAnythingMedLib.preview import PREVIEW_ATTRIBUTE, SegmentPreview
from SegmentAnythingMedLib.session import EditSession
from SegmentAnythingMedLib.worker import CANCELLED, DONE, FAILED, PROGRESS, InferenceWorker, JobCancelled


@pytest.fixture
def worker():
    w = InferenceWorker()
    yield w
    w.shutdown()


def make(env, worker, kinds=("box",), model="litemedsam"):
    image, truth = ellipsoid((20, 30, 40), (10, 15, 20), (6, 8, 10))
    node = add_volume(env.scene, image, (0.8, 0.9, 2.5), LPS, (10.0, 20.0, 30.0))
    segmentation, (sid,) = add_segmentation(env.scene, node, ("ball",))
    provider = BackendProvider(BackendSettings(model=model, checkpoint="x.pth" if model != "litemedsam" else ""))
    backend = ThresholdBackend(kinds, model)
    provider.use(backend)
    session = EditSession(provider, worker, SegmentPreview(env.scene))
    session.set_source(node, segmentation, sid)
    target = segment_writer.LogicEditTarget.create(env.scene, segmentation, node, sid, application_logic=env.app_logic)
    return session, node, segmentation, sid, target, truth, backend


def view_at(env, session, index, np_axis=0):
    volume = session.snapshot().volume
    slice_node = env.slice_node({0: "Axial", 1: "Coronal", 2: "Sagittal"}[np_axis])
    slice_node.JumpSliceByCentering(*volume_bridge.slice_position_ras(volume, np_axis, index))
    return session.view_of(slice_node)


def ras(session, xy, index, np_axis=0):
    return slice_xy_to_ras([xy], session.snapshot().volume.ijk_to_ras, np_axis, index)[0]


def segment_voxels(segmentation, sid, node):
    return segment_writer.segment_mask(segmentation, sid, volume_bridge.volume_from_node(node)).sum()


def test_a_point_for_a_box_only_model_says_to_drag_a_box_and_runs_nothing(slicer_env, worker):
    session, *_, backend = make(slicer_env, worker)
    view = view_at(slicer_env, session, 10)
    assert session.add_point(ras(session, (20, 15), 10), True, view) is None
    assert "does not take point prompts" in session.status and "box" in session.status
    assert not session.busy and backend.encodes == 0 and session.slice_prompt is None


def test_clicks_build_one_prompt_per_slice_and_candidates_cycle(slicer_env, worker):
    session, node, segmentation, sid, target, truth, backend = make(slicer_env, worker, ("point", "box"), "sam_vit_b")
    view = view_at(slicer_env, session, 10)
    session.add_point(ras(session, (20, 15), 10), True, view)
    session.add_point(ras(session, (30, 15), 10), False, view)
    assert session.slice_prompt.include_xy == [pytest.approx((20, 15))]
    assert session.slice_prompt.exclude_xy == [pytest.approx((30, 15))]
    session.wait(30)
    assert session.candidates.index == 10 and len(session.candidates.prediction.scores) == 1  # two points: one
    session.cancel()
    session.add_point(ras(session, (20, 15), 10), True, view)  # one point: SAM gives three candidates
    session.wait(30)
    first = session.masks[10].copy()
    assert "candidate 2 of 3, score 0.60" in session.next_candidate()
    assert session.candidates.chosen == 1 and not np.array_equal(session.masks[10], first)
    session.next_candidate()
    session.next_candidate()
    assert session.candidates.chosen == 0 and np.array_equal(session.masks[10], first)
    # a click on another slice starts a new prompt there; the first slice's preview stays
    other = view_at(slicer_env, session, 12)
    session.add_point(ras(session, (20, 15), 12), True, other)
    session.wait(30)
    assert session.slice_prompt.view.index == 12 and set(session.masks) == {10, 12}
    assert segment_voxels(segmentation, sid, node) == 0  # nothing written before Apply


def test_box_propagation_is_previewed_then_applied_once_with_undo(slicer_env, worker):
    session, node, segmentation, sid, target, truth, backend = make(slicer_env, worker)
    view = view_at(slicer_env, session, 10)
    session.set_box(ras(session, (5, 3), 10), ras(session, (36, 28), 10), view)
    session.wait(30)
    assert np.array_equal(session.masks[10], truth[10])
    session.options.range_mode = "volume"
    session.propagate()
    session.wait(60)
    assert sorted(session.masks) == [i for i in range(20) if truth[i].sum() >= 5]
    preview = session.preview.node
    assert preview is not None and preview.GetAttribute(PREVIEW_ATTRIBUTE) == "1" and preview.GetHideFromEditors()
    assert session.preview.voxels == sum(int(m.sum()) for m in session.masks.values())
    assert segment_voxels(segmentation, sid, node) == 0  # propagation writes nothing
    report = session.apply(target)
    assert report.voxels == session.preview.voxels or report.voxels > 0
    written = segment_writer.segment_mask(segmentation, sid, volume_bridge.volume_from_node(node))
    assert np.array_equal(written, truth & (truth.sum(axis=(1, 2)) >= 5)[:, None, None])
    assert session.preview.node is None and not session.has_preview
    assert slicer_env.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 1
    target.undo()
    assert segment_voxels(segmentation, sid, node) == 0


def test_roi_extent_and_set_range_limit_propagation(slicer_env, worker):
    session, node, segmentation, sid, target, truth, backend = make(slicer_env, worker)
    volume = session.snapshot().volume
    roi = slicer_env.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    place_roi(roi, *box_around_slice_mask(volume, truth, 0, 10, 8, 13))
    session.prompt_from_markups(view_at(slicer_env, session, 10), roi_nodes=[roi])
    session.wait(30)
    assert session.roi_range == (8, 13)
    session.propagate()
    session.wait(60)
    assert sorted(session.masks) == list(range(8, 14))
    assert "range" in session.status
    session.cancel()
    session.options.range_mode = "set"
    session.options.set_range = (11, 9)
    session.prompt_from_markups(view_at(slicer_env, session, 10), roi_nodes=[roi])
    session.wait(30)
    session.propagate()
    session.wait(60)
    assert sorted(session.masks) == [9, 10, 11]


def test_markups_on_every_slice_they_reach_and_the_nearest_slice(slicer_env, worker):
    session, node, segmentation, sid, target, truth, backend = make(slicer_env, worker)
    volume = session.snapshot().volume
    roi = slicer_env.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    place_roi(roi, *box_around_slice_mask(volume, truth, 0, 10, 9, 12))
    session.prompt_from_markups(view_at(slicer_env, session, 10), roi_nodes=[roi], all_slices=True)
    session.wait(30)
    assert sorted(session.masks) == [9, 10, 11, 12] and session.candidates.index == 10
    assert set(session.prompted) == {9, 10, 11, 12}  # slice -> the prompt there
    session.cancel()
    session.prompt_from_markups(view_at(slicer_env, session, 3), roi_nodes=[roi])
    assert "do not reach the view's slice 3" in session.status
    session.wait(30)
    assert sorted(session.masks) == [9]


def test_a_corrected_slice_propagates_again_away_from_the_seed_and_merges(slicer_env, worker):
    session, node, segmentation, sid, target, truth, backend = make(slicer_env, worker)
    session.options.range_mode = "volume"
    session.set_box(ras(session, (5, 3), 10), ras(session, (36, 28), 10), view_at(slicer_env, session, 10))
    session.wait(30)
    session.propagate()
    session.wait(60)
    before = {i: m.copy() for i, m in session.masks.items()}
    # correct slice 12 with a box that keeps only the left half of the ball
    session.set_box(ras(session, (5, 3), 12), ras(session, (19, 28), 12), view_at(slicer_env, session, 12))
    session.wait(30)
    assert session.masks[12].sum() < before[12].sum()
    session.propagate()
    session.wait(60)
    # issue 11: slices 10 and 12 are key slices now: 11 is filled from both, the walks leave from the outer keys
    assert session.propagation.seed_index == 10  # the first key slice
    assert [session.slice_kinds[i] for i in (10, 11, 12)] == ["key", "interpolated", "key"]
    above = [i for i in before if i > 12]  # above the corrected slice: re-walked from it (left half only)
    assert all(i in session.masks and session.masks[i].sum() <= before[i].sum() for i in above)
    assert session.masks[13].sum() < before[13].sum() and session.masks[14].sum() < before[14].sum()
    assert session.masks[12].sum() < session.masks[11].sum() < before[11].sum()  # between the two keys' masks
    for i in range(0, 11):  # below the first key: as before
        if i in before:
            assert np.array_equal(session.masks[i], before[i])


def test_cancel_drops_the_preview_and_late_results(slicer_env, worker):
    session, node, segmentation, sid, target, truth, backend = make(slicer_env, worker)
    backend.delay = 0.3
    view = view_at(slicer_env, session, 10)
    session.set_box(ras(session, (5, 3), 10), ras(session, (36, 28), 10), view)
    assert session.busy
    session.cancel()
    time.sleep(0.5)
    assert session.poll() == [] and not session.masks and session.preview.node is None
    with pytest.raises(BridgeError, match="segment a slice first"):
        session.propagate()
    with pytest.raises(BridgeError, match="no preview to apply"):
        session.apply(target)
    assert segment_voxels(segmentation, sid, node) == 0


def test_intensity_choices(slicer_env, worker):
    session, node, *_ = make(slicer_env, worker)
    session.options.intensity_mode = "window"
    session.options.window, session.options.level = 400.0, 40.0
    spec = session.intensity()
    assert (spec.window.low, spec.window.high) == (-160.0, 240.0)
    session.options.intensity_mode = "display"
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().AutoWindowLevelOff()
    node.GetDisplayNode().SetWindowLevel(100, 50)
    assert (session.intensity().window.low, session.intensity().window.high) == (0.0, 100.0)
    from SegmentAnythingMedLib.effect_parameters import INTENSITY_CHOICES, RANGE_CHOICES
    from SegmentAnythingMedLib.session_types import RANGE_MODES, SESSION_INTENSITY_MODES

    assert {k for k, _ in INTENSITY_CHOICES} <= set(SESSION_INTENSITY_MODES)  # every offered choice is known
    assert {k for k, _ in RANGE_CHOICES} == set(RANGE_MODES)
    for mode, _ in INTENSITY_CHOICES:
        session.options.intensity_mode = mode
        session.intensity()
    session.options.intensity_mode = "bogus"
    with pytest.raises(BridgeError, match="unknown intensity"):
        session.intensity()


def test_gestures_tell_clicks_drags_and_right_clicks_apart():
    """What the effect takes from Slicer (abort) and makes of it; the same through a real slice view in
    tests/test_slicer_interaction.py."""
    import vtk

    C = vtk.vtkCommand
    g = SliceGestures(drag_px=4)
    ras = lambda: (1.1, 2, 3)  # noqa: E731
    assert g.process(C.LeftButtonPressEvent, (10, 10), lambda: (1, 2, 3)) == (True, None)
    abort, action = g.process(C.LeftButtonReleaseEvent, (11, 10), ras)
    assert abort and action.kind == POINT and action.include and action.ras == ((1, 2, 3),)
    g.process(C.LeftButtonPressEvent, (10, 10), lambda: (1, 2, 3), control=True)
    assert not g.process(C.LeftButtonReleaseEvent, (10, 10), ras)[1].include
    g.process(C.LeftButtonPressEvent, (10, 10), lambda: (1, 2, 3))
    assert g.process(C.MouseMoveEvent, (30, 25), ras) == (True, None) and g.dragging
    abort, action = g.process(C.LeftButtonReleaseEvent, (30, 25), lambda: (4, 5, 3))
    assert action.kind == BOX and action.ras == ((1, 2, 3), (4, 5, 3))
    assert g.process(C.MouseMoveEvent, (31, 25), ras) == (False, None)  # hovering: Slicer's
    for keys in ({"other_modifier": True}, {"on_markups_handle": True}):  # shift / alt, an ROI handle: Slicer's
        assert g.process(C.LeftButtonPressEvent, (10, 10), ras, **keys) == (False, None)
        assert g.process(C.LeftButtonReleaseEvent, (10, 10), ras) == (False, None)
    assert g.process(C.LeftButtonDoubleClickEvent, (10, 10), ras) == (True, None)  # a second click
    assert g.process(C.LeftButtonReleaseEvent, (10, 10), ras)[1].kind == POINT
    assert g.process(C.RightButtonPressEvent, (10, 10), ras) == (True, None)  # the whole right click is ours
    abort, action = g.process(C.RightButtonReleaseEvent, (10, 10), ras)
    assert abort and action.kind == POINT and not action.include
    g.process(C.RightButtonPressEvent, (10, 10), ras)
    assert g.process(C.RightButtonReleaseEvent, (40, 40), ras) == (True, None)  # a right drag: nothing
    assert g.process(C.RightButtonPressEvent, (10, 10), ras, other_modifier=True) == (False, None)  # alt: zoom
    assert g.process(C.RightButtonReleaseEvent, (40, 40), ras) == (False, None)


def test_worker_runs_jobs_off_the_calling_thread_with_progress_cancel_and_failures(worker):
    caller = threading.get_ident()

    def job(ctx):
        for n in range(3):
            ctx.progress(n + 1, 3)
        return threading.get_ident()

    jid = worker.submit(job, "job")
    events = worker.wait(jid, 10)
    assert [e.value for e in events if e.kind == PROGRESS] == [(1, 3), (2, 3), (3, 3)]
    assert events[-1].kind == DONE and events[-1].value != caller
    gate = threading.Event()
    blocker = worker.submit(lambda ctx: gate.wait(5), "blocker")
    first = worker.submit(lambda ctx: "first", "first", replace="prompt")
    second = worker.submit(lambda ctx: "second", "second", replace="prompt")
    gate.set()
    assert worker.wait(first, 10)[-1].kind == CANCELLED  # a newer prompt replaced it while queued
    assert worker.wait(second, 10)[-1].value == "second"
    assert worker.wait(blocker, 10)[-1].kind == DONE

    def slow(ctx):
        while True:
            ctx.check()
            time.sleep(0.01)

    running = worker.submit(slow, "slow")
    time.sleep(0.05)
    worker.cancel(running)
    assert worker.wait(running, 10)[-1].kind == CANCELLED

    def broken(ctx):
        raise ValueError("model file missing")

    failed = worker.wait(worker.submit(broken, "broken"), 10)[-1]
    assert failed.kind == FAILED and "model file missing" in str(failed.error) and "ValueError" in failed.details
    assert not worker.busy()
    assert JobCancelled.__name__ == "JobCancelled"


def test_session_reports_backend_failures_as_status(slicer_env, worker):
    session, *_ = make(slicer_env, worker)

    def no_backend(settings):
        raise RuntimeError("server http://gpu:8000 unreachable")

    session.provider = BackendProvider(BackendSettings(), factory=no_backend)
    session.set_box(ras(session, (5, 3), 10), ras(session, (36, 28), 10), view_at(slicer_env, session, 10))
    messages = session.wait(30)
    assert "unreachable" in messages[-1] and "failed" in session.status


def test_propagation_reports_progress_and_stop_keeps_the_preview_as_it_was(slicer_env, worker):
    session, node, segmentation, sid, target, truth, backend = make(slicer_env, worker)
    session.options.range_mode = "volume"
    session.set_box(ras(session, (5, 3), 10), ras(session, (36, 28), 10), view_at(slicer_env, session, 10))
    session.wait(30)
    before = {i: m.copy() for i, m in session.masks.items()}
    backend.delay = 0.05  # each new slice takes a while to encode
    session.propagate()
    deadline = time.monotonic() + 30
    while not (session.progress and session.progress[0] >= 2) and time.monotonic() < deadline:
        session.poll()
        time.sleep(0.01)
    done, total = session.progress
    assert 2 <= done < total == 19  # 9 slices below the seed, 10 above
    session.cancel_running()  # the effect's Stop button
    messages = session.wait(30)
    assert messages[-1] == "propagation cancelled: the preview is as it was"
    assert set(session.masks) == set(before) and session.progress is None and session.has_preview


class _FirstMaskTooSmall(ThresholdBackend):
    """The first box is answered with a small core of the object (as LiteMedSAM kept 48 px of a 149 px kidney in
    the user's box on mr-abdomen), every later prompt as ThresholdBackend does."""

    first = True

    def decode(self, handle, prompt, multimask=None):
        pred = super().decode(handle, prompt, multimask)
        if not self.first:
            return pred
        self.first = False
        ys, xs = np.nonzero(pred.masks[0])
        core = np.zeros_like(pred.masks[0])
        core[int(ys.mean()) - 1:int(ys.mean()) + 2, int(xs.mean()) - 1:int(xs.mean()) + 2] = True
        return Prediction(core[None], [0.9])


def test_propagate_leaves_the_box_slice_from_the_users_box_where_the_mask_is_too_small_for_it(slicer_env, worker):
    """Issue 11: a box whose mask fills little of it; Propagate walks from the user's box (it is the object's
    extent on that slice), not from the too small mask (which stopped the walk at once: "grow at slice 11")."""
    session, node, segmentation, sid, target, truth, _ = make(slicer_env, worker)
    session.provider.use(_FirstMaskTooSmall(("box",)))
    view = view_at(slicer_env, session, 10)
    session.set_box(ras(session, (5, 3), 10), ras(session, (36, 28), 10), view)
    session.wait(30)
    assert session.masks[10].sum() == 9
    session.options.range_mode = "volume"
    session.propagate()
    session.wait(60)
    assert sorted(session.masks) == [i for i in range(20) if truth[i].sum() >= 5]
    assert all(np.array_equal(session.masks[i], truth[i]) for i in session.masks if i != 10)
