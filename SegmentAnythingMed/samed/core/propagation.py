"""Propagate a mask from one slice through its neighbours, in both directions, with any backend.

Each next slice is prompted from the mask accepted on the slice before it: a box around that mask grown by
``box_margin_px`` pixels and ``box_margin_frac`` of its size (the defaults, 2 px + 5 %, gave the best 3D Dice
on the lung of CTChest4, the liver and spleen of ct-abdomen and the tumour of mr-brain-tumor among the
margins tried: 3 px, 6 px, 2 px + 5 %, 2 px + 10 %), plus the mask itself as a mask prompt when the model takes masks and
``use_mask_prompt`` is on. The walk in one direction stops at the first slice where

1. ``range``: the next slice is outside the volume, outside ``index_range`` (e.g. an ROI's extent) or past
   ``max_slices`` steps from the seed;
2. ``empty``: the predicted mask has fewer than ``min_area_px`` pixels;
3. ``shrink`` / ``grow``: its area is below ``min_area_ratio`` or above ``max_area_ratio`` times the area on the
   previous slice (the object ended, or the mask leaked into a neighbour);
4. ``drift``: less than ``min_overlap`` of the new mask lies on the previous mask (the object cannot jump);
5. ``score``: the model's own quality score is below ``min_score``;
6. ``intensity``: the mean grey value (of the picture the model sees) inside the new mask differs from the
   seed's by more than ``max_intensity_shift`` seed standard deviations (and at least ``min_intensity_shift``
   grey levels): the mask has moved onto another tissue, e.g. from lung onto liver;
7. ``cancelled``: the caller's ``should_cancel()`` returned True.

The masks a walk makes are cut at the model's own threshold (logit 0) whatever the backend's mask threshold
(``Backend.mask_threshold``, e.g. "dice"), which is for the slices the user prompts: a rule that cuts lower gives
larger masks, each slice's box grown from the mask before it compounds that (CTChest4's left lung from one box:
3D Dice 0.683 -> 0.559 with every mask cut by "dice"), and walked slices cut again by "dice" (the walk itself
at logit 0) were no better (one box: lower on 6 of the 9 structures of bench/bench_key_slices.py, by up to
0.004; docs/evaluation.md). The seed slice keeps the mask it was given; the walk leaves it from
:func:`walking_mask`.

A slice that trips rules 2-6 is not included. ``PropagationResult.stopped`` says, per direction, which rule
ended the walk and where. Nothing is written anywhere: the caller previews the result and applies it.
Correct-and-repropagate: call :func:`propagate` again from the corrected slice (``directions=("up",)`` or
``("down",)``) and :meth:`PropagationResult.merge` the new walk over the old one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .backend import Backend
from .geometry import masks_to_volume
from .prompts import MASK, Prompt, box_from_mask

DIRECTIONS = {"up": +1, "down": -1}  # up = increasing slice index
# a walk leaves its start slice from the user's box there (not the model's mask) when the mask covers less than
# this share of the ellipse the box holds (issue 11: mr-abdomen right kidney, 48 px in a 15 x 14 px box)
MIN_BOX_FILL = 0.5


@dataclass
class PropagationSettings:
    box_margin_px: float = 2.0
    box_margin_frac: float = 0.05  # plus this fraction of the box's width/height on each side
    use_mask_prompt: bool = False
    min_area_px: int = 5
    min_area_ratio: float = 0.25
    max_area_ratio: float = 2.5
    min_overlap: float = 0.3
    min_score: float = 0.5
    max_intensity_shift: float = 2.5  # in seed standard deviations; 0 turns the rule off
    min_intensity_shift: float = 12.0  # grey levels (0..255)
    max_slices: Optional[int] = None  # steps from the seed per direction
    index_range: Optional[Tuple[int, int]] = None  # inclusive slice-index limits

    def validate(self) -> None:
        if self.box_margin_px < 0:
            raise ValueError("box_margin_px must be >= 0")
        if not 0 <= self.min_area_ratio <= 1 <= self.max_area_ratio:
            raise ValueError("need 0 <= min_area_ratio <= 1 <= max_area_ratio")
        if not 0 <= self.min_overlap <= 1:
            raise ValueError("min_overlap must be within 0..1")
        if self.max_slices is not None and self.max_slices < 0:
            raise ValueError("max_slices must be >= 0")


@dataclass
class PropagationResult:
    seed_index: int
    masks: Dict[int, np.ndarray] = field(default_factory=dict)  # slice index -> (H, W) bool, seed included
    scores: Dict[int, float] = field(default_factory=dict)
    stopped: Dict[str, str] = field(default_factory=dict)  # direction -> "rule at slice N: detail"

    @property
    def indices(self):
        return sorted(self.masks)

    def merge(self, newer: "PropagationResult", direction: Optional[str] = None) -> "PropagationResult":
        """This result with ``newer`` laid over it. With ``direction``, slices beyond the newer seed in that
        direction that the newer walk did not reach are dropped (they followed from the corrected slice)."""
        masks = dict(self.masks)
        scores = dict(self.scores)
        if direction is not None:
            step = DIRECTIONS[direction]
            for idx in list(masks):
                if (idx - newer.seed_index) * step >= 0 and idx not in newer.masks:
                    masks.pop(idx)
                    scores.pop(idx, None)
        masks.update(newer.masks)
        scores.update(newer.scores)
        stopped = dict(self.stopped)
        stopped.update(newer.stopped)
        return PropagationResult(self.seed_index, masks, scores, stopped)

    def to_volume(self, shape_kji: Sequence[int], np_axis: int) -> np.ndarray:
        return masks_to_volume(self.masks, shape_kji, np_axis)


def walk_cut(backend: Backend) -> dict:
    """The decode keywords of the masks a walk makes: cut at the model's threshold (``{}`` where the backend
    cuts there anyway, so that a backend that knows no other rule is called as before)."""
    return {} if backend.mask_threshold() == "model" else {"mask_threshold": "model"}


def walking_mask(backend: Backend, picture: np.ndarray, mask: np.ndarray, box_xy=None) -> np.ndarray:
    """The mask a walk leaves a prompted slice from. Where ``mask`` is the backend's own mask for the user's box
    there (cut by a rule other than the model's), that box's mask cut at the model's threshold: a larger start
    sends the whole walk elsewhere (CTChest4's left lung from one box: 3D Dice 0.683 from the model-cut start,
    0.584 from the "dice" one, every step cut at the model's threshold). Any other mask (painted, clipped, a
    point's) as given."""
    cut = walk_cut(backend)
    if not cut or box_xy is None or not np.asarray(mask).any():
        return mask
    prompt = Prompt(box_xy=np.asarray(box_xy, float))
    handle = backend.encode(picture)
    if not np.array_equal(backend.decode(handle, prompt, False).best, mask):
        return mask
    return backend.decode(handle, prompt, False, **cut).best


def _grow(box: np.ndarray, frac: float, shape_hw) -> np.ndarray:
    if frac <= 0:
        return box
    dx, dy = (box[2] - box[0] + 1) * frac, (box[3] - box[1] + 1) * frac
    h, w = shape_hw
    return np.clip(box + np.array([-dx, -dy, dx, dy]), 0, [w - 1, h - 1, w - 1, h - 1])


def _walk_box(prev: np.ndarray, s: PropagationSettings) -> np.ndarray:
    return _grow(box_from_mask(prev, s.box_margin_px), s.box_margin_frac, prev.shape)


def box_ellipse(box_xy, shape_hw) -> np.ndarray:
    """The ellipse inscribed in a box (x0, y0, x1, y1, pixel-inclusive): what a tight box says of its object's
    extent at the least."""
    x0, y0, x1, y1 = np.asarray(box_xy, float)
    yy, xx = np.mgrid[: shape_hw[0], : shape_hw[1]]
    rx, ry = (x1 - x0 + 1) / 2.0, (y1 - y0 + 1) / 2.0
    return ((xx - (x0 + x1) / 2.0) / rx) ** 2 + ((yy - (y0 + y1) / 2.0) / ry) ** 2 <= 1.0


def first_step(start_mask: np.ndarray, start_box, s: PropagationSettings) -> Tuple[np.ndarray, np.ndarray]:
    """(the box for the first slice of a walk, the mask its rules compare with) from the start slice's mask
    and the box the user drew there (None: no box). Where the model kept less than ``MIN_BOX_FILL`` of the
    ellipse the user's tight box holds, the box is the object's extent on that slice: the first step is prompted
    with it (grown as the walk grows a mask's box) and its rules see the mask together with the box's ellipse."""
    if start_box is not None:
        ellipse = box_ellipse(start_box, start_mask.shape)
        if int(start_mask.sum()) < MIN_BOX_FILL * int(ellipse.sum()):
            h, w = start_mask.shape
            b = np.asarray(start_box, float) + np.array([-1, -1, 1, 1]) * s.box_margin_px
            b = _grow(np.clip(b, 0, [w - 1, h - 1, w - 1, h - 1]), s.box_margin_frac, start_mask.shape)
            return b, start_mask | ellipse
    return _walk_box(start_mask, s), start_mask


def _grey_stats(picture: np.ndarray, mask: np.ndarray) -> Tuple[float, float]:
    values = np.asarray(picture)[..., 0][mask].astype(np.float64)
    return float(values.mean()), float(values.std())


def _check_next(mask: np.ndarray, score: float, prev: np.ndarray, prev_area: int, s: PropagationSettings,
                picture: np.ndarray, seed_stats: Tuple[float, float]):
    area = int(mask.sum())
    if area < s.min_area_px:
        return "empty", f"{area} px"
    ratio = area / max(prev_area, 1)
    if ratio < s.min_area_ratio:
        return "shrink", f"area {area} px is {ratio:.2f} x the previous slice's"
    if ratio > s.max_area_ratio:
        return "grow", f"area {area} px is {ratio:.2f} x the previous slice's"
    overlap = float(np.logical_and(mask, prev).sum()) / area
    if overlap < s.min_overlap:
        return "drift", f"only {overlap:.0%} of the mask lies on the previous slice's mask"
    if score < s.min_score:
        return "score", f"score {score:.2f} < {s.min_score:.2f}"
    if s.max_intensity_shift > 0:
        mean, _ = _grey_stats(picture, mask)
        limit = max(s.max_intensity_shift * seed_stats[1], s.min_intensity_shift)
        if abs(mean - seed_stats[0]) > limit:
            return "intensity", f"mean grey {mean:.0f} vs {seed_stats[0]:.0f} on the seed slice"
    return None, ""


def propagate(backend: Backend, get_slice: Callable[[int], np.ndarray], n_slices: int, seed_index: int,
              seed_mask: np.ndarray, settings: Optional[PropagationSettings] = None,
              directions: Sequence[str] = ("up", "down"),
              progress: Optional[Callable[[int, int], None]] = None,
              should_cancel: Optional[Callable[[], bool]] = None, seed_box=None) -> PropagationResult:
    """Walk from ``seed_index`` (whose mask is ``seed_mask``) through the neighbouring slices; ``seed_box``:
    the box the user drew on the seed slice, if any (see :func:`first_step`).

    ``get_slice(i)`` returns slice ``i`` as preprocessed (H, W, 3) uint8. ``progress(done, total)`` is called
    after each slice (``total`` is the most slices the walk could visit). See the module docstring for rules.
    """
    s = settings or PropagationSettings()
    s.validate()
    seed_mask = np.asarray(seed_mask).astype(bool)
    if not seed_mask.any():
        raise ValueError(f"the seed mask on slice {seed_index} is empty: nothing to propagate")
    lo, hi = 0, n_slices - 1
    if s.index_range is not None:
        lo, hi = max(lo, int(s.index_range[0])), min(hi, int(s.index_range[1]))
    if not lo <= seed_index <= hi:
        raise ValueError(f"seed slice {seed_index} is outside the propagation range {lo}..{hi}")
    use_mask = s.use_mask_prompt and MASK in backend.prompt_kinds()
    cut = walk_cut(backend)
    result = PropagationResult(seed_index, {seed_index: seed_mask}, {seed_index: 1.0})
    seed_picture = get_slice(seed_index)
    seed_mask = walking_mask(backend, seed_picture, seed_mask, seed_box)  # shown as given
    seed_stats = _grey_stats(seed_picture, seed_mask)

    limits = {}
    for d in directions:
        step = DIRECTIONS[d]
        end = hi if step > 0 else lo
        n = abs(end - seed_index)
        if s.max_slices is not None:
            n = min(n, s.max_slices)
        limits[d] = n
    total = sum(limits.values())
    done = 0
    for d in directions:
        step = DIRECTIONS[d]
        first_box, prev = first_step(seed_mask, seed_box, s)
        prev_area = int(prev.sum())
        idx = seed_index
        stop = None
        for _ in range(limits[d]):
            if should_cancel is not None and should_cancel():
                stop = f"cancelled at slice {idx + step}"
                break
            idx += step
            if backend.wants_prefetch:  # let the backend encode the next slices ahead
                ahead = [idx + step * k for k in (1, 2) if lo <= idx + step * k <= hi]
                backend.prefetch([get_slice(i) for i in ahead])
            box = first_box if idx == seed_index + step else _walk_box(prev, s)
            prompt = Prompt(box_xy=box, mask=prev if use_mask else None)
            picture = get_slice(idx)
            pred = backend.segment(picture, prompt, multimask=False, **cut)
            mask, score = pred.best, pred.best_score
            rule, detail = _check_next(mask, score, prev, prev_area, s, picture, seed_stats)
            done += 1
            if progress is not None:
                progress(done, total)
            if rule:
                stop = f"{rule} at slice {idx}: {detail}"
                break
            result.masks[idx] = mask
            result.scores[idx] = score
            prev, prev_area = mask, int(mask.sum())
        else:
            stop = f"range: reached slice {idx}"
        result.stopped[d] = stop
    if progress is not None:
        progress(total, total)
    return result
