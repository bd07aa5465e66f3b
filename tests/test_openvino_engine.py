"""The OpenVINO bfloat16 encoder (engine "openvino", auto's first choice on CPUs with AMX / AVX512-BF16): its cut
of the graph reproduces float32 exactly when run in float32, its masks stay close to float32 on real slices, and
its check before use (precision_check: propagation walks and box prompts on CTChest4 against float32) refuses an
encoder whose walks drift, accepts float32, is cached, and makes auto fall back with the reason shown.

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
from samed.engines import selection  # noqa: E402

needs_bf16 = pytest.mark.skipif(not ove.bf16_capable(), reason="this CPU has no bfloat16 units (AMX/AVX512-BF16)")


class Float32Once:
    """The session's float32 ONNX Runtime encoder, each picture encoded once (the checks below encode the same 13
    CTChest4 slices several times): ``run`` as an ONNX Runtime session."""

    def __init__(self, session):
        self.session, self.memo = session, {}

    def run(self, names, feeds):
        x = feeds["image"]
        key = hash(x.tobytes())
        if key not in self.memo:
            self.memo[key] = self.session.run(None, feeds)[0]
        return [self.memo[key].copy()]

    def get_providers(self):
        return self.session.get_providers()


class Drifting:
    """An encoder that drifts like a reduced-precision one: the real float32 features plus a fixed error field of
    standard deviation ``scale``, smooth over 8x8 feature pixels (the bfloat16 encoder's features differ from
    float32 by up to ~0.035, in spatially correlated patches; independent per-value noise of 1 % averages out in
    the decoder and moved no Dice by more than 0.0003)."""

    def __init__(self, inner, scale: float):
        self.inner, self.scale = inner, scale
        self.runs = 0

    def run(self, names, feeds):
        self.runs += 1
        f = self.inner.run(names, feeds)[0]
        field = np.random.default_rng(0).standard_normal((1, f.shape[1], f.shape[2] // 8, f.shape[3] // 8))
        return [f + np.float32(self.scale) * np.kron(field, np.ones((1, 1, 8, 8))).astype(np.float32)]

    def get_providers(self):
        return ["drifting test encoder"]


@pytest.fixture(scope="module")
def float32_once(onnx_engine):
    return Float32Once(onnx_engine._encoder)


@pytest.fixture(scope="module")
def check_data():
    from samed.engines.precision_check import CheckData

    return CheckData()


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
def test_bf16_masks_stay_close_to_float32_on_real_slices(onnx_engine, real_slices):
    """The bfloat16 layout itself (without its check): features differ, masks stay close on single slices."""
    from samed.engines.precision_check import with_encoder

    bf16_engine = with_encoder(onnx_engine, ove.OpenVinoEncoder(str(onnx_engine.artifacts.encoder), "bf16"))
    assert "OpenVINO" in bf16_engine.info()["providers"][0]
    for name, picture, ref in real_slices:
        e16, e32 = bf16_engine.encode(picture), onnx_engine.encode(picture)
        assert e16.features.dtype == np.float32 and e16.features.shape == e32.features.shape
        diff = np.abs(e16.features - e32.features).max()
        assert 0 < diff < 0.1, (name, diff)  # not float32 (else nothing was sped up), but close
        box = Prompt(box_xy=box_from_mask(ref))
        m16, m32 = bf16_engine.decode(e16, box).best, onnx_engine.decode(e32, box).best
        assert dice(m16, m32) > 0.97, name
        assert abs(dice(m16, ref) - dice(m32, ref)) < 0.02, name


def test_the_check_refuses_an_encoder_whose_walks_drift(onnx_engine, float32_once, check_data):
    """Real weights, real CTChest4 walks: features off by ~0.03 (bfloat16's size) make a walk leave the bound."""
    from samed.engines import precision_check as pc

    reference = pc.with_encoder(onnx_engine, float32_once)
    candidate = pc.with_encoder(onnx_engine, Drifting(float32_once, 0.03))
    result = pc.compare(candidate, reference, data=check_data)
    assert not result["passed"], pc.summary(result)
    assert "leave the accuracy bound" in result["why"] and result["worst_abs_diff"] > pc.DICE_BOUND
    assert set(result["measures"]) == {f"{kind} {s}" for kind in ("walk", "boxes") for s in pc.WALK_STRUCTURES}
    walk = result["measures"]["walk right lung"]
    assert 0.85 < walk["float32"] < 1  # a real walk along a real lung, not an empty mask
    assert result["encodes"] == 2 * pc.WALK_STEPS + 1  # each slice of the walks' reach encoded once


def test_the_check_accepts_float32_from_another_runtime(onnx_engine, float32_once, check_data):
    """OpenVINO's float32 compilation (different kernels, features within ~1e-5): every Dice within the bound."""
    from samed.engines import precision_check as pc

    reference = pc.with_encoder(onnx_engine, float32_once)
    candidate = pc.with_encoder(onnx_engine, ove.OpenVinoEncoder(str(onnx_engine.artifacts.encoder), "fp32"))
    result = pc.compare(candidate, reference, data=check_data)
    assert result["passed"], result.get("why")
    assert result["worst_abs_diff"] <= pc.DICE_BOUND and "why" not in result
    assert all(0 <= m["candidate"] <= 1 for m in result["measures"].values())


@needs_bf16
def test_auto_refuses_a_drifting_bf16_encoder_says_why_and_caches_it(onnx_engine, onnx_cache, float32_once,
                                                                       monkeypatch, caplog):
    """auto on a CPU whose bfloat16 encoder drifts (simulated on top of the real float32 features, so the outcome
    does not depend on this CPU's bf16 kernels): float32 ONNX Runtime, with the reason in info(); the refusal is
    cached, so the next start neither checks nor compiles the bfloat16 graph."""
    from samed.engines.selection import create_engine

    sidecar = onnx_engine.bf16_check_path
    saved = sidecar.read_bytes() if sidecar.exists() else None
    drifting = Drifting(float32_once, 0.03)
    monkeypatch.setattr(selection, "AUTO_REDUCED", ("openvino",))  # the int8 encoder: tests/test_int8_engine.py
    monkeypatch.setattr(selection, "AUTO_FLOAT32", ())  # openvino-f32: test_openvino_engine.py
    monkeypatch.setattr(ove.OpenVinoEncoder, "run", lambda self, names, feeds: drifting.run(names, feeds))
    sidecar.unlink(missing_ok=True)
    try:
        with caplog.at_level(logging.INFO, logger="samed.engines"):
            engine = create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
        assert (engine.engine, engine.precision) == ("onnx", "fp32")
        info = engine.info()
        assert "accuracy bound" in info["fallback_reason"] and "Dice" in info["fallback_reason"]
        assert "OpenVINO bfloat16 encoder not used" in caplog.text and "refused after a" in caplog.text
        cached = json.loads(sidecar.read_text())
        assert not cached["result"]["passed"] and cached["key"]["cpu_identity"] == ove.cpu_identity()
        runs, mtime = drifting.runs, sidecar.stat().st_mtime_ns
        monkeypatch.setattr(ove.OpenVinoEncoder, "compile", lambda self: pytest.fail("compiled a refused encoder"))
        engine = create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
        assert engine.engine == "onnx" and "accuracy bound" in engine.info()["fallback_reason"]
        assert drifting.runs == runs and sidecar.stat().st_mtime_ns == mtime  # read from the cache
    finally:
        sidecar.unlink(missing_ok=True)
        if saved is not None:
            sidecar.write_bytes(saved)


@needs_bf16
def test_auto_uses_bf16_when_its_check_passes_and_caches_the_pass(onnx_engine, onnx_cache, monkeypatch):
    """With a bound this CPU's real bfloat16 encoder holds (0.05; the real one is 0.005), auto picks it; the pass
    is cached per bound, and a later start reads it."""
    from samed.engines import precision_check as pc
    from samed.engines.selection import create_engine

    sidecar = onnx_engine.bf16_check_path
    saved = sidecar.read_bytes() if sidecar.exists() else None
    monkeypatch.setattr(pc, "DICE_BOUND", 0.05)
    monkeypatch.setattr(selection, "AUTO_REDUCED", ("openvino",))  # the int8 encoder: tests/test_int8_engine.py
    monkeypatch.setattr(selection, "AUTO_FLOAT32", ())  # openvino-f32: test_openvino_engine.py
    try:
        engine = create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
        assert (engine.engine, engine.precision) == ("openvino", "bf16") and not engine.fallback_reason
        check = engine.info()["bf16_check"]
        assert check["passed"] and check["dice_bound"] == 0.05 and check["worst_abs_diff"] > 0  # bf16 moved masks
        mtime = sidecar.stat().st_mtime_ns
        again = create_engine("litemedsam", None, "cpu", "openvino", cache_dir=str(onnx_cache))
        assert again.bf16_check["cached"] and sidecar.stat().st_mtime_ns == mtime
    finally:
        sidecar.unlink(missing_ok=True)
        if saved is not None:
            sidecar.write_bytes(saved)


def test_auto_falls_back_to_float32_without_bfloat16_units(onnx_engine, onnx_cache, monkeypatch, caplog):
    from samed.engines.onnx_engine import OnnxEngine, OnnxUnavailable
    from samed.engines.selection import create_engine

    monkeypatch.setattr(ove, "bf16_capable", lambda core=None: False)
    monkeypatch.setattr(selection, "AUTO_REDUCED", ("openvino",))  # the int8 encoder: tests/test_int8_engine.py
    monkeypatch.setattr(selection, "AUTO_FLOAT32", ())  # openvino-f32: test_openvino_engine.py
    with pytest.raises(ove.OpenVinoUnavailable, match="no bfloat16 units"):
        OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache), precision="bf16")
    with caplog.at_level(logging.INFO, logger="samed.engines.selection"):
        engine = create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert engine.precision == "fp32" and "no bfloat16 units" in caplog.text
    assert "no bfloat16 units" in engine.info()["fallback_reason"]
    with pytest.raises(OnnxUnavailable, match="runs on the CPU"):
        OnnxEngine("litemedsam", device="cuda", cache_dir=str(onnx_cache), precision="bf16")


