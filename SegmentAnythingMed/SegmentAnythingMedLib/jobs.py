"""What runs in the worker thread: a prompt on one slice, a propagation. No MRML node is touched here.

A request carries a snapshot of the source volume (a ``samed.core.geometry.Volume`` with its own voxel copy), the
slicing axis and the intensity preprocessing; :class:`VolumeSessions` keeps one ``samed.core.VolumeSession`` per
(volume snapshot, axis, intensity, backend), so each slice is preprocessed once and the backend's embedding cache
serves repeated prompts on a slice without encoding it again.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from samed.core.geometry import Volume
from samed.core.preprocess import IntensityWindow
from samed.core.prompts import Prediction, Prompt
from samed.core.propagation import PropagationResult, PropagationSettings
from samed.core.volume_session import VolumeSession

from .volume_bridge import VOXEL_AXIS_NAMES


@dataclass(frozen=True)
class IntensitySpec:
    """How slices become pictures: a samed preprocessing mode, or an explicit window (e.g. the display's)."""

    mode: str = "auto"
    window: Optional[IntensityWindow] = None
    modality: Optional[str] = None

    def key(self) -> Tuple:
        w = self.window
        return (self.mode, self.modality) + ((w.low, w.high) if w is not None else ())


@dataclass
class VolumeSnapshot:
    """The source volume as the worker sees it; ``key`` changes whenever its voxels or geometry change."""

    volume: Volume
    key: Tuple


class VolumeSessions:
    """A few recent VolumeSessions (thread-safe)."""

    def __init__(self, keep: int = 4):
        self._sessions: "OrderedDict[Tuple, VolumeSession]" = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def get(self, snapshot: VolumeSnapshot, np_axis: int, intensity: IntensitySpec, backend) -> VolumeSession:
        key = (snapshot.key, np_axis, intensity.key(), id(backend))
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
        session = VolumeSession(snapshot.volume, backend, axis=VOXEL_AXIS_NAMES[np_axis],
                                intensity=intensity.window,
                                intensity_mode=intensity.mode if intensity.window is None else "auto",
                                modality=intensity.modality)
        with self._lock:
            self._sessions[key] = session
            while len(self._sessions) > self._keep:
                self._sessions.popitem(last=False)
        return session

    def peek(self, snapshot: VolumeSnapshot, np_axis: int, intensity: IntensitySpec, backend) -> Optional[VolumeSession]:
        """The session if one exists already (making one computes the intensity window over the whole volume:
        not something to do on the GUI thread)."""
        with self._lock:
            return self._sessions.get((snapshot.key, np_axis, intensity.key(), id(backend)))

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()


@dataclass
class PromptRequest:
    generation: int
    snapshot: VolumeSnapshot
    np_axis: int
    index: int
    prompt: Prompt
    intensity: IntensitySpec
    multimask: Optional[bool] = None


@dataclass
class PromptResult:
    request: PromptRequest
    prediction: Prediction  # candidates best first


@dataclass
class PropagationRequest:
    generation: int
    snapshot: VolumeSnapshot
    np_axis: int
    seed_index: int
    seed_mask: np.ndarray
    settings: PropagationSettings
    directions: Sequence[str]
    intensity: IntensitySpec
    merge_direction: Optional[str] = None  # re-propagation from a corrected slice: the side it replaces
    seed_box: Optional[np.ndarray] = None  # the box the user drew on the seed slice, if any


@dataclass
class PropagationOutcome:
    request: PropagationRequest
    result: PropagationResult


def run_prompt(provider, sessions: VolumeSessions, request: PromptRequest, context=None) -> PromptResult:
    backend = provider.get()
    if context is not None:
        context.check()
    session = sessions.get(request.snapshot, request.np_axis, request.intensity, backend)
    prediction = session.segment_slice(request.index, request.prompt, request.multimask)
    return PromptResult(request, prediction.sorted())


def run_propagation(provider, sessions: VolumeSessions, request: PropagationRequest, context=None) -> PropagationOutcome:
    backend = provider.get()
    session = sessions.get(request.snapshot, request.np_axis, request.intensity, backend)
    progress = context.progress if context is not None else None
    should_cancel = context.cancelled if context is not None else None
    result = session.propagate(request.seed_index, request.seed_mask, request.settings, request.directions,
                               progress=progress, should_cancel=should_cancel, seed_box=request.seed_box)
    return PropagationOutcome(request, result)


def masks_summary(masks: Dict[int, np.ndarray]) -> str:
    filled = sorted(i for i, m in masks.items() if np.any(m))
    if not filled:
        return "no slices"
    return f"slice {filled[0]}" if len(filled) == 1 else f"{len(filled)} slices ({filled[0]}..{filled[-1]})"
