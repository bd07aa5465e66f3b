"""Propagate from several key slices in the effect: the session's side of ``samed.core.key_slices``.

When the user has prompted (a box, points, markups: the mask shown on that slice is accepted) two or more slices
of one slicing direction, Propagate does not walk from the last prompt alone: every prompted slice is a *key
slice* and :func:`samed.core.key_slices.segment_from_key_slices` fills the slices between two keys from both
sides and walks beyond the outermost ones with the measured stop rules. A prompt on another slice while a
propagated preview exists adds a key slice; Propagate again recomputes the preview between and around all keys.
A prompted slice whose mask is empty says "the object is absent here" (the core's meaning: a walk or fill stops
before it).

The work runs in the worker as a job, like the one-slice walk, through whichever backend the provider holds (in
process, or the model service through the torch-free client: one segment call per slice, as the walk does). The
preview marks each slice (:attr:`EditSession.slice_kinds`: key, interpolated or walked), and the status says
which slices are which and why each end stopped.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from samed.core.key_slices import WALK_RULES_MORE_KEYS, KeySliceResult, KeySliceSettings, segment_from_key_slices
from samed.core.propagation import PropagationResult, PropagationSettings
from samed.core.volume_session import finite_run

from .errors import BridgeError
from .jobs import IntensitySpec, VolumeSessions, VolumeSnapshot, masks_summary


SLICE_KINDS_ATTRIBUTE = "SegmentAnythingMed.SliceKinds"  # on the preview node: "key 10, 14; interpolated 11..13"


@dataclass
class KeySliceRequest:
    generation: int
    snapshot: VolumeSnapshot
    np_axis: int
    key_masks: Dict[int, np.ndarray]  # slice -> the accepted mask there (empty: absent)
    settings: KeySliceSettings
    intensity: IntensitySpec
    key_boxes: Dict[int, np.ndarray] = dataclasses.field(default_factory=dict)  # slice -> the user's box there


@dataclass
class KeySliceOutcome:
    request: KeySliceRequest
    result: KeySliceResult


def key_slices_of(session) -> Dict[int, np.ndarray]:
    """The prompted slices of the session's slicing direction with the mask accepted on each (copies)."""
    return {i: np.asarray(session.masks[i], bool).copy() for i in sorted(session.prompted) if i in session.masks}


def user_box(session, index: int) -> Optional[np.ndarray]:
    """The box the user drew on slice ``index`` of the session's slicing direction (None: none, or points
    only): a walk leaving that slice starts from it where the model's mask fills it poorly."""
    box = getattr(session.prompted.get(index), "box_xy", None)
    return None if box is None else np.asarray(box, float)


def key_slice_settings(propagation: PropagationSettings, index_range) -> KeySliceSettings:
    """The walk beyond one key: the session's rules; beyond two or more: the measured rules
    (``WALK_RULES_MORE_KEYS``) except where the session's options change one from its default (as the CLI does)."""
    defaults, rules = PropagationSettings(), dict(WALK_RULES_MORE_KEYS)
    for f in dataclasses.fields(PropagationSettings):
        value = getattr(propagation, f.name)
        if f.name != "index_range" and value != getattr(defaults, f.name):
            rules[f.name] = value
    more_keys = dataclasses.replace(PropagationSettings(), **rules)
    return KeySliceSettings(walk=dataclasses.replace(propagation, index_range=None), walk_more_keys=more_keys,
                            index_range=index_range)


