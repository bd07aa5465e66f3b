"""Provenance of a segment samed made: which model and engine, which samed version, which prompts (kind, slice,
coordinates), how far propagation went and why it stopped, when; enough to audit the segment or continue it
(``samed segment --continue SEG IMAGE``).

A plain dataclass (:class:`Provenance`, ``as_dict``/``from_dict``) so that any writer can use it: the ``.seg.nrrd``
writer stores it as one segment tag, the Slicer bridge as a ``vtkSegment`` tag, a DICOM SEG writer in its algorithm
fields.

Segment tags in Slicer's format: the NRRD field ``Segment{N}_Tags`` holds ``key:value|key:value|``. Slicer's reader
(``vtkMRMLSegmentationStorageNode::SetSegmentTagsFromString``, Slicer/Slicer
Libs/MRML/Core/vtkMRMLSegmentationStorageNode.cxx) splits at every ``|`` and then at the first ``:`` and unescapes
nothing; slicerio (``segmentation.py``, 1.4.0) does the same and strips spaces. Teem's NRRD header reader (inside
ITK, which Slicer reads ``.seg.nrrd`` with) turns ``\\n`` and ``\\\\`` of a key/value field back into a newline and a
backslash. So the tag value here is compact ASCII JSON (``json.dumps``, which leaves no newline and no non-ASCII)
with ``%``, ``|`` and ``\\`` percent-encoded (``%25``, ``%7C``, ``%5C``): it holds none of the characters those
parsers act on, and ``urllib.parse.unquote`` gives the JSON back.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote

import numpy as np

PROVENANCE_TAG = "SegmentAnythingMed.Provenance"
PROVENANCE_FORMAT = 1


class ProvenanceError(ValueError):
    """A segment without provenance, provenance that cannot be read, or one made on another grid."""


@dataclass
class PromptRecord:
    """One slice's prompt in that slice's pixel coordinates (x = column, y = row)."""

    slice: int
    box_xy: Optional[List[float]] = None
    include_xy: List[List[float]] = field(default_factory=list)
    exclude_xy: List[List[float]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        kinds = (["box"] if self.box_xy is not None else []) + (["points"] if self.include_xy or self.exclude_xy
                                                                 else [])
        return "+".join(kinds) or "none"

    def as_dict(self) -> Dict[str, object]:
        d = {"kind": self.kind, "slice": int(self.slice)}
        if self.box_xy is not None:
            d["box_xy"] = [float(v) for v in self.box_xy]
        if self.include_xy:
            d["include_xy"] = [[float(v) for v in p] for p in self.include_xy]
        if self.exclude_xy:
            d["exclude_xy"] = [[float(v) for v in p] for p in self.exclude_xy]
        return d

    @classmethod
    def from_prompt(cls, index: int, prompt) -> "PromptRecord":
        """From a :class:`samed.core.prompts.Prompt` (or anything with its three fields)."""
        box = getattr(prompt, "box_xy", None)
        return cls(int(index), None if box is None else [float(v) for v in np.asarray(box).ravel()],
                   np.asarray(getattr(prompt, "include_points_xy", np.zeros((0, 2)))).tolist(),
                   np.asarray(getattr(prompt, "exclude_points_xy", np.zeros((0, 2)))).tolist())

    def to_prompt(self):
        from .prompts import Prompt

        return Prompt(np.asarray(self.include_xy, dtype=float).reshape(-1, 2),
                      np.asarray(self.exclude_xy, dtype=float).reshape(-1, 2),
                      None if self.box_xy is None else np.asarray(self.box_xy, dtype=float))


@dataclass
class Provenance:
    """How one segment was made. ``propagation``: None (no propagation) or a dict with ``mode`` ("walk" from one
    seed, "key slices"), ``seed``, ``range`` [first, last] slice, ``stopped`` {direction: reason}, ``settings``; or,
    for a refined segment (:func:`refinement_record`), ``mode`` "refine", ``source``, ``changed``, ``check``,
    ``settings``."""

    model: str
    engine: Optional[str]
    samed_version: str
    axis: str
    prompts: List[PromptRecord]
    propagation: Optional[Dict[str, object]] = None
    intensity: Optional[Dict[str, object]] = None   # how slices became pictures (mode, window, ...)
    grid: Optional[Dict[str, object]] = None        # the image grid: shape_kji, ijk_to_ras
    image: Optional[str] = None                     # the image file's name (no folder), for the audit
    tool: str = "samed segment"
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    prompt_source: str = "cli"                      # cli, markups, slicer
    roi_range: Optional[List[int]] = None
    format: int = PROVENANCE_FORMAT

    def as_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["prompts"] = [p.as_dict() for p in self.prompts]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> "Provenance":
        try:
            fmt = int(d.get("format", 0))
            if fmt > PROVENANCE_FORMAT:
                raise ProvenanceError(f"provenance format {fmt} is newer than this samed reads "
                                      f"({PROVENANCE_FORMAT}): update samed")
            prompts = [PromptRecord(int(p["slice"]), p.get("box_xy"), list(p.get("include_xy", [])),
                                    list(p.get("exclude_xy", []))) for p in d.get("prompts", [])]
            known = {k: d[k] for k in ("propagation", "intensity", "grid", "image", "tool", "created",
                                       "prompt_source", "roi_range") if k in d}
            return cls(model=str(d["model"]), engine=d.get("engine"), samed_version=str(d["samed_version"]),
                       axis=str(d.get("axis", "axial")), prompts=prompts, **known)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ProvenanceError):
                raise
            raise ProvenanceError(f"provenance is incomplete or damaged ({type(e).__name__}: {e})") from None

    # ---- one segment tag (Slicer's "key:value|" format) -------------------------------------------------------
    def to_tag_value(self) -> str:
        return encode_tag_value(self.as_dict())

    @classmethod
    def from_tag_value(cls, value: str) -> "Provenance":
        return cls.from_dict(decode_tag_value(value))

    # ---- one DICOM SEG algorithm parameter ---------------------------------------------------------------------
    def to_dicom_parameter(self) -> str:
        """The tag value with ``,`` and ``=`` percent-encoded too: highdicom writes AlgorithmParameters (LT) as
        ``key=value,key=value`` and splits it at those (highdicom/content.py, AlgorithmIdentificationSequence)."""
        return self.to_tag_value().replace(",", "%2C").replace("=", "%3D")

    @classmethod
    def from_dicom_parameter(cls, value: str) -> "Provenance":
        return cls.from_dict(decode_tag_value(value))

    def slice_prompts(self):
        """The prompts as a :class:`samed.core.markup_prompts.SlicePrompts`."""
        from .markup_prompts import SlicePrompts

        return SlicePrompts({p.slice: p.to_prompt() for p in self.prompts},
                            tuple(self.roi_range) if self.roi_range else None)

    def check_grid(self, shape_kji: Sequence[int], ijk_to_ras, what: str, tolerance_mm: float = 1e-3) -> None:
        """Refuse an image whose grid is not the recorded one (ProvenanceError naming ``what``)."""
        if not self.grid:
            raise ProvenanceError(f"the provenance records no image grid, so {what} cannot be checked against it")
        check_same_grid(self.grid["shape_kji"], self.grid["ijk_to_ras"], shape_kji, ijk_to_ras,
                        "the grid the segment was made on", what, tolerance_mm)


def provenance_of(backend, axis: str, prompts, volume, propagation_result=None, settings=None,
                  tool: str = "3D Slicer, Segment Anything effect", prompt_source: str = "slicer") -> Provenance:
    """A segment's provenance from what a session holds: ``prompts`` {slice index: Prompt}, the volume it was made
    on, and the propagation's result (``seed_index``, ``masks``, ``stopped``) when it was propagated."""
    from .. import __version__

    model, engine = describe_backend(backend)
    walk = None
    if propagation_result is not None:
        indices = sorted(getattr(propagation_result, "masks", {}) or {})
        walk = {"mode": "walk", "seed": int(propagation_result.seed_index),
                "stopped": dict(getattr(propagation_result, "stopped", {}) or {}),
                "range": [int(indices[0]), int(indices[-1])] if indices else None}
        if settings is not None:
            walk["settings"] = {k: v for k, v in asdict(settings).items() if isinstance(v, (int, float, str))}
    return Provenance(model=model, engine=engine, samed_version=__version__, axis=str(axis),
                      prompts=[PromptRecord.from_prompt(i, p) for i, p in sorted(prompts.items())],
                      propagation=walk, grid=grid_record(volume.shape_kji, volume.ijk_to_ras),
                      image=str(volume.metadata.get("name")) if volume.metadata.get("name") else None,
                      tool=tool, prompt_source=prompt_source)


