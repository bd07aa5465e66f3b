"""What the options widgets list: nodes of a class, the segments of a segmentation, the labels of a labelmap."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .volume_bridge import array_from_volume_node

NONE_CHOICE = ("(none)", "")


def node_choices(scene, class_name: str, with_none: bool = True) -> List[Tuple[str, str]]:
    """(name, node ID) of the scene's nodes of ``class_name`` that are shown in editors, in scene order."""
    out = [NONE_CHOICE] if with_none else []
    if scene is None:
        return out
    for n in range(scene.GetNumberOfNodesByClass(class_name)):
        node = scene.GetNthNodeByClass(n, class_name)
        if node.GetHideFromEditors():
            continue
        out.append((node.GetName(), node.GetID()))
    return out


def segment_choices(segmentation_node) -> List[Tuple[str, str]]:
    """(segment name, segment ID) of a segmentation node, in its order."""
    if segmentation_node is None:
        return []
    segmentation = segmentation_node.GetSegmentation()
    return [(segmentation.GetNthSegment(n).GetName(), segmentation.GetNthSegmentID(n))
            for n in range(segmentation.GetNumberOfSegments())]


def label_choices(labelmap_node, limit: int = 256) -> List[Tuple[str, str]]:
    """(label text, label value) of the nonzero values in a labelmap volume (at most ``limit``)."""
    if labelmap_node is None or labelmap_node.GetImageData() is None:
        return []
    values = np.unique(array_from_volume_node(labelmap_node, copy=False))
    values = [int(v) for v in values if v != 0][:limit]
    return [(f"label {v}", str(v)) for v in values]
