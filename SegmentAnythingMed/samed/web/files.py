"""What the web app may read and where it writes: volumes from the folders it was given (``--data``), the saved
segmentation written whole or not at all."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, List

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
NOT_VOLUMES = (".seg.nrrd",)


def _is_volume(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(VOLUME_SUFFIXES) and not name.endswith(NOT_VOLUMES)


class DataFolders:
    """The folders the server may read volumes from; files are named relative to them, never by a client's path."""

    def __init__(self, folders: Iterable[str]):
        self.folders: List[Path] = []
        for folder in folders:
            path = Path(folder).expanduser().resolve()
            if not path.is_dir():
                raise FileNotFoundError(f"--data {folder}: no such folder")
            self.folders.append(path)

    def _listing(self, accept) -> List[str]:
        names = []
        for folder in self.folders:
            for path in sorted(folder.rglob("*")):
                if (path.is_file() and accept(path) and len(path.relative_to(folder).parts) <= 2
                        and path.resolve().is_relative_to(folder)):  # not a link out of the folder
                    names.append(f"{folder.name}/{path.relative_to(folder).as_posix()}")
        return names

    def _resolve(self, name: str, accept, what: str) -> Path:
        head, _, rest = str(name).partition("/")
        for folder in self.folders:
            if folder.name != head or not rest:
                continue
            path = (folder / rest).resolve()
            if path.is_relative_to(folder) and path.is_file() and accept(path):
                return path
        raise ValueError(f"{name!r} is not a {what} in the server's data folders: choose one from the list")

    def volumes(self) -> List[str]:
        """Volume files under the folders (two levels deep), as 'folder-name/relative/path'."""
        return self._listing(_is_volume)

    def resolve(self, name: str) -> Path:
        """The file that ``name`` (as listed by :meth:`volumes`) means; ValueError for anything outside the folders."""
        return self._resolve(name, _is_volume, "volume")

    def segmentations(self) -> List[str]:
        """Slicer segmentation files (.seg.nrrd) under the folders: the references a result can be compared with."""
        return self._listing(_is_segmentation)

    def resolve_segmentation(self, name: str) -> Path:
        return self._resolve(name, _is_segmentation, "segmentation file")


def _is_segmentation(path: Path) -> bool:
    return path.name.lower().endswith(".seg.nrrd")


def reference_choices(data: DataFolders) -> List[str]:
    """'folder/file.seg.nrrd: segment name' for every segment of every segmentation file (headers only)."""
    import slicerio

    choices = []
    for name in data.segmentations():
        try:
            segments = slicerio.read_segmentation(str(data.resolve_segmentation(name)), skip_voxels=True)["segments"]
        except Exception as exc:  # a damaged file is skipped, not fatal: say which in the server log
            logging.warning("samed web: %s is not offered as a reference: %s", name, exc)
            continue
        choices += [f"{name}: {segment['name']}" for segment in segments]
    return choices


def write_segmentation(segmentation_node, out_path: Path) -> Path:
    """Write ``segmentation_node`` as a Slicer ``.seg.nrrd`` (a temporary file in the same folder, then renamed)."""
    from slicer import vtkMRMLSegmentationStorageNode

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".samed-web-", suffix=".seg.nrrd", dir=str(out_path.parent))
    os.close(fd)
    try:
        storage = vtkMRMLSegmentationStorageNode()
        storage.SetFileName(tmp)
        if not storage.WriteData(segmentation_node):
            raise OSError(f"could not write {out_path}: the segmentation writer failed (see the server log)")
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path
