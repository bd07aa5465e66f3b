"""Run a prompt mode over a dataset with any backend; one row per image (or slice), class and prompt mode.

2D sets: every class present in an image's mask is one task. 3D sets: every axial slice that holds a class is
one task (slice-wise, as the seed study), with in-plane spacing for the surface metrics. Each picture is encoded
once for all its classes. 2D pictures have no physical spacing: their NSD tolerance and HD95 are in pixels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..core import io, metrics
from ..core.backend import Backend
from ..core.geometry import extract_slice, numpy_axis
from ..core.preprocess import compute_window, slice_to_rgb
from .prompt_modes import PromptMode

ROW_FIELDS = ["dataset", "image", "slice", "class_id", "class_name", "prompt", "status", "dice", "iou", "nsd",
              "hd95", "score", "ref_pixels", "pred_pixels"]


@dataclass
class Task:
    image: str
    slice: Optional[int]
    picture: np.ndarray  # (H, W, 3) uint8
    classes: Dict[int, np.ndarray]  # class id -> reference mask (H, W) bool
    spacing: Optional[Tuple[float, float]]


@dataclass
class EvaluationRun:
    rows: List[dict] = field(default_factory=list)
    seconds: float = 0.0
    pictures: int = 0


def _tasks_2d(info: io.DatasetInfo, intensity_mode: str) -> Iterator[Task]:
    for item in info.items:
        if item.mask is None:
            continue
        image = io.read_image_2d(item.image)
        mask = io.read_image_2d(item.mask)
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {item.mask} has shape {mask.shape}, its image {item.image} {image.shape[:2]}")
        classes = {int(c): mask == c for c in np.unique(mask) if c != 0}
        picture = slice_to_rgb(image, compute_window(image, intensity_mode))
        yield Task(item.name, None, picture, classes, None)


def _tasks_3d(info: io.DatasetInfo, intensity_mode: str, axis: str = "axial") -> Iterator[Task]:
    for item in info.items:
        volume = io.read_volume(item.image)
        label = io.read_volume(item.mask)
        label = io.resample_to(label, volume)
        window = compute_window(volume.array, intensity_mode)
        ax = numpy_axis(axis, volume.ijk_to_ras)
        spacing = tuple(s for a, s in enumerate(volume.spacing_kji) if a != ax)
        lab = np.asarray(label.array)
        for index in range(lab.shape[ax]):
            lab2d = extract_slice(lab, ax, index)
            ids = [int(c) for c in np.unique(lab2d) if c != 0]
            if not ids:
                continue
            picture = slice_to_rgb(extract_slice(volume.array, ax, index), window)
            yield Task(item.name, index, picture, {c: lab2d == c for c in ids}, spacing)


def iter_tasks(info: io.DatasetInfo, intensity_mode: str = "auto") -> Iterator[Task]:
    return _tasks_2d(info, intensity_mode) if info.kind == "2d" else _tasks_3d(info, intensity_mode)


def count_tasks(info: io.DatasetInfo) -> int:
    """Pictures to encode (2D: images; 3D: slices holding any class), for progress bars."""
    if info.kind == "2d":
        return sum(1 for item in info.items if item.mask is not None)
    n = 0
    for item in info.items:
        lab = io.read_volume(item.mask).array
        n += int(np.count_nonzero(lab.reshape(lab.shape[0], -1).any(axis=1)))
    return n


def evaluate_task(backend: Backend, task: Task, mode: PromptMode, names: Dict[int, str], dataset: str,
                  tolerance: float = 2.0) -> List[dict]:
    rows = []
    supported = mode.supported_by(backend.prompt_kinds())
    handle = backend.encode(task.picture) if supported else None
    for class_id, ref in sorted(task.classes.items()):
        row = {"dataset": dataset, "image": task.image, "slice": "" if task.slice is None else task.slice,
               "class_id": class_id, "class_name": names.get(class_id, str(class_id)), "prompt": mode.name,
               "ref_pixels": int(ref.sum())}
        if not supported:
            row.update(status="not supported")
            rows.append(row)
            continue
        pred = np.zeros(ref.shape, bool)
        scores = []
        for prompt in mode.prompts(ref):
            p = backend.decode(handle, prompt)
            pred |= p.best
            scores.append(p.best_score)
        m = metrics.compute_all(pred, ref, spacing=task.spacing, tolerance_mm=tolerance)
        row.update(status="ok", dice=m["dice"], iou=m["iou"], nsd=m["nsd"], hd95=m["hd95"],
                   score=float(np.mean(scores)) if scores else float("nan"), pred_pixels=int(pred.sum()))
        rows.append(row)
    return rows


def run_evaluation(backend: Backend, dataset_path: str, mode: PromptMode, intensity_mode: str = "auto",
                   tolerance: float = 2.0, progress: Optional[Callable[[int], None]] = None) -> EvaluationRun:
    info = io.list_dataset(dataset_path)
    name = info.path.name
    run = EvaluationRun()
    t0 = time.perf_counter()
    for task in iter_tasks(info, intensity_mode):
        run.rows += evaluate_task(backend, task, mode, info.class_names, name, tolerance)
        run.pictures += 1
        if progress:
            progress(1)
    run.seconds = time.perf_counter() - t0
    return run
