"""Refine an existing segmentation of one structure (made by another tool) with any backend.

Each slice of the structure is prompted with a box around the original mask on that slice (grown by
``box_margin_px`` pixels and ``box_margin_frac`` of its size, as propagation does), which gives the model's mask
for the slice. The model's masks are not taken as they are: on the shared volumes LiteMedSAM's masks are further
from the reference than the reference degraded by 2 px (e.g. ct-abdomen liver: model 0.74 Dice, the reference
dilated by 2 px 0.88), and per-slice choices between the original and the model's mask lowered undegraded
references. The model's masks serve as a *measurement*, over the whole structure, of how the original sits on the
image (the per-structure trust signal), before anything is chosen per slice:

1. Along the original's outline, the model's outline is displaced by ``d`` (pixels, positive outward). A fit
   ``d = grow + shift . normal`` over the outline points of every slice (points farther than ``boundary_window_px``
   from the other outline left out) separates a uniform offset (``grow``) from a translation (``shift``). The fit
   is robust (:mod:`samed.core.refine_measure`: Tukey's biweight, no weight past ``outlier_px`` = 4 px from it): a
   model that leaks 3-5 px beyond one side of the outline on some slices (mr-abdomen liver) or outlines a
   neighbour on a few end slices (the eroded mr-abdomen right kidney) does not pull the offset of the rest.
2. LiteMedSAM's outline lies ``model_bias_px`` outside an undegraded reference on average (fit on the undegraded
   references of the shared volumes: 0.1-1.5 px, mean 1.0). ``grow - model_bias_px`` and each shift component are
   taken, rounded to whole pixels, only when at least ``min_offset_px`` / ``min_shift_px``; otherwise the original
   is trusted and comes back unchanged. A model that disagrees here and there, in no one direction, moves nothing.
3. The image's edges vote too (``edge_veto``): the shift in -2..2 px each way (at grow 0), then the grow in -2..2 px
   at the shift taken, whose outline lies on the strongest gradient (two-pixel ring, whole structure) must point
   the same way as the model's, else that correction is refused. Held out (CTChest4's lungs, a Slicer-made
   segmentation), LiteMedSAM's outline lies ~0 px, not 1 px, outside the reference, and without this vote every
   undegraded lung was shrunk by 1 px. Edges whose best lies at the end of the searched range (2 px) abstain: the
   best may lie beyond, and around the livers and spleens a stronger edge outside the organ draws it there
   whatever the degradation. The grow is searched at the shift taken: on a shifted small structure (the 3-slice
   breast tumour) a shrink of the unshifted outline caught more edges and agreed with a shrink the model read
   from its own bias.
4. The corrected original (shifted, then grown or shrunk slice by slice) keeps the original's shape. Per slice it
   is kept where it agrees with the model's mask (shrunk by the model's bias) at least as well as the original
   does (Dice), else the original's slice stays: a correction the model does not support on a slice is not made.

Measured on degraded references (docs/evaluation.md): it fixes most 2 px dilations, erosions and shifts where the
model sees the structure and leaves undegraded references unchanged; it cannot add slices the original lacks.
:func:`refine_mask` (a 3D mask in, what front ends call) first interpolates linearly a segmentation made on a 2x or
3x coarser grid (blocks of identical voxels). Nothing is written anywhere: the caller previews or writes the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from scipy import ndimage

from .backend import Backend
from .prompts import MASK, Prompt, box_from_mask
from .propagation import walk_cut
from .refine_measure import (edge_best, edge_scores, edge_strengths, grow_mask, outline_displacement,  # noqa: F401
                             shift_mask)

ORIGINAL = "original"
CORRECTED = "corrected"


class RefineCancelled(Exception):
    """The caller's ``should_cancel()`` returned True: nothing was refined."""


@dataclass
class RefineSettings:
    box_margin_px: float = 2.0
    box_margin_frac: float = 0.05
    use_mask_prompt: bool = False  # also give the original's slice as a mask prompt (models that take masks)
    boundary_window_px: float = 5.0
    outlier_px: Optional[float] = 4.0  # the fit's Tukey biweight: residuals past this have no weight (None: plain LS)
    model_bias_px: float = 1.0  # LiteMedSAM's outline outside an undegraded reference's, on average
    min_offset_px: float = 1.0
    max_grow_px: int = 3
    min_shift_px: float = 1.0
    max_shift_px: int = 3
    min_outline_points: int = 20  # fewer outline points near the other outline: nothing is measured, nothing moves
    edge_veto: bool = True  # a correction is taken only when the image's edges ask for one in the same direction
    edge_range_px: int = 2  # grows and shifts searched for the edges' best (at the range's end: the edges abstain)
    smooth_coarse_grid: bool = True  # a segmentation made on a 2x or 3x coarser grid: interpolate it linearly first

    def validate(self) -> None:
        if self.box_margin_px < 0 or self.box_margin_frac < 0:
            raise ValueError("box margins must be >= 0")
        if self.max_shift_px < 0 or self.max_grow_px < 0:
            raise ValueError("max_shift_px and max_grow_px must be >= 0")
        if self.boundary_window_px <= 0 or self.min_offset_px <= 0 or self.min_shift_px <= 0:
            raise ValueError("boundary_window_px, min_offset_px and min_shift_px must be > 0")
        if (self.outlier_px is not None and self.outlier_px <= 0) or self.edge_range_px < 1:
            raise ValueError("outlier_px must be > 0 (or None) and edge_range_px >= 1")


