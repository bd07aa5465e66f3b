"""Propagate from several key slices in the effect's session (issue 11 item 3), on a real slicer-core scene:

- a box on a second (and third) slice of a propagated preview updates it between and around the key slices, marks
  each slice key / interpolated / walked (session, status, preview node) and says why each end stopped (stand-in
  backend: its masks are known);
- the real LiteMedSAM on CTChest4's right lung (slicerio): boxes on two slices -> the preview covers the slices
  between them, the key slices keep the masks their boxes gave alone; Apply writes exactly the preview; Undo;
- the same through a real model service (``samed serve`` on 127.0.0.1, HttpBackend in the provider).
"""
import numpy as np
import pytest

from slicer_scenes import LPS, ThresholdBackend, add_segmentation, add_volume, ellipsoid, slicer_env  # noqa: F401

from samed.core.geometry import masks_to_volume, slice_xy_to_ras
from samed.core.metrics import dice
from samed.core.prompts import box_from_mask
from SegmentAnythingMedLib import segment_writer, volume_bridge
from SegmentAnythingMedLib.backend_settings import BackendProvider, BackendSettings
from SegmentAnythingMedLib.errors import BridgeError
from SegmentAnythingMedLib.key_slice_session import SLICE_KINDS_ATTRIBUTE
from SegmentAnythingMedLib.preview import SegmentPreview
from SegmentAnythingMedLib.session import EditSession
from SegmentAnythingMedLib.worker import InferenceWorker

RIGHT_LUNG_MIN_DICE = 0.85  # between the two key slices; measured: see the test's printout


@pytest.fixture
def worker():
    w = InferenceWorker()
    yield w
    w.shutdown()


def session_on(env, worker, node, segmentation, sid, backend):
    provider = BackendProvider(BackendSettings())
    provider.use(backend)
    session = EditSession(provider, worker, SegmentPreview(env.scene))
    session.set_source(node, segmentation, sid)
    target = segment_writer.LogicEditTarget.create(env.scene, segmentation, node, sid, application_logic=env.app_logic)
    return session, target


def view_at(env, session, index):
    volume = session.snapshot().volume
    slice_node = env.slice_node("Axial")
    slice_node.JumpSliceByCentering(*volume_bridge.slice_position_ras(volume, 0, index))
    return session.view_of(slice_node)


def draw_box(env, session, index, box_xy):
    """Drag a box (x0, y0, x1, y1 in slice pixels) on axial slice ``index``, as the effect's rubber band does."""
    x0, y0, x1, y1 = box_xy
    a, b = slice_xy_to_ras([[x0, y0], [x1, y1]], session.snapshot().volume.ijk_to_ras, 0, index)
    session.set_box(a, b, view_at(env, session, index))
    session.wait(300)
    return session.masks[index].copy()


def test_a_box_on_another_slice_updates_the_propagated_preview_between_and_around(slicer_env, worker):
    image, truth = ellipsoid((20, 30, 40), (10, 15, 20), (6, 8, 10))
    node = add_volume(slicer_env.scene, image, (0.8, 0.9, 2.5), LPS, (10.0, 20.0, 30.0))
    segmentation, (sid,) = add_segmentation(slicer_env.scene, node, ("ball",))
    session, target = session_on(slicer_env, worker, node, segmentation, sid, ThresholdBackend())
    session.options.range_mode = "volume"
    draw_box(slicer_env, session, 10, (5, 3, 36, 28))
    session.propagate()
    session.wait(60)
    walked_once = {i: m.copy() for i, m in session.masks.items()}
    assert session.slice_kinds == {i: "key" if i == 10 else "walked" for i in walked_once}  # one key: the walk
    # a second box, on slice 13, around the left part of the ball only: a key slice
    left = draw_box(slicer_env, session, 13, (5, 3, 17, 28))
    assert not np.any(left[:, 18:])
    session.propagate()
    messages = session.wait(60)
    kinds = session.slice_kinds
    assert [kinds[i] for i in range(10, 14)] == ["key", "interpolated", "interpolated", "key"]
    assert all(kinds[i] == "walked" for i in session.masks if i < 10 or i > 13)
    assert np.array_equal(session.masks[13], left) and np.array_equal(session.masks[10], walked_once[10])
    # between the keys: from the whole ball (10) towards its left part (13); above 13: walked from the left part
    right_part = [int(session.masks[i][:, 21:].sum()) for i in (10, 11, 12, 13)]
    assert right_part[0] > right_part[1] >= right_part[2] >= right_part[3] == 0, right_part
    assert session.masks[11].sum() < walked_once[11].sum() and session.masks[14].sum() < walked_once[14].sum()
    for i in range(0, 10):  # below the lower key: walked from it as before
        assert (i in session.masks) == (i in walked_once)
        if i in walked_once:
            assert np.array_equal(session.masks[i], walked_once[i])
    status = messages[-1]
    assert status.startswith("preview on") and "key 10, 13; interpolated 11..12; walked " in status, status
    assert "stopped down: empty at slice 4: 0 px; up: empty at slice 16: 0 px" in status, status  # the ball: 5..15
    assert session.preview.node.GetAttribute(SLICE_KINDS_ATTRIBUTE).startswith("key 10, 13; interpolated 11..12")
    assert segment_writer.segment_mask(segmentation, sid, session.snapshot().volume).sum() == 0  # only on Apply
    # a third key slice below the first: three keys, two gaps filled
    draw_box(slicer_env, session, 7, (5, 3, 36, 28))
    session.propagate()
    session.wait(60)
    assert [session.slice_kinds[i] for i in range(7, 14)] == ["key"] + ["interpolated"] * 2 + ["key"] + \
        ["interpolated"] * 2 + ["key"]


