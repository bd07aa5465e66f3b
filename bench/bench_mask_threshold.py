"""How LiteMedSAM's masks are cut from its logits: fixed thresholds against the "dice" rule, on tight and loose boxes.

The model's own threshold is logit 0 (probability 0.5: segment-anything's ``Sam.mask_threshold``, SamPredictor's and
predict_array's). That threshold maximizes pixel accuracy; the threshold that maximizes the expected Dice (F1) of
calibrated probabilities is half that Dice (Lipton, Elkan, Narayanaswamy 2014). The "dice" rule (``ModelSpec``
``mask_threshold="dice"``, LiteMedSAM's default) takes that Dice from the model's own predicted IoU of the mask:
probability > IoU / (1 + IoU), i.e. logit > ln(IoU). Nothing in it is fitted to these sets.

Same sets, same boxes as bench_resize_filter.py (its ``build_sets``; the default pipeline, antialias / longest,
torch engine, one encode per picture). Boxes: "tight" (the box around the reference, as ``samed evaluate --prompt
box-all``), "loose10" / "loose20" (each side moved out by a seeded uniform 0-10 % / 0-20 % of the box's size: boxes
drawn by hand). For each: the mean Dice per set at fixed logit thresholds and with the "dice" rule, a
leave-one-set-out choice of the fixed threshold (picked on the other sets, scored on the left-out one), and the
"dice" rule's paired difference to threshold 0 per set with a 95 % bootstrap interval.

    nice -n 10 .venv/bin/python bench/bench_mask_threshold.py [--cache DIR] [--sets a,b] [--json F]
    .venv/bin/python bench/bench_mask_threshold.py --merge A.json B.json   # sets run in two processes, one table
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
sys.path.insert(0, str(ROOT / "bench"))

from bench_resize_filter import add_set_options, build_sets, iter_boxes, logits_and_iou, paired_ci  # noqa: E402
from samed.core import metrics  # noqa: E402

THRESHOLDS = (0.0, -0.5, -1.0, -1.5, -2.0, -2.5)
BOXES = {"tight": 0.0, "loose10": 0.1, "loose20": 0.2}


def run_set(dataset: Path, engine, seed: int) -> dict:
    from samed.core.prompts import Prompt

    rng = np.random.default_rng(seed)
    scores = {}

    def add(key, pred, ref):
        scores.setdefault(key, []).append(metrics.dice(pred, ref))

    for _, picture, boxes in iter_boxes(dataset):
        h, w = picture.shape[:2]
        emb = engine.encode(picture)
        top = np.array([w - 1, h - 1, w - 1, h - 1], float)
        for box, ref in boxes:
            box = np.asarray(box, float)
            size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
            for kind, most in BOXES.items():
                grown = np.clip(box + np.array([-1, -1, 1, 1]) * rng.uniform(0, most, 4) * size, 0, top)
                logits, iou = logits_and_iou(engine, emb, grown)
                for t in THRESHOLDS:
                    add(f"{kind} {t:+.1f}", logits > t, ref)
                add(f"{kind} dice", logits > float(engine.spec.logit_thresholds([iou])[0]), ref)
                if kind == "tight":  # the rule as the engine applies it: the same mask
                    pred = engine.decode(emb, Prompt(box_xy=grown))
                    if not np.array_equal(pred.masks[0], logits > float(engine.spec.logit_thresholds([iou])[0])):
                        raise AssertionError("the engine's dice-rule mask differs from the bench's")
    return scores


def report(per_box: dict, references: dict) -> None:
    sets = list(per_box)
    for kind in BOXES:
        cols = [c for c in next(iter(per_box.values())) if c.startswith(kind + " ")]
        refs = ("SamPredictor", "predict_array") if kind == "tight" and references else ()
        print(f"\n{kind} boxes: mean Dice per set (columns: logit threshold; dice = logit > ln(predicted IoU))")
        print("set".ljust(20) + "n".rjust(4) + "".join(r.rjust(15) for r in refs)
              + "".join(c.split(" ")[1].rjust(8) for c in cols))
        means = {c: [] for c in cols}
        for s in sets:
            row = {c: float(np.mean(per_box[s][c])) for c in cols}
            for c in cols:
                means[c].append(row[c])
            print(s.ljust(20) + str(len(per_box[s][cols[0]])).rjust(4)
                  + "".join(f"{np.mean(references[s][r]):.4f}".rjust(15) for r in refs)
                  + "".join(f"{row[c]:.4f}".rjust(8) for c in cols))
        ref_means = {r: float(np.mean([np.mean(references[s][r]) for s in sets])) for r in refs}
        print("mean over sets".ljust(24) + "".join(f"{ref_means[r]:.4f}".rjust(15) for r in refs)
              + "".join(f"{np.mean(means[c]):.4f}".rjust(8) for c in cols))
        fixed = [c for c in cols if not c.endswith("dice")]
        picks = {s: max(fixed, key=lambda c: np.mean([np.mean(per_box[o][c]) for o in sets if o != s])) for s in sets}
        loso = float(np.mean([np.mean(per_box[s][picks[s]]) for s in sets]))
        print(f"leave-one-set-out fixed threshold: picks {sorted(set(c.split(' ')[1] for c in picks.values()))}, "
              f"mean over sets {loso:.4f}; dice rule {np.mean(means[kind + ' dice']):.4f}")
        print("dice rule - threshold 0, paired, mean [95% bootstrap interval]:")
        for s in sets:
            print("  " + s.ljust(20) + "%+.4f [%+.4f, %+.4f]" % paired_ci(per_box[s][f"{kind} dice"],
                                                                        per_box[s][f"{kind} +0.0"]))
        if refs:
            worse = {s: min(np.mean(references[s][r]) for r in refs) for s in sets}
            better_mean = max(ref_means.values())
            low = min(np.mean(per_box[s][f"{kind} dice"]) - worse[s] for s in sets)
            dice_mean = float(np.mean(means[kind + " dice"]))
            print(f"done-when (issue 11, 2D): dice rule's worst margin over the worse reference {low:+.4f}; mean "
                  f"{dice_mean:.4f} vs the better reference's {better_mean:.4f} ({dice_mean - better_mean:+.4f}) -> "
                  f"{'MEETS' if low >= 0 and dice_mean >= better_mean else 'fails'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_set_options(ap)
    ap.add_argument("--references", nargs="*", default=[], metavar="JSON",
                    help="bench_resize_filter.py --json files: their SamPredictor / predict_array columns (same "
                         "sets, same boxes) are printed beside the tight boxes' and judged against")
    ap.add_argument("--json", default=None, help="also write every box's Dice per set and column to this file")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="print the table of earlier --json runs")
    args = ap.parse_args(argv)
    references = {}
    for path in args.references:
        references.update(json.loads(Path(path).read_text()))
    if args.merge:
        merged = {}
        for path in args.merge:
            merged.update(json.loads(Path(path).read_text()))
        report(merged, references)
        return 0
    import torch
    from samed.engines.sam_engine import SamEngine

    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory() if args.cache is None else None
    sets = build_sets(Path(args.cache or tmp.name), args.seed, args.max_boxes, args.max_pictures)
    if args.sets:
        sets = {k: v for k, v in sets.items() if k in args.sets.split(",")}
    engine = SamEngine("litemedsam", device="cpu", mask_threshold="dice")
    per_box, t0 = {}, time.perf_counter()
    for name, folder in sets.items():
        per_box[name] = run_set(folder, engine, args.seed + 1)
        print(f"# {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(per_box))
    report(per_box, references)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
