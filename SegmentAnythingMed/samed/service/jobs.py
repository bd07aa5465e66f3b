"""Propagation jobs: a slab of slice pictures and a seed mask go up, ``core.propagation.propagate`` walks through
them on the server in a worker thread, the client polls progress, may cancel, and fetches the masks.

A job's states: queued -> running -> done | cancelled | failed. A cancelled job still has a result (the slices
reached before the cancel). The uploaded pictures are dropped when the job ends; the result is kept for
``job_keep_seconds`` or until the client deletes the job.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np

from ..core.propagation import PropagationResult, PropagationSettings
from .slab import propagate_slab

log = logging.getLogger("samed.service")

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"
FINISHED = (DONE, CANCELLED, FAILED)


class JobNotFound(LookupError):
    pass


class TooManyJobs(RuntimeError):
    pass


@dataclass
class Job:
    id: str
    model: str
    pictures: Optional[np.ndarray]  # (N, H, W, 3) uint8: slices first_index .. first_index + N - 1
    first_index: int
    n_slices: int
    seed_index: int
    seed_mask: np.ndarray
    settings: PropagationSettings
    directions: Sequence[str]
    state: str = QUEUED
    done: int = 0
    total: int = 0
    error: Optional[str] = None
    result: Optional[PropagationResult] = None
    created: float = field(default_factory=time.time)
    finished: Optional[float] = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    slab_slices: int = 0
    # the job's share of the upload memory budget (``budget.Reservation``): the slab while it runs, then the
    # result's masks until the job is forgotten
    memory: Optional[object] = None
    seed_box: Optional[np.ndarray] = None  # the box the user drew on the seed slice (core.propagation.first_step)

    def __post_init__(self):
        self.slab_slices = 0 if self.pictures is None else len(self.pictures)

    def forget(self) -> None:
        """The job leaves the manager: its result's memory goes back to the budget."""
        if self.memory is not None:
            self.memory.release()

    def snapshot(self) -> Dict[str, object]:
        out = {"id": self.id, "model": self.model, "state": self.state, "done": self.done, "total": self.total,
               "error": self.error, "seed_index": self.seed_index,
               "first_index": self.first_index, "slab_slices": self.slab_slices,
               "seconds": round((self.finished or time.time()) - self.created, 3)}
        if self.result is not None:
            out["stopped"] = dict(self.result.stopped)
            out["indices"] = [int(i) for i in self.result.indices]
        return out


class JobManager:
    def __init__(self, workers: int = 2, max_active: int = 8, keep_seconds: float = 900.0, max_kept: int = 64):
        self._pool = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="samed-job")
        self._jobs: Dict[str, Job] = {}
        self._lock = threading.Lock()
        self.max_active = int(max_active)
        self.keep_seconds = float(keep_seconds)
        self.max_kept = int(max_kept)

    # ---- bookkeeping -----------------------------------------------------------------------------------------
    def _purge(self) -> None:
        """Forget finished jobs past their keep time, and the oldest beyond ``max_kept`` (lock held)."""
        now = time.time()
        finished = sorted((j for j in self._jobs.values() if j.state in FINISHED), key=lambda j: j.finished or 0)
        for i, j in enumerate(finished):
            if now - (j.finished or now) > self.keep_seconds or i < len(finished) - self.max_kept:
                del self._jobs[j.id]
                j.forget()

    def stats(self) -> Dict[str, int]:
        with self._lock:
            self._purge()
            states = [j.state for j in self._jobs.values()]
            held = sum(getattr(j.memory, "n", 0) for j in self._jobs.values())
        return {"active": sum(s in (QUEUED, RUNNING) for s in states), "kept": len(states),
                "max_active": self.max_active, "memory_bytes": int(held)}

    def get(self, job_id: str) -> Job:
        with self._lock:
            self._purge()
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no propagation job {job_id[:40]!r} here: it finished more than "
                              f"{self.keep_seconds:.0f} s ago, was deleted, or the service restarted")
        return job

    # ---- life of a job ---------------------------------------------------------------------------------------
    def submit(self, backend, pictures: np.ndarray, first_index: int, n_slices: int, seed_index: int,
               seed_mask: np.ndarray, settings: PropagationSettings, directions: Sequence[str],
               memory: Optional[object] = None, seed_box=None) -> Job:
        job = Job(uuid.uuid4().hex, backend.model, pictures, first_index, n_slices, seed_index, seed_mask,
                  settings, tuple(directions), memory=memory, seed_box=seed_box)
        with self._lock:
            self._purge()
            active = sum(j.state in (QUEUED, RUNNING) for j in self._jobs.values())
            if active >= self.max_active:
                raise TooManyJobs(f"{active} propagation jobs are already queued or running on this service "
                                  f"(limit {self.max_active}): wait for one to finish and try again")
            self._jobs[job.id] = job
        self._pool.submit(self._run, backend, job)
        log.info("job %s: propagate %s from slice %d over slices %d..%d", job.id, job.model, seed_index,
                 first_index, first_index + len(pictures) - 1)
        return job

    def _run(self, backend, job: Job) -> None:
        job.state = RUNNING
        state = FAILED

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            result = propagate_slab(backend, job.pictures, job.first_index, job.n_slices, job.seed_index,
                                    job.seed_mask, job.settings, job.directions, progress, job.cancel_requested.is_set,
                                    job.seed_box)
            job.result = result
            cancelled = any(str(why).startswith("cancelled") for why in result.stopped.values())
            state = CANCELLED if cancelled else DONE
        except Exception as exc:  # the job thread must record every failure; the client reads job.error
            log.exception("job %s failed", job.id)
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.pictures = None  # the slab can be large; the result is all that is needed now
            if job.memory is not None:
                kept = sum(m.nbytes for m in job.result.masks.values()) if job.result is not None else 0
                job.memory.shrink_to(kept)
            job.finished = time.time()
            job.state = state  # last: a client that sees a finished state finds everything else in place
            with self._lock:
                deleted = job.id not in self._jobs
            if deleted:  # deleted while running: nobody will fetch the result (forget() is idempotent)
                job.forget()

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel_requested.set()
        return job

    def delete(self, job_id: str) -> Job:
        """Cancel the job and forget it (its result too)."""
        job = self.cancel(job_id)
        with self._lock:
            self._jobs.pop(job.id, None)
        if job.state in FINISHED:
            job.forget()
        return job

    def shutdown(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for j in jobs:
            j.cancel_requested.set()
        self._pool.shutdown(wait=True)
