"""Dataset folders for evaluation: 2D sets (images/, masks/, labels.json) and 3D sets (image.*, label.*)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .files import IMAGE_2D_EXTENSIONS, SEGMENTATION_EXTENSION, VOLUME_EXTENSIONS, PathLike, file_extension

# ----------------------------------------------------------------------------------------------- datasets
def read_label_names(path: PathLike) -> Dict[int, str]:
    """``labels.json`` ({"1": "liver", ...}) -> {1: "liver", ...}."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(raw, list):  # ["background", "liver", ...] -> index = class id
            raw = {str(i): name for i, name in enumerate(raw) if i}
        return {int(k): str(v) for k, v in raw.items()}
    except FileNotFoundError:
        raise FileNotFoundError(f"class names file not found: {p}") from None
    except (ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"cannot read class names from {p}: expected {{\"1\": \"name\", ...}} ({e})") from e


@dataclass
class DatasetItem:
    name: str
    image: Path
    mask: Optional[Path]


@dataclass
class DatasetInfo:
    """A dataset folder: ``kind`` "2d" (images/, masks/) or "3d" (image.*, label.*), items and class names."""

    path: Path
    kind: str
    items: List[DatasetItem]
    class_names: Dict[int, str]

    @property
    def missing_masks(self) -> List[str]:
        return [item.name for item in self.items if item.mask is None]


_EXPECTED_LAYOUT = ("a 2D set (images/NAME.png and masks/NAME.png, labels.json) or a 3D set "
                    "(image.nrrd|image.nii.gz|image/ (a DICOM series), label.nrrd|label.nii.gz|label.seg.nrrd, "
                    "labels.json)")


def _files_by_stem(folder: Path, extensions: Sequence[str]) -> Dict[str, Path]:
    found = {}
    for f in sorted(folder.iterdir()):
        ext = file_extension(f)
        if f.is_file() and ext in extensions and not f.name.startswith("."):
            found.setdefault(f.name[: -len(ext)], f)
    return found


def list_dataset(path: PathLike) -> DatasetInfo:
    """Recognize a 2D or 3D dataset folder (layouts in shared/data/README.md) and list its items."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; a dataset is a folder with {_EXPECTED_LAYOUT}")
    labels_json = folder / "labels.json"
    class_names = read_label_names(labels_json) if labels_json.is_file() else {}
    if (folder / "images").is_dir():
        images = _files_by_stem(folder / "images", IMAGE_2D_EXTENSIONS)
        if not images:
            raise ValueError(f"{folder / 'images'} has no images ({', '.join(IMAGE_2D_EXTENSIONS)})")
        masks = _files_by_stem(folder / "masks", IMAGE_2D_EXTENSIONS) if (folder / "masks").is_dir() else {}
        items = [DatasetItem(stem, image, masks.get(stem)) for stem, image in images.items()]
        return DatasetInfo(folder, "2d", items, class_names)
    image = next((folder / f"image{e}" for e in VOLUME_EXTENSIONS if (folder / f"image{e}").is_file()), None)
    if image is None and (folder / "image").is_dir():
        image = folder / "image"  # a DICOM series (io.read_volume reads the folder: core/dicom_series.py)
    if image is not None:
        label_exts = (SEGMENTATION_EXTENSION,) + VOLUME_EXTENSIONS
        label = next((folder / f"label{e}" for e in label_exts if (folder / f"label{e}").is_file()), None)
        return DatasetInfo(folder, "3d", [DatasetItem(folder.name, image, label)], class_names)
    contents = ", ".join(sorted(f.name + ("/" if f.is_dir() else "") for f in folder.iterdir())[:12])
    raise ValueError(f"{folder} is not a dataset folder: expected {_EXPECTED_LAYOUT}; "
                     f"found {contents or 'nothing'}")

