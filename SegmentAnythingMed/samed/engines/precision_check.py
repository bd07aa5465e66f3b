"""The check a reduced-precision encoder must pass before it is used: what users see, against float32.

A check on one picture (mask pixels agreeing) is not enough: propagation prompts each slice from the mask of the
slice before it, so small differences compound along a walk, and bfloat16 kernels differ between CPUs (AMX on
Intel, AVX512-BF16 on AMD Zen 4). On a Zen 4 CPU the former one-picture check passed (99.95 % of mask pixels)
while the spleen of ct-abdomen, propagated, moved 0.0109 in 3D Dice against the reference (bound 0.005).

So the check runs, on data every install has (slicerio's ``CTChest4.nrrd`` and its Slicer segmentation
``Segmentation.seg.nrrd``), with the candidate encoder and with the float32 graph through the same decoder:

- short propagation walks (``core.propagation``, its default rules) of :data:`WALK_STRUCTURES` from one box on
  slice :data:`SEED_SLICE`, at most :data:`WALK_STEPS` slices each way; the 3D Dice of each walk against the
  reference segment;
- box prompts (a box around the reference on :data:`BOX_SLICES`) on the same structures; the mean 2D Dice per
  structure against the reference,

and accepts the candidate only if every one of those Dice values is within :data:`DICE_BOUND` of float32's (the
bound the speed benchmark holds the engine to against torch; ONNX Runtime float32 equals torch to rounding).
Every slice is encoded once per encoder (13 slices), so the check costs about 13 float32 encodes + 13 candidate
encodes + ~100 decodes: 15-30 s on a 2-core CPU, once per CPU model, graph and runtime version (the caller caches
the result; later starts read it).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..core.backend import Backend, EmbeddingHandle, check_image, image_key

log = logging.getLogger(__name__)

DICE_BOUND = 0.005
CHECK_VERSION = 2  # 1: one picture, mask-pixel agreement; 2: walks and boxes on CTChest4
SEED_SLICE = 20  # CTChest4 axial slice where every structure below is present (the README demo's slice)
WALK_STEPS = 6  # slices walked each way from the seed
BOX_SLICES = (17, 20, 23)
WALK_STRUCTURES = ("right lung", "left lung", "thoracic vertebral column", "tissue")
INTENSITY = "minmax"  # as the README demo on CTChest4


class CheckData:
    """CTChest4 (slicerio's test data): the volume and the reference masks of :data:`WALK_STRUCTURES`."""

    def __init__(self):
        import slicerio

        from ..core import io

        ct = Path(slicerio.get_testdata_file("CTChest4.nrrd"))
        seg = ct.parent / "Segmentation.seg.nrrd"
        self.volume = io.read_volume(ct)
        self.references = {}
        for name in WALK_STRUCTURES:
            mask, _, _ = io.reference_mask(seg, name)
            if mask.shape != self.volume.array.shape[:3]:
                raise ValueError(f"{seg}: segment {name!r} has shape {mask.shape}, the CT {self.volume.array.shape}")
            self.references[name] = mask.astype(bool)


class _EncodeOnce(Backend):
    """A minimal in-process backend over one engine: each slice encoded once (kept for the whole check)."""

    def __init__(self, engine):
        self.engine = engine
        self.model = engine.name
        self._embeddings: Dict[str, object] = {}
        self.encodes = 0
        self.encode_s = 0.0
        self.encode_cpu: List[float] = []  # CPU seconds (time.process_time) of each encode, in order

    def info(self):
        return {"engine": getattr(self.engine, "engine", "?")}

    def prompt_kinds(self):
        return self.engine.prompt_kinds

    def encode(self, image_rgb: np.ndarray) -> EmbeddingHandle:
        image_rgb = check_image(image_rgb)
        key = image_key(self.model, image_rgb)
        if key not in self._embeddings:
            t0, c0 = time.perf_counter(), time.process_time()
            self._embeddings[key] = self.engine.encode(image_rgb)
            self.encode_cpu.append(time.process_time() - c0)
            self.encode_s += time.perf_counter() - t0
            self.encodes += 1
        return EmbeddingHandle(key, self.model, tuple(image_rgb.shape[:2]))

    def decode(self, handle, prompt, multimask=None, mask_threshold=None):
        return self.engine.decode(self._embeddings[handle.key], prompt, multimask, mask_threshold=mask_threshold)

    def mask_threshold(self):
        return self.engine.spec.mask_threshold


def measure(engine, data: Optional[CheckData] = None) -> Tuple[Dict[str, float], Dict[str, float]]:
    """({"walk <structure>": 3D Dice, ...}, {"boxes <structure>": mean 2D Dice, ...}) of ``engine`` against the
    reference segments of CTChest4; plus the encode statistics under ``"_encodes"`` / ``"_encode_s"`` /
    ``"_encode_cpu_median"`` (median CPU seconds per encode after the first: what an encoder's speed is judged
    by, the machine being shared)."""
    from ..core.metrics import dice
    from ..core.prompts import Prompt, box_from_mask
    from ..core.propagation import PropagationSettings
    from ..core.volume_session import VolumeSession

    data = data or CheckData()
    backend = _EncodeOnce(engine)
    session = VolumeSession(data.volume, backend, intensity_mode=INTENSITY)
    walks, boxes = {}, {}
    for name, ref in data.references.items():
        ref_slices = np.moveaxis(ref, session.np_axis, 0)
        seed_ref = ref_slices[SEED_SLICE]
        seed_mask = session.segment_slice(SEED_SLICE, Prompt(box_xy=box_from_mask(seed_ref)), multimask=False).best
        if seed_mask.any():
            walk = session.propagate(SEED_SLICE, seed_mask, PropagationSettings(max_slices=WALK_STEPS))
            masks = walk.masks
        else:
            masks = {SEED_SLICE: seed_mask}
        lo, hi = SEED_SLICE - WALK_STEPS, SEED_SLICE + WALK_STEPS  # the walk's reach: Dice within it
        window = [slice(None)] * 3
        window[session.np_axis] = slice(lo, hi + 1)
        walks[f"walk {name}"] = float(dice(session.masks_to_volume(masks)[tuple(window)], ref[tuple(window)]))
        per_box = [dice(session.segment_slice(k, Prompt(box_xy=box_from_mask(ref_slices[k])), multimask=False).best,
                        ref_slices[k]) for k in BOX_SLICES]
        boxes[f"boxes {name}"] = float(np.mean(per_box))
    later = backend.encode_cpu[1:] or backend.encode_cpu  # the first encode of a session includes its warm-up
    stats = {"_encodes": backend.encodes, "_encode_s": backend.encode_s,
             "_encode_cpu_median": float(np.median(later)) if later else 0.0}
    return {**walks, **boxes}, stats


def with_encoder(engine, encoder):
    """A shallow copy of an ONNX engine that runs ``encoder`` (same decoder sessions, same preprocessing)."""
    twin = copy.copy(engine)
    twin._encoder = encoder
    return twin


_REFERENCE: Dict[tuple, tuple] = {}  # float32's measures per graph (several candidates checked in one process)


def compare(candidate, reference, bound: Optional[float] = None, data: Optional[CheckData] = None,
            reference_key: Optional[tuple] = None) -> dict:
    """Run :func:`measure` with both engines; the result dict (JSON-ready): per measure the Dice of each and the
    difference, ``passed`` (every difference <= ``bound``, default :data:`DICE_BOUND`), ``why`` when not,
    ``seconds``. ``reference_key`` (e.g. the float32 graph's SHA-256): measure the reference once per process."""
    bound = DICE_BOUND if bound is None else float(bound)
    t0 = time.perf_counter()
    data = data or CheckData()
    key = (reference_key, CHECK_VERSION) if reference_key is not None else None
    if key is not None and key in _REFERENCE:
        ref_dice, ref_stats = _REFERENCE[key]
    else:
        ref_dice, ref_stats = measure(reference, data)
        if key is not None:
            _REFERENCE[key] = (ref_dice, ref_stats)
    cand_dice, cand_stats = measure(candidate, data)
    diffs = {k: abs(cand_dice[k] - ref_dice[k]) for k in ref_dice}
    worst = max(diffs, key=diffs.get)
    over = [f"{k}: Dice {cand_dice[k]:.4f} vs float32 {ref_dice[k]:.4f} (|diff| {diffs[k]:.4f})"
            for k in diffs if diffs[k] > bound]
    result = {"data": "slicerio CTChest4.nrrd + Segmentation.seg.nrrd",
              "dice_bound": bound,
              "measures": {k: {"float32": round(ref_dice[k], 5), "candidate": round(cand_dice[k], 5),
                               "abs_diff": round(diffs[k], 5)} for k in ref_dice},
              "worst": worst, "worst_abs_diff": round(diffs[worst], 5),
              "encodes": cand_stats["_encodes"],
              "encode_s": {"float32": round(ref_stats["_encode_s"], 2), "candidate": round(cand_stats["_encode_s"], 2)},
              "encode_cpu_s": {"float32": round(ref_stats.get("_encode_cpu_median", 0.0), 4),
                               "candidate": round(cand_stats.get("_encode_cpu_median", 0.0), 4)},
              "seconds": round(time.perf_counter() - t0, 1),
              "passed": not over}
    if over:
        result["why"] = (f"on CTChest4 its masks leave the accuracy bound (Dice within {bound} of float32): "
                         + "; ".join(over))
    return result


def check_reduced_precision(engine, candidate_encoder, float32_factory: Callable[[], object],
                            bound: Optional[float] = None) -> dict:
    """:func:`compare` of ``engine`` running ``candidate_encoder`` against ``engine`` running the float32 graph
    (``float32_factory()``, opened only here, when the result is not cached)."""
    sha = getattr(engine, "manifest", {}).get("files", {}).get("encoder", {}).get("sha256")
    return compare(with_encoder(engine, candidate_encoder), with_encoder(engine, float32_factory()), bound,
                   reference_key=sha)


def summary(result: dict) -> List[str]:
    """One line per measure, for logs and reports."""
    return [f"{k:34s} float32 {m['float32']:.4f}  candidate {m['candidate']:.4f}  |diff| {m['abs_diff']:.4f}"
            for k, m in result.get("measures", {}).items()]


def cached_verdict(sidecar: Path, key: dict, run_check: Callable[[], dict], what: str, refusal) -> dict:
    """The verdict of the check on ``what`` (e.g. "bfloat16 encoder"): read from ``sidecar`` when it was made
    under the same ``key`` (CPU, graph, runtime versions, layout, check version, bound), else ``run_check()``
    and written there (whole or not at all). A refusal (cached or not) raises ``refusal`` with the measures that
    failed; a pass returns the verdict with ``cached`` set."""
    try:
        cached = json.loads(Path(sidecar).read_text(encoding="utf-8"))
        if cached.get("key") == key:
            result = dict(cached["result"], cached=True)
            if not result.get("passed"):
                raise refusal(result.get("why", f"the {what} failed its check"))
            return result
    except (OSError, ValueError, KeyError):
        pass
    log.warning("checking the %s against float32 on CTChest4 (once per CPU, graph and runtime version; about a "
                "minute) ...", what)
    try:
        result = run_check()
    except (ImportError, OSError, ValueError, KeyError) as exc:  # the check data cannot be read: do not trust it
        raise refusal(f"the {what} could not be checked ({type(exc).__name__}: {exc})") from exc
    if result["passed"]:
        log.info("%s checked in %.1f s: every Dice within %s of float32 (worst %s: %.4f)", what,
                 result["seconds"], result["dice_bound"], result["worst"], result["worst_abs_diff"])
    else:
        log.warning("%s refused after a %.1f s check: %s", what, result["seconds"], result["why"])
    try:
        tmp = Path(sidecar).with_name(Path(sidecar).name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "result": result}, indent=1), encoding="utf-8")
        os.replace(tmp, sidecar)
    except OSError as exc:
        log.debug("could not cache the check of the %s in %s: %s", what, sidecar, exc)
    if not result["passed"]:
        raise refusal(result["why"])
    return dict(result, cached=False)


def verdict_summary(result: Optional[dict]) -> Optional[dict]:
    """The part of a verdict users see (service info, logs): passed, bound, worst measure, why, cached."""
    if not result:
        return None
    keys = ("passed", "dice_bound", "worst", "worst_abs_diff", "why", "cached", "seconds")
    return {k: result[k] for k in keys if k in result}