def refinement_record(source: Dict[str, object], changed: Sequence[int], settings=None,
                      check: Optional[str] = None) -> Dict[str, object]:
    """The ``propagation`` record of a refined segment (``samed refine``, the effect's Refine): ``source`` says which
    segment was refined (file or node, segment name, label), ``changed`` the slice indices the refinement replaced,
    ``check`` what the model's check decided, ``settings`` the RefineSettings' scalar fields."""
    record: Dict[str, object] = {"mode": "refine", "source": dict(source), "changed": sorted(int(i) for i in changed)}
    if check is not None:
        record["check"] = str(check)
    if settings is not None:
        record["settings"] = {k: v for k, v in asdict(settings).items() if isinstance(v, (int, float, str))}
    return record


def changed_slices(original, refined, np_axis: int) -> List[int]:
    """The slice indices (along ``np_axis``) where two masks of one grid differ."""
    a, b = np.moveaxis(np.asarray(original), np_axis, 0), np.moveaxis(np.asarray(refined), np_axis, 0)
    return [i for i in range(a.shape[0]) if not np.array_equal(a[i], b[i])]


def grid_record(shape_kji: Sequence[int], ijk_to_ras) -> Dict[str, object]:
    return {"shape_kji": [int(n) for n in shape_kji[:3]],
            "ijk_to_ras": [[round(float(v), 6) for v in row] for row in np.asarray(ijk_to_ras, dtype=float)]}


