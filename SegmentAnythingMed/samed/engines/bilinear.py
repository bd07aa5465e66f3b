"""Bilinear resizes in numpy that give torch's ``F.interpolate(mode="bilinear", align_corners=False)`` values:
the ONNX engine's mask upsampling (segment-anything's ``postprocess_masks``) and its "bilinear" resize filter."""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import numpy as np


@lru_cache(maxsize=128)
def _bilinear_taps(out_n: int, in_n: int):
    """Source indices and weights of torch's ``F.interpolate(mode="bilinear", align_corners=False)`` on one axis:
    output i = w0[i] * input[i0[i]] + w1[i] * input[i1[i]]."""
    scale = np.float32(in_n) / np.float32(out_n)  # in float32, as torch computes it for float tensors
    src = scale * (np.arange(out_n, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.intp), in_n - 1)
    i1 = np.minimum(i0 + 1, in_n - 1)
    frac = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, (np.float32(1.0) - frac).astype(np.float32), frac


def resize_axis(x: np.ndarray, out_n: int, axis: int, stop: Optional[int] = None) -> np.ndarray:
    """Bilinear resize of ``x`` along ``axis`` (-2 rows, -1 columns) to ``out_n``; keep the first ``stop`` outputs."""
    in_n = x.shape[axis]
    stop = out_n if stop is None else stop
    if in_n == out_n:  # torch's map is the identity then
        return x if stop == out_n else (x[..., :stop, :] if axis == -2 else x[..., :stop])
    i0, i1, w0, w1 = (t[:stop] for t in _bilinear_taps(out_n, in_n))
    if axis == -2:
        return x[..., i0, :] * w0[:, None] + x[..., i1, :] * w1[:, None]
    return x[..., i0] * w0 + x[..., i1] * w1


def upsample_logits(logits: np.ndarray, image_size: int, resize: str, input_size: Tuple[int, int],
                    original_size: Tuple[int, int]) -> np.ndarray:
    """(K, h, w) low-res logits -> (K, H, W) on the slice, as segment-anything's ``postprocess_masks`` (upsample to
    the padded model input, crop the padding, resize to the slice) or, for squashed inputs, one resize.

    Elementwise numpy (two taps per output pixel and axis), not matrix products: numpy's BLAS threads, spinning
    against the other programs on a small CPU, made a 1 ms product take 30-60 ms."""
    x = logits
    if resize == "longest":
        x = resize_axis(x, image_size, -2, stop=input_size[0])
        x = resize_axis(x, image_size, -1, stop=input_size[1])
    if original_size[0] >= x.shape[-2]:  # growing: columns first, on the fewer rows (last-axis gathers are slow)
        return resize_axis(resize_axis(x, original_size[1], -1), original_size[0], -2)
    return resize_axis(resize_axis(x, original_size[0], -2), original_size[1], -1)
