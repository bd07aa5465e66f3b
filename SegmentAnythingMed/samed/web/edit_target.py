"""The edit target of the session layer (``SegmentAnythingMedLib.segment_writer``) for trame-slicer.

trame-slicer 2.0.0 keeps the selected segment in its ``SegmentModifier`` (not in ``vtkMRMLSegmentEditorNode``) and
switches the segment editor logic's own undo history off (``SetSegmentationHistory(None)``,
trame_slicer/core/segmentation_editor.py); undo is its ``UndoStack`` of ``SegmentationLabelMapUndoCommand``s, each
holding a full copy of the segmentation before and after (segmentation/segmentation_undo_command.py).

:class:`TrameEditTarget` gives ``write_masks`` the interface of ``LogicEditTarget``/``EffectEditTarget``:
``segment_editor_node()`` (the editor node, with trame-slicer's selected segment copied into it first, as
trame-slicer's own ``Segmentation.get_segment_labelmap`` does), ``default_modifier_labelmap()``,
``save_state_for_undo()`` and ``modify_selected_segment(labelmap, "add" | "remove")`` through the same
``vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap`` call as ``SegmentModifier.apply_labelmap`` (editable area,
mask mode and overwrite rules hold). One ``save_state_for_undo()`` and the changes after it are one undo step,
also when a write is an erase then an add (``replace`` mode).
"""
from __future__ import annotations

from typing import Optional


class TrameEditTarget:
    def __init__(self, segmentation_editor):
        self.editor = segmentation_editor  # trame_slicer.core.SegmentationEditor
        self._states = None  # SegmentationStateStack of the step being written: [before, after]
        self._pushed = False

    # ---- what write_masks reads ---------------------------------------------------------------------------------
    def _modifier(self):
        modifier = self.editor.active_segment_modifier
        if modifier is None:
            from SegmentAnythingMedLib.errors import BridgeError

            raise BridgeError("no segmentation is active: open a volume first")
        return modifier

    def segment_editor_node(self):
        node = self.editor.editor_node
        modifier = self.editor.active_segment_modifier
        if modifier is not None:
            node.SetSelectedSegmentID(modifier.active_segment_id or None)
        return node

    def default_modifier_labelmap(self):
        labelmap = self._modifier().create_modifier_labelmap()
        if labelmap is None or labelmap.GetDimensions() == (0, 0, 0):
            from SegmentAnythingMedLib.errors import BridgeError

            raise BridgeError("the segmentation has no reference geometry: open the volume again")
        return labelmap

    # ---- undo ---------------------------------------------------------------------------------------------------
    def save_state_for_undo(self) -> None:
        from trame_slicer.segmentation.segmentation_state_stack import SegmentationStateStack

        segmentation = self._modifier().segmentation
        self._states = SegmentationStateStack(segmentation.segmentation, max_size=2)
        self._states.save_state()
        self._pushed = False

    def _record_step(self) -> None:
        from slicer import vtkSegmentation
        from trame_slicer.segmentation.segmentation_undo_command import SegmentationLabelMapUndoCommand

        segmentation = self._modifier().segmentation
        if self._states is None or segmentation.undo_stack is None:
            return
        if not self._pushed:
            self._states.save_state()
            segmentation.push_undo(SegmentationLabelMapUndoCommand(self._states, segmentation))
            self._pushed = True
            return
        # a further change of the same step (replace: the erase, then the add): its "after" state moves on
        after = vtkSegmentation()
        after.DeepCopy(segmentation.segmentation)
        self._states.restore_previous()  # back to "before" (index 0) ...
        segmentation.segmentation.DeepCopy(after)
        self._states.save_state()  # ... which drops the old "after" and records the new one

    def can_undo(self) -> bool:
        stack = self.editor.undo_stack
        return bool(stack is not None and stack.can_undo())

    def undo(self) -> None:
        if self.editor.undo_stack is not None:
            self.editor.undo_stack.undo()

    def redo(self) -> None:
        if self.editor.undo_stack is not None:
            self.editor.undo_stack.redo()

    # ---- the change ---------------------------------------------------------------------------------------------
    def modify_selected_segment(self, labelmap, mode: str) -> None:
        from slicer import vtkSlicerSegmentEditorLogic

        modifier = self._modifier()
        codes = {"add": vtkSlicerSegmentEditorLogic.ModificationModeAdd,
                 "remove": vtkSlicerSegmentEditorLogic.ModificationModeRemove}
        # the call of SegmentModifier._modify_active_segment_by_labelmap (trame_slicer/segmentation/segment_modifier.py)
        modifier.logic.ModifySegmentByLabelmap(modifier.segmentation.segmentation_node, modifier.active_segment_id,
                                               labelmap, codes[mode], [0, -1, 0, -1, 0, -1], True, False)
        self._record_step()
        modifier.trigger_active_segment_modified()

    def selected_segment_id(self) -> Optional[str]:
        modifier = self.editor.active_segment_modifier
        return modifier.active_segment_id if modifier is not None else None
