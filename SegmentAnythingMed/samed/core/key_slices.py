"""One structure in a volume from prompts on a few key slices, with any backend (engine-agnostic, no torch).

The user prompts (or accepts a mask on) any number of *key slices*; a key slice may also say that the object
is *absent* there (an empty mask: "it has ended"). The other slices are filled in:

- **Between two key slices** (no absent key between them) each slice is prompted from what is known on both
  sides: the *interpolated shape* of the two key masks (shape-based interpolation: the signed distance maps of
  the two masks blended linearly by the slice's position, see :func:`interpolate_shapes`), the linearly
  interpolated key box, and the mask already accepted on the neighbouring slice on the nearer key's side.
  Each gives a box (grown as the walk grows it); the model's mask for each is judged by
  ``score + shape_weight * IoU(mask, interpolated shape)`` and the best is kept. If even the best agrees with
  the interpolated shape less than ``min_shape_iou``, the interpolated shape itself is kept (the model has
  gone elsewhere; the shape between two masks the user accepted is the safer guess).
- **Beyond the outermost key slices** the walk of :mod:`samed.core.propagation` continues outwards with the
  measured stop rules (:data:`WALK_RULES` from a lone key slice, :data:`WALK_RULES_MORE_KEYS` where the user has
  given two or more; see those constants for how they were measured), up to the volume's end, an absent key or
  the ROI's extent. Its intensity rule compares each mask with the start key's grey values and with all key
  slices' together.
- The masks the fill and the walks make are cut at the model's own threshold whatever the backend's rule (see
  :mod:`samed.core.propagation`); key masks are shown as given and the fill and walks use
  :func:`samed.core.propagation.walking_mask` of each.
- ``index_range`` (an ROI's extent along the slicing axis) bounds everything: key slices outside it are an error.

Nothing is written anywhere: the caller previews :class:`KeySliceResult` (each slice's mask, score and kind:
``key``, ``interpolated`` or ``walked``; ``stopped`` says why each end stopped) and applies it.

SimpleITK 2.5 has no wrapper for ITK's MorphologicalContourInterpolator (what Slicer's "Fill between slices"
uses; it is an ITK remote module, ``itk-morphologicalcontourinterpolation``, which pulls ~200 MB of ITK
packages), so the shape between two key masks is the classic signed-distance interpolation (Herman, Zheng &
Bucholtz 1992), computed with scipy's Euclidean distance transform.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .backend import Backend
from .geometry import masks_to_volume
from .prompts import Prompt, box_from_mask
from .propagation import (DIRECTIONS, PropagationSettings, _check_next, _grey_stats, _grow, _walk_box, first_step,
                          walk_cut, walking_mask)

KEY, INTERPOLATED, WALKED = "key", "interpolated", "walked"

# Stop rules of the walk beyond the outermost key slices, measured with bench/measure_walk_rules.py: walks
# recorded without rules from key slices on 13 structures that are NOT in the key-slice benchmark (tuning) and
# on the benchmark's 9 (held out); each rule set is scored by the slices it gets wrong (kept past the object's
# end, or dropped before it). From the structure's middle slice (one key slice: the first box) the rules tuned
# on the tuning walks did worse on the held-out ones (39 wrong slices against 34), so the walk keeps
# core.propagation's rules there. From key slices near the object's end (where later boxes go), the tuned rules
# held up: 42 wrong held-out slices against 57 (tuning 66 against 136): a stricter score, no intensity rule.
WALK_RULES = dict(min_area_ratio=0.25, max_area_ratio=2.5, min_overlap=0.3, min_score=0.5, max_intensity_shift=2.5)
WALK_RULES_MORE_KEYS = dict(min_area_ratio=0.25, max_area_ratio=2.5, min_overlap=0.3, min_score=0.8,
                            max_intensity_shift=0.0)


@dataclass
class KeySliceSettings:
    walk: PropagationSettings = field(default_factory=lambda: PropagationSettings(**WALK_RULES))  # one key slice
    walk_more_keys: PropagationSettings = field(  # two or more key slices in the run the walk leaves
        default_factory=lambda: PropagationSettings(**WALK_RULES_MORE_KEYS))
    # candidate value = score + shape_weight * IoU with the interpolated shape; 1.0 was best on the tuning
    # structures of bench/measure_fill.py, but held out the score alone (0) did 0.011 better: see docs/evaluation.md
    shape_weight: float = 1.0
    min_shape_iou: float = 0.0  # below this agreement, keep the interpolated shape instead of the model's mask
    # the neighbour candidate between two keys: "larger" walks from the key with the larger mask towards the
    # smaller (a box from a larger neighbour still holds a shrinking object; one from a smaller neighbour cannot
    # hold a growing one: a tiny key near the object's end starved the slices next to it), "nearer" from both
    # keys inwards (each slice's neighbour on its nearer key's side)
    fill_from: str = "larger"
    # scale shape_weight by the two key masks' area ratio (smaller / larger): signed-distance interpolation is
    # exact between equal shapes and far off between a key near the object's end and one in its middle (19 px
    # and 1670 px: the shape stays far too small for most of the way), where it should not outvote the model
    shape_weight_by_area: bool = True
    index_range: Optional[Tuple[int, int]] = None  # inclusive slice limits (an ROI's extent)

    def validate(self) -> None:
        self.walk.validate()
        self.walk_more_keys.validate()
        if self.shape_weight < 0:
            raise ValueError("shape_weight must be >= 0")
        if not 0 <= self.min_shape_iou <= 1:
            raise ValueError("min_shape_iou must be within 0..1")
        if self.fill_from not in ("larger", "nearer"):
            raise ValueError("fill_from must be 'larger' or 'nearer'")


@dataclass
class KeySliceResult:
    masks: Dict[int, np.ndarray] = field(default_factory=dict)  # slice -> (H, W) bool (non-empty slices only)
    scores: Dict[int, float] = field(default_factory=dict)
    kinds: Dict[int, str] = field(default_factory=dict)  # slice -> key | interpolated | walked
    stopped: Dict[str, str] = field(default_factory=dict)  # "down" / "up" -> why that end stopped

    @property
    def indices(self) -> List[int]:
        return sorted(self.masks)

    def to_volume(self, shape_kji: Sequence[int], np_axis: int) -> np.ndarray:
        return masks_to_volume(self.masks, shape_kji, np_axis)


def _sdf(mask: np.ndarray) -> np.ndarray:
    """Signed distance to the mask's edge in pixels, negative inside: pixel centres sit half a pixel from the
    edge between an inside and an outside pixel, so the zero level of one mask's map is that mask again."""
    from scipy.ndimage import distance_transform_edt

    inside = distance_transform_edt(mask) - 0.5
    outside = distance_transform_edt(~mask) - 0.5
    return np.where(mask, -inside, outside)


