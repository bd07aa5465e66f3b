"""``samed refine``: an existing segmentation of one or more structures (made by another tool) -> a refined
segmentation file, each structure checked against the model slice by slice (:mod:`samed.core.refine`); or boxes
from a detector (CSV) -> the model's masks."""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..core import io
from ..core.geometry import AXIS_NAMES, numpy_axis
from ..core.prompts import Prompt
from ..core.provenance import (PromptRecord, Provenance, changed_slices, describe_backend, grid_record,
                               refinement_record)
from ..core.refine import CORRECTED, RefineSettings, refine_mask
from ..core.volume_session import VolumeSession, check_finite_slice, count_nonfinite
from .common import add_backend_options, add_intensity_options, backend_from_args, intensity_from_args, progress_bar
from .outputs import check_output
from .segment_provenance import INTENSITY_OPTIONS, segment_tags
from .segment import _load_reference, load_input


def add_parser(sub) -> None:
    p = sub.add_parser("refine", help="refine an existing segmentation (another tool's) with the model",
                       description="Refine structures of an existing segmentation (a model's output, a coarse manual "
                                   "one): each slice of each structure is prompted with a box around it; the "
                                   "model's masks measure, over the whole structure, how far the outline is off "
                                   "(a uniform offset beyond the model's own bias, a shift); a correction the "
                                   "image's edges also ask for is kept on the slices where the model agrees with "
                                   "it. A segmentation made on a 2x/3x coarser grid is interpolated first. Or, with "
                                   "--boxes, segment the boxes of a detector. See docs/evaluation.md.")
    p.add_argument("image", help="volume (.nrrd, .nii, .nii.gz, .mha) or a folder of DICOM files (or a .dcm)")
    p.add_argument("--series", metavar="UID", default=None,
                   help="Series Instance UID of the DICOM series to read when the folder holds several (they are "
                        "listed when this is left out)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--segmentation", metavar="SEG", help="the segmentation to refine: .seg.nrrd or a labelmap "
                                                           "(.nrrd, .nii.gz) on the same patient")
    src.add_argument("--boxes", metavar="FILE.csv",
                     help="boxes from a detector: one 'slice,x0,y0,x1,y1' per row (voxel coordinates of the slice "
                          "along --axis: x = column, y = row; a header row is allowed)")
    p.add_argument("--label", action="append", default=[], metavar="N|NAME",
                   help="label value or segment name to refine (repeatable; needed when SEG holds more than one)")
    p.add_argument("--name", default=None, help="segment name for --boxes (default 'Segment_1')")
    p.add_argument("--out", required=True, help="output: NAME.seg.nrrd (one segment per structure)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--axis", default="axial", choices=AXIS_NAMES, help="slicing axis (default axial)")
    r = p.add_argument_group("refinement")
    r.add_argument("--box-margin", type=float, default=RefineSettings.box_margin_px,
                   help="pixels added around each slice's mask for its box (default %(default)s)")
    r.add_argument("--box-margin-frac", type=float, default=RefineSettings.box_margin_frac,
                   help="plus this fraction of the box's size on each side (default %(default)s)")
    r.add_argument("--model-bias", type=float, default=RefineSettings.model_bias_px,
                   help="pixels the model's outline lies outside a right one on average (default %(default)s, "
                        "LiteMedSAM's, measured: docs/evaluation.md)")
    add_backend_options(p)
    add_intensity_options(p)
    p.set_defaults(func=run)


def read_boxes_csv(path: str, slice_shape, n_slices: int) -> Dict[int, np.ndarray]:
    """{slice: box x0, y0, x1, y1} from a detector's CSV; ValueError naming the row for anything else."""
    boxes: Dict[int, np.ndarray] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), 1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            try:
                values = [float(c) for c in cells]
            except ValueError:
                if n == 1:  # a header
                    continue
                raise ValueError(f"{path} row {n}: expected 'slice,x0,y0,x1,y1' numbers, got {','.join(cells)!r}")
            if len(values) != 5:
                raise ValueError(f"{path} row {n}: expected 5 values 'slice,x0,y0,x1,y1', got {len(values)}")
            k = values[0]
            if k != int(k) or not 0 <= k < n_slices:
                raise ValueError(f"{path} row {n}: slice {values[0]:g} is not a slice index 0..{n_slices - 1}")
            if int(k) in boxes:
                raise ValueError(f"{path} row {n}: slice {int(k)} has a box already (one box per slice)")
            box = np.array(values[1:])
            Prompt(box_xy=box).validate(slice_shape)
            boxes[int(k)] = box
    if not boxes:
        raise ValueError(f"{path} holds no boxes: give one 'slice,x0,y0,x1,y1' row per slice")
    return boxes


def _structures(args, volume) -> List[tuple]:
    """[(name, mask on the image's grid, description, label)] of the --label structures of --segmentation."""
    labels = list(args.label)
    if not labels:
        if io.is_segmentation_file(args.segmentation):
            found = io.read_segmentation(args.segmentation).names
            shown = list(found)
        else:
            labelmap, label_names = io.read_label(args.segmentation)
            found = [str(int(v)) for v in np.unique(labelmap.array) if v != 0]
            shown = [f"{v} ({label_names.get(int(v), '?')})" for v in found]
        if not found:
            raise io.LabelError(f"{args.segmentation} is empty (no structure in it): nothing to refine; give the "
                                f"segmentation that holds the structure")
        if len(found) != 1:
            raise io.LabelError(f"{args.segmentation} holds {len(found)} structures ({', '.join(shown[:20])}"
                                f"{', ...' if len(found) > 20 else ''}): choose them with --label N|NAME")
        labels = found
    out, seen = [], set()
    for label in labels:
        mask, name, description = _load_reference(args.segmentation, label, volume)
        if not mask.any():
            raise io.LabelError(f"{description} is empty: nothing to refine; choose another --label")
        if name in seen:
            raise ValueError(f"--label {label}: segment {name!r} is asked for twice")
        seen.add(name)
        out.append((name, mask, description, str(label)))
    return out


