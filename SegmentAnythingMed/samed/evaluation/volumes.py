"""3D evaluation (``--propagate``): one box on the middle slice of an object, propagated through the volume,
compared with a box on every slice of the object; 3D Dice, IoU, NSD and HD95 per class (mm, full voxel spacing).

- ``propagate``: the seed slice is the slice holding the class that is nearest the middle of the class's slice
  extent; the box is the tight box around the class on that slice (as ``box-all``); the model's mask for it
  is walked through the neighbouring slices by ``core.propagation.propagate`` with its default settings (each
  next slice prompted with a box around the previous slice's mask, stopping where the object ends).
- ``box-every-slice``: ``box-all`` on every slice that holds the class, stacked; slices without the class get
  no prompt (this reference knows where the object starts and ends, which propagation has to find out).
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..core import io, metrics
from ..core.backend import Backend
from ..core.geometry import Volume, extract_slice, insert_slice
from ..core.prompts import Prompt, box_from_mask
from ..core.volume_session import VolumeSession
from .simulate import choose, multimask_for

PROPAGATE, EVERY_SLICE = "propagate", "box-every-slice"
VOLUME_METHODS = (PROPAGATE, EVERY_SLICE)
VOLUME_FIELDS = ["dataset", "volume", "class_id", "class_name", "method", "selection", "status", "dice", "iou",
                 "nsd", "hd95", "boxes", "seed_slice", "ref_slices", "pred_slices", "stopped"]


def iter_volumes(info: io.DatasetInfo) -> Iterator[Tuple[str, Volume, np.ndarray]]:
    """(name, image volume, label array on the image's grid) for each volume with a label."""
    for item in info.items:
        if item.mask is None:
            continue
        volume = io.read_volume(item.image)
        label = io.resample_to(io.read_volume(item.mask), volume)
        yield item.name, volume, np.asarray(label.array)


def seed_slice(slices: List[int]) -> int:
    """The slice holding the object that is nearest the middle of its extent (ties: the lower)."""
    middle = (slices[0] + slices[-1]) / 2.0
    return min(slices, key=lambda s: (abs(s - middle), s))


def _box_mask(session: VolumeSession, index: int, ref2d: np.ndarray, selection: str) -> np.ndarray:
    pred = session.segment_slice(index, Prompt(box_xy=box_from_mask(ref2d)), multimask_for(selection))
    return choose(pred, ref2d, selection)[0]


def evaluate_volume_class(session: VolumeSession, ref3d: np.ndarray, selection: str,
                          tolerance: float) -> List[dict]:
    """The two rows (propagate, box-every-slice) for one class of one volume (``ref3d`` bool, [k, j, i])."""
    ax = session.np_axis
    other = tuple(a for a in range(3) if a != ax)
    slices = [int(s) for s in np.flatnonzero(ref3d.any(axis=other))]
    spacing = tuple(float(s) for s in session.volume.spacing_kji)
    rows = []

    seed = seed_slice(slices)
    seed_mask = _box_mask(session, seed, extract_slice(ref3d, ax, seed), selection)
    if seed_mask.any():
        result = session.propagate(seed, seed_mask, seed_box=box_from_mask(extract_slice(ref3d, ax, seed)))
        pred = result.to_volume(ref3d.shape, ax)
        stopped = "; ".join(f"{d}: {why}" for d, why in sorted(result.stopped.items()))
    else:
        pred, stopped = np.zeros(ref3d.shape, bool), f"the box on slice {seed} gave an empty mask"
    rows.append(_row(PROPAGATE, pred, ref3d, spacing, tolerance, ax, boxes=1, seed_slice=seed, stopped=stopped))

    every = np.zeros(ref3d.shape, bool)
    for s in slices:
        insert_slice(every, ax, s, _box_mask(session, s, extract_slice(ref3d, ax, s), selection))
    rows.append(_row(EVERY_SLICE, every, ref3d, spacing, tolerance, ax, boxes=len(slices)))
    return rows


def _row(method: str, pred: np.ndarray, ref: np.ndarray, spacing, tolerance: float, ax: int, **extra) -> dict:
    v = metrics.compute_all(pred, ref, spacing=spacing, tolerance_mm=tolerance)
    other = tuple(a for a in range(3) if a != ax)
    return dict(extra, method=method, status="ok", dice=v["dice"], iou=v["iou"], nsd=v["nsd"], hd95=v["hd95"],
                ref_slices=int(ref.any(axis=other).sum()), pred_slices=int(pred.any(axis=other).sum()))


def evaluate_volumes(backend: Backend, info: io.DatasetInfo, selection: str, intensity: str, tolerance: float,
                     skip: Callable[[str, int], bool] = lambda volume, class_id: False,
                     on_done: Optional[Callable[[str, int, List[dict], float], None]] = None) -> List[dict]:
    """Rows for every volume and class; ``skip(volume, class_id)`` leaves finished ones out (resume);
    ``on_done(volume, class_id, rows, seconds)`` runs after each class."""
    names: Dict[int, str] = info.class_names
    out = []
    for name, volume, label in iter_volumes(info):
        session = VolumeSession(volume, backend, intensity_mode=intensity)
        for class_id in (int(c) for c in np.unique(label) if c != 0):
            if skip(name, class_id):
                continue
            t0 = time.perf_counter()
            rows = evaluate_volume_class(session, label == class_id, selection, tolerance)
            for r in rows:
                r.update(dataset=info.path.name, volume=name, class_id=class_id,
                         class_name=names.get(class_id, str(class_id)), selection=selection)
            out += rows
            if on_done is not None:
                on_done(name, class_id, rows, time.perf_counter() - t0)
    return out
