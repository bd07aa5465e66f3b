"""In-process backend: a :class:`SamEngine` behind the :class:`Backend` interface, with an embedding cache.

The cache is keyed by the slice's content (see ``core.backend.image_key``), so clicking again on a slice
never re-encodes it, and it is bounded by a memory budget (least recently used entries leave first).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Dict, FrozenSet, Optional

import numpy as np

from .. import __version__
from ..core.backend import Backend, BackendError, EmbeddingHandle, check_image, image_key
from ..core.prompts import Prediction, Prompt
from .sam_engine import Embedding, SamEngine


class EmbeddingCache:
    """Thread-safe LRU of embeddings bounded by bytes."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = int(max_bytes)
        self._items: "OrderedDict[str, Embedding]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Optional[Embedding]:
        with self._lock:
            emb = self._items.get(key)
            if emb is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return emb

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key: str, emb: Embedding) -> None:
        size = emb.nbytes()
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes()
            self._items[key] = emb
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes()

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return {"entries": len(self._items), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses}


class LocalBackend(Backend):
    def __init__(self, engine: SamEngine, cache_bytes: int = 512 << 20):
        self.engine = engine
        self.model = engine.name
        self.cache = EmbeddingCache(cache_bytes)
        self._lock = threading.Lock()  # one forward pass at a time on this engine
        self.encoder_runs = 0

    @classmethod
    def create(cls, model: str = "litemedsam", checkpoint: Optional[str] = None, device: Optional[str] = None,
               **kwargs) -> "LocalBackend":
        return cls(SamEngine(model, checkpoint, device), **kwargs)

    def info(self) -> Dict[str, object]:
        return {"service": "samed (in-process)", "version": __version__, "device": self.engine.device,
                "models": {self.model: self.engine.info()}, "cache": self.cache.stats()}

    def prompt_kinds(self) -> FrozenSet[str]:
        return self.engine.prompt_kinds

    def encode(self, image_rgb: np.ndarray) -> EmbeddingHandle:
        image_rgb = check_image(image_rgb)
        key = image_key(self.model, image_rgb)
        if key not in self.cache:
            with self._lock:
                if key not in self.cache:
                    self.cache.put(key, self.engine.encode(image_rgb))
                    self.encoder_runs += 1
        return EmbeddingHandle(key, self.model, tuple(image_rgb.shape[:2]))

    def encode_many(self, images_rgb, batch_size: int = 4):
        """Encode several slices (in batches through the encoder); handles in order."""
        images = [check_image(im) for im in images_rgb]
        keys = [image_key(self.model, im) for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            with self._lock:
                embs = self.engine.encode_batch([images[i] for i in chunk])
                self.encoder_runs += len(chunk)
            for i, emb in zip(chunk, embs):
                self.cache.put(keys[i], emb)
        return [EmbeddingHandle(k, self.model, tuple(im.shape[:2])) for k, im in zip(keys, images)]

    def embedding(self, handle: EmbeddingHandle) -> Embedding:
        emb = self.cache.get(handle.key)
        if emb is None:
            raise BackendError(f"embedding {handle.key[:12]}... is not cached any more: encode the slice again")
        return emb

    def decode(self, handle: EmbeddingHandle, prompt: Prompt, multimask: Optional[bool] = None) -> Prediction:
        emb = self.embedding(handle)
        with self._lock:
            return self.engine.decode(emb, prompt, multimask)
