"""Core without a model: geometry, preprocessing, prompts, markups -> prompts, propagation rules."""
from __future__ import annotations

import numpy as np
import pytest

from samed.core import geometry as g
from samed.core.backend import Backend, EmbeddingHandle, image_key
from samed.core.markup_prompts import prompts_from_markups
from samed.core.markups import PointList, Roi
from samed.core.preprocess import IntensityError, compute_window, slice_to_rgb
from samed.core.prompts import BOX, Prediction, Prompt, PromptError, box_from_mask
from samed.core.propagation import PropagationResult, PropagationSettings, propagate


def rotated_matrix(spacing=(0.8, 1.1, 3.0), angle=0.4, origin=(10.0, -20.0, 30.0)):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag([-1.0, 1.0, 1.0])  # rotated and mirrored
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag(spacing)
    m[:3, 3] = origin
    return m


# ---------------------------------------------------------------------------------------------- geometry
def test_ijk_ras_round_trip_with_rotation_and_anisotropic_spacing():
    m = rotated_matrix()
    ijk = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [12.5, 7.25, 3.0]])
    ras = g.ijk_to_ras(ijk, m)
    assert np.allclose(ras[0], m[:3, 3])
    assert np.isclose(np.linalg.norm(ras[1] - ras[0]), 0.8)
    assert np.isclose(np.linalg.norm(ras[3] - ras[0]), 3.0)
    assert np.allclose(g.ras_to_ijk(ras, m), ijk)


def test_lps_matrix_conversion_round_trip():
    m = rotated_matrix()
    origin, spacing, direction = g.matrix_to_lps(m)
    assert np.allclose(g.matrix_from_lps(origin, spacing, direction), m)
    assert np.allclose(spacing, [0.8, 1.1, 3.0])


def test_view_names_follow_the_direction_matrix():
    assert g.numpy_axis("axial", np.eye(4)) == 0
    assert g.numpy_axis("coronal", np.eye(4)) == 1
    assert g.numpy_axis("sagittal", np.eye(4)) == 2
    # a sagittally acquired volume: i runs A->P, j runs S->I, k runs L->R
    m = np.eye(4)
    m[:3, :3] = np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]])
    assert g.numpy_axis("sagittal", m) == 0  # k is the R axis
    assert g.numpy_axis("axial", m) == 1  # j is the S axis
    assert g.numpy_axis("coronal", m) == 2
    with pytest.raises(g.GeometryError, match="unknown axis"):
        g.numpy_axis("oblique")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_xy_maps_back_to_the_same_voxel(axis):
    arr = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    index = 2
    sl = g.extract_slice(arr, axis, index)
    y, x = 1, 3
    kji = g.slice_xy_to_kji([[x, y]], axis, index)[0].astype(int)
    assert arr[tuple(kji)] == sl[y, x]
    xy, pos = g.kji_to_slice_xy([kji], axis)
    assert np.allclose(xy[0], [x, y]) and pos[0] == index


def test_ras_point_lands_on_its_voxel_in_a_rotated_volume():
    m = rotated_matrix()
    arr = np.zeros((6, 20, 30))
    kji = np.array([4, 11, 17])
    arr[tuple(kji)] = 1
    ras = g.ijk_to_ras(kji[::-1][None], m)
    xy, pos = g.ras_to_slice_xy(ras, m, 0)
    assert int(round(pos[0])) == 4
    sl = g.extract_slice(arr, 0, int(round(pos[0])))
    assert sl[int(round(xy[0, 1])), int(round(xy[0, 0]))] == 1


def test_slice_index_out_of_range_is_a_clear_error():
    with pytest.raises(g.GeometryError, match="slices 0..3"):
        g.extract_slice(np.zeros((4, 5, 6)), 0, 4)


# ---------------------------------------------------------------------------------------------- preprocessing
def test_ct_window_and_auto_choice():
    ct = np.array([[-1024, -500, 250, 1000, 3000]], dtype=np.int16)
    w = compute_window(ct)
    assert w.mode == "ct" and (w.low, w.high) == (-500, 1000)
    assert w.apply(ct).tolist() == [[0, 0, 128, 255, 255]]


def test_percentile_window_ignores_outliers_and_nan():
    rng = np.random.default_rng(0)
    mr = rng.normal(300, 50, (64, 64)).astype(np.float32)
    mr[0, 0] = 1e6
    mr[0, 1] = np.nan
    w = compute_window(mr, "auto")
    assert w.mode == "percentile" and w.high < 1000
    out = w.apply(mr)
    assert out.dtype == np.uint8 and out[0, 0] == 255 and out[0, 1] == 0


