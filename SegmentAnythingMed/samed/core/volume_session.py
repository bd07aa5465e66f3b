"""Segmenting a volume slice by slice with any backend: the shared workflow of the CLI and of Slicer.

A :class:`VolumeSession` fixes the volume, the slicing axis and the intensity window once; it hands out the
preprocessed slice pictures (each made once), runs prompts on slices and propagates. Nothing it does writes
into the user's data: results are arrays that the caller previews and applies.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from .backend import Backend
from .geometry import Volume, check_slice_index, extract_slice, numpy_axis, slice_spacing
from .preprocess import IntensityWindow, compute_window, slice_to_rgb
from .prompts import Prediction, Prompt
from .propagation import PropagationResult, PropagationSettings, propagate


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
                  directions: Sequence[str] = ("up", "down"), progress=None, should_cancel=None) -> PropagationResult:
        check_slice_index(self.volume.array.shape[:3], self.np_axis, seed_index)
        return propagate(self.backend, self.picture, self.n_slices, seed_index, seed_mask, settings,
                         directions, progress, should_cancel)

    def masks_to_volume(self, masks: Dict[int, np.ndarray]) -> np.ndarray:
        vol = np.zeros(self.volume.array.shape[:3], dtype=bool)
        for index, mask in masks.items():
            sl = [slice(None)] * 3
            sl[self.np_axis] = index
            vol[tuple(sl)] = mask
        return vol