@dataclass
class StructureCheck:
    """The per-structure trust signal: how the original sits against the model's masks."""

    agreement: float  # Dice(original, model) over all slices
    shift_yx: Tuple[int, int] = (0, 0)  # rows, columns: taken
    measured_shift_yx: Tuple[float, float] = (0.0, 0.0)  # the fit's
    offset_px: float = 0.0  # the fit's uniform offset of the model's outline, minus the model's bias
    grow_px: int = 0  # taken
    edge_grow_px: Optional[int] = None  # the grow whose outline lies on the strongest edges (None: not measured)
    edge_shift_yx: Optional[Tuple[Optional[int], Optional[int]]] = None  # the shift whose outline does (each
    # component None where the edges' best lies at the end of the searched range: they abstain)
    vetoed: str = ""  # what the model asked for and the edges refused

    @property
    def trusted(self) -> bool:
        return self.shift_yx == (0, 0) and self.grow_px == 0

    def describe(self) -> str:
        what = "kept as it is" if self.trusted else "corrected: " + ", ".join(
            s for s in (f"shifted by {self.shift_yx[1]:+d} columns, {self.shift_yx[0]:+d} rows"
                        if self.shift_yx != (0, 0) else "",
                        f"grown by {self.grow_px:+d} px" if self.grow_px else "") if s)
        veto = f" ({self.vetoed} refused: the image's edges disagree)" if self.vetoed else ""
        return (f"model agreement {self.agreement:.3f}, outline offset {self.offset_px:+.2f} px beyond the model's "
                f"bias, shift {self.measured_shift_yx[1]:+.2f} columns {self.measured_shift_yx[0]:+.2f} rows: "
                f"{what}{veto}")


@dataclass
class RefineResult:
    masks: Dict[int, np.ndarray]  # slice index -> refined (H, W) bool
    model_masks: Dict[int, np.ndarray] = field(default_factory=dict)
    scores: Dict[int, float] = field(default_factory=dict)
    choice: Dict[int, str] = field(default_factory=dict)  # slice index -> ORIGINAL | CORRECTED
    check: Optional[StructureCheck] = None
    coarse_grid: Optional[Tuple[Tuple[int, int], ...]] = None  # per axis (factor, phase), set by refine_mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def prompt_box(mask: np.ndarray, settings: RefineSettings) -> Optional[np.ndarray]:
    """The box a slice is prompted with: the mask's extent grown by ``box_margin_px`` + ``box_margin_frac``."""
    box = box_from_mask(mask, settings.box_margin_px)
    if box is None:
        return None
    h, w = mask.shape
    dx = (box[2] - box[0] + 1) * settings.box_margin_frac
    dy = (box[3] - box[1] + 1) * settings.box_margin_frac
    return np.clip(box + np.array([-dx, -dy, dx, dy]), 0, [w - 1, h - 1, w - 1, h - 1])


def _agreement(original: Dict[int, np.ndarray], model: Dict[int, np.ndarray]) -> float:
    inter = total = 0
    for i, orig in original.items():
        mod = model.get(i, np.zeros_like(orig))
        inter += int(np.logical_and(orig, mod).sum())
        total += int(orig.sum()) + int(mod.sum())
    return 1.0 if total == 0 else 2.0 * inter / total


def _whole_px(value: float, minimum: float, most: int) -> int:
    return int(np.clip(np.round(value), -most, most)) if abs(value) >= minimum else 0


