"""HTTP for the client, standard library only (``http.client``): one kept-alive connection per thread, the
token, gzip, byte counters, and every network failure turned into an error a person can act on."""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional
from urllib.parse import quote, urlsplit

from .. import __version__
from .errors import ServiceAuthError, ServiceRequestError, ServiceTimeoutError, ServiceUnreachableError

# failures of a kept-alive connection that the server closed meanwhile: retried once on a fresh connection (over
# TLS, e.g. through a proxy that closed an idle connection, the close shows as an SSL EOF)
_STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


@dataclass
class Reply:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ServiceRequestError(f"the service sent a non-JSON answer (HTTP {self.status}, "
                                      f"{len(self.body)} bytes): is this really a samed service?", self.status) from None

    def detail(self) -> str:
        try:
            value = json.loads(self.body.decode("utf-8")).get("detail")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            value = None
        return str(value) if value is not None else self.body[:200].decode("utf-8", "replace")


class Transport:
    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 60.0, compress: bool = False,
                 explain_failure: Optional[Callable[[], Optional[str]]] = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the service URL must look like http://HOST:PORT, got {url!r}")
        self.url = url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")  # a service behind a reverse proxy at http://host/samed
        self.token = token
        self.timeout = float(timeout)
        self.compress = bool(compress)
        # when the connection fails: a better explanation, if the caller knows one (e.g. its child process died)
        self.explain_failure = explain_failure
        self._local = threading.local()
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.bytes_received = 0
        self._answered = False  # the service has answered this client before: a refusal now means it stopped

    # ---- connections -----------------------------------------------------------------------------------------
    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.timeout)
        self._local.conn = conn
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._drop()

    # ---- requests --------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Optional[bytes] = None, headers: Optional[dict] = None,
                timeout: Optional[float] = None) -> Reply:
        """Send one request; raise for network failures and 401, return any other reply (check ``status``)."""
        hdrs = {"User-Agent": f"samed-client/{__version__}", "Accept-Encoding": "gzip" if self.compress else "identity"}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        hdrs.update(headers or {})
        target = self.base_path + quote(path, safe="/:@-._~!$&'()*+,;=")
        wait = self.timeout if timeout is None else float(timeout)
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.timeout = wait
                if conn.sock is not None:
                    conn.sock.settimeout(wait)
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
            except socket.timeout:
                self._drop()
                raise ServiceTimeoutError(
                    f"the samed service at {self.url} did not answer {method} {path} within {wait:g} s: it may be "
                    f"overloaded or stuck; try again, or raise the timeout") from None
            except _STALE as exc:
                self._drop()
                if reused and attempt == 1:
                    continue  # the server closed an idle kept-alive connection: once more on a new one
                raise self._unreachable(
                    f"the samed service at {self.url} closed the connection during {method} {path} without "
                    f"answering ({type(exc).__name__}): it stopped or restarted (its log says why); what it was "
                    f"doing for this request is lost: send it again once the service is back") from None
            except OSError as exc:  # refused, no route, unknown host, TLS failure
                self._drop()
                if self._answered:
                    raise self._unreachable(
                        f"the samed service at {self.url} answered before but now refuses {method} {path} "
                        f"({exc.strerror or exc}): it has stopped (crashed or was shut down; its log says why). Work "
                        f"in progress there (encodes, propagation jobs) is lost: start it again and retry") from None
                raise self._unreachable(
                    f"cannot reach the samed service at {self.url} ({exc.strerror or exc}): is 'samed serve' running "
                    f"there, and are the host and port right?") from None
            if resp.will_close:
                self._drop()
            break
        with self._lock:
            self.bytes_sent += len(body or b"")
            self.bytes_received += len(data)
            self._answered = True
        encoding = (resp.getheader("Content-Encoding") or "").lower()
        if encoding == "gzip":
            try:
                data = zlib.decompress(data, 31)
            except zlib.error as exc:
                raise ServiceRequestError(f"corrupt gzip answer from {self.url}: {exc}", resp.status) from None
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        if reply.status == 401:
            raise ServiceAuthError(
                f"the samed service at {self.url} refused the token (HTTP 401): "
                + ("no token was given; pass the service's token (--token-file FILE or $SAMED_TOKEN)"
                   if not self.token else "the token is wrong; use the one the service was started with"))
        return reply

    def _unreachable(self, message: str) -> ServiceUnreachableError:
        better = self.explain_failure() if self.explain_failure is not None else None
        return ServiceUnreachableError(better or message)

    def expect(self, reply: Reply, what: str, ok=(200,)) -> Reply:
        """Raise :class:`ServiceRequestError` with the server's detail unless ``reply.status`` is in ``ok``."""
        if reply.status not in ok:
            detail = reply.detail()
            raise ServiceRequestError(f"{what} failed (HTTP {reply.status}): {detail}", reply.status, detail)
        return reply
