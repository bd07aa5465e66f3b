"""Sharing the pictures of a run among Dask workers: a ``LocalCluster`` here, or a cluster's scheduler.

Each worker builds its backend once, from a picklable factory, in a :class:`BackendPlugin` (a Dask
``WorkerPlugin``: also on workers that join later); a picture is a Dask task that evaluates it with that backend.
At most a few pictures per worker are in flight (pictures are read here as the run goes, not all at once), and
rows come back as each picture finishes (``as_completed``) to this process, which alone writes the output folder.
A ``LocalCluster`` has one process per worker, one thread each; each worker's in-process engine gets an equal
share of the cores (``OMP_NUM_THREADS``, unless already set). Several model services are one URL: put them behind
a consistent-hash proxy (docs/deploy.md).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from ..core.backend import BackendError
from .tasks import Task

PLUGIN_NAME = "samed-backend"
IN_FLIGHT_PER_WORKER = 2  # pictures queued per worker: enough to keep it busy, few enough to keep memory small


class WorkerError(BackendError):
    """A worker could not build its backend, or failed on a picture; the message says which and why."""


@dataclass(frozen=True)
class Cluster:
    """Where the pictures go: ``workers`` local processes (a ``LocalCluster``), or the cluster whose scheduler is at
    ``scheduler`` (``tcp://HOST:8786``; its workers need samed and the model installed)."""

    workers: int = 2
    scheduler: Optional[str] = None

    def __post_init__(self):
        if self.scheduler is None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.scheduler is not None and not self.scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
            raise ValueError(f"--scheduler must be a Dask scheduler address like tcp://HOST:8786, got "
                             f"{self.scheduler!r}")

    # BackendSource and evaluate_dataset (job.py) compare ``workers`` with 1: a Cluster compares as its number of
    # local workers; a scheduler's cluster as more than one (its size is the scheduler's to know)
    def _size(self) -> int:
        return self.workers if self.scheduler is None else 1 << 30

    def __lt__(self, other) -> bool:
        return self._size() < other

    def __gt__(self, other) -> bool:
        return self._size() > other


class BackendPlugin:
    """Builds the worker's backend once when the worker starts (or joins), closes it when the worker ends. A factory
    that fails is remembered and reported by the first picture on that worker (with the worker's address)."""

    name = PLUGIN_NAME

    def __init__(self, factory: Callable):
        self.factory = factory
        self.backend = None
        self.error: Optional[str] = None

    def setup(self, worker) -> None:
        try:
            self.backend = self.factory()
        except Exception as exc:  # noqa: BLE001  (reported by the worker's first picture)
            self.error = f"{type(exc).__name__}: {exc}"

    def teardown(self, worker) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


def _worker_plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    return type("SamedBackendPlugin", (BackendPlugin, WorkerPlugin), {})


def evaluate_on_worker(task: Task, names: Dict[int, str], dataset: str, settings):
    """One picture on a Dask worker with the worker's backend: (key, rows, model, prompt kinds)."""
    from distributed import get_worker

    from .runner import evaluate_task

    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if plugin is None or plugin.backend is None:
        why = plugin.error if plugin is not None else "the samed plugin is not registered there"
        raise WorkerError(f"Dask worker {worker.address} could not create its backend: {why}")
    backend = plugin.backend
    rows = evaluate_task(backend, task, settings.modes, names, dataset, settings=settings)
    return task.key, rows, backend.model, frozenset(backend.prompt_kinds())


def _start_client(cluster: Cluster):
    from distributed import Client, LocalCluster

    if cluster.scheduler is not None:
        return Client(cluster.scheduler, timeout="30s"), None
    threads = max(1, (os.cpu_count() or 1) // cluster.workers)
    # Ctrl-C reaches the whole process group: this process alone handles it (keeps the finished rows, closes the
    # cluster); the worker processes start with SIGINT ignored (inherited through spawn's exec), else each would
    # print a KeyboardInterrupt traceback. SIGTERM keeps its default (they end at once).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        local = LocalCluster(n_workers=cluster.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                             host="127.0.0.1", silence_logs=logging.ERROR,
                             env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads)),
                                  "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", str(threads))})
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGINT, previous)
    return Client(local), local


def _quiet_shutdown(client, local) -> None:
    """Close the client and the local cluster; the messages Dask logs about work cut short are expected here."""
    loggers = [logging.getLogger(n) for n in ("distributed", "tornado", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        client.close(timeout=10)
        if local is not None:
            local.close(timeout=10)
    except Exception:  # noqa: BLE001  (best effort: the run's outcome is already decided)
        pass
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def run_parallel(tasks: Iterable[Task], factories: Sequence[Callable], workers, names: Dict[int, str],
                 dataset: str, settings, on_ready: Callable[[str, frozenset], None],
                 on_done: Callable[[str, List[dict]], None]) -> None:
    """Evaluate ``tasks`` on Dask; ``on_done(key, rows)`` runs in this process per picture as it finishes.
    ``workers``: a :class:`Cluster`, or a number of local worker processes. ``factories``: one backend factory."""
    from distributed import as_completed

    if len(factories) != 1:
        raise ValueError(f"{len(factories)} backends given: Dask workers share one backend factory; to use several "
                         f"model services, put them behind a consistent-hash proxy (docs/deploy.md) and give its URL")
    cluster = workers if isinstance(workers, Cluster) else Cluster(int(workers))
    client, local = _start_client(cluster)
    try:
        client.register_plugin(_worker_plugin_class()(factories[0]), name=PLUGIN_NAME)
        n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        limit = IN_FLIGHT_PER_WORKER * n_workers
        pending = iter(tasks)
        running = as_completed()
        ready = False

        def submit_next() -> bool:
            task = next(pending, None)
            if task is None:
                return False
            running.add(client.submit(evaluate_on_worker, task, names, dataset, settings, key=f"samed-{task.key}",
                                      pure=False))
            return True

        for _ in range(limit):
            if not submit_next():
                break
        for future in running:
            try:
                key, rows, model, kinds = future.result()
            except WorkerError:
                raise
            except Exception as exc:  # noqa: BLE001  (a picture's failure on a worker: said with the picture)
                raise WorkerError(f"a Dask worker failed on picture {future.key[len('samed-'):]}: "
                                  f"{type(exc).__name__}: {exc}") from exc
            future.release()
            if not ready:
                on_ready(model, kinds)
                ready = True
            on_done(key, rows)
            submit_next()
    finally:
        _quiet_shutdown(client, local)