def check_structure(original: Dict[int, np.ndarray], model: Dict[int, np.ndarray],
                    settings: Optional[RefineSettings] = None,
                    edges: Optional[Dict[int, np.ndarray]] = None) -> StructureCheck:
    """Measure, over the whole structure, how the original sits against the model's masks; decide the shift and
    the grow to take (see the module docstring). With ``edges`` (:func:`edge_strengths` of the slices), a grow or a
    shift component is taken only when the image's edges ask for one in the same direction."""
    s = settings or RefineSettings()
    grow, shift_y, shift_x, points = outline_displacement(original, model, s.boundary_window_px, s.outlier_px)
    if points < s.min_outline_points:  # the model found (next to) nothing near the original: no measurement
        return StructureCheck(_agreement(original, model), (0, 0), (shift_y, shift_x), 0.0, 0)
    offset = grow - s.model_bias_px
    shift = (_whole_px(shift_y, s.min_shift_px, s.max_shift_px), _whole_px(shift_x, s.min_shift_px, s.max_shift_px))
    grow_px = _whole_px(offset, s.min_offset_px, s.max_grow_px)
    check = StructureCheck(_agreement(original, model), shift, (shift_y, shift_x), offset, grow_px)
    if edges is not None and not check.trusted:
        scores = edge_scores(original, edges, s.edge_range_px)

        def refused(value, edge):  # the edges vote against: they place the outline, and not on the model's side
            return value != 0 and edge is not None and np.sign(edge) != np.sign(value)

        vetoed = []
        _, edge_shift = edge_best(scores, grow=0)  # the shift: searched at grow 0
        kept = tuple(0 if refused(v, e) else v for v, e in zip(shift, edge_shift))
        if kept != shift:
            vetoed.append(f"shift {shift[1]:+d} columns {shift[0]:+d} rows")
            check.shift_yx = kept
        edge_grow, _ = edge_best(scores, shift=kept)
        check.edge_grow_px, check.edge_shift_yx = edge_grow, edge_shift
        if refused(grow_px, edge_grow):
            vetoed.append(f"grow {grow_px:+d} px")
            check.grow_px = 0
        check.vetoed = ", ".join(vetoed)
    return check


def _corrected(orig: np.ndarray, shift_yx, grow_px: int) -> np.ndarray:
    return grow_mask(shift_mask(orig, *shift_yx), grow_px)


def choose_slices(original: Dict[int, np.ndarray], model: Dict[int, np.ndarray], check: StructureCheck,
                  settings: Optional[RefineSettings] = None):
    """Per slice, the corrected original where it agrees with the model's mask (less the model's bias) at least as
    well as the original does, else the original. Returns (masks, choice)."""
    s = settings or RefineSettings()
    unbias = -int(round(s.model_bias_px))
    masks, choice = {}, {}
    for i, orig in original.items():
        mod = model.get(i)
        corrected = orig if check.trusted else _corrected(orig, check.shift_yx, check.grow_px)
        if check.trusted or mod is None or not mod.any() or not corrected.any():
            masks[i], choice[i] = orig, ORIGINAL
            continue
        judge = grow_mask(mod, unbias)
        if dice(corrected, judge) >= dice(orig, judge):
            masks[i], choice[i] = corrected, CORRECTED
        else:
            masks[i], choice[i] = orig, ORIGINAL
    return masks, choice


def model_masks(backend: Backend, get_slice: Callable[[int], np.ndarray], original: Dict[int, np.ndarray],
                settings: Optional[RefineSettings] = None,
                progress: Optional[Callable[[int, int], None]] = None,
                should_cancel: Optional[Callable[[], bool]] = None):
    """The model's mask and score on each non-empty slice of ``original``, prompted from the original's slice,
    cut at the model's own threshold whatever the backend's rule: a measurement, and ``model_bias_px`` was fit on
    masks cut there (the "dice" rule's are larger)."""
    s = settings or RefineSettings()
    cut = walk_cut(backend)
    use_mask = s.use_mask_prompt and MASK in backend.prompt_kinds()
    masks, scores = {}, {}
    indices = [i for i in sorted(original) if original[i].any()]
    for n, i in enumerate(indices, 1):
        if should_cancel is not None and should_cancel():
            raise RefineCancelled(f"refinement cancelled after {n - 1} of {len(indices)} slices")
        prompt = Prompt(box_xy=prompt_box(original[i], s), mask=original[i] if use_mask else None)
        pred = backend.segment(get_slice(i), prompt, multimask=False, **cut)
        masks[i], scores[i] = pred.best.astype(bool), pred.best_score
        if progress is not None:
            progress(n, len(indices))
    return masks, scores


