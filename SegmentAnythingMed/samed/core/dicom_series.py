"""A folder of DICOM files -> its series, and one series -> a :class:`~samed.core.geometry.Volume`.

The headers are read with pydicom (``stop_before_pixels``), grouped by Series Instance UID and checked; the voxels
are read with SimpleITK's ``ImageSeriesReader`` (GDCM) from the files in slice order, so slice order, spacing and
direction come from the headers (Image Position / Orientation (Patient), Pixel Spacing) and the modality LUT
(Rescale Slope / Intercept) is applied: a CT comes back in Hounsfield units.

Refused, each with what to do: a folder with several series and no ``series`` chosen (they are listed), a series of
non-image objects (SEG, SR, RT structures, presentation states...), slices of different size or orientation, two
slices at the same position (a duplicate file or two acquisitions in one series), uneven slice spacing (missing
slices), gantry tilt (slices sheared along the table), and multi-frame objects other than one enhanced CT/MR/PET
file whose frames (per-frame plane positions) form one evenly spaced stack in slice order: SimpleITK reads such a
file in frame order, and the frames' positions are checked like a classic series' slices.

Dependencies: pydicom and SimpleITK, imported inside the functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .geometry import Volume, matrix_from_lps

# storage classes that are folders' indexes, not objects: skipped without a word
_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory (DICOMDIR)
# spacing and tilt tolerances: relative spacing deviation, and shear (mm off the normal per mm along it)
# objects that are not images of the patient (a SEG has pixels, but they are masks)
NON_IMAGE_MODALITIES = {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTRECORD", "PR", "KO", "DOC", "REG", "FID", "PLAN",
                        "ANN"}
SPACING_TOLERANCE = 0.01
TILT_TOLERANCE = 1e-3


class DicomSeriesError(ValueError):
    """A DICOM folder or series that samed cannot read as one volume; the message says what to do."""


@dataclass
class DicomSeries:
    """One series of a folder: its UID, what it is, and its files (unsorted)."""

    uid: str
    modality: str = ""
    description: str = ""
    number: str = ""
    sop_class: str = ""
    files: List[Path] = field(default_factory=list)
    headers: list = field(default_factory=list)  # pydicom Datasets without pixel data, same order as files
    is_image: bool = True

    def describe(self) -> str:
        kind = "" if self.is_image else f" (no image data: {_sop_class_name(self.sop_class)})"
        text = f"{self.uid}: {self.modality or '?'}"
        if self.number:
            text += f" #{self.number}"
        if self.description:
            text += f" '{self.description}'"
        return f"{text}, {len(self.files)} file{'s' * (len(self.files) != 1)}{kind}"


def _pydicom():
    import pydicom  # imported here: samed.core stays importable without it

    return pydicom


def _sop_class_name(uid: str) -> str:
    try:
        return _pydicom().uid.UID(uid).name
    except Exception:  # an unknown or private UID: show it as it is
        return uid


def is_dicom_path(path) -> bool:
    """True for a folder (samed reads folders as DICOM) or a file that starts with the DICOM preamble."""
    p = Path(path)
    if p.is_dir():
        return True
    if p.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    try:
        with open(p, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def list_series(path) -> List[DicomSeries]:
    """The series of a DICOM folder (searched recursively) or of one DICOM file, ordered by series number.

    Files that are not DICOM and DICOMDIR indexes are skipped; a folder with no DICOM file raises."""
    pydicom = _pydicom()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"DICOM input not found: {p}")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    series: Dict[str, DicomSeries] = {}
    skipped = 0
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
            skipped += 1
            continue
        sop_class = str(ds.get("SOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID", "")
                               if hasattr(ds, "file_meta") else ""))
        if sop_class == _DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in ds:
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or f"(no Series Instance UID: {f.name})"
        s = series.get(uid)
        if s is None:
            s = series[uid] = DicomSeries(uid, str(ds.get("Modality", "")), str(ds.get("SeriesDescription", "")),
                                          str(ds.get("SeriesNumber", "") or ""), sop_class)
        s.files.append(f)
        s.headers.append(ds)
        if "Rows" not in ds or "Columns" not in ds or str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
            s.is_image = False
    if not series:
        raise DicomSeriesError(f"{p} holds no DICOM files ({skipped} other file{'s' * (skipped != 1)}): give a "
                               f"folder of DICOM images, or a .nrrd/.nii.gz volume")
    return sorted(series.values(), key=lambda s: (_as_int(s.number), s.uid))


def _as_int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 1 << 30


def pick_series(all_series: Sequence[DicomSeries], uid: Optional[str], path) -> DicomSeries:
    """The series ``uid`` (or the only one); several and no ``uid`` -> an error that lists them."""
    listing = "\n  ".join(s.describe() for s in all_series)
    if uid:
        for s in all_series:
            if s.uid == uid:
                return s
        raise DicomSeriesError(f"no series {uid} in {path}; it holds:\n  {listing}")
    if len(all_series) > 1:
        raise DicomSeriesError(f"{path} holds {len(all_series)} series: choose one with --series UID:\n  {listing}")
    return all_series[0]


def read_dicom_series(path, series: Optional[str] = None) -> Volume:
    """The chosen series of a DICOM folder (or file) as a Volume in RAS.

    ``metadata``: ``modality``, ``rescale`` (slope, intercept, type), ``dicom`` (``series_uid``, ``files`` in
    slice order, ``study_uid``, ``frame_of_reference_uid``) and ``path``."""
    chosen = pick_series(list_series(path), series, path)
    if not chosen.is_image:
        raise DicomSeriesError(f"series {chosen.describe()} in {path} is not an image series; choose an image "
                               f"series with --series UID (listed when --series is left out)")
    enhanced = len(chosen.files) == 1 and int(chosen.headers[0].get("NumberOfFrames", 1) or 1) > 1
    if enhanced:  # one enhanced CT/MR/PET file: GDCM reads its frames in stored order
        positions = _check_enhanced(chosen, path)
        files, headers = chosen.files, chosen.headers
    else:
        order = _check_and_order(chosen, path)
        files = [chosen.files[i] for i in order]
        headers = [chosen.headers[i] for i in order]
        positions = [_vector(ds, "ImagePositionPatient", 3) for ds in headers]
    image = _read_with_simpleitk(files, path, enhanced)
    first = headers[0]
    shared = first.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in first else {}
    lut = shared["PixelValueTransformationSequence"][0] if "PixelValueTransformationSequence" in shared else first
    rescale = (float(lut.get("RescaleSlope", 1) or 1), float(lut.get("RescaleIntercept", 0) or 0),
               str(lut.get("RescaleType", "HU" if chosen.modality == "CT" else "US")))
    from .io import _volume_from_sitk  # the same RAS conversion as every other volume

    volume = _volume_from_sitk(image)
    _check_geometry(volume, positions, path)
    volume.metadata.update({
        "path": str(path), "modality": chosen.modality, "rescale": rescale,
        "dicom": {"series_uid": chosen.uid, "files": [str(f) for f in files],
                  "study_uid": str(first.get("StudyInstanceUID", "")),
                  "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")),
                  "description": chosen.description, "multiframe": enhanced}})
    return volume


def _read_with_simpleitk(files: Sequence[Path], path, enhanced: bool = False):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    try:
        return sitk.ReadImage(str(files[0])) if enhanced else reader.Execute()
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else str(e)
        raise DicomSeriesError(f"cannot read the DICOM series in {path}: {last} (a compressed transfer syntax "
                               f"GDCM does not decode? convert it with dcmdjpeg/gdcmconv --raw)") from e


def _vector(ds, keyword: str, n: int):
    value = ds.get(keyword)
    if value is None or len(value) != n:
        return None
    return np.asarray([float(v) for v in value])


def _check_and_order(s: DicomSeries, path) -> List[int]:
    """Indices of ``s.files`` in slice order (along the slice normal); raises on what one volume cannot be."""
    for ds, f in zip(s.headers, s.files):
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            raise DicomSeriesError(
                f"{f} is a multi-frame object ({frames} frames, {_sop_class_name(str(ds.get('SOPClassUID', '')))}) "
                f"in a series of {len(s.files)} files: samed reads a classic series (one slice per file) or one "
                f"enhanced CT/MR/PET file with its plane positions; convert it first (e.g. dcm2niix to .nii.gz) "
                f"and give the result")
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in s.headers}
    if len(sizes) > 1:
        raise DicomSeriesError(f"series {s.uid} in {path} mixes slice sizes {sorted(sizes)}: it is not one volume; "
                               f"export the series again or split it")
    if len(s.files) == 1:
        return [0]
    orientations = [_vector(ds, "ImageOrientationPatient", 6) for ds in s.headers]
    positions = [_vector(ds, "ImagePositionPatient", 3) for ds in s.headers]
    tilt = float(s.headers[0].get("GantryDetectorTilt", 0) or 0)
    return _order_slices(positions, orientations, [f.name for f in s.files], f"series {s.uid} in {path}", tilt)


def _order_slices(positions, orientations, names: Sequence[str], where: str, tilt_tag: float = 0.0) -> List[int]:
    """Slice order along the normal of slices at ``positions`` (LPS mm) with ``orientations`` (row, column
    directions); refuses missing geometry, mixed orientations, duplicates, gantry tilt and uneven spacing."""
    missing = [n for n, o, p in zip(names, orientations, positions) if o is None or p is None]
    if missing:
        raise DicomSeriesError(f"{where}: {len(missing)} slice(s) lack Image Position/Orientation (Patient), e.g. "
                               f"{missing[0]}: without them the slices cannot be stacked; give a CT/MR series with "
                               f"patient geometry")
    if any(not np.allclose(o, orientations[0], atol=1e-4) for o in orientations):
        raise DicomSeriesError(f"{where} mixes slice orientations (a localizer or several stacks in one series): "
                               f"keep only the slices of one stack in the folder")
    row, col = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, col)
    along = np.array([float(p @ normal) for p in positions])
    order = [int(i) for i in np.argsort(along, kind="stable")]
    steps = np.diff(along[order])
    dup = np.nonzero(steps < 1e-3)[0]
    if dup.size:
        a, b = names[order[dup[0]]], names[order[dup[0] + 1]]
        raise DicomSeriesError(f"{where}: {a} and {b} are at the same position ({along[order[dup[0]]]:.2f} mm along "
                               f"the slice normal): a duplicate file, or several acquisitions/echoes/phases in one "
                               f"series; remove the duplicates or keep one acquisition in the folder")
    shift = np.diff(np.asarray([positions[i] for i in order]), axis=0)
    off_normal = np.linalg.norm(shift - np.outer(shift @ normal, normal), axis=1) / np.abs(shift @ normal)
    if off_normal.max() > TILT_TOLERANCE:
        angle = float(np.degrees(np.arctan(off_normal.max())))
        raise DicomSeriesError(f"{where} is gantry-tilted: slices are sheared {angle:.2f} deg from their normal "
                               f"(Gantry/Detector Tilt {tilt_tag:g} deg); samed needs a rectilinear grid: resample "
                               f"it first (Slicer's DICOM module with acquisition geometry regularization, or "
                               f"dcm2niix, which corrects tilt) and give the .nii.gz/.nrrd")
    median = float(np.median(steps))
    uneven = np.nonzero(np.abs(steps - median) > SPACING_TOLERANCE * median)[0]
    if uneven.size:
        i = int(uneven[0])
        a, b = names[order[i]], names[order[i + 1]]
        raise DicomSeriesError(f"{where} has uneven slice spacing: {median:.3g} mm, but {steps[i]:.3g} mm between "
                               f"{a} and {b} ({uneven.size} gap(s); missing slices?): get the complete series (or "
                               f"resample it to a regular grid) and try again")
    return order


def _frame_geometry(ds):
    """(positions, orientations) of an enhanced object's frames from its functional groups (per-frame or shared)."""
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None

    def item(frame, keyword, attribute, n):
        for groups in (frame, shared):
            if groups is not None and keyword in groups:
                return _vector(groups[keyword][0], attribute, n)
        return None

    frames = ds.PerFrameFunctionalGroupsSequence
    return ([item(f, "PlanePositionSequence", "ImagePositionPatient", 3) for f in frames],
            [item(f, "PlaneOrientationSequence", "ImageOrientationPatient", 6) for f in frames])


