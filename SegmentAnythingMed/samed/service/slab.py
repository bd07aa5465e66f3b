"""Propagation over a slab: only the slices a walk can reach are sent to (and kept by) the service.

Torch-free and FastAPI-free: the client uses it to cut the slab it uploads, the service's job worker and the
client's in-process job run :func:`propagate_slab` on it, so local and remote jobs walk identically.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from ..core.propagation import DIRECTIONS, PropagationResult, PropagationSettings, propagate


def needed_slab(n_slices: int, seed_index: int, settings: Optional[PropagationSettings] = None,
                directions: Sequence[str] = ("up", "down")) -> Tuple[int, int]:
    """First and last slice index (inclusive) that a walk from ``seed_index`` may visit."""
    s = settings or PropagationSettings()
    unknown = set(directions) - set(DIRECTIONS)
    if unknown or not directions:
        raise ValueError(f"directions must be among {', '.join(DIRECTIONS)}, got {list(directions)}")
    lo, hi = 0, int(n_slices) - 1
    if s.index_range is not None:
        lo, hi = max(lo, int(s.index_range[0])), min(hi, int(s.index_range[1]))
    if s.max_slices is not None:
        lo, hi = max(lo, seed_index - int(s.max_slices)), min(hi, seed_index + int(s.max_slices))
    if "down" not in directions:
        lo = seed_index
    if "up" not in directions:
        hi = seed_index
    if not lo <= seed_index <= hi:
        raise ValueError(f"seed slice {seed_index} is outside the propagation range {lo}..{hi}")
    return lo, hi


def propagate_slab(backend, pictures: np.ndarray, first_index: int, n_slices: int, seed_index: int,
                   seed_mask: np.ndarray, settings: Optional[PropagationSettings] = None,
                   directions: Sequence[str] = ("up", "down"),
                   progress: Optional[Callable[[int, int], None]] = None,
                   should_cancel: Optional[Callable[[], bool]] = None, seed_box=None) -> PropagationResult:
    """:func:`core.propagation.propagate` on ``pictures`` = slices ``first_index`` .. ``first_index + N - 1`` of a
    volume of ``n_slices`` slices (indices in results and stop reasons are the volume's)."""
    s = settings or PropagationSettings()
    last = first_index + len(pictures) - 1
    lo, hi = first_index, last
    if s.index_range is not None:
        lo, hi = max(lo, int(s.index_range[0])), min(hi, int(s.index_range[1]))
    return propagate(backend, lambda i: pictures[i - first_index], n_slices, seed_index, seed_mask,
                     replace(s, index_range=(lo, hi)), directions, progress, should_cancel, seed_box)