def test_key_slices_outside_the_range_and_empty_keys_are_refused_before_any_work(slicer_env, worker):
    image, truth = ellipsoid((20, 30, 40), (10, 15, 20), (6, 8, 10))
    node = add_volume(slicer_env.scene, image, (0.8, 0.9, 2.5), LPS)
    segmentation, (sid,) = add_segmentation(slicer_env.scene, node, ("ball",))
    session, target = session_on(slicer_env, worker, node, segmentation, sid, ThresholdBackend())
    draw_box(slicer_env, session, 9, (5, 3, 36, 28))
    draw_box(slicer_env, session, 12, (5, 3, 36, 28))
    session.options.range_mode, session.options.set_range = "set", (8, 10)
    with pytest.raises(BridgeError, match=r"key slice\(s\) 12 lie outside the propagation range 8..10"):
        session.propagate()
    assert not session.busy
    session.cancel()
    draw_box(slicer_env, session, 1, (0, 0, 5, 5))  # the ball is not there: empty masks
    draw_box(slicer_env, session, 2, (0, 0, 5, 5))
    with pytest.raises(BridgeError, match="all gave empty masks"):
        session.propagate()


def test_stop_during_a_key_slice_propagation_keeps_the_preview_as_it_was(slicer_env, worker):
    import time

    image, truth = ellipsoid((20, 30, 40), (10, 15, 20), (6, 8, 10))
    node = add_volume(slicer_env.scene, image, (0.8, 0.9, 2.5), LPS)
    segmentation, (sid,) = add_segmentation(slicer_env.scene, node, ("ball",))
    backend = ThresholdBackend()
    session, target = session_on(slicer_env, worker, node, segmentation, sid, backend)
    session.options.range_mode = "volume"
    draw_box(slicer_env, session, 8, (5, 3, 36, 28))
    draw_box(slicer_env, session, 12, (5, 3, 36, 28))
    before = {i: m.copy() for i, m in session.masks.items()}
    backend.delay = 0.05  # each slice not seen yet takes a while to encode
    session.propagate()
    deadline = time.monotonic() + 30
    while not (session.progress and session.progress[0] >= 3) and time.monotonic() < deadline:
        session.poll()
        time.sleep(0.01)
    assert session.progress[0] >= 3 and session.busy
    session.cancel_running()  # the effect's Stop button
    assert session.wait(30)[-1] == "propagation cancelled: the preview is as it was"
    assert sorted(session.masks) == [8, 12] and all(np.array_equal(session.masks[i], before[i]) for i in before)
    assert session.slice_kinds == {} and session.progress is None


def load_ctchest(env, ctchest):
    ct, seg_file = ctchest
    node = env.logics["volumes"].AddArchetypeVolume(str(ct), "CTChest4")
    reference = env.logics["segmentations"].LoadSegmentationFromFile(str(seg_file), False)
    volume = volume_bridge.volume_from_node(node)
    lung_id = reference.GetSegmentation().GetSegmentIdBySegmentName("right lung")
    lung = segment_writer.segment_mask(reference, lung_id, volume)
    segmentation, (sid,) = add_segmentation(env.scene, node, ("right lung (SAM)",), name="result")
    return node, segmentation, sid, lung


