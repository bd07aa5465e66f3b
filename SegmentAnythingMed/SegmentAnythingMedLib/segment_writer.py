"""Masks -> the selected segment, through the Segment Editor's own modification path.

Every write goes ``saveStateForUndo()`` then ``modifySelectedSegmentByLabelmap`` (in Slicer: the effect's
adaptor, which calls ``vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap``), so the editable area (mask mode,
intensity range), the overwrite setting for other segments and undo behave as for Slicer's own effects.

Two targets implement that path:
- :class:`EffectEditTarget`, the effect's ``scriptedEffect`` adaptor, inside Slicer;
- :class:`LogicEditTarget`, a ``vtkSlicerSegmentEditorLogic`` of its own, for scripts and tests.

Apply modes: ``add`` merges the masks into the segment (as painting does); ``replace`` first clears the segment on
the slices that have a mask (only those: a slice between two previewed ones keeps what it had), then adds them (a
corrected or re-propagated range replaces what was there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import slicer

from samed.core.geometry import Volume

from .errors import BridgeError
from .labelmaps import (array_from_oriented_image, geometry_image, is_empty_extent, oriented_image_from_mask,
                        resample_into_geometry, with_world_transform)
from .volume_bridge import node_to_world

APPLY_MODES = ("add", "replace")


def _checked_modifier(labelmap):
    if labelmap is None:
        raise BridgeError("the segmentation has no reference geometry: select a source volume in the Segment "
                          "Editor first")
    return labelmap


class LogicEditTarget:
    """Edits the selected segment of a segment editor node through a ``vtkSlicerSegmentEditorLogic``."""

    def __init__(self, logic):
        self.logic = logic

    @classmethod
    def create(cls, scene, segmentation_node, source_volume_node, segment_id: Optional[str] = None,
               segment_editor_node=None, application_logic=None) -> "LogicEditTarget":
        logic = slicer.vtkSlicerSegmentEditorLogic()
        logic.SetMRMLScene(scene)
        if application_logic is not None:
            logic.SetMRMLApplicationLogic(application_logic)
        node = segment_editor_node or scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        logic.SetSegmentEditorNode(node)
        logic.SetSegmentationNode(segmentation_node)
        logic.SetSourceVolumeNode(source_volume_node)
        if segment_id:
            logic.SetCurrentSegmentID(segment_id)
        return cls(logic)

    def segment_editor_node(self):
        return self.logic.GetSegmentEditorNode()

    def save_state_for_undo(self) -> None:
        self.logic.SaveStateForUndo()

    def can_undo(self) -> bool:
        return bool(self.logic.CanUndo())

    def undo(self) -> None:
        self.logic.Undo()

    def redo(self) -> None:
        self.logic.Redo()

    def default_modifier_labelmap(self):
        return _checked_modifier(self.logic.GetModifierLabelmap() if self.logic.ResetModifierLabelmapToDefault()
                                 else None)

    def modify_selected_segment(self, labelmap, mode: str) -> None:
        node = self.segment_editor_node()
        codes = {"add": slicer.vtkSlicerSegmentEditorLogic.ModificationModeAdd,
                 "remove": slicer.vtkSlicerSegmentEditorLogic.ModificationModeRemove}
        self.logic.ModifySegmentByLabelmap(node.GetSegmentationNode(), node.GetSelectedSegmentID(), labelmap,
                                           codes[mode], True, False)


class EffectEditTarget:
    """Edits the selected segment through a scripted effect's adaptor (``scriptedEffect`` in Slicer):
    saveStateForUndo + modifySelectedSegmentByLabelmap, so the Segment Editor's own undo stack gets the change."""

    def __init__(self, scriptedEffect):
        self.scriptedEffect = scriptedEffect

    def segment_editor_node(self):
        return self.scriptedEffect.parameterSetNode()

    def save_state_for_undo(self):
        self.scriptedEffect.saveStateForUndo()

    def default_modifier_labelmap(self):
        return _checked_modifier(self.scriptedEffect.defaultModifierLabelmap())  # None when it cannot be set up

    def modify_selected_segment(self, labelmap, mode):
        modes = {"add": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd,
                 "remove": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeRemove}
        self.scriptedEffect.modifySelectedSegmentByLabelmap(labelmap, modes[mode])


@dataclass
class WriteReport:
    slices: List[int]
    voxels: int  # mask voxels handed to the segment editor (before the editable area is applied)
    mode: str

    def describe(self) -> str:
        where = f"slice {self.slices[0]}" if len(self.slices) == 1 else \
            f"{len(self.slices)} slices ({self.slices[0]}..{self.slices[-1]})"
        return f"{'added' if self.mode == 'add' else 'replaced'} {self.voxels} voxels on {where}"


def check_target(target) -> Tuple[object, str]:
    """(segmentation node, selected segment ID) of a target, or a BridgeError saying what to select."""
    node = target.segment_editor_node()
    segmentation = node.GetSegmentationNode() if node is not None else None
    if segmentation is None:
        raise BridgeError("no segmentation is selected in the Segment Editor: select or create one")
    segment_id = node.GetSelectedSegmentID()
    if not segment_id or segmentation.GetSegmentation().GetSegment(segment_id) is None:
        raise BridgeError(f"no segment of {segmentation.GetName()!r} is selected: add or select a segment first")
    return segmentation, segment_id


