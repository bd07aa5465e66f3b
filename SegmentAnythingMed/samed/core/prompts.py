"""Prompts on one 2D slice, in slice pixel coordinates ``xy`` (x = column, y = row; see geometry.py).

A :class:`Prompt` holds include points, exclude points, at most one box and optionally a previous mask.
:class:`Prediction` is what every backend returns for a prompt: candidate masks with their scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import FrozenSet, Optional, Sequence, Tuple

import numpy as np

POINT = "point"
BOX = "box"
MASK = "mask"
PROMPT_KINDS = (POINT, BOX, MASK)


class PromptError(ValueError):
    """A prompt that does not fit the slice or the model."""


def _points(values) -> np.ndarray:
    arr = np.asarray(values if values is not None else np.zeros((0, 2)), dtype=float)
    if arr.size == 0:
        return np.zeros((0, 2))
    arr = np.atleast_2d(arr)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise PromptError(f"points must be (N, 2) x, y pairs, got shape {arr.shape}")
    return arr


@dataclass
class Prompt:
    include_points_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    exclude_points_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    box_xy: Optional[np.ndarray] = None  # x0, y0, x1, y1 (pixel indices, inclusive)
    mask: Optional[np.ndarray] = None  # a previous binary mask on this slice (H, W)

    def __post_init__(self):
        self.include_points_xy = _points(self.include_points_xy)
        self.exclude_points_xy = _points(self.exclude_points_xy)
        if self.box_xy is not None:
            box = np.asarray(self.box_xy, dtype=float).reshape(-1)
            if box.shape != (4,):
                raise PromptError(f"a box is 4 numbers x0, y0, x1, y1, got {box.tolist()}")
            x0, y0, x1, y1 = box
            # np.minimum/np.maximum keep a NaN (min/max would drop it, and validate() would pass a NaN box)
            self.box_xy = np.array([np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)])
        if self.mask is not None:
            self.mask = np.asarray(self.mask).astype(bool)

    def kinds(self) -> FrozenSet[str]:
        kinds = set()
        if len(self.include_points_xy) or len(self.exclude_points_xy):
            kinds.add(POINT)
        if self.box_xy is not None:
            kinds.add(BOX)
        if self.mask is not None:
            kinds.add(MASK)
        return frozenset(kinds)

    def is_empty(self) -> bool:
        return not self.kinds()

    def validate(self, shape_hw: Sequence[int]) -> None:
        """Raise :class:`PromptError` unless every coordinate lies inside a slice of ``shape_hw`` (rows, cols)."""
        h, w = int(shape_hw[0]), int(shape_hw[1])
        if self.is_empty():
            raise PromptError("the prompt is empty: give at least one point or a box")
        for name, pts in (("include point", self.include_points_xy), ("exclude point", self.exclude_points_xy)):
            if not np.all(np.isfinite(pts)):
                raise PromptError(f"an {name} is not a finite number")
            for x, y in pts:
                if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
                    raise PromptError(f"{name} ({x:g}, {y:g}) is outside the slice (x 0..{w - 1}, y 0..{h - 1})")
        if self.box_xy is not None:
            x0, y0, x1, y1 = self.box_xy
            if not np.all(np.isfinite(self.box_xy)):
                raise PromptError("the box has a coordinate that is not a finite number")
            if x1 < -0.5 or y1 < -0.5 or x0 > w - 0.5 or y0 > h - 0.5:
                raise PromptError(
                    f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside the slice (x 0..{w - 1}, y 0..{h - 1})")
        if self.mask is not None and tuple(self.mask.shape) != (h, w):
            raise PromptError(f"the mask prompt has shape {self.mask.shape}, the slice is {(h, w)}")

    def clipped(self, shape_hw: Sequence[int]) -> "Prompt":
        """The same prompt with its box clipped to the slice (a box partly outside is allowed)."""
        if self.box_xy is None:
            return self
        h, w = int(shape_hw[0]), int(shape_hw[1])
        box = np.clip(self.box_xy, 0, [w - 1, h - 1, w - 1, h - 1])
        return Prompt(self.include_points_xy, self.exclude_points_xy, box, self.mask)

    def sam_points(self) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(coords (N, 2), labels (N,)) with 1 = include, 0 = exclude, as SAM takes them; (None, None) if none."""
        n_in, n_ex = len(self.include_points_xy), len(self.exclude_points_xy)
        if n_in + n_ex == 0:
            return None, None
        coords = np.concatenate([self.include_points_xy, self.exclude_points_xy]).astype(np.float32)
        labels = np.concatenate([np.ones(n_in), np.zeros(n_ex)]).astype(np.float32)
        return coords, labels


@dataclass
class Prediction:
    """Candidate masks (K, H, W) bool with SAM's predicted-IoU scores (K,), best first.

    ``low_res_logits`` (K, h, w) are the decoder's mask logits before upsampling, usable as a mask prompt.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: Optional[np.ndarray] = None

    def __post_init__(self):
        self.masks = np.asarray(self.masks).astype(bool)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if self.masks.ndim != 3 or len(self.masks) != len(self.scores):
            raise ValueError(f"masks {self.masks.shape} and scores {self.scores.shape} do not match")

    @property
    def best(self) -> np.ndarray:
        return self.masks[int(np.argmax(self.scores))]

    @property
    def best_score(self) -> float:
        return float(np.max(self.scores))

    def sorted(self) -> "Prediction":
        order = np.argsort(-self.scores, kind="stable")
        logits = None if self.low_res_logits is None else self.low_res_logits[order]
        return Prediction(self.masks[order], self.scores[order], logits)


def box_from_mask(mask: np.ndarray, margin: float = 0.0, shape_hw: Optional[Sequence[int]] = None) -> Optional[np.ndarray]:
    """Tight box x0, y0, x1, y1 around a 2D mask's pixels, grown by ``margin`` pixels, clipped to the slice.

    None for an empty mask.
    """
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise PromptError(f"box_from_mask needs a 2D mask, got shape {m.shape}")
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    box = np.array([cols[0] - margin, rows[0] - margin, cols[-1] + margin, rows[-1] + margin], dtype=float)
    h, w = shape_hw if shape_hw is not None else m.shape
    return np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
