"""Where a simulated user clicks: regions of a reference mask and points far from a region's boundary.

Rules (the seed study, Mazurowski et al. 2023, and its public code):

- Regions are the connected components of a binary mask with 8-connectivity (``scipy.ndimage.label`` with a
  3x3 structure), ordered by size, largest first (equal sizes: by label order, i.e. raster order of their first
  pixel).
- A region's point is the pixel farthest from the region's boundary: the maximum of the euclidean distance
  transform of the region. The mask is padded with one background pixel on every side before the transform
  (as the study's code does), so the picture's border counts as boundary: a region cut by the border gets its
  point inside, not on the border. Ties (several pixels at the maximum) are broken at random with the
  caller's seeded ``numpy.random.Generator``.
- The same rule places Algorithm 1's correction points, on the error region (prediction XOR reference).

Points are returned as ``(x, y)`` = (column, row) pixel indices, the ``xy`` convention of ``core.prompts``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def regions(mask: np.ndarray) -> List[np.ndarray]:
    """Connected components (8-connectivity) of a 2D mask as boolean masks, largest first."""
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise ValueError(f"regions() needs a 2D mask, got shape {m.shape}")
    labels, n = ndimage.label(m, structure=EIGHT_CONNECTED)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = sorted(range(n), key=lambda i: (-int(sizes[i]), i))  # stable: equal sizes keep label order
    return [labels == (i + 1) for i in order]


def distance_to_boundary(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every mask pixel to the nearest pixel outside the mask, the picture's border
    counting as outside (the mask is padded by one background pixel); 0 outside the mask."""
    m = np.asarray(mask).astype(bool)
    padded = np.pad(m, 1, mode="constant", constant_values=False)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def _pick(candidates_rc: np.ndarray, rng: np.random.Generator) -> Tuple[float, float]:
    """One (row, col) of ``candidates_rc`` (N, 2) chosen at random -> (x, y)."""
    r, c = candidates_rc[int(rng.integers(len(candidates_rc)))] if len(candidates_rc) > 1 else candidates_rc[0]
    return float(c), float(r)


def farthest_point(mask: np.ndarray, rng: np.random.Generator) -> Optional[Tuple[float, float]]:
    """(x, y) of a pixel of ``mask`` farthest from its boundary (ties at random); None for an empty mask."""
    dist = distance_to_boundary(mask)
    top = dist.max() if dist.size else 0.0
    if top <= 0:
        return None
    return _pick(np.argwhere(dist == top), rng)


def offset_point(mask: np.ndarray, offset: float, rng: np.random.Generator) -> Optional[Tuple[float, float]]:
    """A point moved away from the centre of ``mask`` (the placement analysis).

    ``offset`` in [0, 1): 0 is :func:`farthest_point`; otherwise a random pixel (seeded) among those whose
    distance to the boundary is within 0.5 px of ``max(1, (1 - offset) * d_max)``, where ``d_max`` is the
    largest distance in the mask. ``offset`` 0.5 is halfway between the centre and the edge; near 1 is the edge.
    """
    if not 0 <= offset < 1:
        raise ValueError(f"a point offset must be within [0, 1), got {offset}")
    if offset == 0:
        return farthest_point(mask, rng)
    dist = distance_to_boundary(mask)
    top = dist.max() if dist.size else 0.0
    if top <= 0:
        return None
    target = max(1.0, (1.0 - offset) * top)
    gap = np.where(dist > 0, np.abs(dist - target), np.inf)
    near = np.argwhere(gap <= max(0.5, float(gap.min())))
    return _pick(near, rng)


def correction_point(prediction: np.ndarray, reference: np.ndarray,
                     rng: np.random.Generator) -> Optional[Tuple[float, float, bool]]:
    """Algorithm 1's next click: ``(x, y, include)`` or None when the prediction equals the reference.

    The error region is prediction XOR reference; the click is its pixel farthest from the error region's
    boundary (padded: the picture's border is boundary; ties at random). It is an include point if it lies in
    the missed part (in the reference), an exclude point if it lies in the false-positive part.
    """
    pred = np.asarray(prediction).astype(bool)
    ref = np.asarray(reference).astype(bool)
    point = farthest_point(pred ^ ref, rng)
    if point is None:
        return None
    x, y = point
    return x, y, bool(ref[int(y), int(x)])
