"""The simulated user in 3D (samed.evaluation.interactive_3d): synthetic volumes where each round's choice and
result are known, and the real LiteMedSAM on one small shared volume."""
from __future__ import annotations

import numpy as np
import pytest

from samed.core.geometry import Volume
from samed.core.preprocess import IntensityWindow
from samed.core.volume_session import VolumeSession
from samed.evaluation.interactive_3d import ABSENT, BOX, EXCLUDE, INCLUDE, next_slice, run_interactive_3d
from test_key_slices import BrightInBoxBackend, disk


def session_for(values: np.ndarray, backend) -> VolumeSession:
    vol = Volume(values.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    return VolumeSession(vol, backend, intensity=IntensityWindow(0, 255))


def test_next_slice_is_the_largest_error_not_yet_a_key_lowest_on_ties():
    ref = np.zeros((6, 8, 8), bool)
    pred = np.zeros_like(ref)
    ref[1, :4, :4] = True  # 16 voxels missed on slice 1
    pred[3, :2, :2] = True  # 4 false voxels on slice 3
    pred[4, :4, :4] = True  # 16 false voxels on slice 4 (a tie with slice 1)
    assert next_slice(pred, ref, 0, taken=set()) == 1
    assert next_slice(pred, ref, 0, taken={1}) == 4
    assert next_slice(pred, ref, 0, taken={1, 4}) == 3
    assert next_slice(ref, ref, 0, taken=set()) is None


def test_a_walk_past_the_objects_end_is_marked_absent_and_then_exact():
    """The object (slices 4..11) sits on a same-grey structure of the same shape (slices 12..14), which the
    walk follows: round 1 overshoots by 3 slices. Round 2 marks slice 12 (largest error, lowest of the ties)
    absent; the result is then exact, and later rounds have nothing left to correct."""
    values = np.zeros((16, 64, 64))
    for k in range(4, 15):
        values[k][disk(8)] = 200
    ref = np.zeros(values.shape, bool)
    ref[4:12] = disk(8)
    out = run_interactive_3d(session_for(values, BrightInBoxBackend()), ref, 4)
    assert [(r.action, r.slice) for r in out.rounds[:2]] == [(BOX, 7), (ABSENT, 12)]
    assert out.rounds[0].dice == pytest.approx(16 / 19)  # 8 right slices, 3 false ones
    assert [r.dice for r in out.rounds[1:]] == [1.0, 1.0, 1.0]
    assert out.rounds[2].action == "none"
    assert out.oracle["dice"] == 1.0 and out.oracle_boxes == 8 and out.boxes_to(0.9) == 2
    again = run_interactive_3d(session_for(values, BrightInBoxBackend()), ref, 4)  # deterministic
    assert [(r.slice, r.dice) for r in again.rounds] == [(r.slice, r.dice) for r in out.rounds]


def test_a_box_where_the_walk_stopped_too_early_extends_the_object():
    """The object narrows abruptly at slice 10 (radius 10 -> 4: the walk's shrink rule stops there). Round 2
    boxes slice 10 (the largest missed area, lowest of the ties); slices 10..12 are then found exactly."""
    values = np.zeros((16, 64, 64))
    ref = np.zeros(values.shape, bool)
    for k in range(2, 13):
        ref[k] = disk(10 if k < 10 else 4)
    values[ref] = 200
    out = run_interactive_3d(session_for(values, BrightInBoxBackend()), ref, 2)
    first, second = out.rounds
    assert (first.action, first.slice) == (BOX, 7) and "shrink at slice 10" in first.stopped
    assert (second.action, second.slice) == (BOX, 10)
    assert np.array_equal(second.pred[10:], ref[10:])
    assert second.dice > first.dice


def test_real_model_first_round_is_todays_propagation(lite_backend, shared_data):
    """LiteMedSAM on mr-abdomen's spleen (20 slices): one box equals today's --propagate row exactly; the oracle
    equals the box-every-slice row; more boxes never leave the result worse than one box here."""
    from samed.core import io
    from samed.evaluation.volumes import EVERY_SLICE, PROPAGATE, evaluate_volume_class

    d = shared_data / "volumes" / "mr-abdomen"
    volume = io.read_volume(d / "image.nii.gz")
    ref = np.asarray(io.resample_to(io.read_volume(d / "label.nii.gz"), volume).array) == 1
    session = VolumeSession(volume, lite_backend)
    rows = {r["method"]: r for r in evaluate_volume_class(session, ref, "score", 2.0)}
    out = run_interactive_3d(session, ref, 3)
    assert out.rounds[0].dice == pytest.approx(rows[PROPAGATE]["dice"], abs=1e-9)
    assert out.oracle["dice"] == pytest.approx(rows[EVERY_SLICE]["dice"], abs=1e-9)
    assert out.oracle_boxes == rows[EVERY_SLICE]["ref_slices"] == 12
    assert 0.75 < out.rounds[0].dice and min(r.dice for r in out.rounds[1:]) >= out.rounds[0].dice - 0.01


class BrightRegionPointBackend(BrightInBoxBackend):
    """Takes points: the bright region (8-connected) under the include points, less its pixels nearer to an
    exclude point than to every include point (a click splits what the model finds, as SAM's do)."""
    model = "bright-region-points"

    def prompt_kinds(self):
        return frozenset({"point", "box"})

    def decode(self, handle, prompt, multimask=None):
        from scipy import ndimage

        from samed.core.backend import Prediction

        if prompt.box_xy is not None:
            return super().decode(handle, prompt, multimask)
        pic = self.pictures[handle.key]
        labels, _ = ndimage.label(pic[..., 0] > self.threshold, structure=np.ones((3, 3)))
        include = np.asarray(prompt.include_points_xy, float).reshape(-1, 2)
        exclude = np.asarray(prompt.exclude_points_xy, float).reshape(-1, 2)
        hit = {int(labels[int(round(y)), int(round(x))]) for x, y in include} - {0}
        mask = np.isin(labels, list(hit))
        if len(exclude):
            yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]]
            near = lambda pts: np.min([np.hypot(xx - x, yy - y) for x, y in pts], axis=0)  # noqa: E731
            mask &= ~(near(exclude) < near(include))
        return Prediction(mask[None], [0.9 if mask.any() else 0.1])