def test_explicit_window_level_and_bad_modes():
    w = compute_window(np.zeros((4, 4)), "window", window=400, level=40)
    assert (w.low, w.high) == (-160, 240)
    with pytest.raises(IntensityError, match="unknown intensity mode"):
        compute_window(np.zeros((4, 4)), "gamma")
    with pytest.raises(IntensityError, match="needs both"):
        compute_window(np.zeros((4, 4)), "window", window=400)


def test_8bit_rgb_picture_passes_through_unchanged():
    pic = np.zeros((5, 6, 3), np.uint8)
    pic[..., 0] = 255
    pic[0, 0] = 0
    w = compute_window(pic)
    assert w.mode == "none"
    assert np.array_equal(slice_to_rgb(pic, w), pic)
    assert np.array_equal(slice_to_rgb(pic[..., 0], w)[..., 1], pic[..., 0])
    stretched = slice_to_rgb(pic, compute_window(np.array([[10, 20]], np.uint8), "minmax"))
    assert stretched.max() == 255


# ---------------------------------------------------------------------------------------------- prompts
def test_prompt_validation_messages():
    with pytest.raises(PromptError, match="outside the slice"):
        Prompt(box_xy=[200, 200, 300, 300]).validate((100, 100))
    with pytest.raises(PromptError, match="outside the slice"):
        Prompt(include_points_xy=[[-3, 5]]).validate((100, 100))
    with pytest.raises(PromptError, match="empty"):
        Prompt().validate((10, 10))
    p = Prompt(include_points_xy=[[1, 2]], exclude_points_xy=[[3, 4]], box_xy=[9, 8, 2, 1])
    assert p.box_xy.tolist() == [2, 1, 9, 8]  # corners normalized
    coords, labels = p.sam_points()
    assert coords.tolist() == [[1, 2], [3, 4]] and labels.tolist() == [1, 0]


def test_box_from_mask_with_margin_is_clipped():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert box_from_mask(m).tolist() == [3, 2, 8, 4]
    assert box_from_mask(m, 3).tolist() == [0, 0, 11, 7]
    assert box_from_mask(np.zeros((4, 4), bool)) is None


def test_markups_to_prompts_on_a_rotated_anisotropic_volume():
    m = rotated_matrix()
    vol = g.Volume(np.zeros((8, 40, 50), np.int16), m)
    inc = g.ijk_to_ras([[20, 10, 3]], m)  # i, j, k
    exc = g.ijk_to_ras([[30, 12, 3.3]], m)  # rounds to slice 3
    corners = g.ijk_to_ras([[i, j, k] for i in (5, 15) for j in (6, 16) for k in (2, 5)], m)
    roi = Roi("roi", corners.mean(axis=0), np.ones(3), np.eye(3))
    roi.corners_ras = lambda: corners  # an oblique ROI in RAS that is axis-aligned in this volume's voxels
    sp = prompts_from_markups([PointList("include", inc), PointList("exclude points", exc)], [roi], vol, 0)
    assert sp.roi_range == (2, 5)
    assert sp.indices() == [2, 3, 4, 5]
    p3 = sp.prompts[3]
    assert np.allclose(p3.include_points_xy, [[20, 10]]) and np.allclose(p3.exclude_points_xy, [[30, 12]])
    assert np.allclose(p3.box_xy, [5, 6, 15, 16])
    outside = g.ijk_to_ras([[20, 10, 30]], m)
    with pytest.raises(PromptError, match="outside the volume"):
        prompts_from_markups([PointList("p", outside)], [], vol, 0)


# ---------------------------------------------------------------------------------------------- propagation
class BoxFillBackend(Backend):
    """A stand-in model for testing propagation logic: the mask is the object drawn in the picture's red
    channel (value 200) inside the prompt box; score 0.9."""

    model = "box-fill"

    def __init__(self):
        self.pictures = {}
        self.calls = 0

    def info(self):
        return {}

    def prompt_kinds(self):
        return frozenset({BOX})

    def encode(self, image_rgb):
        key = image_key(self.model, image_rgb)
        self.pictures[key] = image_rgb
        return EmbeddingHandle(key, self.model, image_rgb.shape[:2])

    def decode(self, handle, prompt, multimask=None):
        self.calls += 1
        pic = self.pictures[handle.key]
        x0, y0, x1, y1 = np.round(prompt.box_xy).astype(int)
        mask = np.zeros(pic.shape[:2], bool)
        mask[y0:y1 + 1, x0:x1 + 1] = pic[y0:y1 + 1, x0:x1 + 1, 0] == 200
        return Prediction(mask[None], [0.9])


