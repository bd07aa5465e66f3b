"""The measurements of bench/bench_speed.py: one side (peer or ours) in its own process, the service, evaluate."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))

STRUCTURES = (("mr-brain-tumor", "tumor"), ("ct-abdomen", "liver"), ("ct-abdomen", "spleen"))
EVALUATE_SET = "images/us-breast-lesion"
DICE_BOUND = 0.005
TARGETS = {"encode": 3.0, "decode": 2.0, "propagation": 3.0}


# ---- helpers ---------------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def pct(values: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def object_slices(ref: np.ndarray, np_axis: int) -> np.ndarray:
    """Indices of the slices (along ``np_axis``) that hold the object."""
    moved = np.moveaxis(ref, np_axis, 0)
    return np.flatnonzero(moved.reshape(moved.shape[0], -1).any(axis=1))


def data_root(arg: Optional[str]) -> Path:
    root = Path(arg or os.environ.get("SAMED_SHARED_DATA") or ROOT.parent / "shared" / "data")
    if not (root / "volumes").is_dir():
        sys.exit(f"bench: sample data not found at {root} (pass --data or set SAMED_SHARED_DATA)")
    return root


class Timer:
    def __init__(self, sync=None):
        self.sync = sync or (lambda: None)

    def __enter__(self):
        self.sync()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.sync()
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        return False


# ---- the two sides ---------------------------------------------------------------------------------------------
def make_peer(device: str):
    """SamPredictor with samed's LiteMedSAM weights, behind the Backend interface (one set_image per encode)."""
    from segment_anything import SamPredictor

    from samed.core.backend import Backend, EmbeddingHandle, check_image, image_key
    from samed.core.prompts import Prediction
    from samed.engines.sam_engine import SamEngine

    class PeerBackend(Backend):
        wants_prefetch = False

        def __init__(self):
            self.engine = SamEngine("litemedsam", None, device)
            self.model = "litemedsam"
            self.predictor = SamPredictor(self.engine.sam)

        def info(self):
            return {"engine": "segment-anything SamPredictor (torch)", "device": self.engine.device}

        def prompt_kinds(self):
            return self.engine.prompt_kinds

        def encode(self, image_rgb):
            image_rgb = check_image(image_rgb)
            self.predictor.set_image(image_rgb)
            return EmbeddingHandle(image_key(self.model, image_rgb), self.model, tuple(image_rgb.shape[:2]))

        def decode(self, handle, prompt, multimask=None):
            box = None if prompt.box_xy is None else np.asarray(prompt.box_xy, dtype=float)
            masks, scores, logits = self.predictor.predict(box=box, multimask_output=bool(multimask))
            return Prediction(masks, scores, logits).sorted()

    return PeerBackend()


def make_ours(device: str, engine: str, prefetch: Optional[bool]):
    from samed.engines.local import LocalBackend

    return LocalBackend.create("litemedsam", None, device or None, engine=engine,
                               prefetch_in_propagation=prefetch)


def engine_label(backend) -> str:
    eng = getattr(backend, "engine", None)
    if hasattr(backend, "predictor"):
        return "peer: SamPredictor (torch)"
    kind = getattr(eng, "engine", "torch")
    info = eng.info() if eng is not None else {}
    extra = ""
    if kind in ("onnx", "openvino", "openvino-f32", "openvino-int8"):
        providers = ",".join(p.replace("ExecutionProvider", "") for p in info["providers"])
        extra = f", {info.get('precision')}, {info.get('threads')} threads, {providers}"
    reason = getattr(eng, "fallback_reason", None)
    return f"{kind} on {getattr(eng, 'device', '?')}{extra}" + (f" (fell back: {reason})" if reason else "")


def cuda_sync_for(device: str):
    if not str(device).startswith("cuda"):
        return None
    import torch

    return torch.cuda.synchronize


def load_structures(root: Path):
    from samed.core import io

    volumes = {}
    out = []
    for name, label in STRUCTURES:
        folder = root / "volumes" / name
        image = next(p for p in sorted(folder.iterdir()) if p.name.startswith("image."))
        labelf = next(p for p in sorted(folder.iterdir()) if p.name.startswith("label."))
        if name not in volumes:
            volumes[name] = io.read_volume(image)
        ref, _, _ = io.reference_mask(labelf, label)
        out.append((f"{name}/{label}", volumes[name], ref))
    return out


