"""The service's limits and settings, in one place (``samed serve`` options fill them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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

    def __post_init__(self):
        if self.max_body_bytes < 1024:
            raise ValueError(f"the body size limit ({self.max_body_bytes} bytes) is too small to be useful")
