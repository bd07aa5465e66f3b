"""The model service as a :class:`Backend`: torch-free (standard library + numpy), usable in 3D Slicer's Python.

``encode`` computes the slice's content key here and asks the service whether it has it before uploading, so
a slice goes over the network once per service (whoever sent it first). ``decode`` sends the prompt as small JSON
and gets the masks back bit-packed. ``start_propagation`` runs a propagation job on the server.

Every request about a slice's embedding (the cache check, the upload, each decode) carries ``X-Samed-Route: <the
slice's key>`` and every request about a propagation job the job's route (the key of its seed slice, kept in the
job's handle), so a consistent-hash proxy in front of several replicas (nginx ``hash $http_x_samed_route
consistent``, Envoy's ``hash_policy`` on the header; see docs/deploy.md) sends a slice's decodes to the replica
that encoded it and a job's polls to the replica that runs it. A replica that lost the embedding (evicted, or the
key moved to another replica when one was added or lost) answers 404 and the slice is sent again; a replica that
lost the job answers 404 too, and that is :class:`JobLostError`.
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Dict, FrozenSet, Optional, Sequence

import numpy as np

from ..core.backend import Backend, BackendError, EmbeddingHandle, check_image, check_prompt_kinds, image_key
from ..core.prompts import Prediction, Prompt
from ..core.propagation import PropagationResult, PropagationSettings
from ..service.auth import is_loopback
from ..service.slab import needed_slab
from ..service.wire import (API_PREFIX, API_VERSION, BUNDLE_TYPE, KEY_HEADER, WireError, decode_bundle,
                            encode_bundle, gzip_bytes, mask_to_json, pack_pictures)
from .errors import ApiVersionError, JobFailedError, JobLostError, JobTimeoutError, ServiceRequestError
from .jobs import FAILED, JobProgress, PropagationJob, check_pictures
from .transport import Reply, Transport

P = API_PREFIX
ROUTE_HEADER = "X-Samed-Route"  # what a consistent-hash proxy hashes: a slice's embedding key, or a job's route
_MAX_ANSWER_BYTES = 1 << 34  # answers come from the service we chose; only a sanity bound


class HttpBackend(Backend):
    """A model on a samed service. ``compress``: gzip bodies ("auto": unless the service is on this machine).
    ``explain_failure``: called when the service cannot be reached; a message that replaces the generic one (the
    owner of a service process says that it died, and why)."""

    wants_prefetch = False

    def __init__(self, url: str, model: str = "litemedsam", token: Optional[str] = None, timeout: float = 60.0,
                 compress="auto", keep_pictures: int = 4,
                 explain_failure: Optional[Callable[[], Optional[str]]] = None):
        self.url = url.rstrip("/")
        self.model = model
        self._t = Transport(self.url, token, timeout, compress=False, explain_failure=explain_failure)
        self._t.compress = (not is_loopback(self._t.host)) if compress == "auto" else bool(compress)
        self._recent: "OrderedDict[str, np.ndarray]" = OrderedDict()  # re-sent if the service evicted them
        self._recent_lock = threading.Lock()
        self._keep = int(keep_pictures)
        self._service_info = self._connect()
        self._kinds = frozenset(self._service_info["models"][model]["prompt_kinds"])
        self.max_body_bytes = int(self._service_info.get("limits", {}).get("max_body_bytes") or 0) or None
        self._prefetching: "OrderedDict[str, Future]" = OrderedDict()  # encodes ahead (prefetch), by content key
        self._prefetch_lock = threading.Lock()
        self._prefetcher: Optional[ThreadPoolExecutor] = None

    # ---- connection ------------------------------------------------------------------------------------------
    def _connect(self) -> Dict[str, object]:
        reply = self._t.request("GET", f"{P}/health")
        if reply.status == 404:
            root = self._t.request("GET", "/")
            try:
                versions = root.json().get("api_versions") if root.status == 200 else None
            except (ServiceRequestError, AttributeError):
                versions = None
            if versions:
                raise ApiVersionError(f"the samed service at {self.url} speaks API version(s) {versions}, this client "
                                      f"speaks {API_VERSION}: install matching samed versions on both sides")
            raise ApiVersionError(f"{self.url} is not a samed model service (no {P}/health): check the URL and port")
        self._t.expect(reply, f"health check of {self.url}")
        health = reply.json()
        if not isinstance(health, dict) or health.get("service") != "samed":
            raise ApiVersionError(f"{self.url} answered {P}/health but is not a samed model service")
        if health.get("api_version") != API_VERSION:
            raise ApiVersionError(f"the samed service at {self.url} speaks API version {health.get('api_version')} "
                                  f"(samed {health.get('version')}), this client speaks {API_VERSION}: install "
                                  f"matching samed versions on both sides")
        info = self._t.expect(self._t.request("GET", f"{P}/info"), f"info from {self.url}").json()
        if self.model not in info.get("models", {}):
            served = ", ".join(info.get("models", {})) or "none"
            raise BackendError(f"the samed service at {self.url} does not serve model {self.model!r} (it serves: "
                               f"{served}): choose one of those, or start the service with --model {self.model}")
        return info

    def info(self) -> Dict[str, object]:
        info = self._t.expect(self._t.request("GET", f"{P}/info"), f"info from {self.url}").json()
        info["url"] = self.url
        return info

    def prompt_kinds(self) -> FrozenSet[str]:
        return self._kinds

    @property
    def bytes_sent(self) -> int:
        return self._t.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self._t.bytes_received

    def close(self) -> None:
        with self._prefetch_lock:
            executor, self._prefetcher = self._prefetcher, None
        self.cancel_prefetch()
        if executor is not None:
            executor.shutdown(wait=True)
        self._t.close()

    # ---- encode ----------------------------------------------------------------------------------------------
    def is_cached(self, key: str) -> bool:
        """Does the service hold the embedding with this key (``image_key(model, picture)``)?"""
        reply = self._t.request("HEAD", f"{P}/models/{self.model}/embeddings/{key}", headers={ROUTE_HEADER: key})
        if reply.status == 404:
            return False
        self._t.expect(reply, "the cache check")
        return True

    def _body(self, body: bytes, headers: dict, what: str) -> bytes:
        """Check an upload against the service's size limit (before sending it); gzip it if asked."""
        if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
            raise ServiceRequestError(
                f"{what} is {len(body) / 2 ** 20:.1f} MB, more than the {self.max_body_bytes / 2 ** 20:.0f} MB the "
                f"service at {self.url} accepts: send fewer slices (e.g. PropagationSettings.max_slices), or start "
                f"the service with a larger --max-body-mb", 413)
        if self._t.compress:
            headers["Content-Encoding"] = "gzip"
            return gzip_bytes(body)
        return body

    def _upload(self, image: np.ndarray, key: str) -> None:
        headers = {"Content-Type": BUNDLE_TYPE, KEY_HEADER: key, ROUTE_HEADER: key}
        body = self._body(encode_bundle({}, {"image": pack_pictures(image)}), headers, "the slice")
        reply = self._t.expect(self._t.request("POST", f"{P}/models/{self.model}/embeddings", body, headers),
                               "encoding the slice")
        if reply.json().get("key") != key:
            raise BackendError(f"the service stored the slice under another key than {key[:12]}...: mismatched "
                               f"samed versions on client and service?")

    def encode(self, image_rgb: np.ndarray) -> EmbeddingHandle:
        image = check_image(image_rgb)
        key = image_key(self.model, image)
        with self._prefetch_lock:
            ahead = self._prefetching.pop(key, None)
        if ahead is not None and not ahead.cancel():
            try:
                ahead.result()  # being encoded ahead right now: wait for it rather than upload twice
            except BackendError:
                pass  # the encode ahead failed: encode here, where the error reaches the caller
        return self._encode(image, key)

    def _encode(self, image: np.ndarray, key: str) -> EmbeddingHandle:
        if not self.is_cached(key):
            self._upload(image, key)
        with self._recent_lock:
            self._recent[key] = image
            self._recent.move_to_end(key)
            while len(self._recent) > self._keep:
                self._recent.popitem(last=False)
        return EmbeddingHandle(key, self.model, tuple(image.shape[:2]))

    # ---- encoding ahead --------------------------------------------------------------------------------------
    PREFETCH_PENDING = 4  # encodes ahead kept waiting; older ones are dropped (the user moved on)
    STOP_SETTLE_S = 0.15  # stopped_on: the user stays this long on a slice before it is sent (not while scrolling)
    _stopped_at = 0.0

    def stopped_on(self, image_rgb: np.ndarray) -> None:
        """The user stopped on this slice: drop encodes ahead not sent yet, have the service encode this one once the
        user has stayed ``STOP_SETTLE_S`` on it. Returns at once."""
        self._stopped_at = time.monotonic()
        super().stopped_on(image_rgb)

    def prefetch(self, images_rgb) -> None:
        """Have the service encode these slices ahead, from a background thread (a connection of its own, so a
        decode meanwhile is not queued behind an upload); at most ``PREFETCH_PENDING`` wait, older ones are
        dropped. Returns at once; failures surface at the next :meth:`encode` of that slice."""
        for image in images_rgb:
            image = check_image(image)
            key = image_key(self.model, image)
            with self._prefetch_lock:
                if key in self._prefetching:
                    continue
                if self._prefetcher is None:
                    self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samed-http-prefetch")
                self._prefetching[key] = self._prefetcher.submit(self._prefetch_one, key, np.array(image, copy=True))
                while len(self._prefetching) > self.PREFETCH_PENDING:
                    _, old = self._prefetching.popitem(last=False)
                    old.cancel()

    def _prefetch_one(self, key: str, image: np.ndarray) -> None:
        try:
            while True:  # wait until the user has settled on the slice; give up if it was dropped meanwhile
                with self._prefetch_lock:
                    if key not in self._prefetching:
                        return
                wait = self.STOP_SETTLE_S - (time.monotonic() - self._stopped_at)
                if wait <= 0:
                    break
                time.sleep(min(wait, 0.02))  # short: encode() may take this request over and wait for it to notice
            self._encode(image, key)
        finally:
            with self._prefetch_lock:
                self._prefetching.pop(key, None)

    def cancel_prefetch(self) -> None:
        """Drop the encodes ahead not sent yet (one being encoded by the service runs to its end)."""
        with self._prefetch_lock:
            pending, self._prefetching = self._prefetching, OrderedDict()
        for fut in pending.values():
            fut.cancel()

    # ---- decode ----------------------------------------------------------------------------------------------
    def mask_threshold(self):
        """The rule the service cuts this model's masks by (``samed serve --mask-threshold``; "model" for a
        service that does not say)."""
        return self._service_info["models"][self.model].get("mask_threshold") or "model"

    def decode(self, handle: EmbeddingHandle, prompt: Prompt, multimask: Optional[bool] = None,
               logits: bool = False, mask_threshold=None) -> Prediction:
        """Candidate masks, best first; ``logits`` also fetches the decoder's low-res logits;
        ``mask_threshold`` cuts this decode's masks by another rule than the service's."""
        if handle.model != self.model:
            raise BackendError(f"this slice was encoded with {handle.model}, not {self.model}: encode it again")
        prompt.validate(handle.shape_hw)  # the same errors as in-process, without a round trip
        check_prompt_kinds(self.model, self._kinds, prompt)
        request = {"include_points_xy": prompt.include_points_xy.tolist(),
                   "exclude_points_xy": prompt.exclude_points_xy.tolist(),
                   "box_xy": None if prompt.box_xy is None else [float(v) for v in prompt.box_xy],
                   "mask": None if prompt.mask is None else mask_to_json(prompt.mask),
                   "multimask": multimask, "logits": bool(logits)}
        if mask_threshold is not None:  # only then: a service older than the field refuses it (extra="forbid")
            request["mask_threshold"] = mask_threshold
        body = json.dumps(request).encode()
        path = f"{P}/models/{self.model}/embeddings/{handle.key}/decode"
        headers = {"Content-Type": "application/json", ROUTE_HEADER: handle.key}
        reply = self._t.request("POST", path, body, headers)
        if reply.status == 404:  # evicted from the shared cache: send the slice again if we still have it
            with self._recent_lock:
                image = self._recent.get(handle.key)
            if image is None or image_key(self.model, image) != handle.key:
                raise BackendError(f"the service no longer holds slice {handle.key[:12]}... (its cache is full): "
                                   f"encode the slice again")
            self._upload(image, handle.key)
            reply = self._t.request("POST", path, body, headers)
        self._t.expect(reply, "decoding the prompt")
        bundle = self._bundle(reply)
        return Prediction(bundle.array("masks"), np.asarray(bundle.meta.get("scores"), dtype=np.float32),
                          bundle.arrays.get("low_res_logits"))

    def _bundle(self, reply: Reply):
        try:
            return decode_bundle(reply.body, _MAX_ANSWER_BYTES)
        except WireError as exc:
            raise ServiceRequestError(f"the service's answer is not a samed bundle ({exc}): mismatched versions?",
                                      reply.status) from None

    # ---- propagation -----------------------------------------------------------------------------------------
    def start_propagation(self, pictures, seed_index: int, seed_mask, settings: Optional[PropagationSettings] = None,
                          directions: Sequence[str] = ("up", "down"), first_index: int = 0,
                          n_slices: Optional[int] = None, seed_box=None) -> "RemotePropagationJob":
        """Run a propagation job on the service; see :func:`samed.client.start_propagation`. Only the slices the
        walk can reach (:func:`needed_slab`) are uploaded."""
        pictures, seed_mask, n_slices = check_pictures(pictures, seed_index, seed_mask, first_index, n_slices)
        settings = settings or PropagationSettings()
        settings.validate()
        lo, hi = needed_slab(n_slices, seed_index, settings, directions)
        lo, hi = max(lo, first_index), min(hi, first_index + len(pictures) - 1)
        slab = pictures[lo - first_index:hi - first_index + 1]
        meta = {"seed_index": int(seed_index), "first_index": int(lo), "n_slices": int(n_slices),
                "directions": list(directions),
                "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()}}
        if seed_box is not None:
            meta["seed_box_xy"] = [float(v) for v in seed_box]
        # the job's route: its seed slice's key (the replica that decoded the seed may hold its embedding already)
        route = image_key(self.model, np.asarray(pictures[seed_index - first_index]))
        headers = {"Content-Type": BUNDLE_TYPE, ROUTE_HEADER: route}
        body = self._body(encode_bundle(meta, {"pictures": pack_pictures(slab), "seed_mask": seed_mask}), headers,
                          f"the upload of {len(slab)} slices")
        status = self._t.expect(self._t.request("POST", f"{P}/models/{self.model}/propagations", body, headers),
                                "starting propagation", ok=(202,)).json()
        return RemotePropagationJob(self, status, route=route)


class RemotePropagationJob(PropagationJob):
    """A propagation job running on the service; ``route``: sent with every request about it (see the module's
    docstring), so that behind a consistent-hash proxy they reach the replica that runs it."""

    def __init__(self, backend: HttpBackend, status: dict, poll_interval: float = 0.25, route: Optional[str] = None):
        self._b = backend
        self.id = status["id"]
        self.route = route or self.id
        self.poll_interval = poll_interval
        self._last = status

    def _path(self, tail: str = "") -> str:
        return f"{P}/jobs/{self.id}{tail}"

    def _request(self, method: str, tail: str, what: str) -> Reply:
        reply = self._b._t.request(method, self._path(tail), headers={ROUTE_HEADER: self.route})
        if reply.status == 404:
            detail = reply.detail()
            raise JobLostError(
                f"propagation job {self.id} (route {self.route[:12]}...) is not known to the samed service at "
                f"{self._b.url} any more ({what}: HTTP 404, {detail}): the replica that ran it stopped or restarted "
                f"(behind a proxy its requests now reach another replica), or the job was deleted or expired. Its "
                f"work is lost: start the propagation again", 404, detail)
        return self._b._t.expect(reply, what)

    def progress(self) -> JobProgress:
        self._last = self._request("GET", "", "job progress").json()
        s = self._last
        return JobProgress(s["state"], int(s.get("done", 0)), int(s.get("total", 0)), s.get("error"))

    def cancel(self) -> None:
        self._request("POST", "/cancel", "cancelling the job")

    def delete(self) -> None:
        """Cancel the job and let the service forget it (nothing to do if it has forgotten it already)."""
        try:
            self._request("DELETE", "", "deleting the job")
        except JobLostError:
            pass

    def result(self, timeout: Optional[float] = None) -> PropagationResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        p = self.progress()
        while not p.finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeoutError(f"propagation job {self.id} is still {p.state} after {timeout:g} s "
                                      f"({p.done}/{p.total} slices): call result() again, or cancel()")
            time.sleep(self.poll_interval if deadline is None else
                       max(0.0, min(self.poll_interval, deadline - time.monotonic())))
            p = self.progress()
        if p.state == FAILED:
            raise JobFailedError(f"propagation job {self.id} on {self._b.url} failed: {p.error}")
        reply = self._request("GET", "/result", "fetching the job's result")
        bundle = self._b._bundle(reply)
        indices = [int(i) for i in bundle.meta.get("indices", [])]
        masks = bundle.array("masks")
        scores = bundle.meta.get("scores", [])
        if len(masks) != len(indices) or len(scores) != len(indices):
            raise ServiceRequestError(f"job {self.id}: the result has {len(masks)} masks for {len(indices)} slices",
                                      reply.status)
        return PropagationResult(int(bundle.meta["seed_index"]), {i: masks[n] for n, i in enumerate(indices)},
                                 {i: float(scores[n]) for n, i in enumerate(indices)},
                                 {str(k): str(v) for k, v in dict(bundle.meta.get("stopped", {})).items()})