def check_same_grid(shape_a, matrix_a, shape_b, matrix_b, what_a: str, what_b: str,
                    tolerance_mm: float = 1e-3) -> None:
    shape_a, shape_b = [int(n) for n in shape_a[:3]], [int(n) for n in shape_b[:3]]
    if shape_a != shape_b:
        raise ProvenanceError(f"{what_b} has {shape_b} voxels ([k, j, i]) but {what_a} has {shape_a}: "
                              f"give the image the segment was made on")
    a, b = np.asarray(matrix_a, dtype=float), np.asarray(matrix_b, dtype=float)
    corners = np.array([[i, j, k, 1.0] for i in (0, shape_a[2] - 1) for j in (0, shape_a[1] - 1)
                        for k in (0, shape_a[0] - 1)])
    off = float(np.max(np.linalg.norm((corners @ a.T - corners @ b.T)[:, :3], axis=1)))
    if off > tolerance_mm:
        raise ProvenanceError(f"{what_b} lies {off:.3g} mm away from {what_a} (another origin, spacing or "
                              f"direction): give the image the segment was made on")


def encode_tag_value(data: Dict[str, object]) -> str:
    """Compact ASCII JSON with ``%``, ``|`` and ``\\`` percent-encoded (see the module docstring)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False, sort_keys=True)
    return text.replace("%", "%25").replace("|", "%7C").replace("\\", "%5C")


def decode_tag_value(value: str) -> Dict[str, object]:
    try:
        data = json.loads(unquote(value))
    except (ValueError, TypeError) as e:
        raise ProvenanceError(f"the {PROVENANCE_TAG} tag is not readable provenance ({e})") from None
    if not isinstance(data, dict):
        raise ProvenanceError(f"the {PROVENANCE_TAG} tag holds {type(data).__name__}, not a record")
    return data


def tags_string(tags: Dict[str, str]) -> str:
    """Slicer's ``Segment{N}_Tags`` value for ``tags`` (as vtkMRMLSegmentationStorageNode::GetSegmentTagsAsString:
    ``key:value|`` per tag, keys sorted as its std::map). Refuses what Slicer's parser would split wrongly."""
    for key, value in tags.items():
        if not key or any(c in key for c in ":|\n"):
            raise ValueError(f"segment tag name {key!r} must be non-empty without ':', '|' or a newline")
        if any(c in str(value) for c in "|\n"):
            raise ValueError(f"segment tag {key!r}: its value must not hold '|' or a newline (encode it)")
    return "".join(f"{k}:{tags[k]}|" for k in sorted(tags))


def parse_tags_string(text: str) -> Dict[str, str]:
    """The tags of a ``Segment{N}_Tags`` value, parsed as Slicer's SetSegmentTagsFromString does: pieces ending in
    ``|``, each split at its first ``:``, pieces without ``:`` skipped (as is a last piece without ``|``)."""
    tags = {}
    pieces = text.split("|")[:-1]
    for piece in pieces:
        if ":" in piece:
            key, value = piece.split(":", 1)
            tags[key] = value
    return tags


def describe_backend(backend) -> Tuple[str, Optional[str]]:
    """(model, engine) of a samed backend: the in-process engine's kind and device, or the service's URL."""
    model = str(getattr(backend, "model", "unknown"))
    url = getattr(backend, "url", None)
    if url:
        return model, f"samed service {url}"
    engine = getattr(backend, "engine", None)
    if engine is None:
        return model, None
    try:
        info = engine.info()
    except Exception:  # noqa: BLE001 - provenance must not fail a finished segmentation
        info = {}
    kind = info.get("engine") or ("torch" if type(engine).__name__ == "SamEngine" else type(engine).__name__)
    device = getattr(engine, "device", None) or info.get("device")
    described = f"{kind} ({device})" if device else str(kind)
    if info.get("input_default") is False:  # --input-resize/--resize-filter/--mask-threshold changed the model's own
        described += f", input {info.get('resize')}/{info.get('resize_filter')}"
        if info.get("mask_threshold") is not None:
            described += f", mask threshold {info['mask_threshold']}"
    return model, described


def read_segment_provenance(seg_file, segment: Optional[str] = None) -> Provenance:
    """The provenance of one segment of a ``.seg.nrrd`` read by :func:`samed.core.segmentation_file.read_segmentation`
    (``segment``: name or ID; default the only segment that has provenance)."""
    found = []
    for s in seg_file.segments:
        value = (s.tags or {}).get(PROVENANCE_TAG)
        if value is not None and (segment is None or segment in (s.name, s.id)):
            found.append((s, value))
    if not found:
        which = f"segment {segment!r} of " if segment else ""
        raise ProvenanceError(f"{which}{seg_file.path} carries no SegmentAnythingMed provenance (no "
                              f"{PROVENANCE_TAG} segment tag): only segmentations samed wrote can be continued")
    if len(found) > 1:
        raise ProvenanceError(f"{seg_file.path} has {len(found)} segments with provenance "
                              f"({', '.join(repr(s.name) for s, _ in found)}): choose one")
    return Provenance.from_tag_value(found[0][1])
