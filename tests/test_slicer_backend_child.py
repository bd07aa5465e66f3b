"""The "this computer" backend in Slicer: a real ``samed serve`` child process (child_service.py) with the real
LiteMedSAM weights, driven through the Slicer bridge (EditSession on a real slicer-core scene).

- lifecycle: started on first use, reused, stopped on close; killed (SIGKILL) during a propagation, the error names
  the service and how it ended, and the next use starts a new one;
- the Slicer-side process never imports torch, ONNX Runtime or OpenVINO (checked in a fresh interpreter), and the
  child does not outlive it (the "Slicer" process is killed with SIGKILL).
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from slicer_scenes import slicer_env  # noqa: F401

from samed.core.geometry import slice_xy_to_ras
from samed.core.metrics import dice
from SegmentAnythingMedLib import child_service, evaluation_bridge, volume_bridge
from SegmentAnythingMedLib.backend_settings import BackendProvider, BackendSettings
from SegmentAnythingMedLib.preview import SegmentPreview
from SegmentAnythingMedLib.session import EditSession
from SegmentAnythingMedLib.worker import InferenceWorker

ROOT = Path(__file__).resolve().parents[1]


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie (a container's init may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class Tumour:
    """mr-brain-tumor in a real scene, with boxes around the tumour's slices and an EditSession on it."""

    def __init__(self, env, shared_data, provider, worker):
        folder = shared_data / "volumes" / "mr-brain-tumor"
        self.node = env.logics["volumes"].AddArchetypeVolume(str(folder / "image.nrrd"), "mr-brain-tumor")
        labels = env.logics["volumes"].AddArchetypeVolume(str(folder / "label.nrrd"), "label", 1)
        self.volume = volume_bridge.volume_from_node(self.node)
        self.reference = evaluation_bridge.labelmap_mask(labels, 1, self.volume)
        slices = np.flatnonzero(self.reference.any(axis=(1, 2)))
        self.middle = int(slices[len(slices) // 2])
        segmentation = env.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(self.node)
        sid = segmentation.GetSegmentation().AddEmptySegment("", "tumour")
        self.session = EditSession(provider, worker, SegmentPreview(env.scene))
        self.session.set_source(self.node, segmentation, sid)
        self.view_node = env.slice_node("Axial")

    def box(self, k: int, timeout: float = 300.0) -> float:
        """A box around the tumour on slice ``k`` through the session; Dice of the result."""
        rows = np.flatnonzero(self.reference[k].any(axis=1))
        cols = np.flatnonzero(self.reference[k].any(axis=0))
        corners = slice_xy_to_ras([[cols[0] - 4, rows[0] - 4], [cols[-1] + 4, rows[-1] + 4]],
                                  self.volume.ijk_to_ras, 0, k)
        self.view_node.JumpSliceByCentering(*volume_bridge.slice_position_ras(self.volume, 0, k))
        view = self.session.view_of(self.view_node)
        self.session.set_box(corners[0], corners[1], view)
        self.session.wait(timeout)
        mask = self.session.masks.get(k)
        return dice(mask, self.reference[k]) if mask is not None else 0.0


@pytest.fixture
def child_env(monkeypatch):
    monkeypatch.setenv("SAMED_ENGINE", "torch")  # the other model tests' engine: predictable start-up


def test_the_child_service_starts_on_first_use_is_reused_and_restarts_after_a_crash(slicer_env, shared_data,
                                                                                    child_env):
    provider = BackendProvider(BackendSettings(device="cpu"))
    worker = InferenceWorker()
    try:
        t = Tumour(slicer_env, shared_data, provider, worker)
        assert not provider.loaded()  # nothing started before it is needed
        assert t.box(t.middle) > 0.7, t.session.status
        backend = provider.get()
        service = backend.service
        first = service.pid
        assert service.alive() and service.python == sys.executable  # outside Slicer: this Python
        with open(f"/proc/{first}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
        assert b"serve" in cmdline and b"127.0.0.1" in cmdline and backend.url.startswith("http://127.0.0.1:")
        assert service.token.encode() not in b" ".join(cmdline)  # the token is not on the command line

        assert t.box(t.middle + 1) > 0.5
        assert provider.get().service.pid == first  # reused

        t.session.propagate()  # a job on the service; killed while it runs
        deadline = time.monotonic() + 120
        while t.session.progress is None and t.session.busy and time.monotonic() < deadline:
            t.session.poll()
            time.sleep(0.05)
        assert t.session.busy, f"the propagation ended before the kill: {t.session.status}"
        os.kill(first, signal.SIGKILL)
        t.session.wait(120)
        status = t.session.status
        assert "failed" in status and "samed serve" in status and "killed by signal 9" in status, status
        assert "starts it again" in status
        assert not provider.loaded()

        assert t.box(t.middle - 1) > 0.5, t.session.status  # the next use starts a new process
        second = provider.get().service
        assert second.pid != first and second.alive()
        provider.close()
        assert wait_gone(second.pid), "the child service outlived provider.close()"
    finally:
        provider.close()
        worker.shutdown()


def test_a_changed_setting_stops_the_old_child_service(child_env, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy"):  # a hospital proxy must not get between Slicer and its child
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    provider = BackendProvider(BackendSettings(device="cpu"))
    try:
        old = provider.get().service
        provider.update(BackendSettings(device=""))
        assert wait_gone(old.pid), "the old child service kept running after the settings changed"
        deadline = time.monotonic() + 10
        while old.log_path is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old.log_path is None  # its private folder (log) is removed
    finally:
        provider.close()


def test_the_slicer_side_never_imports_a_model_runtime_and_the_child_dies_with_it(shared_data):
    """A fresh interpreter plays Slicer: a box -> mask through the session with the "this computer" backend, then
    sys.modules is checked; then it is killed with SIGKILL and its child service must end too."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT / 'SegmentAnythingMed')!r}]
        from pathlib import Path
        import slicer_fakes
        slicer_fakes.install()
        env = slicer_fakes.SlicerTestEnvironment().publish()
        from test_slicer_backend_child import Tumour
        from SegmentAnythingMedLib.backend_settings import shared_provider
        from SegmentAnythingMedLib.worker import shared_worker
        t = Tumour(env, Path({str(shared_data)!r}), shared_provider(), shared_worker())
        d = t.box(t.middle)
        runtimes = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime', 'openvino'))
        print(json.dumps({{"dice": d, "status": t.session.status, "runtimes": runtimes,
                          "child": shared_provider().get().service.pid}}), flush=True)
        sys.stdin.read()  # "Slicer" keeps running until killed
    """)
    env = dict(os.environ, SAMED_ENGINE="torch")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT / "tests"))
    child = None
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        result = json.loads(line)
        child = result["child"]
        assert result["dice"] > 0.7, result["status"]
        assert result["runtimes"] == [], f"the Slicer side imported {result['runtimes']}"
        assert not process_gone(child)
        proc.kill()  # Slicer crashes or is killed: no atexit, no aboutToQuit
        proc.wait(10)
        assert wait_gone(child, 20), "the child service outlived the Slicer process"
    finally:
        if proc.poll() is None:
            proc.kill()
        if child is not None and not process_gone(child):
            os.kill(child, signal.SIGKILL)


def test_the_child_is_slicer_s_python_launcher_when_slicer_has_one(tmp_path, monkeypatch):
    launcher = tmp_path / "PythonSlicer"  # Slicer puts its launcher on PATH (slicer.util._executePythonModule)
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert child_service.python_executable() == str(launcher)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert child_service.python_executable() == sys.executable


def test_a_child_that_cannot_start_says_why(tmp_path):
    service = child_service.ChildService(model="sam_vit_b", checkpoint=str(tmp_path / "missing.pth"))
    with pytest.raises(child_service.ChildServiceError) as info:
        service.start()
    message = str(info.value)
    assert "samed serve" in message and "exited with code 2 while starting" in message and "missing.pth" in message
    assert not service.alive()


def test_slicer_quitting_stops_the_child_service(slicer_env, child_env):
    """Slicer emits aboutToQuit() before it exits (qSlicerCoreApplication / QCoreApplication::exec)."""
    import slicer

    service = child_service.ChildService(device="cpu")
    try:
        service.start()
        assert service in child_service.running()
        slicer.app.emit("aboutToQuit()")
        assert wait_gone(service.pid), "the child service outlived Slicer's aboutToQuit()"
        assert service not in child_service.running()
    finally:
        service.stop()


def test_the_panels_input_settings_reach_the_child_service(child_env):
    """Input resize / resize filter / mask threshold chosen in the module panel: validated, stored (Slicer's settings
    keep them), and the child ``samed serve`` (a real process) runs with them, as its /v1/info says."""
    bad = [BackendSettings(input_resize="wide"), BackendSettings(resize_filter="nearest"),
           BackendSettings(mask_threshold="half")]
    for settings in bad:
        with pytest.raises(ValueError, match="is not one of|mask threshold must be"):
            settings.validate()
    chosen = BackendSettings(device="cpu", input_resize="square", resize_filter="bilinear",
                             mask_threshold="dice").validate()
    assert BackendSettings.from_dict(chosen.to_dict()) == chosen  # what Slicer's settings keep
    assert chosen.describe() == ("litemedsam on this computer (cpu, input square, filter bilinear, "
                                 "mask threshold dice)")
    provider = BackendProvider(chosen)
    try:
        backend = provider.get()
        with open(f"/proc/{backend.service.pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
        assert b"--mask-threshold" in cmdline and b"dice" in cmdline
        info = backend.info()["models"]["litemedsam"]
        assert (info["resize"], info["resize_filter"], info["mask_threshold"], info["input_default"]) == (
            "square", "bilinear", "dice", False)
    finally:
        provider.close()
