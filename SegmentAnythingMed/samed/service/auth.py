"""Who may talk to the service: loopback-only by default, a bearer token for anything else.

* Binding a non-loopback address (``0.0.0.0``, a LAN address, a host name) without a token refuses to start.
* With a token, every request must carry ``Authorization: Bearer <token>``, compared in constant time
  (``hmac.compare_digest``); a missing or wrong token is a 401 before the body is read, and the log line names
  only the method, the path and the peer, never any image data.
* Open without a token: ``/v1/health`` and ``/`` (liveness and API version, no data, no compute) and the OpenAPI
  description (``/openapi.json``, ``/docs``), so that a load balancer can probe the service and a client can
  report a version mismatch before it knows whether its token is right.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
from typing import Iterable, Optional

from .logs import ThrottledWarnings, install_log_redaction  # noqa: F401 (re-exported for server.py)
from .wire import API_PREFIX

log = logging.getLogger("samed.service")

TOKEN_ENV = "SAMED_TOKEN"
MIN_TOKEN_CHARS = 16
OPEN_PATHS = frozenset({"/", f"{API_PREFIX}/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))' > token.txt"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; False for 0.0.0.0, :: and every other address or name."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to a network address
        return False


def load_token(token_file: Optional[str] = None, environ=None) -> Optional[str]:
    """The token from ``token_file`` (first line) or ``$SAMED_TOKEN``; None if neither is given."""
    environ = os.environ if environ is None else environ
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.readline().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from None
        source = f"token file {token_file}"
    else:
        token = (environ.get(TOKEN_ENV) or "").strip()
        source = f"${TOKEN_ENV}"
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the token in {source} has {len(token)} characters; use at least {MIN_TOKEN_CHARS}, "
                         f"e.g. {TOKEN_HINT}")
    return token


def check_exposure(host: str, token: Optional[str]) -> None:
    """Refuse to serve a non-loopback address without a token (``ValueError`` with what to do)."""
    if token is None and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} without a token: anyone who can reach this machine could use the "
            f"model. Create a token ({TOKEN_HINT}) and pass --token-file token.txt (or set ${TOKEN_ENV}); "
            f"clients pass the same token. To serve only this machine, use --host 127.0.0.1.")


def _token_in_query(query: bytes) -> bool:
    from urllib.parse import parse_qsl

    names = {k.lower() for k, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)}
    return bool(names & {"token", "access_token", "api_key", "apikey", "auth", "authorization"})


def _send_json_factory(send):
    async def send_json(status: int, detail: str, headers: Iterable = ()):
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())] + list(headers)})
        await send({"type": "http.response.body", "body": body})
    return send_json


class TokenGuard:
    """ASGI middleware: every request outside :data:`OPEN_PATHS` needs ``Authorization: Bearer <token>``."""

    def __init__(self, app, token: Optional[str], warnings: Optional[ThrottledWarnings] = None):
        self.app = app
        self._token = token.encode("utf-8") if token else None
        self._warnings = warnings or ThrottledWarnings()

    def authorized(self, scope) -> bool:
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, rest = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = rest.strip()
                break
        # compare_digest on equal-type bytes: time does not depend on where a wrong token differs
        return hmac.compare_digest(given, self._token)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _token_in_query(scope.get("query_string", b"")):
            # a token in a URL ends up in access logs, proxies' logs and browser histories: refuse it
            await _send_json_factory(send)(
                400, "do not put the token in the URL (?token=...): URLs are written to logs; send it in the "
                     "header 'Authorization: Bearer <token>'", [(b"connection", b"close")])
            return
        if self._token is None or scope["type"] != "http" or scope.get("path") in OPEN_PATHS \
                or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("?", 0)
        self._warnings.warn(f"401 {scope.get('method')} {str(scope.get('path'))[:200]}", str(client[0]),
                            "401: request without a valid token: %s %s from %s",
                            scope.get("method"), scope.get("path"), client[0])
        await _send_json_factory(send)(
            401, "missing or wrong token: send 'Authorization: Bearer <token>' with the service's token "
                 f"(samed: --token-file FILE or ${TOKEN_ENV}; Slicer: the token field of the model service)",
            [(b"www-authenticate", b"Bearer")])
