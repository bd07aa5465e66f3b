"""Choose the engine that runs a model: ``torch`` (the reference), ``onnx`` (ONNX Runtime) or ``auto``;
``onnx-int8`` (the encoder's matrix products in int8: faster, masks slightly different) only when asked for.

``auto`` = the ONNX Runtime engine when the model has one (LiteMedSAM), onnxruntime is importable and the graphs
exported and passed their check against torch; otherwise torch, with the reason logged. When CUDA is present but
onnxruntime has no CUDA provider, ``auto`` keeps torch on the GPU (ONNX on the CPU would be slower).
The environment variable ``SAMED_ENGINE`` sets the default where no engine is given.
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
        try:
            return OnnxEngine(model, checkpoint, device, **onnx_options)
        except (OnnxUnavailable, OnnxExportError, ImportError, OSError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("ONNX Runtime engine unavailable for %s (%s); using the torch engine", model, reason)
    else:
        log.info("engine auto: torch for %s (%s)", model, reason)
    from .sam_engine import SamEngine

    eng = SamEngine(model, checkpoint, device)
    eng.fallback_reason = reason
    return eng


def engine_kind(engine) -> str:
    """'onnx' or 'torch' for an engine object."""
    return getattr(engine, "engine", "torch")