def interpolate_shapes(lower: np.ndarray, upper: np.ndarray, n_between: int) -> List[np.ndarray]:
    """The ``n_between`` masks between two key masks (``lower`` first): the zero level of the linearly blended
    signed distance maps. Equal masks give the same mask; a disc and a larger concentric disc give discs whose
    radius grows linearly."""
    lower, upper = np.asarray(lower, bool), np.asarray(upper, bool)
    if lower.shape != upper.shape:
        raise ValueError(f"key masks differ in shape: {lower.shape} vs {upper.shape}")
    if not lower.any() or not upper.any():
        raise ValueError("interpolate_shapes needs two non-empty key masks")
    d0, d1 = _sdf(lower), _sdf(upper)
    out = []
    for k in range(1, n_between + 1):
        t = k / (n_between + 1)
        out.append(((1 - t) * d0 + t * d1) < 0)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum()) / union if union else 0.0


def _lerp_box(b0: np.ndarray, b1: np.ndarray, t: float) -> np.ndarray:
    return (1 - t) * b0 + t * b1


def _candidate_boxes(shape: np.ndarray, neighbours: Sequence[np.ndarray], lerp_box: np.ndarray,
                     s: PropagationSettings) -> List[Tuple[str, np.ndarray]]:
    hw = shape.shape
    boxes = []
    for name, mask in [("shape", shape)] + [("neighbour", m) for m in neighbours]:
        if mask.any():
            boxes.append((name, _grow(box_from_mask(mask, s.box_margin_px, hw), s.box_margin_frac, hw)))
    boxes.append(("key boxes", np.clip(lerp_box, 0, [hw[1] - 1, hw[0] - 1, hw[1] - 1, hw[0] - 1])))
    unique, seen = [], set()
    for name, b in boxes:
        key = tuple(np.round(b, 3))
        if key not in seen:
            seen.add(key)
            unique.append((name, b))
    return unique


