"""Measure the stop rules of the walk beyond the outermost key slice (``core.key_slices.WALK_RULES``).

Recording: for each end of a structure, a key slice is put on the structure's middle slice (as the first round
of the simulated user) and, where the end lies inside the volume, 0, 2 and 4 slices inside that end (the model's
mask for the tight reference box there); the walk goes outwards with no stop rule but an empty mask, up to 6
slices past the end (or the volume's end). Every step's features are kept: the model's score, the area ratio
to the previous slice, the share of the mask on the previous mask, the grey-value shift from the key slice's
(in key standard deviations and grey levels), and whether the reference holds the object there.

Fitting: the walk is replayed under each combination of thresholds (a replay is exact: rules only cut the
recorded walk short); the cost of a walk is its slices past the end that it keeps plus the object's slices it
drops. The combination with the least total cost on the TUNING structures wins; its cost on the HELD-OUT
structures (the key-slice benchmark's) is reported next to the current rules'. Tuning and held-out structures
never share a structure.

    nice -n 10 python bench/measure_walk_rules.py [--engine auto]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_key_slices import STRUCTURES, load  # noqa: E402
from samed.core.key_slices import WALK_RULES  # noqa: E402
from samed.core.prompts import Prompt, box_from_mask  # noqa: E402
from samed.core.propagation import DIRECTIONS, PropagationSettings, _grey_stats, _grow  # noqa: E402
from samed.core.volume_session import VolumeSession  # noqa: E402

TUNING = [  # structures that are not in the benchmark, with an end inside their volume
    ("ct-abdomen", 2, "auto"), ("ct-abdomen", 3, "auto"), ("ct-abdomen", 4, "auto"), ("ct-abdomen", 7, "auto"),
    ("ct-abdomen", 19, "auto"), ("ct-abdomen", 88, "auto"), ("ct-abdomen", 64, "auto"),
    ("mr-abdomen", 4, "auto"), ("mr-abdomen", 7, "auto"), ("mr-abdomen", 14, "auto"),
    ("mr-breast-tumor", 1, "auto"),
    ("CTChest4", "thoracic vertebral column", "minmax"), ("CTChest4", "lumbar vertebral column", "minmax"),
]
HELD_OUT = [(folder, label, mode) for _, folder, label, mode in STRUCTURES]
PAST, INSETS = 6, (0, 2, 4)


def record(backend, folder, label, mode, sessions):
    volume, ref = load(folder, label)
    key = (folder, mode)
    if key not in sessions:
        sessions[key] = VolumeSession(volume, backend, intensity_mode=mode)
    s = sessions[key]
    slices = np.flatnonzero(ref.any(axis=(1, 2)))
    walks = []
    middle = (slices[0] + slices[-1]) / 2.0
    seed = int(min(slices, key=lambda k: (abs(k - middle), k)))
    for direction, end in (("down", int(slices[0])), ("up", int(slices[-1]))):
        step = DIRECTIONS[direction]
        starts = {seed}  # the first round's walk: from the middle slice
        if 0 < end + step < s.n_slices:  # an end inside the volume: walks that start near it too
            starts |= {end - step * inset for inset in INSETS}
        for start in sorted(starts):
            inset = abs(end - start)
            if not ref[start].any():
                continue
            pred = s.segment_slice(start, Prompt(box_xy=box_from_mask(ref[start])))
            prev = pred.best
            if not prev.any():
                continue
            grey = _grey_stats(s.picture(start), prev)
            steps, idx = [], start
            settings = PropagationSettings()
            while 0 <= idx + step < s.n_slices and (idx + step - end) * step <= PAST:
                idx += step
                box = _grow(box_from_mask(prev, settings.box_margin_px), settings.box_margin_frac, prev.shape)
                p = s.segment_slice(idx, Prompt(box_xy=box), multimask=False)
                m = p.best
                area = int(m.sum())
                if area < settings.min_area_px:
                    steps.append(dict(empty=True, inside=bool(ref[idx].any())))
                    break
                mean = _grey_stats(s.picture(idx), m)[0]
                steps.append(dict(empty=False, inside=bool(ref[idx].any()), score=float(p.best_score),
                                  ratio=area / max(int(prev.sum()), 1),
                                  overlap=float((m & prev).sum()) / area, shift=abs(mean - grey[0]),
                                  std=grey[1]))
                prev = m
            walks.append(dict(structure=f"{folder} {label}", direction=direction, inset=inset, steps=steps))
    return walks


def trips(st, r) -> bool:
    if st["empty"]:
        return True
    if st["ratio"] < r["min_area_ratio"] or st["ratio"] > r["max_area_ratio"]:
        return True
    if st["overlap"] < r["min_overlap"] or st["score"] < r["min_score"]:
        return True
    limit = max(r["max_intensity_shift"] * st["std"], 12.0)  # propagation's min_intensity_shift: 12 grey levels
    return r["max_intensity_shift"] > 0 and st["shift"] > limit


def cost(walks, r) -> int:
    total = 0
    for w in walks:
        kept = True
        for st in w["steps"]:
            kept = kept and not trips(st, r)
            total += int(kept != st["inside"])
    return total


GRID = dict(min_score=[0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9], min_area_ratio=[0.25, 0.4, 0.5, 0.6, 0.7],
            max_area_ratio=[1.5, 2.5], min_overlap=[0.3, 0.5, 0.7, 0.8],
            max_intensity_shift=[0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default=None)
    ap.add_argument("--save", help="write the recorded walks as JSON here")
    ap.add_argument("--load", help="fit on walks recorded before (--save) instead of recording")
    args = ap.parse_args(argv)
    from samed.backends import create_backend

    if args.load:
        walks = json.loads(Path(args.load).read_text())
        tuning, held, backend = walks["tuning"], walks["held_out"], None
    else:
        backend = create_backend("local", "litemedsam", None, None, None, engine=args.engine)
        sessions = {}
        tuning = [w for f, l, m in TUNING for w in record(backend, f, l, m, sessions)]
        held = [w for f, l, m in HELD_OUT for w in record(backend, f, l, m, sessions)]
    if args.save:
        Path(args.save).write_text(json.dumps({"tuning": tuning, "held_out": held}))
    names = list(GRID)
    scored = []
    for values in itertools.product(*(GRID[n] for n in names)):
        r = dict(zip(names, values))
        scored.append((cost(tuning, r), -r["min_score"], values, r))
    scored.sort(key=lambda t: (t[0], t[1], t[2]))
    best = scored[0][3]
    current = dict(WALK_RULES)
    steps = lambda ws: sum(len(w["steps"]) for w in ws)  # noqa: E731
    print(f"walks: tuning {len(tuning)} ({steps(tuning)} steps), held-out {len(held)} ({steps(held)} steps)")
    print(f"current rules {current}: wrong slices tuning {cost(tuning, current)}, held-out {cost(held, current)}")
    print(f"best on tuning {best}: wrong slices tuning {cost(tuning, best)}, held-out {cost(held, best)}")
    for c, _, _, r in scored[1:6]:
        print(f"  next: {r}: tuning {c}, held-out {cost(held, r)}")
    if backend is not None:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
