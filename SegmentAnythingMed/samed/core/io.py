"""Reading and writing images, volumes, labelmaps, Slicer segmentations (.seg.nrrd) and dataset folders.

Every volume comes back as a :class:`~samed.core.geometry.Volume`: voxels indexed ``[k, j, i]`` and an IJK -> RAS
matrix (files store LPS; the conversion is :func:`~samed.core.geometry.matrix_from_lps`).

Dependencies: numpy and SimpleITK (3D Slicer ships both); ``slicerio`` / ``pynrrd`` are imported only inside the
``.seg.nrrd`` functions, PIL only as a fallback for 2D images that SimpleITK cannot read.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .geometry import LPS_TO_RAS, Volume, matrix_from_lps, matrix_to_lps

PathLike = Union[str, os.PathLike]

VOLUME_EXTENSIONS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
IMAGE_2D_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SEGMENTATION_EXTENSION = ".seg.nrrd"
LABEL_EXTENSIONS = (SEGMENTATION_EXTENSION,) + VOLUME_EXTENSIONS
_COMPOUND_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".mrk.json")

# Colours for written segments without an explicit colour (Slicer's GenericAnatomyColors, first entries).
DEFAULT_SEGMENT_COLORS = (
    (0.502, 0.682, 0.502), (0.945, 0.839, 0.569), (0.694, 0.478, 0.396), (0.435, 0.722, 0.824),
    (0.847, 0.396, 0.310), (0.867, 0.510, 0.396), (0.565, 0.933, 0.565), (0.753, 0.408, 0.345),
    (0.863, 0.961, 0.078), (0.306, 0.247, 0.000), (1.000, 0.980, 0.863), (0.902, 0.863, 0.275),
)


class LabelError(ValueError):
    """A requested label or segment is not in the file; the message lists what the file has."""


# ----------------------------------------------------------------------------------------------- paths and checks

def file_extension(path: PathLike) -> str:
    """Lower-case extension, compound ones included: ``.seg.nrrd``, ``.nii.gz``, ``.mrk.json``."""
    name = Path(path).name.lower()
    for ext in _COMPOUND_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def _existing_file(path: PathLike, supported: Sequence[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {p}")
    if p.is_dir():
        raise ValueError(f"{p} is a folder, not a {what} file")
    ext = file_extension(p)
    if ext not in supported and not (ext == SEGMENTATION_EXTENSION and ".nrrd" in supported):
        raise ValueError(f"unsupported {what} file type {ext or '(no extension)'!r} for {p}: "
                         f"supported are {', '.join(supported)}")
    return p


def _sitk():
    import SimpleITK as sitk  # Slicer ships it; imported here so that `import samed.core.io` stays cheap
    return sitk


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
        metadata["header"] = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}
    return Volume(array, matrix_from_lps(origin, spacing, direction), metadata)


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


def read_volume(path: PathLike) -> Volume:
    """Read a 3D image (.nrrd, .nhdr, .nii, .nii.gz, .mha, .mhd) with its geometry in RAS."""
    p = _existing_file(path, VOLUME_EXTENSIONS, "volume")
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as e:
        raise ValueError(f"cannot read volume {p}: the file is damaged or not a {file_extension(p)} image "
                         f"({str(e).strip().splitlines()[-1] if str(e).strip() else e})") from e
    return _volume_from_sitk(image, p)


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
    _sitk().WriteImage(_sitk_from_volume(volume), str(p), bool(compress))
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


# ----------------------------------------------------------------------------------------------- Slicer segmentations

@dataclass
class Segment:
    """One segment of a Slicer segmentation: where its voxels are (``layer``, ``label_value``) and how it looks."""

    name: str
    id: str
    label_value: int
    layer: int = 0
    color: Optional[Tuple[float, float, float]] = None


@dataclass
class SegmentationFile:
    """A ``.seg.nrrd`` file: segments, their voxel layers ``[layer, k, j, i]`` and the grid geometry.

    ``volume`` is a labelmap on the file's grid: each segment's ``label_value`` when all segments share one layer,
    otherwise segments renumbered 1..N in file order (later segments win where they overlap); ``label_names`` maps
    its values to segment names.
    """

    path: Path
    segments: List[Segment]
    layers: np.ndarray
    ijk_to_ras: np.ndarray
    header: Dict[str, object] = field(default_factory=dict)

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.segments]

    def find_segment(self, key: Union[str, int, Segment]) -> Segment:
        """Segment by ID, name (case-insensitive; spaces and underscores alike) or label value."""
        if isinstance(key, Segment):
            return key
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            found = [s for s in self.segments if s.label_value == int(key)]
            if len(found) > 1:
                raise LabelError(f"label value {key} is used by several segments in {self.path.name} "
                                 f"({', '.join(repr(s.name) for s in found)}, on different layers): "
                                 "ask for the segment by name or ID")
        else:
            text = str(key)
            found = [s for s in self.segments if s.id == text] or [s for s in self.segments if s.name == text] or \
                [s for s in self.segments if _normalize_name(s.name) == _normalize_name(text)] or \
                [s for s in self.segments if _normalize_name(s.id) == _normalize_name(text)]
            if not found and text.strip().isdigit():
                return self.find_segment(int(text))
            if len(found) > 1:
                raise LabelError(f"several segments in {self.path.name} are named {text!r} "
                                 f"(IDs {', '.join(s.id for s in found)}): ask for one by ID")
        if not found:
            raise LabelError(f"no segment {key!r} in {self.path}; it has: " + ", ".join(
                f"{s.name!r} (ID {s.id}, label {s.label_value}" + (f", layer {s.layer})" if self.layers.shape[0] > 1
                                                                   else ")") for s in self.segments))
        return found[0]

    def segment_mask(self, key: Union[str, int, Segment]) -> np.ndarray:
        """bool ``[k, j, i]`` mask of one segment."""
        segment = self.find_segment(key)
        return self.layers[segment.layer] == segment.label_value

    def describe(self, key: Union[str, int, Segment]) -> str:
        s = self.find_segment(key)
        layer = f", layer {s.layer}" if self.layers.shape[0] > 1 else ""
        return f"segment {s.name!r} (ID {s.id}, label {s.label_value}{layer}) of {self.path.name}"

    @property
    def label_names(self) -> Dict[int, str]:
        if self.layers.shape[0] == 1:
            return {s.label_value: s.name for s in self.segments}
        return {n: s.name for n, s in enumerate(self.segments, start=1)}

    @property
    def volume(self) -> Volume:
        if self.layers.shape[0] == 1:
            array = self.layers[0]
        else:
            dtype = np.uint8 if len(self.segments) < 256 else np.uint16
            array = np.zeros(self.layers.shape[1:], dtype=dtype)
            for n, s in enumerate(self.segments, start=1):
                array[self.layers[s.layer] == s.label_value] = n
        return Volume(array, self.ijk_to_ras.copy(), {"path": str(self.path), "label_names": self.label_names})


def _normalize_name(name: str) -> str:
    return re.sub(r"[\s_]+", " ", str(name).strip().lower())


def _read_nrrd_header_keys(p: Path, limit: int = 1 << 20) -> List[str]:
    """Field names of an NRRD header (without pynrrd): lines up to the first empty line."""
    keys = []
    with open(p, "rb") as f:
        head = f.read(limit)
    if not head.startswith(b"NRRD"):
        return keys
    for line in head.split(b"\n")[1:]:
        line = line.rstrip(b"\r")
        if not line:
            break
        if line.startswith(b"#"):
            continue
        m = re.match(rb"([^:]+):=?", line)
        if m:
            keys.append(m.group(1).decode("latin-1").strip())
    return keys


def is_segmentation_file(path: PathLike) -> bool:
    """True for a Slicer segmentation: ``.seg.nrrd``, or an NRRD whose header has ``Segment0_*`` fields."""
    p = Path(path)
    ext = file_extension(p)
    if ext == SEGMENTATION_EXTENSION:
        return True
    if ext in (".nrrd", ".nhdr") and p.is_file():
        return any(re.match(r"Segment\d+_(ID|LabelValue|Name)$", k) for k in _read_nrrd_header_keys(p))
    return False


def read_segmentation(path: PathLike) -> SegmentationFile:
    """Read a Slicer segmentation (.seg.nrrd), with shared-labelmap layers and overlapping segments."""
    p = _existing_file(path, (SEGMENTATION_EXTENSION, ".nrrd", ".nhdr"), "segmentation")
    import slicerio
    try:
        seg = slicerio.read_segmentation(str(p))
    except Exception as e:  # slicerio/pynrrd raise IOError, NRRDError, ValueError, ... for damaged files
        raise ValueError(f"cannot read segmentation {p}: {e}") from e
    voxels = seg.get("voxels")
    if voxels is None or voxels.ndim not in (3, 4):
        raise ValueError(f"cannot read segmentation {p}: expected 3D or 4D (layers) voxels")
    # slicerio (pynrrd, Fortran order) gives [i, j, k] or [layer, i, j, k]; samed wants [layer, k, j, i]
    layers = voxels[np.newaxis] if voxels.ndim == 3 else voxels
    layers = np.ascontiguousarray(layers.transpose(0, 3, 2, 1))
    segments = []
    for n, s in enumerate(seg.get("segments", [])):
        color = s.get("color")
        segments.append(Segment(name=str(s.get("name", s.get("id", f"Segment_{n + 1}"))),
                                id=str(s.get("id", f"Segment_{n + 1}")),
                                label_value=int(s.get("labelValue", 1)), layer=int(s.get("layer", 0)),
                                color=tuple(float(c) for c in color[:3]) if color else None))
        if segments[-1].layer >= layers.shape[0]:
            raise ValueError(f"segmentation {p} is inconsistent: segment {segments[-1].name!r} is on layer "
                             f"{segments[-1].layer} but the file has {layers.shape[0]} layer(s)")
    ijk_to_ras = LPS_TO_RAS @ np.asarray(seg["ijkToLPS"], dtype=float)
    header = {k: v for k, v in seg.items() if k not in ("voxels", "segments", "ijkToLPS")}
    return SegmentationFile(p, segments, layers, ijk_to_ras, header)


def _reference_geometry_string(volume: Volume) -> str:
    """Slicer's "Reference image geometry" conversion parameter: IJK->RAS row-major, then the extent."""
    m = volume.ijk_to_ras
    nk, nj, ni = volume.shape_kji
    values = [repr(float(v)) for v in m.ravel()] + [str(v) for v in (0, ni - 1, 0, nj - 1, 0, nk - 1)]
    return ";".join(values) + ";"


