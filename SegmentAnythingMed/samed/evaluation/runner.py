"""Run prompt modes over a dataset with any backend: one row per picture, class and prompt (and click count).

Each picture is encoded once for all its classes and modes. Rows are written to the output folder as each
picture finishes (``store.py``), so an interrupted run resumes where it stopped; pictures can be shared out to
Dask workers, each with its own backend (``parallel.py``). Prompt randomness (ties between equally central
pixels, the direction of a shifted box) comes from ``prompt_modes.seeded_rng`` keyed by picture, class and
mode, so results do not depend on the order of work.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union


from ..core import io, metrics
from ..core.backend import Backend, EmbeddingHandle
from .everything import DEFAULT_GRID, best_matches
from .iterative import run_iterative
from .prompt_modes import EVERYTHING, ITERATIVE, PromptMode, seeded_rng
from .simulate import SCORE, Outcome, multimask_for, run_single
from .tasks import Task, count_tasks, iter_tasks  # noqa: F401  (re-exported: the CLI and tests use them)

ROW_FIELDS = ["dataset", "image", "slice", "class_id", "class_name", "prompt", "selection", "clicks", "status",
              "dice", "iou", "nsd", "hd95", "score", "ref_pixels", "pred_pixels", "image_pixels"]
CENTRE_POINT_MODES = ("point-largest", "point-per-region")  # share their first draw with Algorithm 1


@dataclass
class EvaluationSettings:
    """Everything that decides the results of a run (a rerun with the same settings resumes)."""

    modes: List[PromptMode]
    selection: str = SCORE
    intensity: str = "auto"
    tolerance: float = 2.0
    seed: int = 0
    everything_grid: int = DEFAULT_GRID
    propagate: bool = False
    model_input: Optional[Dict[str, str]] = None  # resize / resize_filter / mask_threshold given to the engine

    def __post_init__(self):
        multimask_for(self.selection)  # validates
        if not self.modes:
            raise ValueError("no prompt mode given")

    def fingerprint(self, dataset: str, model: str) -> dict:
        return {"dataset": dataset, "model": model, "modes": [m.name for m in self.modes],
                "selection": self.selection, "intensity": self.intensity, "tolerance": self.tolerance,
                "seed": self.seed, "everything_grid": self.everything_grid, "propagate": self.propagate,
                **({"model_input": dict(sorted(self.model_input.items()))} if self.model_input else {})}

    def row_names(self) -> List[str]:
        return [n for m in self.modes for n in m.row_names()]


@dataclass
class EvaluationRun:
    rows: List[dict] = field(default_factory=list)
    seconds: float = 0.0
    pictures: int = 0
    volume_rows: List[dict] = field(default_factory=list)
    model: str = ""
    prompt_kinds: frozenset = frozenset()
    resumed: int = 0  # pictures found finished in the output folder


class DecodeMemo:
    """Decodes of one class on one picture, remembered by prompt: modes that give the same prompt (box-largest,
    box-per-region and box-all for a one-region class; point-largest and Algorithm 1's first click) cost one
    decode. ``forget()`` between classes keeps memory small."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._seen: Dict[tuple, object] = {}

    def mask_threshold(self):
        return self.backend.mask_threshold()

    def decode(self, handle: EmbeddingHandle, prompt, multimask=None, mask_threshold=None):
        cut = {} if mask_threshold is None else {"mask_threshold": mask_threshold}
        if prompt.mask is not None:
            return self.backend.decode(handle, prompt, multimask, **cut)
        key = (handle.key, prompt.include_points_xy.tobytes(), prompt.exclude_points_xy.tobytes(),
               None if prompt.box_xy is None else prompt.box_xy.tobytes(), multimask, mask_threshold)
        if key not in self._seen:
            self._seen[key] = self.backend.decode(handle, prompt, multimask, **cut)
        return self._seen[key]

    def forget(self) -> None:
        self._seen.clear()


def _rng_key(mode: PromptMode) -> str:
    return "centre-point" if mode.name in CENTRE_POINT_MODES or mode.family == ITERATIVE else mode.name


def run_mode(backend: Backend, handle: EmbeddingHandle, task: Task, class_id: int, mode: PromptMode,
             settings: EvaluationSettings, everything: Optional[Dict[int, Outcome]] = None) -> List[Outcome]:
    """The outcomes of one mode for one class on an encoded picture (iterative: one per click count)."""
    ref = task.classes[class_id]
    rng = seeded_rng(settings.seed, task.image, task.slice, class_id, _rng_key(mode))
    if mode.family == ITERATIVE:
        return run_iterative(backend, handle, ref, mode.points, rng, settings.selection)
    if mode.family == EVERYTHING:
        if everything is None:
            everything = best_matches(backend, handle, task.classes, settings.everything_grid)
        return [everything[class_id]] if class_id in everything else []
    outcome = run_single(backend, handle, mode, ref, rng, settings.selection)
    return [] if outcome is None else [outcome]


def evaluate_task(backend: Backend, task: Task, mode: Union[PromptMode, Sequence[PromptMode]],
                  names: Dict[int, str], dataset: str, tolerance: float = 2.0,
                  settings: Optional[EvaluationSettings] = None) -> List[dict]:
    """Rows for every class of one picture under every mode (``settings`` overrides ``mode``/``tolerance``)."""
    if settings is None:
        modes = [mode] if isinstance(mode, PromptMode) else list(mode)
        settings = EvaluationSettings(modes, tolerance=tolerance)
    kinds = backend.prompt_kinds()
    supported = {m.name for m in settings.modes if m.supported_by(kinds)}
    handle = backend.encode(task.picture) if supported else None
    decoder = DecodeMemo(backend)
    everything = None
    if any(m.family == EVERYTHING and m.name in supported for m in settings.modes):
        everything = best_matches(backend, handle, task.classes, settings.everything_grid)
    rows = []
    image_pixels = int(task.picture.shape[0] * task.picture.shape[1])
    for class_id, ref in sorted(task.classes.items()):
        base = {"dataset": dataset, "image": task.image, "slice": "" if task.slice is None else task.slice,
                "class_id": class_id, "class_name": names.get(class_id, str(class_id)),
                "selection": settings.selection, "ref_pixels": int(ref.sum()), "image_pixels": image_pixels}
        decoder.forget()
        for m in settings.modes:
            if m.name not in supported:
                rows += [dict(base, prompt=name, status="not supported") for name in m.row_names()]
                continue
            for o in run_mode(decoder, handle, task, class_id, m, settings, everything):
                v = metrics.compute_all(o.mask, ref, spacing=task.spacing, tolerance_mm=settings.tolerance)
                rows.append(dict(base, prompt=o.mode, clicks=o.clicks, status="ok", dice=v["dice"], iou=v["iou"],
                                 nsd=v["nsd"], hd95=v["hd95"], score=o.score, pred_pixels=int(o.mask.sum())))
    return rows


def run_evaluation(backend: Backend, dataset_path: str, mode: Union[PromptMode, Sequence[PromptMode]],
                   intensity_mode: str = "auto", tolerance: float = 2.0,
                   progress: Optional[Callable[[int], None]] = None,
                   settings: Optional[EvaluationSettings] = None) -> EvaluationRun:
    """Evaluate in memory (no output folder, no resume): every picture of the dataset, one backend."""
    if settings is None:
        modes = [mode] if isinstance(mode, PromptMode) else list(mode)
        settings = EvaluationSettings(modes, intensity=intensity_mode, tolerance=tolerance)
    info = io.list_dataset(dataset_path)
    run = EvaluationRun(model=backend.model, prompt_kinds=backend.prompt_kinds())
    t0 = time.perf_counter()
    for task in iter_tasks(info, settings.intensity):
        run.rows += evaluate_task(backend, task, settings.modes, info.class_names, info.path.name,
                                  settings=settings)
        run.pictures += 1
        if progress:
            progress(1)
    run.seconds = time.perf_counter() - t0
    return run


def pending_tasks(tasks: Iterable[Task], finished: Iterable[str]) -> Iterable[Task]:
    done = set(finished)
    return (t for t in tasks if t.key not in done)


def order_rows(rows: List[dict], settings: EvaluationSettings) -> List[dict]:
    """Rows in dataset order: picture, slice, class, then the order of the modes."""
    rank = {name: i for i, name in enumerate(settings.row_names())}

    def key(r):
        s = r.get("slice")
        return (str(r.get("image")), -1 if s in ("", None) else int(s), int(r.get("class_id") or 0),
                rank.get(r.get("prompt"), len(rank)))
    return sorted(rows, key=key)


