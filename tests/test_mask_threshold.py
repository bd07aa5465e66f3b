"""How masks are cut from the decoder's logits (issue 11, item 5): ``mask_threshold`` "model" (logit 0: SamPredictor's
and predict_array's, SAM's and MedSAM's default), "dice" (logit > ln(the mask's predicted IoU), LiteMedSAM's default
since 0.2.0) or a fixed logit; one decode may ask for another rule (``decode(..., mask_threshold=)``).

Checked against the real counterpart: segment-anything's ``SamPredictor`` on real LiteMedSAM weights and real
pictures, which returns the logits (``return_logits=True``) and the predicted IoU each rule reads; the torch and the
ONNX engine; a real ``samed`` process and real files for the command line. Why "dice" and what it measures:
bench/bench_mask_threshold.py, docs/evaluation.md."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from samed.engines.models import MASK_THRESHOLDS, MODELS, get_spec, parse_mask_threshold


def test_the_rules_and_what_they_refuse():
    # LiteMedSAM's own rule is "dice" (measured: bench/bench_mask_threshold.py); the others keep logit 0
    assert {name: spec.mask_threshold for name, spec in MODELS.items()} == {
        name: "dice" if name == "litemedsam" else "model" for name in MODELS}
    spec = get_spec("litemedsam")
    assert spec.mask_threshold == "dice" and spec.input_is_default()
    assert not get_spec("sam_vit_b").with_input(mask_threshold="dice").input_is_default()
    # dice: ln(IoU), IoU clipped to [0.05, 1]: a sure mask keeps the model's threshold, an unsure one is cut lower
    np.testing.assert_allclose(spec.logit_thresholds([1.3, 1.0, 0.5, 0.01, np.nan]),
                               [0.0, 0.0, np.log(0.5), np.log(0.05), 0.0])
    model = spec.with_input(mask_threshold="model")
    assert not model.input_is_default() and not model.logit_thresholds([0.2, 0.9]).any()
    assert model.with_input(mask_threshold="dice").input_is_default()  # back to the own
    fixed = spec.with_input(mask_threshold="-1.5")
    assert fixed.mask_threshold == -1.5 and list(fixed.logit_thresholds([0.2, 0.9])) == [-1.5, -1.5]
    assert set(MASK_THRESHOLDS) == {"model", "dice"} and parse_mask_threshold(" DICE ") == "dice"
    for bad in ("half", "nan", "inf", 10.5, -11, True, None, [0]):
        with pytest.raises(ValueError, match="mask threshold must be model, dice or a logit between -10 and 10"):
            parse_mask_threshold(bad)


@pytest.fixture(scope="module")
def cases(shared_data):
    """(picture, [box]) from real pictures: ultrasound and CT slices, up to three structures each."""
    from samed.core import io
    from samed.core.preprocess import compute_window, slice_to_rgb
    from samed.core.prompts import box_from_mask

    out = []
    for name, count in (("us-breast-lesion", 2), ("ct-abdomen-slices", 2)):
        for item in io.list_dataset(shared_data / "images" / name).items[:count]:
            image = io.read_image_2d(item.image)
            mask = io.read_image_2d(item.mask)
            picture = slice_to_rgb(image, compute_window(image, "auto"))
            out.append((picture, [box_from_mask(mask == c) for c in np.unique(mask) if c != 0][:3]))
    return out


def test_each_rule_cuts_segment_anythings_logits_where_it_says(cases, onnx_engine, onnx_cache):
    # onnx_engine first: the session fixture that exports the graphs into onnx_cache
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from segment_anything import SamPredictor
    from samed.core.prompts import Prompt
    from samed.engines.onnx_engine import OnnxEngine
    from samed.engines.sam_engine import SamEngine

    torch_engines = {rule: SamEngine("litemedsam", device="cpu", mask_threshold=rule) for rule in ("dice", "model")}
    torch_engines[-1.0] = SamEngine("litemedsam", device="cpu", mask_threshold=-1.0)
    onnx = OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache), mask_threshold="dice")
    predictor = SamPredictor(torch_engines["model"].sam)
    grew = n = 0
    for picture, boxes in cases:
        predictor.set_image(picture)
        emb = torch_engines["model"].encode(picture)  # the same weights and input: one encode serves every rule
        emb_onnx = onnx.encode(picture)
        for box in boxes:
            logits, iou, _ = predictor.predict(box=box, multimask_output=False, return_logits=True)
            logits, iou = logits[0], float(iou[0])
            want = {"dice": logits > np.log(min(max(iou, 0.05), 1.0)), "model": logits > 0, -1.0: logits > -1.0}
            for rule, engine in torch_engines.items():
                got = engine.decode(emb, Prompt(box_xy=box), multimask=False)
                assert np.array_equal(got.masks[0], want[rule]), rule
                # one decode cut by another rule than the engine's: that rule's mask, the same score
                other = torch_engines["model"].decode(emb, Prompt(box_xy=box), multimask=False, mask_threshold=rule)
                assert np.array_equal(other.masks[0], want[rule]) and other.scores[0] == got.scores[0], rule
            o = onnx.decode(emb_onnx, Prompt(box_xy=box), multimask=False)
            o_model = onnx.decode(emb_onnx, Prompt(box_xy=box), multimask=False, mask_threshold="model")
            assert np.count_nonzero(o_model.masks[0] != want["model"]) <= max(3, want["model"].sum() // 500)
            # ONNX Runtime's logits differ from torch's in the last bits: a pixel on the threshold may flip
            assert np.count_nonzero(o.masks[0] != want["dice"]) <= max(3, want["dice"].sum() // 500)
            grew += int(want["dice"].sum() > want["model"].sum())
            n += 1
            assert np.all(want["dice"] >= want["model"])  # never smaller: ln(IoU) <= 0
    assert n >= 8 and grew >= n // 2, "the dice rule changed no mask here: this test could not tell the rules apart"


def samed(*args):
    return subprocess.run([sys.executable, "-m", "samed.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


def test_the_rule_is_recorded_in_provenance_and_evaluate_refuses_to_mix_rules(ctchest, shared_data, tmp_path):
    pytest.importorskip("torch")
    from dataset_copies import copy_us_pictures

    ct, _ = ctchest
    report = tmp_path / "dice.json"
    r = samed("segment", ct, "--box", "55,36,106,98", "--slice", "20", "--engine", "torch", "--mask-threshold", "model",
              "--out", tmp_path / "model.seg.nrrd", "--report", report)
    assert r.returncode == 0, r.stderr
    engine = json.loads(report.read_text())["segments"][0]["provenance"]["engine"]
    assert engine == "torch (cpu), input longest/antialias, mask threshold model"  # the model's own: "torch (cpu)"

    us = copy_us_pictures(shared_data, tmp_path / "us", 2)
    out = tmp_path / "ev"
    r = samed("evaluate", us, "--prompt", "box-all", "--engine", "torch", "--mask-threshold", "dice", "--no-report",
              "--out", out)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "run.json").read_text())["settings"]["model_input"] == {"mask_threshold": "dice"}
    before = (out / "results.csv").read_bytes()
    r = samed("evaluate", us, "--prompt", "box-all", "--engine", "torch", "--mask-threshold", "model", "--no-report",
              "--out", out)
    assert r.returncode == 2 and "model_input" in r.stderr, r.stderr  # another rule: refused, nothing overwritten
    assert (out / "results.csv").read_bytes() == before
    r = samed("evaluate", us, "--prompt", "box-all", "--engine", "torch", "--no-report", "--out", out)
    assert r.returncode == 0, r.stderr  # LiteMedSAM's own rule is "dice": the same run, resumed
    assert "resumed" in r.stdout and (out / "results.csv").read_bytes() == before
