"""Request body limits: size, time and memory.

* Size: refused by ``Content-Length`` before reading, and again while the body streams in (a chunked upload, or a
  client that lies about its length), so an oversized body never fills the memory. Uploads (encode, propagation)
  may be ``max_body_bytes``; every other body (JSON prompts) ``max_json_bytes``.
* Time: a body that stops arriving for ``body_timeout_s`` (or is not complete after ``body_deadline_s``) gets a
  408 and the connection is closed. (The request head has its own timeout: ``server.py``.)
* Memory: a JSON body reserves ``JSON_EXPANSION`` times its length from the service's :class:`MemoryBudget`
  before it is read (parsing and a mask prompt's bits take that much); uploads reserve in ``uploads.py``, where
  their declared shapes are known.

The rest of a refused body is read and discarded (up to ``drain_bytes``, within the body timeout) before the 413
is sent: a server that closes a connection with unread data makes the peer's TCP stack reset it, and the client
would see "connection reset" instead of the 413 and its message. Bodies beyond that are cut off (clients that send
``Expect: 100-continue``, like curl, get the 413 before sending anything).
"""
from __future__ import annotations

import asyncio
import re
import time

from starlette.exceptions import HTTPException

from .auth import _send_json_factory
from .budget import MemoryBudget
from .wire import API_PREFIX

DRAIN_BYTES = 64 << 20
DRAIN_IDLE_S = 2.0  # a refused body that pauses this long is not drained further
JSON_EXPANSION = 8  # bytes held per byte of a JSON body: text, parsed objects, a mask prompt's bits as bools
UPLOAD_PATH = re.compile("^" + re.escape(API_PREFIX) + r"/models/[^/]+/(embeddings|propagations)$")
_CLOSE = [(b"connection", b"close")]


class BodyTooLarge(HTTPException):
    """Raised from inside ``receive`` while an endpoint reads its body; FastAPI turns it into a 413."""

    def __init__(self, limit: int, what: str = "request body"):
        super().__init__(413, _message(limit, what), headers={"Connection": "close"})


class BodyTimeout(HTTPException):
    def __init__(self, message: str):
        super().__init__(408, message, headers={"Connection": "close"})


def _message(limit: int, what: str = "request body") -> str:
    if what != "request body":
        return (f"the {what} is larger than this service's limit of {limit} bytes ({limit / 2 ** 20:.0f} MB) for "
                f"it: send a smaller one")
    return (f"the request body is larger than this service's limit of {limit} bytes ({limit / 2 ** 20:.0f} MB): "
            f"send fewer or smaller slices, or start the service with a larger --max-body-mb")


def is_upload(scope) -> bool:
    return scope.get("method") == "POST" and bool(UPLOAD_PATH.match(scope.get("path", "")))


class TimedReceive:
    """``receive`` with an idle timeout and a deadline while the body arrives (none once it is complete)."""

    def __init__(self, receive, idle_s: float, deadline_s: float):
        self._receive = receive
        self.idle_s = idle_s
        self.deadline = time.monotonic() + deadline_s
        self.deadline_s = deadline_s
        self.complete = False

    async def __call__(self):
        if self.complete:
            return await self._receive()
        left = self.deadline - time.monotonic()
        wait = min(self.idle_s, left)
        try:
            message = await asyncio.wait_for(self._receive(), max(wait, 0.001))
        except asyncio.TimeoutError:
            if left <= self.idle_s:
                raise BodyTimeout(f"the request body did not arrive within {self.deadline_s:g} s: send it faster, "
                                  f"or send fewer slices per request") from None
            raise BodyTimeout(f"the request body stopped arriving for {self.idle_s:g} s: the connection is "
                              f"closed; send the request again") from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.complete = True
        return message


async def _drain(receive, budget: int) -> None:
    """Read and drop the rest of the body, at most ``budget`` bytes (``receive`` is timed)."""
    try:
        while budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return
    except BodyTimeout:
        return


def _has_body(scope) -> int:
    """The declared body length: Content-Length, -1 for a chunked body, 0 for none."""
    length = 0
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            length = -1
    return length


class BodyLimit:
    """ASGI middleware enforcing the size, time and memory limits on every request body."""

    def __init__(self, app, max_bytes: int, drain_bytes: int = DRAIN_BYTES, max_json_bytes: int = 16 << 20,
                 body_timeout_s: float = 30.0, body_deadline_s: float = 600.0, budget: MemoryBudget = None,
                 wait_s: float = 60.0):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.max_json_bytes = int(max_json_bytes)
        self.drain_bytes = int(drain_bytes)
        self.body_timeout_s = float(body_timeout_s)
        self.body_deadline_s = float(body_deadline_s)
        self.budget = budget
        self.wait_s = float(wait_s)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send_json = _send_json_factory(send)
        timed = TimedReceive(receive, self.body_timeout_s, self.body_deadline_s)
        upload = is_upload(scope)
        limit, what = (self.max_bytes, "request body") if upload else (min(self.max_bytes, self.max_json_bytes),
                                                                       "JSON body")
        expects_continue = any(n == b"expect" and v.lower() == b"100-continue" for n, v in scope.get("headers", ()))
        try:
            length = _has_body(scope)
        except ValueError:
            await send_json(400, "the Content-Length header is not a number", _CLOSE)
            return
        if length > limit:
            if not expects_continue and length <= limit + self.drain_bytes:
                # drain while the body keeps coming; a client that sends nothing gets the 413 after DRAIN_IDLE_S
                await _drain(TimedReceive(receive, min(DRAIN_IDLE_S, self.body_timeout_s), self.body_deadline_s),
                             length)
            await send_json(413, _message(limit, what), _CLOSE)
            return
        reservation = None
        if not upload and length != 0 and self.budget is not None:
            try:
                # a chunked body of unknown length: a share of the budget (it is still counted against limit)
                need = JSON_EXPANSION * length if length > 0 else min(JSON_EXPANSION * limit,
                                                                        self.budget.max_bytes // 4)
                reservation = await self.budget.acquire(need, self.wait_s, f"a {what}")
            except HTTPException as exc:
                await send_json(exc.status_code, str(exc.detail), [(k.lower().encode(), v.encode())
                                                                   for k, v in (exc.headers or {}).items()])
                return
        seen = 0
        drain_bytes = self.drain_bytes

        async def limited_receive():
            nonlocal seen
            message = await timed()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if message.get("more_body", False):
                        await _drain(timed, drain_bytes)
                    raise BodyTooLarge(limit, what)
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            if reservation is not None:
                reservation.release()
