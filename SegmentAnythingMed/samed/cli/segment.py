"""``samed segment``: prompts on a volume (or a 2D picture) -> a segmentation file, optionally propagated and
compared with a reference."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np

from ..core import io, metrics
from ..core.geometry import AXIS_NAMES, Volume, check_slice_index, numpy_axis
from ..core.markups import read_markups
from ..core.markup_prompts import SlicePrompts, prompts_from_markups
from ..core.prompts import Prompt, PromptError
from ..core.propagation import PropagationSettings
from ..core.volume_session import VolumeSession, check_finite_slice, count_nonfinite
from ..core.files import atomic_output
from .outputs import check_output, wants_dicom_seg, write_dicom_seg_output
from . import segment_provenance
from .segment_keys import fill_from_key_slices, key_slice_prompts
from .common import add_backend_options, add_intensity_options, backend_from_args, intensity_from_args, progress_bar


def _floats(text: str, n: int, what: str):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def add_parser(sub) -> None:
    p = sub.add_parser("segment", help="segment a structure from prompts (box, points, markups)",
                       description="Segment one structure in IMAGE from a box or points on one slice, or from "
                                   "Slicer markups; optionally propagate it through the neighbouring slices and "
                                   "compare it with a reference segmentation.")
    p.add_argument("image", help="volume (.nrrd, .nii, .nii.gz, .mha), a folder of DICOM files (or a .dcm) or a 2D "
                                 "picture (.png, .jpg)")
    p.add_argument("--series", metavar="UID", default=None,
                   help="Series Instance UID of the DICOM series to read when the folder holds several (they are "
                        "listed when this is left out)")
    p.add_argument("--volume-index", type=int, default=None, metavar="N",
                   help="which 3D volume of a 4D image (time series, channels) to segment, from 0")
    p.add_argument("--out", required=True, help="output: NAME.seg.nrrd (Slicer segmentation), a labelmap .nrrd/.nii.gz, "
                                                "or NAME.dcm: a DICOM SEG referencing the DICOM input series")
    p.add_argument("--dicom-seg", action="store_true", help="write --out as a DICOM SEG whatever its name")
    p.add_argument("--name", default=None, help="segment name (default: the reference label's name, else 'Segment_1')")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g = p.add_argument_group("prompts (voxel coordinates of the chosen slice: x = column, y = row)")
    g.add_argument("--box", action="append", default=[], type=lambda t: _floats(t, 4, "--box"), metavar="X0,Y0,X1,Y1",
                   help="box on --slice; repeat --box and --slice (in pairs, in order) for key slices: the slices "
                        "between them are filled from both sides")
    g.add_argument("--point", action="append", default=[], type=lambda t: _floats(t, 2, "--point"), metavar="X,Y",
                   help="include point (repeatable)")
    g.add_argument("--exclude-point", action="append", default=[], type=lambda t: _floats(t, 2, "--exclude-point"),
                   metavar="X,Y", help="exclude point (repeatable)")
    g.add_argument("--slice", type=int, action="append", default=[],
                   help="slice index along --axis (0 for a 2D picture); one per --box")
    g.add_argument("--axis", default="axial", choices=AXIS_NAMES, help="slicing axis (default axial)")
    g.add_argument("--markups", action="append", default=[], metavar="FILE.mrk.json",
                   help="Slicer point lists / ROIs in RAS (repeatable); lists named *exclude*/*negative* exclude; "
                        "several ROIs: one box per key slice, each ROI on one slice (like repeated --box/--slice)")
    pr = p.add_argument_group("propagation")
    pr.add_argument("--propagate", action="store_true", help="propagate from the prompted slice in both directions")
    pr.add_argument("--max-slices", type=int, default=None, help="at most this many slices each way")
    pr.add_argument("--box-margin", type=float, default=PropagationSettings.box_margin_px,
                    help="pixels added around the previous mask's box (default %(default)s)")
    pr.add_argument("--box-margin-frac", type=float, default=PropagationSettings.box_margin_frac,
                    help="plus this fraction of the box's size on each side (default %(default)s)")
    pr.add_argument("--min-area-ratio", type=float, default=PropagationSettings.min_area_ratio)
    pr.add_argument("--max-area-ratio", type=float, default=PropagationSettings.max_area_ratio)
    pr.add_argument("--min-score", type=float, default=PropagationSettings.min_score)
    r = p.add_argument_group("comparison with a reference")
    r.add_argument("--reference", help="reference labelmap or .seg.nrrd on the same patient grid")
    r.add_argument("--reference-label", help="label value or segment name in --reference")
    r.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm (default 2)")
    r.add_argument("--report", help="write a JSON report here: the segment's measurements and provenance, and the "
                                    "comparison with --reference when given")
    p.add_argument("--continue", dest="continue_from", metavar="SEG.seg.nrrd",
                   help="re-run a segmentation samed wrote: its recorded prompts, key slices and settings "
                        "(provenance) on IMAGE, the image it was made on")
    add_backend_options(p)
    add_intensity_options(p)
    p.set_defaults(func=run)


def load_input(path: str, volume_index=None, series=None) -> Volume:
    ext = io.file_extension(path)
    if ext in io.IMAGE_2D_EXTENSIONS:
        if volume_index not in (None, 0):
            raise ValueError(f"--volume-index {volume_index}: {path} is a 2D picture (one volume, index 0)")
        pic = io.read_image_2d(path)
        return Volume(pic[None], np.eye(4), {"path": str(path), "picture": True})
    return io.read_volume(path, volume_index=volume_index, series=series)


def _cli_prompts(args, volume: Volume, np_axis: int) -> SlicePrompts:
    if getattr(args, "continue_prompts", None) is not None:  # --continue with prompts that came from markups
        return args.continue_prompts
    if args.markups:
        if args.box or args.point or args.exclude_point:
            raise PromptError("give prompts either as --markups or as --box/--point, not both")
        point_lists, rois = [], []
        for f in args.markups:
            m = read_markups(f)
            point_lists += m.point_lists
            rois += m.rois
        return prompts_from_markups(point_lists, rois, volume, np_axis)
    if not (args.box or args.point or args.exclude_point):
        raise PromptError("no prompt: give --box X0,Y0,X1,Y1 (and --slice K), --point X,Y, or --markups FILE")
    if len(args.box) > 1 or len(args.slice) > 1:
        return key_slice_prompts(args.box, args.slice, args.point + args.exclude_point, volume, np_axis)
    index = args.slice[0] if args.slice else None
    if index is None:
        if volume.metadata.get("picture"):
            index = 0
        else:
            raise PromptError("--slice K is needed with --box/--point on a volume")
    check_slice_index(volume.array.shape[:3], np_axis, index)
    prompt = Prompt(args.point, args.exclude_point, args.box[0] if args.box else None)
    return SlicePrompts({index: prompt})


def run(args) -> int:
    inputs = [args.image, args.reference, args.token_file, *args.markups, args.continue_from]
    out = check_output(args.out, "--out", inputs, args.overwrite)
    if args.report:
        check_output(args.report, "--report", inputs + [args.out])
    volume = load_input(args.image, args.volume_index, args.series)
    if args.continue_from:
        segment_provenance.continue_from(args, volume)
    if wants_dicom_seg(out, args.dicom_seg):  # a DICOM SEG needs a DICOM source: said before the model loads
        from ..core.dicom_seg import check_dicom_seg_source

        check_dicom_seg_source(volume)
        if Path(args.image).is_dir() and Path(args.image).resolve() in out.resolve().parents:
            raise ValueError(f"--out {args.out} is inside the DICOM input folder {args.image}: the next read of the "
                             f"folder would find the SEG as another series; write it elsewhere")
    intensity = intensity_from_args(args, volume.array, volume.metadata.get("modality"))
    np_axis = numpy_axis(args.axis, volume.ijk_to_ras)
    slice_prompts = _cli_prompts(args, volume, np_axis)
    slice_shape = [n for a, n in enumerate(volume.array.shape[:3]) if a != np_axis]
    for index, prompt in slice_prompts.prompts.items():
        prompt.validate(slice_shape)
        check_finite_slice(volume.array, np_axis, index)
    nonfinite = count_nonfinite(volume.array)
    if nonfinite:
        print(f"samed segment: warning: {args.image} has {nonfinite} NaN or infinite voxels "
              f"({100.0 * nonfinite / volume.array.size:.2g}%); the model sees them as the intensity window's lowest "
              f"value (black)", file=sys.stderr)
    ref = None
    if args.reference:
        ref = _load_reference(args.reference, args.reference_label, volume)
    name = args.name or (ref[1] if ref else "Segment_1")
    # only now load the model: every input error above is reported without waiting for it
    backend = backend_from_args(args)
    # a one-way walk never returns to a slice: 4 cached pictures bound the memory (see VolumeSession)
    session = VolumeSession(volume, backend, args.axis, intensity=intensity, max_cached_slices=4)

    t0 = time.perf_counter()
    walk = None  # how the segment grew beyond the prompted slices, for its provenance
    with progress_bar(len(slice_prompts.prompts), "segment") as bar:
        preds = session.segment_slices(slice_prompts.prompts, progress=lambda d, n: bar.update(1))
    masks: Dict[int, np.ndarray] = {i: p.best for i, p in preds.items()}
    for i, p in sorted(preds.items()):
        print(f"slice {i}: {int(p.best.sum())} px, score {p.best_score:.3f}")
    if len(args.box) > 1 or slice_prompts.key_slices:  # key slices: repeated --box/--slice, or several ROIs
        stopped = {}
        boxes = {i: p.box_xy for i, p in slice_prompts.prompts.items() if p.box_xy is not None}
        masks = fill_from_key_slices(session, masks, args, stopped, boxes)
        walk = {"mode": "key slices", "seeds": sorted(int(i) for i in slice_prompts.prompts), "stopped": stopped}
    elif args.propagate:
        seeds = slice_prompts.indices()
        seed = seeds[len(seeds) // 2]
        settings = PropagationSettings(box_margin_px=args.box_margin, box_margin_frac=args.box_margin_frac,
                                       min_area_ratio=args.min_area_ratio,
                                       max_area_ratio=args.max_area_ratio, min_score=args.min_score,
                                       max_slices=args.max_slices, index_range=slice_prompts.roi_range)
        seed_box = slice_prompts.prompts[seed].box_xy  # the walk may leave the seed slice from the user's box
        with progress_bar(session.n_slices - 1, "propagate") as bar:
            if hasattr(backend, "start_propagation"):  # the model service runs the walk as a job
                result = _propagate_on_service(session, backend, seed, masks[seed], settings, bar, seed_box)
            else:
                result = session.propagate(seed, masks[seed], settings, progress=lambda d, n: bar.update(d - bar.n),
                                           seed_box=seed_box)
        for d, why in result.stopped.items():
            print(f"propagation {d}: stopped ({why})")
        walk = {"mode": "walk", "seed": int(seed), "stopped": dict(result.stopped)}
        propagated = dict(result.masks)
        propagated.update(masks)  # slices the user prompted keep their own mask
        masks = propagated
        print(f"propagated from slice {seed} to slices {min(masks)}..{max(masks)} ({len(masks)} slices)")
    seconds = time.perf_counter() - t0
    # one copy of the result at a time: the per-slice masks are freed as they go into mask_volume
    preds = result = propagated = None  # noqa: F841
    indices = sorted(masks)
    mask_volume = session.masks_to_volume(masks, consume=True)
    masks = dict.fromkeys(indices)
    provenance = segment_provenance.run_provenance(
        args, backend, volume, slice_prompts, intensity, indices, walk,
        "markups" if args.markups or getattr(args, "continue_prompts", None) is not None else "cli")
    if wants_dicom_seg(out, args.dicom_seg):
        out.parent.mkdir(parents=True, exist_ok=True)
        write_dicom_seg_output(out, {name: mask_volume}, volume, backend, args.overwrite,
                               parameters=segment_provenance.dicom_parameters(provenance))
    else:
        _write_output(out, name, mask_volume, volume, args.overwrite, segment_provenance.segment_tags(provenance))
    print(f"wrote {out} (segment {name!r}, {int(mask_volume.sum())} voxels) in {seconds:.1f} s")

    if ref is not None or args.report:
        report = _compare(mask_volume, ref, volume, sorted(masks), session, args.tolerance) if ref is not None else {}
        report.update({"image": str(args.image), "segment": name, "output": str(out), "model": backend.model,
                       "seconds": round(seconds, 3), "slices_segmented": sorted(int(i) for i in masks),
                       "segments": [{"name": name, "measurements": segment_provenance.measurements(
                           mask_volume, volume, name, args.axis, args.modality), "provenance": provenance.as_dict()}]})
        if args.report:
            Path(args.report).parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(args.report) as tmp:
                tmp.write_text(json.dumps(metrics.json_safe(report), indent=2))
            print(f"wrote {args.report}")
    backend.close()
    return 0


def _propagate_on_service(session: VolumeSession, backend, seed: int, seed_mask, settings, bar, seed_box=None):
    from ..client import needed_slab, start_propagation

    lo, hi = needed_slab(session.n_slices, seed, settings)
    pictures = np.stack([session.picture(i) for i in range(lo, hi + 1)])
    job = start_propagation(backend, pictures, seed, seed_mask, settings, first_index=lo, n_slices=session.n_slices,
                            seed_box=seed_box)
    try:
        while True:
            state = job.progress()
            bar.update(max(0, state.done - bar.n))
            if state.finished:
                break
            time.sleep(0.2)
        return job.result(timeout=60)
    except KeyboardInterrupt:
        job.cancel()
        raise


def _load_reference(path: str, label, volume: Volume):
    """(mask on the image's grid, the structure's name, a description) of one label of a reference file."""
    if io.is_segmentation_file(path):
        seg = io.read_segmentation(path)
        if label is None and len(seg.segments) != 1:
            raise io.LabelError(f"{path} holds segments {', '.join(seg.names)}: choose one with --reference-label")
        name = seg.find_segment(label if label is not None else seg.segments[0].id).name
        label = name
    else:
        labels, names = io.read_label(path)
        present = [int(v) for v in np.unique(labels.array) if v != 0]
        if label is None:
            if len(present) != 1:
                raise io.LabelError(f"{path} holds labels {present}: choose one with --reference-label")
            label = present[0]
        name = None
    mask, grid, description = io.reference_mask(path, label)
    io.check_grids_overlap(grid, volume, f"reference {path}", f"image {volume.metadata.get('path', '')}")
    if name is None:
        value = int(label) if str(label).strip().lstrip("-").isdigit() else None
        name = names.get(value, str(label)) if value is not None else str(label)
    on_grid = io.resample_to(grid.with_array(mask.astype(np.uint8)), volume).array > 0
    if mask.any() and not on_grid.any():
        raise io.LabelError(f"{description} lies wholly outside the image's grid: give a reference made on this image")
    return on_grid, name, description


def _compare(mask_volume, ref, volume: Volume, indices, session: VolumeSession, tolerance: float) -> dict:
    ref_mask, _, description = ref
    spacing = volume.spacing_kji if not volume.metadata.get("picture") else None
    whole = metrics.compute_all(mask_volume, ref_mask, spacing=spacing, tolerance_mm=tolerance)
    sl = [slice(None)] * 3
    sl[session.np_axis] = indices
    on_slices = metrics.compute_all(mask_volume[tuple(sl)], ref_mask[tuple(sl)], spacing=spacing,
                                    tolerance_mm=tolerance)
    print(f"reference: {description}")
    print(f"{'':28s} {'Dice':>7s} {'IoU':>7s} {'NSD':>7s} {'HD95 mm':>8s}")
    for title, m in ((f"whole volume (3D)", whole), (f"segmented slices ({len(indices)})", on_slices)):
        print(f"{title:28s} {m['dice']:7.4f} {m['iou']:7.4f} {m['nsd']:7.4f} {m['hd95']:8.2f}")
    return {"reference": description, "tolerance_mm": tolerance, "whole_volume": whole,
            "segmented_slices": on_slices}


def _write_output(out: Path, name: str, mask_volume: np.ndarray, volume: Volume, overwrite: bool,
                  tags=None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if str(out).lower().endswith(".seg.nrrd"):  # the segment's tags: its provenance (samed.core.provenance)
        io.write_segmentation(out, {name: mask_volume}, volume, overwrite=overwrite, segment_tags={name: tags or {}})
    else:
        io.write_volume(volume.with_array(mask_volume.astype(np.uint8)), out, overwrite=overwrite)
