"""Who may use a `samed web` process: the browser that holds the token, and one browser at a time.

A trame app is one scene and one state shared by every connected browser, so a second browser would see (and
edit) the first user's volume. This wslink link protocol takes part in wslink's handshake
(``wslink.hello``: ``ProtocolHandler.validateToken`` asks every link protocol, wslink/protocol.py) and accepts a
browser when it sends the process's token (wslink's default secret when none was set, which trame's page sends)
and no other browser is connected; the seat is free again when that browser's websocket closes. Several users:
one process each (see docs/web.md).
"""
from __future__ import annotations

import hmac
import logging

from wslink.websocket import LinkProtocol


class OneBrowser(LinkProtocol):
    def __init__(self):
        super().__init__()
        self.client_id = None

    async def validateToken(self, token, client_id):
        secret = getattr(self.coreServer, "secret", None)
        if not isinstance(token, str) or not isinstance(secret, str) or \
                not hmac.compare_digest(token.encode(), secret.encode()):
            logging.warning("samed web: refused a browser with a wrong or missing token")
            return False
        if self.client_id is not None and self.client_id != client_id:
            logging.warning("samed web: refused a second browser: this process serves one at a time "
                            "(start one process per user)")
            return False
        self.client_id = client_id
        return True

    def onClose(self, client_id):
        if client_id == self.client_id:
            self.client_id = None


def serve_one_browser(server) -> OneBrowser:
    """Install the rule on a trame server (before it starts)."""
    guard = OneBrowser()
    server.add_protocol_to_configure(lambda protocol: protocol.registerLinkProtocol(guard))
    return guard
