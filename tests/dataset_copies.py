"""Copies of the shared sample sets for tests that run `samed evaluate` on them (the user's data stays untouched)."""
from __future__ import annotations

import shutil
from pathlib import Path


def copy_us_pictures(shared_data: Path, folder: Path, count: int) -> Path:
    """The first ``count`` ultrasound pictures of the shared us-breast-lesion set, with their masks and labels.json,
    copied to ``folder`` (created). Returns ``folder``."""
    src = shared_data / "images" / "us-breast-lesion"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    shutil.copy(src / "labels.json", folder / "labels.json")
    for p in sorted((src / "images").glob("*.png"))[:count]:
        shutil.copy(p, folder / "images" / p.name)
        shutil.copy(src / "masks" / p.name, folder / "masks" / p.name)
    return folder
