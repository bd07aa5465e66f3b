"""Prompt modes, Algorithm 1, candidate choice and everything mode against model-free backends with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from test_evaluation_fakes import BoxOnlyBackend, PerfectBackend, ShapeBackend, disk, picture_of

from samed.core import metrics
from samed.evaluation.everything import best_matches, grid_points
from samed.evaluation.iterative import run_iterative
from samed.evaluation.prompt_modes import all_modes, get_mode, parse_modes
from samed.evaluation.runner import EvaluationSettings, Task, evaluate_task
from samed.evaluation.simulate import ORACLE, SCORE, run_single
from samed.evaluation.tables import summarize


def rng(seed=0):
    return np.random.default_rng(seed)


def square(shape=(50, 50), top_left=(10, 10), side=21):
    m = np.zeros(shape, bool)
    m[top_left[0]:top_left[0] + side, top_left[1]:top_left[1] + side] = True
    return m


def encoded(backend, ref, picture=None):
    return backend.encode(picture_of(ref) if picture is None else picture)


# ---------------------------------------------------------------------------------------------- Algorithm 1


def test_algorithm_1_first_click_is_the_centre_then_an_include_click_in_a_missed_corner():
    ref = square()  # rows and columns 10..30: centre (20, 20), 441 px
    b = ShapeBackend(radius=6)
    out = run_iterative(b, encoded(b, ref), ref, 3, rng())
    assert [o.mode for o in out] == ["iterative:1", "iterative:2", "iterative:3"]
    assert [o.clicks for o in out] == [1, 2, 3]
    first = out[0].prompts[0]
    np.testing.assert_array_equal(first.include_points_xy, [[20, 20]])
    np.testing.assert_array_equal(out[0].mask, disk(ref.shape, (20, 20), 6))  # highest score of three
    second = out[1].prompts[0]
    assert len(second.include_points_xy) == 2 and len(second.exclude_points_xy) == 0
    x, y = second.include_points_xy[1]
    # the missed part is the square minus a central disk: its most central pixels are on the diagonals,
    # about 7 px from the centre towards one of the four corners
    assert min(math.hypot(x - cx, y - cy) for cx in (13, 27) for cy in (13, 27)) <= 1.5
    ious = [metrics.iou(o.mask, ref) for o in out]
    assert ious[0] < ious[1] < ious[2]


def test_algorithm_1_clicks_exclude_where_the_prediction_overflows():
    ref = np.zeros((60, 60), bool)
    ref[27:33, 5:55] = True  # a 6 px strip: a disk of radius 14 on it overflows above and below
    b = ShapeBackend(radius=14)
    out = run_iterative(b, encoded(b, ref), ref, 2, rng())
    p = out[1].prompts[0]
    assert len(p.include_points_xy) == 1 and len(p.exclude_points_xy) == 1
    x, y = p.exclude_points_xy[0]
    assert out[0].mask[int(y), int(x)] and not ref[int(y), int(x)]


def test_algorithm_1_stops_at_a_perfect_mask_and_repeats_it():
    ref = square()
    b = PerfectBackend()
    out = run_iterative(b, encoded(b, ref), ref, 4, rng())
    assert [o.mode for o in out] == ["iterative:1", "iterative:2", "iterative:3", "iterative:4"]
    assert [o.clicks for o in out] == [1, 1, 1, 1]
    assert b.decodes == 1
    assert all(metrics.iou(o.mask, ref) == 1.0 for o in out)


def test_algorithm_1_on_an_empty_class_gives_nothing():
    b = ShapeBackend()
    empty = np.zeros((20, 20), bool)
    assert run_iterative(b, encoded(b, empty), empty, 5, rng()) == []


def test_algorithm_1_on_a_mask_touching_the_border_clicks_inside():
    ref = np.zeros((40, 40), bool)
    ref[0:15, 0:40] = True  # the top 15 rows: the border is boundary, so the centre row is 7, not 0
    b = ShapeBackend(radius=4)
    out = run_iterative(b, encoded(b, ref), ref, 2, rng())
    assert out[0].prompts[0].include_points_xy[0][1] == 7
    assert all(0 < y < 14 for _, y in out[1].prompts[0].include_points_xy)


# ---------------------------------------------------------------------------------------------- candidates


def test_score_takes_the_highest_scoring_candidate_and_the_oracle_the_closest():
    ref = disk((40, 40), (20, 20), 6)
    b = ShapeBackend(radius=6, scores=(0.3, 0.9, 0.6))  # exact disk, dilated (best score), eroded
    mode = get_mode("point-largest")
    by_score = run_single(b, encoded(b, ref), mode, ref, rng(), SCORE)
    oracle = run_single(b, encoded(b, ref), mode, ref, rng(), ORACLE)
    assert by_score.score == pytest.approx(0.9) and metrics.iou(by_score.mask, ref) < 1
    assert oracle.score == pytest.approx(0.3) and metrics.iou(oracle.mask, ref) == 1.0


def test_the_oracle_asks_for_three_candidates_even_for_a_box():
    ref = square()
    b = ShapeBackend(scores=(0.3, 0.9, 0.6))
    h = encoded(b, ref)
    by_score = run_single(b, h, get_mode("box-all"), ref, rng(), SCORE)  # one candidate: the exact mask
    oracle = run_single(b, h, get_mode("box-all"), ref, rng(), ORACLE)
    assert metrics.iou(by_score.mask, ref) == 1.0 and metrics.iou(oracle.mask, ref) == 1.0


def test_box_per_region_unites_one_mask_per_region():
    ref = square() | square(top_left=(35, 35), side=10)
    b = ShapeBackend()
    out = run_single(b, encoded(b, ref), get_mode("box-per-region"), ref, rng())
    assert len(out.prompts) == 2 and out.clicks == 2
    np.testing.assert_array_equal(out.mask, ref)
    largest = run_single(b, encoded(b, ref), get_mode("box-largest"), ref, rng())
    np.testing.assert_array_equal(largest.mask, square())


# ---------------------------------------------------------------------------------------------- everything


def test_everything_finds_the_grid_mask_that_matches_each_class():
    shape = (64, 64)
    centre = tuple(grid_points(shape, 8)[3 * 8 + 3])  # (27.5, 27.5)
    refs = {1: disk(shape, centre, 6), 2: square(shape, (50, 2), 8)}
    b = ShapeBackend(radius=6)
    label = np.zeros(shape, np.uint8)
    label[refs[1]] = 1
    label[refs[2]] = 2
    best = best_matches(b, encoded(b, label > 0), refs, grid=8)
    assert metrics.iou(best[1].mask, refs[1]) == 1.0 and best[1].score == pytest.approx(0.9)
    assert 0 < metrics.iou(best[2].mask, refs[2]) < 1
    assert b.decodes == 64


# ---------------------------------------------------------------------------------------------- rows


def _task(ref_map):
    return Task("synthetic", None, picture_of(ref_map > 0), {int(c): ref_map == c for c in np.unique(ref_map) if c},
                None)


def test_rows_of_every_mode_with_a_box_only_model_say_not_supported_not_zero():
    lab = np.zeros((50, 50), np.uint8)
    lab[square()] = 1
    settings = EvaluationSettings(all_modes(iterative_points=3))
    rows = evaluate_task(BoxOnlyBackend(), _task(lab), None, {1: "thing"}, "set", settings=settings)
    by = {r["prompt"]: r for r in rows}
    assert set(by) == set(settings.row_names())
    for name in ("point-largest", "point-per-region", "iterative:1", "iterative:3", "everything", "point-offset:0.5"):
        assert by[name]["status"] == "not supported" and by[name].get("dice") is None
    for name in ("box-largest", "box-per-region", "box-all", "box-shift:0.1"):
        assert by[name]["status"] == "ok"
    assert by["box-all"]["dice"] == 1.0 and by["box-all"]["selection"] == "score" and by["box-all"]["clicks"] == 1
    reasons = {n: get_mode(n.replace("iterative:1", "iterative:3")).unsupported_reason("fake-box-only",
                                                                                       frozenset({"box"}))
               for n in ("point-largest", "iterative:1")}
    summary = summarize(rows, 1.0, 1, {}, reasons=reasons, n_boot=50)
    assert summary["primary"] == "box-all" and summary["mean"]["dice"] == 1.0
    assert summary["modes"]["point-largest"]["status"] == "not supported"
    assert "takes only box prompts" in summary["modes"]["point-largest"]["reason"]
    assert math.isnan(summary["modes"]["point-largest"]["mean"]["dice"])


def test_iterative_first_click_equals_point_largest_and_one_encode_per_picture():
    lab = np.zeros((50, 50), np.uint8)
    lab[12:20, 10:18] = 1  # 8x8: four pixels tie for the centre, the shared seeded draw picks the same one
    lab[30:45, 20:40] = 2
    b = ShapeBackend(radius=5)
    settings = EvaluationSettings(parse_modes("point-largest,iterative:3,box-all"), seed=3)
    rows = evaluate_task(b, _task(lab), None, {1: "a", 2: "b"}, "set", settings=settings)
    assert b.encodes == 1
    for c in (1, 2):
        by = {r["prompt"]: r for r in rows if r["class_id"] == c}
        assert by["iterative:1"]["iou"] == by["point-largest"]["iou"]
        assert [by[f"iterative:{n}"]["clicks"] for n in (1, 2, 3)] == [1, 2, 3]


def test_the_same_box_from_several_modes_is_decoded_once():
    lab = np.zeros((50, 50), np.uint8)
    lab[square()] = 1
    b = ShapeBackend()
    evaluate_task(b, _task(lab), parse_modes("box-largest,box-per-region,box-all"), {1: "a"}, "set")
    assert b.decodes == 1


# ---------------------------------------------------------------------------------------------- statistics


def test_bootstrap_ci_and_correlations():
    from samed.evaluation.statistics import bootstrap_ci, correlation

    values = [0.2, 0.4, 0.6, 0.8, 1.0, None, float("nan")]
    lo, hi = bootstrap_ci(values, n_boot=2000)
    assert lo < 0.6 < hi and (lo, hi) == bootstrap_ci(values, n_boot=2000)  # fixed seed
    assert bootstrap_ci([0.7] * 10) == (0.7, 0.7)
    assert all(math.isnan(v) for v in bootstrap_ci([0.5]))
    c = correlation([1, 2, 3, 4, 5], [0.1, 0.3, 0.2, 0.8, 0.9])
    assert c["spearman_r"] == pytest.approx(0.9) and c["n"] == 5 and 0 < c["spearman_p"] < 0.1
    assert math.isnan(correlation([1, 1, 1], [0.1, 0.2, 0.3])["pearson_r"])
