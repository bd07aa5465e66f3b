#!/usr/bin/env python
"""Speed benchmark (issue 6): the peer loop against samed's fastest engine, same inputs, same run.

peer  = segment-anything's ``SamPredictor`` with the same LiteMedSAM weights: one ``set_image`` per slice, one
        ``predict`` per prompt (what peer tools do slice by slice).
ours  = samed's in-process backend with ``--engine`` (default "auto": the fastest engine that passes its check).

Each side runs in its own subprocess (one after the other), so its peak memory (VmHWM) is its own. Measured:

- slice encode: ``set_image`` vs ``backend.encode`` of distinct slices (after one warm-up), median and p95;
- prompt decode: ``predict`` vs ``backend.decode`` of box prompts on one encoded slice, p50 / p95; and, when the
  service exists (``samed serve`` + ``samed.client.http.HttpBackend``), through the service on 127.0.0.1;
- propagation: one box on the middle slice of the object -> its mask -> ``core.propagation.propagate`` through the
  volume (the same walk and stopping rules for both; the peer behind a small Backend adapter), wall time from
  the box to the finished walk, 3D Dice against the reference label;
- ``samed evaluate us-breast-lesion --prompt box-all`` mean Dice with the torch engine and with ours.

Times are wall-clock seconds; ``cpu`` columns are the process's CPU seconds, a second view that moves less when
other programs load the machine. Run: ``python bench/bench_speed.py`` (``--help`` for options). CUDA is used
when present (``--device cpu`` to stay on the CPU).
"""
from __future__ import annotations

import argparse
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
    if kind == "onnx":
        extra = f", {info.get('threads')} threads, {','.join(p.replace('ExecutionProvider', '') for p in info['providers'])}"
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
    out["peak_rss_mb"] = peak_rss_mb()
    out["rss_at_start_mb"] = rss_start
    if device.startswith("cuda"):
        import torch

        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    backend.close()
    return out


# ---- the service -----------------------------------------------------------------------------------------------
def service_available() -> Optional[str]:
    try:
        from samed.client.http import HttpBackend  # noqa: F401
        from samed.cli import serve  # noqa: F401
    except ImportError as exc:
        return f"service not available ({exc})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


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


# ---- orchestration and report ----------------------------------------------------------------------------------
def child(side: str, args) -> Dict[str, object]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--engine", args.engine,
           "--decodes", str(args.decodes), "--encode-slices", str(args.encode_slices)]
    for opt in ("data", "device", "save_masks", "threads"):
        if getattr(args, opt):
            cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if args.prefetch is not None:
        cmd += ["--prefetch" if args.prefetch else "--no-prefetch"]
    if args.no_propagation:
        cmd += ["--no-propagation"]
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                   SAMED_ORT_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"bench: the {side} side failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_ratio(peer: float, ours: float) -> str:
    return f"{peer / ours:5.2f}x" if ours > 0 else "   n/a"


def verdict(ratio: float, target: float) -> str:
    return f"target >= {target:g}x: {'MET' if ratio >= target else f'NOT MET ({ratio / target:.0%} of it)'}"


def propagation_rows(w, peer: dict, ours: dict, ratios: dict) -> None:
    w("propagation from one box on the middle slice (wall s; 3D Dice vs the reference label)")
    w(f"{'structure':24s} {'peer s':>8s} {'ours s':>8s} {'ratio':>7s} {'peer cpu':>9s} {'ours cpu':>9s} "
      f"{'slices':>9s} {'peer Dice':>9s} {'ours Dice':>9s} {'|diff|':>7s}")
    worst = float("inf")
    dice_ok = True
    for name, p in peer["propagation"].items():
        o = ours["propagation"][name]
        r = p["wall_s"] / o["wall_s"]
        worst = min(worst, r)
        d = abs(p["dice"] - o["dice"])
        dice_ok &= d <= DICE_BOUND
        w(f"{name:24s} {p['wall_s']:8.2f} {o['wall_s']:8.2f} {r:6.2f}x {p['cpu_s']:9.2f} {o['cpu_s']:9.2f} "
          f"{p['slices']:>3d}/{o['slices']:<3d}/{p['reference_slices']:<2d} {p['dice']:9.4f} {o['dice']:9.4f} {d:7.4f}"
          + ("" if p["mask_sha"] != o["mask_sha"] else "  (identical masks)"))
    w(f"{'':24s} slices = peer/ours/reference slices holding the object")
    ratios["propagation"] = worst
    w(f"propagation, worst structure: {worst:.2f}x   {verdict(worst, TARGETS['propagation'])}")
    w(f"Dice within {DICE_BOUND} of the torch reference (the peer runs the same torch model) on every structure: "
      f"{'MET' if dice_ok else 'NOT MET'}")


