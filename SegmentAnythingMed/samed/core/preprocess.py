"""Intensity preprocessing: raw voxel values -> the 8-bit RGB picture that SAM-family encoders take.

Modes
- ``ct``: window [-500, 1000] HU (MedSAM's CT window for soft tissue and bone).
- ``percentile``: clip to the 0.5th / 99.5th percentiles (MedSAM's rule for MR, ultrasound, X-ray, ...).
- ``minmax``: image minimum -> 0, maximum -> 255 (the seed study's rule; right for 8-bit pictures).
- ``window``: an explicit window/level (``IntensityWindow.from_window_level(400, 40)``).
- ``none``: 8-bit values as they are (0 -> 0, 255 -> 255).
- ``auto``: ``ct`` when the modality is CT (or, with no modality given, when the values look like Hounsfield
  units: a signed image whose minimum is at or below -900); ``none`` for 8-bit pictures (PNG/JPEG: already
  windowed for display by whoever made them, so they reach the model exactly as a peer tool would pass them);
  ``percentile`` otherwise.

The window is computed once per volume (not per slice), so neighbouring slices of a propagation see the same
mapping and no slice is preprocessed twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

CT_WINDOW = (-500.0, 1000.0)
PERCENTILES = (0.5, 99.5)
MODES = ("auto", "ct", "percentile", "minmax", "window", "none")
CT_MODALITIES = {"ct"}


class IntensityError(ValueError):
    pass


@dataclass(frozen=True)
class IntensityWindow:
    """Values at or below ``low`` map to 0, at or above ``high`` to 255, linearly between."""

    low: float
    high: float
    mode: str = "window"

    @staticmethod
    def from_window_level(window: float, level: float) -> "IntensityWindow":
        if not window > 0:
            raise IntensityError(f"window width must be > 0, got {window}")
        return IntensityWindow(level - window / 2.0, level + window / 2.0, "window")

    def describe(self) -> str:
        return f"{self.mode} [{self.low:g}, {self.high:g}]"

    def apply(self, values: np.ndarray) -> np.ndarray:
        """uint8 array of the same shape (grey). Non-finite values map to 0."""
        arr = np.asarray(values, dtype=np.float32)
        span = self.high - self.low
        if span <= 0:
            return np.zeros(arr.shape, np.uint8)
        out = (arr - np.float32(self.low)) * np.float32(255.0 / span)
        np.clip(out, 0, 255, out=out)
        out[~np.isfinite(out)] = 0
        return np.rint(out).astype(np.uint8)


def choose_mode(values: np.ndarray, modality: Optional[str] = None) -> str:
    """The ``auto`` rule (see module docstring)."""
    if modality:
        m = modality.lower()
        if m in CT_MODALITIES:
            return "ct"
        return "percentile"
    arr = np.asarray(values)
    if arr.dtype == np.uint8:
        return "none"
    finite_min = float(np.nanmin(arr)) if arr.size else 0.0
    if np.issubdtype(arr.dtype, np.signedinteger) or np.issubdtype(arr.dtype, np.floating):
        if finite_min <= -900:
            return "ct"
    return "percentile"


def compute_window(values: np.ndarray, mode: str = "auto", modality: Optional[str] = None,
                   window: Optional[float] = None, level: Optional[float] = None) -> IntensityWindow:
    """The intensity window for a whole image or volume under ``mode``."""
    if mode not in MODES:
        raise IntensityError(f"unknown intensity mode {mode!r}: use one of {', '.join(MODES)}")
    arr = np.asarray(values)
    if arr.size == 0:
        raise IntensityError("the image is empty")
    if mode == "window" or (window is not None and level is not None):
        if window is None or level is None:
            raise IntensityError("the 'window' mode needs both a window width and a level")
        return IntensityWindow.from_window_level(float(window), float(level))
    if mode == "auto":
        mode = choose_mode(arr, modality)
    if mode == "ct":
        return IntensityWindow(CT_WINDOW[0], CT_WINDOW[1], "ct")
    if mode == "none":
        return IntensityWindow(0.0, 255.0, "none")
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
    if finite.size == 0:
        raise IntensityError("the image has no finite values")
    if mode == "minmax":
        return IntensityWindow(float(finite.min()), float(finite.max()), "minmax")
    # percentile: subsample large volumes; percentiles of 2M values are exact to well below a grey level
    flat = finite.ravel()
    if flat.size > 2_000_000:
        flat = flat[:: flat.size // 2_000_000 + 1]
    low, high = np.percentile(flat, PERCENTILES)
    return IntensityWindow(float(low), float(high), "percentile")


def to_rgb(grey_or_rgb: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> contiguous (H, W, 3) uint8."""
    arr = np.asarray(grey_or_rgb)
    if arr.ndim == 2:
        return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
    if arr.ndim == 3 and arr.shape[2] == 3:
        return np.ascontiguousarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, :3])
    raise IntensityError(f"expected a 2D slice or an RGB picture, got shape {arr.shape}")


def slice_to_rgb(slice2d: np.ndarray, intensity: IntensityWindow) -> np.ndarray:
    """A raw 2D slice (or RGB picture) -> (H, W, 3) uint8 under ``intensity``."""
    arr = np.asarray(slice2d)
    if arr.ndim == 3:  # an RGB picture: window each channel the same way
        if arr.dtype == np.uint8 and intensity.low == 0 and intensity.high == 255:
            return to_rgb(arr)
        return to_rgb(intensity.apply(arr))
    return to_rgb(intensity.apply(arr))
