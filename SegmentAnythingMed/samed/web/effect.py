"""The "Segment Anything" effect for trame-slicer's segment editor: clicks and a dragged box in a slice view.

Modelled on trame-slicer 2.0.0's islands effect (segmentation/segmentation_islands_pipeline.py): a
``SegmentationEffectPipeline`` per slice view receives the view's interaction events
(``vtkMRMLInteractionEventData``: display position, world RAS, modifiers) and hands them to the Slicer effect's own
gesture rules (``SegmentAnythingMedLib.gestures.SliceGestures``: left click = include point, ctrl + left click or
right click = exclude point, left drag = box; shift / alt are left to the view). Only the press and release
positions decide: a browser coalesces the mouse moves of a drag.
"""
from __future__ import annotations

from typing import Callable, Optional

from slicer import vtkMRMLInteractionEventData, vtkMRMLSliceNode
from trame_slicer.segmentation import SegmentationEffect, SegmentationEffectPipeline
from vtkmodules.vtkCommonCore import vtkCommand
from vtkmodules.vtkInteractionWidgets import vtkEvent

from SegmentAnythingMedLib.gestures import SliceGestures

# on_prompt(action: gestures.PromptAction, slice_node)
PromptCallback = Callable[[object, object], None]
BUTTON_EVENTS = {int(vtkCommand.LeftButtonPressEvent), int(vtkCommand.LeftButtonDoubleClickEvent),
                 int(vtkCommand.LeftButtonReleaseEvent), int(vtkCommand.RightButtonPressEvent),
                 int(vtkCommand.RightButtonDoubleClickEvent), int(vtkCommand.RightButtonReleaseEvent)}


class SegmentAnythingEffect(SegmentationEffect):
    def __init__(self) -> None:
        super().__init__()
        self.on_prompt: Optional[PromptCallback] = None

    def _create_pipeline(self, view_node, _parameter):
        return SegmentAnythingPipeline() if isinstance(view_node, vtkMRMLSliceNode) else None

    def prompted(self, action, slice_node) -> None:
        if self.is_active and self.on_prompt is not None:
            self.on_prompt(action, slice_node)


class SegmentAnythingPipeline(SegmentationEffectPipeline[SegmentAnythingEffect]):
    def __init__(self) -> None:
        super().__init__()
        self._gestures = SliceGestures()

    def CanProcessInteractionEvent(self, event_data: vtkMRMLInteractionEventData) -> tuple:
        kind = event_data.GetType()
        wanted = kind in BUTTON_EVENTS or (kind == int(vtkCommand.MouseMoveEvent) and self._gestures.active)
        return bool(self.IsActive() and wanted), 0

    def ProcessInteractionEvent(self, event_data: vtkMRMLInteractionEventData) -> bool:
        modifiers = event_data.GetModifiers()
        abort, action = self._gestures.process(
            event_data.GetType(), tuple(event_data.GetDisplayPosition()),
            lambda: tuple(event_data.GetWorldPosition()), control=bool(modifiers & vtkEvent.ControlModifier),
            other_modifier=bool(modifiers & (vtkEvent.ShiftModifier | vtkEvent.AltModifier)))
        if action is not None:
            view = self._view
            self._effect.prompted(action, view.get_view_node() if view is not None else self.GetViewNode())
        return bool(abort)