def fill_between(backend: Backend, get_slice: Callable[[int], np.ndarray], lo: int, lo_mask: np.ndarray,
                 hi: int, hi_mask: np.ndarray, settings: KeySliceSettings,
                 progress: Optional[Callable[[], None]] = None) -> Dict[int, Tuple[np.ndarray, float, str]]:
    """slice -> (mask, score, how) for the slices strictly between key slices ``lo`` < ``hi``."""
    n = hi - lo - 1
    if n <= 0:
        return {}
    shapes = dict(zip(range(lo + 1, hi), interpolate_shapes(lo_mask, hi_mask, n)))
    box_lo = box_from_mask(lo_mask, settings.walk.box_margin_px)
    box_hi = box_from_mask(hi_mask, settings.walk.box_margin_px)
    hw = lo_mask.shape
    box_lo = _grow(box_lo, settings.walk.box_margin_frac, hw)
    box_hi = _grow(box_hi, settings.walk.box_margin_frac, hw)
    done: Dict[int, Tuple[np.ndarray, float, str]] = {lo: (lo_mask, 1.0, KEY), hi: (hi_mask, 1.0, KEY)}
    if settings.fill_from == "larger":  # from the larger key's side: each slice's neighbour is the one before
        up = int(lo_mask.sum()) >= int(hi_mask.sum())
        order = list(range(lo + 1, hi)) if up else list(range(hi - 1, lo, -1))
        side = {i: i - 1 if up else i + 1 for i in order}
    else:  # nearest a key first, so that every slice's neighbour on the nearer key's side is already known
        order = sorted(range(lo + 1, hi), key=lambda i: (min(i - lo, hi - i), i))
        side = {i: i - 1 if i - lo <= hi - i else i + 1 for i in order}
    weight = settings.shape_weight
    if settings.shape_weight_by_area:
        a0, a1 = int(lo_mask.sum()), int(hi_mask.sum())
        weight *= min(a0, a1) / max(a0, a1)
    cut = walk_cut(backend)
    for i in order:
        # the neighbour on the walk's side, and the one on the other side where it is known already (the
        # smaller key, next to it)
        neighbours = [done[side[i]][0]] + [done[j][0] for j in (i - 1, i + 1) if j != side[i] and j in done]
        shape = shapes[i]
        picture = get_slice(i)
        best = None
        for name, box in _candidate_boxes(shape, neighbours, _lerp_box(box_lo, box_hi, (i - lo) / (hi - lo)),
                                          settings.walk):
            pred = backend.segment(picture, Prompt(box_xy=box), multimask=False, **cut)
            agree = _iou(pred.best, shape)
            value = pred.best_score + weight * agree
            if best is None or value > best[0]:
                best = (value, pred.best, pred.best_score, agree, name)
        _, mask, score, agree, name = best
        if agree < settings.min_shape_iou and shape.any():
            mask, name = shape, "shape"
        done[i] = (mask, score, f"{INTERPOLATED} ({name})")
        if progress is not None:
            progress()
    return {i: v for i, v in done.items() if lo < i < hi}


def key_grey_stats(get_slice: Callable[[int], np.ndarray], keys: Dict[int, np.ndarray]) -> Tuple[float, float]:
    """Mean and standard deviation of the grey values (of the pictures the model sees) under all the non-empty
    key masks together: the object's intensity as the user has shown it, not one slice's."""
    values = [np.asarray(get_slice(i))[..., 0][m] for i, m in sorted(keys.items()) if m.any()]
    v = np.concatenate(values).astype(np.float64)
    return float(v.mean()), float(v.std())


