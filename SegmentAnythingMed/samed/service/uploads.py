"""Reading an upload (a bundle or a ``.npy`` body, maybe gzip/deflate-compressed) without holding more than it
declares, and nothing before the service's memory budget has room for it.

The body streams in; a compressed one is inflated chunk by chunk (``zlib.decompressobj`` with ``max_length``), so
it never inflates past the bytes the service expects next. First only the head is read (at most
``HEAD_BYTES``): it declares every array's dtype and shape, which the route checks (a 10000 x 10000 picture is
refused here, before its 300 MB arrive), and which says how many bytes the rest will be. The request then
reserves those bytes, plus what the route will make of them (``extra``: the RGB copy of a grey picture), and
reads exactly that much: a gzip bomb stops at its head or at the declared length, whichever comes first.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Optional, Union

from starlette.exceptions import HTTPException

from .budget import MemoryBudget, Reservation
from .config import ServiceConfig
from .wire import (BUNDLE_TYPE, MAX_HEADER_BYTES, NPY_TYPE, BundleLayout, NpyLayout, WireError, bundle_layout,
                   npy_layout)

HEAD_BYTES = MAX_HEADER_BYTES + 64  # a bundle's prefix and JSON header, or a .npy header, fit in this

Layout = Union[BundleLayout, NpyLayout]


@dataclass
class Upload:
    body: bytearray  # the whole (inflated) body
    layout: Layout
    reservation: Reservation  # release() when done with everything made from the body


def media_type(headers) -> str:
    return (headers.get("content-type") or "").split(";")[0].strip().lower()


class _Inflater:
    """Compressed (or plain) bytes in, at most ``limit + 1`` body bytes out per :meth:`pump`; what is not yet
    inflated waits in ``pending`` (at most one received chunk)."""

    def __init__(self, encoding: str):
        enc = (encoding or "identity").strip().lower()
        if enc not in ("", "identity", "gzip", "deflate"):
            raise WireError(f"Content-Encoding {enc!r:.40} is not supported: send gzip, deflate or none", 415)
        self.enc = enc
        self.d = None if enc in ("", "identity") else zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
        self.pending = b""

    def push(self, chunk: bytes) -> None:
        self.pending = self.pending + chunk if self.pending else chunk

    def pump(self, out: bytearray, limit: int) -> None:
        while self.pending and len(out) <= limit:
            room = limit + 1 - len(out)
            if self.d is None:
                out += self.pending[:room]
                self.pending = self.pending[room:]
                continue
            if self.d.eof:
                raise WireError(f"unexpected bytes after the end of the {self.enc} stream")
            try:
                out += self.d.decompress(self.pending, room)
            except zlib.error as exc:
                raise WireError(f"the {self.enc} body does not decompress: {exc}") from None
            self.pending = self.d.unconsumed_tail
            if self.d.eof and self.d.unused_data:
                raise WireError(f"unexpected bytes after the end of the {self.enc} stream")

    def finish(self) -> None:
        if self.d is not None and not self.d.eof:
            raise WireError(f"the {self.enc} body is truncated")


async def read_upload(request, cfg: ServiceConfig, budget: MemoryBudget, npy: bool,
                      check: Callable[[Layout], int]) -> Upload:
    """Read a bundle (``npy`` False) or ``.npy`` body. ``check(layout)`` refuses declared shapes (raise) and
    returns the extra bytes the route will allocate from the body."""
    inflater = _Inflater(request.headers.get("content-encoding"))
    parse = (lambda head: npy_layout(head, cfg.max_body_bytes)) if npy else \
        (lambda head: bundle_layout(head, cfg.max_body_bytes))
    what = "a .npy upload" if npy else "a bundle upload"
    reservation = await budget.acquire(HEAD_BYTES, cfg.upload_wait_s, what)
    try:
        body = bytearray()
        layout: Optional[Layout] = None
        limit = HEAD_BYTES
        async for chunk in request.stream():
            if not chunk:
                continue
            inflater.push(chunk)
            inflater.pump(body, limit)
            if layout is None:
                layout = parse(body)
                if layout is not None:
                    limit = layout.total
                    if limit > cfg.max_body_bytes:
                        raise WireError(f"the upload declares {limit} bytes of arrays, more than this service's "
                                        f"limit of {cfg.max_body_bytes} bytes: send fewer or smaller slices", 413)
                    extra = int(check(layout))
                    more = layout.total + extra - reservation.n
                    if more > 0:
                        grown = await budget.acquire(more, cfg.upload_wait_s, what)
                        reservation.n += grown.n
                    inflater.pump(body, limit)
            if len(body) > limit:
                if layout is None:
                    raise WireError(f"the body does not start with a {'.npy' if npy else 'samed bundle'} header "
                                    f"within its first {HEAD_BYTES} bytes")
                raise WireError(f"the body is longer than the {limit} bytes its header declares")
        if inflater.pending:
            raise WireError(f"the body is longer than the {limit} bytes its header declares")
        inflater.finish()
        if layout is None:
            layout = parse(body)
            if layout is None:
                raise WireError(f"the body ends after {len(body)} bytes, inside its "
                                f"{'.npy' if npy else 'bundle'} header (truncated upload?)")
            check(layout)
        if len(body) != layout.total:
            raise WireError(f"the body ends after {len(body)} of the {layout.total} bytes its header declares "
                            f"(truncated upload?)")
        return Upload(body, layout, reservation)
    except BaseException:
        reservation.release()
        raise


def upload_media(headers, allow_npy: bool) -> bool:
    """True for a ``.npy`` body, False for a bundle; 415 for anything else (before reading the body)."""
    media = media_type(headers)
    if allow_npy and media == NPY_TYPE:
        return True
    if media in (BUNDLE_TYPE, "application/octet-stream", ""):
        return False
    accepted = f"{BUNDLE_TYPE} or {NPY_TYPE}" if allow_npy else BUNDLE_TYPE
    raise HTTPException(415, f"Content-Type {media!r:.60} is not accepted here: send {accepted}")
