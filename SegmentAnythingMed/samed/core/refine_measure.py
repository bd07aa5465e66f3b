"""The measurements :mod:`samed.core.refine` decides from: how far the model's outline lies from the original's
(a robust least-squares fit along the original's normal), and where the image's edges put the outline.

Both are whole-structure measurements: a uniform offset (grow) and a translation (shift) of the original's outline.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
from scipy import ndimage

CROSS = ndimage.generate_binary_structure(2, 1)


def shift_mask(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by ``dy`` rows and ``dx`` columns; what leaves the slice is lost, what enters is empty."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0),
                                                                      max(-dx, 0):w - max(dx, 0)]
    return out


def grow_mask(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` dilated (``px`` > 0) or eroded (< 0) by ``|px|`` pixels in the slice (4-connected steps)."""
    if px == 0 or not mask.any():
        return mask.copy()
    op = ndimage.binary_dilation if px > 0 else ndimage.binary_erosion
    return op(mask, CROSS, iterations=abs(px))


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to ``mask``'s outline: positive outside, negative inside (pixels)."""
    return ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)


def outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, CROSS)


def outline_points(original: Dict[int, np.ndarray], model: Dict[int, np.ndarray], window_px: float):
    """Rows ``(1, n_y, n_x)`` (the original's outward normal) and displacements ``d`` (positive where the model
    reaches beyond the original) at the points of both outlines, on every slice, no farther than ``window_px``
    from the other outline."""
    rows, offsets = [], []
    for i, orig in original.items():
        mod = model.get(i)
        if mod is None or not orig.any() or not mod.any():
            continue
        sd_orig = signed_distance(orig)
        normal_y, normal_x = np.gradient(ndimage.gaussian_filter(sd_orig, 1.0))
        mod_outline, orig_outline = outline(mod), outline(orig)
        for points, d in ((mod_outline, sd_orig[mod_outline]), (orig_outline, -signed_distance(mod)[orig_outline])):
            near = np.abs(d) <= window_px
            ny, nx = normal_y[points][near], normal_x[points][near]
            norm = np.hypot(ny, nx) + 1e-9
            rows.append(np.stack([np.ones(int(near.sum())), ny / norm, nx / norm], axis=1))
            offsets.append(d[near])
    if not rows:
        return np.zeros((0, 3)), np.zeros(0)
    return np.concatenate(rows), np.concatenate(offsets)


def outline_displacement(original: Dict[int, np.ndarray], model: Dict[int, np.ndarray], window_px: float,
                         outlier_px: Optional[float] = 4.0) -> Tuple[float, float, float, int]:
    """How far the model's outline lies from the original's, along the original's outward normal: the fit
    ``d = grow + shift_y * n_y + shift_x * n_x`` over the points of :func:`outline_points` (a uniformly larger model
    gives ``grow`` > 0, a model moved by (dy, dx) gives ``shift`` = (dy, dx)). The fit is least squares, then
    (``outlier_px`` not None) Tukey's biweight: a point whose residual reaches ``outlier_px`` has no weight, so the
    side of an outline where the model leaks into a neighbour or misses a part, or a slice where it outlines
    another structure, does not pull the offset of the rest. Returns (grow, shift_y, shift_x, number of points)."""
    x, d = outline_points(original, model, window_px)
    n = len(d)
    if n < 3:
        return 0.0, 0.0, 0.0, n
    coef = np.linalg.lstsq(x, d, rcond=None)[0]
    for _ in range(50 if outlier_px else 0):
        r = (d - x @ coef) / outlier_px
        w = np.sqrt(np.where(np.abs(r) < 1, (1 - r ** 2) ** 2, 0.0))
        if np.count_nonzero(w) < 3:
            break
        new = np.linalg.lstsq(x * w[:, None], d * w, rcond=None)[0]
        done = np.abs(new - coef).max() < 1e-3
        coef = new
        if done:
            break
    return float(coef[0]), float(coef[1]), float(coef[2]), n


def edge_strengths(pictures: Dict[int, np.ndarray], sigma: float = 1.0) -> Dict[int, np.ndarray]:
    """Gradient magnitude (Gaussian, ``sigma`` px) of each slice's picture (its first channel)."""
    return {i: ndimage.gaussian_gradient_magnitude(np.asarray(p)[..., 0].astype(np.float32), sigma)
            for i, p in pictures.items()}


def edge_scores(original: Dict[int, np.ndarray], edges: Dict[int, np.ndarray], most_px: int = 2):
    """{(grow, shift_y, shift_x): the mean edge strength on the two pixel rings either side of the original's
    outline so moved}, each in -most_px..most_px, over the whole structure."""
    k = most_px
    scores = {}
    for g in range(-k, k + 1):
        total, n = np.zeros((2 * k + 1, 2 * k + 1)), 0
        for i, m in original.items():
            moved = grow_mask(m, g)
            if i not in edges or not moved.any():
                continue
            ring = (moved & ~ndimage.binary_erosion(moved, CROSS)) | (ndimage.binary_dilation(moved, CROSS) & ~moved)
            ys, xs = np.nonzero(ring)
            padded = np.pad(edges[i], k)
            for dy in range(-k, k + 1):
                total[dy + k] += [padded[ys + dy + k, xs + dx + k].sum() for dx in range(-k, k + 1)]
            n += len(ys)
        for dy in range(-k, k + 1):
            for dx in range(-k, k + 1):
                scores[(g, dy, dx)] = total[dy + k, dx + k] / n if n else 0.0
    return scores


def edge_best(scores, grow=None, shift=None):
    """The best of :func:`edge_scores` with ``grow`` or ``shift`` held (the search that decides the other), as
    (grow, (shift_y, shift_x)); a value at the end of the searched range is None: the edges' best
    may lie beyond it, they do not say where the outline is (e.g. a stronger edge outside the organ: the liver's
    best grow is the largest searched, whatever its degradation)."""
    k = max(t[0] for t in scores)
    held = [t for t in scores if (grow is None or t[0] == int(np.clip(grow, -k, k)))
            and (shift is None or t[1:] == tuple(int(np.clip(v, -k, k)) for v in shift))]
    best = max(held, key=lambda t: (scores[t], -abs(t[0]) - abs(t[1]) - abs(t[2])))
    inside = [v if abs(v) < k else None for v in best]
    return inside[0], (inside[1], inside[2])
