#!/usr/bin/env python
"""Interactive latency (issue 16): a scripted user, with and without pre-encoding, in-process and via the service.

The user, on slicerio's CTChest4 (the CT every install has; minmax window as the README demo), for each of
``--trials`` target slices:

1. scrolls onto it through ``--scroll`` slices, ``--scroll-step`` seconds each (a front end with pre-encoding
   calls ``backend.stopped_on(picture)`` at every slice the view shows: the encodes for slices scrolled past are
   dropped, a started one runs to its end);
2. dwells ``--dwell`` seconds (0.5);
3. drags a box around the right lung (``--drag`` seconds from press to release) and waits for the preview:
   **release-to-preview** = ``encode`` (a cache hit if pre-encoded) + ``decode``, what the user waits for;
4. after ``--gap`` seconds adds a second box (the left lung) on the same slice: release-to-preview again.

Without pre-encoding the same script calls nothing while scrolling and dwelling. Printed: p50 / p95 of
release-to-preview for the first and the second box, per mode, in-process (``LocalBackend``, engine ``--engine``)
and through ``samed serve`` on 127.0.0.1 (``HttpBackend``; the service's engine is the same ``--engine``).
Each mode starts from an empty embedding cache. Run: ``nice -n 10 python bench/bench_interactive.py``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GOAL_MS = 60  # issue 16: release-to-preview p50 after a 0.5 s dwell


def scene():
    """CTChest4's pictures (minmax) and the boxes of two structures per slice."""
    import slicerio

    from samed.core import io
    from samed.core.prompts import box_from_mask
    from samed.core.volume_session import VolumeSession

    ct = Path(slicerio.get_testdata_file("CTChest4.nrrd"))
    seg = ct.parent / "Segmentation.seg.nrrd"
    volume = io.read_volume(ct)
    session = VolumeSession(volume, backend=None, intensity_mode="minmax")
    refs = [np.moveaxis(io.reference_mask(seg, name)[0], session.np_axis, 0) for name in ("right lung", "left lung")]
    slices = [k for k in range(session.n_slices) if all(r[k].sum() > 50 for r in refs)]
    pictures = {k: session.picture(k) for k in range(session.n_slices)}
    boxes = {k: [box_from_mask(r[k]) for r in refs] for k in slices}
    return pictures, boxes, slices


def run_user(backend, pictures, boxes, targets, args, preencode: bool) -> Dict[str, List[float]]:
    from samed.core.prompts import Prompt

    first, second = [], []
    previous = targets[0] - args.scroll - 1
    for target in targets:
        path = list(range(max(0, target - args.scroll), target)) if target > previous else \
            list(range(min(len(pictures) - 1, target + args.scroll), target, -1))
        for k in path + [target]:  # scrolling: the view shows each slice for scroll_step seconds
            if preencode:
                backend.stopped_on(pictures[k])
            time.sleep(args.scroll_step if k != target else 0)
        time.sleep(args.dwell + args.drag)  # dwell, then press ... release
        for box, out in ((boxes[target][0], first), (boxes[target][1], second)):
            t0 = time.perf_counter()
            pred = backend.decode(backend.encode(pictures[target]), Prompt(box_xy=box), multimask=False)
            out.append(time.perf_counter() - t0)
            assert pred.best.any(), f"empty mask on slice {target}"
            time.sleep(args.gap + args.drag)
        previous = target
    return {"first": first, "second": second}


def pct(values, q):
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def start_service(args):
    """``samed serve`` on 127.0.0.1 (a free port) with ``--engine``: (process, url)."""
    from speed_sides import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "samed.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--device", "cpu", "--engine", args.engine, "--no-access-log", "--log-level", "warning"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "SegmentAnythingMed") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env), f"http://127.0.0.1:{port}"


def connect(url, proc, deadline: float = 300):
    from samed.client.http import HttpBackend

    end = time.time() + deadline
    while True:
        try:
            return HttpBackend(url, model="litemedsam")
        except (RuntimeError, OSError, ValueError) as exc:  # not up yet
            if proc.poll() is not None:
                raise SystemExit(f"samed serve exited ({proc.returncode}): "
                                 f"{proc.stderr.read().decode(errors='replace')[-600:]}") from None
            if time.time() > end:
                raise SystemExit(f"samed serve did not answer within {deadline:g} s: {exc}") from None
            time.sleep(0.5)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", default="auto", help="engine in-process and of the service (default auto)")
    p.add_argument("--trials", type=int, default=8, help="target slices per mode (default %(default)s)")
    p.add_argument("--scroll", type=int, default=3, help="slices scrolled through before each target")
    p.add_argument("--scroll-step", type=float, default=0.1, help="seconds per slice while scrolling")
    p.add_argument("--dwell", type=float, default=0.5, help="seconds on the target before the box (default 0.5)")
    p.add_argument("--drag", type=float, default=0.3, help="seconds from press to release of a box drag")
    p.add_argument("--gap", type=float, default=1.0, help="seconds between the first preview and the second drag")
    p.add_argument("--no-service", action="store_true", help="in-process only")
    args = p.parse_args(argv)

    from samed.engines.local import LocalBackend, EmbeddingCache

    pictures, boxes, slices = scene()
    step = max(1, len(slices) // args.trials)
    targets = slices[::step][: args.trials]
    t0 = time.perf_counter()
    backend = LocalBackend.create("litemedsam", None, "cpu", engine=args.engine)
    info = backend.engine.info()
    label = f"{getattr(backend.engine, 'engine', 'torch')} ({info.get('precision', 'fp32')})"
    if info.get("fallback_reason"):
        label += f"; fell back: {info['fallback_reason'][:160]}"
    results = {}
    for mode in (False, True):
        backend.cache = EmbeddingCache(backend.cache.max_bytes)
        results[("in-process", mode)] = run_user(backend, pictures, boxes, targets, args, mode)
    backend.close()
    if not args.no_service:
        from speed_sides import stop_service

        proc, url = start_service(args)
        try:
            for mode in (False, True):
                client = connect(url, proc)
                # each mode on slices the service has not seen: shift the pictures by one grey level
                shifted = {k: np.clip(v.astype(np.int16) + (1 if mode else 2), 0, 255).astype(np.uint8)
                           for k, v in pictures.items()}
                results[("service", mode)] = run_user(client, shifted, boxes, targets, args, mode)
                client.close()
        finally:
            stop_service(proc)
    import platform

    print(f"samed interactive latency  {time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}"
          f"  {os.cpu_count()} logical CPUs  load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"engine: {label}")
    print(f"user: {len(targets)} target slices of CTChest4 {targets}; scroll {args.scroll} slices x "
          f"{args.scroll_step:g} s, dwell {args.dwell:g} s, drag {args.drag:g} s, second box {args.gap:g} s later")
    print("")
    print(f"{'release-to-preview, ms':28s} {'pre-encoding':>13s} {'1st box p50':>12s} {'p95':>7s} "
          f"{'2nd box p50':>12s} {'p95':>7s}")
    for (where, mode), r in results.items():
        print(f"{where:28s} {'on' if mode else 'off':>13s} {pct(r['first'], 50):12.0f} {pct(r['first'], 95):7.0f} "
              f"{pct(r['second'], 50):12.0f} {pct(r['second'], 95):7.0f}")
    for where in ("in-process", "service"):
        if (where, True) in results:
            p50 = pct(results[(where, True)]["first"], 50)
            print(f"{where}: first box after a {args.dwell:g} s dwell, p50 {p50:.0f} ms: goal < {GOAL_MS} ms "
                  f"{'MET' if p50 < GOAL_MS else 'NOT MET'}")
    print(f"(benchmark took {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
