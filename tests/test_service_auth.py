"""Exposure and the token: a non-loopback --host without a token refuses to start; with a token (served on
127.0.0.1 here: no traffic ever goes to another address) every request without it, or with a wrong one, is a 401
that logs no image data."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, ServiceProcess

from samed.client import HttpBackend, ServiceAuthError
from samed.core.backend import image_key
from samed.service.auth import check_exposure, is_loopback, load_token
from samed.service.wire import BUNDLE_TYPE, encode_bundle

TOKEN = "test-token-0123456789-abcdefghij"


def _env_without_token():
    return {k: v for k, v in os.environ.items() if k != "SAMED_TOKEN"}


def _serve(*args, env=None, timeout=60):
    env = dict(env or _env_without_token())
    env["PYTHONPATH"] = str(ROOT / "SegmentAnythingMed")
    return subprocess.run([sys.executable, "-m", "samed.cli.main", "serve", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(ROOT))


@pytest.fixture(scope="module")
def token_service(tmp_path_factory):
    token_file = tmp_path_factory.mktemp("token") / "token.txt"
    token_file.write_text(TOKEN + "\n")
    service = ServiceProcess("--token-file", str(token_file), "--log-level", "info", env=_env_without_token())
    yield service
    service.stop()


def request(service, method, path, token=None, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp
    finally:
        conn.close()


def test_non_loopback_host_without_token_refuses_to_start():
    for host in ("0.0.0.0", "samed.example.org"):  # more addresses: test_exposure_rules
        done = _serve("--host", host, "--port", "8765")
        assert done.returncode == 2, done.stderr
        assert f"refusing to listen on {host} without a token" in done.stderr
        assert "--token-file" in done.stderr and "Traceback" not in done.stderr


def test_weak_or_unreadable_token_refuses_to_start(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    done = _serve("--host", "0.0.0.0", "--token-file", str(short))
    assert done.returncode == 2 and "at least 16" in done.stderr
    done = _serve("--token-file", str(tmp_path / "missing.txt"))
    assert done.returncode == 2 and "cannot read the token file" in done.stderr


def test_exposure_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.1")
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", TOKEN)
    with pytest.raises(ValueError, match="refusing"):
        check_exposure("0.0.0.0", None)
    assert load_token(None, {"SAMED_TOKEN": f"  {TOKEN} "}) == TOKEN
    assert load_token(None, {}) is None


def test_requests_without_or_with_a_wrong_token_are_401(token_service):
    for token in (None, "", "wrong-token-0123456789-abcdefghij", TOKEN[:-1], TOKEN + "x"):
        for method, path in (("GET", "/v1/info"), ("HEAD", "/v1/models/litemedsam/embeddings/" + "0" * 40),
                             ("GET", "/v1/jobs/" + "f" * 32)):
            status, body, resp = request(token_service, method, path, token)
            assert status == 401, (token, path, status)
            assert resp.getheader("WWW-Authenticate") == "Bearer"
            if method != "HEAD":
                assert "token" in json.loads(body)["detail"]
    status, body, _ = request(token_service, "GET", "/v1/info", TOKEN)
    assert status == 200 and json.loads(body)["auth"] == "token"
    status, body, _ = request(token_service, "GET", "/v1/health")  # open: liveness and API version only
    assert status == 200 and json.loads(body)["api_version"] == 1


def test_a_refused_upload_is_not_read_and_logs_no_image_data(token_service):
    picture = np.full((32, 32, 3), 77, np.uint8)
    key = image_key("litemedsam", picture)
    status, body, _ = request(token_service, "POST", "/v1/models/litemedsam/embeddings", "wrong-token-0123456789xyz",
                              encode_bundle({"patient": "Jane Doe"}, {"image": picture}),
                              {"Content-Type": BUNDLE_TYPE, "X-Samed-Key": key})
    assert status == 401
    log = token_service.log()
    assert "401: request without a valid token: POST /v1/models/litemedsam/embeddings from 127.0.0.1" in log
    assert key not in log and "Jane Doe" not in log and "wrong-token" not in log


def test_client_reports_a_wrong_or_missing_token(token_service):
    with pytest.raises(ServiceAuthError, match="no token was given"):
        HttpBackend(token_service.url)
    with pytest.raises(ServiceAuthError, match="the token is wrong"):
        HttpBackend(token_service.url, token="wrong-token-0123456789-abcdefghij")
    client = HttpBackend(token_service.url, token=TOKEN)
    assert client.info()["models"]["litemedsam"]["prompt_kinds"] == ["box"]
    assert client.is_cached("0" * 40) is False
    client.close()


# ---- logs (issue 12, defect 11) --------------------------------------------------------------------------------
def test_a_token_in_the_url_is_refused_and_never_logged(token_service):
    for path in (f"/v1/info?token={TOKEN}", f"/v1/health?access_token={TOKEN}", f"/v1/info?x=1&Token={TOKEN}"):
        status, body, _ = request(token_service, "GET", path)
        assert status == 400, (path, status, body)
        assert "Authorization: Bearer" in json.loads(body)["detail"]
    status, _, _ = request(token_service, "GET", f"/v1/info?token={TOKEN}", TOKEN)  # even with the header
    assert status == 400
    assert TOKEN not in token_service.log(), "the token was written to the service's log"
    assert TOKEN[:12] not in token_service.log()


def test_repeated_401s_are_aggregated_in_the_log(token_service):
    before = token_service.log().count("WARNING")
    for _ in range(60):
        status, _, _ = request(token_service, "GET", "/v1/jobs/" + "e" * 32, "wrong-token-0123456789-abcdefghij")
        assert status == 401
    warnings = token_service.log().count("WARNING") - before
    assert warnings <= 1, f"60 refused requests added {warnings} WARNING lines"


def test_log_redaction_filter():
    import logging

    from samed.service.logs import RedactSecrets, ThrottledWarnings, redact

    assert redact("GET /v1/info?token=abc&x=1") == "GET /v1/info?token=[redacted]&x=1"
    assert redact("/v1/x?a=1&ACCESS_TOKEN=s3cret") == "/v1/x?a=1&ACCESS_TOKEN=[redacted]"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", f"/v1/info?token={TOKEN}", "1.1", 400), None)
    RedactSecrets().filter(record)
    assert TOKEN not in record.getMessage() and "[redacted]" in record.getMessage()
    seen = []
    throttle = ThrottledWarnings(window_s=0.2)
    import samed.service.logs as logs

    class Capture(logging.Handler):
        def emit(self, rec):
            seen.append(rec.getMessage())

    handler = Capture()
    logs.log.addHandler(handler)
    try:
        for _ in range(5):
            throttle.warn("401", "10.0.0.1", "refused %s", "x")
        throttle.warn("401", "10.0.0.2", "refused %s", "y")
        import time

        time.sleep(0.25)
        throttle.warn("401", "10.0.0.1", "refused %s", "z")
    finally:
        logs.log.removeHandler(handler)
    assert seen[0] == "refused x" and seen[1] == "refused y"
    assert seen[2].startswith("refused z (and 4 more like it from 10.0.0.1") and len(seen) == 3
