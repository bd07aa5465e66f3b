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
float32 (docs/speed.md has the table of what was tried). :func:`check_bf16` measures the agreement on the export's
check picture before the engine is used; the speed benchmark (``bench/bench_speed.py``) measures the Dice change
on real data against torch.

Only the encoder runs here: the decoder stays in ONNX Runtime in float32 (it is fast and cheap already).
Needs ``pip install openvino``; nothing else of this module imports it at import time.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

log = logging.getLogger(__name__)

# the bfloat16 encoder is used only if, on the export's check picture and boxes, its masks agree with the float32
# graph's on at least this fraction of low-res pixels and its scores within this bound
BF16_MASK_AGREEMENT = 0.995
BF16_SCORE_TOLERANCE = 2e-2
BF16_CHECK_VERSION = 1
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
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        model = core.read_model(str(onnx_path))
        parts = split_model(model) if precision == "bf16" else None
        if parts is None:
            self.bf16_products = bf16_weight_products(model) if precision == "bf16" else 0
            self.layout = "whole graph"
            self._requests = [core.compile_model(model, "CPU", config).create_infer_request()]
        else:
            head, tail = parts
            self.bf16_products = bf16_weight_products(head)
            self.layout = "head fp32 + bf16 weight products, tail bf16"
            self._requests = [core.compile_model(head, "CPU", config).create_infer_request(),
                              core.compile_model(tail, "CPU", dict(config, INFERENCE_PRECISION_HINT="bf16"))
                              .create_infer_request()]
        self._lock = threading.Lock()  # one set of infer requests: calls from several threads take turns

    def run(self, output_names, feeds: Dict[str, np.ndarray]):
        x = np.ascontiguousarray(feeds["image"], dtype=np.float32)
        with self._lock:
            for request in self._requests:
                x = request.infer({0: x})[0]  # a view of the request's buffer: used before the next call
            features = np.array(x, dtype=np.float32, copy=True)
        return [features]

    def get_providers(self):
        what = f"bf16 ({self.layout}; {self.bf16_products} weight products)" if self.precision == "bf16" else "fp32"
        return [f"OpenVINO {self.version} CPU, {what}"]


def check_bf16(encoder: "OpenVinoEncoder", reference_factory, prepare, decoder, spec, sidecar: Path,
               source_sha256: str) -> dict:
    """Compare the bfloat16 encoder with the float32 graph (``reference_factory()``: an ONNX Runtime session,
    opened only when the check is not cached) on the
    export's check picture and boxes, through the same decoder. Cached in ``sidecar`` (per graph, OpenVINO
    version, CPU model and graph layout: a cache directory shared by several machines is checked on each); raises :class:`OpenVinoUnavailable` if the masks disagree beyond the bounds above."""
    key = {"source_sha256": source_sha256, "openvino": encoder.version, "cpu": encoder.device_name,
           "layout": encoder.layout, "version": BF16_CHECK_VERSION,
           "agreement_min": BF16_MASK_AGREEMENT, "score_tol": BF16_SCORE_TOLERANCE}
    try:
        cached = json.loads(sidecar.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            result = cached["result"]
            if not result.get("passed"):
                raise OpenVinoUnavailable(result.get("why", "the bfloat16 encoder failed its check"))
            return result
    except (OSError, ValueError, KeyError):
        pass
    from .onnx_export import CHECK_BOXES, _box_points, normalized_check_input

    t0 = time.perf_counter()
    x = normalized_check_input(spec)
    feats_ref = reference_factory().run(None, {"image": x})[0]
    feats = encoder.run(None, {"image": x})[0]
    agreement, score_diff = 1.0, 0.0
    prep_ref = prepare.run(None, {"image_embeddings": feats_ref})
    prep = prepare.run(None, {"image_embeddings": feats})
    names = [i.name for i in prepare.get_outputs()]
    for box in CHECK_BOXES:
        coords, labels = _box_points(box)
        low_ref, iou_ref = decoder.run(None, dict(zip(names, prep_ref), point_coords=coords, point_labels=labels))
        low, iou = decoder.run(None, dict(zip(names, prep), point_coords=coords, point_labels=labels))
        agreement = min(agreement, float(((low > 0) == (low_ref > 0)).mean()))
        score_diff = max(score_diff, float(np.abs(iou - iou_ref).max()))
    result = {"feature_max_abs_diff": float(f"{np.abs(feats - feats_ref).max():.3g}"),
              "low_res_mask_agreement": float(f"{agreement:.5g}"), "score_max_abs_diff": float(f"{score_diff:.3g}"),
              "seconds": round(time.perf_counter() - t0, 2)}
    problems = []
    if not np.isfinite(feats).all():
        problems.append("non-finite features")
    if agreement < BF16_MASK_AGREEMENT:
        problems.append(f"only {agreement:.2%} of mask pixels agree with float32 (< {BF16_MASK_AGREEMENT:.1%})")
    if score_diff > BF16_SCORE_TOLERANCE:
        problems.append(f"scores differ by {score_diff:.3g} (> {BF16_SCORE_TOLERANCE:g})")
    result["passed"] = not problems
    if problems:
        result["why"] = "the bfloat16 encoder does not reproduce float32: " + "; ".join(problems)
    try:
        tmp = sidecar.with_name(sidecar.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "result": result}, indent=1), encoding="utf-8")
        os.replace(tmp, sidecar)
    except OSError as exc:
        log.debug("could not cache the bf16 check in %s: %s", sidecar, exc)
    if problems:
        raise OpenVinoUnavailable(result["why"])
    return result
