"""Markups (RAS points and ROIs, e.g. from Slicer) -> prompts on the slices of a volume.

- A point goes to the slice nearest to it along the slicing axis (its RAS position through the volume's
  RAS -> IJK matrix, any direction matrix), as an include point, or an exclude point when its list is an
  exclude list (name contains "exclude" or "negative").
- One ROI becomes a box on every slice it crosses: the bounding box, in slice pixels, of the ROI's corners.
  Its extent along the slicing axis is returned too: it limits propagation (so an ROI on one slice gives that
  slice only).
- Several ROIs are *key slices* (issue 11): each must lie on one slice (an ROI thinner than a slice, e.g. a flat one
  drawn on a slice: the slice its centres' plane is on, else the slice nearest its middle) and gives its box
  there; ``SlicePrompts.key_slices`` is set and no ROI extent bounds anything (the slices between two keys are
  filled from both, the walk may go beyond the outermost). Refused, as ambiguous: two ROIs on one slice, an ROI
  that spans several slices among several ROIs (a bound or a box on each slice?), and point lists with them.
Points that fall outside the volume raise a :class:`~samed.core.prompts.PromptError` naming the point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .geometry import Volume, ras_to_slice_xy
from .prompts import Prompt, PromptError


@dataclass
class SlicePrompts:
    prompts: Dict[int, Prompt] = field(default_factory=dict)
    roi_range: Optional[Tuple[int, int]] = None  # inclusive slice indices an ROI spans
    key_slices: bool = False  # several ROIs, one box per key slice: fill between them (core.key_slices)

    def indices(self) -> List[int]:
        return sorted(self.prompts)


def _add(prompts: Dict[int, Prompt], index: int, include=None, exclude=None, box=None) -> None:
    p = prompts.get(index) or Prompt()
    inc = p.include_points_xy if include is None else np.vstack([p.include_points_xy, include])
    exc = p.exclude_points_xy if exclude is None else np.vstack([p.exclude_points_xy, exclude])
    prompts[index] = Prompt(inc, exc, box if box is not None else p.box_xy, p.mask)


def roi_box_on_slices(corners_ras: np.ndarray, volume: Volume, np_axis: int) -> Tuple[np.ndarray, int, int]:
    """(box x0, y0, x1, y1 in slice pixels, first slice, last slice) of an ROI given by its 8 RAS corners."""
    xy, pos = ras_to_slice_xy(corners_ras, volume.ijk_to_ras, np_axis)
    n = volume.array.shape[np_axis]
    h, w = [s for a, s in enumerate(volume.array.shape[:3]) if a != np_axis]
    # the slices whose centres lie within the ROI (1e-3 of a slice absorbs float noise at the edges); an ROI
    # thinner than a slice that falls between two centres takes the slice nearest to its middle
    first, last = math.ceil(pos.min() - 1e-3), math.floor(pos.max() + 1e-3)
    if first > last:
        first = last = int(np.floor((pos.min() + pos.max()) / 2 + 0.5))
    first, last = max(0, first), min(n - 1, last)
    box = np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()])
    if first > last or box[2] < -0.5 or box[3] < -0.5 or box[0] > w - 0.5 or box[1] > h - 0.5:
        raise PromptError("the ROI does not overlap the volume: check that it was placed on this volume")
    box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
    return box, int(first), int(last)


def prompts_from_markups(point_lists: Sequence, rois: Sequence, volume: Volume, np_axis: int) -> SlicePrompts:
    """``point_lists``: objects with ``name``, ``points_ras`` (N, 3), ``exclude``; ``rois``: with ``corners_ras()``."""
    out = SlicePrompts()
    n = volume.array.shape[np_axis]
    h, w = [s for a, s in enumerate(volume.array.shape[:3]) if a != np_axis]
    for plist in point_lists:
        pts = np.asarray(plist.points_ras, dtype=float).reshape(-1, 3)
        if not len(pts):
            continue
        xy, pos = ras_to_slice_xy(pts, volume.ijk_to_ras, np_axis)
        for (x, y), p, ras in zip(xy, pos, pts):
            index = int(np.floor(p + 0.5))
            if not (0 <= index < n and -0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
                raise PromptError(
                    f"point ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}) RAS of list {plist.name!r} is outside the "
                    f"volume: check that the markups were placed on this image")
            point = np.array([[x, y]])
            _add(out.prompts, index, exclude=point) if plist.exclude else _add(out.prompts, index, include=point)
    if len(rois) > 1:
        return _key_slice_rois(point_lists, rois, volume, np_axis)
    for roi in rois:
        box, first, last = roi_box_on_slices(np.asarray(roi.corners_ras()), volume, np_axis)
        for index in range(first, last + 1):
            _add(out.prompts, index, box=box)
        lo, hi = (first, last) if out.roi_range is None else (min(first, out.roi_range[0]), max(last, out.roi_range[1]))
        out.roi_range = (lo, hi)
    if not out.prompts:
        raise PromptError("the markups hold no points and no ROI")
    return out


def _key_slice_rois(point_lists: Sequence, rois: Sequence, volume: Volume, np_axis: int) -> SlicePrompts:
    """Several ROIs: one box per key slice (see the module docstring), or a PromptError saying what to change."""
    if any(len(np.asarray(p.points_ras).reshape(-1, 3)) for p in point_lists):
        raise PromptError(f"{len(rois)} ROIs are boxes on key slices: give no point lists with them (points go with "
                          f"a single ROI), or give the points and one ROI in separate runs")
    out, names = SlicePrompts(key_slices=True), {}
    for roi in rois:
        name = getattr(roi, "name", "ROI")
        box, first, last = roi_box_on_slices(np.asarray(roi.corners_ras()), volume, np_axis)
        if first != last:
            raise PromptError(f"ROI {name!r} spans slices {first}..{last}: with several ROIs each is a box on one key "
                              f"slice; make it thinner than a slice (its size across the slices below the slice "
                              f"spacing), or give an ROI that spans slices on its own (its extent then bounds "
                              f"propagation)")
        if first in names:
            raise PromptError(f"ROIs {names[first]!r} and {name!r} both lie on slice {first}: give one box per key "
                              f"slice (remove one, or move it to another slice)")
        names[first] = name
        out.prompts[first] = Prompt(box_xy=box)
    return out
