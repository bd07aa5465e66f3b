"""samed.core.measurements on synthetic shapes with known answers (a sphere, an ellipsoid, an anisotropic grid, an
oblique (rotated) grid), each within half a voxel, and cross-checked with SimpleITK's
LabelShapeStatisticsImageFilter where it computes the same quantity (physical size, Feret diameter)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from samed.core.geometry import Volume, matrix_from_lps
from samed.core.io import _sitk_from_volume
from samed.core.measurements import max_distance, measure


def _rotation(degrees_z: float, degrees_x: float) -> np.ndarray:
    a, b = math.radians(degrees_z), math.radians(degrees_x)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rz @ rx


def _grid(shape_kji, spacing_ijk, direction_lps=np.eye(3), origin=(3.0, -7.0, 11.0)) -> Volume:
    return Volume(np.zeros(shape_kji, dtype=np.int16), matrix_from_lps(origin, spacing_ijk, direction_lps))


def _ellipsoid(volume: Volume, semi_axes_mm, centre_kji=None):
    """Voxels whose centres lie inside an ellipsoid with semi-axes along the grid's i, j, k axes (in mm)."""
    shape = volume.shape_kji
    centre = np.array(centre_kji if centre_kji is not None else [(n - 1) / 2 for n in shape])
    k, j, i = np.indices(shape, dtype=float)
    sp = volume.spacing_kji
    a_i, a_j, a_k = semi_axes_mm
    return (((i - centre[2]) * sp[2] / a_i) ** 2 + ((j - centre[1]) * sp[1] / a_j) ** 2
            + ((k - centre[0]) * sp[0] / a_k) ** 2) <= 1.0 + 1e-9


def _sitk_stats(mask, volume):
    f = sitk.LabelShapeStatisticsImageFilter()
    f.ComputeFeretDiameterOn()
    f.ComputePerimeterOn()
    f.Execute(_sitk_from_volume(volume, mask.astype(np.uint8)))
    return f


SPHERE_CASES = {
    "isotropic": ((41, 41, 41), (1.0, 1.0, 1.0), np.eye(3)),
    "anisotropic": ((25, 85, 45), (0.5, 0.25, 1.0), np.eye(3)),  # i 0.5 mm, j 0.25 mm, k 1 mm
    "oblique": ((41, 41, 41), (1.0, 1.0, 1.0), _rotation(30, 20)),
    "oblique anisotropic": ((25, 85, 45), (0.5, 0.25, 1.0), _rotation(-35, 50)),
}


@pytest.mark.parametrize("case", list(SPHERE_CASES))
def test_sphere_known_answers(case):
    shape, spacing, direction = SPHERE_CASES[case]
    vol = _grid(shape, spacing, direction)
    r = 10.0
    mask = _ellipsoid(vol, (r, r, r))
    half_voxel = 0.5 * max(spacing)
    m = measure(mask, vol, "ball", axis="k")
    vox_mm3 = float(np.prod(spacing))
    assert m.voxel_count == int(mask.sum())
    assert m.volume_ml == pytest.approx(mask.sum() * vox_mm3 / 1000.0)
    # the digitised ball's volume lies between balls half a voxel smaller and larger
    ball_ml = lambda radius: 4 / 3 * math.pi * radius ** 3 / 1000  # noqa: E731
    assert ball_ml(r - half_voxel) <= m.volume_ml <= ball_ml(r + half_voxel)
    assert abs(m.max_diameter_mm - 2 * r) <= half_voxel
    assert abs(m.recist_long_axis_mm - 2 * r) <= half_voxel
    assert abs(m.recist_short_axis_mm - 2 * r) <= 2 * half_voxel  # a chord perpendicular to the long axis
    assert m.recist_slice == shape[0] // 2  # the ball's equator
    assert 4 * math.pi * (r - half_voxel) ** 2 <= m.surface_area_mm2 <= 4 * math.pi * (r + half_voxel) ** 2
    # SimpleITK computes volume and Feret diameter in physical space too: the same numbers
    stats = _sitk_stats(mask, vol)
    assert m.volume_ml == pytest.approx(stats.GetPhysicalSize(1) / 1000.0, rel=1e-9)
    assert m.max_diameter_mm == pytest.approx(stats.GetFeretDiameter(1), abs=1e-6)
    assert m.surface_area_mm2 == pytest.approx(stats.GetPerimeter(1))


