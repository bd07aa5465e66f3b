"""Two real `samed serve` replicas (LiteMedSAM, a token) behind real nginx running deploy/nginx.conf (only the
upstream servers, the listen address and the certificate paths swapped), TLS at nginx, all on 127.0.0.1, nginx run
as this user with its pid, logs and temporary files in a temporary folder.

Clients encode and decode through nginx: no decode misses its embedding (each slice is encoded once over both
replicas, no decode answered 404, every request about a slice reached one replica); a propagation job polls to
completion through the proxy; then one replica is killed: its slices are re-encoded on the other one transparently
(the same handles decode), and a job that was running there fails with a clear message naming it."""
from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, ServiceProcess, free_loopback_port

from samed.client import HttpBackend, JobLostError
from samed.core.backend import image_key
from samed.core.prompts import Prompt
from samed.core.propagation import PropagationSettings

TOKEN = "scale-test-token"
SLICES = [4, 6, 8, 10, 12, 14, 16, 18, 20, 22]  # of mr-brain-tumor (the tumour: 11..17)
SEED = 14


def nginx_binary() -> str:
    """nginx from Debian's package; installed here if missing (as scripts/setup.sh installs it)."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx",
                       shell=True, check=False, capture_output=True, timeout=600)
        found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        pytest.fail("nginx is not installed and could not be installed here: apt-get install nginx (Debian), or "
                    "run scripts/setup.sh --test as root")
    return found


def self_signed_certificate(folder: Path):
    crt, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return crt, key


def site_config(replicas, port: int, crt: Path, key: Path, access_log: Path) -> str:
    """deploy/nginx.conf with this test's replicas, listen address, certificate and log."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "hash $http_x_samed_route consistent;" in text
    servers = "".join(f"    server 127.0.0.1:{r.port} max_fails=1 fail_timeout=10s;\n" for r in replicas)
    text, n = re.subn(r"(?m)^    server samed-\d+\S* [^\n]*\n", "", text)
    assert n == 2, "deploy/nginx.conf: the upstream's server lines changed; update this test"
    text = text.replace("    keepalive 32;", servers + "    keepalive 32;")
    swaps = {"listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;", "/etc/nginx/tls/tls.crt": str(crt),
             "/etc/nginx/tls/tls.key": str(key), "/var/log/nginx/samed.access.log": str(access_log)}
    for old, new in swaps.items():
        assert old in text, f"deploy/nginx.conf no longer has {old!r}; update this test"
        text = text.replace(old, new)
    return text


