"""``samed serve``: run the model service (HTTP) that Slicer and ``samed --backend URL`` talk to."""
from __future__ import annotations

import argparse

from ..engines.selection import ENGINES


class _ModelAction(argparse.Action):
    """--model NAME (repeatable): each adds a model; a following --checkpoint belongs to it."""

    def __call__(self, parser, namespace, value, option_string=None):
        models = getattr(namespace, "models", None) or []
        models.append([value, None])
        namespace.models = models


class _CheckpointAction(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        models = getattr(namespace, "models", None) or []
        if not models:
            parser.error("put --checkpoint after the --model it belongs to, e.g. --model sam_vit_b --checkpoint "
                         "sam_vit_b_01ec64.pth")
        if models[-1][1] is not None:
            parser.error(f"--model {models[-1][0]} has two --checkpoint options")
        models[-1][1] = value
        namespace.models = models


# flag, ServiceConfig field, unit (config value per option value), help
LIMIT_OPTIONS = (
    ("--header-timeout", "header_timeout_s", 1.0, "seconds a request's head may take to arrive"),
    ("--body-timeout", "body_timeout_s", 1.0, "longest pause in seconds while a request body arrives"),
    ("--body-deadline", "body_deadline_s", 1.0, "seconds a whole request body may take"),
    ("--upload-wait", "upload_wait_s", 1.0, "seconds an upload waits for memory before a 503"),
    ("--upload-memory-mb", "max_upload_memory_bytes", 2.0 ** 20,
     "MB for all request bodies held at once and running propagation jobs' slabs"),
    ("--max-connections", "max_connections", 1.0, "open connections at once; more get 503"),
)


def config_from_args(args, token):
    """The ServiceConfig that the options ask for (unset options keep the environment's or built-in values)."""
    from ..service.config import ServiceConfig

    overrides = {}
    for flag, field_name, scale, _ in LIMIT_OPTIONS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is None:
            continue
        if not value > 0:
            raise ValueError(f"{flag} must be a positive number, got {value:g}")
        overrides[field_name] = int(value * scale) if field_name in ("max_upload_memory_bytes",
                                                                      "max_connections") else float(value)
    return ServiceConfig(token=token, max_body_bytes=int(args.max_body_mb * 2 ** 20), max_active_jobs=args.max_jobs,
                         **overrides)


def add_parser(sub) -> None:
    from ..engines.models import MODELS
    from ..service.config import ServiceConfig
    from .common import add_input_options

    d = ServiceConfig()
    p = sub.add_parser(
        "serve", help="run the model service (HTTP) for Slicer and 'samed --backend URL'",
        description="Load one or more models (on CUDA when present) and serve them over HTTP with a shared "
                    "embedding cache and propagation jobs. Binds 127.0.0.1 (this machine only) unless --host is "
                    "given; any other address needs a token (--token-file or $SAMED_TOKEN), which clients send.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s; 0.0.0.0 = every interface, needs a token)")
    p.add_argument("--port", type=int, default=8765, help="default %(default)s")
    p.add_argument("--model", dest="models", action=_ModelAction, choices=sorted(MODELS), metavar="MODEL",
                   help=f"a model to serve (repeatable; default litemedsam): {', '.join(sorted(MODELS))}")
    p.add_argument("--checkpoint", action=_CheckpointAction, metavar="FILE.pth",
                   help="the checkpoint of the --model just before it (SAM ViT-B/L/H, MedSAM ViT-B)")
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when present)")
    p.add_argument("--engine", choices=ENGINES,
                   help="torch (the reference), onnx (ONNX Runtime, LiteMedSAM), openvino (LiteMedSAM's encoder in "
                        "bfloat16 on CPUs with AMX/AVX512-BF16), openvino-f32 (its float32 encoder compiled by OpenVINO), "
                        "openvino-int8 (its encoder quantized by NNCF), "
                        "onnx-int8 (opt-in, less exact) or auto (default: $SAMED_ENGINE, else auto: the fastest "
                        "engine available here that passed its checks; the start-up line says why a faster one "
                        "was not used)")
    add_input_options(p, "For every served model")
    p.add_argument("--token-file", help="file whose first line is the token (else $SAMED_TOKEN; needed for a "
                                        "non-loopback --host)")
    p.add_argument("--cache-mb", type=float, default=1024,
                   help="memory budget of the embedding cache shared by all clients (default %(default)s MB; "
                        "LiteMedSAM and SAM embeddings take 4 MB each)")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 2 ** 20,
                   help="largest request, as sent and after decompression (default %(default)g MB)")
    p.add_argument("--max-jobs", type=int, default=d.max_active_jobs,
                   help="propagation jobs queued or running at once (default %(default)s)")
    g = p.add_argument_group("slow and large clients (defaults: $SAMED_* variables, else the values shown)")
    for flag, field_name, scale, what in LIMIT_OPTIONS:
        g.add_argument(flag, type=float, default=None, metavar="N",
                       help=f"{what} (default {getattr(d, field_name) / scale:g})")
    p.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (with --ssl-keyfile)")
    p.add_argument("--ssl-keyfile")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--no-access-log", action="store_true", help="do not log each request")
    p.set_defaults(func=run, models=None)


def run(args) -> int:
    from ..service.auth import check_exposure, load_token

    token = load_token(args.token_file)
    check_exposure(args.host, token)  # before anything slow
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a port number (0..65535)")
    if args.cache_mb <= 0 or args.max_body_mb <= 0 or args.max_jobs < 1:
        raise ValueError("--cache-mb and --max-body-mb must be positive, --max-jobs at least 1")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        from ..core.backend import BackendError

        raise BackendError(f"the model service needs FastAPI and uvicorn ({exc}): "
                           f"pip install 'segmentanythingmed[service]'") from exc
    from ..service.server import run_service
    from .common import input_options

    models = [tuple(m) for m in (args.models or [["litemedsam", None]])]
    config = config_from_args(args, token)
    run_service(args.host, args.port, models, args.device, config, cache_bytes=int(args.cache_mb * 2 ** 20),
                log_level=args.log_level, access_log=not args.no_access_log, ssl_certfile=args.ssl_certfile,
                ssl_keyfile=args.ssl_keyfile, engine=args.engine, engine_options=input_options(args))
    return 0