def submit_key_slices(session, keys: Dict[int, np.ndarray]) -> int:
    """Start the key-slice propagation job for ``keys`` (checked here, on the GUI thread, before any work)."""
    if not any(m.any() for m in keys.values()):
        raise BridgeError(f"the prompts on slices {', '.join(map(str, keys))} all gave empty masks: prompt the "
                          f"structure on at least one slice")
    snapshot = session.snapshot()
    array = snapshot.volume.array
    lo, hi = session.propagation_range() or (0, array.shape[session.np_axis] - 1)
    first = min(i for i, m in keys.items() if m.any())
    f_lo, f_hi = finite_run(array, session.np_axis, first)  # slices without a finite voxel stop everything
    lo, hi = max(lo, f_lo), min(hi, f_hi)
    outside = [i for i in keys if not lo <= i <= hi]
    if outside:
        raise BridgeError(f"key slice(s) {', '.join(map(str, outside))} lie outside the propagation range "
                          f"{lo}..{hi}: widen the range, or Cancel and prompt inside it")
    settings = key_slice_settings(session.options.propagation, (lo, hi))
    boxes = {i: user_box(session, i) for i in keys if user_box(session, i) is not None}
    request = KeySliceRequest(session.generation, snapshot, session.np_axis, keys, settings, session.intensity(),
                              boxes)
    provider, sessions = session.provider, session.sessions
    job = session.worker.submit(lambda ctx: run_key_slices(provider, sessions, request, ctx),
                                label=f"propagate from key slices {', '.join(map(str, keys))}")
    session.pending[job] = "propagate"
    session.progress = (0, 0)
    session.status = f"propagating from key slices {', '.join(map(str, keys))} ({lo}..{hi})..."
    return job


def run_key_slices(provider, sessions: VolumeSessions, request: KeySliceRequest, context=None) -> KeySliceOutcome:
    """The worker's side: fill in the structure from the key slices (no MRML node is touched)."""
    backend = provider.get()
    volume_session = sessions.get(request.snapshot, request.np_axis, request.intensity, backend)
    result = segment_from_key_slices(backend, volume_session.picture, volume_session.n_slices, request.key_masks,
                                     request.settings, progress=context.progress if context is not None else None,
                                     should_cancel=context.cancelled if context is not None else None,
                                     key_boxes=request.key_boxes)
    return KeySliceOutcome(request, result)


def describe_slices(indices) -> str:
    """``[3, 4, 5, 9]`` -> ``"3..5, 9"``."""
    runs: List[List[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def describe_kinds(kinds: Dict[int, str]) -> str:
    """``"key 10, 14; interpolated 11..13; walked 5..9"`` for slice -> kind."""
    by_kind: Dict[str, List[int]] = {}
    for i, kind in kinds.items():
        by_kind.setdefault(kind, []).append(i)
    return "; ".join(f"{kind} {describe_slices(by_kind[kind])}" for kind in ("key", "interpolated", "walked", "absent")
                     if kind in by_kind)


def accept_key_slices(session, outcome: KeySliceOutcome) -> Optional[str]:
    """Show a key-slice result (GUI thread): it replaces every propagated slice of the preview; the prompted
    slices keep the masks the user accepted. Returns the status message."""
    request, result = outcome.request, outcome.result
    session.progress = None
    if request.np_axis != session.np_axis:
        return "propagation result dropped: the slicing direction changed meanwhile"
    for index in list(session.masks):
        if index not in session.prompted:
            session.masks.pop(index)
    session.masks.update({i: m for i, m in result.masks.items() if i not in session.prompted})
    # what the one-slice walk keeps there too; its seed: the first key slice that holds the object
    first = min(i for i, m in request.key_masks.items() if m.any())
    session.propagation = PropagationResult(first, dict(result.masks), dict(result.scores), dict(result.stopped))
    kinds = {i: k.split()[0] for i, k in result.kinds.items()}
    kinds.update({i: "absent" for i, m in request.key_masks.items() if not m.any()})
    session.slice_kinds = kinds
    session._show_preview()
    node = getattr(session.preview, "node", None)
    if node is not None:  # the preview node says which slices are which (as the status does)
        node.SetAttribute(SLICE_KINDS_ATTRIBUTE, describe_kinds(kinds))
    stops = "; ".join(f"{end}: {why}" for end, why in result.stopped.items())
    return (f"preview on {masks_summary(session.masks)}: {describe_kinds(kinds)} (stopped {stops}). "
            f"Apply to keep it.")