# ---- openvino-f32: the float32 graph compiled by OpenVINO, used by auto where it is measured faster -------------
def _saved(path):
    return path.read_bytes() if path.exists() else None


def _restore(path, saved):
    path.unlink(missing_ok=True)
    if saved is not None:
        path.write_bytes(saved)


def test_f32_speed_rule_needs_less_cpu_and_keeps_accuracy_refusals():
    """The rule on the check's result: faster by >= F32_FASTER_BY in CPU s per slice, and an accuracy refusal
    stays a refusal however fast."""
    base = {"passed": True, "worst_abs_diff": 0.0, "encode_cpu_s": {"float32": 0.767, "candidate": 0.594}}
    ok = ove.f32_speed_verdict(base)
    assert ok["passed"] and ok["speedup_cpu"] == pytest.approx(0.767 / 0.594, abs=1e-3)
    slow = ove.f32_speed_verdict(dict(base, encode_cpu_s={"float32": 0.767, "candidate": 0.75}))
    assert not slow["passed"] and "not faster than ONNX Runtime float32" in slow["why"] and "0.750" in slow["why"]
    bad = ove.f32_speed_verdict(dict(base, passed=False, why="leave the accuracy bound"))
    assert not bad["passed"] and bad["why"] == "leave the accuracy bound"
    assert not ove.f32_speed_verdict(dict(base, encode_cpu_s={}))["passed"]  # unmeasured: not used


