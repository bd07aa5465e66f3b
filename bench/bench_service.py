"""Benchmark the model service on this machine: decode latency through HTTP against in-process, bytes on the
wire per slice and per mask, and the service's memory with N cached embeddings.

    python bench/bench_service.py                    # starts `samed serve` on 127.0.0.1 (a free port)
    python bench/bench_service.py --url http://gpu-server:8765 --token-file token.txt   # an existing service

Against an existing service the memory figures need its process id (--pid), so they are left out otherwise.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))
DATA = Path(os.environ.get("SAMED_SHARED_DATA", ROOT.parent / "shared" / "data"))

from samed.client import HttpBackend  # noqa: E402
from samed.core import io  # noqa: E402
from samed.core.preprocess import compute_window, slice_to_rgb  # noqa: E402
from samed.core.prompts import Prompt  # noqa: E402
from samed.service.wire import encode_bundle, gzip_bytes, pack_pictures  # noqa: E402


def start_service(cache_mb: int, engine: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile("w+", prefix="bench-serve-", suffix=".log", delete=False)
    env = {k: v for k, v in os.environ.items() if k != "SAMED_TOKEN"}
    env["PYTHONPATH"] = str(ROOT / "SegmentAnythingMed")
    proc = subprocess.Popen([sys.executable, "-m", "samed.cli.main", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--no-access-log", "--log-level", "warning", "--cache-mb", str(cache_mb),
                             "--engine", engine],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"samed serve exited:\n{Path(log.name).read_text()}")
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("samed serve did not start within 150 s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(seconds):
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def pictures_mr():
    vol = io.read_volume(DATA / "volumes" / "mr-brain-tumor" / "image.nrrd")
    window = compute_window(vol.array, "auto", None)
    return [slice_to_rgb(vol.array[k], window) for k in range(vol.array.shape[0])]


def picture_ct():
    vol = io.read_volume(DATA / "volumes" / "ct-abdomen" / "image.nii.gz")
    window = compute_window(vol.array, "auto", "CT")
    k = vol.array.shape[0] // 2
    return slice_to_rgb(vol.array[k], window)


def wire_sizes(name: str, picture: np.ndarray) -> str:
    raw = picture.nbytes
    bundle = encode_bundle({}, {"image": picture})
    packed = encode_bundle({}, {"image": pack_pictures(picture)})
    return (f"  {name} {picture.shape[0]}x{picture.shape[1]}: raw RGB {raw / 1024:.0f} KiB; as sent: bundle "
            f"{len(bundle) / 1024:.0f} KiB, grey-packed {len(packed) / 1024:.0f} KiB, grey-packed + gzip "
            f"{len(gzip_bytes(packed)) / 1024:.0f} KiB; on a cache hit: 0 bytes (one HEAD)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an existing service (default: start one here)")
    ap.add_argument("--token-file")
    ap.add_argument("--pid", type=int, help="the existing service's process id (for its memory)")
    ap.add_argument("--decodes", type=int, default=50)
    ap.add_argument("--embeddings", default="1,4,8,16", help="cache sizes to measure memory at")
    ap.add_argument("--engine", default="torch", choices=["torch", "onnx", "auto"],
                    help="engine of the started service and of the in-process backend (default %(default)s)")
    args = ap.parse_args(argv)
    token = Path(args.token_file).read_text().strip() if args.token_file else os.environ.get("SAMED_TOKEN")

    proc = None
    if args.url:
        url, pid = args.url, args.pid
    else:
        proc, url = start_service(cache_mb=2048, engine=args.engine)
        pid = proc.pid
    try:
        return run(url, token, pid, args)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


def run(url, token, pid, args) -> int:
    from samed.engines.local import LocalBackend

    mr = pictures_mr()
    client = HttpBackend(url, token=token)
    info = client.info()
    print(f"samed {info['version']} service at {url} on {info['device']} "
          f"({info['models']['litemedsam'].get('engine')} engine); in-process backend: {args.engine} on cpu; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"service memory after start (model loaded, empty cache): "
          f"{rss_mb(pid):.0f} MB" if pid else "service memory: pass --pid to measure")

    picture, box = mr[14], [95, 95, 165, 165]
    t0 = time.perf_counter()
    handle = client.encode(picture)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    client.encode(picture)
    hit = time.perf_counter() - t0
    print(f"\nencode through HTTP: first {first * 1000:.0f} ms (upload + encoder), again {hit * 1000:.1f} ms "
          f"(cache hit: HEAD only)")

    local = LocalBackend.create("litemedsam", device="cpu", engine=args.engine)
    local_handle = local.encode(picture)
    prompt = Prompt(box_xy=box)
    for _ in range(3):  # warm up both
        client.decode(handle, prompt)
        local.decode(local_handle, prompt)
    http_s, local_s, thread_s = [], [], []

    def timed(fn, out):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)

    for _ in range(args.decodes):
        timed(lambda: local.decode(local_handle, prompt), local_s)
        worker = threading.Thread(target=timed, args=(lambda: local.decode(local_handle, prompt), thread_s))
        worker.start()
        worker.join()
        timed(lambda: client.decode(handle, prompt), http_s)
    print(f"\ndecode latency, one box on a 256x256 MR slice, {args.decodes} decodes each (LiteMedSAM, CPU):")
    for name, times in (("in-process, calling thread", local_s), ("in-process, worker thread", thread_s),
                        ("HTTP (service: worker thread)", http_s)):
        p50, p95 = percentiles(times)
        print(f"  {name:30s}: p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")

    print("\nbytes per slice (upload, once per service):")
    print(wire_sizes("MR", picture))
    print(wire_sizes("CT", picture_ct()))
    print("  CT 512x512 (clinical size): raw RGB 768 KiB, grey-packed 256 KiB (+ gzip: the ratio above)")
    print("bytes per mask (decode answer; the request is ~150 bytes of JSON):")
    for compress in (False, True):
        c = HttpBackend(url, token=token, compress=compress)
        before_in, before_out = c.bytes_received, c.bytes_sent
        pred = c.decode(handle, prompt)
        print(f"  {'gzip' if compress else 'plain'}: {c.bytes_received - before_in} bytes for {len(pred.masks)} "
              f"mask(s) of 256x256 + scores (raw bool would be {pred.masks.nbytes} bytes); request "
              f"{c.bytes_sent - before_out} bytes")
        c.close()
    multi = client.decode(handle, prompt, multimask=True)
    before = client.bytes_received
    client.decode(handle, prompt, multimask=True)
    print(f"  plain, 3 candidates: {client.bytes_received - before} bytes ({len(multi.masks)} masks)")

    if pid:
        print("\nservice memory with N cached embeddings (LiteMedSAM: 4 MiB each on the CPU):")
        counts = sorted({int(n) for n in args.embeddings.split(",")})
        encoded = {handle.key}
        k = 0
        for n in counts:
            while len(encoded) < n and k < len(mr):
                encoded.add(client.encode(mr[k]).key)
                k += 1
            cache = client.info()["cache"]
            print(f"  N = {cache['entries']:3d}: RSS {rss_mb(pid):6.0f} MB, cache {cache['bytes'] / 2 ** 20:5.0f} MiB")
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
