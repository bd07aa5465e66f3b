"""A simulated user in 3D (``--prompt interactive-3d:N``): the seed study's Algorithm 1 lifted to volumes.

For one structure (a class of a volume, slices along the session's axis):

1. Interaction 1: a tight box (``box-all``) around the reference on the seed slice (the slice holding the
   object nearest the middle of its extent, as ``--propagate``); the model's mask there is the first key
   slice, and :func:`samed.core.key_slices.segment_from_key_slices` fills in the structure.
2. After each round the error of every slice is counted (prediction XOR reference, in voxels: every slice of a
   volume has the same voxel size, so this is the error volume). On the slice with the largest error that is
   not a key slice yet (ties: the lowest index), the user gives
   - a tight box around the reference there (the model's mask for it becomes a key slice), or,
   - where the reference is empty (the tool went past the object's end), marks the slice "absent" (one
     interaction: in Slicer, a key slice with an empty mask).
   The tool recomputes the whole structure from all key slices. Stops early when no slice has an error left.
   With ``--prompt interactive-3d-points:N`` (models that take points: SAM, not LiteMedSAM/MedSAM) the user
   clicks instead, as the study's Algorithm 1 does in 2D: on a slice without clicks, an include point at the
   reference's centre (the pixel of its largest region farthest from the boundary); on a slice already clicked,
   a point at the centre of that slice's error region (include where the object was missed, exclude where the
   tool went too far), all of the slice's clicks sent together; a key slice may so be clicked again.
3. 3D Dice, NSD and HD95 (full voxel spacing) are recorded after 1..N interactions.

The oracle is a tight reference box on every slice that holds the object (``box-every-slice``): as many
interactions as the object has slices. ``boxes_to`` says how many interactions reached a fraction of the
oracle's Dice (``saved`` = the oracle's boxes minus those). Deterministic: the box user involves no randomness
(the tie rule is fixed); the point user breaks ties between equally central pixels with the seeded generator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..core import metrics
from ..core.geometry import extract_slice, insert_slice
from ..core.key_slices import KeySliceResult, KeySliceSettings, mask_for_key_box, segment_from_key_slices
from ..core.prompts import POINT, Prompt, box_from_mask
from ..core.volume_session import VolumeSession
from . import regions as rg
from .simulate import SCORE, choose, multimask_for

INTERACTIVE_3D = "interactive-3d"
INTERACTIVE_3D_POINTS = "interactive-3d-points"
ABSENT, BOX = "absent", "box"
INCLUDE, EXCLUDE = "include point", "exclude point"
USERS = {INTERACTIVE_3D: BOX, INTERACTIVE_3D_POINTS: "points"}
DEFAULT_INTERACTIONS, MAX_INTERACTIONS = 5, 50


def interactive_3d_user(spec: str) -> str:
    """"box" for ``interactive-3d:N``, "points" for ``interactive-3d-points:N``."""
    return USERS[spec.strip().partition(":")[0]]


def parse_interactive_3d(spec: str) -> Optional[int]:
    """N for ``--prompt interactive-3d[-points][:N]`` (alone); None for any other prompt spec."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not any(p.partition(":")[0] in USERS for p in parts):
        return None
    if len(parts) != 1:
        raise ValueError(f"{INTERACTIVE_3D}:N runs on its own (a 3D protocol, not a per-slice mode): give "
                         f"--prompt {INTERACTIVE_3D}:N (or {INTERACTIVE_3D_POINTS}:N) alone")
    _, _, arg = parts[0].partition(":")
    try:
        n = int(arg) if arg else DEFAULT_INTERACTIONS
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_INTERACTIONS:
        raise ValueError(f"prompt mode {parts[0]!r}: N must be a whole number of interactions, 1..{MAX_INTERACTIONS}")
    return n


@dataclass
class Round:
    interactions: int
    slice: int  # where this round's interaction went
    action: str  # box | include point | exclude point | absent | none
    dice: float
    nsd: float
    hd95: float
    pred: np.ndarray = field(repr=False)
    stopped: str = ""


@dataclass
class Interactive3D:
    rounds: List[Round]
    oracle: Dict[str, float]  # dice, nsd, hd95 of a box on every slice
    oracle_boxes: int
    ref_slices: List[int]

    def boxes_to(self, fraction: float) -> Optional[int]:
        """Interactions needed to reach ``fraction`` x the oracle's Dice (None: not within the rounds run)."""
        for r in self.rounds:
            if r.dice >= fraction * self.oracle["dice"]:
                return r.interactions
        return None


def _slices(ref3d: np.ndarray, ax: int) -> List[int]:
    other = tuple(a for a in range(3) if a != ax)
    return [int(s) for s in np.flatnonzero(ref3d.any(axis=other))]


def seed_slice(slices: List[int]) -> int:
    middle = (slices[0] + slices[-1]) / 2.0
    return min(slices, key=lambda s: (abs(s - middle), s))


def box_mask(session: VolumeSession, index: int, ref2d: np.ndarray, selection: str = SCORE) -> np.ndarray:
    """The model's mask for a tight reference box on one slice (empty for an empty reference)."""
    box = box_from_mask(ref2d)
    if box is None:
        return np.zeros(ref2d.shape, bool)
    pred = session.segment_slice(index, Prompt(box_xy=box), multimask_for(selection))
    return choose(pred, ref2d, selection)[0]


def oracle_volume(session: VolumeSession, ref3d: np.ndarray, selection: str = SCORE) -> np.ndarray:
    ax = session.np_axis
    out = np.zeros(ref3d.shape, bool)
    for s in _slices(ref3d, ax):
        insert_slice(out, ax, s, box_mask(session, s, extract_slice(ref3d, ax, s), selection))
    return out


