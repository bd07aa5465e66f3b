"""Why engine ``auto`` chose its engine reaches the user: the service's ``/v1/info`` (a real ``samed serve`` process
on 127.0.0.1), its start-up line, and the CLI's ``--debug`` output (a real ``samed segment`` process).

The reduced-precision encoders' verdicts are forced: each is written to its cache file as its check writes it after
a failing measurement (the measurement is fake: a Dice difference this CPU may or may not show), under the key the
engine computes on this machine, so the outcome does not depend on this CPU's bfloat16/int8 kernels and no check
runs. Where an encoder cannot run here at all (no bfloat16 units, nncf missing) that real reason is the one shown.
Real LiteMedSAM weights and graphs (the session's export, conftest.onnx_engine)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from conftest import ROOT, ServiceProcess  # noqa: E402

FORCED = "forced by the test: boxes left lung: Dice 0.8301 vs float32 0.8211 (|diff| 0.0090)"
F32_FORCED = "0.900 vs 0.800 CPU s per slice (forced by the test)"


def _refusal(sidecar: Path, key: dict, why: str) -> None:
    result = {"passed": False, "why": f"on CTChest4 its masks leave the accuracy bound (Dice within 0.005 of "
                                      f"float32): {why}", "dice_bound": 0.005, "worst": "boxes left lung",
              "worst_abs_diff": 0.009, "measures": {}, "seconds": 0.0}
    sidecar.write_text(json.dumps({"key": key, "result": result}), encoding="utf-8")


@pytest.fixture(scope="module")
def forced_cache(onnx_engine, tmp_path_factory):
    """$SAMED_CACHE whose onnx/ holds the session's graphs (links) and a refusal for each reduced-precision encoder
    that can run here; returns (SAMED_CACHE, the reasons auto must give)."""
    root = tmp_path_factory.mktemp("samed-cache-forced")
    onnx = root / "onnx"
    onnx.mkdir()
    for f in Path(onnx_engine.artifacts.encoder).parent.iterdir():
        if f.name.endswith((".onnx", ".json")) and "check" not in f.name and "-int8" not in f.name:
            (onnx / f.name).symlink_to(f)
    sha = onnx_engine.manifest["files"]["encoder"]["sha256"]
    encoder = onnx / Path(onnx_engine.artifacts.encoder).name
    expected = []
    try:
        from samed.engines import openvino_encoder as ove

        if ove.bf16_capable():
            bf16 = ove.OpenVinoEncoder(str(encoder), "bf16")
            _refusal(encoder.with_name(encoder.name.replace(".encoder.onnx", ".encoder-bf16-check.json")),
                     ove.bf16_check_key(bf16, sha), "bf16 " + FORCED)
            expected.append("bf16 " + FORCED)
        else:
            expected.append("no bfloat16 units")
        f32 = ove.OpenVinoEncoder(str(encoder), "fp32")  # forced "not faster" (its real verdict: test_openvino_engine)
        from samed.engines.onnx_engine import available_cores

        threads = int(os.environ.get("SAMED_ORT_THREADS") or available_cores())
        ove.f32_check_path(encoder).write_text(json.dumps({"key": ove.f32_check_key(f32, sha, threads), "result": {
            "passed": False, "why": "not faster than ONNX Runtime float32 on this CPU: " + F32_FORCED,
            "dice_bound": 0.005, "worst": "walk tissue", "worst_abs_diff": 0.0, "measures": {}, "seconds": 0.0}}),
            encoding="utf-8")
        expected.append(F32_FORCED)
        import importlib.util

        if importlib.util.find_spec("nncf") is not None:
            from samed.engines import int8_encoder as ie

            layout = ie.DEFAULT_LAYOUT
            device = str(ov_core().get_property("CPU", "FULL_DEVICE_NAME"))
            _refusal(ie.check_path(encoder, layout), ie.check_key(sha, layout, device), "int8 " + FORCED)
            expected.append("int8 " + FORCED)
        else:
            expected.append("nncf not installed")
    except ImportError:
        expected.append("openvino")
    return root, expected


def ov_core():
    import openvino as ov

    return ov.Core()


def test_service_info_and_start_line_say_why_auto_chose_float32(forced_cache):
    root, expected = forced_cache
    env = dict(os.environ, SAMED_CACHE=str(root))
    env.pop("SAMED_TOKEN", None)
    env.pop("SAMED_ENGINE", None)
    service = ServiceProcess("--engine", "auto", "--no-access-log", env=env)
    try:
        with urllib.request.urlopen(f"{service.url}/v1/info", timeout=10) as r:
            info = json.loads(r.read())
        model = info["models"]["litemedsam"]
        assert model["engine"] == "onnx" and model["precision"] == "fp32"
        for why in expected:
            assert why in model["fallback_reason"], (why, model["fallback_reason"])
        assert model["precision_check"] is None  # float32: nothing reduced to check
        start = [line for line in service.log().splitlines() if "listening on" in line]
        assert len(start) == 1 and "litemedsam (onnx) on cpu [engine auto: " in start[0], service.log()
        for why in expected:
            assert why in start[0], start[0]
    finally:
        service.stop()


def test_cli_debug_output_says_which_engine_auto_chose_and_why(forced_cache, ctchest, tmp_path):
    root, expected = forced_cache
    env = dict(os.environ, SAMED_CACHE=str(root),
               PYTHONPATH=os.pathsep.join([str(ROOT / "SegmentAnythingMed"), os.environ.get("PYTHONPATH", "")]))
    env.pop("SAMED_ENGINE", None)
    out = tmp_path / "o.seg.nrrd"
    ct, _ = ctchest
    r = subprocess.run([sys.executable, "-m", "samed.cli.main", "--debug", "segment", str(ct), "--box",
                        "55,36,106,98", "--slice", "20", "--out", str(out), "--engine", "auto", "--device", "cpu"],
                       capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=300)
    assert r.returncode == 0, r.stderr
    chosen = [line for line in r.stderr.splitlines() if "engine auto: onnx for litemedsam (" in line]
    assert len(chosen) == 1, r.stderr
    for why in expected:
        assert why in chosen[0], chosen[0]
    assert out.is_file()


def test_registry_info_carries_the_verdict_of_the_encoder_in_use(onnx_engine):
    """An engine that passed its check (its verdict as the check returns it) shows the verdict in the service's
    info, in the wire schema (pydantic's ModelInfo keeps it)."""
    import copy

    from samed.engines.local import LocalBackend
    from samed.service.registry import ModelRegistry
    from samed.service.schemas import ModelInfo

    engine = copy.copy(onnx_engine)
    engine.precision_check = {"passed": True, "dice_bound": 0.005, "worst": "walk tissue", "worst_abs_diff": 0.0012,
                              "cached": True, "measures": {"walk tissue": {}}, "seconds": 50.0}
    engine.fallback_reason = "openvino-int8 (NNCF int8) not used: " + FORCED
    registry = ModelRegistry.from_backends([LocalBackend(engine)])
    model = ModelInfo(**registry.info()["models"]["litemedsam"]).model_dump()
    assert model["precision_check"] == {"passed": True, "dice_bound": 0.005, "worst": "walk tissue",
                                        "worst_abs_diff": 0.0012, "cached": True, "seconds": 50.0}
    assert model["fallback_reason"].endswith(FORCED)