def _check_enhanced(s: DicomSeries, path) -> List:
    """Frame positions (LPS) of a one-file enhanced series, in frame order; raises unless the frames are one evenly
    spaced stack in slice order (SimpleITK stacks them in frame order)."""
    ds, f = s.headers[0], s.files[0]
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" not in ds or len(ds.PerFrameFunctionalGroupsSequence) != frames:
        raise DicomSeriesError(f"{f} is a multi-frame object ({frames} frames, {_sop_class_name(s.sop_class)}) "
                               f"without per-frame plane positions: samed cannot place its frames; convert it "
                               f"(e.g. dcm2niix to .nii.gz) and give the result")
    positions, orientations = _frame_geometry(ds)
    order = _order_slices(positions, orientations, [f"frame {i + 1}" for i in range(frames)], f"{f}")
    if order not in (list(range(frames)), list(range(frames))[::-1]):
        raise DicomSeriesError(f"{f}: its frames are not stored in slice order (several stacks, phases or an "
                               f"interleaved acquisition?): convert it (e.g. dcm2niix to .nii.gz) and give the result")
    return positions


def _check_geometry(volume: Volume, positions, path) -> None:
    """The volume's k step must be the headers' slice step (SimpleITK takes the files' order as given)."""
    if len(positions) < 2:
        return
    p0, p1 = np.asarray(positions[0], float), np.asarray(positions[-1], float)
    expected = (p1 - p0) / (len(positions) - 1)
    lps_k = np.diag([-1.0, -1.0, 1.0]) @ volume.ijk_to_ras[:3, 2]
    origin = np.diag([-1.0, -1.0, 1.0]) @ volume.ijk_to_ras[:3, 3]
    tolerance = 1e-3 * max(1.0, float(np.linalg.norm(expected)))
    if not (np.allclose(lps_k, expected, atol=tolerance) and np.allclose(origin, p0, atol=1e-2)):
        raise DicomSeriesError(f"the DICOM series in {path} was read with a slice step {lps_k} mm from {origin} that "
                               f"differs from its headers' {expected} mm from {p0}: please report this with the "
                               f"series")


def volume_is_dicom(volume: Volume) -> bool:
    return isinstance(volume.metadata.get("dicom"), dict) and bool(volume.metadata["dicom"].get("files"))


def describe_folder(path) -> str:
    """One line per series (for messages and ``--series`` help)."""
    return "\n".join(s.describe() for s in list_series(path))


__all__ = ["DicomSeries", "DicomSeriesError", "describe_folder", "is_dicom_path", "list_series", "pick_series",
           "read_dicom_series", "volume_is_dicom"]
