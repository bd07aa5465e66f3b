"""Prompt simulation without a model: regions, central points, each prompt mode, on masks with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from samed.evaluation import regions as rg
from samed.evaluation.prompt_modes import (PROMPT_MODES, all_modes, get_mode, parse_modes, seeded_rng,
                                           shifted_box)


def rng(seed=0):
    return np.random.default_rng(seed)


def two_regions():
    """An 11x11 square (121 px) and a 5x5 square (25 px)."""
    m = np.zeros((40, 40), bool)
    m[20:31, 10:21] = True  # rows 20..30, cols 10..20: centre (x 15, y 25)
    m[3:8, 30:35] = True  # rows 3..7, cols 30..34: centre (x 32, y 5)
    return m


# ---------------------------------------------------------------------------------------------- regions


def test_regions_are_ordered_by_size_and_use_8_connectivity():
    m = two_regions()
    m[10, 5] = m[11, 6] = True  # two pixels touching only diagonally: one region of 2 px
    regs = rg.regions(m)
    assert [int(r.sum()) for r in regs] == [121, 25, 2]
    assert regs[2][10, 5] and regs[2][11, 6]


def test_regions_of_an_empty_mask():
    assert rg.regions(np.zeros((5, 5), bool)) == []


def test_farthest_point_is_the_centre_of_an_odd_square_and_on_the_midline_of_a_rectangle():
    m = two_regions()
    assert rg.farthest_point(rg.regions(m)[0], rng()) == (15.0, 25.0)
    assert rg.farthest_point(rg.regions(m)[1], rng()) == (32.0, 5.0)
    rect = np.zeros((20, 30), bool)
    rect[5:14, 5:20] = True  # 9 x 15: distance 5 on row 9 from column 9 to 15
    picks = {rg.farthest_point(rect, rng(s)) for s in range(60)}
    assert picks == {(float(x), 9.0) for x in range(9, 16)}


def test_ties_are_broken_at_random_with_a_fixed_seed():
    m = np.zeros((10, 10), bool)
    m[2:6, 2:6] = True  # 4x4: the four central pixels tie
    centre = {(2.0 + a, 2.0 + b) for a in (1, 2) for b in (1, 2)}
    picks = {rg.farthest_point(m, rng(s)) for s in range(40)}
    assert picks == centre
    assert rg.farthest_point(m, rng(7)) == rg.farthest_point(m, rng(7))


def test_a_ring_gets_its_point_in_the_ring_not_in_the_hole():
    yy, xx = np.mgrid[:41, :41]
    r = np.hypot(xx - 20, yy - 20)
    ring = (r <= 15) & (r >= 9)
    x, y = rg.farthest_point(ring, rng())
    assert ring[int(y), int(x)]
    assert 11 <= math.hypot(x - 20, y - 20) <= 13  # the middle of the ring's thickness (radius 12)


def test_a_mask_touching_the_border_counts_the_border_as_boundary():
    m = np.zeros((30, 30), bool)
    m[10:19, 0:9] = True  # 9x9 square cut by the left border: its centre is column 4, not column 0
    assert rg.farthest_point(m, rng()) == (4.0, 14.0)
    assert rg.distance_to_boundary(m)[14, 0] == 1.0


def test_correction_point_include_in_the_missed_part_exclude_in_the_false_part():
    ref = np.zeros((30, 40), bool)
    ref[5:25, 5:35] = True
    pred = np.zeros_like(ref)
    pred[5:25, 5:15] = True  # misses columns 15..34 (20 wide): the click goes there, include
    x, y, include = rg.correction_point(pred, ref, rng())
    assert include and ref[int(y), int(x)] and not pred[int(y), int(x)]
    assert (x, y) in {(24.0, 14.0), (25.0, 14.0), (24.0, 15.0), (25.0, 15.0)}
    pred2 = ref.copy()
    pred2[0:30, 35:40] = True  # a 30x5 false-positive strip on the right border
    x, y, include = rg.correction_point(pred2, ref, rng())
    assert not include and not ref[int(y), int(x)] and 36 <= x <= 38
    assert rg.correction_point(ref, ref, rng()) is None


def test_offset_point_moves_towards_the_edge():
    m = np.zeros((41, 41), bool)
    m[0:41, 0:41] = True  # with the border as boundary: distance 21 at the centre
    d = rg.distance_to_boundary(m)
    for offset in (0.25, 0.5, 0.75):
        x, y = rg.offset_point(m, offset, rng())
        assert abs(d[int(y), int(x)] - (1 - offset) * 21) <= 0.5
    assert rg.offset_point(m, 0.0, rng()) == (20.0, 20.0)
    with pytest.raises(ValueError):
        rg.offset_point(m, 1.0, rng())


# ---------------------------------------------------------------------------------------------- modes


def test_point_largest():
    (p,) = get_mode("point-largest").prompts(two_regions(), rng())
    np.testing.assert_array_equal(p.include_points_xy, [[15, 25]])
    assert p.box_xy is None and len(p.exclude_points_xy) == 0


def test_point_per_region_puts_one_point_in_each_of_the_three_largest_regions_in_one_prompt():
    m = two_regions()
    m[34:37, 0:3] = True  # 9 px
    m[38:40, 38:40] = True  # 4 px: the fourth region, left out
    (p,) = get_mode("point-per-region").prompts(m, rng())
    np.testing.assert_array_equal(p.include_points_xy, [[15, 25], [32, 5], [1, 35]])


def test_box_largest_box_per_region_box_all():
    m = two_regions()
    (b,) = get_mode("box-largest").prompts(m, rng())
    np.testing.assert_array_equal(b.box_xy, [10, 20, 20, 30])
    aimed = get_mode("box-per-region").aimed(m, rng())
    np.testing.assert_array_equal([a.prompt.box_xy for a in aimed], [[10, 20, 20, 30], [30, 3, 34, 7]])
    assert [int(a.aim.sum()) for a in aimed] == [121, 25]  # each box aims at its own region
    (a,) = get_mode("box-all").prompts(m, rng())
    np.testing.assert_array_equal(a.box_xy, [10, 3, 34, 30])


def test_every_mode_gives_no_prompt_for_an_empty_class():
    empty = np.zeros((16, 16), bool)
    for name in ("point-largest", "point-per-region", "box-largest", "box-per-region", "box-all",
                 "point-offset:0.5", "box-shift:0.2"):
        assert get_mode(name).prompts(empty, rng()) == []


def test_box_shift_moves_the_box_by_a_fraction_of_its_size():
    box = np.array([10, 20, 29, 29])  # 20 wide, 10 high
    np.testing.assert_array_equal(shifted_box(box, 0.5, 0.0, (100, 100)), [20, 20, 39, 29])
    np.testing.assert_array_equal(shifted_box(box, 0.5, math.pi / 2, (100, 100)), [10, 25, 29, 34])
    np.testing.assert_array_equal(shifted_box(box, 1.0, math.pi, (100, 100)), [0, 20, 9, 29])  # clipped
    m = np.zeros((60, 60), bool)
    m[20:30, 10:30] = True
    (p,) = get_mode("box-shift:0").prompts(m, rng())
    np.testing.assert_array_equal(p.box_xy, get_mode("box-all").prompts(m, rng())[0].box_xy)
    (q,) = get_mode("box-shift:0.3").prompts(m, rng())
    dx, dy = q.box_xy[0] - 10, q.box_xy[1] - 20
    assert math.hypot(dx / 20, dy / 10) == pytest.approx(0.3, abs=0.06)


def test_mode_names_and_parsing():
    assert get_mode("iterative:3").points == 3 and get_mode("iterative:3").row_names() == [
        "iterative:1", "iterative:2", "iterative:3"]
    assert get_mode("iterative").points == 9
    assert [m.name for m in parse_modes("box-all, point-largest,box-all")] == ["box-all", "point-largest"]
    for bad in ("nonsense", "iterative:0", "iterative:2.5", "point-offset:1", "box-shift:x"):
        with pytest.raises(ValueError):
            get_mode(bad)
    names = [m.name for m in all_modes()]
    assert names[:7] == ["point-largest", "point-per-region", "box-largest", "box-per-region", "box-all",
                         "iterative:9", "everything"]
    assert set(PROMPT_MODES) <= set(names)


def test_support_depends_on_the_prompt_kinds():
    box_only = frozenset({"box"})
    assert get_mode("box-all").supported_by(box_only)
    assert not get_mode("point-largest").supported_by(box_only)
    assert not get_mode("iterative:5").supported_by(box_only)
    assert "needs point prompts" in get_mode("everything").unsupported_reason("litemedsam", box_only)


def test_seeded_rng_depends_only_on_its_parts():
    a = seeded_rng(0, "img", None, 1, "box-shift:0.1").random()
    assert a == seeded_rng(0, "img", None, 1, "box-shift:0.1").random()
    assert a != seeded_rng(1, "img", None, 1, "box-shift:0.1").random()
    assert a != seeded_rng(0, "img", None, 2, "box-shift:0.1").random()
