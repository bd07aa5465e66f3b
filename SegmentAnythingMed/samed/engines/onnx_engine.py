"""The ONNX Runtime engine for LiteMedSAM: the torch engine's interface and masks, faster on small CPUs.

The encoder and decoder are exported from the torch model on first use, checked against torch and cached per
user (see :mod:`samed.engines.onnx_export`); later constructions load the cached graphs without importing torch.
What differs from :class:`samed.engines.sam_engine.SamEngine`:

- preprocessing (resize with PIL exactly as segment-anything does, normalize, pad) is done once in numpy, straight
  into the encoder's input buffer: no torch tensors, no copies between numpy and torch;
- ONNX Runtime runs fixed-shape graphs with every graph optimization on, ``intra_op`` threads = the cores this
  process may use, sequential execution and no busy-waiting threads (``allow_spinning`` off: on a 2-core machine
  that also runs Slicer's GUI, spinning threads steal the cores the next call needs); CUDA when onnxruntime-gpu
  is installed and a GPU is present;
- the decoder is segment-anything's, rewritten so that ONNX Runtime spends its time in matrix products (see
  :mod:`samed.engines.onnx_decoder`); what depends only on the slice is computed at its first prompt and kept
  for the next prompts on the last ``PREPARED_SLICES`` slices;
- the decoder's two bilinear resizes (256 px logits -> padded model input -> crop -> slice size) are done in numpy
  with precomputed taps, only on the masks that are returned, and skipped where they are the identity;
- embeddings are numpy arrays, optionally kept in float16 (half the cache memory; converted back per decode).
"""
from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, Optional, Tuple

import numpy as np

from ..core.backend import check_image
from ..core.prompts import Prediction, Prompt
from .bilinear import resize_axis, upsample_logits
from .prompt_prep import prepare_prompt
from .models import ModelSpec, get_spec
from .onnx_export import (ONNX_MODELS, OnnxArtifacts, OnnxExportError, default_checkpoint_path, export,
                          int8_encoder, read_manifest)

log = logging.getLogger(__name__)

EMBEDDING_DTYPES = ("float32", "float16")
PRECISIONS = ("fp32", "int8", "bf16", "int8-nncf", "fp32-openvino")  # bf16 / int8-nncf / fp32-openvino: the
# encoder in OpenVINO (openvino_encoder.py, int8_encoder.py); int8: ONNX Runtime's dynamic quantization (opt-in)
ENGINE_NAMES = {"bf16": "openvino", "int8-nncf": "openvino-int8",
                "fp32-openvino": "openvino-f32"}  # else "onnx" (as selection.ENGINES)
PREPARED_NAMES = ("keys0", "k0_t2i", "v0_t2i", "q0_i2t")  # onnx_decoder.PREPARED (not imported: it needs torch)


class OnnxUnavailable(RuntimeError):
    """The ONNX engine cannot run here (onnxruntime missing, a model it does not run, no CUDA provider...)."""


