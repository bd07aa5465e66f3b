"""The session layer's edit target for trame-slicer (samed.web.edit_target.TrameEditTarget), on a real trame-slicer
2.0.0 SlicerApp (real MRML scene, real SegmentationEditor with its UndoStack, real vtkSlicerSegmentEditorLogic) and
the unchanged SegmentAnythingMedLib.segment_writer.write_masks that the Slicer effect uses."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
pytest.importorskip("trame_slicer", reason="the web extra is not installed (scripts/setup.sh --test)")

from undo_stack import UndoStack  # noqa: E402

from SegmentAnythingMedLib.errors import BridgeError  # noqa: E402
from SegmentAnythingMedLib.segment_writer import segment_mask, write_masks  # noqa: E402
from SegmentAnythingMedLib.volume_bridge import volume_from_node  # noqa: E402
from samed.web.edit_target import TrameEditTarget  # noqa: E402


@pytest.fixture(scope="module")
def slicer_app(ctchest):
    from trame_slicer.core import SlicerApp

    app = SlicerApp()
    volume_node = app.io_manager.load_volumes([str(ctchest[0])])[0]
    app.segmentation_editor.set_undo_stack(UndoStack(undo_limit=5))
    return app, volume_node


@pytest.fixture
def editor(slicer_app):
    """The editor with a fresh segmentation of two segments ('first', 'second'; 'first' active) on CTChest4."""
    app, volume_node = slicer_app
    ed = app.segmentation_editor
    node = ed.create_empty_segmentation_node()
    ed.set_active_segmentation(node, volume_node)
    ed.add_empty_segment(segment_name="first")
    ed.add_empty_segment(segment_name="second")
    ed.set_active_segment_id(ed.get_segment_ids()[0])
    ed.undo_stack.clear()
    yield ed, node, volume_from_node(volume_node)
    ed.clear()
    app.scene.RemoveNode(node)


def rect(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def test_add_is_one_step_of_trame_slicers_undo_stack(editor):
    ed, node, volume = editor
    first = ed.get_segment_ids()[0]
    mask = rect(volume.array.shape[1:], 40, 60, 50, 90)
    report = write_masks(TrameEditTarget(ed), {20: mask}, 0, volume, "add")
    assert report.voxels == 800
    written = segment_mask(node, first, volume)
    assert written.sum() == 800 and written[20].sum() == 800
    assert ed.undo_stack.n_commands() == 1 and ed.undo_stack.can_undo()
    ed.undo_stack.undo()
    assert segment_mask(node, first, volume).sum() == 0
    ed.undo_stack.redo()
    assert np.array_equal(segment_mask(node, first, volume), written)


def test_replace_erase_then_add_is_one_undo_step(editor):
    """Replace erases the previewed slices and adds the masks (two logic calls): one Undo takes both back."""
    ed, node, volume = editor
    first = ed.get_segment_ids()[0]
    target = TrameEditTarget(ed)
    shape = volume.array.shape[1:]
    write_masks(target, {20: rect(shape, 40, 60, 50, 90), 21: rect(shape, 40, 60, 50, 90)}, 0, volume, "add")
    before = segment_mask(node, first, volume)
    write_masks(target, {20: rect(shape, 45, 50, 50, 60)}, 0, volume, "replace")
    after = segment_mask(node, first, volume)
    assert after[20].sum() == 50 and after[21].sum() == 800, "replace clears the previewed slice only"
    assert ed.undo_stack.n_commands() == 2, "the replace was recorded as more than one step"
    ed.undo_stack.undo()
    assert np.array_equal(segment_mask(node, first, volume), before)
    ed.undo_stack.redo()
    assert np.array_equal(segment_mask(node, first, volume), after)


def test_writes_go_to_trame_slicers_selected_segment(editor):
    """trame-slicer keeps the selected segment in its SegmentModifier, not in the editor node."""
    ed, node, volume = editor
    first, second = ed.get_segment_ids()
    ed.editor_node.SetSelectedSegmentID(first)  # stale: trame-slicer does not keep it up to date
    ed.set_active_segment_id(second)
    write_masks(TrameEditTarget(ed), {20: rect(volume.array.shape[1:], 40, 60, 50, 90)}, 0, volume, "add")
    assert segment_mask(node, second, volume).sum() == 800
    assert segment_mask(node, first, volume).sum() == 0


def test_editable_area_and_overwrite_rules_hold(editor):
    """Writes go through the segment editor logic: 'inside segment X' limits them; other segments are overwritten
    (Slicer's default overwrite mode)."""
    from trame_slicer.segmentation import SegmentationEditableAreaMode

    ed, node, volume = editor
    first, second = ed.get_segment_ids()
    shape = volume.array.shape[1:]
    target = TrameEditTarget(ed)
    ed.set_active_segment_id(second)
    write_masks(target, {20: rect(shape, 40, 60, 40, 60)}, 0, volume, "add")  # 'second': 400 voxels
    ed.set_active_segment_id(first)
    ed.set_editable_area(SegmentationEditableAreaMode.INSIDE_SINGLE_SEGMENT)
    ed.set_mask_segment_id(second)
    try:
        write_masks(target, {20: rect(shape, 50, 70, 50, 70)}, 0, volume, "add")
    finally:
        ed.set_editable_area(SegmentationEditableAreaMode.EVERYWHERE)
    assert segment_mask(node, first, volume).sum() == 100, "only the overlap with 'second' is editable"
    assert segment_mask(node, second, volume).sum() == 300, "the overlap moved from 'second' to 'first'"


def test_no_active_segmentation_says_what_to_do(slicer_app):
    app, _ = slicer_app
    ed = app.segmentation_editor
    ed.clear()
    with pytest.raises(BridgeError, match="open a volume"):
        TrameEditTarget(ed).default_modifier_labelmap()
