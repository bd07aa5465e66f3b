"""Key-slice prompting with a simulated user in 3D, on the shared volumes: the table of issue 11.

For each structure: its slice count, the per-slice-box oracle's 3D Dice, the 3D Dice after 1..N simulated boxes
(``samed.evaluation.interactive_3d``: each next box on the slice with the largest error volume; a slice past
the object's end is marked absent), and the boxes needed to reach 0.9 and 0.95 x the oracle.

    nice -n 10 python bench/bench_key_slices.py [--engine auto|torch] [--mask-threshold model|dice|LOGIT]
                                                [--rounds 5] [--only NAME ...]

Structures: mr-brain-tumor tumour, ct-abdomen liver (5) and spleen (1), mr-abdomen liver, spleen, kidneys
(2, 3), and the lungs of slicerio's CTChest4 (its Slicer-made segmentation).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))

from samed.core import io  # noqa: E402
from samed.core.volume_session import VolumeSession  # noqa: E402
from samed.core.geometry import extract_slice  # noqa: E402
from samed.evaluation.interactive_3d import oracle_volume, run_interactive_3d  # noqa: E402

VOLUMES = Path("/work/shared/data/volumes")
STRUCTURES = [  # (name, volume folder or "CTChest4", label value or segment name, intensity mode)
    ("mr-brain-tumor tumour", "mr-brain-tumor", 1, "auto"),
    ("ct-abdomen liver", "ct-abdomen", 5, "auto"),
    ("ct-abdomen spleen", "ct-abdomen", 1, "auto"),
    ("mr-abdomen liver", "mr-abdomen", 5, "auto"),
    ("mr-abdomen spleen", "mr-abdomen", 1, "auto"),
    ("mr-abdomen kidney_right", "mr-abdomen", 2, "auto"),
    ("mr-abdomen kidney_left", "mr-abdomen", 3, "auto"),
    ("CTChest4 right lung", "CTChest4", "right lung", "minmax"),  # minmax: as the README demo (lungs not black)
    ("CTChest4 left lung", "CTChest4", "left lung", "minmax"),
]


def load(folder: str, label):
    """(volume, reference mask on its grid)."""
    if folder == "CTChest4":
        import slicerio

        volume = io.read_volume(slicerio.get_testdata_file("CTChest4.nrrd"))
        seg = slicerio.get_testdata_file("Segmentation.seg.nrrd")
        mask, grid, _ = io.reference_mask(seg, label)
        return volume, io.resample_to(grid.with_array(mask.astype(np.uint8)), volume).array > 0
    d = VOLUMES / folder
    image = next(p for p in sorted(d.iterdir()) if p.name.startswith("image."))
    labels = next(p for p in sorted(d.iterdir()) if p.name.startswith("label."))
    volume = io.read_volume(image)
    lab = io.resample_to(io.read_volume(labels), volume).array
    return volume, np.asarray(lab) == label


def _dice2d(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def print_per_slice(ax: int, ref: np.ndarray, oracle: np.ndarray, res) -> None:
    """One line per slice that the reference, the oracle or any round touches: reference area, the oracle's
    2D Dice, then each round's 2D Dice (an empty slice both ways counts 1)."""
    other = tuple(a for a in range(3) if a != ax)
    touched = ref.any(axis=other) | oracle.any(axis=other)
    for r in res.rounds:
        touched |= r.pred.any(axis=other)
    keys = {r.slice for r in res.rounds if r.action != "none"}
    print(f"    {'slice':>5s} {'ref px':>7s} {'oracle':>6s} " + " ".join(f"{f'r{r.interactions}':>6s}"
                                                                    for r in res.rounds))
    for s in np.flatnonzero(touched):
        rs = extract_slice(ref, ax, s)
        cells = " ".join(f"{_dice2d(extract_slice(r.pred, ax, s), rs):6.3f}" for r in res.rounds)
        mark = "*" if s in keys else " "
        print(f"   {mark}{s:5d} {int(rs.sum()):7d} {_dice2d(extract_slice(oracle, ax, s), rs):6.3f} {cells}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default=None, help="auto (default) or torch, onnx, openvino")
    ap.add_argument("--mask-threshold", default=None, help="how masks are cut (default: the model's own rule)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=None, help="structure names containing these words")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--per-slice", action="store_true",
                    help="after each structure: per-slice 2D Dice of the oracle and of each round (and the "
                         "slice kinds: K key, i interpolated, w walked, . none), to see where a round loses")
    args = ap.parse_args(argv)
    from samed.backends import create_backend

    backend = create_backend("local", "litemedsam", None, None, None, engine=args.engine,
                             mask_threshold=args.mask_threshold)
    engine = backend.info()["models"]["litemedsam"].get("engine") or args.engine or "?"
    engine += f", mask threshold {backend.mask_threshold()}"
    rounds = args.rounds
    head = f"{'structure':26s} {'slices':>6s} {'oracle':>7s} " + " ".join(f"{f'{k} box':>7s}" for k in
                                                                          range(1, rounds + 1))
    print(f"engine {engine}\n{head} {'->0.9':>6s} {'->0.95':>6s} {'s':>6s}")
    sessions = {}
    for name, folder, label, intensity in STRUCTURES:
        if args.only and not any(w in name for w in args.only):
            continue
        t0 = time.perf_counter()
        if (folder, intensity) not in sessions:
            volume, _ = load(folder, label)
            sessions[(folder, intensity)] = VolumeSession(volume, backend, intensity_mode=intensity)
        session = sessions[(folder, intensity)]
        _, ref = load(folder, label)
        oracle = oracle_volume(session, ref)
        res = run_interactive_3d(session, ref, rounds, oracle=oracle)
        dices = " ".join(f"{r.dice:7.3f}" for r in res.rounds)
        to9, to95 = res.boxes_to(0.9), res.boxes_to(0.95)
        print(f"{name:26s} {res.oracle_boxes:6d} {res.oracle['dice']:7.3f} {dices} {str(to9 or '>'):>6s} "
              f"{str(to95 or '>'):>6s} {time.perf_counter() - t0:6.1f}", flush=True)
        if args.verbose:
            for r in res.rounds:
                print(f"    {r.interactions}: {r.action} on {r.slice}: dice {r.dice:.3f} ({r.stopped})")
        if args.per_slice:
            print_per_slice(session.np_axis, ref, oracle, res)
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
