"""The self-test's scenario, shared by Slicer's self-test (SegmentAnythingMedTest) and pytest: CTChest4 and its
reference segmentation, an ROI around a structure on its middle slice, the effect's Segment from markups, Propagate
and Apply, then Dice against the reference on the ROI's slices. No Qt here: the caller activates the effect."""
import numpy as np

from .markup_bridge import box_around_slice_mask, place_roi
from .module_logic import ModuleLogic
from .segment_writer import segment_mask
from .volume_bridge import slice_normal_ras, slice_position_ras, volume_from_node


def run_ctchest_scenario(scene, volumeNode, referenceNode, editorNode, sliceNode, activateEffect,
                         segmentName="right lung", depth=3, intensityMode="minmax"):
    """The self-test's steps (also run by pytest with a faked Slicer application): returns Dice on the ROI's slices.

    Min-max intensities: on these lungs LiteMedSAM does better with them (seed slice Dice 0.89) than with the CT
    soft-tissue window that "auto" picks (0.78)."""
    from samed.core.metrics import dice  # scipy: imported when the test runs, not at every Slicer start

    volume = volume_from_node(volumeNode)
    segmentation = referenceNode.GetSegmentation()
    referenceId = next(segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())
                       if segmentation.GetNthSegment(n).GetName() == segmentName)
    reference = segment_mask(referenceNode, referenceId, volume)
    ks = np.flatnonzero(reference.any(axis=(1, 2)))
    middle = int((ks[0] + ks[-1]) // 2)
    first, last = middle - depth, middle + depth
    roiNode = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "around " + segmentName)
    place_roi(roiNode, *box_around_slice_mask(volume, reference, 0, middle, first, last))

    segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segment Anything result")
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", segmentName)
    editorNode.SetAndObserveSegmentationNode(segmentationNode)
    editorNode.SetAndObserveSourceVolumeNode(volumeNode)
    editorNode.SetSelectedSegmentID(segmentId)
    effect = activateEffect()
    effect.scriptedEffect.setParameter("IntensityMode", intensityMode)
    effect.updateGUIFromMRML()

    normal = slice_normal_ras(volume, 0)
    sliceNode.SetSliceToRASByNTP(*normal, *([1, 0, 0] if abs(normal[0]) < 0.9 else [0, 1, 0]),
                                 *slice_position_ras(volume, 0, middle), 0)
    ModuleLogic.segmentWithEffect(effect, sliceNode, roiNode)
    result = segment_mask(segmentationNode, segmentId, volume)
    return float(dice(result[first:last + 1], reference[first:last + 1]))
