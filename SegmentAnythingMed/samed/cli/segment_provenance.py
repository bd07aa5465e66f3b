"""``samed segment``'s provenance and measurements: what goes into the written segment's tag and the JSON report,
and ``--continue SEG``: the recorded prompts and settings put back into the command's options."""
from __future__ import annotations

from typing import Dict, Optional

from .. import __version__
from ..core import io
from ..core.geometry import Volume
from ..core.measurements import intensity_unit_of, measure
from ..core.provenance import (PROVENANCE_TAG, PromptRecord, Provenance, ProvenanceError, check_same_grid,
                               describe_backend, grid_record, read_segment_provenance)

# the options of ``samed segment`` that decide its voxels, recorded and restored by --continue
SETTING_OPTIONS = ("propagate", "max_slices", "box_margin", "box_margin_frac", "min_area_ratio", "max_area_ratio",
                   "min_score")
INTENSITY_OPTIONS = ("intensity", "modality", "window", "level")


def run_provenance(args, backend, volume: Volume, slice_prompts, intensity, indices,
                   propagation: Optional[Dict[str, object]], prompt_source: str) -> Provenance:
    """The provenance of the segment this run writes."""
    model, engine = describe_backend(backend)
    settings = {k: getattr(args, k, None) for k in SETTING_OPTIONS}
    walk = dict(propagation or {})
    if indices:
        walk["range"] = [int(min(indices)), int(max(indices))]
    walk["settings"] = settings
    window = {k: getattr(args, k, None) for k in INTENSITY_OPTIONS}
    if intensity is not None:
        window.update(low=float(intensity.low), high=float(intensity.high))
    image = volume.metadata.get("path")
    return Provenance(model=model, engine=engine, samed_version=__version__, axis=args.axis,
                      prompts=[PromptRecord.from_prompt(i, p) for i, p in sorted(slice_prompts.prompts.items())],
                      propagation=walk, intensity=window, grid=grid_record(volume.shape_kji, volume.ijk_to_ras),
                      image=str(image).replace("\\", "/").rsplit("/", 1)[-1] if image else None,
                      prompt_source=prompt_source,
                      roi_range=list(slice_prompts.roi_range) if slice_prompts.roi_range else None)


def segment_tags(provenance: Provenance) -> Dict[str, str]:
    return {PROVENANCE_TAG: provenance.to_tag_value()}


def dicom_parameters(provenance: Provenance) -> Dict[str, str]:
    """The provenance as one algorithm parameter of a DICOM SEG, unless it is past AlgorithmParameters' limit (LT:
    10240 characters with the model and engine): then only its size is said (the --report keeps it whole)."""
    value = provenance.to_dicom_parameter()
    if len(value) > 9000:
        return {PROVENANCE_TAG: f"omitted ({len(value)} characters): see samed segment --report"}
    return {PROVENANCE_TAG: value}


def continue_from(args, volume: Volume) -> Provenance:
    """Read ``args.continue_from``'s provenance, check it was made on ``volume``'s grid, and set ``args`` to its
    prompts and settings (raises ProvenanceError / PromptError with what to do)."""
    from ..core.prompts import PromptError

    if args.box or args.point or args.exclude_point or args.markups or args.slice:
        raise PromptError("--continue takes its prompts from the segmentation's provenance: give no --box, "
                          "--point, --exclude-point, --slice or --markups with it")
    path = args.continue_from
    if not io.is_segmentation_file(path):
        raise ProvenanceError(f"--continue {path}: not a Slicer segmentation (.seg.nrrd) written by samed")
    seg = io.read_segmentation(path)
    prov = read_segment_provenance(seg)
    check_same_grid(seg.layers.shape[1:], seg.ijk_to_ras, volume.shape_kji, volume.ijk_to_ras,
                    f"--continue {path}'s grid", f"image {args.image}")
    prov.check_grid(volume.shape_kji, volume.ijk_to_ras, f"image {args.image}")
    if not prov.prompts:
        raise ProvenanceError(f"--continue {path}: its provenance records no prompts to start from")
    args.axis = prov.axis
    args.model = prov.model
    walk = prov.propagation or {}
    if walk.get("mode") == "walk":  # a record from Slicer has no "propagate" option: its walk says it
        args.propagate = True
    for k, v in (walk.get("settings") or {}).items():
        k = {"box_margin_px": "box_margin"}.get(k, k)  # core.propagation.PropagationSettings' name of the option
        if k in SETTING_OPTIONS:
            setattr(args, k, v)
    for k in INTENSITY_OPTIONS:
        if prov.intensity and k in prov.intensity:
            setattr(args, k, prov.intensity[k])
    keys = list(prov.prompts)
    if prov.prompt_source == "cli" and (len(keys) == 1 or all(p.kind == "box" for p in keys)):
        args.box = [list(p.box_xy) for p in keys if p.box_xy is not None]
        args.slice = [p.slice for p in keys]
        args.point = [list(x) for p in keys for x in p.include_xy]
        args.exclude_point = [list(x) for p in keys for x in p.exclude_xy]
    else:  # prompts that came from markups (or Slicer): given to the run as they were on their slices
        args.continue_prompts = prov.slice_prompts()
    if not args.name:
        named = [s.name for s in seg.segments if PROVENANCE_TAG in (s.tags or {})]
        args.name = named[0] if named else None
    return prov


def measurements(mask_volume, volume: Volume, name: str, axis: str,
                 modality: Optional[str] = None) -> Dict[str, object]:
    """The segment's measurements; intensities in HU when the image is CT (its DICOM Modality, or --modality CT)."""
    unit = intensity_unit_of(volume) or ("HU" if str(modality or "").upper() == "CT" else None)
    return measure(mask_volume, volume, name, axis=axis, intensity_unit=unit).as_dict()
