"""DICOM in (samed.core.dicom_series) and DICOM SEG out (samed.core.dicom_seg).

Real DICOM: pydicom's shipped test data (``pydicom/data/test_files``): ``dicomdirtests/`` (a DICOMDIR tree of 14 CT, MR
and CR series from real scanners, pixels cut to 16x16: ``98892001/CT5N`` is a 5-slice CT, ``77654033/CT2`` a CT with a
slice 200 mm away from the rest, ``98892003/MR700`` an MR whose slices have different orientations, ``TINY_ALPHA`` a CT
series without pixel data), ``CT_small.dcm`` (one CT slice) and ``rtdose.dcm`` (a 15-frame object). Geometry cases
are written here from the shared volumes with pydicom (oblique direction, non-square pixels, shuffled files, gantry
tilt, a missing slice, a duplicate) and an Enhanced CT made from one by highdicom's legacy converter. The SEG is validated by dicom3tools' ``dciodvfy`` (Debian package dicom3tools;
installed by scripts/setup.sh --test, and here when missing and apt-get is there).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from samed.core import io
from samed.core.geometry import matrix_from_lps

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
DICOMDIR_TREE = TEST_FILES / "dicomdirtests"
CT5N = DICOMDIR_TREE / "98892001" / "CT5N"
CT_PATIENT_HU_CT = "ct-abdomen"


def samed(*args):
    return subprocess.run([sys.executable, "-m", "samed.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


# ---------------------------------------------------------------------------------------------- writing series
def write_series(folder: Path, hu_kji: np.ndarray, *, origin=(0.0, 0.0, 0.0), row_dir=(1, 0, 0), col_dir=(0, 1, 0),
                 pixel_spacing=(1.0, 1.0), step=None, modality="CT", series_uid=None, study_uid=None,
                 frame_uid=None, names=None, tilt_deg=0.0):
    """One CT/MR Image Storage file per slice (pydicom). ``pixel_spacing`` = (between rows, between columns) mm,
    ``step``: LPS mm from one slice's position to the next (default: 2.5 mm along the normal). Stored values are
    HU + 1024 (int16) with Rescale Intercept -1024. Returns the files in slice order."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    step = normal * 2.5 if step is None else np.asarray(step, float)
    series_uid, study_uid, frame_uid = series_uid or generate_uid(), study_uid or generate_uid(), frame_uid or generate_uid()
    sop_class = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4"
    files = []
    for k, plane in enumerate(hu_kji):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Samed", "SAMED-1", "19700101", "O"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, "20260101", "120000", "1"
        ds.ReferringPhysicianName, ds.AccessionNumber = "", "A1"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, 3, modality
        ds.SeriesDescription = "written by test_dicom"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.Manufacturer = "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(origin, float) + k * step]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.r_[row_dir, col_dir]]
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
        ds.SliceThickness = f"{float(np.linalg.norm(step)):g}"
        if tilt_deg:
            ds.GantryDetectorTilt = f"{tilt_deg:g}"
        if modality == "CT":
            ds.KVP, ds.RescaleType = "120", "HU"
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
            ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = "10", "500", "1", "3"
        ds.AcquisitionNumber = 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = (np.asarray(plane, np.int32) + 1024).astype("<i2").tobytes()
        name = names[k] if names else f"slice{k:03d}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
        files.append(folder / name)
    return files


def expected_matrix(origin, row_dir, col_dir, pixel_spacing, step):
    row_dir, col_dir, step = (np.asarray(v, float) for v in (row_dir, col_dir, step))
    direction = np.c_[row_dir, col_dir, step / np.linalg.norm(step)]
    return matrix_from_lps(origin, [pixel_spacing[1], pixel_spacing[0], np.linalg.norm(step)], direction)


@pytest.fixture(scope="module")
def ct_abdomen(shared_data):
    """The shared CT (HU, 30 x 101 x 122) and its labelmap."""
    folder = shared_data / "volumes" / CT_PATIENT_HU_CT
    return io.read_volume(folder / "image.nii.gz"), io.read_label(folder / "label.nii.gz")


