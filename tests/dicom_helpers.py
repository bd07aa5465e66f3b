"""Shared by tests/test_dicom_series.py (DICOM in) and tests/test_dicom_seg.py (DICOM SEG out).

Real DICOM: pydicom's shipped test data (``pydicom/data/test_files``): ``dicomdirtests/`` (a DICOMDIR tree of 14 CT, MR
and CR series from real scanners, pixels cut to 16x16: ``98892001/CT5N`` is a 5-slice CT, ``77654033/CT2`` a CT with a
slice 200 mm away from the rest, ``98892003/MR700`` an MR whose slices have different orientations, ``TINY_ALPHA`` a CT
series without pixel data), ``CT_small.dcm`` (one CT slice) and ``rtdose.dcm`` (a 15-frame object). Geometry cases
are written from the shared volumes with pydicom (``write_series``) and an Enhanced CT made from one by highdicom's
legacy converter (``enhanced_ct``). A SEG is validated by dicom3tools' ``dciodvfy`` (Debian package dicom3tools;
installed by scripts/setup.sh --test, and here when missing and apt-get is there).
"""
from __future__ import annotations

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


def enhanced_ct(folder: Path, files) -> Path:
    """One Enhanced CT file made from a classic series by highdicom's legacy converter (frames in its order)."""
    import highdicom as hd

    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage([pydicom.dcmread(f) for f in files], hd.UID(), 5, hd.UID(),
                                                        1)
    folder.mkdir(parents=True)
    enhanced.save_as(folder / "enhanced.dcm")
    return folder / "enhanced.dcm"


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
