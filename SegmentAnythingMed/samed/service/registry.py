"""The models a service runs, each an in-process :class:`LocalBackend`, sharing one embedding cache.

The cache is keyed by ``core.backend.image_key(model, picture)`` (the model is part of the key), bounded by one
memory budget (least recently used embeddings leave first) and safe under concurrent requests. Each backend
runs one forward pass at a time (its own lock); ``encoder_runs`` counts real encoder passes, so a cache hit can be
told from an encode.
"""
from __future__ import annotations

import os
import threading
from typing import Dict, Iterable, Optional, Sequence, Tuple

from .. import __version__
from .wire import API_VERSION


class UnknownModel(LookupError):
    pass


class ModelRegistry:
    def __init__(self, backends: Dict[str, "object"], cache: "object"):
        if not backends:
            raise ValueError("a service needs at least one model")
        self.backends = dict(backends)
        self.cache = cache
        self._decodes = {name: 0 for name in self.backends}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, models: Sequence[Tuple[str, Optional[str]]], device: Optional[str] = None,
             cache_bytes: int = 1 << 30, engine: Optional[str] = None,
             engine_options: Optional[dict] = None) -> "ModelRegistry":
        """Load each (model, checkpoint) once; all share one cache of ``cache_bytes``. ``engine``: one of
        ``engines.selection.ENGINES`` (default: $SAMED_ENGINE, else auto: the fastest engine that can run here).
        ``engine_options``: ``resize`` / ``resize_filter`` / ``mask_threshold`` for every model
        (``selection.create_engine``)."""
        from ..engines.local import EmbeddingCache, LocalBackend
        from ..engines.selection import create_engine, default_engine

        cache = EmbeddingCache(cache_bytes)
        backends = {}
        for name, checkpoint in models:
            if name in backends:
                raise ValueError(f"model {name} is listed twice: give each --model once")
            backend = LocalBackend(create_engine(name, checkpoint, device, engine or default_engine(),
                                                  **(engine_options or {})))
            backend.cache = cache  # one budget for all models; keys include the model's name
            backends[name] = backend
        return cls(backends, cache)

    @classmethod
    def from_backends(cls, backends: Iterable["object"]) -> "ModelRegistry":
        """Serve backends that already exist (tests, embedding the service); they must share one cache."""
        backends = list(backends)
        cache = backends[0].cache
        for b in backends[1:]:
            b.cache = cache
        return cls({b.model: b for b in backends}, cache)

    def get(self, model: str):
        backend = self.backends.get(model)
        if backend is None:
            raise UnknownModel(f"model {model!r} is not served here (this service runs: {', '.join(self.backends)}); "
                               f"start the service with --model {model} (and its --checkpoint) or choose another")
        return backend

    def count_decode(self, model: str) -> None:
        with self._lock:
            self._decodes[model] += 1

    def close(self) -> None:
        for b in self.backends.values():
            b.close()

    def engine_summary(self) -> str:
        """Each model's engine and device, and why ``auto`` did not use a faster engine (for the start-up line)."""
        parts = []
        for name, b in self.backends.items():
            why = getattr(b.engine, "fallback_reason", None)
            parts.append(f"{name} ({getattr(b.engine, 'engine', 'torch')}) on {b.engine.device}"
                         + (f" [engine auto: {why}]" if why else ""))
        return ", ".join(parts)

    def devices(self) -> Sequence[str]:
        return sorted({b.engine.device for b in self.backends.values()})

    def info(self) -> Dict[str, object]:
        from ..engines.precision_check import verdict_summary

        models = {}
        for name, b in self.backends.items():
            e = b.engine.info()
            models[name] = {
                "description": e.get("description"), "prompt_kinds": e.get("prompt_kinds"),
                "image_size": e.get("image_size"), "device": e.get("device"),
                "checkpoint": os.path.basename(str(e["checkpoint"])) if e.get("checkpoint") else None,
                "engine": getattr(b.engine, "engine", "torch"), "precision": e.get("precision"),
                "fallback_reason": e.get("fallback_reason"),
                "precision_check": verdict_summary(e.get("precision_check")),
                "resize": e.get("resize"), "resize_filter": e.get("resize_filter"),
                "mask_threshold": e.get("mask_threshold"),
                "input_default": e.get("input_default"),
                "encoder_runs": int(b.encoder_runs), "decodes": self._decodes.get(name, 0)}
        return {"service": "samed", "version": __version__, "api_version": API_VERSION,
                "device": ", ".join(self.devices()), "models": models, "cache": self.cache.stats()}
