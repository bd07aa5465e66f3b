"""Start the service: check the exposure and the port, load the models, run uvicorn (one process: the models
and the embedding cache live in it, so do not run several uvicorn workers)."""
from __future__ import annotations

import errno
import logging
import socket
import sys
from typing import Optional, Sequence, Tuple

from .auth import check_exposure, install_log_redaction, is_loopback
from .config import ServiceConfig
from .protocol import guarded_h11_protocol

log = logging.getLogger("samed.service")


def check_port_free(host: str, port: int) -> None:
    """Fail fast (before loading models) when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port} on {host} is in use (another samed serve?): stop it or choose "
                                 f"another --port") from None
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def tune_malloc(mmap_threshold: int = 1 << 20, arenas: int = 4) -> bool:
    """glibc only: serve every allocation of ``mmap_threshold`` bytes or more (pictures, bodies) from its own
    mapping, returned to the system when freed, and cap the per-thread arenas. By default glibc raises its mmap
    threshold after the first large free (up to 32 MB), so later pictures come from arenas that keep their memory:
    the server's RSS would creep up with every large upload."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(name)
        m_mmap_threshold, m_arena_max = -3, -8  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold))) and bool(libc.mallopt(m_arena_max, arenas))
    except (OSError, AttributeError):
        return False


def run_service(host: str, port: int, models: Sequence[Tuple[str, Optional[str]]], device: Optional[str] = None,
                config: Optional[ServiceConfig] = None, cache_bytes: int = 1 << 30, log_level: str = "info",
                access_log: bool = True, ssl_certfile: Optional[str] = None,
                ssl_keyfile: Optional[str] = None, engine: Optional[str] = None,
                engine_options: Optional[dict] = None) -> None:
    config = config or ServiceConfig()
    check_exposure(host, config.token)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ValueError("give both --ssl-certfile and --ssl-keyfile (or neither)")
    check_port_free(host, port)
    import uvicorn

    from .app import create_app
    from .registry import ModelRegistry

    tune_malloc()
    registry = ModelRegistry.load(models, device, cache_bytes, engine, engine_options)
    app = create_app(registry, config)
    scheme = "https" if ssl_certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    names = registry.engine_summary()  # with engine auto's reason where it did not use a faster engine
    print(f"samed serve: {names}; cache {cache_bytes >> 20} MB; listening on {scheme}://{shown}:{port} "
          f"({'token required' if config.token else 'no token: this machine only'})", file=sys.stderr, flush=True)
    if config.token and not ssl_certfile and not is_loopback(host):
        print("samed serve: note: plain HTTP sends the token and the pictures unencrypted; on a shared network "
              "put the service behind HTTPS (--ssl-certfile/--ssl-keyfile or a reverse proxy)", file=sys.stderr)
    print(f"samed serve: memory bound: warm size + cache {cache_bytes >> 20} MB + uploads "
          f"{config.max_upload_memory_bytes >> 20} MB; timeouts: request head {config.header_timeout_s:g} s, "
          f"body pauses {config.body_timeout_s:g} s; at most {config.max_connections} connections",
          file=sys.stderr, flush=True)
    uv_config = uvicorn.Config(app, host=host.strip("[]"), port=port, log_level=log_level, access_log=access_log,
                               ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, timeout_keep_alive=30,
                               http=guarded_h11_protocol(config.header_timeout_s),
                               limit_concurrency=config.max_connections)
    install_log_redaction()  # after uvicorn.Config, which configures the loggers
    logging.getLogger("samed.service").setLevel(log_level.upper())
    uvicorn.Server(uv_config).run()
