"""The service's limits and settings, in one place (``samed serve`` options fill them; the timeouts and the upload
memory budget also come from the environment: ``SAMED_HEADER_TIMEOUT_S``, ``SAMED_BODY_TIMEOUT_S``,
``SAMED_UPLOAD_MEMORY_MB``, ``SAMED_MAX_CONNECTIONS``).

Memory bound: the server's peak RSS is its warm size (models, runtime, one encode's working memory; see
``samed serve``'s first lines) plus the embedding cache (``--cache-mb``) plus ``max_upload_memory_bytes`` (every
request body in memory at once, its inflated and unpacked copies, and the slabs of propagation jobs until they
finish) plus at most ``max_connections`` request heads (64 KB each, h11's limit).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional


def _env(name: str, default: float, scale: float = 1.0):
    def value():
        raw = os.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"${name} must be a number, got {raw!r:.40}") from None
        if number <= 0:
            raise ValueError(f"${name} must be positive, got {raw}")
        return type(default)(number * scale)
    return field(default_factory=value)


@dataclass
class ServiceConfig:
    token: Optional[str] = None  # None: no authentication (only allowed on a loopback address)
    max_body_bytes: int = 256 << 20  # a request as sent, and again after decompression
    max_side: int = 8192  # pixels per side of a slice
    max_slab_slices: int = 2048  # slices in one propagation upload
    max_points: int = 256  # include + exclude points in one prompt
    max_active_jobs: int = 8  # propagation jobs queued or running; more -> 429
    job_workers: int = 2  # propagation jobs running at once (they share the engines' one-at-a-time lock)
    job_keep_seconds: float = 900.0  # a finished job's result is kept this long (or until DELETE)
    max_kept_jobs: int = 64  # finished jobs kept at most
    max_json_bytes: int = 16 << 20  # a JSON body (a prompt; a mask prompt of 8192 x 8192 is 11 MB)
    # all request bodies held at once (with their inflated and unpacked copies) and the slabs of running jobs
    max_upload_memory_bytes: int = _env("SAMED_UPLOAD_MEMORY_MB", 1024 << 20, 1 << 20)
    header_timeout_s: float = _env("SAMED_HEADER_TIMEOUT_S", 10.0)  # a request's head must arrive within this
    body_timeout_s: float = _env("SAMED_BODY_TIMEOUT_S", 30.0)  # longest pause while a body arrives
    body_deadline_s: float = _env("SAMED_BODY_DEADLINE_S", 600.0)  # a whole body must arrive within this
    upload_wait_s: float = _env("SAMED_UPLOAD_WAIT_S", 60.0)  # an upload waits this long for room, then 503
    max_connections: int = _env("SAMED_MAX_CONNECTIONS", 128)  # open connections; more get 503

    def __post_init__(self):
        if self.max_body_bytes < 1024:
            raise ValueError(f"the body size limit ({self.max_body_bytes} bytes) is too small to be useful")
        if self.max_upload_memory_bytes < 1 << 20:
            raise ValueError(f"the upload memory budget ({self.max_upload_memory_bytes} bytes) is below 1 MB")