def walk_out(backend: Backend, get_slice: Callable[[int], np.ndarray], start: int, start_mask: np.ndarray,
             direction: str, bound: int, s: PropagationSettings, grey: Tuple[float, float],
             should_cancel: Optional[Callable[[], bool]] = None, start_box=None):
    """The walk of ``core.propagation`` from key slice ``start`` outwards to ``bound`` (inclusive), with its stop
    rules; the intensity rule compares with the start key's statistics and with ``grey`` (all key slices'
    statistics): a mask must look like both. Returns ({slice: (mask,
    score)}, why it stopped)."""
    step = DIRECTIONS[direction]
    prev, prev_area, idx = start_mask, int(start_mask.sum()), start
    greys = [_grey_stats(get_slice(start), start_mask), grey]
    first_box, prev = first_step(start_mask, start_box, s)
    prev_area = int(prev.sum())
    out: Dict[int, Tuple[np.ndarray, float]] = {}
    cut = walk_cut(backend)
    while (idx + step - bound) * step <= 0:
        if should_cancel is not None and should_cancel():
            return out, f"cancelled at slice {idx + step}"
        if s.max_slices is not None and abs(idx + step - start) > s.max_slices:
            return out, f"range: {s.max_slices} slices from key slice {start}"
        idx += step
        picture = get_slice(idx)
        box = first_box if idx == start + step else _walk_box(prev, s)
        pred = backend.segment(picture, Prompt(box_xy=box), multimask=False, **cut)
        rule, detail = None, ""
        for stats in greys:  # the intensity rule against each: the start key's and all keys' statistics
            rule, detail = _check_next(pred.best, pred.best_score, prev, prev_area, s, picture, stats)
            if rule:
                break
        if rule:
            return out, f"{rule} at slice {idx}: {detail}"
        out[idx] = (pred.best, pred.best_score)
        prev, prev_area = pred.best, int(pred.best.sum())
    return out, f"range: reached slice {idx}"


def _runs(keys: Dict[int, np.ndarray], lo: int, hi: int) -> List[Tuple[int, int, List[int]]]:
    """Split lo..hi at absent keys: (run start, run end, the non-empty keys in it) for runs holding keys."""
    absent = sorted(i for i, m in keys.items() if not m.any())
    bounds, start = [], lo
    for a in absent + [hi + 1]:
        if start <= a - 1:
            inside = sorted(i for i, m in keys.items() if start <= i <= a - 1 and m.any())
            if inside:
                bounds.append((start, a - 1, inside))
        start = a + 1
    return bounds


def segment_from_key_slices(backend: Backend, get_slice: Callable[[int], np.ndarray], n_slices: int,
                            key_masks: Dict[int, np.ndarray], settings: Optional[KeySliceSettings] = None,
                            progress: Optional[Callable[[int, int], None]] = None,
                            should_cancel: Optional[Callable[[], bool]] = None,
                            key_boxes: Optional[Dict[int, Sequence[float]]] = None) -> KeySliceResult:
    """Fill in one structure from its key slices' masks (``{slice: (H, W) bool}``; an empty mask = absent).
    ``key_boxes`` (``{slice: (x0, y0, x1, y1)}``): the boxes the user drew on key slices, where there are any;
    a walk leaving a key slice starts from its box.

    ``get_slice(i)`` returns slice ``i`` as the preprocessed (H, W, 3) uint8 picture. See the module docstring.
    """
    s = settings or KeySliceSettings()
    s.validate()
    lo, hi = 0, n_slices - 1
    if s.index_range is not None:
        lo, hi = max(lo, int(s.index_range[0])), min(hi, int(s.index_range[1]))
    keys = {int(i): np.asarray(m).astype(bool) for i, m in key_masks.items()}
    outside = [i for i in keys if not lo <= i <= hi]
    if outside:
        raise ValueError(f"key slice(s) {sorted(outside)} outside the slice range {lo}..{hi} (volume or ROI)")
    if not any(m.any() for m in keys.values()):
        raise ValueError("no key slice holds the object: prompt it on at least one slice")
    result = KeySliceResult()
    shown_keys = dict(keys)  # the fill and the walks use each box's own mask at the model's threshold
    keys = {k: walking_mask(backend, get_slice(k), m, (key_boxes or {}).get(k)) for k, m in keys.items()}
    runs = _runs(keys, lo, hi)
    total = sum(r1 - r0 + 1 for r0, r1, _ in runs)
    done = [0]

    def tick():
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    for r0, r1, inside in runs:
        for k in inside:
            result.masks[k], result.scores[k], result.kinds[k] = shown_keys[k], 1.0, KEY
            tick()
        for a, b in zip(inside, inside[1:]):
            if should_cancel is not None and should_cancel():
                result.stopped["cancelled"] = f"before filling {a}..{b}"
                return result
            for i, (mask, score, how) in fill_between(backend, get_slice, a, keys[a], b, keys[b], s, tick).items():
                if mask.any():
                    result.masks[i], result.scores[i], result.kinds[i] = mask, score, how
        grey = key_grey_stats(get_slice, {k: keys[k] for k in inside})
        for direction, start, bound in (("down", inside[0], r0), ("up", inside[-1], r1)):
            rules = s.walk if len(inside) == 1 else s.walk_more_keys
            walked, why = walk_out(backend, get_slice, start, keys[start], direction, bound, rules, grey,
                                   should_cancel, (key_boxes or {}).get(start))
            for i, (mask, score) in walked.items():
                result.masks[i], result.scores[i], result.kinds[i] = mask, score, WALKED
                tick()
            if why.startswith("range: reached") and bound not in (lo, hi):
                why = f"absent key slice {bound + DIRECTIONS[direction]}"
            name = direction if len(runs) == 1 else f"{direction} from {start}"
            result.stopped[name] = why
    if progress is not None:
        progress(total, total)
    return result


