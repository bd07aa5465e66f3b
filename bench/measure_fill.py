"""Measure how the slices between two key slices are judged (``KeySliceSettings.shape_weight``, ``min_shape_iou``).

For each structure, pairs of key slices g = 2, 4 and 6 slices apart are laid across the object (the model's mask
for the tight reference box on each key, as the simulated user gives it); ``core.key_slices.fill_between`` fills
the slices between under each setting, and the mean 2D Dice of the filled slices against the reference is the
setting's score. Fitted on the tuning structures of ``measure_walk_rules.py``, checked on the benchmark's
structures (held out). ``min_shape_iou`` 1.0 keeps the interpolated shape everywhere (no model between keys).

    nice -n 10 python bench/measure_fill.py [--engine auto]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_key_slices import load  # noqa: E402
from measure_walk_rules import HELD_OUT, TUNING  # noqa: E402
from samed.core.key_slices import KeySliceSettings, fill_between  # noqa: E402
from samed.core.volume_session import VolumeSession  # noqa: E402
from samed.evaluation.interactive_3d import box_mask  # noqa: E402

SETTINGS = [(0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (2.0, 0.0), (1.0, 0.5), (1.0, 1.0)]
# (shape_weight, min_shape_iou, fill_from, shape_weight_by_area): before issue 11's fix and after it
ORDER_SETTINGS = [(1.0, 0.0, "nearer", False), (1.0, 0.0, "larger", False), (1.0, 0.0, "nearer", True),
                  (1.0, 0.0, "larger", True)]
GAPS = (2, 4, 6)


def dice(a, b) -> float:
    s = a.sum() + b.sum()
    return 2.0 * (a & b).sum() / s if s else 1.0


def _settings(st) -> KeySliceSettings:
    if len(st) == 2:  # the weights alone, the fill as it was when they were measured
        return KeySliceSettings(shape_weight=st[0], min_shape_iou=st[1], fill_from="nearer",
                                shape_weight_by_area=False)
    return KeySliceSettings(shape_weight=st[0], min_shape_iou=st[1], fill_from=st[2], shape_weight_by_area=st[3])


def key_pairs(slices, near_end: bool):
    """(a, b) key-slice pairs: g = 2, 4, 6 apart across the object, or (near_end) the middle slice with a slice
    0 and 1 inside each end (where the simulated user's later boxes go)."""
    if not near_end:
        for gap in GAPS:
            for a in range(slices[0], slices[-1] - gap + 1, gap):
                yield a, a + gap
        return
    middle = slices[len(slices) // 2]
    for end in (slices[0], slices[1], slices[-2], slices[-1]):
        if abs(end - middle) >= 2:
            yield min(end, middle), max(end, middle)


def measure(backend, structures, sessions, settings=SETTINGS, near_end=False):
    scores = {st: [] for st in settings}
    for folder, label, mode in structures:
        volume, ref = load(folder, label)
        if (folder, mode) not in sessions:
            sessions[(folder, mode)] = VolumeSession(volume, backend, intensity_mode=mode)
        s = sessions[(folder, mode)]
        slices = [int(k) for k in np.flatnonzero(ref.any(axis=(1, 2)))]
        keys = {}
        for a, b in key_pairs(slices, near_end):
            if not (ref[a].any() and ref[b].any()):
                continue
            for k in (a, b):
                if k not in keys:
                    keys[k] = box_mask(s, k, ref[k])
            if not (keys[a].any() and keys[b].any()):
                continue
            for st in settings:
                filled = fill_between(backend, s.picture, a, keys[a], b, keys[b], _settings(st))
                scores[st] += [dice(m, ref[i]) for i, (m, _, _) in filled.items()]
    return {st: float(np.mean(v)) for st, v in scores.items()}, len(scores[settings[0]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default=None)
    ap.add_argument("--order", action="store_true",
                    help="compare the fill's order and area-scaled shape weight (issue 11) instead of the weights, "
                         "on pairs across the object and on pairs of the middle slice with a slice near an end")
    args = ap.parse_args(argv)
    from samed.backends import create_backend

    backend = create_backend("local", "litemedsam", None, None, None, engine=args.engine)
    sessions = {}
    if args.order:
        print(f"{'shape_weight, min_shape_iou, fill_from, by_area':48s} {'pairs':>12s} {'tuning':>7s} {'held-out':>8s}")
        for near_end in (False, True):
            tuning, n_t = measure(backend, TUNING, sessions, ORDER_SETTINGS, near_end)
            held, n_h = measure(backend, HELD_OUT, sessions, ORDER_SETTINGS, near_end)
            for st in ORDER_SETTINGS:
                print(f"{str(st):48s} {'near an end' if near_end else 'across':>12s} {tuning[st]:7.4f} "
                      f"{held[st]:8.4f}   ({n_t} / {n_h} slices)", flush=True)
        backend.close()
        return 0
    tuning, n_t = measure(backend, TUNING, sessions)
    held, n_h = measure(backend, HELD_OUT, sessions)
    print(f"mean Dice of the slices between key slices (tuning {n_t} slices, held-out {n_h})")
    print(f"{'shape_weight':>12s} {'min_shape_iou':>13s} {'tuning':>7s} {'held-out':>8s}")
    for st in SETTINGS:
        print(f"{st[0]:12g} {st[1]:13g} {tuning[st]:7.4f} {held[st]:8.4f}")
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
