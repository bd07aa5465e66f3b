#!/usr/bin/env python
"""LiteMedSAM encoder variants on this CPU: speed per slice and accuracy against float32 (issue 16).

Variants (each a ``run(None, {"image": x})`` encoder behind the same ONNX Runtime float32 decoder):

- ``fp32 onnx``: ONNX Runtime float32 (the ``onnx`` engine; the reference);
- ``bf16 openvino``: the ``openvino`` engine's encoder (mixed bfloat16 layout), where the CPU has bfloat16 units;
- ``int8 nncf``: the encoder quantized by ``nncf.quantize`` (every layer NNCF's transformer preset picks);
- ``int8 nncf, ignored scopes``: the same with the patch embedding and stages 0-1 kept float32 (the ``tail``
  layout, the ``openvino-int8`` engine's);
- ``int8 nncf, stage 2-3 products``: only stages 2-3's products by weights in int8 (``tail-matmul``).

Per variant: encode wall ms per slice (median over ``--rounds`` rounds of the CTChest4 check slices, variants
alternating so that load changes hit all alike) and this process's CPU seconds per slice (``time.process_time``:
moves less when other programs load the machine); then ``samed.engines.precision_check`` (the check auto trusts:
propagation walks and box prompts on CTChest4, every Dice within 0.005 of float32's): the worst |Dice difference|
and its measure, the verdict; and mask agreement with float32 (mean / min Dice of the box masks). The quantized
models are made (and cached) in the ONNX export cache, never in the repository.

Run: ``nice -n 10 python bench/bench_precision_variants.py`` (``--help``).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SegmentAnythingMed"))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def variants(engine, wanted):
    """[(label, encoder or None, why not)] in the table's order."""
    from samed.engines import openvino_encoder as ove

    out = [("fp32 onnx", engine._encoder, None)]
    if "bf16" in wanted:
        if ove.bf16_capable():
            out.append(("bf16 openvino", ove.OpenVinoEncoder(str(engine.artifacts.encoder), "bf16").compile(), None))
        else:
            out.append(("bf16 openvino", None, "no bfloat16 units on this CPU"))
    for layout, label in (("all", "int8 nncf"), ("tail", "int8 nncf, ignored scopes"),
                          ("tail-matmul", "int8 nncf, stage 2-3 products")):
        if layout not in wanted:
            continue
        from samed.engines import int8_encoder as ie

        t0, c0 = time.perf_counter(), time.process_time()
        was_cached = ie.quantized_paths(Path(engine.artifacts.encoder), layout)[0].exists()
        try:
            xml = ie.quantize(engine.artifacts.encoder, engine.manifest["files"]["encoder"]["sha256"],
                              engine.preprocess, layout)
        except ie.Int8Unavailable as exc:
            out.append((label, None, str(exc)))
            continue
        how = "read from the cache" if was_cached else "quantized now (cached for the next runs)"
        print(f"  {label}: model {how} in {time.perf_counter() - t0:.1f} s ({time.process_time() - c0:.1f} cpu s)",
              file=sys.stderr, flush=True)
        out.append((label, ie.Int8Encoder(xml, layout, getattr(engine, "_threads", None)).compile(), None))
    return out


def time_encoders(engine, encoders, pictures, rounds):
    """{label: ([wall s], [cpu s])} per slice, variants alternating per slice."""
    inputs = [engine.preprocess(p)[0] for p in pictures]
    times = {label: ([], []) for label, enc, _ in encoders if enc is not None}
    for label, enc, _ in encoders:  # warm-up
        if enc is not None:
            enc.run(None, {"image": inputs[0]})
    for _ in range(rounds):
        for x in inputs:
            for label, enc, _ in encoders:
                if enc is None:
                    continue
                t0, c0 = time.perf_counter(), time.process_time()
                enc.run(None, {"image": x})
                times[label][0].append(time.perf_counter() - t0)
                times[label][1].append(time.process_time() - c0)
    return times


