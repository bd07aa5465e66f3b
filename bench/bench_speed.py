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
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_sides import (DICE_BOUND, TARGETS, data_root, pct, run_evaluate, run_service,  # noqa: E402
                         run_side)


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
    if args.walk100 is not None:
        cmd += ["--walk100" if args.walk100 else "--no-walk100"]
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
    click_p, click_o = pct(peer["encode_s"], 50) + pct(peer["decode_s"], 50), \
        pct(ours["encode_s"], 50) + pct(ours["decode_s"], 50)
    row("click-to-mask, new slice, s", click_p, click_o)
    w(f"{'  (encode median + decode p50; on an encoded slice: the decode alone)':34s}")
    w(f"{'decode prompts mean Dice (2D)':34s} {peer['decode_dice']:10.4f} {ours['decode_dice']:10.4f} "
      f"{'|diff| ' + format(abs(peer['decode_dice'] - ours['decode_dice']), '.4f'):>10s}")
    w("")
    if not peer["propagation"]:
        w("propagation: not measured (--no-propagation)")
    else:
        propagation_rows(w, peer, ours, ratios)
    for side, r in (("peer", peer), ("ours", ours)):
        if "walk100" in r:
            wk = r["walk100"]
            w(f"100-slice propagation ({side}): {wk['wall_s']:.2f} s for {wk['slices']} of {wk['of']} slices "
              f"({wk['wall_s'] / max(1, wk['slices']) * 1000:.0f} ms per slice; CTChest4 resampled to 3x its slices, "
              f"body outline)")
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
    p.add_argument("--engine", default="auto", help="ours: auto (default), openvino, openvino-int8, openvino-f32, "
                                                    "onnx, onnx-int8 or torch")
    p.add_argument("--decodes", type=int, default=30, help="prompts per decode timing (default %(default)s)")
    p.add_argument("--encode-slices", type=int, default=6, help="slices per encode timing (default %(default)s)")
    p.add_argument("--prefetch", dest="prefetch", action="store_true", default=None,
                   help="ours: let propagation encode the next slices ahead (default: on GPUs only)")
    p.add_argument("--no-prefetch", dest="prefetch", action="store_false")
    p.add_argument("--threads", type=int, help="limit both sides to N threads (torch and ONNX Runtime); a run with "
                                               "--threads 1 shows the per-core speed, little moved by other load")
    p.add_argument("--no-propagation", action="store_true", help="skip the propagation timings")
    p.add_argument("--walk100", dest="walk100", action="store_true", default=None,
                   help="also time a 100-slice propagation (CTChest4 resampled; default: on CUDA only)")
    p.add_argument("--no-walk100", dest="walk100", action="store_false")
    p.add_argument("--no-service", action="store_true", help="skip the decode timing through `samed serve`")
    p.add_argument("--no-evaluate", action="store_true", help="skip the `samed evaluate` Dice comparison")
    p.add_argument("--json", help="also write all measurements to this file")
    p.add_argument("--peer-json", help="reuse the peer side of an earlier run's --json (to try variants of ours; "
                                       "only meaningful on the same machine under the same load)")
    p.add_argument("--save-masks", help=argparse.SUPPRESS)
    p.add_argument("--side", choices=["prepare", "peer", "ours"], help=argparse.SUPPRESS)  # internal, JSON out
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
    if args.peer_json:
        peer = json.loads(Path(args.peer_json).read_text(encoding="utf-8"))["peer"]
    else:
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
