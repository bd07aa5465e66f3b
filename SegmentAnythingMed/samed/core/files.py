"""File names and types shared by samed's readers and writers: extensions, existence checks, label errors."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence, Union

PathLike = Union[str, os.PathLike]

VOLUME_EXTENSIONS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
IMAGE_2D_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SEGMENTATION_EXTENSION = ".seg.nrrd"
LABEL_EXTENSIONS = (SEGMENTATION_EXTENSION,) + VOLUME_EXTENSIONS
_COMPOUND_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".mrk.json")

# Colours for written segments without an explicit colour (Slicer's GenericAnatomyColors, first entries).
DEFAULT_SEGMENT_COLORS = (
    (0.502, 0.682, 0.502), (0.945, 0.839, 0.569), (0.694, 0.478, 0.396), (0.435, 0.722, 0.824),
    (0.847, 0.396, 0.310), (0.867, 0.510, 0.396), (0.565, 0.933, 0.565), (0.753, 0.408, 0.345),
    (0.863, 0.961, 0.078), (0.306, 0.247, 0.000), (1.000, 0.980, 0.863), (0.902, 0.863, 0.275),
)


class LabelError(ValueError):
    """A requested label or segment is not in the file; the message lists what the file has."""


# ----------------------------------------------------------------------------------------------- paths and checks

def file_extension(path: PathLike) -> str:
    """Lower-case extension, compound ones included: ``.seg.nrrd``, ``.nii.gz``, ``.mrk.json``."""
    name = Path(path).name.lower()
    for ext in _COMPOUND_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def _existing_file(path: PathLike, supported: Sequence[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {p}")
    if p.is_dir():
        raise ValueError(f"{p} is a folder, not a {what} file")
    ext = file_extension(p)
    if ext not in supported and not (ext == SEGMENTATION_EXTENSION and ".nrrd" in supported):
        raise ValueError(f"unsupported {what} file type {ext or '(no extension)'!r} for {p}: "
                         f"supported are {', '.join(supported)}")
    return p


def _sitk():
    import SimpleITK as sitk  # Slicer ships it; imported here so that `import samed.core.io` stays cheap
    return sitk




@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """A temporary path in ``path``'s folder (same extension, so writers that choose the format by the name still
    do): write there; it is renamed over ``path`` only when the block ends without an error, else removed.
    A reader of ``path`` sees the old file or the new whole one, never a part."""
    p = Path(path)
    ext = file_extension(p)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name[:len(p.name) - len(ext)] or 'out'}.", suffix=f".part{ext}",
                                    dir=str(p.parent))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private; give it the permissions a new file gets
        os.replace(tmp, p)
    except BaseException:  # KeyboardInterrupt and SystemExit too: no half-written file is left behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