MaskSpec = Union[Dict[str, np.ndarray], Iterable[Tuple]]


def write_segmentation(path: PathLike, masks: MaskSpec, geometry: Volume, *, overwrite: bool = False,
                       compression_level: int = 6) -> Path:
    """Write masks as a Slicer ``.seg.nrrd`` (names, colours; overlapping masks go to extra layers as Slicer does).

    ``masks``: ``{name: bool [k, j, i]}`` or a list of ``(name, mask)`` / ``(name, mask, (r, g, b))`` with colours
    in 0..1. ``geometry``: any volume on the masks' grid (only its shape and matrix are used).
    """
    p = Path(path)
    if file_extension(p) != SEGMENTATION_EXTENSION:
        raise ValueError(f"a segmentation file name must end with {SEGMENTATION_EXTENSION}: {p}")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} already exists; pass overwrite=True to replace it, or choose another name")
    if not p.parent.exists():
        raise FileNotFoundError(f"folder for {p} does not exist")
    items = list(masks.items()) if isinstance(masks, dict) else [tuple(m) for m in masks]
    if not items:
        raise ValueError(f"no masks to write to {p}")
    import slicerio

    ni_nj_nk = tuple(reversed(geometry.shape_kji))
    ijk_to_lps = LPS_TO_RAS @ geometry.ijk_to_ras
    seg = slicerio.create_segmentation(ni_nj_nk, ijk_to_lps, dtype="uint8")
    seg["containedRepresentationNames"] = ["Binary labelmap"]
    seg["conversionParameters"] = [{
        "name": "Reference image geometry", "value": _reference_geometry_string(geometry),
        # Slicer's parser drops the last "name|value|description" unless "&" follows it; slicerio does not add it
        "description": "Image geometry description string determining the geometry of the labelmap that is "
                       "created in course of conversion.&"}]
    full_extent = [0, ni_nj_nk[0] - 1, 0, ni_nj_nk[1] - 1, 0, ni_nj_nk[2] - 1]
    for n, item in enumerate(items):
        if len(item) not in (2, 3):
            raise ValueError(f"mask entry {n} must be (name, mask) or (name, mask, color), got {len(item)} values")
        name, mask = str(item[0]), np.asarray(item[1])
        color = item[2] if len(item) == 3 and item[2] is not None else DEFAULT_SEGMENT_COLORS[n % len(
            DEFAULT_SEGMENT_COLORS)]
        if mask.shape != geometry.shape_kji:
            raise ValueError(f"mask {name!r} has shape {mask.shape}, the grid is {geometry.shape_kji} ([k, j, i])")
        color = [float(c) for c in color][:3]
        if any(c > 1.0 for c in color):  # 0..255 colours
            color = [c / 255.0 for c in color]
        segment = slicerio.add_segment(seg, mask.astype(bool).transpose(2, 1, 0), {
            "id": f"Segment_{n + 1}", "name": name, "color": color,
            "nameAutoGenerated": False, "colorAutoGenerated": False})
        # Full extent: some Slicer versions crop every segment of a shared layer to the first segment's extent.
        segment["extent"] = list(full_extent)
    try:
        slicerio.write_segmentation(str(p), seg, compression_level=compression_level)
    except OSError as e:
        raise OSError(f"cannot write segmentation {p}: {e}") from e
    return p