def test_the_point_user_clicks_the_centre_then_corrects_with_an_exclude_point():
    """interactive-3d-points: the object is the left half of a bright disk on slice 2 (slices 1 and 3 dark).
    Round 1: an include point at the reference's centre -> the whole disk (the right half is false). Round 2:
    the largest error is still on key slice 2: an exclude point at the centre of the false right half -> the
    left part only; Dice rises. Deterministic for a seed."""
    values = np.zeros((5, 64, 64))
    values[2][disk(12)] = 200
    ref = np.zeros(values.shape, bool)
    ref[2] = disk(12)
    ref[2][:, 32:] = False
    out = run_interactive_3d(session_for(values, BrightRegionPointBackend()), ref, 3, user="points", seed=1)
    assert [(r.action, r.slice) for r in out.rounds[:2]] == [(INCLUDE, 2), (EXCLUDE, 2)]
    first, second = out.rounds[0].dice, out.rounds[1].dice
    assert first == pytest.approx(2 * ref.sum() / (ref.sum() + disk(12).sum()))
    assert second > first + 0.2
    again = run_interactive_3d(session_for(values, BrightRegionPointBackend()), ref, 3, user="points", seed=1)
    assert [(r.action, r.slice, r.dice) for r in again.rounds] == [(r.action, r.slice, r.dice) for r in out.rounds]


def test_the_point_user_marks_a_walk_past_the_end_absent_like_the_box_user():
    values = np.zeros((16, 64, 64))
    for k in range(4, 15):
        values[k][disk(8)] = 200
    ref = np.zeros(values.shape, bool)
    ref[4:12] = disk(8)
    out = run_interactive_3d(session_for(values, BrightRegionPointBackend()), ref, 3, user="points")
    assert [(r.action, r.slice) for r in out.rounds[:2]] == [(INCLUDE, 7), (ABSENT, 12)]
    assert out.rounds[1].dice == 1.0


def test_the_point_user_is_refused_for_a_box_only_model():
    with pytest.raises(ValueError, match="does not take point prompts.*interactive-3d:N"):
        run_interactive_3d(session_for(np.zeros((3, 8, 8)), BrightInBoxBackend()), np.ones((3, 8, 8), bool), 2,
                           user="points")
