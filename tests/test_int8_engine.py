"""The NNCF int8 encoder (engine "openvino-int8"): it is quantized from the real exported graph on medical slices
that ship with the packages (not the check's slices), loads and runs, is judged by the same precision check as the
bfloat16 encoder (CTChest4 walks and boxes against float32, bound 0.005) with the verdict cached per CPU, graph
and runtime, and auto uses it only when that verdict passes.

Real LiteMedSAM weights, real slices; the float32 export is the session's (conftest.onnx_engine). The int8 model is
quantized once per test session (~1 min on 2 cores). The choice tests force the verdict (a fake measurement in
place of precision_check's); one test runs the real check on this CPU."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

from samed.core.metrics import dice  # noqa: E402
from samed.core.prompts import Prompt, box_from_mask  # noqa: E402
from samed.engines import int8_encoder as ie  # noqa: E402
from samed.engines import precision_check as pc  # noqa: E402
from samed.engines import selection  # noqa: E402

LAYOUT = ie.DEFAULT_LAYOUT


@pytest.fixture(scope="module")
def int8_model(onnx_engine):
    return ie.quantize(onnx_engine.artifacts.encoder, onnx_engine.manifest["files"]["encoder"]["sha256"],
                       onnx_engine.preprocess, LAYOUT)


@pytest.fixture()
def sidecar(onnx_engine):
    """The int8 verdict's cache file; whatever the test leaves there is removed, what was there is put back."""
    path = ie.check_path(onnx_engine.artifacts.encoder, LAYOUT)
    saved = path.read_bytes() if path.exists() else None
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)
    if saved is not None:
        path.write_bytes(saved)


def fake_result(passed: bool, diff: float) -> dict:
    """What precision_check.compare returns, for a measurement that did not happen (choice logic only)."""
    measures = {f"{k} {s}": {"float32": 0.9, "candidate": 0.9 - diff, "abs_diff": diff}
                for k in ("walk", "boxes") for s in pc.WALK_STRUCTURES}
    out = {"data": "fake", "dice_bound": pc.DICE_BOUND, "measures": measures, "worst": "walk left lung",
           "worst_abs_diff": diff, "encodes": 13, "encode_s": {}, "seconds": 0.1, "passed": passed}
    if not passed:
        out["why"] = (f"on CTChest4 its masks leave the accuracy bound (Dice within {pc.DICE_BOUND} of float32): "
                      f"walk left lung: Dice 0.9000 vs float32 {0.9 - diff:.4f} (|diff| {diff:.4f}) [fake]")
    return out


def test_calibration_uses_shipped_slices_outside_the_check(onnx_engine):
    pictures = ie.calibration_pictures()
    reach = 2 * pc.WALK_STEPS + 1
    assert len(pictures) >= 34 - reach  # CTChest4's other slices (+ pydicom's CT/MR when present)
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in pictures)
    check = pc.CheckData()
    from samed.core.volume_session import VolumeSession

    session = VolumeSession(check.volume, None, intensity_mode=pc.INTENSITY)
    checked = [session.picture(k) for k in range(pc.SEED_SLICE - pc.WALK_STEPS, pc.SEED_SLICE + pc.WALK_STEPS + 1)]
    assert not any(np.array_equal(p, c) for p in pictures for c in checked)  # never tuned on the exam


def test_int8_encoder_loads_runs_and_stays_near_float32_on_real_slices(onnx_engine, int8_model, real_slices):
    enc = ie.Int8Encoder(int8_model, LAYOUT).compile()
    assert "int8" in enc.get_providers()[0]
    twin = pc.with_encoder(onnx_engine, enc)
    for name, picture, ref in real_slices:
        e8, e32 = twin.encode(picture), onnx_engine.encode(picture)
        assert e8.features.shape == e32.features.shape == (1, 256, 64, 64) and e8.features.dtype == np.float32
        assert np.abs(e8.features - e32.features).max() > 1e-3  # quantized, not float32
        box = Prompt(box_xy=box_from_mask(ref))
        assert dice(twin.decode(e8, box).best, onnx_engine.decode(e32, box).best) > 0.8, name
    meta = json.loads(int8_model.with_suffix(".json").read_text())
    assert meta["key"]["layout"] == LAYOUT and meta["key"]["ignored"] == ie.LAYOUTS[LAYOUT]
    again = ie.quantize(onnx_engine.artifacts.encoder, onnx_engine.manifest["files"]["encoder"]["sha256"],
                        onnx_engine.preprocess, LAYOUT)
    assert again == int8_model and int8_model.stat().st_mtime_ns == again.stat().st_mtime_ns  # from the cache


