"""The "Segment Anything" effect for trame-slicer's segment editor: a box dragged in a slice view.

Modelled on trame-slicer 2.0.0's islands effect (segmentation/segmentation_islands_pipeline.py): a
``SegmentationEffectPipeline`` per slice view takes the left button's press and release
(``vtkMRMLInteractionEventData.GetWorldPosition()``, world RAS) and hands the two corners to the effect. Mouse moves
are not needed: only the press and release positions define the box (a browser coalesces the moves of a drag).
"""
from __future__ import annotations

from typing import Callable, Optional

from slicer import vtkMRMLInteractionEventData, vtkMRMLSliceNode
from trame_slicer.segmentation import SegmentationEffect, SegmentationEffectPipeline
from vtkmodules.vtkCommonCore import vtkCommand

# on_box(ras_a, ras_b, slice_node)
BoxCallback = Callable[[tuple, tuple, object], None]


class SegmentAnythingEffect(SegmentationEffect):
    def __init__(self) -> None:
        super().__init__()
        self.on_box: Optional[BoxCallback] = None

    def _create_pipeline(self, view_node, _parameter):
        return SegmentAnythingPipeline() if isinstance(view_node, vtkMRMLSliceNode) else None

    def box_dragged(self, ras_a, ras_b, slice_node) -> None:
        if self.is_active and self.on_box is not None:
            self.on_box(tuple(ras_a), tuple(ras_b), slice_node)


class SegmentAnythingPipeline(SegmentationEffectPipeline[SegmentAnythingEffect]):
    def __init__(self) -> None:
        super().__init__()
        self._press_ras = None
        self._events = {int(vtkCommand.LeftButtonPressEvent): self._press,
                        int(vtkCommand.LeftButtonReleaseEvent): self._release}

    def CanProcessInteractionEvent(self, event_data: vtkMRMLInteractionEventData) -> tuple:
        return bool(self.IsActive() and event_data.GetType() in self._events), 0

    def ProcessInteractionEvent(self, event_data: vtkMRMLInteractionEventData) -> bool:
        handler = self._events.get(event_data.GetType())
        return handler(event_data) if handler is not None else False

    def _press(self, event_data) -> bool:
        self._press_ras = tuple(event_data.GetWorldPosition())
        return True

    def _release(self, event_data) -> bool:
        if self._press_ras is None:
            return False
        ras_a, self._press_ras = self._press_ras, None
        view = self._view
        slice_node = view.get_view_node() if view is not None else self.GetViewNode()
        self._effect.box_dragged(ras_a, tuple(event_data.GetWorldPosition()), slice_node)
        return True
