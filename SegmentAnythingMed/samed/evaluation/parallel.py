"""Sharing the pictures of a run among several backends: worker processes that pull the next picture when free.

Each worker process builds its own backend from a picklable factory (worker ``i`` takes factory
``i % len(factories)``: with several service URLs the workers go round the URLs). Workers pull pictures from a
shared queue, so a fast backend takes more of them than a slow one; results come back to the parent, which
alone writes the output folder. Processes are started with "spawn" (safe with torch and threads); each worker's
in-process engine gets an equal share of the cores (``OMP_NUM_THREADS``, unless already set).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
import traceback
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

from ..core.backend import BackendError
from .tasks import Task

_STOP = None
_POLL = 0.2


class WorkerError(BackendError):
    """A worker process failed; the message carries its traceback."""


def _worker(index: int, factory: Callable, names: Dict[int, str], dataset: str, settings, tasks, results,
            threads: int) -> None:
    import os
    import signal

    from .runner import evaluate_task

    # Ctrl-C reaches the whole process group: the parent alone handles it (keeps the finished rows, ends the
    # workers); a worker that stopped on its own would only race the parent's clean-up. SIGTERM keeps its default.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # share the cores among the workers' in-process engines (read by torch when the factory imports it)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    try:
        backend = factory()
    except Exception as exc:  # noqa: BLE001  (reported to the parent, which raises it)
        results.put(("fatal", index, f"worker {index} could not create its backend: {exc}"))
        return
    results.put(("ready", index, (backend.model, frozenset(backend.prompt_kinds()))))
    try:
        while True:
            task = tasks.get()
            if task is _STOP:
                break
            try:
                rows = evaluate_task(backend, task, settings.modes, names, dataset, settings=settings)
            except Exception:  # noqa: BLE001  (reported to the parent, which raises it)
                results.put(("error", index, f"picture {task.key}:\n{traceback.format_exc()}"))
                break
            results.put(("done", index, (task.key, rows)))
    finally:
        backend.close()


def run_parallel(tasks: Iterable[Task], factories: Sequence[Callable], workers: int, names: Dict[int, str],
                 dataset: str, settings, on_ready: Callable[[str, frozenset], None],
                 on_done: Callable[[str, List[dict]], None]) -> None:
    """Evaluate ``tasks`` in ``workers`` processes; ``on_done(key, rows)`` runs in this process per picture."""
    ctx = mp.get_context("spawn")
    task_q = ctx.Queue(maxsize=2 * workers)
    result_q = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=(i, factories[i % len(factories)], names, dataset, settings, task_q, result_q, threads))
             for i in range(workers)]
    for p in procs:
        p.start()
    pending = 0
    ready = set()

    def handle(message: Tuple) -> None:
        nonlocal pending
        kind, index, payload = message
        if kind in ("fatal", "error"):
            raise WorkerError(payload)
        if kind == "ready":
            ready.add(index)
            on_ready(*payload)
        elif kind == "done":
            pending -= 1
            on_done(*payload)

    def drain(block: bool) -> None:
        try:
            handle(result_q.get(timeout=_POLL) if block else result_q.get_nowait())
            while True:
                handle(result_q.get_nowait())
        except queue.Empty:
            if block and not any(p.is_alive() for p in procs):
                raise WorkerError("every worker process ended before the run finished") from None

    try:
        for task in tasks:
            while True:
                drain(block=False)
                try:
                    task_q.put(task, timeout=_POLL)
                    pending += 1
                    break
                except queue.Full:
                    if not any(p.is_alive() for p in procs):
                        drain(block=False)
                        raise WorkerError("every worker process ended before the run finished") from None
        while pending > 0:
            drain(block=True)
        for _ in procs:
            task_q.put(_STOP)
        deadline = time.monotonic() + 30
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        # on Ctrl-C / SIGTERM / an error: the queue's feeder thread may be blocked writing tasks that no worker
        # will read; without this, exiting waits for it forever
        task_q.cancel_join_thread()
        result_q.cancel_join_thread()
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
