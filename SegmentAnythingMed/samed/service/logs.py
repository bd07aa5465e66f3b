"""What the service writes to its log, and what it must not: tokens sent in a URL are redacted from the access log,
and repeated warnings of one kind from one peer (401s, slow clients) are aggregated, so a client hammering the
service cannot flood the log."""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Dict, Tuple

log = logging.getLogger("samed.service")

# query parameters that carry secrets: ?token=..., ?access_token=..., ?api_key=..., ?key=... is an embedding key
SECRET_QUERY = re.compile(r"(?i)([?&](?:token|access_token|api[_-]?key|auth|authorization|password)=)[^&\s\"]*")


def redact(text: str) -> str:
    return SECRET_QUERY.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message arguments (uvicorn's access log passes the path with its query as one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_log_redaction() -> None:
    for name in ("uvicorn.access", "uvicorn.error", "samed.service"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


class ThrottledWarnings:
    """At most one warning per (kind, peer) per ``window_s``; the next one says how many were left out."""

    def __init__(self, window_s: float = 60.0, max_keys: int = 1024):
        self.window_s = float(window_s)
        self.max_keys = int(max_keys)
        self._seen: Dict[Tuple[str, str], list] = {}  # key -> [window start, suppressed count]
        self._lock = threading.Lock()

    def warn(self, kind: str, peer: str, message: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get((kind, peer))
            if entry is not None and now - entry[0] < self.window_s:
                entry[1] += 1
                return
            suppressed = entry[1] if entry is not None else 0
            if len(self._seen) >= self.max_keys:
                self._seen.clear()
            self._seen[(kind, peer)] = [now, 0]
        if suppressed:
            message += " (and %d more like it from %s in the last %g s, not logged)"
            args = args + (suppressed, peer, self.window_s)
        log.warning(message, *args)
