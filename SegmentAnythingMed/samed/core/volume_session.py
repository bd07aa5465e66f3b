"""Segmenting a volume slice by slice with any backend: the shared workflow of the CLI and of Slicer.

A :class:`VolumeSession` fixes the volume, the slicing axis and the intensity window once; it hands out the
preprocessed slice pictures (each made once), runs prompts on slices and propagates. Nothing it does writes
into the user's data: results are arrays that the caller previews and applies.

Memory: beyond the volume and the model, a session holds at most ``max_cached_slices`` pictures (H x W x 3 bytes
each; 64 suit an interactive viewer that goes back and forth, a one-way walk such as the CLI's needs 4), and a
propagation's result holds one byte per pixel of each slice it reached; nothing else grows with the slices. The
CLI's whole-volume walk then peaks at about 3 bytes per voxel reached over its start: the masks, the output volume
(:meth:`masks_to_volume`) and the segmentation writer's copy (512 x 512 x 400 int16, ONNX engine: +281 MB).

NaN / infinite voxels are shown to the model as the intensity window's lowest value (black); a slice without one
finite voxel has nothing to segment: :func:`check_finite_slice` refuses it, and a propagation stops before it.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from .backend import Backend
from .geometry import Volume, check_slice_index, extract_slice, masks_to_volume, numpy_axis, slice_spacing
from .preprocess import IntensityWindow, compute_window, slice_to_rgb
from .prompts import Prediction, Prompt
from .propagation import PropagationResult, PropagationSettings, propagate


class NonFiniteSliceError(ValueError):
    """A prompted slice holds no finite voxel (all NaN / infinite)."""


def _has_nonfinite(array: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(array).dtype, np.floating)


def count_nonfinite(array: np.ndarray) -> int:
    """NaN and infinite voxels of a volume, counted slice by slice (no whole-volume temporary)."""
    if not _has_nonfinite(array):
        return 0
    return int(sum(int(np.count_nonzero(~np.isfinite(plane))) for plane in array))


def slice_has_finite(array: np.ndarray, np_axis: int, index: int) -> bool:
    return not _has_nonfinite(array) or bool(np.isfinite(extract_slice(array, np_axis, index)).any())


def check_finite_slice(array: np.ndarray, np_axis: int, index: int) -> None:
    if not slice_has_finite(array, np_axis, index):
        raise NonFiniteSliceError(f"slice {index} has no finite voxels (all NaN or infinite): nothing to segment "
                                  f"there; prompt another slice")


def finite_run(array: np.ndarray, np_axis: int, seed: int):
    """(lo, hi): the slices around ``seed`` (inclusive) that each hold at least one finite voxel."""
    n = int(array.shape[np_axis])
    lo = hi = seed
    if not _has_nonfinite(array):
        return 0, n - 1
    while lo > 0 and slice_has_finite(array, np_axis, lo - 1):
        lo -= 1
    while hi < n - 1 and slice_has_finite(array, np_axis, hi + 1):
        hi += 1
    return lo, hi


class VolumeSession:
    def __init__(self, volume: Volume, backend: Backend, axis: str = "axial",
                 intensity: Optional[IntensityWindow] = None, intensity_mode: str = "auto",
                 modality: Optional[str] = None, max_cached_slices: int = 64):
        self.volume = volume
        self.backend = backend
        self.axis_name = axis
        self.np_axis = numpy_axis(axis, volume.ijk_to_ras)
        self.intensity = intensity or compute_window(volume.array, intensity_mode, modality)
        self._pictures: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._max_cached = max_cached_slices

    @property
    def n_slices(self) -> int:
        return int(self.volume.array.shape[self.np_axis])

    @property
    def slice_shape(self):
        return tuple(s for a, s in enumerate(self.volume.array.shape[:3]) if a != self.np_axis)

    @property
    def pixel_spacing(self):
        """(row, column) pixel size in mm of this session's slices."""
        return slice_spacing(self.volume.spacing_kji, self.np_axis)

    def picture(self, index: int) -> np.ndarray:
        """Slice ``index`` as the (H, W, 3) uint8 picture the model sees (made once, then cached)."""
        index = check_slice_index(self.volume.array.shape[:3], self.np_axis, index)
        pic = self._pictures.get(index)
        if pic is None:
            pic = slice_to_rgb(extract_slice(self.volume.array, self.np_axis, index), self.intensity)
            self._pictures[index] = pic
            while len(self._pictures) > self._max_cached:
                self._pictures.popitem(last=False)
        else:
            self._pictures.move_to_end(index)
        return pic

    def segment_slice(self, index: int, prompt: Prompt, multimask: Optional[bool] = None) -> Prediction:
        return self.backend.segment(self.picture(index), prompt, multimask)

    def segment_slices(self, prompts: Dict[int, Prompt],
                       progress: Optional[Callable[[int, int], None]] = None) -> Dict[int, Prediction]:
        out = {}
        for n, (index, prompt) in enumerate(sorted(prompts.items()), 1):
            out[index] = self.segment_slice(index, prompt)
            if progress:
                progress(n, len(prompts))
        return out

    def propagate(self, seed_index: int, seed_mask: np.ndarray, settings: Optional[PropagationSettings] = None,
                  directions: Sequence[str] = ("up", "down"), progress=None, should_cancel=None,
                  seed_box=None) -> PropagationResult:
        check_slice_index(self.volume.array.shape[:3], self.np_axis, seed_index)
        if _has_nonfinite(self.volume.array):  # stop before slices without a finite voxel (black pictures)
            settings = settings or PropagationSettings()
            lo, hi = finite_run(self.volume.array, self.np_axis, seed_index)
            if settings.index_range is not None:
                lo, hi = max(lo, int(settings.index_range[0])), min(hi, int(settings.index_range[1]))
            settings = dataclasses.replace(settings, index_range=(lo, hi))
        return propagate(self.backend, self.picture, self.n_slices, seed_index, seed_mask, settings,
                         directions, progress, should_cancel, seed_box)

    def masks_to_volume(self, masks: Dict[int, np.ndarray], consume: bool = False) -> np.ndarray:
        """The per-slice ``masks`` as one bool volume (see :func:`~samed.core.geometry.masks_to_volume`)."""
        return masks_to_volume(masks, self.volume.array.shape, self.np_axis, consume)
