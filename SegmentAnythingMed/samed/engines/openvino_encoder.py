"""LiteMedSAM's exported encoder compiled by OpenVINO, partly in bfloat16, on CPUs with bfloat16 units.

On x86 CPUs with AMX or AVX512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later) bfloat16 products run
several times faster than float32 ones. TinyViT's stages are not equally sensitive to bfloat16, so the graph is
cut after stage 1 (:func:`split_model`):

- head: patch embedding, stage 0 (convolutions on a 256x256 token grid) and stage 1 (128x128) in float32, except
  the products by weight matrices (stage 1's attention qkv/projection and MLP) whose inputs are converted to
  bfloat16 (float32 accumulation, result back to float32; :func:`bf16_weight_products`). Convolutions, attention
  products, normalization, GELU and the residual stream stay float32: bfloat16 activations on the large grids
  moved masks by up to 5 %.
- tail: stages 2-3 and the neck (64x64 tokens) wholly in OpenVINO's bfloat16 mode.

On 34 real slices its masks agreed with the float32 engine's at mean Dice 0.994 (OpenVINO's bfloat16 mode on the
whole graph: 0.9895, min 0.947, and propagated 3D Dice moved by up to 0.034), at about 2x the speed of ONNX Runtime
float32 on a Sapphire Rapids CPU (AMX; docs/speed.md has the table of what was tried). bfloat16 kernels differ
between CPUs: on an AMD Zen 4 (AVX512-BF16, no AMX) the same layout moved a propagated spleen's 3D Dice by 0.0109.
So :func:`check_bf16` runs :mod:`samed.engines.precision_check` (propagation walks and box prompts on CTChest4
against float32) on each CPU before the engine is used, and refuses it beyond the accuracy bound; the speed
benchmark (``bench/bench_speed.py``) measures the Dice change on real data against torch.

Only the encoder runs here: the decoder stays in ONNX Runtime in float32 (it is fast and cheap already).
Needs ``pip install openvino``; nothing else of this module imports it at import time.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Dict, Optional

import numpy as np

log = logging.getLogger(__name__)

# the bfloat16 encoder is used only if it passes precision_check (walks and boxes on CTChest4 within the Dice
# bound of float32); the cached result is keyed by this version too
BF16_CHECK_VERSION = 2
F32_CHECK_VERSION = 1  # the float32 compilation's verdict: check + speed against ONNX Runtime float32
F32_FASTER_BY = 0.05  # OpenVINO float32 replaces ONNX Runtime float32 only if it takes >= 5 % less CPU per slice
BF16_TAIL = "layers.2"  # the first TinyViT stage that runs wholly in bfloat16 (with the stages after it and the neck)


class OpenVinoUnavailable(RuntimeError):
    """OpenVINO is not installed, or this CPU has no bfloat16 units."""


def _core():
    try:
        import openvino as ov
    except ImportError as exc:
        raise OpenVinoUnavailable(f"openvino is not installed ({exc}): pip install openvino") from exc
    return ov, ov.Core()


def bf16_capable(core=None) -> bool:
    """True if OpenVINO's CPU plugin runs bfloat16 natively here (AMX or AVX512-BF16)."""
    try:
        core = core if core is not None else _core()[1]
        return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except (OpenVinoUnavailable, RuntimeError):
        return False


def _opset():
    try:
        import openvino.opset13 as ops
    except ImportError:  # OpenVINO < 2024.2
        import openvino.runtime.opset13 as ops
    return ops


def bf16_weight_products(model) -> int:
    """Rewrite ``model`` (an ``ov.Model``) in place so that every MatMul by a constant (a weight matrix) takes
    bfloat16 inputs and gives its result back as float32; return how many were rewritten."""
    import openvino as ov

    ops = _opset()
    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "MatMul":
            continue
        sources = [node.input(i).get_source_output() for i in range(node.get_input_size())]
        if not any(src.get_node().get_type_name() == "Constant" for src in sources):
            continue  # attention's products of two activations stay float32
        for i, src in enumerate(sources):
            node.input(i).replace_source_output(ops.convert(src, ov.Type.bf16).output(0))
        node.validate_and_infer_types()
        consumers = list(node.output(0).get_target_inputs())
        back = ops.convert(node.output(0), ov.Type.f32)
        for target in consumers:
            target.replace_source_output(back.output(0))
        count += 1
    if count == 0:
        raise OpenVinoUnavailable("the encoder graph has no matrix products by weights to run in bfloat16")
    model.validate_nodes_and_infer_types()
    return count


def _stage_boundary(model, stage: str, next_stage: str):
    """The one output of a ``/stage/`` node that feeds ``/next_stage/`` nodes (TinyViT's stages are chained), or
    None if the graph does not look like that (then the encoder is not split)."""
    found = {}
    for node in model.get_ordered_ops():
        if not node.get_friendly_name().startswith(f"/{next_stage}/"):
            continue
        for i in range(node.get_input_size()):
            src = node.input(i).get_source_output()
            if src.get_node().get_friendly_name().startswith(f"/{stage}/"):
                found[(src.get_node().get_friendly_name(), src.get_index())] = src
    return next(iter(found.values())) if len(found) == 1 else None


