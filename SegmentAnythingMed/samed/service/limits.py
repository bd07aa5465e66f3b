"""Request body size limit: refused by ``Content-Length`` before reading, and again while the body streams in
(a chunked upload, or a client that lies about its length), so an oversized body never fills the memory.

The rest of a refused body is read and discarded (up to ``drain_bytes``) before the 413 is sent: a server that
closes a connection with unread data makes the peer's TCP stack reset it, and the client would see "connection
reset" instead of the 413 and its message. Bodies beyond that are cut off (clients that send
``Expect: 100-continue``, like curl, get the 413 before sending anything).
"""
from __future__ import annotations

from starlette.exceptions import HTTPException

from .auth import _send_json_factory

DRAIN_BYTES = 64 << 20


class BodyTooLarge(HTTPException):
    """Raised from inside ``receive`` while an endpoint reads its body; FastAPI turns it into a 413."""

    def __init__(self, limit: int):
        super().__init__(413, _message(limit), headers={"Connection": "close"})


def _message(limit: int) -> str:
    return (f"the request body is larger than this service's limit of {limit} bytes ({limit / 2 ** 20:.0f} MB): "
            f"send fewer or smaller slices, or start the service with a larger --max-body-mb")


async def _drain(receive, budget: int) -> None:
    """Read and drop the rest of the body, at most ``budget`` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimit:
    """ASGI middleware enforcing ``max_bytes`` on every request body."""

    def __init__(self, app, max_bytes: int, drain_bytes: int = DRAIN_BYTES):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.drain_bytes = int(drain_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        expects_continue = False
        for name, value in scope.get("headers", ()):
            if name == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _send_json_factory(send)(400, f"Content-Length {value[:40]!r} is not a number",
                                                   [(b"connection", b"close")])
                    return
                if length > self.max_bytes:
                    if not expects_continue and length <= self.max_bytes + self.drain_bytes:
                        await _drain(receive, length)
                    await _send_json_factory(send)(413, _message(self.max_bytes), [(b"connection", b"close")])
                    return
        seen = 0
        limit, drain_bytes = self.max_bytes, self.drain_bytes

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if message.get("more_body", False):
                        await _drain(receive, drain_bytes)
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)