def test_two_boxes_on_ctchest_right_lung_with_litemedsam_preview_apply_undo(slicer_env, worker, ctchest,
                                                                           lite_backend, capsys):
    node, segmentation, sid, lung = load_ctchest(slicer_env, ctchest)
    slices = np.flatnonzero(lung.any(axis=(1, 2)))
    a = int(slices[0] + len(slices) // 3)
    b = a + 5
    session, target = session_on(slicer_env, worker, node, segmentation, sid, lite_backend)
    session.options.intensity_mode = "minmax"
    session.options.range_mode, session.options.set_range = "set", (a - 2, b + 2)  # bounds the walk (CPU time)
    box_a, box_b = box_from_mask(lung[a]), box_from_mask(lung[b])
    alone_a = draw_box(slicer_env, session, a, box_a)
    session.propagate()  # one key slice: the walk from it
    session.wait(600)
    assert set(session.slice_kinds.values()) == {"key", "walked"}
    alone_b = draw_box(slicer_env, session, b, box_b)  # a box on a second slice of the propagated preview
    session.propagate()
    status = session.wait(600)[-1]
    kinds = session.slice_kinds
    assert [kinds[i] for i in range(a, b + 1)] == ["key"] + ["interpolated"] * (b - a - 1) + ["key"], status
    assert np.array_equal(session.masks[a], alone_a) and np.array_equal(session.masks[b], alone_b)
    assert f"key {a}, {b}; interpolated {a + 1}..{b - 1}" in status and "stopped" in status, status
    between = [dice(session.masks[i], lung[i]) for i in range(a, b + 1)]
    volume = session.snapshot().volume
    preview = masks_to_volume(session.masks, volume.array.shape, 0)
    assert not segment_writer.segment_mask(segmentation, sid, volume).any()  # nothing before Apply
    session.apply(target)
    written = segment_writer.segment_mask(segmentation, sid, volume)
    with capsys.disabled():
        print(f"\nCTChest4 right lung, LiteMedSAM, reference boxes on slices {a} and {b}: {status}\n"
              f"  per-slice Dice {a}..{b}: {[round(d, 3) for d in between]}; "
              f"slices {sorted(np.flatnonzero(written.any(axis=(1, 2))).tolist())} written")
    assert min(between) > RIGHT_LUNG_MIN_DICE
    assert np.array_equal(written, preview)
    assert not session.has_preview and session.preview.node is None
    # the segment records how it was made (the tag samed segment writes and --continue reads): both boxes, the fill
    how = segment_writer.segment_provenance(segmentation, sid)
    assert how is not None and how.axis == "k" and how.engine
    assert {p.slice: [round(v) for v in p.box_xy] for p in how.prompts} == {a: list(box_a), b: list(box_b)}
    touched = np.flatnonzero(written.any(axis=(1, 2)))
    assert how.propagation["range"] == [int(touched[0]), int(touched[-1])]
    how.check_grid(volume.shape_kji, volume.ijk_to_ras, "CTChest4")
    target.undo()
    assert not segment_writer.segment_mask(segmentation, sid, volume).any()
    assert segment_writer.segment_provenance(segmentation, sid) is None, "Undo left the provenance of the undone"


def test_key_slices_through_the_model_service(slicer_env, worker, ctchest, samed_service, lite_backend):
    """The same job through HttpBackend (a real ``samed serve``): the masks match the in-process model's."""
    node, segmentation, sid, lung = load_ctchest(slicer_env, ctchest)
    slices = np.flatnonzero(lung.any(axis=(1, 2)))
    a = int(slices[0] + len(slices) // 2)
    results = []
    for backend in ("service", lite_backend):
        session, target = session_on(slicer_env, worker, node, segmentation, sid, lite_backend)
        if backend == "service":
            session.provider = BackendProvider(BackendSettings(where=samed_service.url))
        session.options.intensity_mode = "minmax"
        session.options.range_mode, session.options.set_range = "set", (a - 1, a + 4)
        draw_box(slicer_env, session, a, box_from_mask(lung[a]))
        draw_box(slicer_env, session, a + 3, box_from_mask(lung[a + 3]))
        session.propagate()
        session.wait(600)
        if backend == "service":
            assert type(session.provider.get()).__name__ == "HttpBackend"
        assert [session.slice_kinds[i] for i in range(a, a + 4)] == ["key", "interpolated", "interpolated", "key"]
        results.append({i: m.copy() for i, m in session.masks.items()})
        session.cancel()
    service, local = results
    assert sorted(service) == sorted(local)
    assert all(dice(service[i], local[i]) > 0.99 for i in local), {i: dice(service[i], local[i]) for i in local}