def split_model(model, tail_stage: Optional[str] = None):
    """(head, tail) models of the encoder ``model`` (an ``ov.Model``, left as it is) cut before TinyViT stage
    ``tail_stage`` (default :data:`BF16_TAIL`; e.g. "layers.2"), or None if the cut is not found."""
    ops = _opset()
    next_stage = tail_stage or BF16_TAIL
    stage = f"layers.{int(next_stage.rsplit('.', 1)[1]) - 1}"
    if _stage_boundary(model, stage, next_stage) is None:
        return None
    head_model, tail_model = model.clone(), model.clone()
    head = type(model)([_stage_boundary(head_model, stage, next_stage)], head_model.get_parameters(), "encoder_head")
    cut = _stage_boundary(tail_model, stage, next_stage)
    param = ops.parameter(cut.get_partial_shape(), cut.get_element_type(), "stage_input")
    for target in list(cut.get_target_inputs()):
        target.replace_source_output(param.output(0))
    tail = type(model)(tail_model.get_results(), [param], "encoder_tail")
    return head, tail


class OpenVinoEncoder:
    """``run(None, {"image": x}) -> [features]``, as an ONNX Runtime session, for the exported encoder graph.

    ``precision="bf16"``: head and tail as in the module's docstring (two compiled models run one after the
    other; if the graph cannot be cut, the whole graph with its weight products in bfloat16).
    ``precision="fp32"``: the whole graph in float32.
    """

    def __init__(self, onnx_path: str, precision: str = "bf16", threads: Optional[int] = None):
        ov, core = _core()
        if precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be bf16 or fp32, got {precision!r}")
        if precision == "bf16" and not bf16_capable(core):
            raise OpenVinoUnavailable("this CPU has no bfloat16 units (AMX or AVX512-BF16): OpenVINO would run "
                                      "the encoder in float32, no faster than ONNX Runtime")
        self.precision = precision
        self.version = ov.__version__
        try:
            self.device_name = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
        except RuntimeError:
            self.device_name = "CPU"
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        model = core.read_model(str(onnx_path))
        parts = split_model(model) if precision == "bf16" else None
        if parts is None:
            self.bf16_products = bf16_weight_products(model) if precision == "bf16" else 0
            self.layout = "whole graph"
            self._parts = [(model, config)]
        else:
            head, tail = parts
            self.bf16_products = bf16_weight_products(head)
            self.layout = "head fp32 + bf16 weight products, tail bf16"
            self._parts = [(head, config), (tail, dict(config, INFERENCE_PRECISION_HINT="bf16"))]
        self._core = core
        self._requests = None  # compiled on first use (compile()): a refusal read from the cache compiles nothing
        self._lock = threading.Lock()  # one set of infer requests: calls from several threads take turns

    def compile(self) -> "OpenVinoEncoder":
        """Compile the graph(s) for the CPU (about 2.5 s; done once, by the first run() if not before)."""
        with self._lock:
            if self._requests is None:
                self._requests = [self._core.compile_model(model, "CPU", config).create_infer_request()
                                  for model, config in self._parts]
                self._parts = None
        return self

    def run(self, output_names, feeds: Dict[str, np.ndarray]):
        x = np.ascontiguousarray(feeds["image"], dtype=np.float32)
        if self._requests is None:
            self.compile()
        with self._lock:
            for request in self._requests:
                x = request.infer({0: x})[0]  # a view of the request's buffer: used before the next call
            features = np.array(x, dtype=np.float32, copy=True)
        return [features]

    def get_providers(self):
        what = f"bf16 ({self.layout}; {self.bf16_products} weight products)" if self.precision == "bf16" else "fp32"
        return [f"OpenVINO {self.version} CPU, {what}"]


def cpu_identity() -> str:
    """The CPU model as precisely as this system says it (vendor, family, model, stepping, name, the bfloat16 and
    AMX flags): bfloat16 kernels differ between CPU generations that OpenVINO calls by the same name."""
    import platform

    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    if not fields:
        return platform.processor() or platform.machine()
    flags = sorted(set(fields.get("flags", "").split()) & {"avx512_bf16", "amx_bf16", "amx_int8", "amx_fp16"})
    return " ".join([fields.get("vendor_id", "?"), f"family {fields.get('cpu family', '?')}",
                     f"model {fields.get('model', '?')}", f"stepping {fields.get('stepping', '?')}",
                     fields.get("model name", "?"), ",".join(flags)])


