"""Mouse gestures in a slice view -> prompt actions, decided without Qt.

- left click: include point; ctrl + left click: exclude point;
- left drag (further than ``drag_px`` display pixels): a box from press to release;
- right click (press and release at the same place): exclude point. A right drag stays Slicer's zoom, and a plain
  right click is taken by the effect (instead of the view's context menu).

Each handler returns ``(abort, action)``: ``abort`` tells Slicer whether the effect consumed the event, ``action``
is None or a :class:`PromptAction` for the effect to run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

POINT, BOX = "point", "box"


@dataclass(frozen=True)
class PromptAction:
    kind: str  # point / box
    ras: Tuple[Tuple[float, float, float], ...]  # one point, or the box's two corners
    include: bool = True


class SliceGestures:
    def __init__(self, drag_px: float = 4.0):
        self.drag_px = drag_px
        self._left: Optional[Tuple[Tuple[float, float], Tuple[float, float, float], bool]] = None
        self._right: Optional[Tuple[float, float]] = None
        self.dragging = False
        self.current_xy: Optional[Tuple[float, float]] = None

    @property
    def active(self) -> bool:
        return self._left is not None

    def press_xy(self) -> Optional[Tuple[float, float]]:
        return self._left[0] if self._left is not None else None

    def _moved(self, start: Sequence[float], xy: Sequence[float]) -> bool:
        return float(np.hypot(xy[0] - start[0], xy[1] - start[1])) > self.drag_px

    def left_press(self, xy, ras, control: bool = False, other_modifier: bool = False):
        if other_modifier:  # shift / alt: Slicer's own meaning (e.g. shift moves the crosshair)
            return False, None
        self._left = (tuple(xy), tuple(float(v) for v in ras), bool(control))
        self.dragging = False
        self.current_xy = tuple(xy)
        return True, None

    def move(self, xy, ras=None):
        if self._left is None:
            return False, None
        self.current_xy = tuple(xy)
        if not self.dragging and self._moved(self._left[0], xy):
            self.dragging = True
        return True, None

    def left_release(self, xy, ras):
        if self._left is None:
            return False, None
        start_xy, start_ras, control = self._left
        self._left = None
        dragging = self.dragging or self._moved(start_xy, xy)
        self.dragging = False
        self.current_xy = None
        if dragging:
            return True, PromptAction(BOX, (start_ras, tuple(float(v) for v in ras)))
        return True, PromptAction(POINT, (start_ras,), include=not control)

    def right_press(self, xy, any_modifier: bool = False):
        self._right = None if any_modifier else tuple(xy)
        return False, None  # let Slicer start its zoom; the release decides

    def right_release(self, xy, ras):
        start, self._right = self._right, None
        if start is None or self._moved(start, xy):
            return False, None
        return True, PromptAction(POINT, (tuple(float(v) for v in ras),), include=False)

    def cancel(self) -> None:
        self._left = None
        self._right = None
        self.dragging = False
        self.current_xy = None
