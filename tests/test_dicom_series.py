"""DICOM in (samed.core.dicom_series): real series read in HU on the headers' grid, series that are not one volume
refused with what to do, written geometry cases (oblique, non-square pixels, shuffled files), Enhanced CT, and
`samed evaluate` / `samed refine` on DICOM folders. The data and the helpers: tests/dicom_helpers.py."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest

from dicom_helpers import (CT5N, DICOMDIR_TREE, ct_abdomen, enhanced_ct, expected_matrix,  # noqa: F401
                           get_testdata_file, oblique_dirs, pydicom, samed, write_series)
from samed.core import io


# ---------------------------------------------------------------------------------------------- real series in
def test_real_ct_series_reads_in_hounsfield_units_with_the_headers_geometry():
    """pydicom's 98892001/CT5N: 5 CT slices of a real scanner; voxels equal pydicom's modality LUT output."""
    from pydicom.pixels import apply_modality_lut

    volume = io.read_volume(CT5N)
    datasets = sorted((pydicom.dcmread(f) for f in CT5N.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    expected = np.stack([apply_modality_lut(d.pixel_array, d) for d in datasets])
    assert volume.array.shape == (5, 16, 16)
    assert np.array_equal(volume.array, expected)
    assert volume.metadata["modality"] == "CT" and volume.metadata["rescale"][1] == -1024
    d0 = datasets[0]
    assert np.allclose(volume.spacing_ijk, [float(d0.PixelSpacing[1]), float(d0.PixelSpacing[0]), 2.5], atol=1e-4)
    origin_ras = volume.ijk_to_ras[:3, 3]
    assert np.allclose(origin_ras, np.array([float(v) for v in d0.ImagePositionPatient]) * [-1, -1, 1], atol=1e-4)
    assert volume.metadata["dicom"]["files"] == [str(Path(d.filename)) for d in datasets]


def test_real_single_ct_slice_is_a_one_slice_volume():
    volume = io.read_volume(get_testdata_file("CT_small.dcm"))
    assert volume.array.shape == (1, 128, 128)
    assert volume.metadata["modality"] == "CT" and volume.array.min() < -500


def test_folder_with_several_series_is_listed_and_one_is_chosen_with_series():
    from samed.core.dicom_series import DicomSeriesError, list_series

    series = list_series(DICOMDIR_TREE)
    assert len(series) == 14  # the DICOMDIR index itself is not a series
    with pytest.raises(DicomSeriesError, match="holds 14 series: choose one with --series") as e:
        io.read_volume(DICOMDIR_TREE)
    assert all(s.uid in str(e.value) for s in series)
    ct5n_uid = str(pydicom.dcmread(next(CT5N.iterdir())).SeriesInstanceUID)
    picked = io.read_volume(DICOMDIR_TREE, series=ct5n_uid)
    assert np.array_equal(picked.array, io.read_volume(CT5N).array)


# ---------------------------------------------------------------------------------------------- refusals
def _tilted(tmp, ct):
    hu = ct.array[:8, :40, :40]
    # slices shifted 0.5 mm along the column direction per 2.5 mm step: an 11 deg gantry tilt
    return write_series(tmp / "tilted", hu, step=(0.0, 0.5, 2.5), tilt_deg=11.3)[0].parent


def _missing(tmp, ct):
    files = write_series(tmp / "missing", ct.array[:8, :40, :40])
    files[4].unlink()
    return files[0].parent


def _duplicate(tmp, ct):
    files = write_series(tmp / "duplicate", ct.array[:6, :40, :40])
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(files[0].parent / "copy_of_slice002.dcm")
    return files[0].parent


def _mixed_sizes(tmp, ct):
    files = write_series(tmp / "sizes", ct.array[:6, :40, :40])
    write_series(tmp / "other", ct.array[6:7, :30, :30], origin=(0, 0, 30), series_uid=str(
        pydicom.dcmread(files[0]).SeriesInstanceUID), names=["x.dcm"])
    shutil.copy(tmp / "other" / "x.dcm", files[0].parent / "x.dcm")
    return files[0].parent


def _non_image(tmp, ct):
    folder = tmp / "seg_only"
    folder.mkdir()
    shutil.copy(get_testdata_file("liver_1frame.dcm"), folder)  # pydicom's real SEG object
    return folder


def _no_pixels(tmp, ct):
    return DICOMDIR_TREE / "TINY_ALPHA"


def _multiframe(tmp, ct):
    folder = tmp / "multiframe"
    folder.mkdir()
    shutil.copy(get_testdata_file("rtdose.dcm"), folder)  # 15 frames in one file
    return folder


def _not_dicom(tmp, ct):
    folder = tmp / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    return folder


def _real_ct_with_a_far_slice(tmp, ct):
    return DICOMDIR_TREE / "77654033" / "CT2"  # 3 slices 1.25 mm apart and one 200 mm away


def _real_mr_mixed_orientations(tmp, ct):
    return DICOMDIR_TREE / "98892003" / "MR700"


def _real_tree_of_14_series(tmp, ct):
    return DICOMDIR_TREE


@pytest.mark.parametrize("make, message", [
    (_tilted, "gantry-tilted"), (_missing, "uneven slice spacing"), (_duplicate, "at the same position"),
    (_mixed_sizes, "mixes slice sizes"), (_non_image, "is not an image series"),
    (_no_pixels, "is not an image series"), (_multiframe, "multi-frame"), (_not_dicom, "holds no DICOM files"),
    (_real_ct_with_a_far_slice, "uneven slice spacing"), (_real_mr_mixed_orientations, "mixes slice orientations"),
    (_real_tree_of_14_series, "choose one with --series"),
])
def test_series_that_are_not_one_volume_are_refused_with_what_to_do(make, message, ct_abdomen, tmp_path):
    folder = make(tmp_path, ct_abdomen[0])
    r = samed("segment", folder, "--box", "1,1,9,9", "--slice", "0", "--out", tmp_path / "o.seg.nrrd")
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_unknown_series_uid_lists_what_the_folder_holds(tmp_path):
    r = samed("segment", DICOMDIR_TREE, "--series", "1.2.3", "--box", "1,1,9,9", "--slice", "0", "--out",
              tmp_path / "o.seg.nrrd")
    assert r.returncode == 2 and "no series 1.2.3" in r.stderr and "Routine Brain" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------- geometry
def test_oblique_series_with_non_square_pixels_and_shuffled_files_reads_on_the_headers_grid(ct_abdomen, tmp_path):
    hu = ct_abdomen[0].array[5:17, 10:70, 20:100]  # 12 slices, 60 rows, 80 columns
    row, col = oblique_dirs()
    normal = np.cross(row, col)
    origin, spacing, step = (-30.0, 12.5, 80.0), (0.7, 1.3), -3.0 * normal  # slices run against the normal
    names = [f"IM{(k * 7) % 12:04d}" for k in range(12)]  # file names in no slice order
    write_series(tmp_path / "oblique", hu, origin=origin, row_dir=row, col_dir=col, pixel_spacing=spacing,
                 step=step, names=names)
    volume = io.read_volume(tmp_path / "oblique")
    # the slices come back ordered along the normal: the last written first
    assert np.array_equal(volume.array, hu[::-1])
    last_origin = np.asarray(origin) + 11 * step
    assert np.allclose(volume.ijk_to_ras, expected_matrix(last_origin, row, col, spacing, -step), atol=1e-4)
    assert np.allclose(volume.spacing_ijk, [1.3, 0.7, 3.0], atol=1e-5)


def test_written_series_matches_the_volume_it_was_written_from(ct_abdomen, tmp_path):
    ct = ct_abdomen[0]
    from samed.core.geometry import matrix_to_lps

    origin, spacing, direction = matrix_to_lps(ct.ijk_to_ras)
    write_series(tmp_path / "ct", ct.array, origin=origin, row_dir=direction[:, 0], col_dir=direction[:, 1],
                 pixel_spacing=(spacing[1], spacing[0]), step=direction[:, 2] * spacing[2])
    volume = io.read_volume(tmp_path / "ct")
    assert np.array_equal(volume.array, ct.array)
    assert np.allclose(volume.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)


def test_intensity_auto_follows_the_header_modality(ct_abdomen, tmp_path):
    """A CT cropped to soft tissue (no voxel near -1000) is still windowed as CT: the header says CT."""
    from samed.cli.common import intensity_from_args

    hu = np.clip(ct_abdomen[0].array[:4, 30:60, 30:60], -100, None)
    volume = io.read_volume(write_series(tmp_path / "ct", hu)[0].parent)
    args = argparse.Namespace(intensity="auto", modality=None, window=None, level=None)
    assert intensity_from_args(args, volume.array, volume.metadata["modality"]).mode == "ct"
    assert intensity_from_args(args, volume.array).mode == "percentile"  # without the header it would guess


def test_enhanced_ct_reads_as_the_classic_series_it_was_converted_from(ct_abdomen, tmp_path):
    row, col = oblique_dirs()
    files = write_series(tmp_path / "classic", ct_abdomen[0].array[5:12, 10:50, 20:70], origin=(3, 4, 5),
                         row_dir=row, col_dir=col, pixel_spacing=(0.7, 1.3), step=2.0 * np.cross(row, col))
    classic = io.read_volume(tmp_path / "classic")
    enhanced_file = enhanced_ct(tmp_path / "enhanced", files)
    assert int(pydicom.dcmread(enhanced_file).NumberOfFrames) == 7
    volume = io.read_volume(tmp_path / "enhanced")
    assert volume.metadata["modality"] == "CT" and volume.metadata["dicom"]["multiframe"]
    assert volume.metadata["rescale"][1] == -1024
    # the same voxels at the same places in the patient (the converter stores the frames in its own order)
    assert np.array_equal(io.resample_to(volume, classic).array, classic.array)
    assert np.allclose(np.abs(volume.spacing_ijk), classic.spacing_ijk, atol=1e-4)


def test_enhanced_ct_whose_frames_are_not_in_slice_order_is_refused(ct_abdomen, tmp_path):
    files = write_series(tmp_path / "classic", ct_abdomen[0].array[5:11, 10:40, 20:50])
    path = enhanced_ct(tmp_path / "enhanced", files)
    ds = pydicom.dcmread(path)
    frames = ds.PerFrameFunctionalGroupsSequence
    p1, p4 = (frames[i].PlanePositionSequence[0].ImagePositionPatient for i in (1, 4))
    frames[1].PlanePositionSequence[0].ImagePositionPatient = list(p4)
    frames[4].PlanePositionSequence[0].ImagePositionPatient = list(p1)
    ds.save_as(path)
    r = samed("segment", path.parent, "--box", "1,1,9,9", "--slice", "0", "--out", tmp_path / "o.seg.nrrd")
    assert r.returncode == 2 and "not stored in slice order" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------- other commands
def test_a_volume_set_with_a_dicom_series_as_its_image_is_evaluated_like_its_nifti(tmp_path, ct_abdomen):
    """`samed evaluate` on a 3D set whose image is a DICOM series folder (image/): the same rows as the set with the
    NIfTI the series was written from (a box on every slice of every structure; the real model)."""
    import csv
    import shutil

    from samed.core.datasets import list_dataset
    from samed.core.geometry import matrix_to_lps

    from samed.core.geometry import Volume

    full, (labels, _) = ct_abdomen
    first, last = 18, 23  # six slices through the liver and spleen: the run stays short
    ijk_to_ras = full.ijk_to_ras.copy()
    ijk_to_ras[:3, 3] = (full.ijk_to_ras @ [0, 0, first, 1])[:3]
    ct = Volume(full.array[first:last + 1], ijk_to_ras)
    origin, spacing, direction = matrix_to_lps(ct.ijk_to_ras)
    source = Path(full.metadata["path"]).parent
    sets = {}
    for kind in ("dicom", "nifti"):
        folder = tmp_path / kind / "ct-abdomen"
        folder.mkdir(parents=True)
        io.write_volume(ct.with_array(labels.array[first:last + 1]), folder / "label.nii.gz")
        shutil.copy(source / "labels.json", folder / "labels.json")
        if kind == "dicom":
            write_series(folder / "image", ct.array, origin=origin, row_dir=direction[:, 0], col_dir=direction[:, 1],
                         pixel_spacing=(spacing[1], spacing[0]), step=direction[:, 2] * spacing[2])
        else:
            io.write_volume(ct, folder / "image.nii.gz")
        sets[kind] = folder
    info = list_dataset(sets["dicom"])
    assert info.kind == "3d" and info.items[0].image == sets["dicom"] / "image"
    rows = {}
    for kind, folder in sets.items():
        out = tmp_path / f"{kind}-out"
        r = samed("evaluate", folder, "--prompt", "box-all", "--intensity", "ct", "--no-report", "--out", out)
        assert r.returncode == 0, r.stderr
        with open(next(out.rglob("*.csv"))) as f:
            rows[kind] = [{k: v for k, v in row.items() if "time" not in k and "path" not in k} for row in
                          csv.DictReader(f)]
    assert rows["dicom"] and rows["dicom"] == rows["nifti"]


def test_samed_refine_reads_a_dicom_folder_and_picks_a_series(tmp_path):
    """samed refine takes a DICOM folder as segment does: several series -> exit 2 listing them; --series picks
    one (its grid then meets the segmentation's: here an empty one, refused with its own message; it said "holds 0
    structures (): choose them with --label" before)."""
    ct5n = io.read_volume(CT5N)
    empty = tmp_path / "empty.nii.gz"
    io.write_volume(ct5n.with_array(np.zeros(ct5n.array.shape, np.uint8)), empty)
    out = tmp_path / "refined.seg.nrrd"
    r = samed("refine", DICOMDIR_TREE, "--segmentation", empty, "--out", out)
    assert r.returncode == 2 and "holds 14 series: choose one with --series" in r.stderr, r.stderr
    uid = str(pydicom.dcmread(next(CT5N.iterdir())).SeriesInstanceUID)
    r = samed("refine", DICOMDIR_TREE, "--series", uid, "--segmentation", empty, "--out", out)
    assert r.returncode == 2 and "is empty (no structure in it): nothing to refine" in r.stderr, r.stderr
    assert not out.exists()
