"""The effect's working state and every decision it makes, without Qt: prompts from clicks, boxes and markups,
inference jobs, candidate masks, propagation, preview, Apply and Cancel.

The Qt layer (``SegmentEditorEffect.py``) turns user input into calls here and shows :attr:`EditSession.status`;
it polls the worker and passes the events to :meth:`EditSession.handle`, on the GUI thread, where the preview is
updated. Nothing is written into the user's segmentation before :meth:`EditSession.apply`.

Rules
- Clicks and a dragged box build one prompt on the slice under the view; a click on another slice starts a new
  prompt there (the masks previewed on other slices stay). Apply records the prompts in the segment's tags.
- Each prompt's result replaces the preview on its slice; the candidates (several for an ambiguous prompt such as
  one point with SAM) can be cycled, best score first.
- Propagate walks from the slice of the last prompt through its neighbours, within the ROI's extent (when an ROI
  was used and the range is "roi"), a set range, or the whole volume. With prompts on two or more slices (e.g. a
  box on a second slice of a propagated preview) every prompted slice is a key slice: Propagate fills between
  and around them (``key_slice_session``); :attr:`slice_kinds` marks each slice key / interpolated / walked.
- A model that does not take the prompt's kind (e.g. points for LiteMedSAM) is caught before any work."""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from samed.core.backend import UnsupportedPromptError, check_prompt_kinds
from samed.core.preprocess import IntensityWindow
from samed.core.prompts import Prompt

from .backend_settings import model_prompt_kinds
from .errors import USER_ERRORS, BridgeError, describe_error  # noqa: F401 (the front ends import them here)
from .jobs import (IntensitySpec, PromptRequest, PromptResult, PropagationOutcome, PropagationRequest,
                   VolumeSessions, VolumeSnapshot, masks_summary, run_prompt, run_propagation)
from .key_slice_session import KeySliceOutcome, accept_key_slices, key_slices_of, submit_key_slices, user_box
from .markup_bridge import prompts_from_markup_nodes, ras_to_view_xy
from .preview import segment_color
from .refine_session import JOB_NOUNS, REFINED, accept_refinement, apply_provenance
from .segment_writer import WriteReport, write_masks
from .session_types import RANGE_MODES, SESSION_INTENSITY_MODES, Candidates, SessionOptions, SlicePrompt  # noqa: F401
from .volume_bridge import ViewSlice, ijk_to_world, view_slice, volume_from_node
from .worker import CANCELLED, DONE, FAILED, PROGRESS, JobEvent

