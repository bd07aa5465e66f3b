"""Benchmark samed behind the consistent-hash proxy: real nginx running deploy/nginx.conf (TLS) before 1 and 2
`samed serve` replicas (LiteMedSAM) on 127.0.0.1, N clients at once.

    nice -n 10 python bench/bench_scale.py --clients 4 --slices 8 --decodes 10

Per setup: throughput (slices and decodes per second), encode and decode latency (p50/p95) as the clients see it,
and cache misses (decodes answered 404, encodes beyond one per slice, from nginx's log and the replicas' /v1/info).
Then the proxy's added latency per decode: the same cached slice decoded straight from a replica and through nginx,
alternately. On a 2-core machine two replicas cannot be faster than one (they share the cores); the point is
correctness (no misses) and the proxy's overhead.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))
sys.path.insert(0, str(ROOT / "tests"))  # the real-process helpers the tests use (samed serve, nginx)
DATA = Path(os.environ.get("SAMED_SHARED_DATA", ROOT.parent / "shared" / "data"))

from conftest import ServiceProcess, free_loopback_port  # noqa: E402
from test_scale_nginx import Nginx, nginx_binary, read_access_log, self_signed_certificate, site_config  # noqa: E402

from samed.client import HttpBackend  # noqa: E402
from samed.core import io  # noqa: E402
from samed.core.preprocess import compute_window, slice_to_rgb  # noqa: E402
from samed.core.prompts import Prompt  # noqa: E402

TOKEN = "bench-scale-token"


def pictures():
    vol = io.read_volume(DATA / "volumes" / "mr-brain-tumor" / "image.nrrd")
    window = compute_window(vol.array, "auto", None)
    return np.stack([slice_to_rgb(vol.array[k], window) for k in range(vol.array.shape[0])])


def counters(url):
    req = urllib.request.Request(url + "/v1/info", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        m = json.load(r)["models"]["litemedsam"]
    return m["encoder_runs"], m["decodes"]


def pct(values, q):
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def run_clients(url, pics, slices, n_clients, n_decodes):
    """Each client takes its share of the slices: encode, then n_decodes boxes on it."""
    box = Prompt(box_xy=[60, 60, 140, 140])
    enc, dec, errors = [], [], []
    lock = threading.Lock()

    def work(n):
        client = HttpBackend(url, token=TOKEN)
        try:
            for s in slices[n::n_clients]:
                t0 = time.perf_counter()
                h = client.encode(pics[s])
                t1 = time.perf_counter()
                times = []
                for _ in range(n_decodes):
                    t = time.perf_counter()
                    client.decode(h, box)
                    times.append(time.perf_counter() - t)
                with lock:
                    enc.append(t1 - t0)
                    dec.extend(times)
        except Exception as exc:  # noqa: BLE001  (reported)
            errors.append(exc)
        finally:
            client.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, enc, dec


def added_latency(replica_url, proxy_url, pic, rounds):
    box = Prompt(box_xy=[60, 60, 140, 140])
    direct, proxied = HttpBackend(replica_url, token=TOKEN), HttpBackend(proxy_url, token=TOKEN)
    hd, hp = direct.encode(pic), proxied.encode(pic)
    assert hd.key == hp.key
    a, b = [], []
    for _ in range(3):  # warm both connections
        direct.decode(hd, box)
        proxied.decode(hp, box)
    for _ in range(rounds):
        t = time.perf_counter()
        direct.decode(hd, box)
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        proxied.decode(hp, box)
        b.append(time.perf_counter() - t)
    c, d = [], []  # the cache check: a request with no compute, so only the proxy's hop differs
    for _ in range(rounds):
        t = time.perf_counter()
        direct.is_cached(hd.key)
        c.append(time.perf_counter() - t)
        t = time.perf_counter()
        proxied.is_cached(hp.key)
        d.append(time.perf_counter() - t)
    direct.close()
    proxied.close()
    return a, b, c, d


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--slices", type=int, default=8, help="distinct slices per setup (default 8)")
    p.add_argument("--decodes", type=int, default=10, help="decodes per slice and client (default 10)")
    p.add_argument("--rounds", type=int, default=200,
                   help="decodes and cache checks for the proxy's added latency (default 200)")
    args = p.parse_args(argv)
    pics = pictures()
    if 2 * args.slices + 1 > len(pics):
        p.error(f"--slices at most {(len(pics) - 1) // 2}: mr-brain-tumor has {len(pics)} slices")
    env = {**os.environ, "SAMED_TOKEN": TOKEN}
    replicas = [ServiceProcess("--no-access-log", "--log-level", "warning", "--cache-mb", "256", env=env)
                for _ in range(2)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    crt, key = self_signed_certificate(tmp)
    os.environ["SSL_CERT_FILE"] = str(crt)
    results = []
    try:
        first = 0  # mr-brain-tumor has 25 slices
        for n in (1, 2):
            prefix = tmp / f"nginx{n}"
            prefix.mkdir()
            port = free_loopback_port()
            log = prefix / "samed.log"
            nginx = Nginx(nginx_binary(), prefix, site_config(replicas[:n], port, crt, key, log))
            url = f"https://127.0.0.1:{port}"
            try:
                for _ in range(100):
                    try:
                        HttpBackend(url, token=TOKEN).close()
                        break
                    except Exception:  # noqa: BLE001  (nginx still starting)
                        time.sleep(0.1)
                slices = list(range(first, first + args.slices))
                first += args.slices  # fresh slices per setup: no embedding cached from the last one
                before = [counters(r.url) for r in replicas]
                wall, enc, dec = run_clients(url, pics, slices, args.clients, args.decodes)
                after = [counters(r.url) for r in replicas]
                encodes = [a[0] - b[0] for a, b in zip(after, before)]
                misses = sum(1 for r in read_access_log(log) if r[1].endswith("/decode") and r[5] == 404)
                res = {"replicas": n, "clients": args.clients, "slices": len(slices), "wall_s": wall,
                       "slices_per_s": len(slices) / wall, "decodes_per_s": len(dec) / wall,
                       "encode_p50_ms": pct(enc, 50), "encode_p95_ms": pct(enc, 95),
                       "decode_p50_ms": pct(dec, 50), "decode_p95_ms": pct(dec, 95),
                       "encodes_per_replica": encodes[:n], "extra_encodes": sum(encodes) - len(slices),
                       "decode_404": misses}
                if n == 2:
                    a, b, c, d = added_latency(replicas[0].url, url, pics[min(first + 2, len(pics) - 1)],
                                               args.rounds)
                    res.update(direct_decode_p50_ms=pct(a, 50), proxied_decode_p50_ms=pct(b, 50),
                               added_p50_ms=pct(b, 50) - pct(a, 50),
                               added_mean_ms=(statistics.mean(b) - statistics.mean(a)) * 1000,
                               direct_head_p50_ms=pct(c, 50), proxied_head_p50_ms=pct(d, 50),
                               added_head_p50_ms=pct(d, 50) - pct(c, 50))
                results.append(res)
                print(json.dumps(res), flush=True)
            finally:
                nginx.stop()
    finally:
        for r in replicas:
            r.stop()
    print("\nreplicas clients  slices/s decodes/s  encode p50/p95 ms  decode p50/p95 ms  extra encodes  404s")
    for r in results:
        print(f"{r['replicas']:>8} {r['clients']:>7} {r['slices_per_s']:>9.2f} {r['decodes_per_s']:>9.1f} "
              f"{r['encode_p50_ms']:>8.0f}/{r['encode_p95_ms']:<8.0f} {r['decode_p50_ms']:>8.1f}/"
              f"{r['decode_p95_ms']:<8.1f} {r['extra_encodes']:>13} {r['decode_404']:>5}")
    last = results[-1]
    print(f"proxy (nginx, TLS) added latency per decode: p50 {last['added_p50_ms']:+.1f} ms, mean "
          f"{last['added_mean_ms']:+.1f} ms (direct p50 {last['direct_decode_p50_ms']:.1f} ms, through nginx "
          f"{last['proxied_decode_p50_ms']:.1f} ms, {args.rounds} decodes each); on a cache check (no compute): p50 "
          f"{last['added_head_p50_ms']:+.2f} ms ({last['direct_head_p50_ms']:.2f} -> "
          f"{last['proxied_head_p50_ms']:.2f} ms)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
