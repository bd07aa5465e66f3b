"""The OpenVINO bfloat16 encoder (engine "openvino", auto's first choice on CPUs with AMX / AVX512-BF16): its cut
of the graph reproduces float32 exactly when run in float32, its masks stay close to float32 on real slices, its
check against float32 is cached and refuses a disagreeing encoder, and auto falls back when it cannot run.

Real LiteMedSAM weights, real slices; the float32 export is the session's (conftest.onnx_engine)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
ov = pytest.importorskip("openvino")

from samed.core.metrics import dice  # noqa: E402
from samed.core.prompts import Prompt, box_from_mask  # noqa: E402
from samed.engines import openvino_encoder as ove  # noqa: E402

needs_bf16 = pytest.mark.skipif(not ove.bf16_capable(), reason="this CPU has no bfloat16 units (AMX/AVX512-BF16)")


@pytest.fixture(scope="module")
def bf16_engine(onnx_engine, onnx_cache):
    if not ove.bf16_capable():
        pytest.skip("this CPU has no bfloat16 units (AMX/AVX512-BF16)")
    from samed.engines.selection import create_engine

    return create_engine("litemedsam", None, "cpu", "openvino", cache_dir=str(onnx_cache))


def test_the_cut_graph_in_float32_reproduces_the_float32_encoder(onnx_engine, real_slices):
    """Head + tail, both compiled in float32, must equal ONNX Runtime's float32 encoder: the cut loses nothing."""
    core = ov.Core()
    head, tail = ove.split_model(core.read_model(str(onnx_engine.artifacts.encoder)))
    assert len(head.outputs) == 1 and len(tail.inputs) == 1
    assert head.outputs[0].get_partial_shape() == tail.inputs[0].get_partial_shape()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    h = core.compile_model(head, "CPU", config).create_infer_request()
    t = core.compile_model(tail, "CPU", config).create_infer_request()
    for _, picture, _ in real_slices:
        x, _ = onnx_engine.preprocess(picture)
        ref = onnx_engine._encoder.run(None, {"image": x})[0]
        out = np.array(t.infer({0: np.array(h.infer({0: x})[0])})[0])
        assert out.shape == ref.shape == (1, 256, 64, 64)
        assert np.abs(out - ref).max() < 1e-3


def test_weight_products_are_the_only_rewritten_products(onnx_engine):
    model = ov.Core().read_model(str(onnx_engine.artifacts.encoder))
    matmuls = [n for n in model.get_ordered_ops() if n.get_type_name() == "MatMul"]
    n = ove.bf16_weight_products(model)
    assert n == 40 and len(matmuls) == 60  # TinyViT-5M: qkv, proj, fc1, fc2 in 10 blocks; 20 attention products
    converted = [n for n in model.get_ordered_ops() if n.get_type_name() == "MatMul"
                 and n.get_output_element_type(0) == ov.Type.bf16]
    assert len(converted) == 40


@needs_bf16
def test_bf16_masks_stay_close_to_float32_on_real_slices(bf16_engine, onnx_engine, real_slices):
    info = bf16_engine.info()
    assert info["precision"] == "bf16" and info["engine"] == "openvino+onnxruntime"
    assert bf16_engine.engine == "openvino"
    assert "OpenVINO" in info["providers"][0] and info["bf16_check"]["passed"]
    for name, picture, ref in real_slices:
        e16, e32 = bf16_engine.encode(picture), onnx_engine.encode(picture)
        assert e16.features.dtype == np.float32 and e16.features.shape == e32.features.shape
        diff = np.abs(e16.features - e32.features).max()
        assert 0 < diff < 0.1, (name, diff)  # not float32 (else nothing was sped up), but close
        box = Prompt(box_xy=box_from_mask(ref))
        m16, m32 = bf16_engine.decode(e16, box).best, onnx_engine.decode(e32, box).best
        assert dice(m16, m32) > 0.97, name
        assert abs(dice(m16, ref) - dice(m32, ref)) < 0.02, name


@needs_bf16
def test_the_check_is_cached_and_a_disagreeing_encoder_is_refused(bf16_engine, onnx_cache, monkeypatch, caplog):
    from samed.engines.onnx_engine import OnnxEngine
    from samed.engines.selection import create_engine

    sidecar = next(onnx_cache.glob("*.encoder-bf16-check.json"))
    cached = json.loads(sidecar.read_text())
    assert cached["result"]["passed"] and cached["result"]["low_res_mask_agreement"] >= ove.BF16_MASK_AGREEMENT
    mtime = sidecar.stat().st_mtime_ns
    OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache), precision="bf16")
    assert sidecar.stat().st_mtime_ns == mtime  # the check was not run again

    # a stricter bound than the encoder meets: the check (rerun: its key changed) refuses it, auto falls back
    monkeypatch.setattr(ove, "BF16_MASK_AGREEMENT", 1.000001)
    with pytest.raises(ove.OpenVinoUnavailable, match="does not reproduce float32"):
        OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache), precision="bf16")
    with caplog.at_level(logging.INFO, logger="samed.engines.selection"):
        engine = create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert engine.precision == "fp32" and "OpenVINO bfloat16 encoder not used" in caplog.text
    monkeypatch.undo()
    sidecar.unlink()  # leave the cache as the next test expects it: checked again at the next construction


def test_auto_falls_back_to_float32_without_bfloat16_units(onnx_engine, onnx_cache, monkeypatch, caplog):
    from samed.engines.onnx_engine import OnnxEngine, OnnxUnavailable
    from samed.engines.selection import create_engine

    monkeypatch.setattr(ove, "bf16_capable", lambda core=None: False)
    with pytest.raises(ove.OpenVinoUnavailable, match="no bfloat16 units"):
        OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache), precision="bf16")
    with caplog.at_level(logging.INFO, logger="samed.engines.selection"):
        engine = create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert engine.precision == "fp32" and "no bfloat16 units" in caplog.text
    with pytest.raises(OnnxUnavailable, match="runs on the CPU"):
        OnnxEngine("litemedsam", device="cuda", cache_dir=str(onnx_cache), precision="bf16")