@dataclass
class ArrayEmbedding:
    """An encoded slice as a numpy array (1, 256, 64, 64), float32 or float16, and the sizes to map prompts."""

    features: np.ndarray
    original_size: Tuple[int, int]
    input_size: Tuple[int, int]

    def nbytes(self) -> int:
        return int(self.features.nbytes)


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # honours taskset / container CPU sets
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def session_options(threads: Optional[int] = None, spinning: Optional[bool] = None, mem_pattern: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # planned buffers: the encoder's cost ~280 MB more peak memory for no speed; the decoder's are small and save
    # ~15 % of a decode (it allocates many mid-sized tensors per prompt)
    so.enable_mem_pattern = bool(mem_pattern)
    so.intra_op_num_threads = int(threads or os.environ.get("SAMED_ORT_THREADS") or available_cores())
    so.inter_op_num_threads = 1
    spin = _env_flag("SAMED_ORT_SPINNING", False) if spinning is None else bool(spinning)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    return so


def cuda_provider_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def resolve_device(device: Optional[str]) -> str:
    if not device:
        return "cuda" if cuda_provider_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not cuda_provider_available():
            raise OnnxUnavailable(f"device {device!r} was asked for but this onnxruntime has no CUDA provider "
                                  f"(install onnxruntime-gpu, or use the torch engine)")
        return device
    raise ValueError(f"unknown device {device!r}: use cpu, cuda or cuda:N")


def _providers(device: str):
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEngine:
    """LiteMedSAM in ONNX Runtime, with :class:`SamEngine`'s interface (encode, encode_batch, decode, info);
    with ``precision="bf16"`` its encoder runs in OpenVINO (the "openvino" engine)."""

    PREPARED_SLICES = 2  # slices whose decoder preparation (10 MB each) is kept for their next prompts

    def __init__(self, model: str = "litemedsam", checkpoint: Optional[str] = None, device: Optional[str] = None,
                 cache_dir: Optional[str] = None, threads: Optional[int] = None,
                 embedding_dtype: str = "float32", spinning: Optional[bool] = None, precision: str = "fp32",
                 resize: Optional[str] = None, resize_filter: Optional[str] = None, mask_threshold=None):
        self.spec: ModelSpec = get_spec(model).with_input(resize, resize_filter, mask_threshold)  # as SamEngine's
        self.name = self.spec.name
        if self.name not in ONNX_MODELS:
            raise OnnxUnavailable(f"the ONNX engine runs {', '.join(ONNX_MODELS)}; {self.name} runs on torch")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision in ENGINE_NAMES and device and device != "cpu":
            raise OnnxUnavailable(f"the {precision} (OpenVINO) encoder runs on the CPU, not on {device}")
        self.precision = precision
        self.engine = ENGINE_NAMES.get(precision, "onnx")  # the engine's name, as selection.ENGINES
        if embedding_dtype not in EMBEDDING_DTYPES:
            raise ValueError(f"embedding_dtype must be one of {EMBEDDING_DTYPES}, got {embedding_dtype!r}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise OnnxUnavailable(f"onnxruntime is not installed ({exc}): pip install onnxruntime "
                                  f"(or onnxruntime-gpu)") from exc
        self._ort = ort
        self.device = resolve_device(device)
        self.embedding_dtype = np.dtype(embedding_dtype)
        self._threads = threads
        self._spinning = spinning
        self.checkpoint = self._checkpoint_path(checkpoint)
        directory = Path(cache_dir) if cache_dir is not None else None
        self.artifacts = OnnxArtifacts.for_checkpoint(self.name, self.checkpoint, directory)
        self._sam = None
        self._sam_lock = threading.Lock()
        self._prepared: "OrderedDict[int, tuple]" = OrderedDict()
        self._prepared_lock = threading.Lock()
        self.exported = False  # True if this construction exported the graphs (False: loaded from the cache)
        self.manifest = self._load_or_export()
        self.bf16_check: Optional[dict] = None
        self.precision_check: Optional[dict] = None  # the verdict of precision_check on the encoder used (bf16, int8)
        self.fallback_reason: Optional[str] = None  # set by engine "auto" when a faster engine was refused here
        self._mean = np.asarray(self.spec.pixel_mean, np.float32)
        self._std = np.asarray(self.spec.pixel_std, np.float32)
        if self.precision == "bf16":
            self._open_bf16_encoder()  # checked on real walks: encodes through self.preprocess
        elif self.precision == "int8-nncf":
            from .int8_encoder import open_checked

            self.precision_check, self._encoder = open_checked(self, self._float32_session)
        elif self.precision == "fp32-openvino":  # float32 compiled by OpenVINO: checked, and faster here
            from .openvino_encoder import open_f32_checked

            self.precision_check, self._encoder = open_f32_checked(self, self._float32_session)

    # ---- graphs: cache, export, sessions ---------------------------------------------------------------------
    def _checkpoint_path(self, checkpoint: Optional[str]) -> str:
        path = checkpoint or default_checkpoint_path(self.name)
        if path is None:
            from .checkpoints import default_checkpoint

            path = default_checkpoint(self.spec)
        if not os.path.isfile(path):
            from .checkpoints import CheckpointError

            raise CheckpointError(f"checkpoint file not found: {path} (expected a {self.spec.description} checkpoint)")
        return path

    def _session(self, path: str, device: Optional[str] = None, mem_pattern: bool = False):
        return self._ort.InferenceSession(path, session_options(self._threads, self._spinning, mem_pattern),
                                          providers=_providers(device or self.device))

    def _load_or_export(self) -> dict:
        art = self.artifacts
        manifest, why = read_manifest(art)
        if manifest is not None:
            try:
                self._open_sessions(manifest)
                return manifest
            except OnnxExportError:
                raise
            except (RuntimeError, OSError, ValueError) as exc:  # onnxruntime's load errors are RuntimeErrors
                why = f"the cached graphs do not load ({type(exc).__name__}: {str(exc)[:200]})"
        log.info("exporting %s to ONNX (%s): %s", self.name, why, art.encoder.parent)
        manifest = export(self.sam, self.spec, art, self.checkpoint, lambda p: self._session(p, "cpu"))
        self.exported = True
        self._open_sessions(manifest)
        return manifest

    def _open_sessions(self, manifest: dict) -> None:
        if self.precision in ENGINE_NAMES:
            self._encoder = None  # OpenVINO's, opened after this (checked first)
        else:
            encoder = self.artifacts.encoder if self.precision == "fp32" else int8_encoder(self.artifacts, manifest)
            self._encoder = self._session(str(encoder))
        self._prepare = self._session(str(self.artifacts.prepare))
        self._decoder = self._session(str(self.artifacts.decoder), mem_pattern=True)
        if self.device.startswith("cuda") and "CUDAExecutionProvider" not in self._decoder.get_providers():
            log.warning("onnxruntime could not use CUDA (%s): running on the CPU", self._decoder.get_providers())
            self.device = "cpu"

    def _open_bf16_encoder(self) -> None:
        """Open OpenVINO's bfloat16 compilation of the exported encoder, checked against the float32 graph in ONNX
        Runtime on CTChest4 walks and boxes (``precision_check``; cached per graph, OpenVINO version and CPU:
        later starts open no float32 encoder)."""
        from .openvino_encoder import OpenVinoEncoder, check_bf16

        threads = int(self._threads or os.environ.get("SAMED_ORT_THREADS") or available_cores())
        encoder = OpenVinoEncoder(str(self.artifacts.encoder), "bf16", threads)
        self.bf16_check = check_bf16(self, encoder, self._float32_session, self.bf16_check_path,
                                     self.manifest["files"]["encoder"]["sha256"])
        self.precision_check = self.bf16_check
        self._encoder = encoder.compile()

    def _float32_session(self):
        """The float32 encoder in ONNX Runtime: the reference of precision checks (opened only when not cached)."""
        return self._session(str(self.artifacts.encoder), "cpu")

    @property
    def bf16_check_path(self) -> Path:
        """Where the bfloat16 encoder's check result is cached (beside the graphs)."""
        enc = self.artifacts.encoder
        return enc.with_name(enc.name.replace(".encoder.onnx", ".encoder-bf16-check.json"))

    @property
    def sam(self):
        """The torch model (built on first use: for the export, or for code that wants the reference model)."""
        with self._sam_lock:
            if self._sam is None:
                from .checkpoints import load_weights

                sam = self.spec.build()
                load_weights(sam, self.spec, self.checkpoint)
                self._sam = sam.eval()
            return self._sam

    @property
    def prompt_kinds(self) -> FrozenSet[str]:
        return self.spec.prompt_kinds

    def input_size_for(self, shape_hw) -> Tuple[int, int]:
        return self.spec.input_size_for(shape_hw)

    # ---- encode ----------------------------------------------------------------------------------------------
    def preprocess(self, image_rgb: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
        """(H, W, 3) uint8 -> the encoder's (1, 3, S, S) float32 input: resized by the spec's ``resize_filter``
        (antialias/bicubic: PIL, as segment-anything's ResizeLongestSide; bilinear: torch's bilinear map on the
        float pixels, as SamEngine), normalized, zero-padded bottom/right (as ``Sam.preprocess``)."""
        h, w = image_rgb.shape[:2]
        ih, iw = self.input_size_for((h, w))
        chw_pixels = None
        if (ih, iw) != (h, w) and self.spec.resize_filter == "bilinear":
            chw_pixels = resize_axis(resize_axis(image_rgb.transpose(2, 0, 1).astype(np.float32), ih, -2), iw, -1)
        elif (ih, iw) != (h, w):
            from PIL import Image

            from .models import pil_resample

            image_rgb = np.asarray(Image.fromarray(image_rgb).resize((iw, ih), pil_resample(self.spec.resize_filter)))
        s = self.spec.image_size
        x = np.zeros((1, 3, s, s), dtype=np.float32)
        chw = x[0, :, :ih, :iw]
        chw[...] = image_rgb.transpose(2, 0, 1) if chw_pixels is None else chw_pixels
        chw -= self._mean[:, None, None]
        chw /= self._std[:, None, None]
        return x, (ih, iw)

    def encode(self, image_rgb: np.ndarray) -> ArrayEmbedding:
        image_rgb = check_image(image_rgb)
        x, input_size = self.preprocess(image_rgb)
        features = self._encoder.run(None, {"image": x})[0]
        if features.dtype != self.embedding_dtype:
            features = features.astype(self.embedding_dtype)
        return ArrayEmbedding(features, tuple(image_rgb.shape[:2]), input_size)

    def encode_batch(self, images_rgb) -> list:
        """Encode several slices (one encoder pass each: on a CPU, batching does not pay for this encoder)."""
        return [self.encode(im) for im in images_rgb]

    # ---- decode ----------------------------------------------------------------------------------------------
    def decode(self, emb: ArrayEmbedding, prompt: Prompt, multimask: Optional[bool] = None,
               mask_threshold=None) -> Prediction:
        """``mask_threshold``: how this decode's masks are cut (``ModelSpec.mask_threshold``); None: the engine's."""
        spec = self.spec if mask_threshold is None else self.spec.with_input(mask_threshold=mask_threshold)
        prompt, coords, labels, multimask = prepare_prompt(self.name, self.prompt_kinds, prompt, emb.original_size,
                                                           multimask)
        pts, lab = [], []
        if coords is not None:
            pts.append(self.spec.to_input_xy(coords, emb.original_size, emb.input_size))
            lab.append(labels)
        if prompt.box_xy is not None:
            pts.append(self.spec.to_input_xy(prompt.box_xy.reshape(2, 2), emb.original_size, emb.input_size))
            lab.append(np.array([2.0, 3.0]))
        else:  # as PromptEncoder: points without a box get a padding point
            pts.append(np.zeros((1, 2)))
            lab.append(np.array([-1.0]))
        inputs = dict(self._prepared_for(emb))
        inputs["point_coords"] = np.concatenate(pts).astype(np.float32)[None]
        inputs["point_labels"] = np.concatenate(lab).astype(np.float32)[None]
        low_res, iou = self._decoder.run(None, inputs)
        chosen = slice(1, None) if multimask else slice(0, 1)
        logits = low_res[0, chosen]
        scores = iou[0, chosen]
        cut = spec.logit_thresholds(scores).astype(np.float32)[:, None, None]  # as SamEngine.decode
        binary = self.spec.binary_mask_upsampling
        up = upsample_logits((logits > cut).astype(np.float32) if binary else logits, self.spec.image_size,
                             self.spec.resize, tuple(emb.input_size), tuple(emb.original_size))
        masks = up > (0.5 if binary else cut)
        return Prediction(masks, scores, logits).sorted()

    def _prepared_for(self, emb: ArrayEmbedding) -> dict:
        """The decoder's slice-only inputs for ``emb``: computed at its first prompt, then kept."""
        key = id(emb)
        with self._prepared_lock:
            hit = self._prepared.get(key)
            if hit is not None and hit[0]() is emb:
                self._prepared.move_to_end(key)
                return hit[1]
        features = emb.features
        if features.dtype != np.float32:
            features = features.astype(np.float32)
        prepared = dict(zip(PREPARED_NAMES, self._prepare.run(None, {"image_embeddings": features})))
        with self._prepared_lock:
            self._prepared[key] = (weakref.ref(emb), prepared)
            while len(self._prepared) > self.PREPARED_SLICES:
                self._prepared.popitem(last=False)
        return prepared

    def info(self) -> dict:
        return {"model": self.name, "description": self.spec.description, "device": self.device,
                "prompt_kinds": sorted(self.prompt_kinds), "image_size": self.spec.image_size,
                "resize": self.spec.resize, "resize_filter": self.spec.resize_filter,
                "mask_threshold": self.spec.mask_threshold, "input_default": self.spec.input_is_default(),
                "checkpoint": self.checkpoint,
                "engine": "openvino+onnxruntime" if self.precision in ENGINE_NAMES else "onnxruntime",
                "onnxruntime": self._ort.__version__, "providers": self._encoder.get_providers(),
                "threads": int(self._threads or os.environ.get("SAMED_ORT_THREADS") or available_cores()),
                "embedding_dtype": str(self.embedding_dtype), "precision": self.precision,
                "encoder_onnx": str(self.artifacts.encoder),
                "export_check": self.manifest.get("check", {}),
                **({"bf16_check": self.bf16_check} if self.bf16_check else {}),
                **({"precision_check": self.precision_check} if self.precision_check else {}),
                **({"fallback_reason": self.fallback_reason} if self.fallback_reason else {})}