def test_auto_follows_the_measured_f32_verdict_and_caches_it(onnx_engine, onnx_cache, monkeypatch):
    """The real check on this CPU (CTChest4 walks and boxes, timed): OpenVINO float32's masks hold the bound
    (float32 both), and auto uses openvino-f32 exactly when the check measured it faster; the next start reads the
    cached verdict (a cached refusal compiles nothing)."""
    from samed.engines.selection import create_engine

    sidecar = ove.f32_check_path(onnx_engine.artifacts.encoder)
    saved = _saved(sidecar)
    monkeypatch.setattr(selection, "AUTO_REDUCED", ())  # bf16 / int8: the tests above and test_int8_engine.py
    sidecar.unlink(missing_ok=True)
    try:
        engine = create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
        result = json.loads(sidecar.read_text())["result"]
        assert result["worst_abs_diff"] <= 0.005 and set(result["encode_cpu_s"]) == {"float32", "candidate"}
        assert all(v > 0 for v in result["encode_cpu_s"].values())
        faster = result["encode_cpu_s"]["candidate"] <= result["encode_cpu_s"]["float32"] * (1 - ove.F32_FASTER_BY)
        assert result["passed"] == faster, result
        if faster:
            assert (engine.engine, engine.precision) == ("openvino-f32", "fp32-openvino")
            assert "fp32" in engine.info()["providers"][0] and engine.info()["precision_check"]["passed"]
        else:
            assert engine.engine == "onnx" and "not faster than ONNX Runtime float32" in engine.fallback_reason
            monkeypatch.setattr(ove.OpenVinoEncoder, "compile", lambda self: pytest.fail("compiled a refused one"))
        mtime = sidecar.stat().st_mtime_ns
        again = create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
        assert again.engine == engine.engine and sidecar.stat().st_mtime_ns == mtime
        if faster:
            assert again.precision_check["cached"]
    finally:
        _restore(sidecar, saved)


def test_openvino_f32_engine_masks_match_torch_on_real_slices(onnx_engine, onnx_cache, lite_backend, real_slices,
                                                              monkeypatch):
    """engine openvino-f32 (speed rule off, so it opens on any CPU; its accuracy check is real): features within
    float rounding of torch's, box masks equal or Dice > 0.995, every Dice against the reference within 0.005."""
    from samed.engines.onnx_engine import OnnxEngine

    sidecar = ove.f32_check_path(onnx_engine.artifacts.encoder)
    saved = _saved(sidecar)
    monkeypatch.setattr(ove, "F32_FASTER_BY", -100.0)  # in the cache key: a verdict of its own
    try:
        engine = OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache), precision="fp32-openvino")
        assert engine.engine == "openvino-f32" and "OpenVINO" in engine.info()["providers"][0]
        assert engine.info()["precision_check"]["worst_abs_diff"] <= 0.005
        torch_engine = lite_backend.engine
        for name, picture, ref in real_slices:
            emb_v, emb_t = engine.encode(picture), torch_engine.encode(picture)
            assert np.abs(emb_v.features - emb_t.features.cpu().numpy()).max() < 1e-3, name
            box = Prompt(box_xy=box_from_mask(ref))
            mv, mt = engine.decode(emb_v, box).best, torch_engine.decode(emb_t, box).best
            assert np.array_equal(mv, mt) or dice(mv, mt) > 0.995, name
            assert abs(dice(mv, ref) - dice(mt, ref)) <= 0.005, name
    finally:
        _restore(sidecar, saved)