def next_slice(pred: np.ndarray, ref3d: np.ndarray, ax: int, taken) -> Optional[int]:
    """The non-key slice with the largest error volume (ties: the lowest index); None when nothing is wrong."""
    other = tuple(a for a in range(3) if a != ax)
    errors = np.logical_xor(pred, ref3d).sum(axis=other)
    for s in taken:
        errors[s] = 0
    if errors.max() <= 0:
        return None
    return int(np.argmax(errors))


def click(session: VolumeSession, index: int, ref2d: np.ndarray, pred2d: np.ndarray, clicks: Dict[int, tuple],
          rng: np.random.Generator, selection: str = SCORE) -> Tuple[np.ndarray, str]:
    """The point user on one slice: the next click there (see the module docstring), the model's mask for all
    of the slice's clicks, and what the click was."""
    include, exclude = clicks.setdefault(index, ([], []))
    if not include:
        include.append(rg.farthest_point(rg.regions(ref2d)[0], rng))
        action = INCLUDE
    else:
        x, y, inside = rg.correction_point(pred2d, ref2d, rng)
        (include if inside else exclude).append((x, y))
        action = INCLUDE if inside else EXCLUDE
    prompt = Prompt(include_points_xy=list(include), exclude_points_xy=list(exclude))
    return choose(session.segment_slice(index, prompt, multimask_for(selection)), ref2d, selection)[0], action


def run_interactive_3d(session: VolumeSession, ref3d: np.ndarray, max_interactions: int,
                       settings: Optional[KeySliceSettings] = None, tolerance: float = 2.0,
                       selection: str = SCORE, oracle: Optional[np.ndarray] = None, user: str = BOX,
                       seed: int = 0) -> Interactive3D:
    """Simulate up to ``max_interactions`` rounds on one structure (``ref3d`` bool on the volume's grid);
    ``user``: "box" (a tight box per round) or "points" (a click per round, see the module docstring)."""
    if user not in USERS.values():
        raise ValueError(f"unknown simulated user {user!r}: use one of {', '.join(USERS.values())}")
    if user != BOX and POINT not in session.backend.prompt_kinds():
        raise ValueError(f"{session.backend.model} does not take point prompts: use --prompt {INTERACTIVE_3D}:N "
                         f"(boxes) with it")
    rng = np.random.default_rng(seed)
    clicks: Dict[int, tuple] = {}  # the point user's clicks per slice
    ref3d = np.asarray(ref3d, bool)
    ax = session.np_axis
    slices = _slices(ref3d, ax)
    if not slices:
        raise ValueError("the reference structure is empty")
    if max_interactions < 1:
        raise ValueError("max_interactions must be at least 1")
    spacing = tuple(float(v) for v in session.volume.spacing_kji)
    if oracle is None:
        oracle = oracle_volume(session, ref3d, selection)
    ov = metrics.compute_all(oracle, ref3d, spacing=spacing, tolerance_mm=tolerance)
    keys: Dict[int, np.ndarray] = {}
    rounds: List[Round] = []
    index, action = seed_slice(slices), BOX
    res: Optional[KeySliceResult] = None
    pred = np.zeros(ref3d.shape, bool)
    while True:
        ref2d = extract_slice(ref3d, ax, index)
        if action == ABSENT:
            keys[index] = np.zeros(ref2d.shape, bool)
        elif user != BOX:
            keys[index], action = click(session, index, ref2d, extract_slice(pred, ax, index), clicks, rng,
                                        selection)
        elif res is None:
            keys[index] = box_mask(session, index, ref2d, selection)
        else:  # a box on a slice that already has a preview: the tool keeps what fits the box best
            prior = [(res.masks[index], res.scores[index])] if index in res.masks else []
            keys[index] = mask_for_key_box(session.backend, session.picture(index), box_from_mask(ref2d), prior)[0]
        if any(m.any() for m in keys.values()):
            boxes = {i: box_from_mask(extract_slice(ref3d, ax, i)) for i, m in keys.items()
                     if user == BOX and m.any()}
            res = segment_from_key_slices(session.backend, session.picture, session.n_slices, keys, settings,
                                          key_boxes=boxes)
            pred, stopped = res.to_volume(ref3d.shape, ax), "; ".join(f"{d}: {w}" for d, w in
                                                                      sorted(res.stopped.items()))
        else:  # the model gave nothing for the first box
            pred, stopped = np.zeros(ref3d.shape, bool), f"the box on slice {index} gave an empty mask"
        v = metrics.compute_all(pred, ref3d, spacing=spacing, tolerance_mm=tolerance)
        rounds.append(Round(len(rounds) + 1, index, action, v["dice"], v["nsd"], v["hd95"], pred, stopped))
        if len(rounds) >= max_interactions:
            break
        nxt = next_slice(pred, ref3d, ax, keys if user == BOX else {i for i, m in keys.items() if not m.any()})
        if nxt is None:
            break
        index = nxt
        action = BOX if extract_slice(ref3d, ax, index).any() else ABSENT
    last = rounds[-1]
    while len(rounds) < max_interactions:  # nothing left to correct: later counts keep the result
        rounds.append(Round(len(rounds) + 1, last.slice, "none", last.dice, last.nsd, last.hd95, last.pred,
                            last.stopped))
    return Interactive3D(rounds, {k: ov[k] for k in ("dice", "nsd", "hd95")}, len(slices), slices)
