"""Propagation as a job, the same way for every backend (torch-free).

:func:`start_propagation` returns a :class:`PropagationJob` at once: the model service runs it on the server
(:class:`samed.client.http.HttpBackend`), any other backend (the in-process engine) in a worker thread here.
Either way the caller (e.g. Slicer's GUI thread, from a timer) polls :meth:`PropagationJob.progress`, may
:meth:`~PropagationJob.cancel`, and takes :meth:`~PropagationJob.result` when it has finished::

    job = start_propagation(backend, pictures, seed_index, seed_mask, settings)
    while not job.progress().finished:   # in Slicer: a QTimer instead of a loop
        ...
    result = job.result()                # a core.propagation.PropagationResult
"""
from __future__ import annotations

import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..core.propagation import PropagationResult, PropagationSettings
from ..service.slab import needed_slab, propagate_slab
from .errors import JobFailedError, JobTimeoutError

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"
FINISHED = (DONE, CANCELLED, FAILED)


@dataclass(frozen=True)
class JobProgress:
    state: str  # queued, running, done, cancelled, failed
    done: int  # slices visited so far
    total: int  # most slices the walk could visit (0 until known)
    error: Optional[str] = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def fraction(self) -> float:
        if self.finished:
            return 1.0
        return self.done / self.total if self.total else 0.0


class PropagationJob(ABC):
    id: str

    @abstractmethod
    def progress(self) -> JobProgress:
        """The job's state now (cheap: poll it from a timer)."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop after the current slice; :meth:`result` then holds the slices reached."""

    @abstractmethod
    def result(self, timeout: Optional[float] = None) -> PropagationResult:
        """Wait up to ``timeout`` seconds (None: as long as it takes) for the job and return its masks.
        Raises :class:`JobFailedError` if it failed, :class:`JobTimeoutError` if still running."""


def check_pictures(pictures, seed_index: int, seed_mask, first_index: int, n_slices: Optional[int]):
    arr = np.asarray(pictures)
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"pictures must be (N, H, W, 3) uint8 slice pictures, got {arr.dtype} {arr.shape}")
    mask = np.asarray(seed_mask).astype(bool)
    if mask.shape != arr.shape[1:3]:
        raise ValueError(f"the seed mask has shape {mask.shape}, the slices are {arr.shape[1:3]}")
    n_slices = first_index + len(arr) if n_slices is None else int(n_slices)
    if first_index < 0 or first_index + len(arr) > n_slices:
        raise ValueError(f"pictures for slices {first_index}..{first_index + len(arr) - 1} do not fit a volume of "
                         f"{n_slices} slices")
    if not first_index <= seed_index < first_index + len(arr):
        raise ValueError(f"seed slice {seed_index} is not among the pictures (slices {first_index}.."
                         f"{first_index + len(arr) - 1})")
    if not mask.any():
        raise ValueError(f"the seed mask on slice {seed_index} is empty: nothing to propagate")
    return arr, mask, n_slices


class ThreadPropagationJob(PropagationJob):
    """Propagation with an in-process backend, in a daemon worker thread."""

    def __init__(self, backend, pictures, seed_index: int, seed_mask, settings: Optional[PropagationSettings] = None,
                 directions: Sequence[str] = ("up", "down"), first_index: int = 0, n_slices: Optional[int] = None,
                 seed_box=None):
        pictures, seed_mask, n_slices = check_pictures(pictures, seed_index, seed_mask, first_index, n_slices)
        settings = settings or PropagationSettings()
        settings.validate()
        needed_slab(n_slices, seed_index, settings, directions)  # raises for a seed outside the range
        self.id = uuid.uuid4().hex
        self._state, self._done, self._total, self._error = RUNNING, 0, 0, None
        self._result: Optional[PropagationResult] = None
        self._cancel = threading.Event()
        args = (backend, pictures, first_index, n_slices, seed_index, seed_mask, settings, tuple(directions), seed_box)
        self._thread = threading.Thread(target=self._run, args=args, name=f"samed-propagation-{self.id[:8]}",
                                        daemon=True)
        self._thread.start()

    def _run(self, backend, pictures, first_index, n_slices, seed_index, seed_mask, settings, directions, seed_box):
        def progress(done, total):
            self._done, self._total = done, total

        try:
            self._result = propagate_slab(backend, pictures, first_index, n_slices, seed_index, seed_mask, settings,
                                          directions, progress, self._cancel.is_set, seed_box)
            cancelled = any(str(v).startswith("cancelled") for v in self._result.stopped.values())
            self._state = CANCELLED if cancelled else DONE
        except Exception as exc:  # reported through progress() and result(), like a server job's failure
            self._error = f"{type(exc).__name__}: {exc}"
            self._state = FAILED

    def progress(self) -> JobProgress:
        return JobProgress(self._state, self._done, self._total, self._error)

    def cancel(self) -> None:
        self._cancel.set()

    def result(self, timeout: Optional[float] = None) -> PropagationResult:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise JobTimeoutError(f"propagation is still running after {timeout:g} s ({self._done}/{self._total} "
                                  f"slices): call result() again, or cancel()")
        if self._state == FAILED or self._result is None:
            raise JobFailedError(f"propagation failed: {self._error}")
        return self._result


def start_propagation(backend, pictures, seed_index: int, seed_mask, settings: Optional[PropagationSettings] = None,
                      directions: Sequence[str] = ("up", "down"), first_index: int = 0,
                      n_slices: Optional[int] = None, seed_box=None) -> PropagationJob:
    """Propagate ``seed_mask`` from ``seed_index`` through ``pictures`` (slices ``first_index`` ..
    ``first_index + N - 1`` of a volume of ``n_slices``, default the pictures' own count) as a job.

    A backend with its own ``start_propagation`` (the model service) runs the job there; any other in a thread
    here. Use :func:`needed_slab` to make only the pictures a walk can reach. ``seed_box``: the box the user drew
    on the seed slice, if any (:func:`samed.core.propagation.first_step`).
    """
    starter = getattr(backend, "start_propagation", None)
    if callable(starter):
        return starter(pictures, seed_index, seed_mask, settings, directions, first_index=first_index,
                       n_slices=n_slices, seed_box=seed_box)
    return ThreadPropagationJob(backend, pictures, seed_index, seed_mask, settings, directions, first_index, n_slices,
                                seed_box)


__all__ = ["JobProgress", "PropagationJob", "ThreadPropagationJob", "start_propagation", "needed_slab",
           "check_pictures"]
