"""Model inference off the GUI thread: one worker thread, a job queue in, an event queue out.

The GUI thread submits jobs (plain functions that take a :class:`JobContext` and touch no MRML node) and polls for
events (``poll()``, in Slicer from a ``qt.QTimer``); results are applied to the scene on the GUI thread. A job
reports progress through ``context.progress(done, total)`` and checks ``context.cancelled()``.

``submit(..., replace=KEY)`` drops jobs of the same key that are still queued: when the user clicks several times
while the model is busy, only the newest prompt runs.

Events wait in the worker until their owner polls them; of a job's progress events only the newest is kept, and
events that nobody collected within ``keep_seconds`` (their owner was cancelled or closed) are dropped.

Slicer's main thread holds the GIL while Qt's event loop idles (PythonQt releases it only around Python code), so
this thread runs only while the main thread executes Python that lets go of it: :func:`yield_gil` in the poll
timer's slot sleeps a little while a job runs (see tests/test_slicer_gil.py).
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional

DONE, FAILED, CANCELLED, PROGRESS = "done", "failed", "cancelled", "progress"


class JobCancelled(Exception):
    """Raised inside a job (by ``context.check()``) when it was cancelled."""


@dataclass
class JobEvent:
    job_id: int
    kind: str  # done / failed / cancelled / progress
    label: str = ""
    value: Any = None  # the job's return value (done), (done, total) (progress)
    error: Optional[BaseException] = None
    details: str = ""  # traceback text for failures
    arrived: float = field(default=0.0, compare=False, repr=False)  # when poll() first took it (worker's clock)


@dataclass
class _Job:
    job_id: int
    label: str
    function: Callable[["JobContext"], Any]
    replace: Optional[str]
    cancel_event: threading.Event = field(default_factory=threading.Event)


class JobContext:
    def __init__(self, job: _Job, events: "queue.Queue[JobEvent]"):
        self._job = job
        self._events = events

    @property
    def job_id(self) -> int:
        return self._job.job_id

    def cancelled(self) -> bool:
        return self._job.cancel_event.is_set()

    def check(self) -> None:
        if self.cancelled():
            raise JobCancelled(self._job.label)

    def progress(self, done: int, total: int) -> None:
        self._events.put(JobEvent(self._job.job_id, PROGRESS, self._job.label, (int(done), int(total))))


GIL_YIELD_SECONDS = 0.02


def yield_gil(busy: bool, seconds: float = GIL_YIELD_SECONDS) -> None:
    """Call in a poll timer's slot on Slicer's main thread: while a job runs (``busy``), sleep ``seconds`` so that
    the worker thread gets the GIL. Slicer's main thread keeps the GIL while Qt's event loop idles; a
    ``time.sleep`` releases it. SimpleITK's SlicerSimpleFilters does the same in its timer
    (SimpleFilters/SimpleFilters.py, ``main_queue_process``: "this sleep is needed to allow the other thread to
    acquire the GIL and resume executing")."""
    if busy:
        time.sleep(seconds)


class InferenceWorker:
    """One daemon thread that runs submitted jobs in order. ``keep_seconds``: how long an event waits for its
    owner's poll before it is dropped; ``clock``: the time source for that (tests)."""

    def __init__(self, name: str = "SegmentAnythingMed inference", keep_seconds: float = 600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.keep_seconds = float(keep_seconds)
        self._clock = clock
        self._jobs: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._events: "queue.Queue[JobEvent]" = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._queued: Dict[int, _Job] = {}
        self._running: Optional[_Job] = None
        self._undelivered: List[JobEvent] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # GUI thread -----------------------------------------------------------------------------------------------

    def submit(self, function: Callable[[JobContext], Any], label: str = "", replace: Optional[str] = None) -> int:
        job = _Job(next(self._ids), label, function, replace)
        with self._lock:
            if replace is not None:
                for other in list(self._queued.values()):
                    if other.replace == replace:
                        other.cancel_event.set()
            self._queued[job.job_id] = job
        self._jobs.put(job)
        return job.job_id

    def cancel(self, job_id: Optional[int] = None) -> None:
        """Cancel one job (queued or running), or all of them."""
        with self._lock:
            jobs = list(self._queued.values()) + ([self._running] if self._running else [])
        for job in jobs:
            if job_id is None or job.job_id == job_id:
                job.cancel_event.set()

    def busy(self) -> bool:
        with self._lock:
            return bool(self._queued) or self._running is not None

    def poll(self, job_ids: Optional[Iterable[int]] = None) -> List[JobEvent]:
        """Events since the last poll (never blocks): of ``job_ids`` only, when given (other callers' events
        stay for them)."""
        wanted = None if job_ids is None else set(job_ids)
        now = self._clock()
        with self._lock:
            while True:
                try:
                    event = self._events.get_nowait()
                except queue.Empty:
                    break
                event.arrived = now
                self._undelivered.append(event)
            out, kept = [], []
            for e in self._undelivered:
                if wanted is None or e.job_id in wanted:
                    out.append(e)
                elif now - e.arrived <= self.keep_seconds:  # another caller's: kept a while, then dropped
                    if e.kind == PROGRESS:  # of waiting progress events only the newest matters
                        kept = [k for k in kept if not (k.job_id == e.job_id and k.kind == PROGRESS)]
                    kept.append(e)
            self._undelivered = kept
        return out

    def wait(self, job_id: int, timeout: float = 600.0) -> List[JobEvent]:
        """Block until ``job_id`` has finished; its events (for scripts, tests and self-tests)."""
        deadline = time.monotonic() + timeout
        out: List[JobEvent] = []
        while True:
            out += self.poll([job_id])
            if any(e.kind != PROGRESS for e in out):
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout:g} s")
            time.sleep(0.01)

    def shutdown(self, timeout: float = 5.0) -> None:
        self.cancel()
        self._jobs.put(None)
        self._thread.join(timeout)

    # worker thread --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._queued.pop(job.job_id, None)
                self._running = job
            try:
                if job.cancel_event.is_set():
                    raise JobCancelled(job.label)
                value = job.function(JobContext(job, self._events))
                if job.cancel_event.is_set():
                    raise JobCancelled(job.label)
                event = JobEvent(job.job_id, DONE, job.label, value)
            except JobCancelled:
                event = JobEvent(job.job_id, CANCELLED, job.label)
            except Exception as exc:  # every failure goes back to the GUI thread to be shown
                event = JobEvent(job.job_id, FAILED, job.label, error=exc, details=traceback.format_exc())
            with self._lock:
                self._running = None
            self._events.put(event)


_shared: Optional[InferenceWorker] = None
_shared_lock = threading.Lock()


def shared_worker() -> InferenceWorker:
    """The worker that the module panel and the effect share: one model pass at a time in a Slicer session."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared._thread.is_alive():
            _shared = InferenceWorker()
        return _shared
