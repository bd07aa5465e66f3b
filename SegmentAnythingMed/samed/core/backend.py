"""The backend interface: encode a slice once, decode many prompts against it, propagate.

Two implementations share it: :class:`samed.engines.local.LocalBackend` (an in-process torch engine) and
:class:`samed.client.http.HttpBackend` (the model service). This module is torch-free.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Tuple

import numpy as np

from .prompts import Prediction, Prompt, PromptError


class BackendError(RuntimeError):
    """The backend could not do what was asked (model missing, server unreachable, ...)."""


class UnsupportedPromptError(PromptError):
    """The model cannot take this kind of prompt (e.g. points for a box-only model)."""


def image_key(model: str, image_rgb: np.ndarray) -> str:
    """Content key of a preprocessed slice for one model: the same picture gives the same key everywhere."""
    arr = np.ascontiguousarray(image_rgb)
    h = hashlib.blake2b(digest_size=20)
    h.update(model.encode())
    h.update(str(arr.dtype).encode())
    h.update(repr(arr.shape).encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


@dataclass(frozen=True)
class EmbeddingHandle:
    """A reference to an encoded slice: its content key, the model and the slice's (rows, cols)."""

    key: str
    model: str
    shape_hw: Tuple[int, int]


def check_image(image_rgb: np.ndarray, max_side: int = 8192) -> np.ndarray:
    arr = np.asarray(image_rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise PromptError(f"a slice to encode must be (H, W, 3) uint8 RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise PromptError(f"a slice to encode must be uint8 (preprocess it first), got {arr.dtype}")
    if min(arr.shape[:2]) < 1 or max(arr.shape[:2]) > max_side:
        raise PromptError(f"slice size {arr.shape[:2]} is outside 1..{max_side} pixels per side")
    return arr


def check_prompt_kinds(model: str, supported: FrozenSet[str], prompt: Prompt) -> None:
    unsupported = prompt.kinds() - supported
    if unsupported:
        hint = " Drag a box around the structure instead." if "box" in supported and "point" in unsupported else ""
        raise UnsupportedPromptError(
            f"model {model} does not take {', '.join(sorted(unsupported))} prompts "
            f"(it takes: {', '.join(sorted(supported))}).{hint}")


class Backend(ABC):
    """Encode a slice once, decode many prompts against it."""

    model: str
    wants_prefetch = False  # True if prefetch() does something (propagation then sends slices ahead)

    @abstractmethod
    def info(self) -> Dict[str, object]:
        """Service/engine description: version, device, models and the prompt kinds each takes."""

    @abstractmethod
    def prompt_kinds(self) -> FrozenSet[str]:
        """The prompt kinds the current model takes: a subset of {"point", "box", "mask"}."""

    @abstractmethod
    def encode(self, image_rgb: np.ndarray) -> EmbeddingHandle:
        """Encode a (H, W, 3) uint8 slice (cached by content); returns a handle for :meth:`decode`."""

    @abstractmethod
    def decode(self, handle: EmbeddingHandle, prompt: Prompt, multimask: Optional[bool] = None) -> Prediction:
        """Candidate masks for ``prompt`` on an encoded slice. ``multimask`` None = the model's choice
        (three candidates for a lone point, one otherwise).

        A backend whose :meth:`mask_threshold` is not "model" also takes ``mask_threshold=`` ("model", "dice" or
        a logit): how this one decode's masks are cut (the masks the walks of ``core.propagation`` and
        ``core.key_slices`` make are cut at the model's own threshold; the backend's rule is for prompted slices)."""

    def mask_threshold(self) -> object:
        """How this backend cuts masks from the logits for its model: "model" (the model's own threshold, logit
        0), "dice" or a logit (``samed.engines.models.MASK_THRESHOLDS``). Default: "model"."""
        return "model"

    def segment(self, image_rgb: np.ndarray, prompt: Prompt, multimask: Optional[bool] = None,
                mask_threshold=None) -> Prediction:
        """Encode and decode; ``mask_threshold`` as :meth:`decode` (None: the backend's own)."""
        handle = self.encode(image_rgb)
        if mask_threshold is None:
            return self.decode(handle, prompt, multimask)
        return self.decode(handle, prompt, multimask, mask_threshold=mask_threshold)

    def prefetch(self, images_rgb) -> None:
        """Hint: these slices will be asked for soon (a backend may encode them ahead). Default: nothing."""

    def cancel_prefetch(self) -> None:
        """Drop the encodes asked for ahead that have not started (the user has moved on). Default: nothing."""

    def stopped_on(self, image_rgb: np.ndarray) -> None:
        """The user stopped on this slice (slice change settled, view resized, effect activated): drop encodes
        ahead of other slices and encode this one in the background, so that the box or click that follows needs
        only a decode. Returns at once."""
        self.cancel_prefetch()
        self.prefetch([image_rgb])

    def close(self) -> None:
        """Release resources."""