class Nginx:
    """nginx in the foreground, as this user, everything it writes under ``prefix``."""

    def __init__(self, binary: str, prefix: Path, site: str):
        for d in ("logs", "client_temp", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp"):
            (prefix / d).mkdir(parents=True, exist_ok=True)
        user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""  # workers stay this user
        (prefix / "samed.conf").write_text(site)
        (prefix / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log "
            f"warn;\nevents {{ worker_connections 256; }}\nhttp {{\n  client_body_temp_path {prefix}/client_temp;\n"
            f"  proxy_temp_path {prefix}/proxy_temp;\n  fastcgi_temp_path {prefix}/fastcgi_temp;\n"
            f"  uwsgi_temp_path {prefix}/uwsgi_temp;\n  scgi_temp_path {prefix}/scgi_temp;\n"
            f"  access_log {prefix}/logs/access.log;\n  include {prefix}/samed.conf;\n}}\n")
        args = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "logs/error.log")]
        check = subprocess.run(args + ["-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.prefix = prefix

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_until_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def read_access_log(path: Path):
    """(method, path, route, upstreams, upstream statuses, status) per request."""
    out = []
    pattern = re.compile(r'"(\S+) (\S+) [^"]*" (\d+) route=(\S*) upstream=(.*?) upstream_status=(.*?) [\d.]+s$')
    text = path.read_text()
    for line in text[:text.rfind("\n") + 1].splitlines():  # a line nginx is still writing is left for next time
        m = pattern.search(line)
        assert m, line
        method, target, status, route, ups, ups_status = m.groups()
        out.append((method, target, "" if route == "-" else route, [u.strip() for u in ups.split(",")],
                    ups_status, int(status)))
    return out


def logged(path: Path, wanted, timeout_s: float = 15.0):
    """The access log's entries once one satisfies ``wanted`` (nginx writes a request's line after its response
    has gone: a client can read the answer before the line is there)."""
    deadline = time.monotonic() + timeout_s
    while True:
        entries = read_access_log(path)
        if any(wanted(e) for e in entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def counters(replica) -> dict:
    req = urllib.request.Request(replica.url + "/v1/info", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        import json

        m = json.load(r)["models"]["litemedsam"]
    return {"encoder_runs": m["encoder_runs"], "decodes": m["decodes"]}


def tumour_box(mask2d, margin=4):
    rows, cols = np.nonzero(mask2d)
    return [cols.min() - margin, rows.min() - margin, cols.max() + margin, rows.max() + margin]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {**os.environ, "SAMED_TOKEN": TOKEN}
    replicas = []
    try:
        for _ in range(2):
            replicas.append(ServiceProcess("--no-access-log", "--log-level", "warning", "--cache-mb", "256",
                                           env=env))
        prefix = tmp_path_factory.mktemp("nginx")
        crt, key = self_signed_certificate(prefix)
        port = free_loopback_port()
        nginx = Nginx(nginx_binary(), prefix, site_config(replicas, port, crt, key, prefix / "logs/samed.log"))
        old_ca = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = str(crt)  # the client verifies nginx's certificate (Python's default context)
        try:
            wait_until_up(f"https://127.0.0.1:{port}")
            yield {"replicas": replicas, "url": f"https://127.0.0.1:{port}", "log": prefix / "logs/samed.log",
                   "nginx": nginx}
        finally:
            if old_ca is None:
                os.environ.pop("SSL_CERT_FILE", None)
            else:
                os.environ["SSL_CERT_FILE"] = old_ca
            nginx.stop()
    finally:
        for r in replicas:
            r.stop()


def test_decodes_find_their_embedding_jobs_poll_through_the_proxy_and_a_lost_replica(stack, brain):
    pictures, label = brain
    replicas, url, log = stack["replicas"], stack["url"], stack["log"]
    by_port = {f"127.0.0.1:{r.port}": r for r in replicas}
    before = {r.port: counters(r) for r in replicas}

    # ---- three clients at once, each encoding every slice and decoding a box on it three times ----------------
    box = Prompt(box_xy=tumour_box(label[SEED]))
    clients = [HttpBackend(url, token=TOKEN, keep_pictures=len(SLICES)) for _ in range(3)]
    handles = [{} for _ in clients]
    errors = []

    def work(n):
        try:
            order = SLICES[n:] + SLICES[:n]  # the clients start on different slices
            for s in order:
                handles[n][s] = clients[n].encode(pictures[s])
                for _ in range(3):
                    clients[n].decode(handles[n][s], box)
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    after = {r.port: counters(r) for r in replicas}
    encoded = {p: after[p]["encoder_runs"] - before[p]["encoder_runs"] for p in after}
    decoded = {p: after[p]["decodes"] - before[p]["decodes"] for p in after}
    assert sum(encoded.values()) == len(SLICES), encoded  # each slice encoded once, over both replicas
    assert sum(decoded.values()) == 3 * 3 * len(SLICES), decoded  # no decode sent twice
    assert all(n > 0 for n in encoded.values()), f"the ring gave every slice to one replica: {encoded}"

    # every request about a slice reached one replica, and no decode was answered 404 (a miss)
    requests = read_access_log(log)
    where = defaultdict(set)
    keys = {image_key("litemedsam", pictures[s]): s for s in SLICES}
    for method, target, route, ups, _, status in requests:
        if "/embeddings" in target:
            assert route in keys or (method == "POST" and target.endswith("/embeddings")), (method, target, route)
            where[route].update(ups)
            if target.endswith("/decode"):
                assert status == 200, (method, target, status)
    assert set(where) == set(keys) and all(len(u) == 1 for u in where.values()), dict(where)
    home = {keys[k]: next(iter(u)) for k, u in where.items()}  # slice -> the replica that holds it

    # ---- a propagation job polls to completion through the proxy ------------------------------------------------
    client = clients[0]
    job = client.start_propagation(pictures, SEED, label[SEED], PropagationSettings(max_slices=2))
    job.poll_interval = 0.1
    result = job.result(timeout=300)
    assert len(result.indices) >= 3 and result.masks[SEED].any()
    job_requests = [r for r in read_access_log(log) if "/jobs/" in r[1] or r[1].endswith("/propagations")]
    assert {r[2] for r in job_requests} == {job.route} and len({r[3][0] for r in job_requests}) == 1, job_requests
    assert sum(1 for r in job_requests if r[1].endswith(f"/jobs/{job.id}")) >= 1

    # ---- a long job, then its replica dies ----------------------------------------------------------------------
    patient = PropagationSettings(min_area_px=1, min_area_ratio=0.0, max_area_ratio=1e9, min_overlap=0.0)
    long_job = client.start_propagation(pictures, SEED, label[SEED], patient, directions=("down",))
    assert long_job.progress().state in ("queued", "running")
    polled = lambda r: r[1].endswith(f"/jobs/{long_job.id}")  # noqa: E731
    job_home = [r for r in logged(log, polled) if polled(r)][-1][3][-1]
    victim = by_port[job_home]
    survivor = next(r for r in replicas if r is not victim)
    victim.proc.kill()
    victim.proc.wait(30)
    moved = [s for s in SLICES if home[s] == job_home]
    stayed = [s for s in SLICES if home[s] != job_home]
    assert moved, home
    base = counters(survivor)
    # the same handles decode: the victim's slices are sent again (one 404 each), the survivor's are still there
    for s in SLICES:
        masks = client.decode(handles[0][s], box).masks
        assert masks.shape[1:] == pictures[s].shape[:2]
    now = counters(survivor)
    assert now["encoder_runs"] - base["encoder_runs"] == len(moved), (moved, stayed)
    with pytest.raises(JobLostError, match=rf"propagation job {long_job.id} .*not known to the samed service.*"
                                           rf"start the propagation again"):
        long_job.result(timeout=120)
    for c in clients:
        c.close()
    print(f"replica {job_home} killed: {len(moved)} slices re-encoded on the other, {len(stayed)} stayed; the job "
          f"there: JobLostError")
