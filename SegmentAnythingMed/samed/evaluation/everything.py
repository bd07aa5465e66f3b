""""Everything" mode: a grid of points over the picture, each decoded on its own; per class, the generated mask
that best matches the reference (the study's evaluation of SAM's automatic mode).

A simplified automatic mask generator: a ``grid`` x ``grid`` lattice of single include points (cell centres),
three candidates each, candidates kept if their predicted IoU is at least ``min_score`` (0.88, SAM's
``pred_iou_thresh``). No crops, no stability filter and no non-maximum suppression: suppression only removes
masks, so it can never raise a best match. Needs a point-taking model; box-only models (LiteMedSAM, MedSAM)
report it as not supported: a grid of boxes would impose the object's scale and position, and its best match
would measure the box modes again rather than the automatic mode.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ..core.backend import Backend, EmbeddingHandle
from ..core.prompts import Prompt
from .simulate import Outcome

DEFAULT_GRID = 16
MIN_SCORE = 0.88


def grid_points(shape_hw, grid: int) -> np.ndarray:
    """(grid * grid, 2) x, y cell centres of a regular lattice over a picture of ``shape_hw``."""
    h, w = int(shape_hw[0]), int(shape_hw[1])
    xs = (np.arange(grid) + 0.5) * w / grid - 0.5
    ys = (np.arange(grid) + 0.5) * h / grid - 0.5
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def best_matches(backend: Backend, handle: EmbeddingHandle, references: Dict[int, np.ndarray],
                 grid: int = DEFAULT_GRID, min_score: float = MIN_SCORE) -> Dict[int, Outcome]:
    """Per class id, the generated mask with the highest IoU with its reference (an empty mask if none)."""
    ids = sorted(references)
    if not ids:
        return {}
    shape = np.asarray(references[ids[0]]).shape
    label = np.zeros(shape, np.int32)  # classes of a label map do not overlap
    for n, c in enumerate(ids, 1):
        label[np.asarray(references[c]).astype(bool)] = n
    ref_sizes = np.bincount(label.ravel(), minlength=len(ids) + 1)
    best_iou = np.full(len(ids) + 1, -1.0)
    best = {c: Outcome("everything", np.zeros(shape, bool), float("nan"), [], grid * grid) for c in ids}
    for x, y in grid_points(shape, grid):
        prompt = Prompt(include_points_xy=[(x, y)])
        pred = backend.decode(handle, prompt, multimask=True)
        for mask, score in zip(pred.masks, pred.scores):
            if score < min_score:
                continue
            size = int(mask.sum())
            inter = np.bincount(label[mask], minlength=len(ids) + 1)
            iou = inter / np.maximum(size + ref_sizes - inter, 1)
            for n in np.flatnonzero(iou > best_iou):
                if n == 0:
                    continue
                best_iou[n] = iou[n]
                best[ids[n - 1]] = Outcome("everything", mask.copy(), float(score), [prompt], grid * grid)
    return best