def test_the_real_check_judges_the_int8_encoder_on_this_cpu(onnx_engine, onnx_cache, int8_model, sidecar,
                                                           monkeypatch, caplog):
    """The real precision check on this CPU: whichever verdict it gives, the engine and auto follow it, and it is
    cached under this CPU's identity."""
    from samed.engines.onnx_engine import OnnxEngine
    from samed.engines.openvino_encoder import cpu_identity

    monkeypatch.setattr(selection, "AUTO_REDUCED", ("openvino-int8",))
    monkeypatch.setattr(selection, "AUTO_FLOAT32", ())  # openvino-f32: test_openvino_engine.py
    try:
        engine = OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache), precision="int8-nncf")
        verdict, refusal = engine.precision_check, None
    except ie.Int8Unavailable as exc:
        verdict, refusal = None, str(exc)
    cached = json.loads(sidecar.read_text())
    assert cached["key"]["cpu_identity"] == cpu_identity() and cached["key"]["layout"] == LAYOUT
    result = cached["result"]
    assert set(result["measures"]) == {f"{k} {s}" for k in ("walk", "boxes") for s in pc.WALK_STRUCTURES}
    assert result["passed"] == (result["worst_abs_diff"] <= pc.DICE_BOUND)
    with caplog.at_level(logging.INFO, logger="samed.engines"):
        chosen = selection.create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    if result["passed"]:
        assert verdict["passed"] and not verdict["cached"]
        assert chosen.engine == "openvino-int8" and chosen.info()["precision_check"]["cached"]
    else:
        assert "accuracy bound" in refusal and result["worst"] in refusal
        assert chosen.engine == "onnx" and chosen.precision == "fp32"
        assert chosen.fallback_reason.startswith("openvino-int8 (NNCF int8) not used: Int8Unavailable: on CTChest4")
        assert result["why"] in chosen.fallback_reason
        assert "engine auto: onnx for litemedsam (openvino-int8" in caplog.text


def test_auto_uses_int8_when_its_verdict_passes_and_reads_it_from_the_cache(onnx_engine, onnx_cache, int8_model,
                                                                           sidecar, monkeypatch):
    calls = []
    monkeypatch.setattr(selection, "AUTO_REDUCED", ("openvino-int8",))
    monkeypatch.setattr(selection, "AUTO_FLOAT32", ())  # openvino-f32: test_openvino_engine.py
    monkeypatch.setattr(pc, "check_reduced_precision", lambda *a, **k: calls.append(1) or fake_result(True, 0.002))
    engine = selection.create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert (engine.engine, engine.precision) == ("openvino-int8", "int8-nncf") and not engine.fallback_reason
    info = engine.info()
    assert info["precision_check"]["passed"] and info["precision_check"]["worst_abs_diff"] == 0.002
    assert "int8" in info["providers"][0] and calls == [1]
    again = selection.create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert again.engine == "openvino-int8" and again.precision_check["cached"] and calls == [1]
    emb = again.encode(np.full((64, 64, 3), 90, np.uint8))
    assert emb.features.shape == (1, 256, 64, 64)


def test_auto_refuses_int8_on_a_failing_verdict_says_why_and_caches_it(onnx_engine, onnx_cache, sidecar,
                                                                      monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(selection, "AUTO_REDUCED", ("openvino-int8",))
    monkeypatch.setattr(selection, "AUTO_FLOAT32", ())  # openvino-f32: test_openvino_engine.py
    monkeypatch.setattr(pc, "check_reduced_precision", lambda *a, **k: calls.append(1) or fake_result(False, 0.02))
    with caplog.at_level(logging.WARNING, logger="samed.engines"):
        engine = selection.create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert (engine.engine, engine.precision) == ("onnx", "fp32")
    assert "|diff| 0.0200) [fake]" in engine.info()["fallback_reason"]
    assert "int8 encoder (tail) refused after a" in caplog.text
    # a cached refusal quantizes, compiles and checks nothing
    monkeypatch.setattr(ie, "quantize", lambda *a, **k: pytest.fail("quantized for a refused encoder"))
    monkeypatch.setattr(ie.Int8Encoder, "compile", lambda self: pytest.fail("compiled a refused encoder"))
    again = selection.create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert again.engine == "onnx" and "[fake]" in again.fallback_reason and calls == [1]
    # the verdict belongs to this CPU: another CPU's cached pass is not trusted here
    cached = json.loads(sidecar.read_text())
    cached["key"]["cpu_identity"] = "GenuineIntel family 6 model 143 stepping 8 Xeon amx_bf16,amx_int8"
    cached["result"] = fake_result(True, 0.0)
    sidecar.write_text(json.dumps(cached))
    monkeypatch.undo()
    monkeypatch.setattr(selection, "AUTO_REDUCED", ("openvino-int8",))
    monkeypatch.setattr(selection, "AUTO_FLOAT32", ())  # openvino-f32: test_openvino_engine.py
    monkeypatch.setattr(pc, "check_reduced_precision", lambda *a, **k: calls.append(2) or fake_result(False, 0.03))
    third = selection.create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert third.engine == "onnx" and "0.0300" in third.fallback_reason and calls == [1, 2]


def test_int8_needs_nncf_and_says_how_to_get_it(onnx_cache, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    monkeypatch.setattr(selection, "AUTO_REDUCED", ("openvino-int8",))
    monkeypatch.setattr(selection, "AUTO_FLOAT32", ())  # openvino-f32: test_openvino_engine.py
    engine = selection.create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert engine.engine == "onnx"
    assert "nncf not installed (pip install 'segmentanythingmed[int8]')" in engine.fallback_reason
