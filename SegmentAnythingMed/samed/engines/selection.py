"""Choose the engine that runs a model: ``torch`` (the reference), ``onnx`` (ONNX Runtime, float32), ``openvino``
(LiteMedSAM's encoder in OpenVINO with bfloat16 products, on CPUs with AMX or AVX512-BF16), ``openvino-int8`` (the
encoder quantized to int8 by NNCF) or ``auto``; ``onnx-int8`` (ONNX Runtime's dynamic int8 quantization: faster,
masks leave the accuracy bound) only when asked for.

``auto`` for a model with an ONNX export (LiteMedSAM), fastest first (``openvino-f32``: the float32 graph compiled
by OpenVINO, masks as float32's):

1. on the CPU when no GPU is in use, each of :data:`AUTO_REDUCED` in turn: ``openvino-int8`` when nncf and
   openvino are importable, ``openvino`` when openvino is importable and the CPU has bfloat16 units; either only
   if its encoder passed its check against the float32 graph on this CPU (``precision_check``: propagation walks
   and box prompts on CTChest4, every Dice within 0.005 of float32's; the verdict is cached per CPU, graph and
   runtime version);
2. on the CPU, ``openvino-f32`` (:data:`AUTO_FLOAT32`) when openvino is importable, its masks passed the same
   check and it took at least 5 % less CPU per slice than ONNX Runtime float32 in that check (measured and cached
   per CPU, graph and runtime versions: on an AVX512 AMD EPYC 0.59 vs 0.77 CPU s per slice);
3. ``onnx`` when onnxruntime is importable and the graphs exported and passed their check against torch (on a GPU
   only with onnxruntime's CUDA provider; otherwise torch keeps the GPU);
4. ``torch``.

Each step down is logged with its reason (a refused accuracy check as a warning), the choice is logged (INFO:
``samed --debug``), and the engine chosen carries the reasons as ``fallback_reason`` (in its ``info()``, the
service's ``/v1/info``, ``samed serve``'s start-up line and the benchmark's label). ``SAMED_ENGINE`` sets the
default where no engine is given.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnx", "openvino", "openvino-int8", "openvino-f32", "onnx-int8")
AUTO_REDUCED = ("openvino-int8", "openvino")  # reduced-precision encoders auto tries on a CPU, fastest first
AUTO_FLOAT32 = ("openvino-f32",)  # then float32 runtimes other than ONNX Runtime, used where measured faster
PRECISION_OF = {"onnx-int8": "int8", "openvino": "bf16", "openvino-int8": "int8-nncf",
                "openvino-f32": "fp32-openvino"}


def default_engine() -> str:
    value = (os.environ.get("SAMED_ENGINE") or "auto").strip().lower()
    if value not in ENGINES:
        raise ValueError(f"SAMED_ENGINE={value!r} is not an engine: choose one of {', '.join(ENGINES)}")
    return value


def _gpu_present() -> bool:
    """A cheap hint (no torch import) that an NVIDIA GPU and driver are here."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def create_engine(model: str = "litemedsam", checkpoint: Optional[str] = None, device: Optional[str] = None,
                  engine: Optional[str] = None, resize: Optional[str] = None, resize_filter: Optional[str] = None,
                  mask_threshold=None, **onnx_options):
    """An engine object (``encode``/``encode_batch``/``decode``/``info``) for ``model`` on ``device``.

    ``resize`` ("longest", "square") and ``resize_filter`` (``models.RESIZE_FILTERS``): how pictures are resized
    for the encoder, and ``mask_threshold`` (``models.MASK_THRESHOLDS`` or a logit): how masks are cut from the
    logits, in every engine (None: the model's own, its ``ModelSpec``; each engine checks them before it loads
    anything). ``onnx_options`` (``cache_dir``, ``threads``, ``embedding_dtype``, ``spinning``) go to the
    ONNX engine.
    """
    onnx_options = dict(onnx_options, resize=resize, resize_filter=resize_filter, mask_threshold=mask_threshold)
    engine = (engine or default_engine()).lower()
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == "torch":
        from .sam_engine import SamEngine

        return SamEngine(model, checkpoint, device, resize, resize_filter, mask_threshold)
    from .onnx_engine import OnnxEngine, OnnxUnavailable
    from .onnx_export import ONNX_MODELS, OnnxExportError

    if engine in ("onnx", *PRECISION_OF):
        precision = PRECISION_OF.get(engine)
        if precision:
            onnx_options = dict(onnx_options, precision=precision)
        return OnnxEngine(model, checkpoint, device, **onnx_options)
    # auto
    reason = None
    if model not in ONNX_MODELS:
        reason = f"no ONNX engine for {model}"
    elif (not device or device.startswith("cuda")) and _gpu_present():
        from .onnx_engine import cuda_provider_available

        if not cuda_provider_available():
            reason = "a GPU is present but onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
    if reason is None:
        on_cpu = device == "cpu" or (not device and not _gpu_present())
        try:
            refused = []
            if on_cpu and "precision" not in onnx_options:
                for candidate in (*AUTO_REDUCED, *AUTO_FLOAT32):
                    reduced, why = _reduced_precision_engine(candidate, model, checkpoint, onnx_options)
                    if reduced is not None:
                        return _chosen(reduced, refused)
                    refused.append(why)
            return _chosen(OnnxEngine(model, checkpoint, "cpu" if on_cpu else device, **onnx_options), refused)
        except (OnnxUnavailable, OnnxExportError, ImportError, OSError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("ONNX Runtime engine unavailable for %s (%s); using the torch engine", model, reason)
    from .sam_engine import SamEngine

    return _chosen(SamEngine(model, checkpoint, device, resize, resize_filter, mask_threshold), [reason])


def _chosen(eng, refused):
    """``eng`` with ``fallback_reason`` = why the faster engines were not used (None if it is the fastest); the
    choice logged (INFO, ``samed --debug``)."""
    eng.fallback_reason = "; ".join(r for r in refused if r) or None
    log.info("engine auto: %s for %s%s", engine_kind(eng), eng.name,
             f" ({eng.fallback_reason})" if eng.fallback_reason else " (the fastest engine here)")
    return eng


_LABELS = {"openvino": ("openvino", "OpenVINO bfloat16 encoder", "openvino (bfloat16)"),
           "openvino-int8": ("nncf", "OpenVINO int8 (NNCF) encoder", "openvino-int8 (NNCF int8)"),
           "openvino-f32": ("openvino", "OpenVINO float32 encoder", "openvino-f32 (float32)")}


def _reduced_precision_engine(kind, model, checkpoint, onnx_options):
    """(the ``kind`` engine of :data:`AUTO_REDUCED` / :data:`AUTO_FLOAT32`, None) if it can run here and passes
    its check (for ``openvino-f32``: masks within the bound and faster than ONNX Runtime float32 here), else
    (None, why not); the reason is logged (a refused accuracy check as a warning: the user gets a slower
    engine)."""
    import importlib.util

    package, what, label = _LABELS[kind]
    missing = [p for p in ("openvino", package) if importlib.util.find_spec(p) is None]
    if missing:
        extra = "int8" if kind == "openvino-int8" else "openvino"
        why = f"{' and '.join(sorted(set(missing)))} not installed (pip install 'segmentanythingmed[{extra}]')"
        log.info("engine auto: %s not used: %s", what, why)
        return None, f"{label} not used: {why}"
    from .int8_encoder import Int8Unavailable
    from .onnx_engine import OnnxEngine, OnnxUnavailable
    from .onnx_export import OnnxExportError
    from .openvino_encoder import OpenVinoUnavailable

    try:
        return OnnxEngine(model, checkpoint, "cpu", precision=PRECISION_OF[kind], **onnx_options), None
    except OnnxExportError:
        raise  # the float32 export failed: ONNX Runtime would fail the same way; the caller falls back to torch
    except (OpenVinoUnavailable, Int8Unavailable, OnnxUnavailable, ImportError, OSError, RuntimeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        level = logging.WARNING if "accuracy bound" in str(exc) else logging.INFO
        log.log(level, "engine auto: %s not used (%s)", what, why)
        return None, f"{label} not used: {why}"


def engine_kind(engine) -> str:
    """'torch', 'onnx', 'openvino', 'openvino-int8' or 'openvino-f32' for an engine object."""
    return getattr(engine, "engine", "torch")