def box_fit(mask: np.ndarray, box_xy) -> float:
    """IoU of a mask's tight box with a box (x0, y0, x1, y1, pixel-inclusive); 0 for an empty mask."""
    tight = box_from_mask(mask)
    if tight is None:
        return 0.0
    a, b = np.asarray(tight, float), np.asarray(box_xy, float)
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0.0) * max(ih, 0.0)
    area = lambda c: (c[2] - c[0] + 1) * (c[3] - c[1] + 1)  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


def clip_to_box(mask: np.ndarray, box_xy) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in box_xy)
    out = np.zeros_like(mask, dtype=bool)
    out[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = mask[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1]
    return out


def mask_for_key_box(backend: Backend, picture: np.ndarray, box_xy, priors: Sequence[Tuple[np.ndarray, float]] = (),
                     score_weight: float = 0.5) -> Tuple[np.ndarray, float, str]:
    """The key mask for a box the user drew on a slice: (mask, score, where it came from).

    A user's box is tight: the object touches its four sides. Candidates are the model's masks for the box and
    ``priors`` (masks the tool already had on this slice, e.g. the preview there, with their scores) clipped to
    the box; the candidate whose own tight box fits the user's box best (``box_fit``, plus ``score_weight`` x
    its score; a prior's fit is that of its extent before clipping: clipped, any mask larger than the box would
    touch its four sides) is kept, so a box never makes a slice worse than the preview it corrects when the model
    misreads it.
    """
    pred = backend.segment(picture, Prompt(box_xy=np.asarray(box_xy, float)), multimask=False)
    cands = [(pred.best, pred.best_score, "model", box_fit(pred.best, box_xy))]
    for k, (prior, score) in enumerate(priors):
        prior = np.asarray(prior, bool)
        clipped = clip_to_box(prior, box_xy)
        if clipped.any():  # judged by its own extent: clipped, any mask larger than the box would fit it
            cands.append((clipped, float(score), f"prior {k + 1}", box_fit(prior, box_xy)))
    best = max(cands, key=lambda c: c[3] + score_weight * c[1])
    return best[:3]


def key_masks_from_prompts(backend: Backend, get_slice: Callable[[int], np.ndarray],
                           prompts: Dict[int, Prompt]) -> Dict[int, Tuple[np.ndarray, float]]:
    """slice -> (the model's best mask, its score) for one prompt per key slice."""
    out = {}
    for i, prompt in sorted(prompts.items()):
        pred = backend.segment(get_slice(i), prompt)
        out[i] = (pred.best, pred.best_score)
    return out