def bf16_check_key(encoder: "OpenVinoEncoder", source_sha256: str) -> dict:
    """What the bfloat16 verdict depends on: graph, OpenVINO version, CPU, layout, check version and bound."""
    from . import precision_check

    return {"source_sha256": source_sha256, "openvino": encoder.version, "cpu": encoder.device_name,
            "cpu_identity": cpu_identity(), "layout": encoder.layout, "version": BF16_CHECK_VERSION,
            "check": precision_check.CHECK_VERSION, "dice_bound": precision_check.DICE_BOUND}


def check_bf16(engine, encoder: "OpenVinoEncoder", float32_factory, sidecar: Path, source_sha256: str) -> dict:
    """Check the bfloat16 ``encoder`` against the float32 graph (``float32_factory()``: an ONNX Runtime session,
    opened only when the check is not cached) with :func:`samed.engines.precision_check.check_reduced_precision`:
    propagation walks and box prompts on CTChest4, every Dice within the accuracy bound of float32's.

    Cached in ``sidecar`` per graph (SHA-256), OpenVINO version, CPU (:func:`cpu_identity`), graph layout, check
    version and bound: a cache directory shared by several machines is checked on each. Raises
    :class:`OpenVinoUnavailable` (with the measures that failed) if the encoder does not hold the bound."""
    from . import precision_check

    run = lambda: precision_check.check_reduced_precision(engine, encoder, float32_factory)  # noqa: E731
    return precision_check.cached_verdict(sidecar, bf16_check_key(encoder, source_sha256), run, "bfloat16 encoder",
                                          OpenVinoUnavailable)


def f32_check_path(encoder_onnx) -> Path:
    """Where the float32 OpenVINO encoder's verdict (check + speed) is cached, beside the graphs."""
    enc = Path(encoder_onnx)
    return enc.with_name(enc.name.replace(".encoder.onnx", ".encoder-ovf32-check.json"))


def f32_check_key(encoder: "OpenVinoEncoder", source_sha256: str, threads: int) -> dict:
    """What the float32 verdict depends on: the masks (graph, OpenVINO version, CPU, check, bound) and the speed
    comparison (ONNX Runtime's version, threads)."""
    from importlib import metadata

    from . import precision_check

    try:
        ort_version = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        ort_version = "none"
    return {"source_sha256": source_sha256, "openvino": encoder.version, "onnxruntime": ort_version,
            "cpu": encoder.device_name, "cpu_identity": cpu_identity(), "threads": int(threads),
            "version": F32_CHECK_VERSION, "faster_by": F32_FASTER_BY, "check": precision_check.CHECK_VERSION,
            "dice_bound": precision_check.DICE_BOUND}


def f32_speed_verdict(result: dict, faster_by: Optional[float] = None) -> dict:
    """``result`` of :func:`precision_check.compare` with the speed rule added: the OpenVINO float32 encoder is
    used only if its median CPU seconds per slice are at least ``faster_by`` (default :data:`F32_FASTER_BY`)
    below ONNX Runtime float32's in the same check (same slices, same process); else ``passed`` is False with
    the measured times in ``why`` (not an accuracy refusal: its masks may well be equal)."""
    faster_by = F32_FASTER_BY if faster_by is None else float(faster_by)
    cpu = result.get("encode_cpu_s") or {}
    ours, ref = cpu.get("candidate"), cpu.get("float32")
    out = dict(result)
    if not ours or not ref:
        out.update(passed=False, why="its speed against ONNX Runtime float32 was not measured")
        return out
    out["speedup_cpu"] = round(ref / ours, 3)
    if result.get("passed") and ours > ref * (1.0 - faster_by):
        out.update(passed=False, why=(f"not faster than ONNX Runtime float32 on this CPU: {ours:.3f} vs "
                                      f"{ref:.3f} CPU s per slice (needs {faster_by:.0%} less)"))
    return out


def open_f32_checked(engine, float32_factory):
    """(verdict, compiled float32 :class:`OpenVinoEncoder`) for ``engine`` (an ONNX engine: its preprocessing and
    decoder), or :class:`OpenVinoUnavailable` saying why not: its masks left the bound of ONNX Runtime float32's
    on the CTChest4 check (not expected: same precision, other kernels), or it was not faster on this CPU.
    Cached per CPU, graph, OpenVINO / ONNX Runtime versions and threads; a cached refusal compiles nothing."""
    import os

    from . import precision_check
    from .onnx_engine import available_cores

    threads = int(getattr(engine, "_threads", None) or os.environ.get("SAMED_ORT_THREADS") or available_cores())
    encoder = OpenVinoEncoder(str(engine.artifacts.encoder), "fp32", threads)
    sha = engine.manifest["files"]["encoder"]["sha256"]

    def run():
        encoder.compile()  # not inside the timed encodes
        return f32_speed_verdict(precision_check.check_reduced_precision(engine, encoder, float32_factory))

    verdict = precision_check.cached_verdict(f32_check_path(engine.artifacts.encoder),
                                             f32_check_key(encoder, sha, threads), run,
                                             "OpenVINO float32 encoder", OpenVinoUnavailable)
    return verdict, encoder.compile()
