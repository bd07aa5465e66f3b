"""The masks a walk makes are cut at the model's threshold whatever the backend's rule; prompted slices show it.

A mask threshold below the model's ("dice": logit > ln(predicted IoU), LiteMedSAM's default) gives larger masks.
A walk prompts each slice with a box grown from the mask before it, so larger masks compound slice after slice
(CTChest4's left lung from one box: 3D Dice 0.683 -> 0.559 when every mask was cut by "dice"), and a larger start
alone sends it elsewhere (0.584). ``core.propagation`` and ``core.key_slices`` therefore cut the masks they make
at the model's threshold (``Backend.decode(..., mask_threshold="model")``) and leave a prompted slice from its
box's mask at that threshold (``walking_mask``); the prompted slices show the backend's rule.

The counterparts are real: LiteMedSAM's weights, CTChest4 (slicerio's) and its Slicer-made lung segmentation, the
in-process backend and a real ``samed serve --mask-threshold dice`` process with the HTTP client.
"""
from __future__ import annotations

import numpy as np
import pytest

from samed.core import io
from samed.core.key_slices import segment_from_key_slices
from samed.core.prompts import Prompt, box_from_mask
from samed.core.propagation import PropagationSettings
from samed.core.volume_session import VolumeSession

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def lung(ctchest):
    ct, seg = ctchest
    volume = io.read_volume(ct)
    mask, grid, _ = io.reference_mask(seg, "left lung")
    return volume, io.resample_to(grid.with_array(mask.astype(np.uint8)), volume).array > 0


@pytest.fixture(scope="module")
def backends():
    """The same weights, cut at the model's threshold and by the dice rule."""
    from samed.engines.local import LocalBackend

    model = LocalBackend.create("litemedsam", device="cpu", engine="torch", engine_options={"mask_threshold": "model"})
    dice = LocalBackend.create("litemedsam", device="cpu", engine="torch")  # LiteMedSAM's own rule
    assert (model.mask_threshold(), dice.mask_threshold()) == ("model", "dice")
    yield model, dice
    model.close()
    dice.close()


def _walked_as_the_models(model_result, dice_result, prompted):
    """The dice backend's result walked exactly as the model's (same slices, scores, stop reasons, masks) but on
    the ``prompted`` slices, which show the dice rule's masks: larger than the model's."""
    assert sorted(dice_result.masks) == sorted(model_result.masks)
    assert dice_result.stopped == model_result.stopped
    np.testing.assert_allclose([dice_result.scores[i] for i in sorted(dice_result.scores)],
                               [model_result.scores[i] for i in sorted(model_result.scores)], rtol=0, atol=1e-6)
    for i, m in model_result.masks.items():
        if i in prompted:
            assert np.all(dice_result.masks[i] >= m) and dice_result.masks[i].sum() > m.sum(), i
        else:
            assert np.array_equal(dice_result.masks[i], m), f"slice {i}: a walked mask not cut at logit 0"


def test_a_decode_cut_by_another_rule_is_that_rules_mask(backends, lung):
    model, dice = backends
    volume, ref = lung
    session = VolumeSession(volume, dice, intensity_mode="minmax")
    k = 17
    prompt = Prompt(box_xy=box_from_mask(ref[k]))
    handle = dice.encode(session.picture(k))
    own = dice.decode(handle, prompt, multimask=False)
    at_model = dice.decode(handle, prompt, multimask=False, mask_threshold="model")
    want = model.segment(session.picture(k), prompt, multimask=False)
    assert np.array_equal(at_model.masks, want.masks) and np.allclose(at_model.scores, want.scores)
    assert np.all(own.best >= at_model.best) and own.best.sum() > at_model.best.sum()


def test_propagation_walks_at_the_models_threshold_and_shows_the_rules_masks(backends, lung):
    model, dice = backends
    volume, ref = lung
    k = 17
    box = box_from_mask(ref[k])
    walks = []
    for backend in (model, dice):  # each seeded with its own mask for the box, as `samed segment --propagate`
        session = VolumeSession(volume, backend, intensity_mode="minmax")
        seed = session.segment_slice(k, Prompt(box_xy=box), multimask=False).best
        walks.append(session.propagate(k, seed, seed_box=box))
    assert len(walks[0].masks) >= 20, walks[0].stopped  # the lung spans most of CTChest4's 34 slices
    _walked_as_the_models(*walks, prompted={k})  # the seed is shown as the user saw it


