"""The HTTP API (version 1). Routes, wire formats and status codes are summarised in docs/service.md; the
OpenAPI description is served at ``/openapi.json`` (browsable at ``/docs``).

Every error is JSON ``{"detail": "..."}`` with a 4xx status saying what to do: 400 malformed body, 401 token,
404 unknown model / embedding key / job, 409 job not finished, 413 too large, 415 wrong media type, 422 invalid
content (shape, dtype, prompt outside the slice, settings), 429 too many jobs. A 500 is a bug in the service.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Optional

import numpy as np
import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware

from .. import __version__
from ..core.backend import BackendError, EmbeddingHandle, check_image, image_key
from ..core.prompts import Prompt, PromptError
from .auth import TokenGuard
from .config import ServiceConfig
from .jobs import FAILED, FINISHED, JobManager, JobNotFound, TooManyJobs
from .budget import MemoryBudget
from .limits import BodyLimit
from .registry import ModelRegistry, UnknownModel
from .schemas import DecodeRequest, EmbeddingInfo, Health, Info, JobStatus, PropagationMeta, to_settings
from .uploads import Upload, read_upload, upload_media
from .wire import (API_PREFIX, API_VERSION, BUNDLE_TYPE, KEY_HEADER, KEY_PATTERN, NPY_TYPE, BundleLayout, WireError,
                   decode_bundle, decode_npy, encode_bundle, mask_from_json, unpack_pictures)

log = logging.getLogger("samed.service")
P = API_PREFIX
_BINARY = {"schema": {"type": "string", "format": "binary"}}
BUNDLE_BODY = {"requestBody": {"required": True, "content": {BUNDLE_TYPE: _BINARY}}}
PICTURE_BODY = {"requestBody": {"required": True, "content": {BUNDLE_TYPE: _BINARY, NPY_TYPE: _BINARY}}}
BUNDLE_RESPONSE = {200: {"content": {BUNDLE_TYPE: _BINARY}, "description": "a samed bundle (see wire.py)"}}


def _check_key(key: str) -> None:
    if not KEY_PATTERN.match(key):
        raise HTTPException(422, f"{key[:60]!r} is not a samed embedding key (40 hex digits from "
                                 f"samed.core.backend.image_key)")


def _not_cached(model: str, key: str) -> HTTPException:
    return HTTPException(404, f"embedding {key[:12]}... of model {model} is not cached here (never encoded, or "
                              f"evicted from the cache): encode the slice again (POST {P}/models/{model}/embeddings)")


def _validation_message(errors) -> str:
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts)[:2000] or "invalid request"


def create_app(registry: ModelRegistry, config: Optional[ServiceConfig] = None,
               jobs: Optional[JobManager] = None) -> FastAPI:
    cfg = config or ServiceConfig()
    jobs = jobs or JobManager(cfg.job_workers, cfg.max_active_jobs, cfg.job_keep_seconds, cfg.max_kept_jobs)
    budget = MemoryBudget(cfg.max_upload_memory_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        jobs.shutdown()
        registry.close()

    app = FastAPI(title="samed model service", version=__version__, lifespan=lifespan,
                  description="Segment Anything (SAM, MedSAM, LiteMedSAM) for medical images: encode a slice once, "
                              "decode prompts against it, propagate masks through a volume. Arrays travel as "
                              f"samed bundles ({BUNDLE_TYPE}), never as JSON lists.")
    app.state.registry, app.state.config, app.state.jobs, app.state.budget = registry, cfg, jobs, budget
    app.add_middleware(GZipMiddleware, minimum_size=4096, compresslevel=1)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes, max_json_bytes=cfg.max_json_bytes,
                       body_timeout_s=cfg.body_timeout_s, body_deadline_s=cfg.body_deadline_s, budget=budget,
                       wait_s=cfg.upload_wait_s)
    app.add_middleware(TokenGuard, token=cfg.token)

    # ---- errors: always {"detail": "..."} ------------------------------------------------------------------
    def _json(status: int, detail: str, headers=None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        return _json(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request, exc: RequestValidationError):
        return _json(422, _validation_message(exc.errors()))

    @app.exception_handler(pydantic.ValidationError)
    async def _validation(request, exc: pydantic.ValidationError):
        return _json(422, _validation_message(exc.errors()))

    @app.exception_handler(WireError)
    async def _wire(request, exc: WireError):
        return _json(exc.status, str(exc))

    @app.exception_handler(PromptError)
    async def _prompt(request, exc: PromptError):
        return _json(422, str(exc))

    @app.exception_handler(UnknownModel)
    async def _unknown_model(request, exc: UnknownModel):
        return _json(404, str(exc.args[0]))

    @app.exception_handler(JobNotFound)
    async def _unknown_job(request, exc: JobNotFound):
        return _json(404, str(exc.args[0]))

    @app.exception_handler(TooManyJobs)
    async def _busy(request, exc: TooManyJobs):
        return _json(429, str(exc), {"Retry-After": "5"})

    # ---- discovery -------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def root():
        return {"service": "samed", "version": __version__, "api_versions": [API_VERSION], "docs": "/docs"}

    @app.get(f"{P}/health", response_model=Health, tags=["service"])
    def health():
        """Liveness and API version (no token needed)."""
        return {"status": "ok", "service": "samed", "version": __version__, "api_version": API_VERSION}

    @app.get(f"{P}/info", response_model=Info, tags=["service"])
    def info():
        """Models and the prompt kinds each takes, device, cache and job state, limits."""
        out = registry.info()
        out.update(status="ok", jobs=jobs.stats(), auth="token" if cfg.token else "none",
                   limits={"max_body_bytes": cfg.max_body_bytes, "max_side": cfg.max_side,
                           "max_slab_slices": cfg.max_slab_slices, "max_points": cfg.max_points,
                           "max_json_bytes": cfg.max_json_bytes, "max_upload_memory_bytes": cfg.max_upload_memory_bytes,
                           "max_connections": cfg.max_connections, "header_timeout_s": cfg.header_timeout_s,
                           "body_timeout_s": cfg.body_timeout_s, "body_deadline_s": cfg.body_deadline_s,
                           "upload_wait_s": cfg.upload_wait_s},
                   uploads=budget.stats())
        return out

    # ---- embeddings ------------------------------------------------------------------------------------------
    @app.api_route(P + "/models/{model}/embeddings/{key}", methods=["GET", "HEAD"], response_model=EmbeddingInfo,
                   tags=["embeddings"])
    def embedding(model: str, key: str):
        """Is this slice cached? (200, or 404: upload it). The key is ``image_key(model, picture)``."""
        backend = registry.get(model)
        _check_key(key)
        emb = backend.cache.get(key)
        if emb is None:
            raise _not_cached(model, key)
        return {"key": key, "model": model, "shape_hw": list(emb.original_size)}

    def _check_side(h: int, w: int, what: str) -> None:
        if min(h, w) < 1 or max(h, w) > cfg.max_side:
            raise HTTPException(422, f"{what} is {h} x {w} pixels; this service takes 1..{cfg.max_side} pixels per "
                                     f"side: send a smaller slice (or start the service with a larger max side)")

    def _check_picture_layout(layout) -> int:
        """Refuse an encode upload by its declared picture; the bytes of its RGB copy if it is grey."""
        if isinstance(layout, BundleLayout):
            specs = {a.name: a for a in layout.arrays}
            if "image" not in specs:
                raise WireError(f"the body has no array named 'image' (it has: {', '.join(specs) or 'none'})", 422)
            dtype, shape = specs["image"].dtype, list(specs["image"].shape)
        else:
            dtype, shape = layout.dtype.name, list(layout.shape)
        if dtype != "uint8" or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
            raise HTTPException(422, f"a slice to encode must be (H, W, 3) uint8 RGB (or (H, W) grey), got {dtype} "
                                     f"{shape}")
        _check_side(shape[0], shape[1], "the picture")
        return 3 * shape[0] * shape[1] if len(shape) == 2 else 0

    def _encode(backend, upload: Upload, headers) -> dict:
        if isinstance(upload.layout, BundleLayout):
            arr = decode_bundle(upload.body, cfg.max_body_bytes).array("image")
        else:
            arr = decode_npy(upload.body, cfg.max_body_bytes)
        if arr.ndim == 2 and arr.dtype == np.uint8:
            arr = unpack_pictures(arr, 3)
        image = check_image(arr, cfg.max_side)
        backend.engine.input_size_for(image.shape[:2])  # PromptError (422) if the model's resize cannot take it
        key = image_key(backend.model, image)
        claimed = headers.get(KEY_HEADER)
        if claimed is not None and claimed != key:
            raise HTTPException(422, f"the uploaded picture's key is {key}, the request said {claimed[:60]}: the "
                                     f"picture changed in transit or the client computes keys differently")
        was_cached = key in backend.cache
        handle = backend.encode(image)
        return {"key": handle.key, "model": handle.model, "shape_hw": list(handle.shape_hw),
                "encoded_now": not was_cached}

    @app.post(P + "/models/{model}/embeddings", response_model=EmbeddingInfo, tags=["embeddings"],
              openapi_extra=PICTURE_BODY)
    async def encode(model: str, request: Request):
        """Encode one (H, W, 3) uint8 slice (``image`` in a bundle, or a .npy body); a cached slice is not
        encoded again. An ``X-Samed-Key`` header, if sent, must equal the picture's key."""
        backend = registry.get(model)
        npy = upload_media(request.headers, allow_npy=True)
        upload = await read_upload(request, cfg, budget, npy, _check_picture_layout)
        try:
            return await run_in_threadpool(_encode, backend, upload, request.headers)
        finally:
            upload.reservation.release()

    @app.post(P + "/models/{model}/embeddings/{key}/decode", response_class=Response, tags=["embeddings"],
              responses=BUNDLE_RESPONSE)
    def decode(model: str, key: str, req: DecodeRequest):
        """Candidate masks for a prompt on an encoded slice: a bundle with ``masks`` (K, H, W) bool (bit-packed),
        optionally ``low_res_logits``, and ``meta.scores`` (K,), best first."""
        backend = registry.get(model)
        _check_key(key)
        emb = backend.cache.get(key)
        if emb is None:
            raise _not_cached(model, key)
        n_points = len(req.include_points_xy) + len(req.exclude_points_xy)
        if n_points > cfg.max_points:
            raise HTTPException(422, f"{n_points} points in one prompt; this service takes at most {cfg.max_points}")
        mask = None
        if req.mask is not None:
            mask = mask_from_json(req.mask.shape, req.mask.bits_b64, cfg.max_side ** 2)
        prompt = Prompt(req.include_points_xy, req.exclude_points_xy, req.box_xy, mask)
        prompt.validate(emb.original_size)
        try:
            pred = backend.decode(EmbeddingHandle(key, model, tuple(emb.original_size)), prompt, req.multimask,
                                  mask_threshold=req.mask_threshold)
        except BackendError:  # evicted between the lookup and the decode
            raise _not_cached(model, key) from None
        registry.count_decode(model)
        arrays = {"masks": pred.masks}
        if req.logits and pred.low_res_logits is not None:
            arrays["low_res_logits"] = pred.low_res_logits.astype(np.float32)
        meta = {"scores": [float(s) for s in pred.scores], "key": key, "model": model,
                "shape_hw": list(emb.original_size)}
        return Response(encode_bundle(meta, arrays), media_type=BUNDLE_TYPE)

    # ---- propagation jobs ------------------------------------------------------------------------------------
    def _check_slab_layout(layout) -> int:
        """Refuse a propagation upload by its declared arrays; the bytes the route allocates from them."""
        specs = {a.name: a for a in layout.arrays}
        if "pictures" not in specs:
            raise WireError(f"the body has no array named 'pictures' (it has: {', '.join(specs) or 'none'})", 422)
        pics = specs["pictures"]
        shape = list(pics.shape)
        if pics.dtype != "uint8" or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] != 3):
            raise HTTPException(422, f"pictures must be (N, H, W, 3) uint8 (or (N, H, W) grey), got "
                                     f"{pics.dtype} {shape}")
        if not 1 <= shape[0] <= cfg.max_slab_slices:
            raise HTTPException(422, f"{shape[0]} pictures: send 1..{cfg.max_slab_slices} slices per propagation")
        _check_side(shape[1], shape[2], "each picture")
        n_pixels = shape[0] * shape[1] * shape[2]
        seed_bytes = 2 * shape[1] * shape[2]  # the seed mask's bits unpacked, and its copy in the job
        return (3 * n_pixels if len(shape) == 3 else 0) + seed_bytes

    def _start_job(backend, upload: Upload, headers) -> dict:
        bundle = decode_bundle(upload.body, cfg.max_body_bytes)
        meta = PropagationMeta.model_validate(bundle.meta)
        pics = bundle.array("pictures")
        if pics.dtype != np.uint8 or pics.ndim not in (3, 4) or (pics.ndim == 4 and pics.shape[3] != 3):
            raise HTTPException(422, f"pictures must be (N, H, W, 3) uint8 (or (N, H, W) grey), got "
                                     f"{pics.dtype} {list(pics.shape)}")
        pics = unpack_pictures(pics, 4)
        n, h, w = pics.shape[:3]
        backend.engine.input_size_for((h, w))  # PromptError (422): a slice too thin for the model's resize
        seed_mask = bundle.array("seed_mask")
        if seed_mask.dtype != bool or seed_mask.shape != (h, w):
            raise HTTPException(422, f"seed_mask must be a bool array of the slices' shape {(h, w)}, got "
                                     f"{seed_mask.dtype} {list(seed_mask.shape)}")
        if not seed_mask.any():
            raise HTTPException(422, "the seed mask is empty: nothing to propagate")
        first = meta.first_index
        n_slices = meta.n_slices if meta.n_slices is not None else first + n
        if first + n > n_slices:
            raise HTTPException(422, f"pictures cover slices {first}..{first + n - 1} but the volume has {n_slices}")
        if not first <= meta.seed_index < first + n:
            raise HTTPException(422, f"seed slice {meta.seed_index} is not among the pictures sent "
                                     f"(slices {first}..{first + n - 1})")
        settings = to_settings(meta.settings)
        try:
            settings.validate()
        except ValueError as exc:
            raise HTTPException(422, f"propagation settings: {exc}") from None
        box = meta.seed_box_xy
        if box is not None and not (np.all(np.isfinite(box)) and box[0] <= box[2] and box[1] <= box[3]):
            raise HTTPException(422, f"seed_box_xy must be four finite numbers x0, y0, x1, y1 with x0 <= x1 and "
                                     f"y0 <= y1 (the box drawn on the seed slice, in pixels), got {box}")
        if settings.index_range is not None and not settings.index_range[0] <= meta.seed_index \
                <= settings.index_range[1]:
            raise HTTPException(422, f"seed slice {meta.seed_index} is outside index_range {settings.index_range}")
        directions = list(dict.fromkeys(meta.directions))
        pics = np.ascontiguousarray(pics)
        seed_mask = np.array(seed_mask, dtype=bool)
        # the job keeps its slab until it ends, then its result until it is forgotten: that part of the
        # upload's reservation goes with it
        held = upload.reservation.split(pics.nbytes + seed_mask.nbytes)
        try:
            job = jobs.submit(backend, pics, first, n_slices, meta.seed_index, seed_mask, settings, directions,
                              memory=held, seed_box=None if box is None else np.array(box, float))
        except BaseException:
            held.release()
            raise
        return job.snapshot()

    @app.post(P + "/models/{model}/propagations", status_code=202, response_model=JobStatus, tags=["propagation"],
              openapi_extra=BUNDLE_BODY)
    async def start_propagation(model: str, request: Request):
        """Start propagating ``seed_mask`` from ``meta.seed_index`` through ``pictures`` (slices
        ``first_index`` ..): a bundle with meta :class:`PropagationMeta`. Poll the returned job."""
        backend = registry.get(model)
        upload_media(request.headers, allow_npy=False)
        upload = await read_upload(request, cfg, budget, False, _check_slab_layout)
        try:
            return await run_in_threadpool(_start_job, backend, upload, request.headers)
        finally:
            upload.reservation.release()

    @app.get(P + "/jobs/{job_id}", response_model=JobStatus, tags=["propagation"])
    def job_status(job_id: str):
        """State (queued, running, done, cancelled, failed), slices done of total, stop reasons when finished."""
        return jobs.get(job_id).snapshot()

    @app.post(P + "/jobs/{job_id}/cancel", response_model=JobStatus, tags=["propagation"])
    def cancel_job(job_id: str):
        """Ask the job to stop after the current slice; its result keeps the slices reached."""
        return jobs.cancel(job_id).snapshot()

    @app.delete(P + "/jobs/{job_id}", response_model=JobStatus, tags=["propagation"])
    def delete_job(job_id: str):
        """Cancel the job and forget it and its result."""
        return jobs.delete(job_id).snapshot()

    @app.get(P + "/jobs/{job_id}/result", response_class=Response, tags=["propagation"], responses=BUNDLE_RESPONSE)
    def job_result(job_id: str):
        """The masks of a finished job: a bundle with ``masks`` (M, H, W) bool and ``meta`` (indices, scores,
        stopped: direction -> rule that ended the walk)."""
        job = jobs.get(job_id)
        if job.state not in FINISHED:
            raise HTTPException(409, f"job {job_id} is {job.state} ({job.done}/{job.total} slices): poll "
                                     f"GET {P}/jobs/{job_id} until it has finished")
        if job.state == FAILED or job.result is None:
            raise HTTPException(409, f"job {job_id} failed: {job.error}")
        r = job.result
        indices = sorted(r.masks)
        meta = {"state": job.state, "seed_index": r.seed_index, "indices": [int(i) for i in indices],
                "scores": [float(r.scores.get(i, 0.0)) for i in indices], "stopped": dict(r.stopped)}
        masks = np.stack([r.masks[i] for i in indices]).astype(bool)
        return Response(encode_bundle(meta, {"masks": masks}), media_type=BUNDLE_TYPE)

    def _openapi():
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            if cfg.token:
                schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = _openapi
    return app
