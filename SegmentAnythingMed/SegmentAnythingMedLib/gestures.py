"""Mouse events in a slice view -> prompt actions, and whether Slicer's own interaction sees each event; no Qt.

- left click: include point; ctrl + left click: exclude point; a double click counts as a second click;
- left drag (further than ``drag_px`` display pixels): a box from press to release;
- right click: exclude point. The effect takes the whole right click, press and release (as Slicer's Draw effect
  does, Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/SegmentEditorDrawEffect.py): ``vtkMRMLSliceIntersectionWidget`` starts its zoom drag on the press and ends it only on the release
  (Libs/MRML/DisplayableManager/vtkMRMLSliceIntersectionWidget.cxx, WidgetEventZoomSliceStart/End), so a press
  passed on with its release taken would leave the view zooming. A right drag does nothing; zoom with the wheel
  or alt + right drag;
- shift / alt (+ any button), or a press over a markups control point or ROI handle: left to Slicer (crosshair,
  pan, zoom, dragging the ROI), press and release alike;
- a double click never reaches Slicer while the effect has the button (Slicer maximizes the view on it:
  vtkMRMLSliceIntersectionWidget, WidgetEventMaximizeView). Qt sends press, release, double click, release
  (VTK's GUISupport/Qt/QVTKInteractorAdapter.cxx): the double click stands for the second press.

:meth:`SliceGestures.process` takes a vtkCommand event id and returns ``(abort, action)``: ``abort`` is what the
effect's ``processInteractionEvents`` returns (True: Slicer's interactor style does not see the event, see
qMRMLSegmentEditorWidget::processEvents), ``action`` is None or a :class:`PromptAction` for the effect to run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk

POINT, BOX = "point", "box"
C = vtk.vtkCommand
LEFT_PRESS = (C.LeftButtonPressEvent, C.LeftButtonDoubleClickEvent)
RIGHT_PRESS = (C.RightButtonPressEvent, C.RightButtonDoubleClickEvent)
HANDLE_COMPONENTS = ("ComponentControlPoint", "ComponentCenterPoint", "ComponentRotationHandle",
                     "ComponentTranslationHandle", "ComponentScaleHandle")  # vtkMRMLMarkupsDisplayNode's


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

    def process(self, event_id: int, xy, ras_of: Callable[[], Sequence[float]], control: bool = False,
                other_modifier: bool = False, on_markups_handle: bool = False):
        """One interactor event (``ras_of()`` gives the event's world position); returns ``(abort, action)``."""
        if event_id in LEFT_PRESS:
            if other_modifier or on_markups_handle:
                return False, None
            return self.left_press(xy, ras_of(), control)
        if event_id == C.MouseMoveEvent:
            return self.move(xy)
        if event_id == C.LeftButtonReleaseEvent:
            return self.left_release(xy, ras_of) if self._left is not None else (False, None)
        if event_id in RIGHT_PRESS:
            return self.right_press(xy, control or other_modifier)
        if event_id == C.RightButtonReleaseEvent:
            return self.right_release(xy, ras_of)
        return False, None

    def left_press(self, xy, ras, control: bool = False):
        self._left = (tuple(xy), tuple(float(v) for v in ras), bool(control))
        self.dragging = False
        self.current_xy = tuple(xy)
        return True, None

    def move(self, xy):
        if self._left is None:
            return False, None
        self.current_xy = tuple(xy)
        if not self.dragging and self._moved(self._left[0], xy):
            self.dragging = True
        return True, None

    def left_release(self, xy, ras_of):
        start_xy, start_ras, control = self._left
        self._left = None
        dragging = self.dragging or self._moved(start_xy, xy)
        self.dragging = False
        self.current_xy = None
        if dragging:
            return True, PromptAction(BOX, (start_ras, tuple(float(v) for v in ras_of())))
        return True, PromptAction(POINT, (start_ras,), include=not control)

    def right_press(self, xy, any_modifier: bool = False):
        if any_modifier:  # alt + right drag zooms, ctrl / shift: Slicer's
            self._right = None
            return False, None
        self._right = tuple(xy)
        return True, None

    def right_release(self, xy, ras_of):
        start, self._right = self._right, None
        if start is None:  # the press went to Slicer: so does its release
            return False, None
        if self._moved(start, xy):
            return True, None
        return True, PromptAction(POINT, (tuple(float(v) for v in ras_of()),), include=False)

    def cancel(self) -> None:
        self._left = None
        self._right = None
        self.dragging = False
        self.current_xy = None


def markups_handle_hovered(scene) -> bool:
    """Whether the mouse is over a markups control point or ROI handle: Slicer's markups widgets mark the hovered part
    as the display node's active component (Modules/Loadable/Markups/VTKWidgets/vtkSlicerMarkupsWidget.cxx), and a
    left press there drags it."""
    if scene is None:
        return False
    handles = [getattr(slicer.vtkMRMLMarkupsDisplayNode, name) for name in HANDLE_COMPONENTS]  # Markups loaded now
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLMarkupsDisplayNode")):
        display = scene.GetNthNodeByClass(n, "vtkMRMLMarkupsDisplayNode")
        if display.GetVisibility() and display.GetActiveComponentType() in handles:
            return True
    return False


def markups_slice_node(scene, last_slice_node=None):
    """The slice view "Segment from markups" prompts in: the one the user last worked in, else Red, else any."""
    if last_slice_node is not None and last_slice_node.GetScene() is scene:
        return last_slice_node
    if scene is None:
        return None
    return scene.GetNodeByID("vtkMRMLSliceNodeRed") or scene.GetFirstNodeByClass("vtkMRMLSliceNode")