def oblique_dirs(degrees=20.0):
    a = np.radians(degrees)
    row = np.array([np.cos(a), np.sin(a), 0.0])
    col = np.array([0.0, np.cos(np.radians(10)), -np.sin(np.radians(10))])  # tilted 10 deg out of the plane
    col = col - (col @ row) * row
    return row, col / np.linalg.norm(col)


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


def test_dicom_seg_output_needs_a_dicom_input(ctchest, tmp_path):
    ct, _ = ctchest
    for out in (["--out", tmp_path / "o.dcm"], ["--out", tmp_path / "o.seg", "--dicom-seg"]):
        r = samed("segment", ct, "--box", "55,36,106,98", "--slice", "20", *out)
        assert r.returncode == 2 and "is not DICOM" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())


def test_dicom_seg_is_not_written_into_the_input_series_folder(ct_abdomen, tmp_path):
    folder = write_series(tmp_path / "ct", ct_abdomen[0].array[:4, :32, :32])[0].parent
    r = samed("segment", folder, "--box", "2,2,20,20", "--slice", "1", "--out", folder / "seg.dcm")
    assert r.returncode == 2 and "inside the DICOM input folder" in r.stderr, r.stderr


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


def enhanced_ct(folder: Path, files) -> Path:
    """One Enhanced CT file made from a classic series by highdicom's legacy converter (frames in its order)."""
    import highdicom as hd

    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage([pydicom.dcmread(f) for f in files], hd.UID(), 5, hd.UID(),
                                                        1)
    folder.mkdir(parents=True)
    enhanced.save_as(folder / "enhanced.dcm")
    return folder / "enhanced.dcm"


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


def test_seg_on_an_enhanced_ct_validates_and_reads_back_frame_by_frame(ct_abdomen, tmp_path):
    from samed.core.dicom_seg import read_dicom_seg, write_dicom_seg

    files = write_series(tmp_path / "classic", ct_abdomen[0].array[5:12, 10:50, 20:70], pixel_spacing=(0.9, 0.6))
    volume = io.read_volume(enhanced_ct(tmp_path / "enhanced", files).parent)
    mask = np.zeros(volume.shape_kji, bool)
    mask[1:5, 5:20, 10:30] = True
    mask[6, 0:3, 0:3] = True
    out = write_dicom_seg(tmp_path / "seg.dcm", {"spleen": mask}, volume, model="litemedsam", engine="torch")
    errors, warnings = dciodvfy(out)
    print("dciodvfy warnings:", warnings)
    assert not errors, errors
    assert np.array_equal(read_dicom_seg(out, volume)["spleen"], mask)
    seg, source = pydicom.dcmread(out), pydicom.dcmread(volume.metadata["dicom"]["files"][0])
    for frame in seg.PerFrameFunctionalGroupsSequence:  # each SEG frame sits where its source frame is
        reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
        n = int(reference.ReferencedFrameNumber)
        where = source.PerFrameFunctionalGroupsSequence[n - 1].PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                           [float(v) for v in where], atol=1e-4)


