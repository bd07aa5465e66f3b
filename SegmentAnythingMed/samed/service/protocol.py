"""uvicorn's h11 protocol with a deadline for each request head (uvicorn has none: a client that trickles its
headers a byte at a time, or connects and sends nothing, would hold a connection for ever).

A new connection, and a kept-alive one after each response (plus uvicorn's ``timeout_keep_alive``), must deliver
a complete request head within ``header_timeout_s``; otherwise the server answers 408 and closes it. The request
body has its own timeouts (``limits.py``). Built on uvicorn 0.3x-0.5x's ``H11Protocol`` (connection_made,
data_received, on_response_complete, ``conn.their_state``)."""
from __future__ import annotations

import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .logs import ThrottledWarnings

log = logging.getLogger("samed.service")
_warnings = ThrottledWarnings()

_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s")


def guarded_h11_protocol(header_timeout_s: float):
    class GuardedH11Protocol(H11Protocol):
        header_timeout = float(header_timeout_s)

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._head_timer = None
            self._arm(self.header_timeout)

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

        def _disarm(self) -> None:
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
                self._head_timer = None

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the request head is complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state in (h11.IDLE, h11.DONE):
                self._arm(self.timeout_keep_alive + self.header_timeout)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            peer = self.client[0] if self.client else "?"
            if self.cycle is None or self.cycle.response_complete:
                started = self.cycle is None
                _warnings.warn("slow-head", peer, "closed a connection from %s: no complete request headers within "
                               "%g s%s", peer, self.header_timeout, "" if started else " after the previous response")
                body = (b'{"detail": "the request headers did not arrive within %g s: the connection is closed"}'
                        % self.header_timeout)
                try:
                    self.transport.write(_TIMEOUT_RESPONSE % (len(body), body))
                finally:
                    self.transport.close()

    return GuardedH11Protocol
