"""Model-free backends and tiny datasets for the evaluation tests (imported by the other test_evaluation files;
classes live at module level so worker processes can unpickle them), plus tests that pin what the fakes do."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from scipy import ndimage

from samed.core.backend import Backend, EmbeddingHandle, check_image, check_prompt_kinds, image_key
from samed.core.prompts import BOX, POINT, Prediction, Prompt


def disk(shape, centre_xy, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - centre_xy[0]) ** 2 + (yy - centre_xy[1]) ** 2 <= radius ** 2


class ShapeBackend(Backend):
    """Deterministic masks from prompts, no model.

    - a box gives the bright pixels (> 127 in channel 0) inside the box;
    - include points add disks of ``radius`` around them, exclude points remove such disks (after the box);
    - candidates: [that mask, it dilated by 2 px, it eroded by 2 px] with ``scores`` in that order; three when
      ``multimask`` is True or (None and a lone point without a box), else only the first. Sorted by score,
      as every backend returns them.
    """

    def __init__(self, kinds=(POINT, BOX), radius: float = 6.0, scores=(0.9, 0.6, 0.3), model: str = "fake"):
        self.kinds = frozenset(kinds)
        self.radius = radius
        self.scores = tuple(scores)
        self.model = model
        self.pictures: Dict[str, np.ndarray] = {}
        self.encodes = 0
        self.decodes = 0

    def info(self):
        return {"service": "fake", "models": {self.model: {"prompt_kinds": sorted(self.kinds)}}}

    def prompt_kinds(self):
        return self.kinds

    def encode(self, image_rgb: np.ndarray) -> EmbeddingHandle:
        image_rgb = check_image(image_rgb)
        key = image_key(self.model, image_rgb)
        if key not in self.pictures:
            self.pictures[key] = image_rgb
            self.encodes += 1
        return EmbeddingHandle(key, self.model, tuple(image_rgb.shape[:2]))

    def decode(self, handle: EmbeddingHandle, prompt: Prompt, multimask: Optional[bool] = None) -> Prediction:
        prompt.validate(handle.shape_hw)
        check_prompt_kinds(self.model, self.kinds, prompt)
        self.decodes += 1
        picture = self.pictures[handle.key]
        shape = picture.shape[:2]
        mask = np.zeros(shape, bool)
        if prompt.box_xy is not None:
            x0, y0, x1, y1 = np.rint(prompt.box_xy).astype(int)
            mask[y0:y1 + 1, x0:x1 + 1] = picture[y0:y1 + 1, x0:x1 + 1, 0] > 127
        for p in prompt.include_points_xy:
            mask |= disk(shape, p, self.radius)
        for p in prompt.exclude_points_xy:
            mask &= ~disk(shape, p, self.radius)
        if multimask is None:
            multimask = prompt.box_xy is None and len(prompt.include_points_xy) + len(prompt.exclude_points_xy) == 1
        masks = [mask, ndimage.binary_dilation(mask, iterations=2), ndimage.binary_erosion(mask, iterations=2)]
        k = 3 if multimask else 1
        return Prediction(np.stack(masks[:k]), np.array(self.scores[:k])).sorted()


class BoxOnlyBackend(ShapeBackend):
    def __init__(self, **kwargs):
        super().__init__(kinds=(BOX,), model="fake-box-only", **kwargs)


class PerfectBackend(ShapeBackend):
    """Every prompt gives exactly the bright pixels of the picture (the reference, on synthetic pictures)."""

    def decode(self, handle, prompt, multimask=None):
        prompt.validate(handle.shape_hw)
        self.decodes += 1
        mask = self.pictures[handle.key][..., 0] > 127
        return Prediction(mask[None], np.array([0.99]))


def make_fake(kind: str = "shape", **kwargs) -> Backend:
    """A picklable factory for worker processes: ``functools.partial(make_fake, "shape")``."""
    return {"shape": ShapeBackend, "box": BoxOnlyBackend, "perfect": PerfectBackend}[kind](**kwargs)


def picture_of(mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: 255 where ``mask``, 0 elsewhere."""
    return np.repeat((np.asarray(mask, bool) * 255).astype(np.uint8)[..., None], 3, axis=2)


def write_2d_set(root: Path, label_maps: Dict[str, np.ndarray], names: Dict[int, str],
                 pictures: Optional[Dict[str, np.ndarray]] = None) -> Path:
    """A 2D dataset folder: images/NAME.png (the label map's foreground, bright) and masks/NAME.png."""
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for name, lab in label_maps.items():
        pic = pictures[name] if pictures else ((lab > 0) * 255).astype(np.uint8)
        Image.fromarray(pic).save(root / "images" / f"{name}.png")
        Image.fromarray(lab.astype(np.uint8)).save(root / "masks" / f"{name}.png")
    (root / "labels.json").write_text(json.dumps({str(k): v for k, v in names.items()}), encoding="utf-8")
    return root


def two_class_label(shape=(64, 80), shift: int = 0) -> np.ndarray:
    """Class 1: a 20x30 rectangle plus a 6x6 square (two regions); class 2: a disk."""
    lab = np.zeros(shape, np.uint8)
    lab[8 + shift:28 + shift, 6:36] = 1
    lab[40:46, 10:16] = 1
    lab[disk(shape, (60, 44), 9)] = 2
    return lab


# ---------------------------------------------------------------------------------------------- the fakes


def test_shape_backend_box_gives_bright_pixels_in_the_box():
    ref = np.zeros((32, 32), bool)
    ref[5:15, 5:20] = True
    ref[25:30, 25:30] = True
    b = ShapeBackend()
    h = b.encode(picture_of(ref))
    pred = b.decode(h, Prompt(box_xy=[0, 0, 21, 21]))
    assert pred.masks.shape == (1, 32, 32)
    np.testing.assert_array_equal(pred.best, ref & (np.arange(32)[:, None] <= 21) & (np.arange(32)[None] <= 21))


def test_shape_backend_points_are_disks_and_three_candidates_for_a_lone_point():
    b = ShapeBackend(radius=3)
    h = b.encode(picture_of(np.zeros((20, 20), bool)))
    pred = b.decode(h, Prompt(include_points_xy=[(10, 10)]))
    assert len(pred.masks) == 3 and list(pred.scores) == sorted(pred.scores, reverse=True)
    np.testing.assert_array_equal(pred.best, disk((20, 20), (10, 10), 3))
    two = b.decode(h, Prompt(include_points_xy=[(10, 10)], exclude_points_xy=[(13, 10)]))
    assert len(two.masks) == 1 and not two.best[10, 13] and two.best[10, 8]
