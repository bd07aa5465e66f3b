"""The ``samed`` command line. Errors a user can act on end in one message and exit status 2, no traceback."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import List, Optional

from .. import __version__

SUBCOMMANDS = ("segment", "refine", "evaluate", "serve", "web")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that the same clean-up runs (temporary
    files removed, workers and service jobs ended) before samed exits with 143 (128 + SIGTERM)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def install_signal_handlers() -> dict:
    """Ctrl-C -> KeyboardInterrupt (also when the shell started samed with SIGINT ignored, as a non-interactive
    shell does for `samed ... &`), SIGTERM -> :class:`Terminated`. Exit statuses: 130 and 143.
    Returns the previous handlers (empty outside the main thread, where Python allows no handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
            signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated)}


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the full usage is one --help away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="samed", description="Segment Anything (SAM, MedSAM, LiteMedSAM) for "
                                                               "medical images: segment, evaluate, serve.")
    parser.add_argument("--version", action="version", version=f"samed {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from . import segment, evaluate, refine

    segment.add_parser(sub)
    refine.add_parser(sub)
    evaluate.add_parser(sub)
    try:
        from . import serve
    except ImportError:  # the service's own dependencies (FastAPI, uvicorn) are optional
        serve = None
    if serve is not None:
        serve.add_parser(sub)
    from . import web  # the browser front end; its own dependencies (trame-slicer) are imported when it runs

    web.add_parser(sub)
    return parser


def _user_errors():
    from ..core.backend import BackendError
    from ..core.geometry import GeometryError
    from ..core.preprocess import IntensityError
    from ..core.prompts import PromptError

    errors = [FileNotFoundError, FileExistsError, PermissionError, ValueError, PromptError, GeometryError,
              IntensityError, BackendError]
    try:
        from ..engines.checkpoints import CheckpointError

        errors.append(CheckpointError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(levelname)s %(message)s")
    previous = install_signal_handlers()
    try:
        return int(args.func(args) or 0)
    except Terminated:
        print("samed: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("samed: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if args.debug:
            raise
        print(f"samed {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:  # main() called in-process (tests, notebooks) leaves the caller's handlers as they were
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
