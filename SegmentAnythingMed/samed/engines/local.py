"""In-process backend: an engine (torch or ONNX Runtime) behind the :class:`Backend` interface, with an embedding cache.

The cache is keyed by the slice's content (see ``core.backend.image_key``), so clicking again on a slice
never re-encodes it, and it is bounded by a memory budget (least recently used entries leave first).
:meth:`LocalBackend.prefetch` encodes slices ahead in a background thread (e.g. the neighbours of the slice the
user looks at); a slice asked for while it is being encoded ahead waits for that encode instead of repeating it.
:meth:`LocalBackend.stopped_on` is what a front end calls when the user stops on a slice (pre-encoding: the next
box or click needs only a decode); encodes ahead for slices scrolled past are dropped (:meth:`cancel_prefetch`),
and on a CPU an encode ahead waits while encodes somebody waits for run (a propagation is never slowed by them).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, FrozenSet, Optional, Sequence

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
    """``engine``: a :class:`SamEngine` (torch, the reference) or an ONNX Runtime engine (same interface).

    ``prefetch_in_propagation``: let propagation encode the next slices ahead (None: on a GPU only; on a small
    CPU the encodes ahead past the object's end cost more than the overlap saves).
    """

    PREFETCH_PENDING = 4  # pending encode-ahead requests kept; older ones are dropped (the user moved on)
    PREFETCH_YIELD_S = 0.3  # an encode ahead starts only this long after the last encode or decode asked for
    # (a propagation alternates them without pause: encodes ahead wait until the walk has ended)
    STOP_SETTLE_S = 0.15  # stopped_on: the user must stay this long on a slice before its encode starts (while
    # scrolling, slices go by every ~0.1 s: an encode started for each would hold up the one the user stops on)

    def __init__(self, engine: SamEngine, cache_bytes: int = 512 << 20,
                 prefetch_in_propagation: Optional[bool] = None):
        self.engine = engine
        self.model = engine.name
        self.cache = EmbeddingCache(cache_bytes)
        self._lock = threading.Lock()  # one encoder pass at a time on this engine
        # the torch engine runs one forward pass at a time; ONNX Runtime sessions may decode during an encode
        self._decode_lock = self._lock if getattr(engine, "engine", "torch") == "torch" else threading.Lock()
        self.encoder_runs = 0
        if prefetch_in_propagation is None:
            prefetch_in_propagation = str(getattr(engine, "device", "cpu")).startswith("cuda")
        self.wants_prefetch = bool(prefetch_in_propagation)
        self._pending: "OrderedDict[str, Future]" = OrderedDict()
        self._pending_lock = threading.Lock()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._foreground = 0  # encodes asked for (not ahead) running or waiting now
        self._foreground_end = 0.0  # time.monotonic() when the last one ended
        self.prefetch_runs = 0  # encodes done ahead (for tests and benchmarks)
        self._stopped_at = 0.0  # time.monotonic() of the last stopped_on()

    @classmethod
    def create(cls, model: str = "litemedsam", checkpoint: Optional[str] = None, device: Optional[str] = None,
               engine: str = "torch", engine_options: Optional[dict] = None, **kwargs) -> "LocalBackend":
        """``engine``: "torch" (the reference, default here), "onnx" or "auto" (see ``engines.selection``)."""
        from .selection import create_engine

        return cls(create_engine(model, checkpoint, device, engine, **(engine_options or {})), **kwargs)

    def info(self) -> Dict[str, object]:
        return {"service": "samed (in-process)", "version": __version__, "device": self.engine.device,
                "models": {self.model: self.engine.info()}, "cache": self.cache.stats()}

    def prompt_kinds(self) -> FrozenSet[str]:
        return self.engine.prompt_kinds

    def _encode_into_cache(self, key: str, image_rgb: np.ndarray, ahead: bool = False) -> None:
        with self._lock:
            if key not in self.cache:
                self.cache.put(key, self.engine.encode(image_rgb))
                self.encoder_runs += 1
                self.prefetch_runs += int(ahead)

    def _encode_now(self, key: str, image_rgb: np.ndarray) -> None:
        """An encode somebody waits for: encodes ahead hold back while these run (and shortly after)."""
        with self._in_foreground():
            self._encode_into_cache(key, image_rgb)

    @contextmanager
    def _in_foreground(self):
        """Encodes and decodes somebody waits for: an encode ahead starts only ``PREFETCH_YIELD_S`` after the last
        of them ended (a propagation alternates them without pause, so it is never slowed)."""
        with self._pending_lock:
            self._foreground += 1
        try:
            yield
        finally:
            with self._pending_lock:
                self._foreground -= 1
                self._foreground_end = time.monotonic()

    def encode(self, image_rgb: np.ndarray) -> EmbeddingHandle:
        image_rgb = check_image(image_rgb)
        key = image_key(self.model, image_rgb)
        if key not in self.cache:
            with self._pending_lock:
                fut = self._pending.pop(key, None)
            if fut is not None and not fut.cancel():
                try:
                    fut.result()  # being encoded ahead right now: wait for it rather than encode twice
                except (RuntimeError, ValueError, OSError):
                    pass  # the encode ahead failed: encode here, where the error reaches the caller
            if key not in self.cache:
                self._encode_now(key, image_rgb)
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

    def prefetch(self, images_rgb) -> None:
        """Encode these slices ahead in a background thread, in order; at most ``PREFETCH_PENDING`` requests
        wait (older ones are dropped: the user has moved on). Returns at once."""
        for image in images_rgb:
            image = check_image(image)
            key = image_key(self.model, image)
            if key in self.cache:
                continue
            with self._pending_lock:
                if key in self._pending:
                    continue
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samed-prefetch")
                self._pending[key] = self._executor.submit(self._prefetch_one, key, np.array(image, copy=True))
                while len(self._pending) > self.PREFETCH_PENDING:
                    _, old = self._pending.popitem(last=False)
                    old.cancel()

    def cancel_prefetch(self, keep: Sequence[str] = ()) -> None:
        """Drop the encodes ahead not started yet (one that has started runs to its end: an encoder pass cannot be
        interrupted), except those of the content keys in ``keep``."""
        with self._pending_lock:
            for key in [k for k in self._pending if k not in keep]:
                self._pending.pop(key).cancel()

    def stopped_on(self, image_rgb: np.ndarray) -> None:
        """The user stopped on this slice: drop encodes ahead of other slices, encode this one in the background
        (unless cached or already on its way). Returns at once."""
        image_rgb = check_image(image_rgb)
        self._stopped_at = time.monotonic()
        self.cancel_prefetch(keep=(image_key(self.model, image_rgb),))
        self.prefetch([image_rgb])

    def _prefetch_one(self, key: str, image_rgb: np.ndarray) -> None:
        # never slow an encode somebody waits for (a propagation's next slice, a click); where propagation itself
        # encodes ahead (a GPU: wants_prefetch), encodes ahead are part of its walk and do not hold back
        yield_s = 0.0 if self.wants_prefetch else self.PREFETCH_YIELD_S
        try:
            while True:
                with self._pending_lock:
                    if key not in self._pending:
                        return  # cancelled, or encode() took it over
                    now = time.monotonic()
                    idle, settled = now - self._foreground_end, now - self._stopped_at
                    if yield_s == 0.0 or (self._foreground == 0 and idle >= yield_s
                                          and settled >= self.STOP_SETTLE_S):
                        break
                time.sleep(0.02)  # short: encode() may take this request over and wait for it to notice
            self._encode_into_cache(key, image_rgb, ahead=True)
        finally:
            with self._pending_lock:
                self._pending.pop(key, None)

    def embedding(self, handle: EmbeddingHandle) -> Embedding:
        emb = self.cache.get(handle.key)
        if emb is None:
            raise BackendError(f"embedding {handle.key[:12]}... is not cached any more: encode the slice again")
        return emb

    def decode(self, handle: EmbeddingHandle, prompt: Prompt, multimask: Optional[bool] = None,
               mask_threshold=None) -> Prediction:
        emb = self.embedding(handle)
        with self._in_foreground(), self._decode_lock:
            return self.engine.decode(emb, prompt, multimask, mask_threshold=mask_threshold)

    def mask_threshold(self):
        return self.engine.spec.mask_threshold

    def close(self) -> None:
        with self._pending_lock:
            for fut in self._pending.values():
                fut.cancel()
            self._pending.clear()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
