"""Slicer segmentation files (``.seg.nrrd``): segments with names, colours, layers; reading and writing.

Reading goes through ``slicerio`` (imported on use); written files load in 3D Slicer with names and colours.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from .files import (DEFAULT_SEGMENT_COLORS, SEGMENTATION_EXTENSION, LabelError, PathLike, _existing_file,
                    atomic_output, file_extension)
from .file_integrity import check_volume_file
from .geometry import LPS_TO_RAS, Volume

# ----------------------------------------------------------------------------------------------- Slicer segmentations

@dataclass
class Segment:
    """One segment of a Slicer segmentation: where its voxels are (``layer``, ``label_value``) and how it looks."""

    name: str
    id: str
    label_value: int
    layer: int = 0
    color: Optional[Tuple[float, float, float]] = None
    tags: Dict[str, str] = field(default_factory=dict)  # Slicer segment tags (Segment{N}_Tags), e.g. provenance


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
    check_volume_file(p)
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
                                color=tuple(float(c) for c in color[:3]) if color else None,
                                tags={str(k): str(v) for k, v in (s.get("tags") or {}).items()}))
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
                       compression_level: int = 6, segment_tags: Optional[Dict[str, Dict[str, str]]] = None) -> Path:
    """Write masks as a Slicer ``.seg.nrrd`` (names, colours; overlapping masks go to extra layers as Slicer does).

    ``masks``: ``{name: bool [k, j, i]}`` or a list of ``(name, mask)`` / ``(name, mask, (r, g, b))`` with colours
    in 0..1. ``geometry``: any volume on the masks' grid (only its shape and matrix are used). ``segment_tags``:
    ``{segment name: {tag: value}}`` written as Slicer's ``Segment{N}_Tags`` (values must hold no ``|``: see
    :mod:`samed.core.provenance` for an encoding).
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
        segment = slicerio.add_segment(seg, np.asarray(mask, dtype=bool).transpose(2, 1, 0), {  # no copy
            "id": f"Segment_{n + 1}", "name": name, "color": color,
            "nameAutoGenerated": False, "colorAutoGenerated": False})
        # Full extent: some Slicer versions crop every segment of a shared layer to the first segment's extent.
        segment["extent"] = list(full_extent)
        tags = (segment_tags or {}).get(name)
        if tags:
            from .provenance import tags_string

            tags_string(tags)  # refuses a tag Slicer's parser would split wrongly
            segment["tags"] = dict(tags)
    try:
        with atomic_output(p) as tmp:
            slicerio.write_segmentation(str(tmp), seg, compression_level=compression_level)
    except OSError as e:
        raise OSError(f"cannot write segmentation {p}: {e}") from e
    return p