def stack_slices(masks: Dict[int, np.ndarray], np_axis: int, shape_kji) -> Tuple[np.ndarray, Tuple[int, int, int]]:
    """The slab of ``shape_kji`` that holds slices ``masks`` along ``np_axis``: (array, [k, j, i] offset)."""
    indices = sorted(masks)
    lo, hi = indices[0], indices[-1]
    shape = list(shape_kji[:3])
    shape[np_axis] = hi - lo + 1
    slab = np.zeros(shape, dtype=np.uint8)
    for index, mask in masks.items():
        sl = [slice(None)] * 3
        sl[np_axis] = index - lo
        slab[tuple(sl)] = np.asarray(mask).astype(bool)
    offset = [0, 0, 0]
    offset[np_axis] = lo
    return slab, tuple(offset)


def _modifier(target, slab: np.ndarray, offset, volume: Volume, segmentation_node):
    world_to_segmentation = np.linalg.inv(node_to_world(segmentation_node))
    labelmap = oriented_image_from_mask(slab, world_to_segmentation @ volume.ijk_to_ras, offset)
    geometry = target.default_modifier_labelmap()
    modifier = resample_into_geometry(labelmap, geometry)
    if modifier is None:
        raise BridgeError(f"the masks lie outside segmentation {segmentation_node.GetName()!r}'s geometry: set its "
                          f"geometry to the source volume (Segment Editor > Specify geometry)")
    return modifier


def write_masks(target, masks: Dict[int, np.ndarray], np_axis: int, volume: Volume, mode: str = "add",
                provenance=None) -> WriteReport:
    """Write per-slice masks (slice index -> (H, W) bool along ``np_axis`` of ``volume``) into the selected segment.

    One undo state is saved before the change, so one Undo takes the whole write back (the segment's tags too).
    ``provenance``: a :class:`samed.core.provenance.Provenance` stored as the segment's provenance tag.
    """
    if mode not in APPLY_MODES:
        raise BridgeError(f"unknown apply mode {mode!r}: use one of {', '.join(APPLY_MODES)}")
    segmentation, _ = check_target(target)
    if not masks:
        raise BridgeError("there is no result to apply: segment a slice first")
    slab, offset = stack_slices(masks, np_axis, volume.array.shape)
    voxels = int(slab.sum())
    if mode == "add" and voxels == 0:
        raise BridgeError("the result is empty: nothing to add to the segment")
    add = _modifier(target, slab, offset, volume, segmentation) if voxels else None
    erase = None
    if mode == "replace":  # clear exactly the previewed slices, not those between them
        previewed = {index: np.ones(slab.shape[:np_axis] + slab.shape[np_axis + 1:], dtype=bool) for index in masks}
        erase = _modifier(target, stack_slices(previewed, np_axis, volume.array.shape)[0], offset, volume,
                          segmentation)
    target.save_state_for_undo()
    if erase is not None:
        target.modify_selected_segment(erase, "remove")
    if add is not None:
        target.modify_selected_segment(add, "add")
    if provenance is not None:
        set_segment_provenance(segmentation, check_target(target)[1], provenance)
    return WriteReport(sorted(masks), voxels, mode)


def set_segment_provenance(segmentation_node, segment_id: str, provenance) -> None:
    """Store ``provenance`` as the segment's ``SegmentAnythingMed.Provenance`` tag (``vtkSegment.SetTag``); Slicer
    writes it to ``.seg.nrrd`` as ``Segment{N}_Tags``, and ``samed segment --continue`` reads it back."""
    from samed.core.provenance import PROVENANCE_TAG

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise BridgeError(f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}")
    segment.SetTag(PROVENANCE_TAG, provenance.to_tag_value())


def segment_provenance(segmentation_node, segment_id: str):
    """The segment's :class:`samed.core.provenance.Provenance`, or None when it has none."""
    import vtk

    from samed.core.provenance import PROVENANCE_TAG, Provenance

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    value = vtk.reference("")
    if segment is None or not segment.GetTag(PROVENANCE_TAG, value):
        return None
    return Provenance.from_tag_value(str(value))


def _ensure_binary_labelmap(segmentation_node) -> None:
    """Convert a segmentation kept as closed surfaces or planar contours to binary labelmaps first, as Slicer's
    Segment Statistics does: ``GetBinaryLabelmapRepresentation`` only reads an existing representation
    (vtkMRMLSegmentationNode.cxx). The conversion adds a derived representation; the source one is unchanged."""
    name = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if not segmentation_node.GetSegmentation().ContainsRepresentation(name):
        segmentation_node.CreateBinaryLabelmapRepresentation()


def segment_mask(segmentation_node, segment_id: str, volume: Volume) -> np.ndarray:
    """The segment as a bool ``[k, j, i]`` array on ``volume``'s grid (nearest neighbour; transforms applied)."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id) if segment_id else None
    if segment is None:
        raise BridgeError(f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}")
    labelmap = slicer.vtkOrientedImageData()
    _ensure_binary_labelmap(segmentation_node)
    if not segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap):
        raise BridgeError(f"segment {segment.GetName()!r} of {segmentation_node.GetName()!r} cannot be converted to a "
                          f"labelmap: check its representations in the Segmentations module")
    out = np.zeros(volume.array.shape[:3], dtype=bool)
    if is_empty_extent(labelmap.GetExtent()):
        return out
    in_world = with_world_transform(labelmap, node_to_world(segmentation_node))
    resampled = resample_into_geometry(in_world, geometry_image(volume.ijk_to_ras, volume.array.shape))
    if resampled is None:
        return out
    x0, x1, y0, y1, z0, z1 = resampled.GetExtent()
    out[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = array_from_oriented_image(resampled) > 0
    return out