def report(peer: dict, ours: dict, service: Optional[dict], evaluate: Optional[dict], args) -> str:
    lines = []
    w = lines.append
    import platform

    w(f"samed speed benchmark  {time.strftime('%Y-%m-%d %H:%M')}  python {platform.python_version()}  "
      f"{os.cpu_count()} logical CPUs  load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    w(f"peer: {peer['engine']}    ours: {ours['engine']}"
      + (f"    threads: {args.threads} on both sides" if args.threads else ""))
    w(f"model load: peer {peer['load_s']:.1f} s, ours {ours['load_s']:.1f} s (from the export cache)")
    w("")
    w(f"{'':34s} {'peer':>10s} {'ours':>10s} {'peer/ours':>10s}")

    def row(label, p, o, target=None):
        ratio = p / o if o > 0 else float("nan")
        tail = f"   {verdict(ratio, target)}" if target else ""
        w(f"{label:34s} {p:10.3f} {o:10.3f} {fmt_ratio(p, o):>10s}{tail}")
        return ratio

    ratios = {}
    ratios["encode"] = row("slice encode, median s", pct(peer["encode_s"], 50), pct(ours["encode_s"], 50),
                           TARGETS["encode"])
    row("slice encode, p95 s", pct(peer["encode_s"], 95), pct(ours["encode_s"], 95))
    row("slice encode, median cpu s", pct(peer["encode_cpu_s"], 50), pct(ours["encode_cpu_s"], 50))
    ratios["decode"] = row("prompt decode p50 s (in-process)", pct(peer["decode_s"], 50), pct(ours["decode_s"], 50),
                           TARGETS["decode"])
    row("prompt decode p95 s (in-process)", pct(peer["decode_s"], 95), pct(ours["decode_s"], 95))
    row("prompt decode p50 cpu s", pct(peer["decode_cpu_s"], 50), pct(ours["decode_cpu_s"], 50))
    if service and "decode_s" in service:
        p50, p95 = pct(service["decode_s"], 50), pct(service["decode_s"], 95)
        faster = p50 < pct(peer["decode_s"], 50)
        w(f"{'prompt decode p50 s (service)':34s} {'':10s} {p50:10.3f} {fmt_ratio(pct(peer['decode_s'], 50), p50):>10s}"
          f"   target: faster than peer in-process: {'MET' if faster else 'NOT MET'}")
        w(f"{'prompt decode p95 s (service)':34s} {'':10s} {p95:10.3f}")
        w(f"  (service on 127.0.0.1, engine {service.get('engine')}, device {service.get('device')}; "
          f"first encode incl. upload {service['encode_s']:.2f} s)")
    else:
        w(f"prompt decode through the service: skipped ({(service or {}).get('skipped', 'not asked for')})")
    w(f"{'peak memory (VmHWM) MB':34s} {peer['peak_rss_mb']:10.0f} {ours['peak_rss_mb']:10.0f} "
      f"{fmt_ratio(peer['peak_rss_mb'], ours['peak_rss_mb']):>10s}")
    if "cuda_peak_mb" in peer or "cuda_peak_mb" in ours:
        w(f"{'peak CUDA memory MB (torch)':34s} {peer.get('cuda_peak_mb', float('nan')):10.0f} "
          f"{ours.get('cuda_peak_mb', float('nan')):10.0f}")
    w(f"{'decode prompts mean Dice (2D)':34s} {peer['decode_dice']:10.4f} {ours['decode_dice']:10.4f} "
      f"{'|diff| ' + format(abs(peer['decode_dice'] - ours['decode_dice']), '.4f'):>10s}")
    w("")
    if not peer["propagation"]:
        w("propagation: not measured (--no-propagation)")
    else:
        propagation_rows(w, peer, ours, ratios)
    if evaluate:
        t, o = evaluate.get("torch", {}), evaluate.get("ours", {})
        if "dice" in t and "dice" in o:
            d = abs(t["dice"] - o["dice"])
            w(f"samed evaluate us-breast-lesion --prompt box-all: mean Dice torch {t['dice']:.4f} "
              f"({t['seconds']:.0f} s), ours {o['dice']:.4f} ({o['seconds']:.0f} s), |diff| {d:.4f}: "
              f"{'MET' if d <= DICE_BOUND else 'NOT MET'}")
        else:
            w(f"samed evaluate: failed: {t.get('error') or o.get('error')}")
    w("")
    w("Times are wall-clock; the cpu columns count this process's CPU seconds only (less affected by other load).")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="the sample data folder (default ../shared/data or $SAMED_SHARED_DATA)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--engine", default="auto", help="ours: auto (default), onnx or torch")
    p.add_argument("--decodes", type=int, default=30, help="prompts per decode timing (default %(default)s)")
    p.add_argument("--encode-slices", type=int, default=6, help="slices per encode timing (default %(default)s)")
    p.add_argument("--prefetch", dest="prefetch", action="store_true", default=None,
                   help="ours: let propagation encode the next slices ahead (default: on GPUs only)")
    p.add_argument("--no-prefetch", dest="prefetch", action="store_false")
    p.add_argument("--threads", type=int, help="limit both sides to N threads (torch and ONNX Runtime); a run with "
                                               "--threads 1 shows the per-core speed, little moved by other load")
    p.add_argument("--no-propagation", action="store_true", help="skip the propagation timings")
    p.add_argument("--no-service", action="store_true", help="skip the decode timing through `samed serve`")
    p.add_argument("--no-evaluate", action="store_true", help="skip the `samed evaluate` Dice comparison")
    p.add_argument("--json", help="also write all measurements to this file")
    p.add_argument("--save-masks", help=argparse.SUPPRESS)
    p.add_argument("--side", choices=["prepare", "peer", "ours"], help=argparse.SUPPRESS)  # internal: one side, JSON out
    args = p.parse_args(argv)
    if args.side == "prepare":  # internal: export the ONNX graphs now, so that no timing includes it
        from samed.engines.selection import create_engine

        t0 = time.perf_counter()
        engine = create_engine("litemedsam", None, args.device or None, args.engine)
        print(json.dumps({"exported": bool(getattr(engine, "exported", False)),
                          "seconds": time.perf_counter() - t0, "engine": getattr(engine, "engine", "torch")}))
        return 0
    if args.side:
        import logging

        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        print(json.dumps(run_side(args.side, args)))
        return 0
    data_root(args.data)
    t0 = time.perf_counter()
    print("bench: preparing our engine (exports the ONNX graphs on first use) ...", file=sys.stderr, flush=True)
    prepared = child("prepare", args)
    print("bench: peer side (SamPredictor) ...", file=sys.stderr, flush=True)
    peer = child("peer", args)
    print("bench: our side ...", file=sys.stderr, flush=True)
    ours = child("ours", args)
    service = None
    if not args.no_service:
        print("bench: through the service ...", file=sys.stderr, flush=True)
        service = run_service(args)
    evaluate = None
    if not args.no_evaluate:
        print("bench: samed evaluate, torch and ours ...", file=sys.stderr, flush=True)
        evaluate = {"torch": run_evaluate(args, "torch"), "ours": run_evaluate(args, args.engine)}
    text = report(peer, ours, service, evaluate, args)
    if prepared.get("exported"):
        text += f"\n(first use on this machine: our engine exported its ONNX graphs in {prepared['seconds']:.0f} s)"
    print(text)
    print(f"(benchmark took {time.perf_counter() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"peer": peer, "ours": ours, "service": service,
                                               "evaluate": evaluate}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
