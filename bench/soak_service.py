"""Soak the model service: N clients for T minutes of mixed encode / decode / propagation against a real
``samed serve`` process, then report errors, latency percentiles, throughput and the server's RSS over time, and
check that its memory does not grow after warm-up.

    nice -n 10 python bench/soak_service.py --clients 16 --minutes 10      # starts samed serve on 127.0.0.1
    python bench/soak_service.py --clients 4 --minutes 1 --json soak.json  # a short run

Each client loops until the time is up (every request has a timeout; a loop does at most --max-ops operations):
60 % decodes of a box on a slice it encoded (cheap), 25 % encodes (half of them of a slice seen before, a cache
hit without upload; half a new variant of a real slice, a real encoder run), 15 % propagations of a real tumour
through 2 slices each way (start, poll, fetch, delete). The slices are real MR slices from ../shared/data.

The service runs with a small embedding cache (--cache-mb, default 64) so that the cache is full during the
warm-up; after the warm-up (the first --warmup-fraction of the run) the server's RSS, sampled every
--sample-s seconds, must stay flat: the median of the last third may exceed the median of the first post-warm-up
third by at most --max-growth-mb. Exit status 1 when there were errors or the memory grew.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))
DATA = Path(os.environ.get("SAMED_SHARED_DATA", ROOT.parent / "shared" / "data"))

from samed.client import HttpBackend, ServiceRequestError  # noqa: E402
from samed.core import io  # noqa: E402
from samed.core.backend import BackendError  # noqa: E402
from samed.core.preprocess import compute_window, slice_to_rgb  # noqa: E402
from samed.core.prompts import Prompt  # noqa: E402
from samed.core.propagation import PropagationSettings  # noqa: E402

SEED = 14  # the tumour of mr-brain-tumor covers axial slices 11..17


def start_service(cache_mb: float, engine: str, extra_env: dict, max_jobs: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile("w+", prefix="soak-serve-", suffix=".log", delete=False)
    env = {k: v for k, v in os.environ.items() if k != "SAMED_TOKEN"}
    env.update(extra_env)
    env["PYTHONPATH"] = str(ROOT / "SegmentAnythingMed")
    cmd = [sys.executable, "-m", "samed.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--no-access-log", "--log-level", "warning", "--cache-mb", str(cache_mb), "--max-jobs", str(max_jobs)]
    if engine:
        cmd += ["--engine", engine]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"samed serve exited:\n{Path(log.name).read_text()}")
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=2):
                return proc, url, log.name
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("samed serve did not start within 300 s")


def proc_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def load_slices():
    vol = io.read_volume(DATA / "volumes" / "mr-brain-tumor" / "image.nrrd")
    label = io.read_volume(DATA / "volumes" / "mr-brain-tumor" / "label.nrrd").array > 0
    window = compute_window(vol.array, "auto", None)
    pictures = np.stack([slice_to_rgb(vol.array[k], window) for k in range(vol.array.shape[0])])
    return pictures, label


def box_of(mask2d, margin=4):
    rows, cols = np.nonzero(mask2d)
    return [int(cols.min()) - margin, int(rows.min()) - margin, int(cols.max()) + margin, int(rows.max()) + margin]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = defaultdict(list)  # op -> seconds
        self.errors = defaultdict(int)
        self.retries = defaultdict(int)  # 429 answers (back-pressure), retried after a pause
        self.first_errors = []

    def ok(self, op: str, seconds: float):
        with self.lock:
            self.latency[op].append(seconds)

    def retry(self, op: str):
        with self.lock:
            self.retries[op] += 1

    def error(self, op: str, exc: BaseException):
        with self.lock:
            self.errors[op] += 1
            if len(self.first_errors) < 10:
                self.first_errors.append(f"{op}: {type(exc).__name__}: {str(exc)[:300]}")


def client_loop(index: int, url: str, pictures, label, stop_at: float, max_ops: int, stats: Stats):
    rng = random.Random(1000 + index)
    client = HttpBackend(url, timeout=120)
    tumour = [k for k in range(len(pictures)) if label[k].any()]
    handles = {}
    variant = 0
    try:
        for _ in range(max_ops):
            if time.monotonic() >= stop_at:
                break
            roll = rng.random()
            k = rng.choice(tumour)
            started = time.perf_counter()
            try:
                if roll < 0.60 and handles:
                    op = "decode"
                    k = rng.choice(list(handles))
                    handle, picture = handles[k]
                    try:
                        pred = client.decode(handle, Prompt(box_xy=box_of(label[k])))
                    except BackendError as exc:
                        if "no longer holds" not in str(exc):
                            raise
                        # evicted from the service's (deliberately small) cache: what a client does, encode again
                        op = "decode_after_eviction"
                        handle = client.encode(picture)
                        handles[k] = (handle, picture)
                        pred = client.decode(handle, Prompt(box_xy=box_of(label[k])))
                    if pred.masks.shape[1:] != pictures[k].shape[:2] or not pred.best.any():
                        raise AssertionError(f"decode of slice {k} gave an empty or misshapen mask")
                elif roll < 0.85 or not handles:
                    op = "encode"
                    picture = pictures[k]
                    if rng.random() < 0.5:  # a new variant: a real encoder run (and an eviction once full)
                        variant += 1
                        picture = picture.copy()
                        picture[0, 0] = (index * 37 + variant) % 256
                        picture[0, 1] = (variant // 256) % 256
                        op = "encode_new"
                    handles[k] = (client.encode(picture), picture)
                else:
                    op = "propagate"
                    for attempt in range(10):  # 429 (all job slots busy) is back-pressure: wait as told, retry
                        try:
                            job = client.start_propagation(pictures, SEED, label[SEED],
                                                           PropagationSettings(max_slices=2))
                            break
                        except ServiceRequestError as exc:
                            if exc.status != 429 or attempt == 9:
                                raise
                            stats.retry(op)
                            time.sleep(2 + rng.random() * 3)
                    result = job.result(timeout=300)
                    job.delete()
                    if SEED not in result.masks or len(result.indices) < 2:
                        raise AssertionError(f"propagation reached only slices {result.indices}")
                stats.ok(op, time.perf_counter() - started)
            except Exception as exc:  # every failure is counted and reported, the loop goes on
                stats.error(op, exc)
    finally:
        client.close()


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    i = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[i]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--cache-mb", type=float, default=64)
    ap.add_argument("--engine", default="", help="samed serve --engine (default: the service's default)")
    ap.add_argument("--max-jobs", type=int, default=0, help="samed serve --max-jobs (default: max(8, clients))")
    ap.add_argument("--warmup-fraction", type=float, default=0.25)
    ap.add_argument("--sample-s", type=float, default=2.0)
    ap.add_argument("--max-ops", type=int, default=100000, help="operations per client at most")
    ap.add_argument("--max-growth-mb", type=float, default=32.0)
    ap.add_argument("--json", help="write the report here too")
    args = ap.parse_args(argv)

    pictures, label = load_slices()
    proc, url, log_name = start_service(args.cache_mb, args.engine, {}, args.max_jobs or max(8, args.clients))
    pid = proc.pid
    samples = []  # (seconds since start, RSS MB)
    stats = Stats()
    started = time.monotonic()
    stop_at = started + args.minutes * 60
    done = threading.Event()

    cache_samples = []  # (seconds, cache MB, upload budget MB in use)

    def sample():
        info_client = HttpBackend(url, timeout=30)
        n = 0
        while not done.is_set():
            try:
                samples.append((time.monotonic() - started, proc_mb(pid, "VmRSS")))
            except (OSError, KeyError):
                return
            if n % 5 == 0:
                try:
                    info = info_client.info()
                    cache_samples.append((round(time.monotonic() - started), round(info["cache"]["bytes"] / 2 ** 20, 1),
                                          round(info.get("uploads", {}).get("used_bytes", 0) / 2 ** 20, 1)))
                except Exception:  # the sampler must not stop the soak; a failed info shows as a gap
                    pass
            n += 1
            done.wait(args.sample_s)
        info_client.close()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=client_loop, args=(i, url, pictures, label, stop_at, args.max_ops, stats))
               for i in range(args.clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, stop_at - time.monotonic() + 600))
        elapsed = time.monotonic() - started
        done.set()
        sampler.join(5)
        hwm = proc_mb(pid, "VmHWM")
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    server_log = Path(log_name).read_text(errors="replace")
    os.unlink(log_name)

    ops = {op: len(v) for op, v in stats.latency.items()}
    all_lat = [x for v in stats.latency.values() for x in v]
    warm_t = args.warmup_fraction * elapsed
    after = [mb for t, mb in samples if t >= warm_t]
    third = max(1, len(after) // 3)
    first_med = statistics.median(after[:third]) if after else float("nan")
    last_med = statistics.median(after[-third:]) if after else float("nan")
    growth = last_med - first_med
    report = {
        "clients": args.clients, "seconds": round(elapsed, 1), "cache_mb": args.cache_mb,
        "operations": ops, "errors": dict(stats.errors), "first_errors": stats.first_errors,
        "retried_429": dict(stats.retries),
        "throughput_ops_per_s": round(len(all_lat) / elapsed, 2),
        "latency_ms": {op: {"p50": round(1000 * percentile(v, 50), 1), "p95": round(1000 * percentile(v, 95), 1),
                            "p99": round(1000 * percentile(v, 99), 1)} for op, v in sorted(stats.latency.items())},
        "latency_ms_all": {"p50": round(1000 * percentile(all_lat, 50), 1),
                           "p95": round(1000 * percentile(all_lat, 95), 1),
                           "p99": round(1000 * percentile(all_lat, 99), 1)},
        "rss_mb_over_time": [(round(t), round(mb, 1)) for t, mb in samples[::max(1, len(samples) // 20)]],
        "rss_mb_after_warmup": {"first_third_median": round(first_med, 1), "last_third_median": round(last_med, 1),
                                "growth": round(growth, 1), "max": round(max(after), 1) if after else None},
        "cache_mb_and_uploads_mb_over_time": cache_samples[::max(1, len(cache_samples) // 10)],
        "server_peak_rss_mb": round(hwm, 1), "server_alive": alive,
        "tracebacks_in_server_log": server_log.count("Traceback"),
    }
    text = json.dumps(report, indent=1)
    text = text.replace("\n   ", " ").replace("\n  ],", "],")  # the (seconds, MB) pairs one per line
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    failed = sum(stats.errors.values()) > 0 or growth > args.max_growth_mb or not alive \
        or report["tracebacks_in_server_log"] > 0
    print(f"soak: {'FAILED' if failed else 'ok'}: {len(all_lat)} operations, {sum(stats.errors.values())} errors, "
          f"RSS growth after warm-up {growth:+.1f} MB (limit {args.max_growth_mb:g})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
