"""``samed web``: the Segment Anything tool in a browser (trame-slicer), on volumes from the server's folders."""
from __future__ import annotations

import argparse
import os
import sys
import time

from ..core.preprocess import MODES as INTENSITY_MODES
from .common import add_backend_options

WEB_TOKEN_ENV = "SAMED_WEB_TOKEN"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "web", help="serve the Segment Anything tool to a browser (trame-slicer)",
        description="Serve a web page with a slice view and the Segment Anything tool: open a volume from the "
                    "--data folders, drag a box, Apply, undo/redo, propagate, save a .seg.nrrd. Binds 127.0.0.1 "
                    "(this machine only) unless --host is given; any other address needs a token "
                    f"(--access-token-file or ${WEB_TOKEN_ENV}) that the browser passes as ?secret=TOKEN.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="default %(default)s (0: any free port)")
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="a folder whose volumes (.nrrd, .nii[.gz], .mha) users may open (repeatable)")
    p.add_argument("--sample-data", action="store_true",
                   help="also offer the sample CT that the slicerio package ships (CTChest4.nrrd)")
    p.add_argument("--out", default="samed-web-out", metavar="DIR",
                   help="where Save writes NAME.seg.nrrd (default %(default)s)")
    p.add_argument("--max-upload-mb", type=float, default=512,
                   help="largest volume a browser may upload (default %(default)g MB)")
    p.add_argument("--access-token-file", help=f"file whose first line is the page's token (else ${WEB_TOKEN_ENV}; "
                                               f"needed for a non-loopback --host)")
    g = p.add_argument_group("intensity preprocessing")
    g.add_argument("--intensity", default="auto", choices=tuple(INTENSITY_MODES) + ("display",),
                   help="as for 'samed segment' (default auto); display = the view's window/level")
    g.add_argument("--window", type=float, help="window width (with --intensity window)")
    g.add_argument("--level", type=float, help="window level (with --intensity window)")
    add_backend_options(p)
    p.set_defaults(func=run)


def loads_model_here(args) -> bool:
    """Whether this process runs the model (no --backend URL): then its runtime is loaded before the first
    render (samed.web.preload_model_runtime)."""
    return not args.backend or args.backend in ("local", "in-process")


def _web_token(args):
    from ..service.auth import load_token

    if args.access_token_file:
        return load_token(args.access_token_file)
    return (os.environ.get(WEB_TOKEN_ENV) or "").strip() or None


def run(args) -> int:
    from ..service.auth import check_exposure

    started = time.monotonic()
    token = _web_token(args)
    check_exposure(args.host, token)  # before anything slow
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a port number (0..65535)")
    if args.intensity == "window" and (args.window is None or args.level is None):
        raise ValueError("--intensity window needs --window and --level")
    folders = list(args.data)
    if args.sample_data:
        import slicerio

        folders.append(os.path.dirname(slicerio.get_testdata_file("CTChest4.nrrd")))
    if not folders:
        raise ValueError("give the folders users may open volumes from: --data DIR (or --sample-data)")
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # headless: EGL (Mesa) without X
    from ..web import preload_model_runtime
    from ..web.files import DataFolders

    if loads_model_here(args):
        preload_model_runtime()  # before the first render: torch after Mesa's LLVM crashes (see the function)

    data = DataFolders(folders)
    from ..web import ensure_session_layer

    ensure_session_layer()
    try:
        from trame_slicer.core import SlicerApp  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"samed web needs trame-slicer ({exc}): pip install 'segmentanythingmed[web]'") from None
    from SegmentAnythingMedLib.backend_settings import BackendProvider, BackendSettings
    from SegmentAnythingMedLib.session_types import SessionOptions

    from ..web.access import serve_one_browser
    from ..web.app import SamWebApp
    from .common import backend_from_args

    settings = BackendSettings(where=args.backend, model=args.model, checkpoint=args.checkpoint or "",
                               device=args.device or "")
    provider = BackendProvider(settings, factory=lambda _settings: backend_from_args(args))
    options = SessionOptions(intensity_mode=args.intensity, window=args.window, level=args.level)
    app = SamWebApp(data=data, out_dir=args.out, provider=provider, options=options,
                    max_upload_mb=args.max_upload_mb)
    serve_one_browser(app.server)  # one scene per process: a second browser would see the first user's data
    # trame reads its own options from sys.argv: give it only these (ours, such as --backend, are not its)
    argv = ["samed-web"] + (["--authKey", token] if token else [])
    saved_argv, sys.argv = sys.argv, argv

    def ready(**_):
        query = "?secret=<token>" if token else ""
        print(f"samed web: ready in {time.monotonic() - started:.1f} s at "
              f"http://{args.host}:{app.server.port}/{query}", file=sys.stderr, flush=True)

    app.server.controller.on_server_ready.add(ready)
    try:
        app.server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False)
    finally:
        sys.argv = saved_argv
        app.close()
    return 0
