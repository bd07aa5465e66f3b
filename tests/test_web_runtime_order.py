"""Importing torch after Mesa has rendered crashes the process: trame-slicer renders with Mesa's EGL software
renderer (llvmpipe, which loads the system's libLLVM) and torchvision's import loads triton (torch._dynamo ->
torch.utils._triton.has_triton_package -> ``triton._C.libtriton``, its own LLVM): a segmentation fault while
loading libtriton. Loaded the other way round, both work. `samed web` with the model in-process therefore loads
the model runtime before its first render (samed.web.preload_model_runtime); found when a Slicer-layer test that
renders was followed by one that loaded torch for the first time (exit 139).

Each case runs in a fresh interpreter (the order of first loads is what matters)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

RENDER = """
import os
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
from vtkmodules.vtkRenderingCore import vtkRenderWindow, vtkRenderer
import vtkmodules.vtkRenderingOpenGL2  # noqa: F401
window = vtkRenderWindow()
window.SetOffScreenRendering(True)
window.AddRenderer(vtkRenderer())
window.Render()
print("rendered with", window.GetClassName(), flush=True)
"""
LOAD_TORCH = "import torchvision\nprint('torchvision loaded', flush=True)\n"
PRELOAD = "from samed.web import preload_model_runtime\nprint('preloaded', preload_model_runtime(), flush=True)\n"


def run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "SegmentAnythingMed"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def needs_the_pieces():
    pytest.importorskip("torchvision")
    pytest.importorskip("trame_slicer", reason="the web extra is not installed (scripts/setup.sh --test)")
    probe = run(RENDER)
    if probe.returncode != 0 or "vtkEGLRenderWindow" not in probe.stdout:
        pytest.skip(f"no EGL rendering here: {probe.stdout} {probe.stderr[-300:]}")


def test_torch_after_a_mesa_render_is_the_hazard(needs_the_pieces):
    """What the app must avoid (documents the hazard on this machine; if a torch or Mesa release fixes it, this
    test says so and the preload can go)."""
    r = run(RENDER + LOAD_TORCH)
    assert r.returncode != 0 and "torchvision loaded" not in r.stdout, \
        "torchvision now loads after a Mesa render: the preload in samed web may no longer be needed"


def test_the_runtime_preloaded_before_the_first_render_works(needs_the_pieces):
    r = run(PRELOAD + RENDER + LOAD_TORCH)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "preloaded True" in r.stdout and "torchvision loaded" in r.stdout


def test_samed_web_preloads_the_runtime_for_an_in_process_model_only():
    import argparse

    from samed.cli import web

    parser = argparse.ArgumentParser()
    web.add_parser(parser.add_subparsers())
    assert web.loads_model_here(parser.parse_args(["web", "--data", "."]))
    assert not web.loads_model_here(parser.parse_args(["web", "--data", ".", "--backend", "http://127.0.0.1:8765"]))