# ---------------------------------------------------------------------------------------------- SEG out
def dciodvfy(path: Path):
    """(errors, warnings) lines of dicom3tools' validator; installs dicom3tools when missing and apt-get is there."""
    exe = shutil.which("dciodvfy")
    if exe is None and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools",
                       shell=True, capture_output=True, timeout=600)
        exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail("dciodvfy is not installed: run scripts/setup.sh --test (apt-get install dicom3tools)")
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (r.stdout + r.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    if r.returncode != 0 and not errors:
        errors = [f"dciodvfy exited {r.returncode}: {r.stdout}{r.stderr}"]
    return errors, [line for line in lines if line.startswith("Warning")]


def test_dciodvfy_reports_errors_of_a_broken_seg(ct_abdomen, tmp_path):
    """The validator's counterpart: it does catch a SEG without a required attribute."""
    from samed.core.dicom_seg import write_dicom_seg

    volume = io.read_volume(write_series(tmp_path / "ct", ct_abdomen[0].array[:3, :20, :20])[0].parent)
    mask = np.zeros(volume.shape_kji, bool)
    mask[1, 5:10, 5:10] = True
    write_dicom_seg(tmp_path / "s.dcm", {"liver": mask}, volume)
    ds = pydicom.dcmread(tmp_path / "s.dcm")
    del ds.SegmentSequence[0].SegmentLabel
    ds.save_as(tmp_path / "broken.dcm")
    errors, _ = dciodvfy(tmp_path / "broken.dcm")
    assert any("SegmentLabel" in e for e in errors), errors


def test_seg_on_an_oblique_series_validates_and_reads_back_to_the_same_voxels(ct_abdomen, tmp_path):
    from samed.core.dicom_seg import read_dicom_seg, write_dicom_seg

    row, col = oblique_dirs()
    hu = ct_abdomen[0].array[5:15, 10:60, 20:90]
    files = write_series(tmp_path / "ct", hu, origin=(10, -20, 40), row_dir=row, col_dir=col,
                         pixel_spacing=(0.8, 1.2), step=2.0 * np.cross(row, col))
    volume = io.read_volume(files[0].parent)
    liver = np.zeros(volume.shape_kji, bool)
    liver[2:7, 10:30, 15:50] = True
    blob = np.zeros(volume.shape_kji, bool)  # overlaps the liver, on other slices too
    blob[5:9, 20:40, 40:60] = True
    out = write_dicom_seg(tmp_path / "seg.dcm",
                          {"Liver tumour": liver, "blob": blob}, volume, model="litemedsam", engine="onnx",
                          colors=[(1.0, 0.0, 0.0)])
    errors, warnings = dciodvfy(out)
    print("dciodvfy warnings:", warnings)
    assert not errors, errors
    back = read_dicom_seg(out, volume)
    assert list(back) == ["Liver tumour", "blob"]
    assert np.array_equal(back["Liver tumour"], liver) and np.array_equal(back["blob"], blob)

    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    source = pydicom.dcmread(files[0])
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID and seg.PatientID == source.PatientID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
    s1, s2 = seg.SegmentSequence
    assert s1.SegmentLabel == "Liver tumour" and s1.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert s1.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"  # morphologically abnormal
    assert s2.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"  # generic
    assert s1.SegmentAlgorithmType == "SEMIAUTOMATIC" and s1.SegmentAlgorithmName == "SegmentAnythingMed"
    algorithm = s1.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "SegmentAnythingMed" and "litemedsam" in algorithm.AlgorithmParameters
    assert "onnx" in algorithm.AlgorithmParameters
    import highdicom as hd

    red = hd.color.CIELabColor.from_dicom_value(s1.RecommendedDisplayCIELabValue).to_rgb()
    assert tuple(red) == (255, 0, 0)
    # same grid: every frame sits at its source slice's position, with the source's orientation and spacing
    positions = {str(pydicom.dcmread(f).SOPInstanceUID): [float(v) for v in pydicom.dcmread(f).ImagePositionPatient]
                 for f in files}
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert np.allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient], np.r_[row, col],
                       atol=1e-5)
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.8, 1.2]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient], positions[uid],
                           atol=1e-4)