class EditSession:
    def __init__(self, provider, worker, preview, options: Optional[SessionOptions] = None):
        self.provider = provider
        self.worker = worker
        self.preview = preview
        self.options = options or SessionOptions()
        self.sessions = VolumeSessions()
        self._last_stop = None  # the slice last handed to the backend to encode ahead
        self.volume_node = None
        self.segmentation_node = None
        self.segment_id = ""
        self._snapshot: Optional[VolumeSnapshot] = None
        self._generation = itertools.count(1)
        self.generation = next(self._generation)
        self.status = ""
        self.progress: Optional[Tuple[int, int]] = None
        self.pending: Dict[int, str] = {}  # job id -> "prompt" / "propagate"
        self._reset_results()

    def _reset_results(self) -> None:
        self.np_axis: Optional[int] = None
        self.masks: Dict[int, np.ndarray] = {}
        self.slice_prompt: Optional[SlicePrompt] = None
        self.candidates: Optional[Candidates] = None
        self.propagation = None
        self.roi_range: Optional[Tuple[int, int]] = None
        self.prompted: Dict[int, Prompt] = {}  # slice -> the user's prompt there: propagation keeps its mask
        self.slice_kinds: Dict[int, str] = {}  # slice -> key / interpolated / walked (/ absent) after Propagate

    # ---------------------------------------------------------------------------------------- source and state

    def set_source(self, volume_node, segmentation_node=None, segment_id: str = "") -> None:
        """The volume to segment and the segment that Apply writes to.

        Another volume drops the preview (it was made on the old one's voxels). No volume (the Segment Editor's
        selector passing through none while the user switches segmentation) and another segmentation or segment
        keep it: Apply writes it into whichever segment is selected then."""
        if volume_node is not None and volume_node is not self.volume_node:
            if self.volume_node is not None:
                self.cancel()
            self.volume_node = volume_node
            self._snapshot = None
        if segmentation_node is not None:
            self.segmentation_node = segmentation_node
            self.segment_id = segment_id or ""

    def snapshot(self) -> VolumeSnapshot:
        if self.volume_node is None:
            raise BridgeError("no source volume is selected in the Segment Editor: select one first")
        matrix = ijk_to_world(self.volume_node)
        image = self.volume_node.GetImageData()
        key = (self.volume_node.GetID(), image.GetMTime() if image is not None else 0,
               tuple(np.round(matrix, 9).ravel()))
        if self._snapshot is None or self._snapshot.key != key:
            self._snapshot = VolumeSnapshot(volume_from_node(self.volume_node), key)
        return self._snapshot

    def view_of(self, slice_node) -> ViewSlice:
        return view_slice(slice_node, self.snapshot().volume, self.volume_node.GetName())

    def stopped_on(self, slice_node) -> bool:
        """The user is on the slice a view shows: the backend encodes it ahead (Backend.stopped_on), so the next box
        needs only a decode. Only with a loaded model and an already prompted volume/direction/intensity (nothing
        may load a model or scan the volume on the GUI thread); once per slice. True if handed over."""
        backend = self.provider.current()
        if self.volume_node is None or backend is None:
            return False
        try:
            view, snapshot = self.view_of(slice_node), self.snapshot()
            volume_session = self.sessions.peek(snapshot, view.np_axis, self.intensity(), backend)
        except BridgeError:  # an oblique view, no display window yet...: nothing to encode ahead
            return False
        key = (snapshot.key, view.np_axis, view.index, id(volume_session))
        if volume_session is None or key == self._last_stop:
            return False
        self._last_stop = key
        backend.stopped_on(volume_session.picture(view.index))
        return True

    @property
    def has_preview(self) -> bool:
        return any(np.any(m) for m in self.masks.values())

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    def intensity(self) -> IntensitySpec:
        o = self.options
        if o.intensity_mode not in SESSION_INTENSITY_MODES:
            raise BridgeError(f"unknown intensity preprocessing {o.intensity_mode!r}: use one of "
                              f"{', '.join(SESSION_INTENSITY_MODES)}")
        modality = self.snapshot().volume.metadata.get("modality")
        if o.intensity_mode == "display":
            display = self.volume_node.GetDisplayNode() if self.volume_node is not None else None
            if display is None or not display.GetWindow() > 0:
                raise BridgeError("the source volume has no display window yet: show it in a view or choose "
                                  "another intensity preprocessing")
            return IntensitySpec("window", IntensityWindow.from_window_level(display.GetWindow(), display.GetLevel()))
        if o.intensity_mode == "window":
            if o.window is None or o.level is None or not o.window > 0:
                raise BridgeError("the 'window' preprocessing needs a window width > 0 and a level")
            return IntensitySpec("window", IntensityWindow.from_window_level(o.window, o.level))
        return IntensitySpec(o.intensity_mode, None, modality)

    # ------------------------------------------------------------------------------------------------- prompts

    def _prompt_on(self, view: ViewSlice) -> SlicePrompt:
        """A copy of the prompt being built on the view's slice (a new one on another slice)."""
        sp = self.slice_prompt
        if sp is None or sp.view.np_axis != view.np_axis or sp.view.index != view.index:
            return SlicePrompt(view)
        return SlicePrompt(view, list(sp.include_xy), list(sp.exclude_xy), sp.box_xy)

    def add_point(self, ras, include: bool, view: ViewSlice) -> Optional[int]:
        """An include (or exclude) click at world ``ras`` on the view's slice."""
        xy = ras_to_view_xy(ras, self.snapshot().volume, view)[0]
        sp = self._prompt_on(view)
        (sp.include_xy if include else sp.exclude_xy).append((float(xy[0]), float(xy[1])))
        return self._submit_prompt(sp)

    def set_box(self, ras_a, ras_b, view: ViewSlice) -> Optional[int]:
        """A box dragged from ``ras_a`` to ``ras_b`` (world) on the view's slice (clipped to the slice)."""
        xy = ras_to_view_xy([ras_a, ras_b], self.snapshot().volume, view, inside=False)
        sp = self._prompt_on(view)
        box = Prompt(box_xy=np.r_[xy[0], xy[1]]).clipped(self._slice_shape(view)).box_xy
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise BridgeError("the box is too small or outside the image: drag a box around the structure")
        sp.box_xy = box
        return self._submit_prompt(sp)

    def prompt_from_markups(self, view: ViewSlice, include_nodes=(), exclude_nodes=(), roi_nodes=(),
                            all_slices: bool = False) -> Optional[int]:
        """Prompt from markups nodes: the slice under the view (or the nearest slice the markups reach), or with
        ``all_slices`` every slice they reach (an ROI: each slice it crosses, with its box there)."""
        volume = self.snapshot().volume
        slice_prompts = prompts_from_markup_nodes(volume, view.np_axis, include_nodes, exclude_nodes, roi_nodes)
        indices = slice_prompts.indices()
        index = view.index if view.index in indices else min(indices, key=lambda i: (abs(i - view.index), i))
        self.roi_range = slice_prompts.roi_range

        def slice_prompt(i):
            p = slice_prompts.prompts[i]
            return SlicePrompt(ViewSlice(view.np_axis, i, view.orientation, view.view_name),
                               [tuple(x) for x in p.include_points_xy], [tuple(x) for x in p.exclude_points_xy],
                               p.box_xy)

        job = self._submit_prompt(slice_prompt(index))  # the view's slice: its candidates are the ones shown
        if job is not None and all_slices:
            for i in indices:
                if i != index:
                    self._submit_prompt(slice_prompt(i), kind="slice")
            self.status = f"segmenting {len(indices)} slices ({indices[0]}..{indices[-1]})..."
        elif job is not None and index != view.index:
            self.status = f"the markups do not reach the view's slice {view.index}: segmenting slice {index}"
        return job

    def _slice_shape(self, view: ViewSlice):
        return [s for a, s in enumerate(self.snapshot().volume.array.shape[:3]) if a != view.np_axis]

    def _submit_prompt(self, sp: SlicePrompt, kind: str = "prompt") -> Optional[int]:
        """Run the prompt ``sp`` unless the model cannot take it. ``kind`` "prompt": it becomes the current prompt
        (later clicks add to it) and its candidates are shown; "slice": one more slice of a multi-slice prompt."""
        prompt = sp.prompt()
        model = self.provider.settings.model
        kinds = self.provider.get().prompt_kinds() if self.provider.loaded() else frozenset(model_prompt_kinds(model))
        try:
            check_prompt_kinds(model, frozenset(kinds), prompt)
        except UnsupportedPromptError as exc:  # e.g. a point for LiteMedSAM: say so, keep the prompt as it was
            self.status = str(exc)
            return None
        prompt.validate(self._slice_shape(sp.view))
        if kind == "prompt":
            self.slice_prompt = sp
        request = PromptRequest(self.generation, self.snapshot(), sp.view.np_axis, sp.view.index, prompt,
                                self.intensity(), self.options.multimask)
        provider, sessions = self.provider, self.sessions
        job = self.worker.submit(lambda ctx: run_prompt(provider, sessions, request, ctx),
                                 label=f"segment slice {sp.view.index}", replace="prompt" if kind == "prompt" else None)
        self.pending[job] = kind
        self.status = f"segmenting {sp.view.describe()}..."
        return job

    # ------------------------------------------------------------------------------------------------- results

    def poll(self) -> List[str]:
        """Take this session's worker events and apply them (GUI thread; the Qt layer calls it from a timer)."""
        return self.handle(self.worker.poll(list(self.pending))) if self.pending else []

    def wait(self, timeout: float = 600.0) -> List[str]:
        """Block until no job of this session is pending (scripts, tests, self-tests); the status messages."""
        deadline = time.monotonic() + timeout
        messages = []
        while self.pending:
            messages += self.poll()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the model did not finish within {timeout:g} s")
            time.sleep(0.01)
        return messages

    def handle(self, events: Sequence[JobEvent]) -> List[str]:
        """Apply worker events (GUI thread); returns the status messages they produced, in order."""
        messages = []
        for event in events:
            kind = self.pending.get(event.job_id)
            if event.kind == PROGRESS:
                self.progress = event.value
                continue
            self.pending.pop(event.job_id, None)
            if kind is None:
                continue
            if event.kind == CANCELLED:
                self.progress = None
                if kind in JOB_NOUNS:
                    self.status = f"{JOB_NOUNS[kind]} cancelled: the preview is as it was"
                    messages.append(self.status)
                continue
            if event.kind == FAILED:
                logging.warning("Segment Anything: %s failed\n%s", event.label, event.details)
                self.progress = None
                self.status = f"{event.label} failed: {event.error}"
                messages.append(self.status)
                continue
            if event.kind == DONE and event.value.request.generation == self.generation:
                try:
                    message = (self._accept_propagation(event.value) if kind == "propagate"
                               else accept_refinement(self, event.value) if kind == "refine"
                               else self._accept_prompt(event.value, current=kind == "prompt"))
                except Exception as exc:  # the masks are kept (accepted before the preview is drawn): say so
                    logging.error("Segment Anything: showing the result of %s failed", event.label, exc_info=True)
                    message = (f"{event.label} finished but its preview could not be shown ({describe_error(exc)}); "
                               f"the result is kept: Apply writes it")
                self.status = message
                messages.append(message)
        return messages

    def _start_axis(self, np_axis: int) -> None:
        if self.np_axis is not None and self.np_axis != np_axis:  # another slicing direction: start over
            self.masks = {}
            self.propagation = None
            self.prompted = {}
        self.np_axis = np_axis

    def _accept_prompt(self, result: PromptResult, current: bool = True) -> str:
        request = result.request
        self._start_axis(request.np_axis)
        self.prompted[request.index] = request.prompt
        if not current:
            self.masks[request.index] = result.prediction.masks[0]
            self._show_preview()
            return f"slice {request.index}: score {float(result.prediction.scores[0]):.2f}"
        self.candidates = Candidates(request.index, result.prediction)
        self.masks[request.index] = self.candidates.mask
        self._show_preview()
        return f"slice {request.index}: {self.candidates.describe()}"

    def next_candidate(self) -> str:
        c = self.candidates
        if c is None or len(c.prediction.scores) < 2:
            return "this result has one candidate only (a single point gives three with SAM)"
        c.chosen = (c.chosen + 1) % len(c.prediction.scores)
        self.masks[c.index] = c.mask
        self._show_preview()
        self.status = f"slice {c.index}: {c.describe()}"
        return self.status

    def _show_preview(self) -> None:
        color = segment_color(self.segmentation_node, self.segment_id)
        self.preview.show(self.masks, self.np_axis, self.snapshot().volume, self.segmentation_node, color)

    # --------------------------------------------------------------------------------------------- propagation

    def propagation_range(self) -> Optional[Tuple[int, int]]:
        o = self.options
        if o.range_mode == "roi" and self.roi_range is not None:
            return self.roi_range
        if o.range_mode == "set" and o.set_range is not None:
            return (min(o.set_range), max(o.set_range))
        return None

    def propagate(self) -> int:
        """Propagate from the last prompted slice, or from all prompted slices (see the module docstring)."""
        keys = key_slices_of(self) if self.np_axis is not None else {}
        if len(keys) >= 2:
            return submit_key_slices(self, keys)
        if self.candidates is None or self.np_axis is None or not np.any(self.masks.get(self.candidates.index)):
            raise BridgeError("segment a slice first: propagation starts from the mask on the last prompted slice")
        seed = self.candidates.index
        settings = replace(self.options.propagation, index_range=self.propagation_range())
        lo, hi = settings.index_range or (0, self.snapshot().volume.array.shape[self.np_axis] - 1)
        if not lo <= seed <= hi:
            raise BridgeError(f"slice {seed} is outside the propagation range {lo}..{hi}: widen the range or "
                              f"prompt a slice inside it")
        request = PropagationRequest(self.generation, self.snapshot(), self.np_axis, seed, self.masks[seed].copy(),
                                     settings, ("up", "down"), self.intensity(), seed_box=user_box(self, seed))
        provider, sessions = self.provider, self.sessions
        job = self.worker.submit(lambda ctx: run_propagation(provider, sessions, request, ctx),
                                 label=f"propagate from slice {seed}")
        self.pending[job] = "propagate"
        self.progress = (0, 0)
        self.status = f"propagating from slice {seed} ({lo}..{hi})..."
        return job

    def _accept_propagation(self, outcome: PropagationOutcome) -> str:
        if isinstance(outcome, KeySliceOutcome):
            return accept_key_slices(self, outcome)
        request, result = outcome.request, outcome.result
        self.progress = None
        if request.np_axis != self.np_axis:
            return "propagation result dropped: the slicing direction changed meanwhile"
        for index in (self.propagation.masks if self.propagation is not None else ()):
            if index not in result.masks and index not in self.prompted:  # a fresh walk replaces the previous one
                self.masks.pop(index, None)
        self.propagation = result
        self.masks.update({i: m for i, m in result.masks.items()
                           if i not in self.prompted or i == request.seed_index})
        self.slice_kinds = {i: "key" if i == request.seed_index else "walked" for i in result.masks}
        self._show_preview()
        stops = "; ".join(f"{d}: {why}" for d, why in result.stopped.items())
        return f"preview on {masks_summary(self.masks)} (stopped {stops}). Apply to keep it."

    def cancel_running(self) -> None:
        for job in list(self.pending):
            self.worker.cancel(job)

    # ---------------------------------------------------------------------------------------- apply and cancel

    def apply(self, target) -> WriteReport:
        """Write the previewed masks into the selected segment (one undo state), then clear the preview."""
        if self.busy:
            raise BridgeError("the model is still working: wait for it or cancel before applying")
        mode = "replace" if REFINED in self.slice_kinds.values() else self.options.apply_mode  # Refine: replace
        masks = self.masks if mode == "replace" else {i: m for i, m in self.masks.items() if np.any(m)}
        if not masks:
            raise BridgeError("there is no preview to apply: segment a slice first")
        volume = self.snapshot().volume  # the segment's tags record how it was made (as samed segment writes)
        how = apply_provenance(self, volume)
        report = write_masks(target, masks, self.np_axis, volume, mode, how)
        self._drop()
        self.status = f"applied: {report.describe()}"
        return report

    def cancel(self) -> None:
        """Drop the preview, the prompt and any running job; the segmentation stays as it was."""
        self.cancel_running()
        self._drop()
        self.status = "cancelled"

    def _drop(self) -> None:
        self.generation = next(self._generation)
        self.pending.clear()
        self.progress = None
        self.preview.remove()
        self._reset_results()

