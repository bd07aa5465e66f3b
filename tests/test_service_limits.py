"""Abuse that costs the service memory or connections (issue 12, defects 5 and 8), against a real ``samed serve``
process on 127.0.0.1 started with small limits so that each probe is cheap:

* header and body timeouts: trickled headers, a stalled body, a declared body that never comes -> closed or
  answered within the configured time (``--header-timeout``, ``SAMED_BODY_TIMEOUT_S``);
* memory: gzip bombs and uploads that declare a huge picture are refused after reading at most their head, and
  all bodies in memory at once stay within ``--upload-memory-mb``: the server's peak RSS (``VmHWM`` in
  /proc/<pid>/status) stays within its warm peak plus that budget.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import struct
import time
import zlib

import numpy as np
import pytest
from conftest import ServiceProcess

from samed.client import HttpBackend
from samed.service.wire import BUNDLE_TYPE, MAGIC, NPY_TYPE, encode_bundle

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
MAX_BODY_MB = 64
UPLOAD_MEMORY_MB = 96
MODEL = "litemedsam"
ENCODE = f"/v1/models/{MODEL}/embeddings"


def proc_status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture(scope="module")
def limited():
    import os

    env = {k: v for k, v in os.environ.items() if k != "SAMED_TOKEN"}
    env.update(SAMED_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S))  # one limit from the environment, the others as options
    service = ServiceProcess("--max-body-mb", str(MAX_BODY_MB), "--header-timeout", str(HEADER_TIMEOUT_S),
                             "--upload-memory-mb", str(UPLOAD_MEMORY_MB), "--log-level", "info", env=env)
    client = HttpBackend(service.url)  # warm up: one encode and decode, so the peak below is the working peak
    rng = np.random.default_rng(1)
    client.encode(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8))
    client.close()
    yield service
    service.stop()


def raw_connection(service) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", service.port), timeout=30)
    return s


def read_until_closed(s: socket.socket, limit_s: float) -> tuple:
    """(bytes received, seconds until the server closed the connection or ``limit_s`` passed)."""
    started, data = time.monotonic(), b""
    s.settimeout(0.2)
    while time.monotonic() - started < limit_s:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


# ---- defect 8: slow clients ------------------------------------------------------------------------------------
def test_trickled_headers_are_cut_off_after_the_header_timeout(limited):
    s = raw_connection(limited)
    started = time.monotonic()
    s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
    closed = False
    try:
        for i in range(40):  # one header byte every 0.25 s: never a complete request
            s.sendall(b"X-Slow-%d: 1\r\n" % i if i % 4 == 0 else b"")
            time.sleep(0.25)
            if time.monotonic() - started > HEADER_TIMEOUT_S + 3:
                break
        data, _ = read_until_closed(s, 1.0)
        closed = True
    except (BrokenPipeError, ConnectionResetError):
        closed, data = True, b""
    held = time.monotonic() - started
    s.close()
    assert closed and held < HEADER_TIMEOUT_S + 4, f"the connection was held {held:.1f} s"
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]
    assert "request headers" in limited.log()


def test_idle_connection_without_a_request_is_closed(limited):
    s = raw_connection(limited)
    data, held = read_until_closed(s, HEADER_TIMEOUT_S + 10)
    s.close()
    assert held < HEADER_TIMEOUT_S + 3, f"an idle connection was held {held:.1f} s"


def test_stalled_body_gets_a_408_within_the_body_timeout(limited):
    s = raw_connection(limited)
    s.sendall(b"POST " + ENCODE.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + BUNDLE_TYPE.encode()
              + b"\r\nContent-Length: 100000\r\n\r\n" + MAGIC)
    data, held = read_until_closed(s, BODY_TIMEOUT_S + 10)
    s.close()
    assert data.startswith(b"HTTP/1.1 408"), (data[:300], held)
    assert held < BODY_TIMEOUT_S + 3
    assert b"stopped arriving" in data


def test_stalled_json_body_gets_a_408(limited):
    s = raw_connection(limited)
    s.sendall(b"POST " + ENCODE.encode() + b"/" + b"0" * 40 + b"/decode HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"box_xy\": ")
    data, held = read_until_closed(s, BODY_TIMEOUT_S + 10)
    s.close()
    assert data.startswith(b"HTTP/1.1 408"), (data[:300], held)


def test_declared_oversized_body_that_never_comes_is_answered_promptly(limited):
    s = raw_connection(limited)
    s.sendall(b"POST " + ENCODE.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + BUNDLE_TYPE.encode()
              + b"\r\nContent-Length: %d\r\n\r\n" % ((MAX_BODY_MB + 10) << 20))  # within the drain window
    data, held = read_until_closed(s, BODY_TIMEOUT_S + 10)
    s.close()
    assert data.startswith(b"HTTP/1.1 413"), (data[:300], held)
    assert held < BODY_TIMEOUT_S + 3


def test_the_service_still_serves_after_slow_clients(limited):
    client = HttpBackend(limited.url)
    handle = client.encode(np.full((64, 64, 3), 50, np.uint8))
    assert client.is_cached(handle.key)
    client.close()
    assert "Traceback" not in limited.log(), limited.log()[-3000:]


# ---- defect 5: memory ------------------------------------------------------------------------------------------
def post(service, path, body, headers, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data
    except (ConnectionResetError, BrokenPipeError) as exc:
        return 0, repr(exc).encode()
    finally:
        conn.close()


def gzip_of_zeros(n_bytes: int, prefix: bytes = b"") -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [c.compress(prefix)]
    block = bytes(1 << 20)
    for _ in range(n_bytes >> 20):
        parts.append(c.compress(block))
    parts.append(c.flush())
    return b"".join(parts)


def bundle_head(specs, meta=None) -> bytes:
    header = json.dumps({"meta": meta or {}, "arrays": specs}).encode()
    return struct.pack("<8sI", MAGIC, len(header)) + header


def test_concurrent_gzip_bombs_are_refused_without_inflating(limited):
    pid = limited.proc.pid
    hwm = proc_status_kb(pid, "VmHWM")
    bomb = gzip_of_zeros(4 << 30)  # 4 GB of zeros, about 4 MB sent
    valid_head = gzip_of_zeros(MAX_BODY_MB << 20, bundle_head(  # declares a picture, then zeros past its end
        [{"name": "image", "dtype": "uint8", "shape": [2048, 2048], "encoding": "raw"}]))
    assert len(bomb) < 8 << 20
    bodies = [bomb] * 6 + [valid_head] * 2
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: post(limited, ENCODE, b, {"Content-Type": BUNDLE_TYPE,
                                                                     "Content-Encoding": "gzip"}), bodies))
    for status, data in answers:
        assert 400 <= status < 500, (status, data[:300])
    grew_mb = (proc_status_kb(pid, "VmHWM") - hwm) / 1024
    assert grew_mb < 40, f"8 gzip bombs raised the server's peak RSS by {grew_mb:.0f} MB"


def test_declared_huge_picture_is_refused_before_its_body_is_read(limited):
    pid = limited.proc.pid
    hwm = proc_status_kb(pid, "VmHWM")
    # a grey 10000 x 6000 picture: 60 MB, within the body limit, but wider than the service's 8192 px per side
    head = bundle_head([{"name": "image", "dtype": "uint8", "shape": [10000, 6000], "encoding": "raw"}])
    s = raw_connection(limited)
    s.sendall(b"POST " + ENCODE.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + BUNDLE_TYPE.encode()
              + b"\r\nContent-Length: %d\r\n\r\n" % (len(head) + 60_000_000) + head)
    started = time.monotonic()
    s.settimeout(10)
    data = s.recv(65536)  # only the head is sent: the answer must not wait for the rest
    held = time.monotonic() - started
    data += read_until_closed(s, 0.5)[0]
    s.close()
    assert data.startswith(b"HTTP/1.1 422"), data[:300]
    assert b"10000 x 6000" in data and held < 5, (data[-300:], held)
    # a .npy that declares it
    npy_head = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + (
        "{'descr': '|u1', 'fortran_order': False, 'shape': (10000, 6000), }".ljust(117) + "\n").encode()
    status, answer = post(limited, ENCODE, npy_head + bytes(1 << 20), {"Content-Type": NPY_TYPE})
    assert status == 422 and b"10000 x 6000" in answer, answer[:300]
    grew_mb = (proc_status_kb(pid, "VmHWM") - hwm) / 1024
    assert grew_mb < 20, f"a refused 10000 x 10000 upload raised the server's peak RSS by {grew_mb:.0f} MB"


def test_concurrent_large_valid_uploads_stay_within_the_memory_budget(limited):
    """Eight clients each upload a 3000 x 3000 grey picture (9 MB sent, 36 MB to hold with its RGB copy): the
    budget admits two at a time, the others wait; all are encoded, and the peak stays within the budget."""
    pid = limited.proc.pid
    hwm = proc_status_kb(pid, "VmHWM")
    rng = np.random.default_rng(5)

    def upload(i):
        pic = np.repeat(rng.integers(0, 255, (3000, 3000, 1), dtype=np.uint8), 3, axis=2)
        pic[0, 0] = i  # eight different slices
        body = encode_bundle({}, {"image": pic[..., 0]})
        return post(limited, ENCODE, body, {"Content-Type": BUNDLE_TYPE})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(upload, range(8)))
    for status, data in answers:
        assert status == 200, (status, data[:300])
    grew_mb = (proc_status_kb(pid, "VmHWM") - hwm) / 1024
    assert grew_mb < UPLOAD_MEMORY_MB + 48, f"peak RSS grew {grew_mb:.0f} MB (budget {UPLOAD_MEMORY_MB} MB)"


def test_info_states_the_limits(limited):
    client = HttpBackend(limited.url)
    limits = client.info()["limits"]
    client.close()
    assert limits["max_upload_memory_bytes"] == UPLOAD_MEMORY_MB << 20
    assert limits["header_timeout_s"] == HEADER_TIMEOUT_S and limits["body_timeout_s"] == BODY_TIMEOUT_S


def test_a_jobs_slab_and_result_count_against_the_budget_until_it_is_deleted(limited):
    from samed.core.propagation import PropagationSettings

    client = HttpBackend(limited.url)
    rng = np.random.default_rng(9)
    pictures = rng.integers(0, 255, (5, 96, 96, 3), dtype=np.uint8)
    seed = np.zeros((96, 96), bool)
    seed[30:60, 30:60] = True
    job = client.start_propagation(pictures, 2, seed, PropagationSettings(max_slices=1))
    result = job.result(timeout=120)
    info = client.info()
    kept = sum(m.nbytes for m in result.masks.values())
    assert info["jobs"]["memory_bytes"] == kept == info["uploads"]["used_bytes"], (info, kept)
    job.delete()
    info = client.info()
    assert info["jobs"]["memory_bytes"] == 0 and info["uploads"]["used_bytes"] == 0, info
    client.close()


def test_serve_options_set_the_limits_and_refuse_nonsense():
    from samed.cli.main import build_parser
    from samed.cli.serve import config_from_args

    args = build_parser().parse_args(["serve", "--header-timeout", "3", "--body-deadline", "120",
                                      "--upload-memory-mb", "64", "--max-connections", "10"])
    config = config_from_args(args, None)
    assert (config.header_timeout_s, config.body_deadline_s, config.max_upload_memory_bytes,
            config.max_connections) == (3.0, 120.0, 64 << 20, 10)
    with pytest.raises(ValueError, match="--body-timeout must be a positive number"):
        config_from_args(build_parser().parse_args(["serve", "--body-timeout", "-1"]), None)
