"""Choose a backend: the in-process engine ("local") or the model service (an http(s) URL)."""
from __future__ import annotations

import os
from typing import Optional

from .core.backend import Backend


def create_backend(where: str = "local", model: str = "litemedsam", checkpoint: Optional[str] = None,
                   device: Optional[str] = None, token: Optional[str] = None, timeout: float = 60.0,
                   engine: Optional[str] = None, resize: Optional[str] = None,
                   resize_filter: Optional[str] = None, mask_threshold=None) -> Backend:
    """``where``: "local" (an engine in this process) or the service's URL (torch-free client).

    ``engine`` (local only): "auto" (default, or $SAMED_ENGINE: ONNX Runtime for LiteMedSAM when it exports and
    passes its check against torch, else torch), "torch" (the reference) or "onnx". ``resize`` / ``resize_filter``
    (local only): how pictures are resized for the encoder, ``mask_threshold`` (local only): how masks are cut
    from the logits (``engines.selection.create_engine``); a model service does both as it was started
    (``samed serve --input-resize/--resize-filter/--mask-threshold``), so giving them with a URL is an error."""
    if where in (None, "", "local"):
        try:
            from .engines.local import LocalBackend  # torch is imported only here
        except ImportError as exc:
            from .core.backend import BackendError

            raise BackendError(
                f"the in-process backend needs PyTorch and segment-anything ({exc}); install them "
                f"(pip install 'segmentanythingmed[engines]') or use a model service with --backend URL") from exc
        from .engines.selection import default_engine

        return LocalBackend.create(model, checkpoint, device, engine=engine or default_engine(),
                                   engine_options={"resize": resize, "resize_filter": resize_filter,
                                                   "mask_threshold": mask_threshold})
    if where.startswith(("http://", "https://")):
        from .client.http import HttpBackend

        if resize is not None or resize_filter is not None or mask_threshold is not None:
            raise ValueError("--input-resize / --resize-filter / --mask-threshold set how this computer's engine "
                             "resizes pictures and cuts masks; a model service does that as it was started: give "
                             f"them to `samed serve`, not with --backend {where}")
        token = token if token is not None else os.environ.get("SAMED_TOKEN")
        return HttpBackend(where, model=model, token=token, timeout=timeout)
    raise ValueError(f"unknown backend {where!r}: use 'local' or the service's URL (http://HOST:PORT)")
