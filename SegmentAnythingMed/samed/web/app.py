"""The web app: trame-slicer's scene, slice view and segment editor, with the "Segment Anything" tool.

Every decision (prompts, jobs, preview, propagation, Apply) is made by ``SegmentAnythingMedLib.session.EditSession``,
the same object the Slicer effect drives; this module only turns browser events into its calls and shows its
status. The model runs in a worker thread (in-process backend or the model service's HTTP client); an asyncio task
polls it, as the Slicer effect's QTimer does.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
from trame.app import TrameApp
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from undo_stack import UndoStack

from SegmentAnythingMedLib.evaluation_bridge import evaluate_segment
from SegmentAnythingMedLib.gestures import BOX
from SegmentAnythingMedLib.preview import SegmentPreview
from SegmentAnythingMedLib.session import USER_ERRORS, EditSession, describe_error
from SegmentAnythingMedLib.session_types import SessionOptions
from SegmentAnythingMedLib.volume_bridge import matrix_to_array, slice_position_ras, view_slice
from SegmentAnythingMedLib.worker import InferenceWorker

from .edit_target import TrameEditTarget
from .effect import SegmentAnythingEffect
from .files import DataFolders, reference_choices, write_segmentation
from .ui import LAYOUTS, build_ui
from .uploads import Uploads

SEGMENT_NAME = "Segment_1"  # the name `samed segment` gives a segment without a reference label
POLL_S = 0.1
RENDER_AGAIN_S = 0.6  # past trame-rca's still frame (5 periods at 10 fps when the page has no focus)


class SamWebApp(TrameApp):
    def __init__(self, server=None, *, data: DataFolders, out_dir: Path, provider,
                 options: Optional[SessionOptions] = None, undo_limit: int = 5, max_upload_mb: float = 512.0):
        super().__init__(server)
        self.data = data
        self.uploads = Uploads(max_upload_mb)
        self.data.folders.append(self.uploads.folder)  # listed after the --data folders, as uploads/NAME
        self.out_dir = Path(out_dir)
        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layout_manager.set_layout("Axial Only")

        self.editor = self.slicer.segmentation_editor
        self.undo_stack = UndoStack(undo_limit=undo_limit)
        self.editor.set_undo_stack(self.undo_stack)
        self.effect = self.editor.get_effect(SegmentAnythingEffect)
        self.effect.on_prompt = self._on_prompt
        self.target = TrameEditTarget(self.editor)
        self.worker = InferenceWorker("samed web inference")
        self.session = EditSession(provider, self.worker, SegmentPreview(self.slicer.scene), options)
        self.volume_node = None
        self.segmentation_node = None
        self._reference_nodes = {}  # path -> segmentation node (hidden), loaded on first comparison
        self._poll_task = None
        self._render_again_at = None
        self.undo_stack.index_changed.connect(lambda *_: self._after_edit())

        s = self.state
        s.trame__title = "Segment Anything (samed web)"
        s.volumes = self.data.volumes()
        s.volume = s.volumes[0] if s.volumes else None
        s.opened = ""
        s.tool_active = False
        s.status = "Open a volume, pick the Segment Anything tool and drag a box around a structure."
        s.busy = False
        s.progress = ""
        s.box = ""
        s.box_xy = None
        s.has_preview = False
        s.can_undo = False
        s.can_redo = False
        s.slice_index = 0
        s.slice_count = 1
        s.saved = ""
        s.download_name = "segmentation.seg.nrrd"
        s.references = reference_choices(self.data)
        s.reference = next((r for r in s.references if r.endswith(": right lung")), s.references[0] if s.references
                           else None)
        s.evaluation = ""
        s.layout = "Axial Only"
        s.view_geometry = None  # view XY (pixels, origin bottom-left) -> source voxel IJK, and the view's size
        s.change("slice_index")(self._on_slice_index)
        s.change("layout")(self._on_layout)
        build_ui(self)
        self.server.controller.on_server_ready.add(self._start_polling)

    # --------------------------------------------------------------------------------------------------- UI
    # ---------------------------------------------------------------------------------------------- helpers
    def _say(self, text: str) -> None:
        with self.state:
            self.state.status = text

    def _guard(self, action, *args):
        try:
            return action(*args)
        except Exception as exc:  # every failure is shown to the user; programming errors also go to the log
            if not isinstance(exc, USER_ERRORS + (OSError,)):
                logging.exception("samed web: %s failed", getattr(action, "__name__", action))
            self._say(describe_error(exc))
            return None

    def _render(self) -> None:
        for view in self.slicer.view_manager.get_views():
            view.schedule_render()
        self._render_again_at = time.monotonic() + RENDER_AGAIN_S

    def _render_again(self) -> None:
        """One more frame a moment after a change: the stream's last frame then shows the scene as it is even if
        an earlier one was superseded on its way to the browser (one CI run kept a preview off the page)."""
        if self._render_again_at is not None and time.monotonic() >= self._render_again_at:
            self._render_again_at = None
            for view in self.slicer.view_manager.get_views():
                view.schedule_render()

    def _slice_view(self):
        """The axial ("Red") view: the one the slice controls move and the view geometry describes."""
        views = self.slicer.view_manager.get_slice_views()
        red = [v for v in views if v.get_view_node() is not None and v.get_view_node().GetSingletonTag() == "Red"]
        return (red or views or [None])[0]

    def _after_edit(self) -> None:
        with self.state:
            self.state.can_undo = self.undo_stack.can_undo()
            self.state.can_redo = self.undo_stack.can_redo()
        self._render()

    def _sync(self) -> None:
        s, session = self.state, self.session
        with s:
            s.status = session.status or s.status
            s.busy = session.busy
            s.has_preview = session.has_preview
            p = session.progress
            s.progress = f"{p[0]}/{p[1]} slices" if p and p[1] else ("working..." if session.busy else "")
            s.can_undo = self.undo_stack.can_undo()
            s.can_redo = self.undo_stack.can_redo()
            sp = session.slice_prompt
            if sp is not None and sp.box_xy is not None:
                s.box_xy = [float(x) for x in sp.box_xy]  # the box the model got (voxel x0, y0, x1, y1)
                s.box = ",".join(f"{x:.2f}" for x in sp.box_xy) + f" on {sp.view.describe()}"
        self._render()

    def _publish_view_geometry(self) -> None:
        view = self._slice_view()
        if view is None or self.volume_node is None:
            return
        node = view.get_view_node()
        xy_to_ras = matrix_to_array(node.GetXYToRAS())
        ras_to_ijk = np.linalg.inv(self.session.snapshot().volume.ijk_to_ras)
        geometry = {"xy_to_ijk": [round(float(x), 6) for x in (ras_to_ijk @ xy_to_ras).ravel()],
                    "size": [int(d) for d in node.GetDimensions()[:2]]}
        if geometry != self.state.view_geometry:
            with self.state:
                self.state.view_geometry = geometry

    # ------------------------------------------------------------------------------------------------- open
    def open_selected(self) -> None:
        self._guard(self.open_volume, self.state.volume)

    def open_volume(self, name: str) -> None:
        path = self.data.resolve(name)
        self.session.set_source(None)
        for node in (self.volume_node, self.segmentation_node, *self._reference_nodes.values()):
            if node is not None and node.GetScene() is not None:
                self.slicer.scene.RemoveNode(node)
        self._reference_nodes.clear()
        nodes = self.slicer.io_manager.load_volumes([str(path)])
        if not nodes:
            raise ValueError(f"{path.name} could not be read as a volume")
        self.volume_node = nodes[0]
        self.slicer.display_manager.show_volume(self.volume_node, do_reset_views=True)
        self.segmentation_node = self.editor.create_empty_segmentation_node()
        self.segmentation_node.SetName(f"{self.volume_node.GetName()} segmentation")
        self.editor.set_active_segmentation(self.segmentation_node, self.volume_node)
        segment_id = self.editor.add_empty_segment(segment_name=SEGMENT_NAME)
        self.undo_stack.clear()
        self.session.set_source(self.volume_node, self.segmentation_node, segment_id)
        view = self._slice_view()
        volume = self.session.snapshot().volume
        where = view_slice(view.get_view_node(), volume, self.volume_node.GetName())
        with self.state:
            self.state.opened = name
            self.state.saved = ""
            self.state.box = ""
            self.state.box_xy = None
            self.state.evaluation = ""
            self.state.slice_count = int(volume.array.shape[where.np_axis])
            self.state.slice_index = where.index
        self.activate_tool()
        self._say(f"opened {name}: drag a box around a structure in the slice view")
        self._publish_view_geometry()
        self._after_edit()

    def upload(self, files) -> None:
        def run():
            if not files:
                raise ValueError("choose a volume file to upload")
            name = self.uploads.save(files[0] if isinstance(files, list) else files)
            with self.state:
                self.state.volumes = self.data.volumes()
                self.state.volume = name
            self.open_volume(name)
        self._guard(run)

    def _on_slice_index(self, slice_index=None, **_) -> None:
        if self.volume_node is None or slice_index in (None, ""):
            return
        self._guard(self._go_to_slice, int(slice_index))

    def _on_layout(self, layout=None, **_) -> None:
        if layout in LAYOUTS:
            self.layout_manager.set_layout(layout)
            if self.volume_node is not None:
                self.slicer.display_manager.show_volume(self.volume_node, do_reset_views=True)
            self._publish_view_geometry()

    def _go_to_slice(self, index: int) -> None:
        node = self._slice_view().get_view_node()
        volume = self.session.snapshot().volume
        where = view_slice(node, volume, self.volume_node.GetName())
        if where.index == index:
            return
        if not 0 <= index < volume.array.shape[where.np_axis]:
            raise ValueError(f"slice {index} is outside 0..{volume.array.shape[where.np_axis] - 1}")
        node.JumpSliceByOffsetting(*slice_position_ras(volume, where.np_axis, index))
        self._publish_view_geometry()
        self._render()

    # ---------------------------------------------------------------------------------------------- the tool
    def activate_tool(self) -> None:
        if self.volume_node is None:
            self._say("open a volume first")
            return
        self.editor.set_active_effect(self.effect)
        with self.state:
            self.state.tool_active = self.effect.is_active

    def _on_prompt(self, action, slice_node) -> None:
        """A click (include / exclude point) or a dragged box in a slice view (effect.py, gestures.py)."""
        def run():
            where = view_slice(slice_node, self.session.snapshot().volume, self.volume_node.GetName())
            if action.kind == BOX:
                self.session.set_box(action.ras[0], action.ras[1], where)
            else:
                self.session.add_point(action.ras[0], action.include, where)
            with self.state:
                self.state.slice_index = where.index
        self._guard(run)
        self._sync()

    def next_candidate(self) -> None:
        self._guard(self.session.next_candidate)
        self._sync()

    def propagate(self) -> None:
        self._guard(self.session.propagate)
        self._sync()

    def apply(self) -> None:
        self._guard(self.session.apply, self.target)
        self._sync()
        self._after_edit()

    def stop(self) -> None:
        """Stop the running job (a propagation keeps the preview it had)."""
        self.session.cancel_running()
        self._sync()

    def cancel(self) -> None:
        self.session.cancel()
        self._sync()

    def undo(self) -> None:
        self.undo_stack.undo()
        self._say("undone")

    def redo(self) -> None:
        self.undo_stack.redo()
        self._say("redone")

    def save(self) -> Optional[Path]:
        def run():
            if self.segmentation_node is None:
                raise ValueError("open a volume and segment it first")
            out = self.out_dir / f"{Path(self.state.opened).name.split('.')[0]}.seg.nrrd"
            write_segmentation(self.segmentation_node, out)
            with self.state:
                self.state.saved = str(out)
                self.state.download_name = out.name
                self.state.status = f"saved {out.name}"
            return out
        return self._guard(run)

    def download(self):
        """Save, then send the file to the browser (trame's utils.download calls this trigger)."""
        out = self.save()
        if out is None:
            return None
        return self.server.protocol.addAttachment(Path(out).read_bytes())

    def compare(self) -> None:
        """Dice, IoU, NSD and HD95 of the segment against the chosen reference segment (the Slicer module's
        evaluation, ``evaluation_bridge.evaluate_segment``)."""
        def run():
            if self.segmentation_node is None:
                raise ValueError("open a volume and segment it first")
            choice = self.state.reference
            file_name, _, segment_name = str(choice or "").rpartition(": ")
            if not file_name:
                raise ValueError("choose a reference segment first")
            path = self.data.resolve_segmentation(file_name)
            node = self._reference_nodes.get(path)
            if node is None:
                node = self.slicer.segmentations_logic.LoadSegmentationFromFile(str(path), False,
                                                                               f"{path.name} (reference)")
                if node is None:
                    raise ValueError(f"{file_name} could not be read as a Slicer segmentation")
                if node.GetDisplayNode() is not None:
                    node.GetDisplayNode().SetVisibility(False)  # a reference is compared with, not shown
                self._reference_nodes[path] = node
            segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
            if not segment_id:
                raise ValueError(f"{file_name} has no segment {segment_name!r}")
            evaluation = evaluate_segment(self.segmentation_node, self.target.selected_segment_id(), node,
                                          segment_id, self.session.snapshot().volume)
            with self.state:
                self.state.evaluation = evaluation.describe()
                self.state.status = "compared with the reference"
            return evaluation
        return self._guard(run)

    # ------------------------------------------------------------------------------------------------ polling
    def _start_polling(self, **_) -> None:
        if self._poll_task is None:
            self._poll_task = asyncio.get_event_loop().create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(POLL_S)
            ticks += 1
            try:
                if self.session.pending:
                    self.session.poll()
                    self._sync()
                elif self.state.busy:
                    self._sync()
                self._render_again()
                if ticks % 5 == 0:
                    self._publish_view_geometry()
                self._encode_ahead()
            except Exception:  # keep polling: one failed update must not stop the app
                logging.exception("samed web: polling failed")

    def _encode_ahead(self) -> None:
        """The slice each view shows now (after a scroll, a jump, a layout change) is handed to the backend to
        encode ahead, as the Slicer effect does (EditSession.stopped_on: once per slice, only with a loaded model
        and a prompted volume)."""
        view = self._slice_view() if self.volume_node is not None else None
        node = view.get_view_node() if view is not None else None
        if node is not None:  # the main slice view only: alternating views would cancel each other's encodes
            self.session.stopped_on(node)

    def close(self) -> None:
        self.uploads.close()
        self.worker.shutdown()
        self.session.provider.close()