def refine_structure(backend: Backend, get_slice: Callable[[int], np.ndarray], original: Dict[int, np.ndarray],
                     settings: Optional[RefineSettings] = None,
                     progress: Optional[Callable[[int, int], None]] = None,
                     should_cancel: Optional[Callable[[], bool]] = None) -> RefineResult:
    """Refine one structure given as ``original`` (slice index -> (H, W) bool mask; slices without the structure
    may be left out). ``get_slice(i)`` returns slice ``i`` as the (H, W, 3) uint8 picture the model sees."""
    s = settings or RefineSettings()
    s.validate()
    original = {int(i): np.asarray(m).astype(bool) for i, m in original.items()}
    if not any(m.any() for m in original.values()):
        raise ValueError("the segmentation to refine is empty: nothing to prompt the model with")
    model, scores = model_masks(backend, get_slice, original, s, progress, should_cancel)
    edges = edge_strengths({i: get_slice(i) for i in model}) if s.edge_veto else None
    check = check_structure(original, model, s, edges)
    masks, choice = choose_slices(original, model, check, s)
    return RefineResult(masks, model, scores, choice, check)


# ---- a segmentation made on a coarser grid ------------------------------------------------------------------------
def _block_phase(planes: np.ndarray, factor: int) -> Optional[int]:
    """The phase p (0..factor-1) such that ``planes`` (along axis 0) come in runs of ``factor`` identical planes
    starting at p (shorter runs at both ends), or None."""
    n = planes.shape[0]
    if n < 2 * factor:
        return None
    same = [np.array_equal(planes[i], planes[i + 1]) for i in range(n - 1)]
    for p in range(factor):
        breaks = [i for i in range(n - 1) if (i + 1 - p) % factor == 0]  # between i and i + 1 a new block starts
        inside = [i for i in range(n - 1) if (i + 1 - p) % factor != 0]
        if all(same[i] for i in inside) and not all(same[i] for i in breaks):
            return p
    return None


def coarse_grid(mask: np.ndarray, factors=(3, 2)) -> Tuple[Tuple[int, int], ...]:
    """Per axis of a 3D mask, (factor, phase) when the mask is made of blocks ``factor`` voxels long along it (a
    segmentation made on a coarser grid and resampled to this one by nearest neighbour, as many tools do), else
    (1, 0). A mask whose planes are all the same along an axis counts as not coarse there."""
    out = []
    for axis in range(mask.ndim):
        planes = np.moveaxis(mask, axis, 0)
        found = (1, 0)
        for f in factors:
            p = _block_phase(planes, f)
            if p is not None:
                found = (f, p)
                break
        out.append(found)
    return tuple(out)


def smooth_coarse(mask: np.ndarray, grid: Tuple[Tuple[int, int], ...]) -> np.ndarray:
    """``mask`` made on the coarser ``grid`` (see :func:`coarse_grid`), interpolated linearly to this grid (each
    coarse voxel's value at its block's centre) and thresholded at 0.5."""
    if all(f == 1 for f, _ in grid):
        return mask.copy()
    index = []
    coords = []
    for n, (f, p) in zip(mask.shape, grid):
        starts = ([0] if p > 0 else []) + list(range(p, n, f))
        index.append(np.array(starts))
        offset = 1 if p > 0 else 0
        coords.append((np.arange(n) - p - (f - 1) / 2.0) / f + offset)
    coarse = mask[np.ix_(*index)].astype(np.float32)
    grids = np.meshgrid(*coords, indexing="ij")
    return ndimage.map_coordinates(coarse, grids, order=1, mode="nearest") >= 0.5


def refine_mask(backend: Backend, get_slice: Callable[[int], np.ndarray], mask: np.ndarray, np_axis: int,
                settings: Optional[RefineSettings] = None,
                progress: Optional[Callable[[int, int], None]] = None,
                should_cancel: Optional[Callable[[], bool]] = None) -> Tuple[np.ndarray, RefineResult]:
    """Refine one structure given as a 3D bool mask (slices along ``np_axis``): a segmentation made on a coarser
    grid is first interpolated linearly (``smooth_coarse_grid``), then :func:`refine_structure`. Returns (the
    refined 3D mask, the result). This is what a front end calls (e.g. the effect's "Refine selected segment")."""
    s = settings or RefineSettings()
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 3:
        raise ValueError(f"refine_mask needs a 3D mask, got shape {mask.shape}")
    grid = coarse_grid(mask) if s.smooth_coarse_grid else ((1, 0),) * 3
    start = smooth_coarse(mask, grid)
    slices = np.moveaxis(start, np_axis, 0)
    original = {i: slices[i] for i in range(slices.shape[0]) if slices[i].any()}
    result = refine_structure(backend, get_slice, original, s, progress, should_cancel)
    result.coarse_grid = grid
    out = np.zeros_like(slices)
    for i, m in result.masks.items():
        out[i] = m
    return np.moveaxis(out, 0, np_axis), result
