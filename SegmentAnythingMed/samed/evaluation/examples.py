"""Overlay examples: the tasks at the 25th, 50th and 75th percentile of IoU for one mode, computed again.

Prompts are reproducible (seeded per picture, class and mode), so the example is the very prediction counted in
``results.csv``; re-running three tasks costs three encodes at most (none with the in-process backend's
embedding cache when the run happened in this process).
"""
from __future__ import annotations

import dataclasses
from typing import List, Sequence

from ..core import io
from ..core.backend import Backend
from .analyses import ok_rows, percentile_rows
from .prompt_modes import get_mode
from .runner import EvaluationSettings, run_mode
from .tasks import iter_tasks, picture_key

PERCENTILES = (25, 50, 75)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def percentile_examples(backend: Backend, info: io.DatasetInfo, settings: EvaluationSettings, rows: List[dict],
                        mode_name: str, percentiles: Sequence[int] = PERCENTILES) -> List[dict]:
    """[{title, picture, reference, prediction, prompts, row}] for ``mode_name``'s percentile rows."""
    chosen = percentile_rows(ok_rows(rows, mode_name), percentiles)
    if not chosen:
        return []
    keys = {picture_key(r["image"], r.get("slice")) for _, r in chosen}
    images = {r["image"] for _, r in chosen}
    subset = dataclasses.replace(info, items=[it for it in info.items if it.name in images])
    tasks = {t.key: t for t in iter_tasks(subset, settings.intensity) if t.key in keys}
    mode = get_mode(mode_name)
    out = []
    for p, row in chosen:
        task = tasks.get(picture_key(row["image"], row.get("slice")))
        class_id = int(row["class_id"])
        if task is None or class_id not in task.classes:
            continue
        handle = backend.encode(task.picture)
        outcomes = [o for o in run_mode(backend, handle, task, class_id, mode, settings) if o.mode == mode_name]
        if not outcomes:
            continue
        o = outcomes[-1]
        where = row["image"] + ("" if row.get("slice") in ("", None) else f" slice {row['slice']}")
        out.append({"title": f"{_ordinal(p)} percentile: {where}\n{row['class_name']}, IoU {row['iou']:.3f}, "
                             f"Dice {row['dice']:.3f}",
                    "picture": task.picture, "reference": task.classes[class_id], "prediction": o.mask,
                    "prompts": o.prompts, "row": row, "percentile": p})
    return out