@pytest.mark.parametrize("direction", [np.eye(3), _rotation(40, 0), _rotation(25, 35)], ids=["axis", "rot-z", "rot-zx"])
def test_ellipsoid_long_and_short_axis(direction):
    # semi-axes 15 mm along i, 8 mm along j, 5 mm along k; non-square pixels (0.5 x 0.8 mm), 2 mm slices
    vol = _grid((9, 25, 65), (0.5, 0.8, 2.0), direction)
    mask = _ellipsoid(vol, (15.0, 8.0, 5.0), centre_kji=(4, 12, 32))
    half_voxel = 0.5 * 2.0
    m = measure(mask, vol, "ellipsoid", axis="k")
    assert abs(m.max_diameter_mm - 30.0) <= half_voxel
    assert m.recist_slice == 4
    assert abs(m.recist_long_axis_mm - 30.0) <= 0.5 * 0.8
    assert abs(m.recist_short_axis_mm - 16.0) <= 0.8  # short axis: one pixel (two half pixels) of slack
    expected_ml = 4 / 3 * math.pi * 15 * 8 * 5 / 1000
    assert m.volume_ml == pytest.approx(expected_ml, rel=0.06)
    # the long axis runs along the grid's i axis, whatever the grid's direction in patient space
    a, b = np.array(m.recist_long_axis_ras)
    i_axis_ras = vol.ijk_to_ras[:3, 0] / np.linalg.norm(vol.ijk_to_ras[:3, 0])
    assert abs(abs(np.dot((b - a) / np.linalg.norm(b - a), i_axis_ras)) - 1) < 1e-3
    stats = _sitk_stats(mask, vol)
    assert m.max_diameter_mm == pytest.approx(stats.GetFeretDiameter(1), abs=1e-6)


def test_recist_on_the_slice_where_the_long_axis_is_largest():
    vol = _grid((6, 40, 40), (1.0, 1.0, 3.0))
    mask = np.zeros(vol.shape_kji, dtype=bool)
    mask[1, 10:20, 10:20] = True      # 10 x 10 square
    mask[3, 5:9, 2:32] = True         # 30 x 4 bar: the longest in-plane axis
    m = measure(mask, vol, axis="axial")
    assert m.recist_slice == 3
    assert m.recist_long_axis_mm == pytest.approx(math.hypot(29, 3))
    assert abs(m.recist_short_axis_mm - 3.0) <= 0.5  # across the bar (voxel centres 3 mm apart), half a voxel
    # 3D diameter: from a corner of the square (slice 1) to the far end of the bar (slice 3, 6 mm above)
    assert m.max_diameter_mm >= m.recist_long_axis_mm


def test_intensity_statistics_and_unit():
    vol = _grid((10, 10, 10), (1.0, 1.0, 1.0))
    vol.array[:] = -1000
    vol.array[2:5, 2:5, 2:5] = np.arange(27, dtype=np.int16).reshape(3, 3, 3) * 10 + 20
    mask = np.zeros(vol.shape_kji, dtype=bool)
    mask[2:5, 2:5, 2:5] = True
    m = measure(mask, vol, intensity_unit="HU")
    values = np.arange(27) * 10 + 20
    assert (m.intensity_mean, m.intensity_min, m.intensity_max) == (values.mean(), 20, 280)
    assert m.intensity_sd == pytest.approx(values.std())
    assert m.intensity_unit == "HU"
    assert m.as_dict()["voxel_count"] == 27


def test_empty_flat_and_single_voxel_segments():
    vol = _grid((5, 20, 20), (0.7, 0.7, 2.5))
    empty = measure(np.zeros(vol.shape_kji, dtype=bool), vol)
    assert (empty.voxel_count, empty.volume_ml, empty.max_diameter_mm, empty.recist_slice) == (0, 0.0, None, None)
    one = np.zeros(vol.shape_kji, dtype=bool)
    one[2, 3, 4] = True
    m = measure(one, vol)
    assert (m.voxel_count, m.max_diameter_mm, m.recist_long_axis_mm, m.recist_short_axis_mm) == (1, 0.0, 0.0, 0.0)
    flat = np.zeros(vol.shape_kji, dtype=bool)
    flat[2, 2:12, 5] = True  # a line of 10 voxels along j: 9 x 0.7 mm
    m = measure(flat, vol)
    assert m.max_diameter_mm == pytest.approx(6.3)
    assert m.recist_long_axis_mm == pytest.approx(6.3)
    assert m.recist_short_axis_mm == 0.0


def test_mask_on_another_grid_is_refused():
    vol = _grid((5, 20, 20), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"shape \(5, 20, 21\).*\(5, 20, 20\)"):
        measure(np.zeros((5, 20, 21), dtype=bool), vol)


def test_max_distance_matches_brute_force():
    rng = np.random.default_rng(7)
    pts = rng.normal(size=(400, 3)) * [5, 2, 1]
    from scipy.spatial.distance import pdist

    assert max_distance(pts)[0] == pytest.approx(pdist(pts).max())
    plane = np.c_[rng.normal(size=(300, 2)), np.zeros(300)]  # flat: Qhull in 3D would fail
    assert max_distance(plane)[0] == pytest.approx(pdist(plane).max())