def run_side(side: str, args) -> Dict[str, object]:
    """One side's measurements (run in a subprocess of its own)."""
    from samed.core.metrics import dice
    from samed.core.prompts import Prompt, box_from_mask
    from samed.core.volume_session import VolumeSession
    from samed.engines.local import EmbeddingCache

    rss_start = peak_rss_mb()
    with Timer() as t_load:
        backend = make_peer(args.device) if side == "peer" else make_ours(args.device, args.engine, args.prefetch)
    device = getattr(backend.engine, "device", "cpu")
    sync = cuda_sync_for(device)
    out: Dict[str, object] = {"side": side, "engine": engine_label(backend), "load_s": t_load.wall,
                              "rss_after_load_mb": peak_rss_mb()}
    structures = load_structures(data_root(args.data))
    sessions = [(name, VolumeSession(vol, backend), ref) for name, vol, ref in structures]

    # pictures for the encode timing: distinct slices around each object's middle (ours must miss its cache)
    uniq = {}
    for name, session, ref in sessions:
        idx = object_slices(ref, session.np_axis)
        mid = int(idx[len(idx) // 2])
        for k in (mid - 1, mid, mid + 1):
            if 0 <= k < session.n_slices:
                pic = session.picture(k)
                uniq.setdefault(hashlib.sha1(pic.tobytes()).hexdigest(), pic)
    pics = list(uniq.values())[: args.encode_slices + 1]
    backend.encode(pics[0])  # warm-up (first-call allocations, lazy initialisation)
    enc_wall, enc_cpu = [], []
    for p in pics[1:]:
        with Timer(sync) as t:
            handle = backend.encode(p)
        enc_wall.append(t.wall)
        enc_cpu.append(t.cpu)
    out["encode_s"] = enc_wall
    out["encode_cpu_s"] = enc_cpu

    # decode: box prompts around the tumour on its middle slice (jittered a few pixels, fixed seed)
    name, session, ref = sessions[0]
    ref_idx = object_slices(ref, session.np_axis)
    mid = int(ref_idx[len(ref_idx) // 2])
    ref2d = np.take(ref, mid, axis=session.np_axis)
    handle = backend.encode(session.picture(mid))
    base = box_from_mask(ref2d)
    rng = np.random.default_rng(0)
    boxes = [base + rng.integers(-3, 4, size=4) for _ in range(args.decodes + 2)]
    h, w = ref2d.shape
    boxes = [np.clip(b, 0, [w - 1, h - 1, w - 1, h - 1]) for b in boxes]
    for b in boxes[:2]:  # warm-up
        backend.decode(handle, Prompt(box_xy=b), multimask=False)
    dec_wall, dec_cpu, dec_dice = [], [], []
    for b in boxes[2:]:
        with Timer(sync) as t:
            pred = backend.decode(handle, Prompt(box_xy=b), multimask=False)
        dec_wall.append(t.wall)
        dec_cpu.append(t.cpu)
        dec_dice.append(dice(pred.best, ref2d))
    out["decode_s"] = dec_wall
    out["decode_cpu_s"] = dec_cpu
    out["decode_dice"] = float(np.mean(dec_dice))

    # propagation from one box on the object's middle slice
    prop = {}
    for name, session, ref in ([] if args.no_propagation else sessions):
        if hasattr(backend, "cache"):
            backend.cache = EmbeddingCache(backend.cache.max_bytes)  # no head start from the slices above
        idx = object_slices(ref, session.np_axis)
        seed = int(idx[len(idx) // 2])
        box = box_from_mask(np.take(ref, seed, axis=session.np_axis))
        runs0 = getattr(backend, "encoder_runs", 0)
        with Timer(sync) as t:
            seed_mask = session.segment_slice(seed, Prompt(box_xy=box), multimask=False).best
            result = session.propagate(seed, seed_mask)
        vol = session.masks_to_volume(result.masks)
        prop[name] = {"wall_s": t.wall, "cpu_s": t.cpu, "dice": float(dice(vol, ref)), "slices": len(result.masks),
                      "reference_slices": int(len(idx)), "stopped": result.stopped,
                      "encodes": getattr(backend, "encoder_runs", 0) - runs0 if side == "ours" else None,
                      "mask_sha": hashlib.sha1(np.packbits(vol).tobytes()).hexdigest()[:12]}
        if args.save_masks:
            np.save(Path(args.save_masks) / f"{side}-{name.replace('/', '_')}.npy", vol)
    out["propagation"] = prop
    if getattr(args, "walk100", None) or (getattr(args, "walk100", None) is None and device.startswith("cuda")):
        if hasattr(backend, "cache"):
            backend.cache = EmbeddingCache(backend.cache.max_bytes)
        out["walk100"] = walk_100(backend, sync)
    out["peak_rss_mb"] = peak_rss_mb()
    out["rss_at_start_mb"] = rss_start
    if device.startswith("cuda"):
        import torch

        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    backend.close()
    return out


def walk_100(backend, sync=None) -> Dict[str, object]:
    """A 100-slice propagation: slicerio's CTChest4 resampled to 3x its slices (34 -> 102, linear; the body
    outline "tissue", present on every slice, nearest), one box on the middle slice, walked both ways."""
    import slicerio
    from scipy import ndimage

    from samed.core import io
    from samed.core.geometry import Volume
    from samed.core.prompts import Prompt, box_from_mask
    from samed.core.volume_session import VolumeSession

    ct = Path(slicerio.get_testdata_file("CTChest4.nrrd"))
    volume = io.read_volume(ct)
    ref = io.reference_mask(ct.parent / "Segmentation.seg.nrrd", "tissue")[0]
    zoom = [3 if a == 0 else 1 for a in range(3)]  # k (slice) axis first in the array
    array = ndimage.zoom(volume.array.astype(np.float32), zoom, order=1)
    ref3 = ndimage.zoom(ref.astype(np.uint8), zoom, order=0).astype(bool)
    spacing = np.asarray(volume.spacing_kji, dtype=float) / np.asarray(zoom, dtype=float)
    big = Volume(array, volume.ijk_to_ras @ np.diag([1.0, 1.0, 1.0 / 3, 1.0]), dict(volume.metadata))
    session = VolumeSession(big, backend, intensity_mode="minmax")
    idx = object_slices(ref3, session.np_axis)
    seed = int(idx[len(idx) // 2])
    with Timer(sync) as t:
        mask = session.segment_slice(seed, Prompt(box_xy=box_from_mask(np.take(ref3, seed, session.np_axis))),
                                     multimask=False).best
        result = session.propagate(seed, mask)
    return {"slices": len(result.masks), "of": int(session.n_slices), "wall_s": t.wall, "cpu_s": t.cpu,
            "spacing_kji": [round(float(x), 3) for x in spacing], "stopped": result.stopped}


# ---- the service -----------------------------------------------------------------------------------------------
def service_available() -> Optional[str]:
    import importlib

    for module in ("samed.client.http", "samed.cli.serve", "fastapi", "uvicorn"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"service not available ({exc})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_service(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a ``samed serve`` child: SIGTERM, and SIGKILL if it has not exited within ``timeout`` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_service(args) -> Dict[str, object]:
    """Decode latency through `samed serve` on 127.0.0.1 (the service's own default engine)."""
    from samed.client.http import HttpBackend
    from samed.core.prompts import Prompt, box_from_mask
    from samed.core.volume_session import VolumeSession

    missing = service_available()
    if missing:
        return {"skipped": missing}
    port = free_port()
    cmd = [sys.executable, "-m", "samed.cli.main", "serve", "--port", str(port), "--no-access-log",
           "--log-level", "warning"]
    if args.device:
        cmd += ["--device", args.device]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "SegmentAnythingMed") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        client = None
        while client is None:
            if proc.poll() is not None:
                return {"skipped": f"samed serve exited ({proc.returncode}): "
                                   f"{proc.stderr.read().decode(errors='replace')[-400:]}"}
            try:
                client = HttpBackend(url, model="litemedsam")
            except (RuntimeError, OSError, ValueError) as exc:  # BackendError and co.: not up yet
                if time.time() > deadline:
                    return {"skipped": f"samed serve did not answer within 300 s ({exc})"}
                time.sleep(0.5)
        structures = load_structures(data_root(args.data))
        name, vol, ref = structures[0]
        session = VolumeSession(vol, client)
        idx = object_slices(ref, session.np_axis)
        mid = int(idx[len(idx) // 2])
        ref2d = np.take(ref, mid, axis=session.np_axis)
        with Timer() as t_enc:
            handle = client.encode(session.picture(mid))
        base = box_from_mask(ref2d)
        rng = np.random.default_rng(0)
        h, w = ref2d.shape
        walls = []
        for i in range(args.decodes + 2):
            b = np.clip(base + rng.integers(-3, 4, size=4), 0, [w - 1, h - 1, w - 1, h - 1])
            with Timer() as t:
                client.decode(handle, Prompt(box_xy=b), multimask=False)
            if i >= 2:
                walls.append(t.wall)
        info = client.info().get("models", {}).get("litemedsam", {})
        client.close()
        return {"encode_s": t_enc.wall, "decode_s": walls,
                "engine": info.get("engine", "as the service chooses (its info does not say)"),
                "device": info.get("device")}
    finally:
        stop_service(proc)


# ---- samed evaluate --------------------------------------------------------------------------------------------
def run_evaluate(args, engine: str) -> Dict[str, object]:
    dataset = data_root(args.data) / EVALUATE_SET
    out = Path(tempfile.mkdtemp(prefix=f"samed-bench-eval-{engine}-"))
    env = dict(os.environ, SAMED_ENGINE=engine,
               PYTHONPATH=str(ROOT / "SegmentAnythingMed") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    base = [sys.executable, "-m", "samed.cli.main", "evaluate", str(dataset), "--prompt", "box-all", "--out", str(out)]
    if args.device:
        base += ["--device", args.device]
    t0 = time.perf_counter()
    proc = None
    for extra in (["--no-report", "--bootstrap", "0", "--restart"], []):  # the options of the current CLI first
        proc = subprocess.run(base + extra, capture_output=True, text=True, env=env)
        if proc.returncode == 0:
            break
    seconds = time.perf_counter() - t0
    try:
        if proc is None or proc.returncode != 0:
            return {"error": (proc.stderr if proc else "")[-600:]}
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        return {"dice": float(summary["mean"]["dice"]), "seconds": seconds}
    finally:
        shutil.rmtree(out, ignore_errors=True)
