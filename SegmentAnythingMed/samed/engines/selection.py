"""Choose the engine that runs a model: ``torch`` (the reference), ``onnx`` (ONNX Runtime, float32), ``openvino``
(LiteMedSAM's encoder in OpenVINO with bfloat16 products, on CPUs with AMX or AVX512-BF16) or ``auto``;
``onnx-int8`` (the encoder's matrix products in int8: faster, masks leave the accuracy bound) only when asked for.

``auto`` for a model with an ONNX export (LiteMedSAM), fastest first:

1. ``openvino`` on the CPU when no GPU is in use, openvino is importable, the CPU has bfloat16 units and the
   bfloat16 encoder passed its check against the float32 graph on this CPU (``precision_check``: propagation walks
   and box prompts on CTChest4, every Dice within 0.005 of float32's);
2. ``onnx`` when onnxruntime is importable and the graphs exported and passed their check against torch (on a GPU
   only with onnxruntime's CUDA provider; otherwise torch keeps the GPU);
3. ``torch``.

Each step down is logged with its reason (a refused accuracy check as a warning), and the engine chosen carries
it as ``fallback_reason`` (in its ``info()`` and the benchmark's label). ``SAMED_ENGINE`` sets the default where
no engine is given.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnx", "openvino", "onnx-int8")


def default_engine() -> str:
    value = (os.environ.get("SAMED_ENGINE") or "auto").strip().lower()
    if value not in ENGINES:
        raise ValueError(f"SAMED_ENGINE={value!r} is not an engine: choose one of {', '.join(ENGINES)}")
    return value


def _gpu_present() -> bool:
    """A cheap hint (no torch import) that an NVIDIA GPU and driver are here."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def create_engine(model: str = "litemedsam", checkpoint: Optional[str] = None, device: Optional[str] = None,
                  engine: Optional[str] = None, **onnx_options):
    """An engine object (``encode``/``encode_batch``/``decode``/``info``) for ``model`` on ``device``.

    ``onnx_options`` (``cache_dir``, ``threads``, ``embedding_dtype``, ``spinning``) go to the ONNX engine.
    """
    engine = (engine or default_engine()).lower()
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == "torch":
        from .sam_engine import SamEngine

        return SamEngine(model, checkpoint, device)
    from .onnx_engine import OnnxEngine, OnnxUnavailable
    from .onnx_export import ONNX_MODELS, OnnxExportError

    if engine in ("onnx", "onnx-int8", "openvino"):
        precision = {"onnx-int8": "int8", "openvino": "bf16"}.get(engine)
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
            why_not_bf16 = None
            if on_cpu and "precision" not in onnx_options:
                bf16, why_not_bf16 = _openvino_engine(model, checkpoint, onnx_options)
                if bf16 is not None:
                    return bf16
            eng = OnnxEngine(model, checkpoint, "cpu" if on_cpu else device, **onnx_options)
            eng.fallback_reason = why_not_bf16
            return eng
        except (OnnxUnavailable, OnnxExportError, ImportError, OSError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("ONNX Runtime engine unavailable for %s (%s); using the torch engine", model, reason)
    else:
        log.info("engine auto: torch for %s (%s)", model, reason)
    from .sam_engine import SamEngine

    eng = SamEngine(model, checkpoint, device)
    eng.fallback_reason = reason
    return eng


def _openvino_engine(model, checkpoint, onnx_options):
    """(the OpenVINO bfloat16 engine, None) if it can run here and passes its check, else (None, why not); the
    reason is logged (a refused accuracy check as a warning: the user gets the slower float32 engine)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        why = "openvino is not installed (pip install openvino)"
        log.info("engine auto: %s; trying ONNX Runtime", why)
        return None, f"openvino not used: {why}"
    from .onnx_engine import OnnxEngine, OnnxUnavailable
    from .onnx_export import OnnxExportError
    from .openvino_encoder import OpenVinoUnavailable

    try:
        return OnnxEngine(model, checkpoint, "cpu", precision="bf16", **onnx_options), None
    except OnnxExportError:
        raise  # the float32 export failed: ONNX Runtime would fail the same way; the caller falls back to torch
    except (OpenVinoUnavailable, OnnxUnavailable, ImportError, OSError, RuntimeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        level = logging.WARNING if "accuracy bound" in str(exc) else logging.INFO
        log.log(level, "engine auto: OpenVINO bfloat16 encoder not used (%s); using ONNX Runtime float32", why)
        return None, f"openvino (bfloat16) not used: {why}"


def engine_kind(engine) -> str:
    """'torch', 'onnx' or 'openvino' for an engine object."""
    return getattr(engine, "engine", "torch")
