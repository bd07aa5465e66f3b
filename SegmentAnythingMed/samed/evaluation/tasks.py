"""Evaluation tasks: the pictures of a dataset with their reference masks, one class at a time.

2D sets: every image with a mask is one picture; every class present in its mask is one task. 3D sets: every
slice along the axis (axial by default) that holds a class is one picture (slice-wise, as the seed study),
with in-plane spacing for the surface metrics. Each picture is encoded once for all its classes and modes.
2D pictures have no physical spacing: their NSD tolerance and HD95 are in pixels.
Intensities: ``core.preprocess`` (``auto``: 8-bit pictures as they are; CT window or percentiles for volumes,
MedSAM's rules; ``minmax`` is the study's rule for pictures), one window per image or volume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from ..core import io
from ..core.geometry import extract_slice, numpy_axis
from ..core.preprocess import compute_window, slice_to_rgb


@dataclass
class Task:
    image: str
    slice: Optional[int]
    picture: np.ndarray  # (H, W, 3) uint8
    classes: Dict[int, np.ndarray]  # class id -> reference mask (H, W) bool
    spacing: Optional[Tuple[float, float]]

    @property
    def key(self) -> str:
        """Identifies the picture within its dataset (used to resume)."""
        return picture_key(self.image, self.slice)


def picture_key(image: str, slice_index) -> str:
    return f"{image}#{'' if slice_index in (None, '') else int(slice_index)}"


def read_mask_2d(item: io.DatasetItem, image_shape) -> np.ndarray:
    mask = io.read_image_2d(item.mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != tuple(image_shape[:2]):
        raise ValueError(f"mask {item.mask} has shape {mask.shape}, its image {item.image} {tuple(image_shape[:2])}")
    return mask


def _tasks_2d(info: io.DatasetInfo, intensity_mode: str) -> Iterator[Task]:
    for item in info.items:
        if item.mask is None:
            continue
        image = io.read_image_2d(item.image)
        mask = read_mask_2d(item, image.shape)
        classes = {int(c): mask == c for c in np.unique(mask) if c != 0}
        if not classes:
            continue
        picture = slice_to_rgb(image, compute_window(image, intensity_mode))
        yield Task(item.name, None, picture, classes, None)


def _tasks_3d(info: io.DatasetInfo, intensity_mode: str, axis: str = "axial") -> Iterator[Task]:
    for item in info.items:
        if item.mask is None:
            continue
        volume = io.read_volume(item.image)
        label = io.resample_to(io.read_volume(item.mask), volume)
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
    """Pictures to encode (2D: images with a mask; 3D: slices holding any class), for progress bars."""
    if info.kind == "2d":
        return sum(1 for item in info.items if item.mask is not None)
    n = 0
    for item in info.items:
        if item.mask is None:
            continue
        label = io.read_volume(item.mask)
        ax = numpy_axis("axial", label.ijk_to_ras)
        lab = np.moveaxis(np.asarray(label.array), ax, 0)
        n += int(np.count_nonzero(lab.reshape(lab.shape[0], -1).any(axis=1)))
    return n
