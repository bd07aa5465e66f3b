"""Reading and writing images, volumes, labelmaps, Slicer segmentations (.seg.nrrd) and dataset folders.

Every volume comes back as a :class:`~samed.core.geometry.Volume`: voxels indexed ``[k, j, i]`` and an IJK -> RAS
matrix (files store LPS; the conversion is :func:`~samed.core.geometry.matrix_from_lps`).

Dependencies: numpy and SimpleITK (3D Slicer ships both); ``slicerio`` / ``pynrrd`` are imported only inside the
``.seg.nrrd`` functions, PIL only as a fallback for 2D images that SimpleITK cannot read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

# samed.core.io is the I/O entry point: it re-exports the segmentation-file and dataset readers
from .datasets import DatasetInfo, DatasetItem, list_dataset, read_label_names  # noqa: F401
from .files import (IMAGE_2D_EXTENSIONS, LABEL_EXTENSIONS, SEGMENTATION_EXTENSION, VOLUME_EXTENSIONS,  # noqa: F401
                    LabelError, PathLike, _existing_file, _sitk, atomic_output, file_extension)
from .file_integrity import check_volume_file
from .geometry import Volume, matrix_from_lps, matrix_to_lps
from .segmentation_file import (Segment, SegmentationFile, _normalize_name, is_segmentation_file,  # noqa: F401
                                read_segmentation, write_segmentation)


# ----------------------------------------------------------------------------------------------- volumes

def _volume_from_sitk(image, path: Optional[Path] = None) -> Volume:
    sitk = _sitk()
    dim = image.GetDimension()
    if dim not in (2, 3):
        hint = " (a Slicer segmentation with overlapping segments? use read_segmentation)" if dim == 4 else ""
        raise ValueError(f"{path or 'image'} is {dim}-dimensional; only 2D and 3D images are supported{hint}")
    array = sitk.GetArrayFromImage(image)  # [k, j, i] (+ components)
    spacing = list(image.GetSpacing())
    origin = list(image.GetOrigin())
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    if dim == 2:  # one slice: k axis of length 1 along the in-plane normal
        array = array[np.newaxis]
        d3 = np.eye(3)
        d3[:2, :2] = direction
        direction, spacing, origin = d3, spacing + [1.0], origin + [0.0]
    metadata: Dict[str, object] = {"pixel_type": image.GetPixelIDTypeAsString(),
                                   "components": image.GetNumberOfComponentsPerPixel()}
    if path is not None:
        metadata["path"] = str(path)
        metadata["header"] = _header_fields(image)
    try:
        return Volume(array, matrix_from_lps(origin, spacing, direction), metadata)
    except ValueError as e:  # a zero spacing, a singular direction matrix: a damaged header
        raise ValueError(f"cannot read {path or 'image'}: its geometry is invalid ({e})") from e


def _header_fields(image) -> Dict[str, str]:
    fields = {}
    for k in image.GetMetaDataKeys():
        try:
            fields[k] = image.GetMetaData(k)
        except (TypeError, UnicodeError):  # a field name that is not UTF-8 (SWIG cannot pass it back): skipped
            continue
    return fields


def _sitk_from_volume(volume: Volume, array: Optional[np.ndarray] = None):
    sitk = _sitk()
    array = np.asarray(volume.array if array is None else array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=array.ndim == 4)
    origin, spacing, direction = matrix_to_lps(volume.ijk_to_ras)
    image.SetOrigin([float(v) for v in origin])
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in direction.ravel()])
    return image


def read_volume(path: PathLike, volume_index: Optional[int] = None, series: Optional[str] = None) -> Volume:
    """Read a 3D image (.nrrd, .nhdr, .nii, .nii.gz, .mha, .mhd) with its geometry in RAS.

    A 4D file (a time series, several channels) needs ``volume_index``: which of its 3D volumes to read.
    Damaged files (cut short, a corrupt header, a failed gzip check) raise ``ValueError`` saying so.
    A folder (or a .dcm file) is read as a DICOM series (:mod:`samed.core.dicom_series`; ``series``: its Series
    Instance UID when the folder holds several).
    """
    if Path(path).is_dir() or file_extension(path) in (".dcm", ".dicom", ".ima"):
        from .dicom_series import read_dicom_series

        if volume_index not in (None, 0):
            raise ValueError(f"--volume-index {volume_index}: a DICOM series is one 3D volume (index 0)")
        return read_dicom_series(path, series)
    p = _existing_file(path, VOLUME_EXTENSIONS, "volume")
    check_volume_file(p)
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as e:
        raise ValueError(f"cannot read volume {p}: the file is damaged or not a {file_extension(p)} image "
                         f"({str(e).strip().splitlines()[-1] if str(e).strip() else e})") from e
    return _volume_from_sitk(_pick_volume(image, p, volume_index), p)


def _pick_volume(image, p: Path, volume_index: Optional[int]):
    """The 3D volume ``volume_index`` of a 4D image or of a 3D image with several components per voxel."""
    sitk = _sitk()
    dim, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    if dim == 4:
        n, what = image.GetSize()[3], "volumes (4th dimension)"
    elif dim == 3 and components > 1:
        n, what = components, "components per voxel"
    else:
        if volume_index not in (None, 0):
            raise ValueError(f"{p} holds one 3D volume: volume index {volume_index} does not exist (only 0)")
        return image
    size = "x".join(str(s) for s in image.GetSize()[:3])
    if volume_index is None:
        raise ValueError(f"{p} is 4D: {n} {what} of {size} voxels; pick one with --volume-index N (0..{n - 1})")
    if not 0 <= volume_index < n:
        raise ValueError(f"--volume-index {volume_index} is outside {p}'s {n} {what}: use 0..{n - 1}")
    if dim == 4:
        return sitk.Extract(image, list(image.GetSize()[:3]) + [0], [0, 0, 0, int(volume_index)])
    return sitk.VectorIndexSelectionCast(image, int(volume_index))


def write_volume(volume: Volume, path: PathLike, *, compress: bool = True, overwrite: bool = True) -> Path:
    """Write a volume as .nrrd / .nhdr / .nii / .nii.gz / .mha / .mhd (gzip-compressed unless ``compress=False``)."""
    p = Path(path)
    ext = file_extension(p)
    if ext not in VOLUME_EXTENSIONS or ext == SEGMENTATION_EXTENSION:
        raise ValueError(f"cannot write a volume as {ext or '(no extension)'!r} ({p}): "
                         f"use one of {', '.join(VOLUME_EXTENSIONS)}")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} already exists; pass overwrite=True to replace it")
    if not p.parent.exists():
        raise FileNotFoundError(f"folder for {p} does not exist")
    image = _sitk_from_volume(volume)
    with atomic_output(p) as tmp:
        _sitk().WriteImage(image, str(tmp), bool(compress))
    return p


def read_image_2d(path: PathLike) -> np.ndarray:
    """A 2D image as (H, W) grey or (H, W, 3) RGB; alpha is dropped. 8-bit files give uint8; 16-bit keep uint16."""
    p = _existing_file(path, IMAGE_2D_EXTENSIONS, "2D image")
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(p))
        n_components = image.GetNumberOfComponentsPerPixel()
        array = sitk.GetArrayFromImage(image)
        if image.GetDimension() == 3:  # a one-slice 3D file (e.g. TIFF)
            if array.shape[0] != 1:
                raise ValueError(f"{p} holds {array.shape[0]} slices; expected one 2D image")
            array = array[0]
    except RuntimeError as sitk_error:
        array = _read_image_2d_pil(p, sitk_error)
        n_components = array.shape[-1] if array.ndim == 3 else 1
    if n_components in (2, 4):  # grey + alpha or RGBA: drop alpha
        array = array[..., 0] if n_components == 2 else array[..., :3]
    return np.ascontiguousarray(array)


def _read_image_2d_pil(p: Path, sitk_error: Exception) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(f"cannot read image {p}: {sitk_error}") from sitk_error
    try:
        with Image.open(p) as im:
            if im.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr"):
                im = im.convert("RGB" if im.mode != "LA" else "L")
            return np.asarray(im)
    except Exception as e:  # PIL raises many types for corrupt files
        raise ValueError(f"cannot read image {p}: {e}") from e


# ----------------------------------------------------------------------------------------------- labelmaps



def read_label(path: PathLike) -> Tuple[Volume, Dict[int, str]]:
    """A labelmap (integer classes; names from ``labels.json`` next to it) or a Slicer ``.seg.nrrd``.

    Returns the labelmap volume and ``{value: name}`` for every class in ``labels.json`` and every value present
    (unnamed values are called ``"label N"``).
    """
    p = _existing_file(path, LABEL_EXTENSIONS, "label")
    if is_segmentation_file(p):
        seg = read_segmentation(p)
        return seg.volume, seg.label_names
    volume = read_volume(p)
    array = volume.array
    if array.ndim != 3:
        raise ValueError(f"{p} is not a labelmap: it has {volume.metadata.get('components')} components per voxel")
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError(f"{p} is not a labelmap: its voxels are not whole numbers")
        array = array.astype(np.int32)
        volume = volume.with_array(array)
    names: Dict[int, str] = {}
    sidecar = p.parent / "labels.json"
    if sidecar.is_file():
        names.update(read_label_names(sidecar))
    for v in np.unique(array):
        if v != 0 and int(v) not in names:
            names[int(v)] = f"label {int(v)}"
    volume.metadata["label_names"] = dict(sorted(names.items()))
    return volume, dict(sorted(names.items()))


def reference_mask(path: PathLike, label: Union[int, str]) -> Tuple[np.ndarray, Volume, str]:
    """(bool mask ``[k, j, i]``, its grid as a Volume holding the mask, description) of one label or segment.

    ``label``: a label value, or a segment / class name or segment ID (case-insensitive; "right lung" matches
    "right_lung"). Raises :class:`LabelError` listing the file's labels when it has no such label.
    """
    p = _existing_file(path, LABEL_EXTENSIONS, "label")
    if is_segmentation_file(p):
        seg = read_segmentation(p)
        mask = seg.segment_mask(label)
        grid = Volume(mask, seg.ijk_to_ras.copy(), {"path": str(p)})
        return mask, grid, seg.describe(label)
    volume, names = read_label(p)
    present = set(int(v) for v in np.unique(volume.array))
    value = _label_value(label, names)
    if value is None or (value not in present and value not in names):
        listing = ", ".join(f"{v} ({names.get(v, '?')})" for v in sorted(present - {0}))
        raise LabelError(f"no label {label!r} in {p}; it has: {listing or 'no labels (all voxels are 0)'}")
    mask = volume.array == value
    empty = "" if value in present else ", no voxels"
    description = f"label {value} ({names.get(value, 'unnamed')}{empty}) of {p.name}"
    return mask, volume.with_array(mask), description


def _label_value(label: Union[int, str], names: Dict[int, str]) -> Optional[int]:
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    text = str(label)
    if text.strip().lstrip("-").isdigit():
        return int(text)
    matches = [v for v, n in names.items() if _normalize_name(n) == _normalize_name(text)]
    return matches[0] if matches else None


# ----------------------------------------------------------------------------------------------- resampling

def resample_to(source: Volume, target: Volume, *, interpolation: str = "nearest", fill_value=0,
                tolerance: float = 1e-3) -> Volume:
    """``source`` voxels on ``target``'s grid.

    Aligned grids (same axes and spacing, origin offset a whole number of voxels, e.g. a segmentation cropped
    from its CT) are placed exactly by integer offset; other grids are resampled with SimpleITK
    (``interpolation`` ``"nearest"`` (labels) or ``"linear"``). Voxels outside ``source`` get ``fill_value``.
    """
    t = np.linalg.solve(target.ijk_to_ras, source.ijk_to_ras)  # source ijk -> target ijk
    offset = t[:3, 3]
    if np.allclose(t[:3, :3], np.eye(3), atol=tolerance) and np.allclose(offset, np.round(offset), atol=tolerance):
        return _place_by_offset(source, target, np.round(offset).astype(int), fill_value)
    sitk = _sitk()
    interpolators = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear}
    if interpolation not in interpolators:
        raise ValueError(f"interpolation must be one of {', '.join(interpolators)}, got {interpolation!r}")
    src = _sitk_from_volume(source)
    reference = _sitk_from_volume(target, np.zeros(target.shape_kji, dtype=np.uint8))
    out = sitk.Resample(src, reference, sitk.Transform(), interpolators[interpolation], float(fill_value),
                        src.GetPixelID())
    array = sitk.GetArrayFromImage(out)
    if source.array.dtype == bool:
        array = array.astype(bool)
    return Volume(array, target.ijk_to_ras.copy(), dict(source.metadata))


def bounds_ras(volume: Volume) -> Tuple[np.ndarray, np.ndarray]:
    """(min, max) RAS corners of the box that ``volume``'s voxels cover (voxel edges, not centres)."""
    nk, nj, ni = volume.shape_kji
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, ni - 0.5) for j in (-0.5, nj - 0.5) for k in (-0.5, nk - 0.5)])
    ras = (volume.ijk_to_ras @ corners.T).T[:, :3]
    return ras.min(axis=0), ras.max(axis=0)