# ----------------------------------------------------------------------------------------------- labelmaps

def read_label_names(path: PathLike) -> Dict[int, str]:
    """``labels.json`` ({"1": "liver", ...}) -> {1: "liver", ...}."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(raw, list):  # ["background", "liver", ...] -> index = class id
            raw = {str(i): name for i, name in enumerate(raw) if i}
        return {int(k): str(v) for k, v in raw.items()}
    except FileNotFoundError:
        raise FileNotFoundError(f"class names file not found: {p}") from None
    except (ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"cannot read class names from {p}: expected {{\"1\": \"name\", ...}} ({e})") from e


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


# ----------------------------------------------------------------------------------------------- datasets

@dataclass
class DatasetItem:
    name: str
    image: Path
    mask: Optional[Path]


@dataclass
class DatasetInfo:
    """A dataset folder: ``kind`` "2d" (images/, masks/) or "3d" (image.*, label.*), items and class names."""

    path: Path
    kind: str
    items: List[DatasetItem]
    class_names: Dict[int, str]

    @property
    def missing_masks(self) -> List[str]:
        return [item.name for item in self.items if item.mask is None]


_EXPECTED_LAYOUT = ("a 2D set (images/NAME.png and masks/NAME.png, labels.json) or a 3D set "
                    "(image.nrrd|image.nii.gz, label.nrrd|label.nii.gz|label.seg.nrrd, labels.json)")


def _files_by_stem(folder: Path, extensions: Sequence[str]) -> Dict[str, Path]:
    found = {}
    for f in sorted(folder.iterdir()):
        ext = file_extension(f)
        if f.is_file() and ext in extensions and not f.name.startswith("."):
            found.setdefault(f.name[: -len(ext)], f)
    return found


def list_dataset(path: PathLike) -> DatasetInfo:
    """Recognize a 2D or 3D dataset folder (layouts in shared/data/README.md) and list its items."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; a dataset is a folder with {_EXPECTED_LAYOUT}")
    labels_json = folder / "labels.json"
    class_names = read_label_names(labels_json) if labels_json.is_file() else {}
    if (folder / "images").is_dir():
        images = _files_by_stem(folder / "images", IMAGE_2D_EXTENSIONS)
        if not images:
            raise ValueError(f"{folder / 'images'} has no images ({', '.join(IMAGE_2D_EXTENSIONS)})")
        masks = _files_by_stem(folder / "masks", IMAGE_2D_EXTENSIONS) if (folder / "masks").is_dir() else {}
        items = [DatasetItem(stem, image, masks.get(stem)) for stem, image in images.items()]
        return DatasetInfo(folder, "2d", items, class_names)
    image = next((folder / f"image{e}" for e in VOLUME_EXTENSIONS if (folder / f"image{e}").is_file()), None)
    if image is not None:
        label_exts = (SEGMENTATION_EXTENSION,) + VOLUME_EXTENSIONS
        label = next((folder / f"label{e}" for e in label_exts if (folder / f"label{e}").is_file()), None)
        return DatasetInfo(folder, "3d", [DatasetItem(folder.name, image, label)], class_names)
    contents = ", ".join(sorted(f.name + ("/" if f.is_dir() else "") for f in folder.iterdir())[:12])
    raise ValueError(f"{folder} is not a dataset folder: expected {_EXPECTED_LAYOUT}; "
                     f"found {contents or 'nothing'}")
