"""Volumes uploaded from the browser: checked like the CLI's inputs before the scene sees them.

A file is kept only when it is a single-file volume (.nrrd, .nii, .nii.gz, .mha) within the size limit that the
CLI's reader (``samed.core.io.read_volume``: truncated files, corrupt headers, failed gzip checks) accepts. The
client's file name loses any folder part; files live in a folder of this server process, removed when it stops,
and are then listed as ``uploads/NAME`` beside the --data folders' volumes.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

UPLOAD_SUFFIXES = (".nii.gz", ".nrrd", ".nii", ".mha")


class Uploads:
    def __init__(self, max_mb: float = 512.0):
        if not max_mb > 0:
            raise ValueError("--max-upload-mb must be positive")
        self.max_bytes = int(max_mb * 2 ** 20)
        self._root = Path(tempfile.mkdtemp(prefix="samed-web-"))
        self.folder = self._root / "uploads"
        self.folder.mkdir()

    def save(self, client_file: dict) -> str:
        """Check and keep one file from trame's client (a dict with name and content); its listed name."""
        from trame.app.file_upload import ClientFile

        from ..core.io import read_volume

        upload = ClientFile(client_file if isinstance(client_file, dict) else {})
        name = Path(str(upload.name or "").replace("\\", "/")).name
        lower = name.lower()
        suffix = next((s for s in UPLOAD_SUFFIXES if lower.endswith(s)), None)
        if suffix is None or lower.endswith(".seg.nrrd") or lower.startswith("."):
            raise ValueError(f"{name or 'the file'}: upload a volume in one file ({', '.join(UPLOAD_SUFFIXES)})")
        content = upload.content or b""
        if not content:
            raise ValueError(f"{name} is empty")
        if len(content) > self.max_bytes:
            raise ValueError(f"{name} is {len(content) / 2 ** 20:.0f} MB: uploads are limited to "
                             f"{self.max_bytes / 2 ** 20:.0f} MB (samed web --max-upload-mb)")
        fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=suffix, dir=str(self.folder))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            try:
                read_volume(tmp)
            except (ValueError, OSError) as exc:
                raise ValueError(str(exc).replace(tmp, name)) from None
            os.replace(tmp, self.folder / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return f"{self.folder.name}/{name}"

    def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)