def check_grids_overlap(a: Volume, b: Volume, a_name: str, b_name: str) -> None:
    """ValueError when the two grids share no point in patient space (e.g. another patient's scan)."""
    (alo, ahi), (blo, bhi) = bounds_ras(a), bounds_ras(b)
    gap = np.maximum(np.maximum(alo - bhi, blo - ahi), 0.0)
    if np.any(gap > 0):
        raise ValueError(f"{a_name} and {b_name} do not overlap: their grids are {float(np.linalg.norm(gap)):.0f} mm "
                         f"apart in patient coordinates (another patient or another scan?); give a reference made on "
                         f"this image")


def _place_by_offset(source: Volume, target: Volume, offset_ijk: np.ndarray, fill_value) -> Volume:
    shape = target.shape_kji + tuple(source.array.shape[3:])
    out = np.full(shape, fill_value, dtype=source.array.dtype)
    offset_kji = offset_ijk[::-1]
    dst, src = [], []
    for axis in range(3):
        start = offset_kji[axis]
        lo, hi = max(start, 0), min(start + source.array.shape[axis], target.shape_kji[axis])
        if lo >= hi:
            return Volume(out, target.ijk_to_ras.copy(), dict(source.metadata))
        dst.append(slice(lo, hi))
        src.append(slice(lo - start, hi - start))
    out[tuple(dst)] = source.array[tuple(src)]
    return Volume(out, target.ijk_to_ras.copy(), dict(source.metadata))