def _phantom(radii, centre=(20, 20), shape=(40, 40)):
    """Pictures with a disk of the given radius per slice (0 = none)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    pics = []
    for r in radii:
        pic = np.full(shape + (3,), 10, np.uint8)
        if r:
            pic[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r] = 200
        pics.append(pic)
    return pics


def test_propagation_walks_both_ways_and_stops_where_the_object_ends():
    radii = [0, 0, 4, 6, 8, 8, 7, 5, 0, 0]
    pics = _phantom(radii)
    seed = 4
    b = BoxFillBackend()
    result = propagate(b, lambda i: pics[i], len(pics), seed, pics[seed][..., 0] == 200,
                       PropagationSettings(min_score=0.5))
    assert result.indices == [2, 3, 4, 5, 6, 7]
    assert result.stopped["up"].startswith("empty at slice 8")
    assert result.stopped["down"].startswith("empty at slice 1")


def test_propagation_range_and_max_slices_and_cancel():
    pics = _phantom([8] * 10)
    seed_mask = pics[5][..., 0] == 200
    b = BoxFillBackend()
    r = propagate(b, lambda i: pics[i], 10, 5, seed_mask, PropagationSettings(index_range=(3, 7)))
    assert r.indices == [3, 4, 5, 6, 7] and r.stopped["up"].startswith("range")
    r = propagate(b, lambda i: pics[i], 10, 5, seed_mask, PropagationSettings(max_slices=1))
    assert r.indices == [4, 5, 6]
    r = propagate(b, lambda i: pics[i], 10, 5, seed_mask, should_cancel=lambda: True)
    assert r.indices == [5] and r.stopped["up"].startswith("cancelled")


def test_propagation_stops_on_a_jump_in_area():
    pics = _phantom([8, 8, 8, 3, 3])  # the disk shrinks to (3/8)^2 = 14% of its area
    r = propagate(BoxFillBackend(), lambda i: pics[i], 5, 0, pics[0][..., 0] == 200, directions=("up",))
    assert r.indices == [0, 1, 2] and r.stopped["up"].startswith("shrink at slice 3")


class ThresholdBackend(BoxFillBackend):
    """Segments every pixel brighter than 100 inside the box (a model that follows edges, not grey values)."""

    def decode(self, handle, prompt, multimask=None):
        pic = self.pictures[handle.key]
        x0, y0, x1, y1 = np.round(prompt.box_xy).astype(int)
        mask = np.zeros(pic.shape[:2], bool)
        mask[y0:y1 + 1, x0:x1 + 1] = pic[y0:y1 + 1, x0:x1 + 1, 0] > 100
        return Prediction(mask[None], [0.9])


@pytest.mark.parametrize("grey, stops", [(195, False), (150, True)])
def test_propagation_stops_when_the_mask_moves_onto_other_tissue(grey, stops):
    pics = _phantom([8, 8, 8, 8])
    disk = pics[3][..., 0] == 200
    pics[3][disk] = grey  # slice 3's object has another grey value than the seed's (200)
    seed = pics[0][..., 0] == 200
    r = propagate(ThresholdBackend(), lambda i: pics[i], 4, 0, seed, directions=("up",))
    if stops:
        assert r.indices == [0, 1, 2] and r.stopped["up"].startswith("intensity at slice 3")
    else:
        assert r.indices == [0, 1, 2, 3]


def test_merge_replaces_the_walk_beyond_a_corrected_slice():
    old = PropagationResult(5, {i: np.ones((2, 2), bool) for i in range(2, 10)})
    newer = PropagationResult(7, {7: np.zeros((2, 2), bool), 8: np.zeros((2, 2), bool)})
    merged = old.merge(newer, direction="up")
    assert merged.indices == [2, 3, 4, 5, 6, 7, 8]  # 9 followed from the old slice 7: dropped
    assert not merged.masks[7].any()


def test_empty_seed_is_refused():
    with pytest.raises(ValueError, match="empty"):
        propagate(BoxFillBackend(), lambda i: None, 3, 1, np.zeros((4, 4), bool))