def _file_name(path) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def _provenance_maker(args, backend, volume, intensity):
    """(prompts, propagation record, prompt source) -> the Provenance of one written segment (the backend is
    described now, while it is open)."""
    from .. import __version__

    model, engine = describe_backend(backend)
    window = {k: getattr(args, k, None) for k in INTENSITY_OPTIONS}
    window.update(low=float(intensity.low), high=float(intensity.high))
    image = volume.metadata.get("path")

    def make(prompts, record, prompt_source) -> Provenance:
        return Provenance(model=model, engine=engine, samed_version=__version__, axis=args.axis, prompts=prompts,
                          propagation=record, intensity=dict(window),
                          grid=grid_record(volume.shape_kji, volume.ijk_to_ras),
                          image=_file_name(image) if image else None, tool="samed refine",
                          prompt_source=prompt_source)
    return make


def run(args) -> int:
    inputs = [args.image, args.segmentation, args.boxes, args.token_file]
    out = check_output(args.out, "--out", inputs, args.overwrite)
    if io.file_extension(out) != io.SEGMENTATION_EXTENSION:
        raise ValueError(f"--out {args.out}: samed refine writes a Slicer segmentation: give a name ending in "
                         f"{io.SEGMENTATION_EXTENSION}")
    if args.boxes and args.label:
        raise ValueError("--label goes with --segmentation; --boxes makes one segment (name it with --name)")
    settings = RefineSettings(box_margin_px=args.box_margin, box_margin_frac=args.box_margin_frac,
                              model_bias_px=args.model_bias)
    settings.validate()
    volume = load_input(args.image, series=args.series)
    intensity = intensity_from_args(args, volume.array)
    np_axis = numpy_axis(args.axis, volume.ijk_to_ras)
    slice_shape = [n for a, n in enumerate(volume.array.shape[:3]) if a != np_axis]
    n_slices = volume.array.shape[np_axis]
    if args.boxes:
        boxes = read_boxes_csv(args.boxes, slice_shape, n_slices)
        structures = []
    else:
        structures = _structures(args, volume)
    nonfinite = count_nonfinite(volume.array)
    if nonfinite:
        print(f"samed refine: warning: {args.image} has {nonfinite} NaN or infinite voxels; the model sees them as "
              f"the intensity window's lowest value (black)", file=sys.stderr)
    # only now load the model: every input error above is reported without waiting for it
    backend = backend_from_args(args)
    session = VolumeSession(volume, backend, args.axis, intensity=intensity, max_cached_slices=4)
    provenance = _provenance_maker(args, backend, volume, intensity)
    tags = {}  # segment name -> its tags: the provenance, which says it was refined (or the detector's boxes)
    t0 = time.perf_counter()
    refined = {}
    try:
        if args.boxes:
            for k in boxes:
                check_finite_slice(volume.array, np_axis, k)
            with progress_bar(len(boxes), "segment") as bar:
                preds = session.segment_slices({k: Prompt(box_xy=b) for k, b in boxes.items()},
                                               progress=lambda d, n: bar.update(1))
            name = args.name or "Segment_1"
            refined[name] = session.masks_to_volume({k: p.best for k, p in preds.items()})
            tags[name] = segment_tags(provenance([PromptRecord(k, [float(v) for v in b]) for k, b in boxes.items()],
                                                 None, "boxes"))
            print(f"{name}: {len(boxes)} boxes segmented")
        for name, mask, description, label in structures:
            n_original = int(mask.any(axis=tuple(a for a in range(3) if a != np_axis)).sum())
            with progress_bar(n_original, f"refine {name}") as bar:
                refined[name], result = refine_mask(backend, session.picture, mask, np_axis, settings,
                                                    progress=lambda d, n: bar.update(d - bar.n))
            corrected = sorted(i for i, c in result.choice.items() if c == CORRECTED)
            coarse = [f for f, _ in result.coarse_grid]
            if max(coarse) > 1:
                print(f"{name}: made on a grid {'x'.join(map(str, coarse))} coarser than the image's (blocks of "
                      f"identical voxels): interpolated linearly first")
            print(f"{name} ({description}): {result.check.describe()}; "
                  f"{len(corrected)} of {len(result.choice)} slices corrected")
            source = {"file": _file_name(args.segmentation), "segment": name, "label": label,
                      "description": description}
            record = refinement_record(source, changed_slices(mask, refined[name], np_axis), settings,
                                       result.check.describe())
            tags[name] = segment_tags(provenance([], record, "segmentation"))
        seconds = time.perf_counter() - t0
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        io.write_segmentation(out, refined, volume, overwrite=args.overwrite, segment_tags=tags)
    finally:
        backend.close()
    print(f"wrote {out} ({len(refined)} segment{'s' if len(refined) != 1 else ''}) in {seconds:.1f} s")
    return 0