def test_seg_is_written_whole_or_not_at_all(ct_abdomen, tmp_path, monkeypatch):
    import highdicom as hd
    from samed.core.dicom_seg import DicomSegError, write_dicom_seg

    volume = io.read_volume(write_series(tmp_path / "ct", ct_abdomen[0].array[:3, :20, :20])[0].parent)
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"the user's previous SEG")
    mask = np.zeros(volume.shape_kji, bool)
    mask[1, 2:9, 2:9] = True

    def save_half_then_fail(self, filename, *a, **k):
        Path(filename).write_bytes(b"DICM half")
        raise OSError("disk full")

    monkeypatch.setattr(hd.seg.Segmentation, "save_as", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_seg(out, {"liver": mask}, volume)
    assert out.read_bytes() == b"the user's previous SEG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "seg.dcm"]  # no part file left
    monkeypatch.undo()
    with pytest.raises(DicomSegError, match="every segment is empty"):
        write_dicom_seg(out, {"liver": np.zeros(volume.shape_kji, bool)}, volume)
    with pytest.raises(FileExistsError):
        write_dicom_seg(out, {"liver": mask}, volume, overwrite=False)
    assert out.read_bytes() == b"the user's previous SEG"


@pytest.mark.parametrize("name, meaning", [("liver", "Liver"), ("Spleen", "Spleen"), ("kidney_left", "Kidney"),
                                           ("lung_upper_lobe_right", "Lung"), ("tumour", "Neoplasm"),
                                           ("Liver tumor", "Neoplasm"), ("Segment_1", "Tissue")])
def test_structure_names_map_to_snomed_codes(name, meaning):
    from samed.core.dicom_seg import structure_codes

    assert structure_codes(name)[1].meaning == meaning


# ---------------------------------------------------------------------------------------------- the job
def test_segment_dicom_series_with_propagation_writes_a_valid_seg_with_the_same_voxels(ct_abdomen, tmp_path):
    """Issue 15's done-when: ``samed segment DICOM_DIR --box --slice K --propagate --out seg.dcm`` with the real
    LiteMedSAM (default engine): dciodvfy accepts the SEG, and it reads back to the voxels that the same command
    writes as .seg.nrrd from the NIfTI volume the series was written from (same grid, same voxels: so DICOM in reads
    what the NIfTI holds, and the SEG holds what the model made)."""
    from samed.core.dicom_seg import read_dicom_seg
    from samed.core.geometry import matrix_to_lps

    ct, (labels, names) = ct_abdomen
    origin, spacing, direction = matrix_to_lps(ct.ijk_to_ras)
    folder = tmp_path / "dicom" / "CT"
    write_series(folder, ct.array, origin=origin, row_dir=direction[:, 0], col_dir=direction[:, 1],
                 pixel_spacing=(spacing[1], spacing[0]), step=direction[:, 2] * spacing[2])
    liver_value = next(v for v, n in names.items() if n == "liver")
    liver = labels.array == liver_value
    k = 20
    rows, cols = np.nonzero(liver[k])
    box = f"{cols.min()},{rows.min()},{cols.max()},{rows.max()}"
    common = ["segment", folder, "--box", box, "--slice", k, "--propagate", "--max-slices", 5, "--name", "liver"]
    r = samed(*common, "--out", tmp_path / "liver.dcm")
    assert r.returncode == 0, r.stderr
    errors, warnings = dciodvfy(tmp_path / "liver.dcm")
    print("dciodvfy warnings:", warnings)
    assert not errors, errors
    nifti = ct.metadata["path"]
    r2 = samed(*([common[0], nifti] + common[2:]), "--out", tmp_path / "liver.seg.nrrd")
    assert r2.returncode == 0, r2.stderr

    volume = io.read_volume(folder)
    assert np.allclose(volume.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)
    from_seg = read_dicom_seg(tmp_path / "liver.dcm", volume)["liver"]
    nrrd = io.read_segmentation(tmp_path / "liver.seg.nrrd")
    assert np.allclose(nrrd.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)
    assert np.array_equal(from_seg, io.resample_to(nrrd.volume.with_array(nrrd.segment_mask("liver")), volume).array)
    assert from_seg.sum() > 1000
    touched = sorted(set(np.nonzero(from_seg)[0]))
    assert touched[0] >= k - 5 and touched[-1] <= k + 5 and len(touched) >= 8
    # the SEG says how the segment was made: its provenance, read back by highdicom, names the box on slice k
    import highdicom
    from samed.core.provenance import PROVENANCE_TAG, Provenance

    seg = highdicom.seg.segread(str(tmp_path / "liver.dcm"))
    algorithm = seg.get_segment_description(1).algorithm_identification
    recorded = Provenance.from_dicom_parameter(algorithm.parameters[PROVENANCE_TAG])
    assert [(p.slice, p.kind) for p in recorded.prompts] == [(k, "box")]
    from_nrrd = Provenance.from_tag_value(next(s for s in nrrd.segments if s.name == "liver").tags[PROVENANCE_TAG])
    assert recorded.prompts == from_nrrd.prompts and recorded.model == from_nrrd.model
    # the right structure: Dice with the reference liver on the segmented slices
    on = np.zeros_like(liver)
    on[touched] = liver[touched]
    dice = 2 * (from_seg & on).sum() / (from_seg.sum() + on.sum())
    print(f"liver Dice on slices {touched[0]}..{touched[-1]}: {dice:.3f}")
    assert dice > 0.6  # a box misplaced by a flipped axis would give about 0
    seg = pydicom.dcmread(tmp_path / "liver.dcm")
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"


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
