"""Refine the selected segment (made by another tool: a model's output, a coarse manual one) in the effect: the
session's side of :func:`samed.core.refine.refine_mask`, what ``samed refine`` runs.

The selected segment is read on the source volume's grid (``segment_writer.segment_mask``), each slice of it (along
the volume's axial axis) is prompted with a box around it, and the model's masks decide, over the whole structure,
whether the outline is off (a uniform offset, a shift) and on which slices a correction is taken. The work runs
in the worker as a job through whichever backend the provider holds, as propagation does; the result comes back on
the GUI thread (:func:`accept_refinement`): the slices that changed become the preview (each marked ``refined`` in
:attr:`EditSession.slice_kinds`), and the status says what the check decided. Nothing is written before Apply,
which replaces the segment on exactly those slices (one undo state); Cancel drops the preview.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional

import numpy as np

from samed.core.geometry import numpy_axis
from samed.core.provenance import Provenance, provenance_of, refinement_record

from .errors import BridgeError
from .jobs import IntensitySpec, VolumeSessions, VolumeSnapshot
from .key_slice_session import SLICE_KINDS_ATTRIBUTE, describe_slices
from .segment_writer import segment_mask
from .worker import JobCancelled

if TYPE_CHECKING:  # samed.core.refine needs scipy: loaded on first use, not at Slicer's start-up
    from samed.core.refine import RefineResult, RefineSettings

REFINED = "refined"  # the slice kind of a refined slice (session.slice_kinds): Apply replaces the segment there
JOB_NOUNS = {"propagate": "propagation", "refine": "refinement"}  # session.pending's job kinds, as the status says


@dataclass
class RefineRequest:
    generation: int
    snapshot: VolumeSnapshot
    np_axis: int
    original: np.ndarray  # the selected segment, bool [k, j, i] on the source volume's grid
    segment_name: str
    settings: RefineSettings
    intensity: IntensitySpec
    source: Optional[dict] = None  # which segment is refined (segmentation node, segment name and ID): provenance


@dataclass
class RefineOutcome:
    request: RefineRequest
    refined: np.ndarray  # bool [k, j, i]
    result: RefineResult


def _slices(mask: np.ndarray, np_axis: int) -> np.ndarray:
    return np.moveaxis(mask, np_axis, 0)


def refine_selected(session, np_axis: Optional[int] = None, settings: Optional[RefineSettings] = None) -> int:
    """Start refining the session's selected segment (checked here, on the GUI thread, before any work). ``np_axis``:
    the slicing axis (default: the source volume's axial one). Returns the job id."""
    if session.busy:
        raise BridgeError("the model is still working: wait for it or press Stop before refining")
    if session.has_preview:
        raise BridgeError("a preview is shown: Apply or Cancel the preview first, then refine the segment")
    segmentation, segment_id = session.segmentation_node, session.segment_id
    if segmentation is None or not segment_id or segmentation.GetSegmentation().GetSegment(segment_id) is None:
        raise BridgeError("no segment is selected: select the segment to refine in the Segment Editor")
    snapshot = session.snapshot()
    name = segmentation.GetSegmentation().GetSegment(segment_id).GetName()
    original = segment_mask(segmentation, segment_id, snapshot.volume)
    if not original.any():
        raise BridgeError(f"segment {name!r} of {segmentation.GetName()!r} is empty: nothing to refine (Refine "
                          f"corrects an existing segment, e.g. another tool's; segment the structure first)")
    axis = numpy_axis("axial", snapshot.volume.ijk_to_ras) if np_axis is None else int(np_axis)
    from samed.core.refine import RefineSettings

    s = settings or RefineSettings()
    s.validate()
    intensity = session.intensity()
    session._drop()  # prompts whose masks came out empty: gone; a new generation for this result
    source = {"segmentation": segmentation.GetName(), "segment": name, "segment_id": segment_id}
    request = RefineRequest(session.generation, snapshot, axis, original, name, s, intensity, source)
    provider, sessions = session.provider, session.sessions
    job = session.worker.submit(lambda ctx: run_refinement(provider, sessions, request, ctx), label=f"refine {name}")
    n = int(_slices(original, axis).any(axis=(1, 2)).sum())
    session.pending[job] = "refine"
    session.progress = (0, n)
    session.status = f"refining {name!r} on {n} slices..."
    return job


def run_refinement(provider, sessions: VolumeSessions, request: RefineRequest, context=None) -> RefineOutcome:
    """The worker's side (no MRML node is touched): refine_mask through the provider's backend."""
    from samed.core.refine import RefineCancelled, refine_mask

    backend = provider.get()
    volume_session = sessions.get(request.snapshot, request.np_axis, request.intensity, backend)
    try:
        refined, result = refine_mask(backend, volume_session.picture, request.original, request.np_axis,
                                      request.settings, progress=context.progress if context is not None else None,
                                      should_cancel=context.cancelled if context is not None else None)
    except RefineCancelled:
        raise JobCancelled(f"refine {request.segment_name}") from None
    return RefineOutcome(request, refined, result)


def changed_slices(original: np.ndarray, refined: np.ndarray, np_axis: int) -> List[int]:
    a, b = _slices(original, np_axis), _slices(refined, np_axis)
    return [i for i in range(a.shape[0]) if not np.array_equal(a[i], b[i])]


def accept_refinement(session, outcome: RefineOutcome) -> str:
    """Show a refinement (GUI thread): the changed slices become the preview. Returns the status message."""
    request, result = outcome.request, outcome.result
    session.progress = None
    changed = changed_slices(request.original, outcome.refined, request.np_axis)
    refined = _slices(outcome.refined, request.np_axis)
    session.np_axis = request.np_axis
    session.masks = {i: refined[i].copy() for i in changed}
    session.slice_kinds = {i: REFINED for i in changed}
    # what Apply records (apply_provenance): kept with this preview's generation, so a later preview never takes it
    session.refinement = (session.generation, refinement_record(request.source or {"segment": request.segment_name},
                                                                changed, request.settings, result.check.describe()))
    what = f"{request.segment_name!r}: {result.check.describe()}"
    if not changed:
        return f"{what}; no slice changed: nothing to apply"
    session._show_preview()
    node = getattr(session.preview, "node", None)
    if node is not None:  # the preview node says which slices are which (as the status does)
        node.SetAttribute(SLICE_KINDS_ATTRIBUTE, f"{REFINED} {describe_slices(changed)}")
    return (f"{what}; preview on {len(changed)} of {len(result.choice)} slices ({describe_slices(changed)}). "
            f"Apply to replace the segment there.")


def apply_provenance(session, volume) -> Provenance:
    """What Apply stores as the segment's provenance: the prompts and walk of the preview, and, when the preview
    holds a refinement (its slices marked ``refined``), the refinement's record (mode "refine": the source segment,
    the changed slices, the check, the settings) instead of a walk."""
    how = provenance_of(session.provider.current(), "kji"[session.np_axis], session.prompted, volume,
                        session.propagation)
    generation, record = getattr(session, "refinement", None) or (None, None)
    if record is not None and generation == session.generation and REFINED in session.slice_kinds.values():
        how.propagation = record
    return how
