"""The torch engines: real LiteMedSAM against segment-anything's SamPredictor, and user checkpoints of the real
SAM / MedSAM architectures (random weights made here) including a GPU-saved file and broken files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samed.core.backend import UnsupportedPromptError
from samed.core.io import read_image_2d
from samed.core.prompts import Prompt, box_from_mask
from samed.engines.checkpoints import CheckpointError
from samed.engines.models import MODELS, get_spec, guess_architecture
from samed.engines.sam_engine import SamEngine


@pytest.fixture(scope="module")
def breast_case(shared_data):
    folder = shared_data / "images" / "us-breast-lesion"
    image = read_image_2d(folder / "images" / "malignant_003.png")
    mask = read_image_2d(folder / "masks" / "malignant_003.png") > 0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image, mask


def test_litemedsam_equals_segment_anythings_predictor(lite_backend, breast_case):
    from segment_anything import SamPredictor

    image, ref = breast_case
    box = box_from_mask(ref)
    # cut at logit 0 as SamPredictor (LiteMedSAM's own rule, "dice", is checked against its logits in
    # tests/test_mask_threshold.py)
    ours = lite_backend.segment(image, Prompt(box_xy=box), mask_threshold="model")
    predictor = SamPredictor(lite_backend.engine.sam)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(box=box, multimask_output=False)
    assert np.array_equal(ours.masks[0], masks[0])
    assert np.isclose(ours.scores[0], scores[0], atol=1e-5)
    dice = 2 * (ours.best & ref).sum() / (ours.best.sum() + ref.sum())
    assert dice > 0.8, f"LiteMedSAM on a breast lesion from its box: Dice {dice:.3f}"


def test_second_encode_of_the_same_slice_is_a_cache_hit(lite_backend, breast_case):
    image, _ = breast_case
    lite_backend.encode(image)
    runs = lite_backend.encoder_runs
    lite_backend.encode(image.copy())
    assert lite_backend.encoder_runs == runs


def test_box_only_model_refuses_points_with_advice(lite_backend, breast_case):
    image, ref = breast_case
    h = lite_backend.encode(image)
    with pytest.raises(UnsupportedPromptError, match="does not take point prompts.*box"):
        lite_backend.decode(h, Prompt(include_points_xy=[[100, 100]]))


def test_every_architecture_has_the_signature_it_checks_for():
    for name, spec in MODELS.items():
        if name == "litemedsam":
            continue
        with torch.device("meta"):
            model = spec.build()
        state = model.state_dict()
        key, shape = spec.signature
        assert tuple(state[key].shape) == shape, name
        assert guess_architecture(state).startswith(name.replace("medsam_", "sam_")), name


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    """A checkpoint of the real SAM ViT-B architecture with random weights, as Meta's file (a plain state dict)."""
    torch.manual_seed(0)
    model = get_spec("sam_vit_b").build()
    path = tmp_path_factory.mktemp("ckpt") / "sam_vit_b_random.pth"
    torch.save(model.state_dict(), path)
    return path


def _save_as_if_on_gpu(state, path):
    """Save tensors tagged as CUDA storages, as a checkpoint written on a GPU machine is."""
    import torch.serialization as ser

    original = ser.location_tag
    ser.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(state, path)
    finally:
        ser.location_tag = original


def test_random_vit_b_checkpoint_loads_and_runs_point_and_box_prompts(vit_b_checkpoint):
    engine = SamEngine("sam_vit_b", checkpoint=str(vit_b_checkpoint), device="cpu")
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    emb = engine.encode(image)
    assert tuple(emb.features.shape) == (1, 256, 64, 64) and emb.input_size == (768, 1024)
    pred = engine.decode(emb, Prompt(include_points_xy=[[30, 20]]))
    assert pred.masks.shape == (3, 48, 64)  # one ambiguous point: three candidates, best first
    assert np.all(np.diff(pred.scores) <= 0)
    pred = engine.decode(emb, Prompt(include_points_xy=[[30, 20]], exclude_points_xy=[[5, 5]], box_xy=[10, 10, 50, 40]))
    assert pred.masks.shape == (1, 48, 64)


def test_gpu_saved_checkpoint_loads_on_this_cpu_machine(vit_b_checkpoint, tmp_path):
    state = torch.load(vit_b_checkpoint, map_location="cpu", weights_only=True)
    gpu_file = tmp_path / "medsam_vit_b_gpu.pth"
    _save_as_if_on_gpu({"model": state}, gpu_file)  # wrapped, as MedSAM's training script saves
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu_file, weights_only=True)  # what a loader without map_location hits
    engine = SamEngine("medsam_vit_b", checkpoint=str(gpu_file), device="cpu")
    assert next(engine.sam.parameters()).device.type == "cpu"
    with pytest.raises(UnsupportedPromptError):
        engine.decode(engine.encode(np.zeros((32, 32, 3), np.uint8)), Prompt(include_points_xy=[[3, 3]]))


def test_truncated_mismatched_and_missing_checkpoints_name_the_file(vit_b_checkpoint, tmp_path):
    truncated = tmp_path / "sam_vit_b_truncated.pth"
    truncated.write_bytes(vit_b_checkpoint.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match=r"sam_vit_b_truncated\.pth.*truncated"):
        SamEngine("sam_vit_b", checkpoint=str(truncated), device="cpu")
    with pytest.raises(CheckpointError, match=r"does not hold sam_vit_l weights.*looks like sam_vit_b"):
        SamEngine("sam_vit_l", checkpoint=str(vit_b_checkpoint), device="cpu")
    with pytest.raises(CheckpointError, match=r"not found: .*nowhere\.pth"):
        SamEngine("sam_vit_h", checkpoint=str(tmp_path / "nowhere.pth"), device="cpu")
    with pytest.raises(CheckpointError, match="needs a checkpoint file"):
        SamEngine("sam_vit_b", device="cpu")
    with pytest.raises(ValueError, match="unknown model"):
        SamEngine("sam_vit_x", device="cpu")


def test_engines_on_the_test_device_match_the_cpu_reference(lite_backend, breast_case):
    """With ``SAMED_TEST_DEVICE=cuda`` (bench/gpu_check.sh: ``pytest -p pytest_device --device cuda``): the torch
    engine and, where onnxruntime has its CUDA provider, the ONNX one, on the GPU, give the CPU reference's masks."""
    import os

    device = os.environ.get("SAMED_TEST_DEVICE", "cpu")
    if device == "cpu":
        pytest.skip("SAMED_TEST_DEVICE is cpu: the other tests here run on the CPU (bench/gpu_check.sh runs this one)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"SAMED_TEST_DEVICE={device} but torch has no CUDA here (torch {torch.__version__})")
    from samed.core.metrics import dice
    from samed.engines.selection import create_engine

    image, ref = breast_case
    box = Prompt(box_xy=box_from_mask(ref))
    want = lite_backend.segment(image, box, multimask=False).best  # the CPU reference
    engines = [create_engine("litemedsam", None, device, "torch"), create_engine("litemedsam", None, device, "auto")]
    for engine in engines:
        got = engine.decode(engine.encode(image), box, multimask=False).best
        assert str(engine.device).startswith(device.split(":")[0]), (engine.info(), device)
        assert dice(got, want) > 0.99, engine.info()