def mask_agreement(engine, candidate, data):
    """Dice of the candidate's box masks against float32's on the check's box slices (mean, min)."""
    from samed.core.metrics import dice
    from samed.core.prompts import Prompt, box_from_mask
    from samed.core.volume_session import VolumeSession
    from samed.engines import precision_check as pc

    cand = pc.with_encoder(engine, candidate)
    session = VolumeSession(data.volume, pc._EncodeOnce(engine), intensity_mode=pc.INTENSITY)
    out = []
    for k in pc.BOX_SLICES:
        picture = session.picture(k)
        e32, ec = engine.encode(picture), cand.encode(picture)
        for ref in data.references.values():
            box = Prompt(box_xy=box_from_mask(np.moveaxis(ref, session.np_axis, 0)[k]))
            out.append(dice(cand.decode(ec, box, False).best, engine.decode(e32, box, False).best))
    return float(np.mean(out)), float(np.min(out))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="bf16,all,tail,tail-matmul",
                    help="which reduced variants besides fp32: bf16, all (int8 nncf), tail (int8, ignored scopes: "
                         "stages 0-1 float32), tail-matmul (int8 only in stages 2-3's products by weights)")
    ap.add_argument("--rounds", type=int, default=2, help="timing rounds over the 13 check slices (default 2)")
    ap.add_argument("--threads", type=int, help="encoder threads (default: the cores this process may use)")
    ap.add_argument("--cache-dir", help="the ONNX export cache (default: samed's)")
    args = ap.parse_args(argv)
    from samed.engines import precision_check as pc
    from samed.engines.onnx_engine import OnnxEngine

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    engine = OnnxEngine("litemedsam", device="cpu", cache_dir=args.cache_dir, threads=args.threads)
    encoders = variants(engine, set(args.variants.split(",")))
    data = pc.CheckData()
    from samed.core.volume_session import VolumeSession

    session = VolumeSession(data.volume, pc._EncodeOnce(engine), intensity_mode=pc.INTENSITY)
    reach = range(pc.SEED_SLICE - pc.WALK_STEPS, pc.SEED_SLICE + pc.WALK_STEPS + 1)
    times = time_encoders(engine, encoders, [session.picture(k) for k in reach], args.rounds)
    reference = pc.with_encoder(engine, engine._encoder)
    sha = engine.manifest["files"]["encoder"]["sha256"]
    rows = []
    for label, enc, why_not in encoders:
        if enc is None:
            rows.append((label, None, None, None, None, why_not))
            continue
        wall, cpu = times[label]
        if enc is engine._encoder:
            rows.append((label, statistics.median(wall), statistics.median(cpu), None, (1.0, 1.0), "reference"))
            continue
        result = pc.compare(pc.with_encoder(engine, enc), reference, data=data, reference_key=sha)
        rows.append((label, statistics.median(wall), statistics.median(cpu), result,
                     mask_agreement(engine, enc, data), None))
        print(f"  {label}: checked in {result['seconds']:.0f} s", file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    print(f"samed encoder variants  {time.strftime('%Y-%m-%d %H:%M')}  CPU {cpu_model()} "
          f"({len(os.sched_getaffinity(0))} usable)  load average {load0[0]:.2f} at start, {load1[0]:.2f} at end")
    print(f"check: precision_check v{pc.CHECK_VERSION} (CTChest4 walks + boxes), bound |Dice diff| <= {pc.DICE_BOUND}")
    print(f"{'variant':28s} {'ms/slice':>9s} {'cpu s/slice':>11s} {'x fp32':>7s} {'cpu x':>6s}  {'worst |diff|':>12s}  "
          f"{'check':6s} {'box masks vs fp32 (mean/min)':>28s}  worst measure")
    base, base_cpu = rows[0][1], rows[0][2]
    for label, wall, cpu, result, agree, note in rows:
        if wall is None:
            print(f"{label:28s} {'-':>9s} {'-':>11s} {'-':>7s} {'-':>6s}  {'-':>12s}  {'n/a':6s} {'':>28s}  {note}")
            continue
        worst = f"{result['worst_abs_diff']:.4f}" if result else "0"
        verdict = ("pass" if result["passed"] else "FAIL") if result else "ref"
        what = result["worst"] if result else note
        print(f"{label:28s} {wall * 1e3:9.0f} {cpu:11.3f} {base / wall:6.2f}x {base_cpu / cpu:5.2f}x  {worst:>12s}  "
              f"{verdict:6s} "
              f"{agree[0]:20.4f} / {agree[1]:.4f}  {what}")
    for label, _, _, result, _, _ in rows:
        if result:
            print(f"\n{label}: every measure (Dice vs reference segment; float32 / candidate / |diff|)")
            print("\n".join("  " + line for line in pc.summary(result)))
    print(f"\n(ms/slice: wall median; cpu s/slice: this process's CPU seconds, median; x fp32 / cpu x: speed-up "
          f"over fp32 onnx by wall / by CPU seconds; benchmark took "
          f"{time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
