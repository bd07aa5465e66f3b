"""Output paths of the ``samed`` commands, checked before anything slow runs: never an input (whatever the
spelling: ``./../dir/v.nrrd``, a symbolic or hard link is the same file), a folder that can be written, and
``--overwrite`` for an existing file. The writers themselves replace a file only when the new one is complete
(:func:`samed.core.files.atomic_output`)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional


def same_file(a, b) -> bool:
    """True when ``a`` and ``b`` are the same file on disk (same device and inode; links followed)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_output(path, option: str, inputs: Iterable[Optional[str]], overwrite: bool = True,
                 make_parents: bool = True) -> Path:
    """``path`` as it will be written; raises ValueError / FileExistsError with a message that names ``option``."""
    p = Path(path)
    for inp in inputs:
        if inp and same_file(p, inp):
            raise ValueError(f"{option} {path} is the input file {inp} (the same file on disk): samed never writes "
                             f"over its inputs; choose another {option}")
    if p.is_dir():
        raise ValueError(f"{option} {path} is a folder: give a file name in it")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists: pass --overwrite to replace it, or choose another {option}")
    folder = _nearest_existing(p.parent)
    if not folder.is_dir():
        raise ValueError(f"{option} {path} cannot be written: {folder} is a file, not a folder")
    if folder != p.parent and not make_parents:
        raise ValueError(f"{option} {path} cannot be written: the folder {p.parent} does not exist")
    _check_writable(folder, option, path)
    return p


def _check_writable(folder: Path, option: str, path) -> None:
    """The real test (permissions, read-only file systems, root on /sys): create a file in ``folder``, remove it."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".samed-write-check.", dir=str(folder))
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{option} {path} cannot be written: files cannot be created in {folder} "
                         f"({e.strerror or e}); choose another {option}") from None


def _nearest_existing(folder: Path) -> Path:
    folder = folder if str(folder) else Path(".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_output_folder(path, option: str, inputs: Iterable[Optional[str]] = ()) -> Path:
    """An output folder (made if missing): not a file, not one of the ``inputs`` (folders whose files samed reads),
    and writable."""
    p = Path(path)
    for inp in inputs:
        if inp and same_file(p, inp):
            raise ValueError(f"{option} {path} is the input folder {inp}: samed never writes among its inputs; "
                             f"choose another {option}")
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option} {path} is a file: give a folder")
    folder = _nearest_existing(p)
    if not folder.is_dir():
        raise ValueError(f"{option} {path} cannot be made: {folder} is a file, not a folder")
    _check_writable(folder, option, path)
    return p



# ----------------------------------------------------------------------------------------------- DICOM SEG

def wants_dicom_seg(out, dicom_seg_flag: bool = False) -> bool:
    """True when ``--out`` is a DICOM SEG: a ``.dcm`` name, or any name with ``--dicom-seg``."""
    from ..core.dicom_seg import is_dicom_seg_path

    return bool(dicom_seg_flag) or is_dicom_seg_path(out)


def engine_name(backend) -> str:
    """The engine behind ``backend`` as recorded in a DICOM SEG: torch / onnx / openvino..., or the service's URL."""
    engine = getattr(backend, "engine", None)
    if engine is not None:
        return str(getattr(engine, "engine", "torch"))
    url = getattr(backend, "url", None)
    return f"model service {url}" if url else type(backend).__name__


def write_dicom_seg_output(out: Path, masks, volume, backend, overwrite: bool = True, parameters=None) -> Path:
    """``masks`` ({name: mask on the DICOM series' grid}) as a DICOM SEG at ``out`` (written whole or not at all)."""
    from ..core.dicom_seg import write_dicom_seg

    return write_dicom_seg(out, masks, volume, model=getattr(backend, "model", ""), engine=engine_name(backend),
                           overwrite=overwrite, parameters=parameters)
