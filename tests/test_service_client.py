"""The client's errors and the wire format, without a model: a closed port, a server that is not samed, one that
speaks another API version, one too slow to answer, a job that fails. Fake servers are stdlib ``http.server``
threads on 127.0.0.1."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from conftest import free_loopback_port

from samed.client import (ApiVersionError, HttpBackend, JobFailedError, JobTimeoutError, ServiceRequestError,
                          ServiceTimeoutError, ServiceUnreachableError, needed_slab, start_propagation)
from samed.core.backend import Backend, BackendError, EmbeddingHandle
from samed.core.propagation import PropagationSettings
from samed.service.wire import (WireError, decode_bundle, decode_npy, decompress_body, encode_bundle, encode_npy,
                                gzip_bytes, mask_from_json, mask_to_json, pack_pictures, unpack_pictures)

INFO = {"service": "samed", "version": "0.1.0", "api_version": 1, "status": "ok", "device": "cpu",
        "models": {"litemedsam": {"prompt_kinds": ["box"], "encoder_runs": 0, "decodes": 0}},
        "cache": {}, "jobs": {}, "limits": {"max_body_bytes": 1 << 20}, "auth": "none"}


class FakeService:
    """``routes``: (method, path) -> (status, JSON body) or a callable returning one."""

    def __init__(self, routes):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append((self.command, self.path))
                outer.headers.append(dict(self.headers))
                found = routes.get((self.command, self.path), (404, {"detail": "Not Found"}))
                status, body = found() if callable(found) else found
                raw = isinstance(body, bytes)  # a samed bundle, as is
                data = body if raw else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-samed-bundle" if raw else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.requests = []
        self.headers = []  # of each request, in order
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    servers = []

    def make(routes):
        s = FakeService(routes)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def samed_routes(extra=None):
    routes = {("GET", "/v1/health"): (200, {k: INFO[k] for k in ("service", "version", "api_version", "status")}),
              ("GET", "/v1/info"): (200, INFO)}
    routes.update(extra or {})
    return routes


def test_unreachable_service():
    with pytest.raises(ServiceUnreachableError, match="is 'samed serve' running"):
        HttpBackend(f"http://127.0.0.1:{free_loopback_port()}", timeout=5)


def test_not_a_samed_service_or_another_api_version(fake):
    with pytest.raises(ApiVersionError, match="not a samed model service"):
        HttpBackend(fake({}).url)
    old = fake({("GET", "/"): (200, {"service": "samed", "api_versions": [0]})})
    with pytest.raises(ApiVersionError, match=r"speaks API version\(s\) \[0\], this client speaks 1"):
        HttpBackend(old.url)
    newer = fake({("GET", "/v1/health"): (200, {"service": "samed", "version": "9.0", "api_version": 2})})
    with pytest.raises(ApiVersionError, match="speaks API version 2"):
        HttpBackend(newer.url)
    with pytest.raises(ApiVersionError, match="not a samed model service"):
        HttpBackend(fake({("GET", "/v1/health"): (200, {"status": "ok"})}).url)


def test_model_not_served(fake):
    with pytest.raises(BackendError, match="does not serve model 'sam_vit_b'.*litemedsam"):
        HttpBackend(fake(samed_routes()).url, model="sam_vit_b")


def test_timeout(fake):
    def slow():
        time.sleep(1.5)
        return 200, INFO

    server = fake(samed_routes({("GET", "/v1/info"): slow}))
    with pytest.raises(ServiceTimeoutError, match="did not answer GET /v1/info within 0.5 s"):
        HttpBackend(server.url, timeout=0.5)


def test_remote_job_failure_and_timeout(fake):
    status = {"id": "j1", "model": "litemedsam", "state": "running", "done": 1, "total": 4, "error": None,
              "seed_index": 1, "first_index": 0, "slab_slices": 3, "seconds": 0.1}
    states = iter(["running", "running", "failed"])

    def progress():
        s = next(states, "failed")
        return 200, dict(status, state=s, error="RuntimeError: CUDA out of memory" if s == "failed" else None)

    server = fake(samed_routes({("POST", "/v1/models/litemedsam/propagations"): (202, status),
                                ("GET", "/v1/jobs/j1"): progress}))
    client = HttpBackend(server.url)
    pictures = np.zeros((3, 8, 8, 3), np.uint8)
    seed = np.zeros((8, 8), bool)
    seed[2:5, 2:5] = True
    job = client.start_propagation(pictures, 1, seed)
    job.poll_interval = 0.01
    assert job.progress().state == "running"
    with pytest.raises(JobFailedError, match="CUDA out of memory"):
        job.result(timeout=5)
    stuck = iter(lambda: (200, status), None)
    server2 = fake(samed_routes({("POST", "/v1/models/litemedsam/propagations"): (202, status),
                                 ("GET", "/v1/jobs/j1"): lambda: next(stuck)}))
    job = HttpBackend(server2.url).start_propagation(pictures, 1, seed)
    with pytest.raises(JobTimeoutError, match="still running after 0.2 s"):
        job.result(timeout=0.2)


def test_client_refuses_uploads_over_the_service_limit_before_sending(fake):
    server = fake(samed_routes())
    client = HttpBackend(server.url)
    big = np.random.default_rng(0).integers(0, 255, (4, 400, 400, 3), dtype=np.uint8)
    seed = np.ones((400, 400), bool)
    with pytest.raises(ServiceRequestError, match="more than the 1 MB the service") as err:
        client.start_propagation(big, 1, seed)
    assert err.value.status == 413
    assert not any(p.endswith("/propagations") for _, p in server.requests)


class _FailingBackend(Backend):
    model = "fake"

    def info(self):
        return {}

    def prompt_kinds(self):
        return frozenset({"box"})

    def encode(self, image_rgb):
        return EmbeddingHandle("k", "fake", image_rgb.shape[:2])

    def decode(self, handle, prompt, multimask=None):
        raise BackendError("the GPU caught fire")


def test_local_job_reports_failures_and_checks_its_input():
    pictures = np.zeros((5, 8, 8, 3), np.uint8)
    seed = np.zeros((8, 8), bool)
    seed[2:5, 2:5] = True
    job = start_propagation(_FailingBackend(), pictures, 2, seed)
    with pytest.raises(JobFailedError, match="the GPU caught fire"):
        job.result(timeout=10)
    assert job.progress().state == "failed"
    with pytest.raises(ValueError, match="empty"):
        start_propagation(_FailingBackend(), pictures, 2, np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="not among the pictures"):
        start_propagation(_FailingBackend(), pictures, 9, seed)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        start_propagation(_FailingBackend(), pictures.astype(float), 2, seed)


def test_needed_slab():
    assert needed_slab(30, 10) == (0, 29)
    assert needed_slab(30, 10, PropagationSettings(max_slices=3)) == (7, 13)
    assert needed_slab(30, 10, PropagationSettings(index_range=(5, 12))) == (5, 12)
    assert needed_slab(30, 10, directions=("up",)) == (10, 29)
    assert needed_slab(30, 10, PropagationSettings(max_slices=2), directions=("down",)) == (8, 10)
    with pytest.raises(ValueError):
        needed_slab(30, 10, directions=("sideways",))


# ---- the wire format -------------------------------------------------------------------------------------------
def test_bundle_round_trip_and_bit_packed_masks():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 37, 41)) > 0.5
    arrays = {"masks": masks, "logits": rng.random((3, 8, 8)).astype(np.float32),
              "picture": rng.integers(0, 255, (5, 7, 3), dtype=np.uint8), "ids": np.arange(4, dtype=np.int32)}
    body = encode_bundle({"scores": [0.5, 0.25], "name": "x"}, arrays)
    assert len(body) < 3 * 37 * 41 // 8 + 3 * 8 * 8 * 4 + 5 * 7 * 3 + 16 + 400  # masks travel at 1 bit per pixel
    out = decode_bundle(body, 1 << 20)
    assert out.meta == {"scores": [0.5, 0.25], "name": "x"}
    for name, arr in arrays.items():
        assert out.arrays[name].dtype == arr.dtype
        np.testing.assert_array_equal(out.arrays[name], arr)
    with pytest.raises(WireError) as err:
        decode_bundle(body, 1000)
    assert err.value.status == 413
    with pytest.raises(WireError, match="unexpected bytes"):
        decode_bundle(body + b"x", 1 << 20)


def test_grey_pictures_travel_as_one_channel():
    grey = np.random.default_rng(2).integers(0, 255, (4, 6, 5), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    packed = pack_pictures(rgb)
    assert packed.shape == (4, 6, 5)
    np.testing.assert_array_equal(unpack_pictures(packed, 4), rgb)
    colour = rgb.copy()
    colour[0, 0, 0, 1] += 1
    assert pack_pictures(colour).shape == (4, 6, 5, 3)


def test_npy_mask_json_and_gzip_helpers():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    np.testing.assert_array_equal(decode_npy(encode_npy(arr), 1 << 10), arr)
    np.testing.assert_array_equal(decode_npy(encode_npy(np.asfortranarray(arr)), 1 << 10), arr)
    mask = np.random.default_rng(3).random((9, 13)) > 0.7
    m = mask_to_json(mask)
    np.testing.assert_array_equal(mask_from_json(m["shape"], m["bits_b64"], 1000), mask)
    data = b"abc" * 1000
    assert decompress_body(gzip_bytes(data), "gzip", 10 ** 4) == data
    with pytest.raises(WireError) as err:
        decompress_body(gzip_bytes(data), "gzip", 100)
    assert err.value.status == 413
    with pytest.raises(WireError, match="truncated"):
        decompress_body(gzip_bytes(data)[:-12], "gzip", 10 ** 4)


# ---- routing behind a consistent-hash proxy (docs/deploy.md) ---------------------------------------------------
def test_every_request_about_a_slice_carries_its_key_as_route_also_when_resent(fake):
    """HEAD (cache check), the upload and every decode name the slice's key in X-Samed-Route; a decode answered 404
    (evicted, or its key moved to another replica) uploads the slice again, with the same route, and decodes."""
    from samed.core.backend import image_key
    from samed.core.prompts import Prompt

    picture = np.random.default_rng(3).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    key = image_key("litemedsam", picture)
    emb = f"/v1/models/litemedsam/embeddings/{key}"
    decodes = iter([(404, {"detail": "not cached here"})])
    answer = encode_bundle({"scores": [0.75]}, {"masks": np.ones((1, 8, 8), bool)})
    server = fake(samed_routes({("HEAD", emb): (404, {}), ("POST", "/v1/models/litemedsam/embeddings"): (200,
                                                                                                      {"key": key}),
                                ("POST", emb + "/decode"): lambda: next(decodes, (200, answer))}))
    client = HttpBackend(server.url)
    handle = client.encode(picture)
    prediction = client.decode(handle, Prompt(box_xy=[1, 1, 5, 5]))
    assert prediction.masks.shape == (1, 8, 8) and prediction.masks.all()
    about_slice = [(r, h) for r, h in zip(server.requests, server.headers) if "/embeddings" in r[1]]
    assert [r for r, _ in about_slice] == [("HEAD", emb), ("POST", "/v1/models/litemedsam/embeddings"),
                                           ("POST", emb + "/decode"), ("POST", "/v1/models/litemedsam/embeddings"),
                                           ("POST", emb + "/decode")]
    assert [h.get("X-Samed-Route") for _, h in about_slice] == [key] * 5


def test_a_job_keeps_its_route_and_a_job_lost_with_its_replica_is_a_clear_error(fake):
    """The job's route (its seed slice's key) goes with the start, every poll, the cancel and the result; when the
    replica that ran it is gone the next one answers 404: JobLostError (a JobFailedError) naming the job."""
    from samed.client import JobLostError
    from samed.core.backend import image_key

    pictures = np.random.default_rng(4).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    seed = np.zeros((8, 8), bool)
    seed[2:5, 2:5] = True
    status = {"id": "j7", "model": "litemedsam", "state": "running", "done": 1, "total": 3, "error": None}
    polls = iter([(200, status), (200, dict(status, state="done", done=3))])
    result = encode_bundle({"seed_index": 1, "indices": [1], "scores": [0.5], "stopped": {}},
                           {"masks": seed[None]})
    server = fake(samed_routes({("POST", "/v1/models/litemedsam/propagations"): (202, status),
                                ("GET", "/v1/jobs/j7"): lambda: next(polls, (404, {"detail": "no job j7"})),
                                ("POST", "/v1/jobs/j7/cancel"): (200, status),
                                ("GET", "/v1/jobs/j7/result"): (200, result)}))
    job = HttpBackend(server.url).start_propagation(pictures, 1, seed)
    job.poll_interval = 0.01
    route = image_key("litemedsam", pictures[1])
    assert job.route == route
    job.cancel()
    assert job.result(timeout=5).masks[1].sum() == 9
    about_job = [(r, h) for r, h in zip(server.requests, server.headers) if "/jobs/" in r[1] or "propag" in r[1]]
    assert [r[1] for r, _ in about_job] == ["/v1/models/litemedsam/propagations", "/v1/jobs/j7/cancel",
                                            "/v1/jobs/j7", "/v1/jobs/j7", "/v1/jobs/j7/result"]
    assert {h.get("X-Samed-Route") for _, h in about_job} == {route}
    with pytest.raises(JobLostError, match=r"propagation job j7 .*not known to the samed service.*start the "
                                           r"propagation again") as err:
        job.progress()
    assert isinstance(err.value, JobFailedError) and err.value.status == 404
    job.delete()  # forgetting a job the service has forgotten already is no error


def test_a_tls_connection_the_proxy_closed_while_idle_is_reopened(tmp_path, monkeypatch):
    """A TLS proxy (nginx: keepalive_timeout) closes an idle kept-alive connection without a word; the next request
    on it fails with an SSL EOF. The client retries it once on a fresh connection, as it does over plain HTTP."""
    import ssl
    import subprocess

    crt, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    health = json.dumps({k: INFO[k] for k in ("service", "version", "api_version", "status")}).encode()
    answers = {"/v1/health": health, "/v1/info": json.dumps(INFO).encode()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            data = answers[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = True  # closed after each answer, though the answer promised keep-alive

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(crt), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(crt))
    try:
        client = HttpBackend(f"https://127.0.0.1:{server.server_address[1]}")  # health, then info: a reused one
        time.sleep(0.3)  # idle: the server has closed the connection meanwhile
        reply = client._t.request("POST", "/v1/info", bytes(8 << 20))  # a big upload on the closed connection
        assert reply.status == 200 and reply.json()["service"] == "samed"
        client.close()
    finally:
        server.shutdown()
        server.server_close()
