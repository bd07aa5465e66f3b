"""An evaluation job: a dataset, settings, the backends to use and an output folder -> rows, summary, report.

``evaluate_dataset`` does the work (resuming from the folder, one backend in this process or several worker
processes); ``finish`` writes ``results.csv`` in dataset order, ``summary.json`` and ``report.html``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..core import io
from ..core.backend import Backend
from . import figures
from .analyses import analyse
from .examples import percentile_examples
from .parallel import run_parallel
from .runner import ROW_FIELDS, EvaluationRun, EvaluationSettings, evaluate_task, order_rows, pending_tasks
from .report import PROTOCOL_NOTES, write_report
from .statistics import DEFAULT_BOOTSTRAP
from .store import RESULTS_FILE, RunStore, volume_key, write_csv
from .tables import choose_primary, summarize, summarize_volumes, write_summary
from .tasks import iter_tasks
from .volumes import VOLUME_FIELDS, evaluate_volumes


class BackendSource:
    """Where backends come from: a picklable factory (the in-process engine, or the one service URL: several
    replicas sit behind a consistent-hash proxy, docs/deploy.md) that each Dask worker calls once
    (``parallel.py``; ``workers`` is a count or a ``parallel.Cluster``), or a ready ``backend`` used here."""

    def __init__(self, model: str, factories: Sequence[Callable[[], Backend]] = (), workers: int = 1,
                 backend: Optional[Backend] = None):
        if backend is None and not factories:
            raise ValueError("give a backend or at least one backend factory")
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        self.model = backend.model if backend is not None else model
        self.factories = list(factories)
        self.workers = workers if self.factories else 1
        self._backend = backend
        self._owned = backend is None
        self.prompt_kinds: Optional[frozenset] = None if backend is None else frozenset(backend.prompt_kinds())

    def main(self) -> Backend:
        """The backend of this process (created on first use)."""
        if self._backend is None:
            self._backend = self.factories[0]()
            self.prompt_kinds = frozenset(self._backend.prompt_kinds())
        return self._backend

    def close(self) -> None:
        if self._backend is not None and self._owned:
            self._backend.close()
            self._backend = None


def evaluate_dataset(dataset_path, settings: EvaluationSettings, source: BackendSource, out_dir,
                     restart: bool = False, progress: Optional[Callable[[int], None]] = None) -> EvaluationRun:
    """Evaluate every picture not yet finished in ``out_dir``; rows are appended there as pictures finish."""
    info = io.list_dataset(dataset_path)
    if settings.propagate and info.kind != "3d":
        raise ValueError(f"--propagate needs a 3D dataset (image.nrrd|nii.gz, label.*); {info.path} is a 2D set")
    store = RunStore(out_dir, settings.fingerprint(str(info.path.resolve()), source.model), ROW_FIELDS,
                     VOLUME_FIELDS, restart)
    run = EvaluationRun(model=source.model, resumed=store.resumed)
    if progress and store.resumed:
        progress(sum(1 for k in store.finished if not k.startswith("volume:")))
    names, dataset = info.class_names, info.path.name
    tasks = pending_tasks(iter_tasks(info, settings.intensity), store.finished)
    clock = [time.perf_counter()]

    def done(key: str, rows: List[dict]) -> None:
        now = time.perf_counter()
        store.add_picture(key, rows, now - clock[0])
        clock[0] = now
        if progress:
            progress(1)

    def ready(model: str, kinds: frozenset) -> None:
        source.prompt_kinds = kinds
        run.model = model
        if store.remembered().get("prompt_kinds") != sorted(kinds):
            store.remember(prompt_kinds=sorted(kinds), model_name=model)

    if source.workers > 1:
        run_parallel(tasks, source.factories, source.workers, names, dataset, settings, ready, done)
    else:
        backend = None
        for task in tasks:
            if backend is None:
                backend = source.main()
                ready(backend.model, frozenset(backend.prompt_kinds()))
                clock[0] = time.perf_counter()
            done(task.key, evaluate_task(backend, task, settings.modes, names, dataset, settings=settings))
    if settings.propagate:
        def volume_done(volume: str, class_id: int, rows: List[dict], seconds: float) -> None:
            store.add_volume(volume_key(volume, class_id), rows, seconds)

        pending = [v for v in _volume_classes(info) if volume_key(*v) not in store.finished]
        if pending:
            backend = source.main()
            evaluate_volumes(backend, info, settings.selection, settings.intensity, settings.tolerance,
                             skip=lambda v, c: volume_key(v, c) in store.finished, on_done=volume_done)
    if source.prompt_kinds is not None:
        ready(run.model, source.prompt_kinds)
    known = store.remembered()
    run.prompt_kinds = frozenset(known.get("prompt_kinds", ()))
    run.model = known.get("model_name", run.model)
    run.rows = order_rows(store.rows(), settings)
    write_csv(Path(out_dir) / RESULTS_FILE, run.rows, ROW_FIELDS)
    run.volume_rows = store.volume_rows()
    run.seconds, run.pictures = store.seconds, store.timed_pictures
    return run


def _volume_classes(info: io.DatasetInfo):
    import numpy as np

    for item in info.items:
        if item.mask is not None:
            lab = io.read_volume(item.mask).array
            for c in np.unique(lab):
                if c != 0:
                    yield item.name, int(c)


def finish(out_dir, info: io.DatasetInfo, settings: EvaluationSettings, run: EvaluationRun,
           source: Optional[BackendSource], extra: dict, report: bool = True,
           n_boot: int = DEFAULT_BOOTSTRAP) -> dict:
    """Write summary.json (and report.html with its figures); returns the summary."""
    out_dir = Path(out_dir)
    names = settings.row_names()
    kinds = run.prompt_kinds
    if not kinds and source is not None:  # a resumed run that never learnt them
        kinds = frozenset(source.main().prompt_kinds())
    reasons = {}
    for m in settings.modes:
        if not m.supported_by(kinds):
            for n in m.row_names():
                reasons[n] = m.unsupported_reason(run.model, kinds)
    primary = choose_primary(names)
    summary = summarize(run.rows, run.seconds, run.pictures, extra, primary, n_boot, reasons)
    summary["analyses"] = analyse(run.rows, summary)
    if run.volume_rows:
        summary["volumes"] = summarize_volumes(run.volume_rows, n_boot)
    write_summary(out_dir, summary)
    if report and figures.available():
        examples = []
        mode_for_examples = primary if summary["modes"].get(primary, {}).get("status") == "ok" else next(
            (n for n, m in summary["modes"].items() if m.get("status") == "ok"), None)
        if mode_for_examples is not None and source is not None:
            examples = percentile_examples(source.main(), info, settings, run.rows, mode_for_examples)
        notes = list(PROTOCOL_NOTES)
        notes.append(f"Everything mode: a {settings.everything_grid} x {settings.everything_grid} grid of points, "
                     f"candidates with predicted IoU >= 0.88, the best match per class.")
        write_report(out_dir, summary, run.rows, examples,
                     f"Segment Anything evaluation: {info.path.name}", notes, run.volume_rows)
    return summary
