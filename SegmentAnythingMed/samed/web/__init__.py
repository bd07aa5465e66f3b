"""``samed web``: the Segment Anything tool in a browser, on trame-slicer (front-end layer, see DESIGN.md).

It reuses the Slicer side's Qt-free session layer (``SegmentAnythingMedLib.session.EditSession`` and its bridge
modules) unchanged; :mod:`samed.web.edit_target` adapts trame-slicer's segment editor to the session's edit target.
``SegmentAnythingMedLib`` lives beside the ``samed`` package in ``SegmentAnythingMed/``; :func:`ensure_session_layer`
makes it importable from a source checkout or an editable install (a wheel must ship it as a package too).

Nothing heavy is imported here: ``samed --help`` must not load VTK or trame.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def ensure_session_layer() -> None:
    """Make ``SegmentAnythingMedLib`` importable (it sits next to the ``samed`` package in this source tree)."""
    if importlib.util.find_spec("SegmentAnythingMedLib") is not None:
        return
    here = Path(__file__).resolve().parents[2]  # .../SegmentAnythingMed
    if (here / "SegmentAnythingMedLib" / "session.py").is_file():
        sys.path.insert(0, str(here))
        return
    raise ImportError("samed web needs the SegmentAnythingMedLib package (the Slicer side's session layer), which "
                      "this installation lacks: install samed from its source tree (pip install -e '.[web]')")


def preload_model_runtime() -> bool:
    """Load torch and torchvision now, before anything renders (True if they were found).

    trame-slicer renders with Mesa's EGL software renderer (llvmpipe loads the system's libLLVM); torchvision's
    import loads triton's libtriton with an LLVM of its own, and loaded after Mesa's it crashes the process
    (tests/test_web_runtime_order.py). Loaded first, both work. The in-process engines import torch lazily (the
    ONNX export, a precision check, the torch engine), so without this the first box could end the server.
    """
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:  # a service-only install: no model runtime to order
        return False
    return True
