"""The preview: a result shown in the views before Apply, in a segmentation node of its own.

The user's segmentation is not touched until Apply (see ``segment_writer``). The preview node is hidden from node
selectors, follows the edited segmentation's parent transform, and is removed by :meth:`SegmentPreview.remove`
(Apply or Cancel).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import slicer

from samed.core.geometry import Volume

from .labelmaps import oriented_image_from_mask
from .segment_writer import stack_slices
from .volume_bridge import node_to_world

PREVIEW_ATTRIBUTE = "SegmentAnythingMed.Preview"
PREVIEW_SEGMENT_ID = "SegmentAnythingPreview"
DEFAULT_COLOR = (1.0, 0.85, 0.1)


class SegmentPreview:
    def __init__(self, scene, name: str = "Segment Anything preview"):
        self.scene = scene
        self.name = name
        self.node = None
        self.voxels = 0
        self.slices = []

    @property
    def shown(self) -> bool:
        return self.node is not None

    def _ensure_node(self, color):
        if self.node is not None and self.node.GetScene() is self.scene:
            return self.node
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", self.name)
        node.SetHideFromEditors(True)
        node.SetAttribute(PREVIEW_ATTRIBUTE, "1")
        node.SetSaveWithScene(False)
        node.CreateDefaultDisplayNodes()
        segment_id = node.GetSegmentation().AddEmptySegment(PREVIEW_SEGMENT_ID, "Segment Anything preview",
                                                            list(color))
        assert segment_id == PREVIEW_SEGMENT_ID
        display = node.GetDisplayNode()
        display.SetOpacity2DFill(0.35)
        display.SetOpacity2DOutline(1.0)
        display.SetVisibility2DOutline(True)
        self.node = node
        return node

    def show(self, masks: Dict[int, np.ndarray], np_axis: int, volume: Volume, segmentation_node=None,
             color: Optional[Sequence[float]] = None) -> None:
        """Display per-slice masks (slice index -> (H, W) bool along ``np_axis`` of ``volume``)."""
        node = self._ensure_node(color or DEFAULT_COLOR)
        if color is not None:
            node.GetSegmentation().GetSegment(PREVIEW_SEGMENT_ID).SetColor(*color)
        transform = segmentation_node.GetParentTransformNode() if segmentation_node is not None else None
        node.SetAndObserveTransformNodeID(transform.GetID() if transform is not None else None)
        to_node = np.linalg.inv(node_to_world(node))
        self.slices = sorted(i for i, m in masks.items() if np.any(m))
        if masks:
            slab, offset = stack_slices(masks, np_axis, volume.array.shape)
        else:
            slab, offset = np.zeros((1, 1, 1), np.uint8), (0, 0, 0)
        self.voxels = int(slab.sum())
        labelmap = oriented_image_from_mask(slab, to_node @ volume.ijk_to_ras, offset)
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            labelmap, node, PREVIEW_SEGMENT_ID, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)

    def remove(self) -> None:
        if self.node is not None and self.node.GetScene() is not None:
            self.scene.RemoveNode(self.node)
        self.node = None
        self.voxels = 0
        self.slices = []


def segment_color(segmentation_node, segment_id: str) -> Optional[Sequence[float]]:
    """The colour of a segment (for the preview to match the segment it will be applied to)."""
    if segmentation_node is None or not segment_id:
        return None
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    return tuple(segment.GetColor()) if segment is not None else None