def test_a_mask_that_is_not_the_boxs_own_is_walked_from_as_given(backends, lung):
    from scipy.ndimage import binary_erosion

    from samed.core.propagation import walking_mask

    model, dice = backends
    volume, ref = lung
    session = VolumeSession(volume, dice, intensity_mode="minmax")
    k = 17
    box = box_from_mask(ref[k])
    own = session.segment_slice(k, Prompt(box_xy=box), multimask=False).best
    at_model = walking_mask(dice, session.picture(k), own, box)
    assert np.all(own >= at_model) and own.sum() > at_model.sum()
    painted = binary_erosion(own, iterations=2)  # edited by the user: not the model's for this box
    assert walking_mask(dice, session.picture(k), painted, box) is painted
    assert walking_mask(dice, session.picture(k), own, None) is own  # no box: nothing to cut again
    assert walking_mask(model, session.picture(k), own, box) is own  # the model's own rule: nothing to do


def test_key_slices_fill_and_walk_at_the_models_threshold(backends, lung):
    model, dice = backends
    volume, ref = lung
    results = []
    boxes = {k: box_from_mask(ref[k]) for k in (12, 22)}
    for backend in (model, dice):  # each key the backend's own mask for the user's box there
        session = VolumeSession(volume, backend, intensity_mode="minmax")
        keys = {k: session.segment_slice(k, Prompt(box_xy=b), multimask=False).best for k, b in boxes.items()}
        results.append(segment_from_key_slices(backend, session.picture, session.n_slices, keys, key_boxes=boxes))
    assert results[0].kinds == results[1].kinds
    assert {"interpolated", "walked"} <= {kind.split(" ")[0] for kind in results[0].kinds.values()}
    _walked_as_the_models(*results, prompted=set(boxes))


def test_the_service_cuts_one_decode_by_another_rule_and_refuses_an_unknown_one(backends, lung):
    """A real ``samed serve --mask-threshold dice`` and the HTTP client: a walk through it is the in-process
    one; a decode asking for an unknown rule gets a 422 that names the rules."""
    import json
    import urllib.error
    import urllib.request

    from conftest import ServiceProcess
    from samed.client.http import HttpBackend

    model, dice = backends
    volume, ref = lung
    service = ServiceProcess("--engine", "torch", "--mask-threshold", "dice", "--no-access-log", "--log-level", "warning")
    try:
        remote = HttpBackend(service.url, "litemedsam")
        assert remote.mask_threshold() == "dice"
        k = 17
        box = box_from_mask(ref[k])
        walks = []
        for backend in (dice, remote):  # 8 slices each way: enough to compound, a third of the decodes
            session = VolumeSession(volume, backend, intensity_mode="minmax")
            seed = session.segment_slice(k, Prompt(box_xy=box)).best
            walks.append(session.propagate(k, seed, PropagationSettings(max_slices=8), seed_box=box))
        assert walks[1].stopped == walks[0].stopped and sorted(walks[1].masks) == sorted(walks[0].masks)
        assert len(walks[0].masks) == 17, walks[0].stopped
        for i, m in walks[0].masks.items():
            assert np.array_equal(walks[1].masks[i], m), i
        handle = remote.encode(VolumeSession(volume, remote, intensity_mode="minmax").picture(k))
        url = f"{service.url}/v1/models/litemedsam/embeddings/{handle.key}/decode"
        body = json.dumps({"box_xy": [float(v) for v in box], "mask_threshold": "half"}).encode()
        req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 422
        assert "mask threshold must be model, dice or a logit between -10 and 10" in err.value.read().decode()
        remote.close()
    finally:
        service.stop()


@pytest.mark.parametrize("degrade", ["dilate", "none"])
def test_refine_measures_with_masks_cut_at_the_models_threshold(backends, lung, degrade):
    """``samed refine`` reads the model's masks as a measurement (its ``model_bias_px`` was fit on masks cut at logit
    0): with the dice rule it refines exactly as with logit 0."""
    from scipy.ndimage import binary_dilation

    from samed.core.refine import refine_mask

    model, dice = backends
    volume, ref = lung
    original = ref.copy()
    if degrade == "dilate":
        for k in range(len(original)):
            original[k] = binary_dilation(ref[k], iterations=2)
    out = []
    for backend in (model, dice):
        session = VolumeSession(volume, backend, intensity_mode="minmax")
        refined, result = refine_mask(backend, session.picture, original, 0)
        out.append((refined, result))
    (a, ra), (b, rb) = out
    assert np.array_equal(a, b) and ra.choice == rb.choice
    for i, m in ra.model_masks.items():
        assert np.array_equal(rb.model_masks[i], m), i
