"""samed evaluate --prompt box-all against segment-anything's own SamPredictor, same weights, same boxes.

For each 2D set, both run LiteMedSAM on every (image, class) with one box around the whole class mask
(tight, as the study's mode 5). The peer gets the image file's pixels as they are (grey images repeated to
RGB), as a peer tool would pass them; samed's pipeline preprocesses them itself (``--intensity auto``).
samed runs twice: with the torch engine and masks cut at logit 0 (``--mask-threshold model``: its masks are
SamPredictor's) and as it runs by default (engine ``auto``: on CPUs with bfloat16 units the OpenVINO engine, whose
masks may differ slightly; LiteMedSAM's masks cut by the "dice" rule since 0.2.0, docs/evaluation.md).

    python bench/compare_sampredictor.py [DATASET ...]     (default: the two shared 2D sets)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))

from samed.core import io, metrics  # noqa: E402
from samed.core.prompts import box_from_mask  # noqa: E402


def peer_dice(dataset: Path, sam) -> tuple:
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam)
    info = io.list_dataset(dataset)
    dices, t0 = [], time.perf_counter()
    for item in info.items:
        image = io.read_image_2d(item.image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        mask = io.read_image_2d(item.mask)
        predictor.set_image(image)
        for c in np.unique(mask):
            if c == 0:
                continue
            ref = mask == c
            pred, _, _ = predictor.predict(box=box_from_mask(ref), multimask_output=False)
            dices.append(metrics.dice(pred[0], ref))
    return float(np.mean(dices)), len(dices), (time.perf_counter() - t0) / len(info.items)


def main(argv):
    datasets = [Path(a) for a in argv] or [ROOT.parent / "shared/data/images/us-breast-lesion",
                                           ROOT.parent / "shared/data/images/ct-abdomen-slices"]
    from samed.engines.sam_engine import SamEngine

    sam = SamEngine("litemedsam", device="cpu").sam
    print(f"{'dataset':22s} {'tasks':>5s} {'SamPredictor Dice':>18s} {'samed torch':>12s} {'diff':>8s} "
          f"{'samed default':>14s} {'diff':>8s}")
    for ds in datasets:
        peer, n, peer_s = peer_dice(ds, sam)
        ours = {}
        for engine, extra in (("torch", ["--mask-threshold", "model"]), ("auto", [])):
            with tempfile.TemporaryDirectory() as out:
                subprocess.run([sys.executable, "-m", "samed.cli.main", "evaluate", str(ds), "--prompt", "box-all",
                                "--out", out, *extra], check=True, capture_output=True,
                               env=dict(os.environ, SAMED_ENGINE=engine))
                ours[engine] = json.loads((Path(out) / "summary.json").read_text())["mean"]["dice"]
        print(f"{ds.name:22s} {n:5d} {peer:18.4f} {ours['torch']:12.4f} {ours['torch'] - peer:+8.4f} "
              f"{ours['auto']:14.4f} {ours['auto'] - peer:+8.4f}")

if __name__ == "__main__":
    main(sys.argv[1:])
